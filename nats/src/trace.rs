//! W3C trace context (`traceparent` and `tracestate`) carried in NATS headers, so
//! one trace joins every request and event caused by the same outside call.
//!
//! The trace of the work in hand is also kept in a task-local ([`scope`],
//! [`sync_scope`]) so that log records can carry its id without every log call
//! naming it.

use std::future::Future;

use async_nats::HeaderMap;
use rand::Rng;

pub const TRACEPARENT_HEADER: &str = "traceparent";
pub const TRACESTATE_HEADER: &str = "tracestate";

/// Longest `tracestate` value passed on (the W3C limit is 32 entries of at most
/// 256 characters; anything longer is dropped rather than forwarded).
const MAX_TRACESTATE_LEN: usize = 8192;

/// A `traceparent` value (version 00, 16-byte trace id, 8-byte parent span id,
/// flags) and the `tracestate` that travels with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: String,
    span_id: String,
    flags: String,
    id: u128,
    state: Option<String>,
}

impl TraceContext {
    /// A new trace, for work that did not arrive with one.
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        Self::from_ids(
            rng.random::<u128>().max(1),
            rng.random::<u64>().max(1),
            0x01,
            None,
        )
    }

    /// The context of a span: its trace id, its span id, flags and trace state.
    /// `None` when either id is zero (not a valid span).
    pub fn from_parts(
        trace_id: u128,
        span_id: u64,
        flags: u8,
        state: Option<String>,
    ) -> Option<Self> {
        (trace_id != 0 && span_id != 0).then(|| Self::from_ids(trace_id, span_id, flags, state))
    }

    fn from_ids(trace_id: u128, span_id: u64, flags: u8, state: Option<String>) -> Self {
        Self {
            trace_id: format!("{trace_id:032x}"),
            span_id: format!("{span_id:016x}"),
            flags: format!("{flags:02x}"),
            id: trace_id,
            state: state.filter(|s| valid_tracestate(s)),
        }
    }

    /// Parses a `traceparent` header value; `None` when it is not well formed.
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        if version != "00" || !hex(trace_id, 32) || !hex(span_id, 16) || !hex(flags, 2) {
            return None;
        }
        if trace_id.bytes().all(|b| b == b'0') || span_id.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(Self {
            id: u128::from_str_radix(trace_id, 16).ok()?,
            trace_id: trace_id.to_ascii_lowercase(),
            span_id: span_id.to_ascii_lowercase(),
            flags: flags.to_string(),
            state: None,
        })
    }

    /// This context with `tracestate` (dropped when it is not a plausible value).
    pub fn with_state(mut self, state: Option<&str>) -> Self {
        self.state = state
            .map(str::trim)
            .filter(|s| valid_tracestate(s))
            .map(str::to_string);
        self
    }

    /// The trace context a message carries, if any (`tracestate` only with a `traceparent`).
    pub fn from_headers(headers: Option<&HeaderMap>) -> Option<Self> {
        let headers = headers?;
        let parent = Self::parse(headers.get(TRACEPARENT_HEADER)?.as_str())?;
        Some(parent.with_state(headers.get(TRACESTATE_HEADER).map(|v| v.as_str())))
    }

    /// The context a message carries, or a new root when it carries none.
    pub fn from_headers_or_root(headers: Option<&HeaderMap>) -> Self {
        Self::from_headers(headers).unwrap_or_else(Self::new_root)
    }

    /// Same trace, new span: what an outgoing call carries.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            span_id: format!("{:016x}", rand::rng().random::<u64>().max(1)),
            flags: self.flags.clone(),
            id: self.id,
            state: self.state.clone(),
        }
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The trace id as a number.
    pub fn trace_id_u128(&self) -> u128 {
        self.id
    }

    /// The parent span id as 16 lower-case hex digits.
    pub fn span_id(&self) -> &str {
        &self.span_id
    }

    /// The span id as a number.
    pub fn span_id_u64(&self) -> u64 {
        u64::from_str_radix(&self.span_id, 16).unwrap_or(0)
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        u8::from_str_radix(&self.flags, 16).unwrap_or(0)
    }

    /// The `tracestate` value, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }

    pub fn header_value(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }

    /// Writes `traceparent` (and `tracestate` when there is one) into `headers`.
    pub fn inject(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT_HEADER, self.header_value().as_str());
        if let Some(state) = &self.state {
            headers.insert(TRACESTATE_HEADER, state.as_str());
        }
    }
}

