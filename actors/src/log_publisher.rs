//! Centralized logging: every log record at or above `LOG_PUBLISH_LEVEL` is also
//! published, as one JSON object per line, to `logs.<service>.<instance>`; the
//! `LOGS` stream keeps them, bounded by size and age (`shop logs` reads it).
//! Records that are waiting together go out as one message (one line each, at
//! most [`MAX_RECORDS_PER_MESSAGE`]): with `sync_interval: always` every message
//! the stream stores is an fsync, and a record per message cost a busy service
//! about a tenth of its order throughput.
//!
//! Logging never waits for NATS: the `tracing` layer puts each record into a
//! bounded buffer with `try_send` and counts what does not fit
//! (`shop_log_records_dropped_total`); one task drains the buffer with core
//! publishes on the binary's NATS connection (no acknowledgement wait per
//! record), and stops draining while that connection is down, so a slow or
//! absent server costs records, never a blocked service. stderr logging is
//! unaffected.

use std::{
    borrow::Cow,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc, LazyLock, Mutex, OnceLock,
    },
    time::Duration,
};

use async_nats::{connection::State as ConnState, jetstream};
use prometheus::IntCounter;
use serde_json::{Map, Value};
use shop_nats::jetstream::ensure_stream;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{
    field::{Field, Visit},
    Event, Level, Subscriber,
};
use tracing_subscriber::{filter::LevelFilter, layer::Context, Layer};

/// Most records one published message carries (one JSON object per line).
pub const MAX_RECORDS_PER_MESSAGE: usize = 64;

/// The stream that keeps every service's published log records.
pub const LOGS_STREAM: &str = "LOGS";
/// Records of instance `i` of service `s` are published on `logs.<s>.<i>`.
pub const LOGS_SUBJECTS: &str = "logs.>";

/// What the publishing side of logging is configured to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPublishSettings {
    /// Least severe level published; `None` turns publishing off (`LOG_PUBLISH_LEVEL=off`).
    pub level: Option<Level>,
    /// Records held while NATS is slow or down before new ones are dropped.
    pub buffer: usize,
    /// `LOGS` stream bound in bytes; the oldest records go first.
    pub stream_max_bytes: i64,
    /// `LOGS` stream bound in age.
    pub stream_max_age: Duration,
    /// `LOGS` stream replicas.
    pub stream_replicas: usize,
}

impl Default for LogPublishSettings {
    fn default() -> Self {
        Self {
            level: Some(Level::INFO),
            buffer: 4096,
            stream_max_bytes: 256 * 1024 * 1024,
            stream_max_age: Duration::from_secs(3 * 24 * 3600),
            stream_replicas: 1,
        }
    }
}

impl LogPublishSettings {
    /// Reads `LOG_PUBLISH_LEVEL`, `LOG_PUBLISH_BUFFER`, `LOG_STREAM_MAX_BYTES`,
    /// `LOG_STREAM_MAX_AGE_SECS` and `LOG_STREAM_REPLICAS` through `var`;
    /// unset or empty means the default, an invalid value is an error naming it.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut settings = Self::default();
        let get = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(level) = get("LOG_PUBLISH_LEVEL") {
            settings.level = parse_level(&level).ok_or_else(|| {
                format!(
                    "LOG_PUBLISH_LEVEL={level:?}: expected off, error, warn, info, debug or trace"
                )
            })?;
        }
        let number = |name: &str, min: u64| -> Result<Option<u64>, String> {
            match get(name) {
                None => Ok(None),
                Some(v) => match v.parse::<u64>() {
                    Ok(n) if n >= min => Ok(Some(n)),
                    _ => Err(format!(
                        "{name}={v:?}: expected a whole number of at least {min}"
                    )),
                },
            }
        };
        if let Some(n) = number("LOG_PUBLISH_BUFFER", 1)? {
            settings.buffer = usize::try_from(n).unwrap_or(usize::MAX).min(1 << 20);
        }
        if let Some(n) = number("LOG_STREAM_MAX_BYTES", 1024 * 1024)? {
            settings.stream_max_bytes = i64::try_from(n).unwrap_or(i64::MAX);
        }
        if let Some(n) = number("LOG_STREAM_MAX_AGE_SECS", 60)? {
            settings.stream_max_age = Duration::from_secs(n);
        }
        // Unset: as many as the services' streams (`JS_REPLICAS`), so that a
        // cluster keeps its logs when a node goes.
        let replicas = match number("LOG_STREAM_REPLICAS", 1)? {
            Some(n) => Some(n),
            None => number("JS_REPLICAS", 1)?,
        };
        if let Some(n) = replicas {
            settings.stream_replicas = usize::try_from(n).unwrap_or(1);
        }
        Ok(settings)
    }

    /// The `LOGS` stream these settings describe.
    pub fn stream_config(&self) -> jetstream::stream::Config {
        jetstream::stream::Config {
            name: LOGS_STREAM.to_string(),
            description: Some(
                "log records of every service instance, on logs.<service>.<instance>".to_string(),
            ),
            subjects: vec![LOGS_SUBJECTS.to_string()],
            storage: jetstream::stream::StorageType::File,
            num_replicas: self.stream_replicas,
            max_bytes: self.stream_max_bytes,
            max_age: self.stream_max_age,
            discard: jetstream::stream::DiscardPolicy::Old,
            allow_direct: true,
            ..Default::default()
        }
    }
}

