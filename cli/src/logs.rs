//! `shop logs`: log records of every service from the `LOGS` stream, filtered
//! by service (on the server: subject `logs.<service>.>`), level and trace id
//! (here), one readable line each or the JSON record.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::StreamExt;
use serde_json::Value;

use crate::exit::{Failure, NO_ANSWER, UNREACHABLE, USAGE};

/// The stream services publish their records to (`shop_actors::log_publisher::LOGS_STREAM`).
const LOGS_STREAM: &str = "LOGS";

/// What to show.
pub struct LogQuery {
    pub follow: bool,
    pub service: Option<String>,
    pub level: Option<String>,
    pub trace: Option<String>,
    pub since: Option<String>,
    pub json: bool,
}

/// A parsed query: what the server filters and what this tool does.
#[derive(Debug, PartialEq)]
struct Filter {
    subject: String,
    min_severity: u8,
    trace: Option<String>,
    since: Option<Duration>,
}

fn filter(query: &LogQuery) -> Result<Filter, Failure> {
    let subject = match &query.service {
        None => "logs.>".to_string(),
        Some(service) => {
            if service.is_empty()
                || !service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(Failure::new(
                    USAGE,
                    format!("--service {service:?}: a service name is letters, digits, '-' or '_'"),
                ));
            }
            format!("logs.{service}.>")
        }
    };
    let min_severity = match &query.level {
        None => 0,
        Some(level) => severity(level).ok_or_else(|| {
            Failure::new(
                USAGE,
                format!("--level {level:?}: expected error, warn, info, debug or trace"),
            )
        })?,
    };
    let trace = match &query.trace {
        None => None,
        Some(id) => {
            let id = id.trim().to_ascii_lowercase();
            if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Failure::new(
                    USAGE,
                    format!("--trace {id:?}: a trace id is 32 hex digits"),
                ));
            }
            Some(id)
        }
    };
    let since = match &query.since {
        None => None,
        Some(text) => Some(parse_duration(text).ok_or_else(|| {
            Failure::new(
                USAGE,
                format!("--since {text:?}: expected a duration such as 90s, 15m, 2h or 3d"),
            )
        })?),
    };
    Ok(Filter {
        subject,
        min_severity,
        trace,
        since,
    })
}

/// 0 (trace) to 4 (error); `None` for an unknown level.
fn severity(level: &str) -> Option<u8> {
    match level.trim().to_ascii_lowercase().as_str() {
        "trace" => Some(0),
        "debug" => Some(1),
        "info" => Some(2),
        "warn" | "warning" => Some(3),
        "error" => Some(4),
        _ => None,
    }
}

/// `500ms`, `90s`, `15m`, `2h`, `3d`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => return Some(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86400)?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

fn wanted(filter: &Filter, record: &Value) -> bool {
    let level_ok = record["level"]
        .as_str()
        .and_then(severity)
        .is_none_or(|s| s >= filter.min_severity);
    let trace_ok = match &filter.trace {
        None => true,
        Some(id) => record["trace_id"].as_str() == Some(id.as_str()),
    };
    level_ok && trace_ok
}

/// One readable line: time, level, service/instance, target, message, fields, trace.
pub fn render(record: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut line = format!(
        "{} {:<5} {}/{} {}: {}",
        text(&record["ts"]),
        text(&record["level"]),
        text(&record["service"]),
        text(&record["instance"]),
        text(&record["target"]),
        text(&record["message"]),
    );
    if let Some(fields) = record["fields"].as_object() {
        for (key, value) in fields {
            let value = text(value);
            if value.contains(char::is_whitespace) || value.is_empty() {
                line.push_str(&format!(" {key}={value:?}"));
            } else {
                line.push_str(&format!(" {key}={value}"));
            }
        }
    }
    if let Some(trace) = record["trace_id"].as_str() {
        line.push_str(&format!(" trace={trace}"));
    }
    line
}

pub async fn run(client: &async_nats::Client, query: LogQuery) -> Result<(), Failure> {
    let filter = filter(&query)?;
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(LOGS_STREAM).await.map_err(|e| {
        if e.to_string().contains("not found") {
            Failure::new(
                NO_ANSWER,
                "no LOGS stream: no service has published logs to this NATS server",
            )
        } else {
            Failure::new(UNREACHABLE, format!("opening the LOGS stream: {e}"))
        }
    })?;
    let deliver_policy = match filter.since {
        Some(since) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::now_utc() - since,
        },
        None => DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: filter.subject.clone(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| Failure::new(UNREACHABLE, format!("reading the LOGS stream: {e}")))?;
    if !query.follow && consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| Failure::new(UNREACHABLE, format!("reading the LOGS stream: {e}")))?;
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                return Err(Failure::new(
                    UNREACHABLE,
                    format!("reading the LOGS stream: {e}"),
                ))
            }
            None => return Ok(()),
        };
        // A message carries one or more records, one JSON object per line.
        let records = message.payload.split(|b| *b == b'\n');
        for record in records.filter_map(|line| serde_json::from_slice::<Value>(line).ok()) {
            if wanted(&filter, &record) {
                if query.json {
                    println!("{record}");
                } else {
                    println!("{}", render(&record));
                }
            }
        }
        let pending = message.info().map(|info| info.pending).unwrap_or(0);
        if !query.follow && pending == 0 {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query() -> LogQuery {
        LogQuery {
            follow: false,
            service: None,
            level: None,
            trace: None,
            since: None,
            json: false,
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("3d"), Some(Duration::from_secs(3 * 86400)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5y"), None);
    }

    #[test]
    fn filters_by_level_and_trace() {
        let f = filter(&LogQuery {
            level: Some("WARN".into()),
            trace: Some("4BF92F3577B34DA6A3CE929D0E0E4736".into()),
            service: Some("order".into()),
            ..query()
        })
        .unwrap();
        assert_eq!(f.subject, "logs.order.>");
        let warn = json!({"level": "WARN", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"});
        let info = json!({"level": "INFO", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"});
        let other = json!({"level": "ERROR", "trace_id": "00000000000000000000000000000001"});
        assert!(wanted(&f, &warn));
        assert!(!wanted(&f, &info));
        assert!(!wanted(&f, &other));
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for q in [
            LogQuery {
                service: Some("a.b".into()),
                ..query()
            },
            LogQuery {
                level: Some("loud".into()),
                ..query()
            },
            LogQuery {
                trace: Some("abc".into()),
                ..query()
            },
            LogQuery {
                since: Some("yesterday".into()),
                ..query()
            },
        ] {
            assert_eq!(filter(&q).unwrap_err().code, USAGE);
        }
    }

    #[test]
    fn renders_one_line() {
        let line = render(&json!({
            "ts": "2026-01-01T00:00:00Z", "service": "order", "instance": "order-1",
            "level": "INFO", "target": "order_service::saga", "message": "order confirmed",
            "fields": {"order_id": "o-1", "reason": "out of stock"}, "trace_id": "ab"
        }));
        assert_eq!(
            line,
            "2026-01-01T00:00:00Z INFO  order/order-1 order_service::saga: order confirmed order_id=o-1 reason=\"out of stock\" trace=ab"
        );
    }
}
