//! Product reads cached as the product service's reply bytes with an ETag, so a
//! hit costs a map read and no JSON work. Freshness comes from the `PRODUCT`
//! stream's events, not from a TTL:
//!
//! - an event for product `p` (carrying the revision it replaced, `r`) marks `p`
//!   stale through `r`: a reply with revision `<= r` is never stored again;
//! - any product event drops every cached list page;
//! - a fetch records the cache's epoch before asking; the reply is stored only
//!   if no clear happened meanwhile (checked under the entry's shard lock), so
//!   a reply racing an event can never be stored after the event;
//! - a reconnect to NATS clears everything (events may have been missed).
//!
//! The TTL (`GATEWAY_CACHE_TTL_SECS`) is only a safety net for events lost
//! without a reconnect.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use axum::http::HeaderValue;
use bytes::Bytes;
use dashmap::DashMap;
use prometheus::IntCounter;
use serde::Deserialize;

/// A reply ready to send: the service's bytes and their ETag.
#[derive(Debug, Clone)]
pub struct Cached {
    pub body: Bytes,
    pub etag: HeaderValue,
}

impl Cached {
    /// `body` with its ETag (computed here, once).
    pub fn new(body: Bytes) -> Self {
        let etag = etag_of(&body);
        Self { body, etag }
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Fresh {
        reply: Cached,
        revision: u64,
        stored: Instant,
    },
    /// Replies with a revision up to `through` are out of date.
    Stale { through: u64 },
}

/// Taken before a fetch; storing the reply checks it.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// Counters for `/metrics`.
#[derive(Debug, Clone)]
pub struct CacheStats {
    pub hits: IntCounter,
    pub misses: IntCounter,
    pub invalidations: IntCounter,
    pub clears: IntCounter,
}

impl CacheStats {
    /// Counters not exported anywhere (tests, tools).
    pub fn detached() -> Self {
        let counter = |name: &str| {
            IntCounter::new(name, name).unwrap_or_else(|_| unreachable!("valid metric name"))
        };
        Self {
            hits: counter("hits"),
            misses: counter("misses"),
            invalidations: counter("invalidations"),
            clears: counter("clears"),
        }
    }
}

/// The product cache (see the module docs).
pub struct ProductCache {
    enabled: bool,
    max_entries: usize,
    ttl: Duration,
    items: DashMap<String, Slot>,
    lists: DashMap<String, (Cached, Instant)>,
    /// Bumped by every clear.
    items_epoch: AtomicU64,
    /// Bumped by every product event and every clear.
    lists_epoch: AtomicU64,
    pub stats: CacheStats,
}

#[derive(Deserialize)]
struct Revision {
    revision: u64,
}

#[derive(Deserialize)]
struct ProductEvent {
    product: Revision,
}

impl ProductCache {
    pub fn new(enabled: bool, max_entries: usize, ttl: Duration, stats: CacheStats) -> Self {
        Self {
            enabled,
            max_entries: max_entries.max(1),
            ttl,
            items: DashMap::new(),
            lists: DashMap::new(),
            items_epoch: AtomicU64::new(0),
            lists_epoch: AtomicU64::new(0),
            stats,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Entries held (products, invalidation marks and list pages).
    pub fn len(&self) -> usize {
        self.items.len() + self.lists.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached reply for product `id`, if fresh.
    pub fn item(&self, id: &str) -> Option<Cached> {
        if !self.enabled {
            return None;
        }
        let hit = match self.items.get(id).as_deref() {
            Some(Slot::Fresh { reply, stored, .. }) if stored.elapsed() < self.ttl => {
                Some(reply.clone())
            }
            _ => None,
        };
        self.count(hit.is_some());
        hit
    }

    pub fn item_ticket(&self) -> Ticket {
        Ticket(self.items_epoch.load(Ordering::Acquire))
    }

    /// Stores a `product.get` reply fetched under `ticket` unless it is known to
    /// be out of date; returns it ready to send either way.
    pub fn put_item(&self, id: &str, ticket: Ticket, body: Bytes) -> Cached {
        let reply = Cached::new(body);
        if !self.enabled {
            return reply;
        }
        let Ok(Revision { revision }) = serde_json::from_slice::<Revision>(&reply.body) else {
            return reply;
        };
        self.make_room();
        let slot = Slot::Fresh {
            reply: reply.clone(),
            revision,
            stored: Instant::now(),
        };
        match self.items.entry(id.to_string()) {
            dashmap::Entry::Occupied(mut entry) => {
                let newer = match entry.get() {
                    Slot::Stale { through } => revision > *through,
                    Slot::Fresh { revision: have, .. } => revision >= *have,
                };
                if newer && self.items_epoch.load(Ordering::Acquire) == ticket.0 {
                    entry.insert(slot);
                }
            }
            dashmap::Entry::Vacant(entry) => {
                if self.items_epoch.load(Ordering::Acquire) == ticket.0 {
                    entry.insert(slot);
                }
            }
        }
        reply
    }

    /// Product `id` changed from revision `replaced`: anything up to it is stale.
    pub fn invalidate_item(&self, id: &str, replaced: u64) {
        self.stats.invalidations.inc();
        self.make_room();
        match self.items.entry(id.to_string()) {
            dashmap::Entry::Occupied(mut entry) => {
                let through = match entry.get() {
                    Slot::Fresh { revision, .. } if *revision > replaced => return,
                    Slot::Fresh { .. } => replaced,
                    Slot::Stale { through } => (*through).max(replaced),
                };
                entry.insert(Slot::Stale { through });
            }
            dashmap::Entry::Vacant(entry) => {
                entry.insert(Slot::Stale { through: replaced });
            }
        }
    }

    /// The cached list page under `key`, if fresh.
    pub fn list(&self, key: &str) -> Option<Cached> {
        if !self.enabled {
            return None;
        }
        let hit = self
            .lists
            .get(key)
            .filter(|entry| entry.1.elapsed() < self.ttl)
            .map(|entry| entry.0.clone());
        self.count(hit.is_some());
        hit
    }

    pub fn list_ticket(&self) -> Ticket {
        Ticket(self.lists_epoch.load(Ordering::Acquire))
    }

    /// Stores a `product.list` reply fetched under `ticket` unless a product changed meanwhile.
    pub fn put_list(&self, key: &str, ticket: Ticket, body: Bytes) -> Cached {
        let reply = Cached::new(body);
        if !self.enabled {
            return reply;
        }
        self.make_room();
        let entry = self.lists.entry(key.to_string());
        if self.lists_epoch.load(Ordering::Acquire) == ticket.0 {
            entry.insert((reply.clone(), Instant::now()));
        }
        reply
    }

    /// Drops every list page (a product changed, so any page may have).
    fn drop_lists(&self) {
        self.lists_epoch.fetch_add(1, Ordering::AcqRel);
        self.lists.clear();
    }

    /// Applies an event of the `PRODUCT` stream (subject `events.product.<id>`).
    pub fn on_event(&self, subject: &str, payload: &[u8]) {
        if !self.enabled {
            return;
        }
        self.drop_lists();
        let Some(id) = subject.strip_prefix("events.product.") else {
            return;
        };
        match serde_json::from_slice::<ProductEvent>(payload) {
            Ok(event) => self.invalidate_item(id, event.product.revision),
            Err(e) => {
                tracing::warn!(subject, error = %e, "unreadable product event; dropping the whole cache");
                self.clear();
            }
        }
    }

    /// Drops everything, including replies being fetched right now.
    pub fn clear(&self) {
        self.stats.clears.inc();
        self.items_epoch.fetch_add(1, Ordering::AcqRel);
        self.items.clear();
        self.drop_lists();
    }

    fn make_room(&self) {
        if self.items.len() + self.lists.len() >= self.max_entries {
            tracing::info!(entries = self.len(), "product cache full; clearing it");
            self.clear();
        }
    }

    fn count(&self, hit: bool) {
        if hit {
            self.stats.hits.inc();
        } else {
            self.stats.misses.inc();
        }
    }
}

/// A strong ETag of `body`: 64-bit FNV-1a, as 16 hex digits in quotes.
pub fn etag_of(body: &[u8]) -> HeaderValue {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let text = format!("\"{hash:016x}\"");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// Whether an `If-None-Match` value names `etag` (`*`, a list, weak or strong).
pub fn if_none_match(header: &HeaderValue, etag: &HeaderValue) -> bool {
    let Ok(header) = header.to_str() else {
        return false;
    };
    let etag = etag.as_bytes();
    header
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/").as_bytes() == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> ProductCache {
        ProductCache::new(true, 100, Duration::from_secs(60), CacheStats::detached())
    }

    fn product(revision: u64, price: u64) -> Bytes {
        Bytes::from(format!(
            r#"{{"id":"p1","price_cents":{price},"revision":{revision}}}"#
        ))
    }

    fn event(replaced: u64) -> Vec<u8> {
        format!(r#"{{"type":"product.updated","product":{{"id":"p1","revision":{replaced}}}}}"#)
            .into_bytes()
    }

    #[test]
    fn stores_and_serves_until_an_event() {
        let c = cache();
        assert!(c.item("p1").is_none());
        let stored = c.put_item("p1", c.item_ticket(), product(5, 100));
        let hit = c.item("p1").expect("cached");
        assert_eq!(hit.body, product(5, 100));
        assert_eq!(hit.etag, stored.etag);
        c.on_event("events.product.p1", &event(5));
        assert!(c.item("p1").is_none(), "dropped by the event");
        assert_eq!(c.stats.hits.get(), 1);
    }

    #[test]
    fn a_reply_older_than_an_event_is_not_stored() {
        let c = cache();
        // The event (replacing revision 5) arrives while revision 5 is being fetched.
        let ticket = c.item_ticket();
        c.on_event("events.product.p1", &event(5));
        c.put_item("p1", ticket, product(5, 100));
        assert!(c.item("p1").is_none(), "stale reply refused");
        c.put_item("p1", c.item_ticket(), product(9, 120));
        assert_eq!(c.item("p1").unwrap().body, product(9, 120));
        // A late event about an older change keeps the newer reply.
        c.invalidate_item("p1", 7);
        assert!(c.item("p1").is_some());
        // An older reply never replaces a newer one.
        c.put_item("p1", c.item_ticket(), product(8, 110));
        assert_eq!(c.item("p1").unwrap().body, product(9, 120));
    }

    #[test]
    fn a_clear_during_a_fetch_wins() {
        let c = cache();
        let ticket = c.item_ticket();
        let list_ticket = c.list_ticket();
        c.clear();
        c.put_item("p1", ticket, product(5, 100));
        c.put_list("|20", list_ticket, Bytes::from_static(b"{\"items\":[]}"));
        assert!(c.item("p1").is_none());
        assert!(c.list("|20").is_none());
    }

    #[test]
    fn any_event_drops_the_lists() {
        let c = cache();
        c.put_list(
            "|20",
            c.list_ticket(),
            Bytes::from_static(b"{\"items\":[]}"),
        );
        assert!(c.list("|20").is_some());
        c.on_event("events.product.other", &event(1));
        assert!(c.list("|20").is_none());
    }

    #[test]
    fn unreadable_events_and_overflow_clear_everything() {
        let c = ProductCache::new(true, 3, Duration::from_secs(60), CacheStats::detached());
        c.put_item("p1", c.item_ticket(), product(5, 100));
        c.on_event("events.product.p2", b"not json");
        assert!(c.item("p1").is_none());
        for i in 0..5 {
            c.put_item(&format!("p{i}"), c.item_ticket(), product(1, 1));
        }
        assert!(c.len() <= 3);
    }

    #[test]
    fn disabled_cache_stores_nothing_but_still_tags() {
        let c = ProductCache::new(false, 100, Duration::from_secs(60), CacheStats::detached());
        let reply = c.put_item("p1", c.item_ticket(), product(5, 100));
        assert_eq!(reply.etag, etag_of(&product(5, 100)));
        assert!(c.item("p1").is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let c = ProductCache::new(true, 100, Duration::ZERO, CacheStats::detached());
        c.put_item("p1", c.item_ticket(), product(5, 100));
        assert!(c.item("p1").is_none());
    }

    #[test]
    fn etags_and_if_none_match() {
        let a = etag_of(b"{\"a\":1}");
        let b = etag_of(b"{\"a\":2}");
        assert_ne!(a, b);
        assert_eq!(a, etag_of(b"{\"a\":1}"));
        assert_eq!(a.to_str().unwrap().len(), 18);
        assert!(if_none_match(&a, &a));
        assert!(!if_none_match(&b, &a));
        let list = HeaderValue::from_str(&format!("\"x\", W/{}", a.to_str().unwrap())).unwrap();
        assert!(if_none_match(&list, &a));
        assert!(if_none_match(&HeaderValue::from_static("*"), &a));
    }
}