/// `off`, `error`, `warn`, `info`, `debug`, `trace` (any case); `Some(None)` is off.
pub fn parse_level(value: &str) -> Option<Option<Level>> {
    match value.trim().to_ascii_lowercase().as_str() {
        "off" | "none" => Some(None),
        "error" => Some(Some(Level::ERROR)),
        "warn" | "warning" => Some(Some(Level::WARN)),
        "info" => Some(Some(Level::INFO)),
        "debug" => Some(Some(Level::DEBUG)),
        "trace" => Some(Some(Level::TRACE)),
        _ => None,
    }
}

/// One log record as the layer captured it.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub time: time::OffsetDateTime,
    pub level: Level,
    pub target: Cow<'static, str>,
    pub message: String,
    pub fields: Map<String, Value>,
    /// The trace of the work that logged it (see `shop_nats::trace::scope`).
    pub trace_id: Option<String>,
}

impl LogRecord {
    /// The published JSON form: `ts`, `service`, `instance`, `level`, `target`,
    /// `message`, `fields`, and `trace_id` when there is one.
    pub fn to_json(&self, service: &str, instance: &str) -> Value {
        let mut out = Map::new();
        out.insert(
            "ts".into(),
            Value::String(
                self.time
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            ),
        );
        out.insert("service".into(), Value::String(service.to_string()));
        out.insert("instance".into(), Value::String(instance.to_string()));
        out.insert(
            "level".into(),
            Value::String(self.level.as_str().to_string()),
        );
        out.insert("target".into(), Value::String(self.target.to_string()));
        out.insert("message".into(), Value::String(self.message.clone()));
        out.insert("fields".into(), Value::Object(self.fields.clone()));
        if let Some(trace_id) = &self.trace_id {
            out.insert("trace_id".into(), Value::String(trace_id.clone()));
        }
        Value::Object(out)
    }
}

/// Collects an event's fields as JSON values.
#[derive(Default)]
struct FieldVisitor {
    message: Option<String>,
    target: Option<String>,
    fields: Map<String, Value>,
}

impl FieldVisitor {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => {
                self.message = Some(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
            }
            // Records bridged from the `log` crate name their real target here.
            "log.target" => self.target = value.as_str().map(str::to_string),
            "log.module_path" | "log.file" | "log.line" => {}
            name => {
                self.fields.insert(name.to_string(), value);
            }
        }
    }
}

impl Visit for FieldVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
}

/// Counters of the publishing side, shared by every registry that exports them.
pub struct LogCounters {
    pub dropped: IntCounter,
    pub published: IntCounter,
}

static COUNTERS: LazyLock<LogCounters> = LazyLock::new(|| LogCounters {
    dropped: IntCounter::new(
        "log_records_dropped_total",
        "Log records not published because the buffer was full (NATS slow or down)",
    )
    .expect("constant metric name is valid"),
    published: IntCounter::new(
        "log_records_published_total",
        "Log records published to the LOGS stream",
    )
    .expect("constant metric name is valid"),
});

pub fn counters() -> &'static LogCounters {
    &COUNTERS
}

