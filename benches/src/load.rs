//! Closed-loop request/reply load generator.
//!
//! `concurrency` tasks each keep exactly one request in flight: send, wait for
//! the reply, record, repeat. Only requests that *complete* inside the
//! measurement window `[start + warmup, start + warmup + duration)` are
//! counted; throughput is successful replies divided by the window length.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use async_nats::header::HeaderName;
use async_nats::{Client, HeaderMap, Request, Subject};
use bytes::Bytes;
use tokio::task::JoinSet;

use crate::nats;
use crate::report::{Settings, Summary, Tally};

#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub nats_url: String,
    pub label: String,
    pub subject: String,
    pub concurrency: usize,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub timeout: Duration,
    pub payloads: Vec<Bytes>,
    /// Validated `(name, value)` request headers.
    pub headers: Vec<(String, String)>,
}

/// Validates that `s` is JSON and returns it as a payload.
pub fn parse_payload(s: &str) -> Result<Bytes> {
    serde_json::from_str::<serde_json::Value>(s).context("payload is not valid JSON")?;
    Ok(Bytes::from(s.trim().to_owned()))
}

/// Reads one JSON payload per non-empty line.
pub fn read_payloads_file(path: &Path) -> Result<Vec<Bytes>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading payloads file {}", path.display()))?;
    let payloads = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            parse_payload(line).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect::<Result<Vec<_>>>()?;
    if payloads.is_empty() {
        bail!("payloads file {} has no payloads", path.display());
    }
    Ok(payloads)
}

/// Parses `K:V` header specs (split at the first `:`, both sides trimmed).
pub fn parse_headers(specs: &[String]) -> Result<Vec<(String, String)>> {
    specs
        .iter()
        .map(|spec| {
            let Some((name, value)) = spec.split_once(':') else {
                bail!("invalid header {spec:?}: expected K:V");
            };
            let (name, value) = (name.trim(), value.trim());
            if name.is_empty() {
                bail!("invalid header {spec:?}: empty name");
            }
            HeaderName::from_str(name)
                .map_err(|e| anyhow::anyhow!("invalid header name {name:?}: {e}"))?;
            if value.chars().any(|c| c.is_control()) {
                bail!("invalid header value for {name:?}: contains control characters");
            }
            Ok((name.to_owned(), value.to_owned()))
        })
        .collect()
}

fn header_map(headers: &[(String, String)]) -> Result<Option<HeaderMap>> {
    if headers.is_empty() {
        return Ok(None);
    }
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_str(name)
            .map_err(|e| anyhow::anyhow!("invalid header name {name:?}: {e}"))?;
        map.append(name, value.as_str());
    }
    Ok(Some(map))
}

struct Window {
    measure_start: Instant,
    end: Instant,
}

pub async fn run(config: &LoadConfig) -> Result<Summary> {
    if config.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if config.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if config.payloads.is_empty() {
        bail!("no payloads");
    }
    let subject = Subject::from(config.subject.as_str());
    let headers = header_map(&config.headers)?;
    let payloads: Arc<[Bytes]> = config.payloads.clone().into();

    let mut clients: Vec<Client> = Vec::with_capacity(config.connections);
    for i in 0..config.connections {
        let name = format!("shop-bench-load-{}-{i}", config.label);
        clients.push(nats::connect(&config.nats_url, &name, config.timeout).await?);
    }

    eprintln!(
        "load: {} -> {} (c={}, connections={}, warmup {:.1}s, duration {:.1}s, {} payload(s){})",
        config.label,
        config.subject,
        config.concurrency,
        config.connections,
        config.warmup.as_secs_f64(),
        config.duration.as_secs_f64(),
        payloads.len(),
        if headers.is_some() {
            ", with headers"
        } else {
            ""
        },
    );

    let start = Instant::now();
    let window = Arc::new(Window {
        measure_start: start + config.warmup,
        end: start + config.warmup + config.duration,
    });
    let mut tasks = JoinSet::new();
    for task_idx in 0..config.concurrency {
        let client = clients[task_idx % clients.len()].clone();
        tasks.spawn(run_task(
            client,
            subject.clone(),
            headers.clone(),
            Arc::clone(&payloads),
            task_idx,
            Arc::clone(&window),
        ));
    }

    let mut tally = Tally::new()?;
    while let Some(joined) = tasks.join_next().await {
        tally.merge(joined.context("load task panicked or was cancelled")??)?;
    }

    let settings = Settings {
        nats_url: config.nats_url.clone(),
        concurrency: config.concurrency,
        connections: config.connections,
        duration_s: config.duration.as_secs_f64(),
        warmup_s: config.warmup.as_secs_f64(),
        timeout_s: config.timeout.as_secs_f64(),
        payloads: payloads.len(),
        headers: config
            .headers
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect(),
    };
    let unix_time_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(Summary::new(
        config.label.clone(),
        config.subject.clone(),
        settings,
        config.duration.as_secs_f64(),
        tally,
        unix_time_s,
    ))
}

async fn run_task(
    client: Client,
    subject: Subject,
    headers: Option<HeaderMap>,
    payloads: Arc<[Bytes]>,
    task_idx: usize,
    window: Arc<Window>,
) -> Result<Tally> {
    let mut tally = Tally::new()?;
    // Spread tasks over the payload list so they do not all ask for the same item.
    let mut idx = task_idx % payloads.len();
    loop {
        let sent = Instant::now();
        if sent >= window.end {
            break;
        }
        let payload = payloads[idx].clone();
        idx = (idx + 1) % payloads.len();
        let result = match &headers {
            None => client.request(subject.clone(), payload).await,
            Some(h) => {
                let request = Request::new().payload(payload).headers(h.clone());
                client.send_request(subject.clone(), request).await
            }
        };
        let done = Instant::now();
        if done < window.measure_start || done >= window.end {
            continue;
        }
        match result {
            Ok(reply) => match nats::service_error(reply.headers.as_ref()) {
                None => {
                    let us =
                        u64::try_from(done.duration_since(sent).as_micros()).unwrap_or(u64::MAX);
                    tally.record_ok(us, reply.payload.len());
                }
                Some((code, description)) => tally.record_error(
                    format!("service_{code}"),
                    format!("service error {code}: {description}"),
                ),
            },
            Err(e) => {
                tally.record_error(nats::request_error_kind(e.kind()).to_owned(), e.to_string())
            }
        }
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_validated() {
        let ok = parse_headers(&["X-Bench: yes".into(), "Trace:a:b".into()]).unwrap();
        assert_eq!(
            ok,
            vec![
                ("X-Bench".to_owned(), "yes".to_owned()),
                ("Trace".to_owned(), "a:b".to_owned())
            ]
        );
        assert!(parse_headers(&["novalue".into()]).is_err());
        assert!(parse_headers(&["bad name:x".into()]).is_err());
        assert!(header_map(&ok).unwrap().is_some());
        assert!(header_map(&[]).unwrap().is_none());
    }

    #[test]
    fn payloads_must_be_json() {
        assert!(parse_payload(r#"{"id":"bench-0001"}"#).is_ok());
        assert!(parse_payload("not json").is_err());
    }
}
