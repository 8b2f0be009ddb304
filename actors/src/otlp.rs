//! OTLP/HTTP export of spans, only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.
//!
//! Spans are batched by the SDK's batch processor on a thread of its own and
//! sent with a small blocking HTTP/1.1 client (plain `http://`; run a local
//! collector or agent for TLS). `OTEL_EXPORTER_OTLP_PROTOCOL` chooses
//! `http/protobuf` (the default) or `http/json`; the exporter also honours
//! `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_EXPORTER_OTLP_TIMEOUT`, the SDK
//! `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_BSP_*` and `OTEL_RESOURCE_ATTRIBUTES`.

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::Duration,
};

use anyhow::Context;
use async_trait::async_trait;
use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{trace::SdkTracerProvider, Resource};

/// The installed provider, kept for flushing at shutdown.
static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);

/// Largest response body read from a collector.
const MAX_RESPONSE: usize = 1024 * 1024;

/// Where spans go, from the environment; `None` when exporting is off.
pub fn endpoint_from_env(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .find_map(|name| {
        var(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    })
}

/// `endpoint` without any `user:password@` part, for logs and `/health`.
pub fn redacted(endpoint: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => endpoint.to_string(),
    }
}

/// The OTLP encoding chosen by `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`.
pub fn protocol_from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Protocol> {
    let value = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|name| {
        var(name)
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
    });
    match value.as_deref() {
        None | Some("http/protobuf") => Ok(Protocol::HttpBinary),
        Some("http/json") => Ok(Protocol::HttpJson),
        Some("grpc") => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported: use http/protobuf or http/json (a collector's port 4318)"
        ),
        Some(other) => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={other:?}: expected http/protobuf or http/json"
        ),
    }
}

/// Builds and installs the global tracer provider when an endpoint is set, and
/// turns spans on. Returns the endpoint, or `None` when exporting is off.
pub fn install(service: &str, instance: &str, version: &str) -> anyhow::Result<Option<String>> {
    let env = |name: &str| std::env::var(name).ok();
    let Some(endpoint) = endpoint_from_env(env) else {
        return Ok(None);
    };
    anyhow::ensure!(
        endpoint.starts_with("http://"),
        "OTEL_EXPORTER_OTLP_ENDPOINT={:?}: only plain http:// endpoints are supported (send to a local collector for TLS)",
        redacted(&endpoint)
    );
    let protocol = protocol_from_env(env)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .with_http_client(BlockingHttpClient {
            timeout: Duration::from_secs(10),
            failing: AtomicBool::new(false),
        })
        .build()
        .with_context(|| format!("setting up OTLP export to {}", redacted(&endpoint)))?;
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .with_attributes([
            KeyValue::new("service.instance.id", instance.to_string()),
            KeyValue::new("service.version", version.to_string()),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    if let Ok(mut slot) = PROVIDER.lock() {
        *slot = Some(provider);
    }
    shop_nats::otel::enable();
    Ok(Some(redacted(&endpoint)))
}

/// Whether spans are being exported.
pub fn active() -> bool {
    PROVIDER.lock().map(|p| p.is_some()).unwrap_or(false)
}

/// Stops creating spans and exports what is pending (blocking, bounded by `timeout`).
pub fn shutdown(timeout: Duration) {
    shop_nats::otel::disable();
    let provider = PROVIDER.lock().ok().and_then(|mut p| p.take());
    if let Some(provider) = provider {
        if let Err(e) = provider.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %e, "flushing spans at shutdown");
        }
    }
}

/// A minimal blocking HTTP/1.1 client for the exporter's own thread.
#[derive(Debug)]
struct BlockingHttpClient {
    timeout: Duration,
    /// Set after a failure is logged, so a down collector logs once, not per batch.
    failing: AtomicBool,
}

#[async_trait]
impl HttpClient for BlockingHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let uri = redacted(&request.uri().to_string());
        let result = post(&request, self.timeout);
        match &result {
            Ok(response) if response.status().is_success() => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %uri, "span export works again");
                }
            }
            Ok(response) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(endpoint = %uri, status = response.status().as_u16(), "span export refused by the collector");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(endpoint = %uri, error = %e, "span export failed; spans are dropped until the collector answers");
                }
            }
        }
        result
    }
}

fn post(request: &Request<Bytes>, timeout: Duration) -> Result<Response<Bytes>, HttpError> {
    let uri = request.uri();
    if uri.scheme_str() != Some("http") {
        return Err(format!("{uri}: only http:// is supported").into());
    }
    let host = uri.host().ok_or("endpoint without a host")?;
    let port = uri.port_u16().unwrap_or(80);
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("{host}:{port} does not resolve"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut head = format!(
        "{} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        request.method(),
        request.body().len()
    );
    for (name, value) in request.headers() {
        if name == "host" || name == "content-length" || name == "connection" {
            continue;
        }
        if let Ok(value) = value.to_str() {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(request.body())?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE as u64 + 64 * 1024)
        .read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<Response<Bytes>, HttpError> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("HTTP response without a status")?;
    let mut builder = Response::builder().status(status);
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                chunked = true;
                continue;
            }
            builder = builder.header(name, value);
        }
    }
    if chunked {
        body = dechunk(&body);
    }
    Ok(builder.body(Bytes::from(body))?)
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&body[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size.filter(|&n| n > 0) else {
            break;
        };
        let rest = &body[end + 2..];
        if rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        body = rest.get(size + 2..).unwrap_or_default();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn endpoint_and_protocol_from_env() {
        assert_eq!(endpoint_from_env(vars(&[])), None);
        assert_eq!(
            endpoint_from_env(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            None
        );
        assert_eq!(
            endpoint_from_env(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")])),
            Some("http://c:4318".into())
        );
        assert_eq!(
            endpoint_from_env(vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://t:4318/v1/traces"
                )
            ])),
            Some("http://t:4318/v1/traces".into())
        );
        assert_eq!(protocol_from_env(vars(&[])).unwrap(), Protocol::HttpBinary);
        assert_eq!(
            protocol_from_env(vars(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")])).unwrap(),
            Protocol::HttpJson
        );
        let err = protocol_from_env(vars(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
    }

    #[test]
    fn endpoints_are_redacted() {
        assert_eq!(
            redacted("http://u:secret@c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(redacted("http://c:4318"), "http://c:4318");
        assert_eq!(redacted("c:4318"), "c:4318");
    }

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!(plain.status(), 200);
        assert_eq!(plain.body().as_ref(), b"{}");
        let chunked = parse_response(
            b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(chunked.status(), 400);
        assert_eq!(chunked.body().as_ref(), b"abcde");
        assert!(parse_response(b"garbage").is_err());
    }
}