/// The `tracing` layer that hands records to the publisher; never blocks.
pub struct CaptureLayer {
    tx: mpsc::Sender<LogRecord>,
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = FieldVisitor::default();
        event.record(&mut visitor);
        let metadata = event.metadata();
        let record = LogRecord {
            time: time::OffsetDateTime::now_utc(),
            level: *metadata.level(),
            target: match visitor.target {
                Some(target) => Cow::Owned(target),
                None => Cow::Borrowed(metadata.target()),
            },
            message: visitor.message.unwrap_or_default(),
            fields: visitor.fields,
            trace_id: shop_nats::trace::current_trace_id(),
        };
        if self.tx.try_send(record).is_err() {
            COUNTERS.dropped.inc();
        }
    }
}

/// Where the publisher is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublisherState {
    /// Publishing is off, or this process never started it.
    Off,
    /// Setting up the `LOGS` stream.
    Starting,
    Connected,
    /// NATS is down or unreachable: records wait in the buffer (or are dropped).
    Disconnected,
    Stopped,
}

impl PublisherState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Starting => "starting",
            Self::Connected => "ok",
            Self::Disconnected => "disconnected",
            Self::Stopped => "stopped",
        }
    }
}

/// The buffer between the layer and the publishing task.
struct Pipeline {
    tx: mpsc::Sender<LogRecord>,
    rx: Mutex<Option<mpsc::Receiver<LogRecord>>>,
    settings: LogPublishSettings,
    state: AtomicU8,
    stop: CancellationToken,
    stopped: Arc<Notify>,
    subject: OnceLock<String>,
}

static PIPELINE: OnceLock<Pipeline> = OnceLock::new();

fn set_state(state: PublisherState) {
    if let Some(pipeline) = PIPELINE.get() {
        pipeline.state.store(state as u8, Ordering::Relaxed);
    }
}

/// The capture layer for `settings`, filtered to its level; `None` when
/// publishing is off or a layer was already made in this process.
pub fn capture_layer<S>(
    settings: &LogPublishSettings,
) -> Option<tracing_subscriber::filter::Filtered<CaptureLayer, LevelFilter, S>>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let level = settings.level?;
    if PIPELINE.get().is_some() {
        return None;
    }
    let (tx, rx) = mpsc::channel(settings.buffer.max(1));
    let pipeline = Pipeline {
        tx: tx.clone(),
        rx: Mutex::new(Some(rx)),
        settings: settings.clone(),
        state: AtomicU8::new(PublisherState::Off as u8),
        stop: CancellationToken::new(),
        stopped: Arc::new(Notify::new()),
        subject: OnceLock::new(),
    };
    PIPELINE.set(pipeline).ok()?;
    Some(CaptureLayer { tx }.with_filter(LevelFilter::from_level(level)))
}

/// Starts publishing what the layer captures, as `service`/`instance`, on
/// `nats`. Must run inside a Tokio runtime. Returns false when there is nothing
/// to publish (no layer installed) or it already started.
pub fn start(service: &str, instance: &str, nats: &async_nats::Client) -> bool {
    let Some(pipeline) = PIPELINE.get() else {
        return false;
    };
    let Some(rx) = pipeline.rx.lock().ok().and_then(|mut rx| rx.take()) else {
        return false;
    };
    let subject = format!("logs.{service}.{instance}");
    let _ = pipeline.subject.set(subject.clone());
    set_state(PublisherState::Starting);
    tokio::spawn(publish(
        rx,
        subject,
        nats.clone(),
        pipeline.settings.clone(),
        pipeline.stop.clone(),
        pipeline.stopped.clone(),
    ));
    true
}

/// Publishes what is still buffered (for at most `timeout`) and stops publishing.
pub async fn flush(timeout: Duration) {
    let Some(pipeline) = PIPELINE.get() else {
        return;
    };
    if matches!(state(), PublisherState::Off | PublisherState::Stopped) {
        return;
    }
    let stopped = pipeline.stopped.notified();
    pipeline.stop.cancel();
    let _ = tokio::time::timeout(timeout, stopped).await;
}

/// Stops publishing without waiting (for synchronous shutdown paths).
pub fn stop() {
    if let Some(pipeline) = PIPELINE.get() {
        pipeline.stop.cancel();
    }
}

