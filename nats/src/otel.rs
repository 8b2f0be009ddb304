//! OpenTelemetry spans for NATS requests, replies and JetStream messages.
//!
//! Spans exist only once a process has installed a tracer provider and called
//! [`enable`] (`shop_actors::telemetry` does when `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set). Until then [`start`] returns `None` after one atomic load, so the hot
//! path pays nothing for tracing it does not export.
//!
//! Propagation is explicit: a span's parent is the [`TraceContext`] the work
//! arrived with, and the span's own context ([`Span::context`]) is what the work
//! passes on in `traceparent`/`tracestate`.

use std::{
    borrow::Cow,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        OnceLock,
    },
    time::SystemTime,
};

use opentelemetry::{
    global::{BoxedSpan, BoxedTracer},
    trace::{
        Span as _, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
        Tracer as _,
    },
    Context,
};
pub use opentelemetry::{trace::SpanKind, KeyValue};

use crate::trace::TraceContext;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TRACER: OnceLock<BoxedTracer> = OnceLock::new();

/// Whether spans are being created in this process.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Starts creating spans with the global tracer provider; call once after
/// `opentelemetry::global::set_tracer_provider`.
pub fn enable() {
    TRACER.get_or_init(|| opentelemetry::global::tracer("shop"));
    ENABLED.store(true, Ordering::Relaxed);
}

/// Stops creating spans (at shutdown, before the provider is flushed).
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

/// One span in progress; ends when dropped (or at [`Span::end`]).
pub struct Span {
    span: BoxedSpan,
    context: TraceContext,
}

impl std::fmt::Debug for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Span")
            .field("context", &self.context.header_value())
            .finish()
    }
}

/// Starts a span of `kind` named `name` whose parent is `parent` (a new trace
/// when `None`); `None` when spans are off.
pub fn start(
    kind: SpanKind,
    name: impl Into<Cow<'static, str>>,
    parent: Option<&TraceContext>,
    attributes: Vec<KeyValue>,
) -> Option<Span> {
    start_at(kind, name, parent, attributes, None)
}

/// [`start`] with an explicit start time (work that began before its span could).
pub fn start_at(
    kind: SpanKind,
    name: impl Into<Cow<'static, str>>,
    parent: Option<&TraceContext>,
    attributes: Vec<KeyValue>,
    start_time: Option<SystemTime>,
) -> Option<Span> {
    if !enabled() {
        return None;
    }
    let tracer = TRACER.get()?;
    let parent_cx = match parent {
        Some(parent) => Context::new().with_remote_span_context(span_context_of(parent)),
        None => Context::new(),
    };
    let mut builder = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes);
    if let Some(start_time) = start_time {
        builder = builder.with_start_time(start_time);
    }
    let span = builder.start_with_context(tracer, &parent_cx);
    let context = trace_context_of(span.span_context())
        .or_else(|| parent.map(TraceContext::child))
        .unwrap_or_else(TraceContext::new_root);
    Some(Span { span, context })
}

impl Span {
    /// The span's own context: what the work it covers passes on.
    pub fn context(&self) -> &TraceContext {
        &self.context
    }

    pub fn set_attribute(&mut self, attribute: KeyValue) {
        self.span.set_attribute(attribute);
    }

    /// Marks the span failed with an HTTP-style `code` and a one-line message.
    pub fn set_error(&mut self, code: u16, message: &str) {
        self.span
            .set_attribute(KeyValue::new("shop.error.code", i64::from(code)));
        self.span.set_status(Status::error(message.to_string()));
    }

    /// Marks the span failed without a code.
    pub fn set_failed(&mut self, message: &str) {
        self.span.set_status(Status::error(message.to_string()));
    }

    pub fn end(mut self) {
        self.span.end();
    }
}

/// Common attributes of a span about a NATS subject.
pub fn messaging(subject: &str, operation: &'static str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.system", "nats"),
        KeyValue::new("messaging.destination.name", subject.to_string()),
        KeyValue::new("messaging.operation.type", operation),
    ]
}

/// The OpenTelemetry form of a propagated context (a remote parent).
pub fn span_context_of(trace: &TraceContext) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(trace.trace_id_u128().to_be_bytes()),
        SpanId::from_bytes(trace.span_id_u64().to_be_bytes()),
        TraceFlags::new(trace.flags()),
        true,
        trace
            .tracestate()
            .and_then(|s| TraceState::from_str(s).ok())
            .unwrap_or_default(),
    )
}

/// The propagated form of a span's context; `None` when it is not valid.
pub fn trace_context_of(span: &SpanContext) -> Option<TraceContext> {
    let state = span.trace_state().header();
    TraceContext::from_parts(
        u128::from_be_bytes(span.trace_id().to_bytes()),
        u64::from_be_bytes(span.span_id().to_bytes()),
        span.trace_flags().to_u8(),
        (!state.is_empty()).then_some(state),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_free() {
        assert!(!enabled());
        assert!(start(SpanKind::Server, "x", None, Vec::new()).is_none());
    }

    #[test]
    fn contexts_convert_both_ways() {
        let trace = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap()
            .with_state(Some("vendor=abc"));
        let span = span_context_of(&trace);
        assert!(span.is_remote() && span.is_sampled());
        assert_eq!(
            span.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace_context_of(&span), Some(trace));
    }
}