/// A `tracestate` worth forwarding: non-empty, bounded, printable ASCII.
fn valid_tracestate(state: &str) -> bool {
    !state.is_empty()
        && state.len() <= MAX_TRACESTATE_LEN
        && state.bytes().all(|b| (0x20..0x7f).contains(&b))
}

tokio::task_local! {
    static CURRENT_TRACE: u128;
}

/// Runs `future` with `trace` as the current trace (see [`current_trace_id`]).
pub fn scope<F: Future>(trace: &TraceContext, future: F) -> impl Future<Output = F::Output> {
    CURRENT_TRACE.scope(trace.id, future)
}

/// Runs `f` with `trace` as the current trace, on this thread.
pub fn sync_scope<R>(trace: &TraceContext, f: impl FnOnce() -> R) -> R {
    CURRENT_TRACE.sync_scope(trace.id, f)
}

/// The trace id of the work in hand (inside [`scope`] or [`sync_scope`]), as 32 hex digits.
pub fn current_trace_id() -> Option<String> {
    CURRENT_TRACE.try_with(|id| format!("{id:032x}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(v).unwrap();
        assert_eq!(ctx.header_value(), v);
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.trace_id_u128(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ctx.span_id_u64(), 0x00f067aa0ba902b7);
        assert_eq!(ctx.flags(), 1);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-zzf067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn child_keeps_trace_and_changes_span() {
        let root = TraceContext::new_root();
        let child = root.child();
        assert_eq!(root.trace_id(), child.trace_id());
        assert_ne!(root.header_value(), child.header_value());
        assert_eq!(TraceContext::parse(&child.header_value()), Some(child));
    }

    #[test]
    fn tracestate_travels_with_traceparent() {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT_HEADER,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        headers.insert(TRACESTATE_HEADER, "vendor=abc,other=1");
        let ctx = TraceContext::from_headers(Some(&headers)).unwrap();
        assert_eq!(ctx.tracestate(), Some("vendor=abc,other=1"));
        let child = ctx.child();
        let mut out = HeaderMap::new();
        child.inject(&mut out);
        assert_eq!(
            out.get(TRACESTATE_HEADER).unwrap().as_str(),
            "vendor=abc,other=1"
        );
        assert_eq!(
            out.get(TRACEPARENT_HEADER).unwrap().as_str(),
            child.header_value()
        );

        let mut only_state = HeaderMap::new();
        only_state.insert(TRACESTATE_HEADER, "vendor=abc");
        assert_eq!(TraceContext::from_headers(Some(&only_state)), None);
        let plain = TraceContext::new_root();
        let mut out = HeaderMap::new();
        plain.inject(&mut out);
        assert!(out.get(TRACESTATE_HEADER).is_none());
    }

    #[test]
    fn from_parts_round_trips() {
        let ctx = TraceContext::from_parts(0xabc, 0x12, 1, Some("k=v".into())).unwrap();
        assert_eq!(ctx.trace_id(), "00000000000000000000000000000abc");
        assert_eq!(ctx.span_id(), "0000000000000012");
        assert_eq!(ctx.tracestate(), Some("k=v"));
        assert_eq!(TraceContext::from_parts(0, 1, 1, None), None);
        assert_eq!(TraceContext::from_parts(1, 0, 1, None), None);
    }

    #[test]
    fn current_trace_is_scoped() {
        let ctx = TraceContext::new_root();
        assert_eq!(current_trace_id(), None);
        let inside = sync_scope(&ctx, current_trace_id);
        assert_eq!(inside.as_deref(), Some(ctx.trace_id()));
        assert_eq!(current_trace_id(), None);
    }

    #[tokio::test]
    async fn current_trace_follows_the_future() {
        let ctx = TraceContext::new_root();
        let seen = scope(&ctx, async {
            tokio::task::yield_now().await;
            current_trace_id()
        })
        .await;
        assert_eq!(seen.as_deref(), Some(ctx.trace_id()));
    }
}