pub fn state() -> PublisherState {
    match PIPELINE.get().map(|p| p.state.load(Ordering::Relaxed)) {
        Some(s) if s == PublisherState::Starting as u8 => PublisherState::Starting,
        Some(s) if s == PublisherState::Connected as u8 => PublisherState::Connected,
        Some(s) if s == PublisherState::Disconnected as u8 => PublisherState::Disconnected,
        Some(s) if s == PublisherState::Stopped as u8 => PublisherState::Stopped,
        _ => PublisherState::Off,
    }
}

/// What `/health` says about log publishing.
pub fn health() -> Value {
    let (buffered, capacity, subject, level) = match PIPELINE.get() {
        Some(p) => (
            p.tx.max_capacity() - p.tx.capacity(),
            p.tx.max_capacity(),
            p.subject.get().cloned(),
            p.settings.level.map(|l| l.as_str()),
        ),
        None => (0, 0, None, None),
    };
    serde_json::json!({
        "status": state().as_str(),
        "subject": subject,
        "level": level,
        "buffered": buffered,
        "buffer": capacity,
        "published": COUNTERS.published.get(),
        "dropped": COUNTERS.dropped.get(),
    })
}

async fn publish(
    mut rx: mpsc::Receiver<LogRecord>,
    subject: String,
    client: async_nats::Client,
    settings: LogPublishSettings,
    stop: CancellationToken,
    stopped: Arc<Notify>,
) {
    let (service, instance) = {
        let mut parts = subject.splitn(3, '.').skip(1);
        (
            parts.next().unwrap_or_default().to_string(),
            parts.next().unwrap_or_default().to_string(),
        )
    };
    let js = jetstream::new(client.clone());
    let ensured = tokio::select! {
        ensured = ensure_stream(&js, settings.stream_config()) => ensured,
        _ = stop.cancelled() => {
            set_state(PublisherState::Stopped);
            stopped.notify_waiters();
            return;
        }
    };
    if let Err(e) = ensured {
        tracing::warn!(stream = LOGS_STREAM, error = %e, "cannot set up the LOGS stream; records are published but may not be kept");
    }
    // `record` and whatever else waits in the buffer, one line each.
    let send = |record: LogRecord, rx: &mut mpsc::Receiver<LogRecord>| {
        let mut body = Vec::new();
        let mut records: u64 = 0;
        let mut next = Some(record);
        while let Some(record) = next.take() {
            if serde_json::to_writer(&mut body, &record.to_json(&service, &instance)).is_ok() {
                body.push(b'\n');
                records += 1;
            }
            if records < MAX_RECORDS_PER_MESSAGE as u64 {
                next = rx.try_recv().ok();
            }
        }
        let client = client.clone();
        let subject = subject.clone();
        async move {
            match client.publish(subject, body.into()).await {
                Ok(()) => COUNTERS.published.inc_by(records),
                Err(_) => COUNTERS.dropped.inc_by(records),
            }
        }
    };
    // A record taken from the buffer just as the connection went down waits here.
    let mut held: Option<LogRecord> = None;
    loop {
        if client.connection_state() != ConnState::Connected {
            set_state(PublisherState::Disconnected);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                _ = stop.cancelled() => break,
            }
        }
        set_state(PublisherState::Connected);
        let record = match held.take() {
            Some(record) => record,
            None => tokio::select! {
                biased;
                record = rx.recv() => match record {
                    Some(record) => record,
                    None => break,
                },
                _ = stop.cancelled() => break,
            },
        };
        if client.connection_state() == ConnState::Connected {
            send(record, &mut rx).await;
        } else {
            held = Some(record);
        }
    }
    // Stopping: publish what is buffered while the connection allows it.
    while client.connection_state() == ConnState::Connected {
        match held.take().map(Ok).unwrap_or_else(|| rx.try_recv()) {
            Ok(record) => send(record, &mut rx).await,
            Err(_) => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    set_state(PublisherState::Stopped);
    stopped.notify_waiters();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn settings_default_and_parse() {
        assert_eq!(
            LogPublishSettings::from_vars(vars(&[])).unwrap(),
            LogPublishSettings::default()
        );
        let s = LogPublishSettings::from_vars(vars(&[
            ("LOG_PUBLISH_LEVEL", "WARN"),
            ("LOG_PUBLISH_BUFFER", "16"),
            ("LOG_STREAM_MAX_BYTES", "10485760"),
            ("LOG_STREAM_MAX_AGE_SECS", "3600"),
        ]))
        .unwrap();
        assert_eq!(s.level, Some(Level::WARN));
        assert_eq!(s.buffer, 16);
        assert_eq!(s.stream_max_bytes, 10 * 1024 * 1024);
        assert_eq!(s.stream_max_age, Duration::from_secs(3600));
        let off = LogPublishSettings::from_vars(vars(&[("LOG_PUBLISH_LEVEL", "off")])).unwrap();
        assert_eq!(off.level, None);
    }

    #[test]
    fn logs_have_as_many_replicas_as_the_services_streams_unless_told() {
        let replicas = |pairs: &[(&str, &str)]| {
            LogPublishSettings::from_vars(vars(pairs))
                .unwrap()
                .stream_config()
                .num_replicas
        };
        assert_eq!(replicas(&[]), 1);
        assert_eq!(replicas(&[("JS_REPLICAS", "3")]), 3);
        assert_eq!(
            replicas(&[("JS_REPLICAS", "3"), ("LOG_STREAM_REPLICAS", "1")]),
            1
        );
    }

    #[test]
    fn bad_settings_name_the_variable() {
        for (name, value) in [
            ("LOG_PUBLISH_LEVEL", "loud"),
            ("LOG_PUBLISH_BUFFER", "0"),
            ("LOG_STREAM_MAX_BYTES", "12"),
            ("LOG_STREAM_MAX_AGE_SECS", "-1"),
        ] {
            let err = LogPublishSettings::from_vars(vars(&[(name, value)])).unwrap_err();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn stream_is_bounded_by_size_and_age() {
        let config = LogPublishSettings::default().stream_config();
        assert_eq!(config.name, "LOGS");
        assert_eq!(config.subjects, vec!["logs.>".to_string()]);
        assert_eq!(config.max_bytes, 256 * 1024 * 1024);
        assert_eq!(config.max_age, Duration::from_secs(3 * 24 * 3600));
        assert_eq!(config.discard, jetstream::stream::DiscardPolicy::Old);
    }

    #[test]
    fn record_json_carries_identity_fields_and_trace() {
        let mut fields = Map::new();
        fields.insert("order_id".into(), Value::from("o-1"));
        let record = LogRecord {
            time: time::OffsetDateTime::UNIX_EPOCH,
            level: Level::WARN,
            target: Cow::Borrowed("order_service::saga"),
            message: "order cancelling".into(),
            fields,
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        };
        let json = record.to_json("order", "order-1");
        assert_eq!(json["ts"], "1970-01-01T00:00:00Z");
        assert_eq!(json["service"], "order");
        assert_eq!(json["instance"], "order-1");
        assert_eq!(json["level"], "WARN");
        assert_eq!(json["target"], "order_service::saga");
        assert_eq!(json["message"], "order cancelling");
        assert_eq!(json["fields"]["order_id"], "o-1");
        assert_eq!(json["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        let untraced = LogRecord {
            trace_id: None,
            ..record
        };
        assert!(untraced
            .to_json("order", "order-1")
            .get("trace_id")
            .is_none());
    }

    #[test]
    fn layer_captures_fields_trace_and_counts_drops() {
        use tracing_subscriber::prelude::*;
        let (tx, mut rx) = mpsc::channel(1);
        let subscriber = tracing_subscriber::registry().with(CaptureLayer { tx });
        let trace = shop_nats::TraceContext::new_root();
        let dropped_before = counters().dropped.get();
        tracing::subscriber::with_default(subscriber, || {
            shop_nats::trace::sync_scope(&trace, || {
                tracing::info!(
                    order_id = "o-1",
                    attempt = 2u64,
                    ok = true,
                    "order confirmed"
                );
            });
            tracing::warn!("no room for this one");
        });
        let record = rx.try_recv().unwrap();
        assert_eq!(record.message, "order confirmed");
        assert_eq!(record.level, Level::INFO);
        assert_eq!(record.fields["order_id"], "o-1");
        assert_eq!(record.fields["attempt"], 2);
        assert_eq!(record.fields["ok"], true);
        assert_eq!(record.trace_id.as_deref(), Some(trace.trace_id()));
        assert!(rx.try_recv().is_err());
        assert!(counters().dropped.get() > dropped_before);
    }
}
