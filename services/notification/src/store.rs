//! Where notification data lands locally: the sled layout and the projection
//! that fills it from the `NOTIFICATION` stream (so every instance knows every
//! delivery and every recipient, whichever instance did the work).
//!
//! | key                                | value                                      |
//! |------------------------------------|--------------------------------------------|
//! | `s/<source_event>`                 | notification id: that event was delivered  |
//! | `u/<user_id>/<inverted seq, hex>`  | format byte + notification JSON (the item) |
//! | `r/<user_id>`                      | format byte + recipient JSON               |
//!
//! The per-user key sorts newest first: it holds `u64::MAX - sequence` of the
//! `notification.sent` event as 16 hex digits.

use bytes::Bytes;
use shop_actors::{ApplyError, Projection, StoredEvent};
use shop_nats::ServiceError;

use crate::domain::{NotificationEvent, Recipient};

/// Version of the value format; bumped when it changes incompatibly.
pub const FORMAT_VERSION: u8 = 1;

pub fn sent_key(source_event: &str) -> Vec<u8> {
    format!("s/{source_event}").into_bytes()
}

fn user_prefix(user_id: &str) -> String {
    format!("u/{user_id}/")
}

pub fn user_item_key(user_id: &str, sequence: u64) -> Vec<u8> {
    format!("{}{:016x}", user_prefix(user_id), u64::MAX - sequence).into_bytes()
}

pub fn recipient_key(user_id: &str) -> Vec<u8> {
    format!("r/{user_id}").into_bytes()
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApplyError> {
    shop_actors::store::encode_versioned(FORMAT_VERSION, value).map_err(ApplyError::Invalid)
}

fn body(value: &[u8]) -> Result<&[u8], ServiceError> {
    shop_actors::store::versioned_body(FORMAT_VERSION, value)
}

fn store_error(e: sled::Error) -> ServiceError {
    ServiceError::internal(format!("reading local store: {e}"))
}

/// The id of the notification delivered for `source_event`, if one was.
pub fn sent(tree: &sled::Tree, source_event: &str) -> Result<Option<String>, ServiceError> {
    Ok(tree
        .get(sent_key(source_event))
        .map_err(store_error)?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}

pub fn recipient(tree: &sled::Tree, user_id: &str) -> Result<Option<Recipient>, ServiceError> {
    tree.get(recipient_key(user_id))
        .map_err(store_error)?
        .map(|v| {
            serde_json::from_slice(body(&v)?).map_err(|e| {
                ServiceError::internal(format!("corrupt stored recipient {user_id}: {e}"))
            })
        })
        .transpose()
}

/// One page of a user's notifications, newest first, older than the
/// `notification.sent` sequence `before` when given: the stored JSON of each,
/// and the cursor of the next page when there is one.
pub fn user_page(
    tree: &sled::Tree,
    user_id: &str,
    before: Option<u64>,
    limit: usize,
) -> Result<(Vec<Bytes>, Option<String>), ServiceError> {
    let prefix = user_prefix(user_id);
    let start = match before {
        // Strictly after the cursor's key: the next older item.
        Some(sequence) => {
            let mut key = user_item_key(user_id, sequence);
            key.push(0);
            key
        }
        None => prefix.clone().into_bytes(),
    };
    let mut items = Vec::with_capacity(limit);
    let mut last = None;
    let mut more = false;
    for entry in tree.range(start..) {
        let (key, value) = entry.map_err(store_error)?;
        if !key.starts_with(prefix.as_bytes()) {
            break;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(Bytes::copy_from_slice(body(&value)?));
        last = Some(key);
    }
    let cursor = match (more, last) {
        (true, Some(key)) => {
            let hex = std::str::from_utf8(&key[prefix.len()..])
                .ok()
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .ok_or_else(|| ServiceError::internal("corrupt notification key"))?;
            Some((u64::MAX - hex).to_string())
        }
        _ => None,
    };
    Ok((items, cursor))
}

/// Applies `NOTIFICATION` stream events to the local store.
pub struct NotificationProjection;

impl Projection for NotificationProjection {
    fn apply(&self, event: &StoredEvent<'_>, batch: &mut sled::Batch) -> Result<(), ApplyError> {
        match event.decode()? {
            NotificationEvent::Sent { notification } => {
                event.check_aggregate(&notification.id)?;
                batch.insert(
                    sent_key(&notification.source_event),
                    notification.id.as_bytes(),
                );
                batch.insert(
                    user_item_key(&notification.user_id, event.sequence),
                    encode(&notification)?,
                );
            }
            NotificationEvent::RecipientRecorded { mut recipient } => {
                event.check_aggregate(&recipient.user_id)?;
                recipient.revision = event.sequence;
                batch.insert(recipient_key(&recipient.user_id), encode(&recipient)?);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Kind, Notification};

    fn temp_tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("notification").unwrap();
        (dir, tree)
    }

    fn apply(tree: &sled::Tree, sequence: u64, event: &NotificationEvent) {
        let subject = match event {
            NotificationEvent::Sent { notification } => {
                format!("events.notification.sent.{}", notification.id)
            }
            NotificationEvent::RecipientRecorded { recipient } => {
                format!("events.notification.recipient.{}", recipient.user_id)
            }
        };
        let payload = serde_json::to_vec(event).unwrap();
        let mut batch = sled::Batch::default();
        NotificationProjection
            .apply(
                &StoredEvent {
                    sequence,
                    subject: &subject,
                    headers: None,
                    payload: &payload,
                },
                &mut batch,
            )
            .unwrap();
        tree.apply_batch(batch).unwrap();
    }

    fn sent_event(user: &str, source: &str) -> NotificationEvent {
        NotificationEvent::Sent {
            notification: Notification {
                id: format!("n-{source}"),
                user_id: user.into(),
                kind: Kind::Welcome,
                to: "a@b.c".into(),
                subject: "hi".into(),
                created_at: "2025-01-01T00:00:00Z".into(),
                source_event: source.into(),
                message_id: "<x@y>".into(),
            },
        }
    }

    fn ids(items: &[Bytes]) -> Vec<String> {
        items
            .iter()
            .map(|i| {
                serde_json::from_slice::<Notification>(i)
                    .unwrap()
                    .source_event
            })
            .collect()
    }

    #[test]
    fn marks_sent_and_lists_newest_first_in_pages() {
        let (_dir, tree) = temp_tree();
        for (seq, source) in [
            (3, "A:1"),
            (9, "A:2"),
            (12, "A:3"),
            (20, "A:4"),
            (31, "A:5"),
        ] {
            apply(&tree, seq, &sent_event("u1", source));
        }
        apply(&tree, 40, &sent_event("u10", "B:1"));
        assert_eq!(sent(&tree, "A:2").unwrap().as_deref(), Some("n-A:2"));
        assert_eq!(sent(&tree, "A:9").unwrap(), None);

        let (page, cursor) = user_page(&tree, "u1", None, 2).unwrap();
        assert_eq!(ids(&page), ["A:5", "A:4"]);
        assert_eq!(cursor.as_deref(), Some("20"));
        let (page, cursor) = user_page(&tree, "u1", Some(20), 2).unwrap();
        assert_eq!(ids(&page), ["A:3", "A:2"]);
        let (page, cursor) = user_page(&tree, "u1", cursor.map(|c| c.parse().unwrap()), 2).unwrap();
        assert_eq!((ids(&page), cursor), (vec!["A:1".to_string()], None));
        let (exact, cursor) = user_page(&tree, "u1", None, 5).unwrap();
        assert_eq!((exact.len(), cursor), (5, None));
        let (other, _) = user_page(&tree, "u10", None, 10).unwrap();
        assert_eq!(ids(&other), ["B:1"], "u1's prefix does not match u10");
        assert!(user_page(&tree, "nobody", None, 10).unwrap().0.is_empty());
    }

    #[test]
    fn recipients_carry_their_revision() {
        let (_dir, tree) = temp_tree();
        apply(
            &tree,
            7,
            &NotificationEvent::RecipientRecorded {
                recipient: Recipient {
                    user_id: "u1".into(),
                    email: "a@b.c".into(),
                    name: None,
                    revision: 0,
                },
            },
        );
        let stored = recipient(&tree, "u1").unwrap().unwrap();
        assert_eq!((stored.email.as_str(), stored.revision), ("a@b.c", 7));
        assert_eq!(recipient(&tree, "u2").unwrap(), None);
    }
}
