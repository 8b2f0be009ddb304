//! Tracing, centralized logs and `shop status` against a running system: a real
//! nats-server, real service processes (and the gateway), and an OTLP/HTTP
//! receiver started by the test that records every span it is sent.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::HeaderMap;
use axum::{extract::State, http::StatusCode, routing::post, Router};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use shop_nats::auth::bearer_headers;
use testkit::{request_json, request_json_with_headers, workspace_bin, NatsServer, ServiceProcess};

const ADMIN_EMAIL: &str = "admin@shop.test";
const ADMIN_PASSWORD: &str = "admin-password-for-tests";
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Notify,
};

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct SeenSpan {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    trace_state: String,
    name: String,
    /// OTLP span kind: 2 server, 3 client, 4 producer, 5 consumer.
    kind: i64,
}

/// An OTLP/HTTP (JSON) trace receiver on a free port.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<SeenSpan>>>,
    changed: Arc<Notify>,
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let receiver = Self::default();
        let app = Router::new()
            .route("/v1/traces", post(Self::traces))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, addr)
    }

    async fn traces(
        State(receiver): State<Self>,
        headers: axum::http::HeaderMap,
        body: Bytes,
    ) -> (StatusCode, &'static str) {
        let json = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let Some(request) = json
            .then(|| serde_json::from_slice::<Value>(&body).ok())
            .flatten()
        else {
            return (StatusCode::BAD_REQUEST, "{}");
        };
        let mut seen = Vec::new();
        for resource in request["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_string();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let text = |k: &str| span[k].as_str().unwrap_or_default().to_string();
                    seen.push(SeenSpan {
                        service: service.clone(),
                        trace_id: text("traceId"),
                        span_id: text("spanId"),
                        parent_span_id: text("parentSpanId"),
                        trace_state: text("traceState"),
                        name: text("name"),
                        kind: span["kind"].as_i64().unwrap_or_default(),
                    });
                }
            }
        }
        receiver.spans.lock().unwrap().extend(seen);
        receiver.changed.notify_waiters();
        (StatusCode::OK, "{}")
    }

    /// The spans of `trace_id` once `done` says they are complete enough.
    async fn wait_for(
        &self,
        trace_id: &str,
        timeout: Duration,
        done: impl Fn(&[SeenSpan]) -> bool,
    ) -> Vec<SeenSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            let spans: Vec<SeenSpan> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            if done(&spans) {
                return spans;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("spans of trace {trace_id} within {timeout:?}: {spans:#?}");
            }
        }
    }
}

fn services_of(spans: &[SeenSpan]) -> BTreeSet<&str> {
    spans.iter().map(|s| s.service.as_str()).collect()
}

/// A nats-server and service processes on it.
struct System {
    nats: NatsServer,
    client: async_nats::Client,
    _data: tempfile::TempDir,
    procs: HashMap<String, ServiceProcess>,
}

impl System {
    /// `services`: (binary name, instances); instance ids are `<name>-<i>`.
    async fn start(services: &[(&str, usize)], env: &[(&str, &str)]) -> Self {
        let nats = NatsServer::start().await.unwrap();
        let client = nats.client().await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let mut env = env.to_vec();
        env.extend([
            ("ARGON2_MEMORY_KIB", "1024"),
            ("ARGON2_ITERATIONS", "1"),
            ("ADMIN_EMAIL", ADMIN_EMAIL),
            ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ]);
        let mut procs = HashMap::new();
        for (service, count) in services {
            let bin = if *service == "gateway" {
                workspace_bin("gateway").unwrap()
            } else {
                workspace_bin(&format!("{service}-service")).unwrap()
            };
            for i in 1..=*count {
                let id = format!("{service}-{i}");
                let mut env = env.clone();
                if *service == "gateway" {
                    env.push(("GATEWAY_ADDR", "127.0.0.1:0"));
                }
                let process =
                    ServiceProcess::start(&bin, &nats.url(), &id, &data.path().join(&id), &env)
                        .await
                        .unwrap_or_else(|e| panic!("starting {id}: {e:#}"));
                procs.insert(id, process);
            }
        }
        Self {
            nats,
            client,
            _data: data,
            procs,
        }
    }

    /// A request as the admin (as an operator with `shop req --admin`).
    async fn req(&self, subject: &str, body: Value) -> Value {
        let admin = bearer_headers(&self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await);
        let reply = request_json_with_headers(&self.client, subject, admin, body.to_string())
            .await
            .unwrap();
        assert!(reply.is_ok(), "{subject}: {:?}", reply.error);
        reply.body
    }

    /// A token for `email` (the admin account appears a moment after the user
    /// service is ready: retried until then).
    async fn login(&self, email: &str, password: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match shop_nats::login::login(&self.client, email, password, Duration::from_secs(10))
                .await
            {
                Ok(token) => return token,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "login {email}: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn product_and_user(&self, sku: &str, email: &str) -> String {
        self.req(
            "product.create",
            json!({"id": sku, "name": "Traced thing", "price_cents": 1200, "currency": "USD", "stock": 10}),
        )
        .await;
        let user = self
            .req(
                "user.register",
                json!({"email": email, "password": "correct horse battery", "name": "Tess"}),
            )
            .await;
        user["id"].as_str().unwrap().to_string()
    }
}

fn shop(url: &str, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
    command.arg("--server").arg(url).env_remove("NATS_CREDS");
    if let Some(creds) = testkit::operator_creds_of(url) {
        command.arg("--creds").arg(creds);
    }
    let out = command.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn shop_async(url: &str, args: &[&str]) -> (i32, String, String) {
    let url = url.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        shop(&url, &args)
    })
    .await
    .unwrap()
}

/// The log records one `logs.>` message carries: one JSON object per line.
fn records(payload: &[u8]) -> Vec<Value> {
    let records: Vec<Value> = payload
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("each line is a JSON record"))
        .collect();
    assert!(!records.is_empty(), "a logs message without records");
    records
}

/// Waits until the `logs.>` subscription has shown records of `trace_id` from
/// at least `services` services.
async fn wait_for_logs(
    logs: &mut async_nats::Subscriber,
    trace_id: &str,
    services: usize,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while seen.len() < services {
            let message = logs.next().await.expect("logs subscription");
            for record in records(&message.payload) {
                if record["trace_id"] == trace_id {
                    seen.insert(record["service"].as_str().unwrap().to_string());
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!("log records of trace {trace_id} from {services} services; saw {seen:?}")
    });
    seen
}

/// Waits for log records of one trace from each of `services`.
async fn wait_for_logs_from(logs: &mut async_nats::Subscriber, trace_id: &str, services: &[&str]) {
    let mut missing: BTreeSet<&str> = services.iter().copied().collect();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !missing.is_empty() {
            let message = logs.next().await.expect("logs subscription");
            for record in records(&message.payload) {
                if record["trace_id"] == trace_id {
                    missing.remove(record["service"].as_str().unwrap_or_default());
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no log records of trace {trace_id} from {missing:?}"));
}

const OTEL_ENV: [(&str, &str); 2] = [
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ("OTEL_BSP_SCHEDULE_DELAY", "100"),
];

const SHOP: [(&str, usize); 5] = [
    ("product", 1),
    ("payment", 1),
    ("user", 1),
    ("notification", 1),
    ("order", 1),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_services_and_their_logs() {
    let (receiver, addr) = Receiver::start().await;
    let endpoint = format!("http://{addr}");
    let mut env = OTEL_ENV.to_vec();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint));
    let system = System::start(&SHOP, &env).await;
    let user_id = system
        .product_and_user("sku-traced", "tess@example.com")
        .await;
    let mut logs = system.client.subscribe("logs.>").await.unwrap();
    system.client.flush().await.unwrap();

    let trace_id = format!("{:032x}", rand_u128());
    let parent_span = "00f067aa0ba902b7";
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{trace_id}-{parent_span}-01").as_str(),
    );
    headers.insert("tracestate", "shop=test");
    let tess = system
        .login("tess@example.com", "correct horse battery")
        .await;
    headers.insert("Authorization", format!("Bearer {tess}").as_str());
    let body = json!({"user_id": user_id, "items": [{"product_id": "sku-traced", "quantity": 1}], "payment_token": "tok_ok", "idempotency_key": "traced-1"});
    let reply = system
        .client
        .request_with_headers("order.create", headers, body.to_string().into())
        .await
        .unwrap();
    assert!(
        reply.headers.is_none(),
        "order.create failed: {:?}",
        reply.headers
    );

    let spans = receiver
        .wait_for(&trace_id, Duration::from_secs(60), |spans| {
            ["order", "product", "payment", "notification"]
                .iter()
                .all(|s| services_of(spans).contains(s))
                && spans.iter().any(|s| {
                    s.service == "notification"
                        && s.kind == 5
                        && spans.iter().any(|p| p.span_id == s.parent_span_id)
                })
        })
        .await;
    let create = spans
        .iter()
        .find(|s| s.service == "order" && s.name == "order.create" && s.kind == 2)
        .unwrap_or_else(|| panic!("order.create server span: {spans:#?}"));
    assert_eq!(
        create.parent_span_id, parent_span,
        "the handler's span continues the caller's traceparent"
    );
    for kind in [2, 3, 4, 5] {
        assert!(
            spans.iter().any(|s| s.kind == kind),
            "a span of kind {kind}: {spans:#?}"
        );
    }
    let by_id: HashMap<&str, &SeenSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let notified = spans
        .iter()
        .find(|s| {
            s.service == "notification"
                && s.kind == 5
                && by_id.contains_key(s.parent_span_id.as_str())
        })
        .unwrap();
    assert_eq!(
        notified.trace_state, "shop=test",
        "tracestate travels across requests and JetStream events"
    );
    let producer = by_id
        .get(notified.parent_span_id.as_str())
        .unwrap_or_else(|| panic!("the notification's parent span was exported: {spans:#?}"));
    assert_eq!(
        producer.kind, 4,
        "a consumer span's parent is the event's producer span"
    );

    let services = wait_for_logs(&mut logs, &trace_id, 2).await;
    let (code, out, err) = shop_async(
        &system.nats.url(),
        &["logs", "--trace", &trace_id, "--json"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let found: BTreeSet<String> = records
        .iter()
        .map(|r| r["service"].as_str().unwrap().to_string())
        .collect();
    assert!(
        found.len() >= 2 && services.is_subset(&found),
        "shop logs found {found:?}, published {services:?}"
    );
    for record in &records {
        assert_eq!(record["trace_id"], trace_id.as_str());
        for field in ["ts", "instance", "level", "target", "message", "fields"] {
            assert!(!record[field].is_null(), "{field} in {record}");
        }
    }
    let (code, out, _) = shop_async(
        &system.nats.url(),
        &[
            "logs",
            "--trace",
            &trace_id,
            "--service",
            "order",
            "--level",
            "info",
        ],
    )
    .await;
    assert_eq!(code, 0);
    assert!(out.lines().count() > 0, "readable lines of order: {out}");
    assert!(
        out.lines()
            .all(|l| l.contains(" order/order-1 ") && l.ends_with(&format!("trace={trace_id}"))),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_request_and_its_notification_share_one_trace() {
    let (receiver, addr) = Receiver::start().await;
    let endpoint = format!("http://{addr}");
    let mut env = OTEL_ENV.to_vec();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint));
    let mut services = SHOP.to_vec();
    services.push(("gateway", 1));
    let system = System::start(&services, &env).await;
    let gateway = system.procs["gateway-1"]
        .ready_field("addr")
        .expect("the gateway's public address");
    system
        .req(
            "product.create",
            json!({"id": "sku-http", "name": "Via HTTP", "price_cents": 500, "currency": "USD", "stock": 5}),
        )
        .await;
    let (status, _) = http_post(
        &gateway,
        "/api/users",
        &[],
        json!({"email": "hugo@example.com", "password": "correct horse battery", "name": "Hugo"}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, login) = http_post(
        &gateway,
        "/api/auth/login",
        &[],
        json!({"email": "hugo@example.com", "password": "correct horse battery"}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let token = login["token"].as_str().unwrap().to_string();
    let mut logs = system.client.subscribe("logs.>").await.unwrap();
    system.client.flush().await.unwrap();

    let trace_id = format!("{:032x}", rand_u128());
    let traceparent = format!("00-{trace_id}-1111111111111111-01");
    let authorization = format!("Bearer {token}");
    let (status, order) = http_post(
        &gateway,
        "/api/orders",
        &[("traceparent", &traceparent), ("authorization", &authorization)],
        json!({"items": [{"product_id": "sku-http", "quantity": 1}], "payment_token": "tok_ok", "idempotency_key": "http-1"}),
    )
    .await;
    assert_eq!(status, 201, "{order}");

    let spans = receiver
        .wait_for(&trace_id, Duration::from_secs(60), |spans| {
            spans
                .iter()
                .any(|s| s.service == "notification" && s.kind == 5)
                && spans
                    .iter()
                    .any(|s| s.service == "order" && s.name == "order.create")
                // Each process exports in batches of its own: wait for the gateway's too.
                && spans
                    .iter()
                    .any(|s| s.service == "gateway" && s.name == "POST /api/orders")
        })
        .await;
    let create = spans
        .iter()
        .find(|s| s.service == "order" && s.name == "order.create" && s.kind == 2)
        .unwrap();
    let http = spans
        .iter()
        .find(|s| s.service == "gateway" && s.kind == 2 && s.name == "POST /api/orders")
        .unwrap_or_else(|| panic!("the gateway's span of the HTTP request: {spans:?}"));
    assert_eq!(
        http.parent_span_id, "1111111111111111",
        "the gateway continues the caller's traceparent"
    );
    assert_eq!(
        create.parent_span_id.len(),
        16,
        "order.create has a parent span: {create:?}"
    );
    assert!(
        spans
            .iter()
            .any(|s| s.service == "gateway" && s.span_id == create.parent_span_id),
        "order.create continues a span of the gateway: {create:?}"
    );
    wait_for_logs_from(&mut logs, &trace_id, &["gateway", "notification"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_every_instance_with_its_counters() {
    let system = System::start(
        &[
            ("product", 2),
            ("payment", 1),
            ("user", 1),
            ("notification", 1),
            ("order", 1),
        ],
        &[],
    )
    .await;
    system
        .req(
            "product.create",
            json!({"id": "sku-count", "name": "Counted", "price_cents": 100, "currency": "USD", "stock": 1}),
        )
        .await;
    for _ in 0..30 {
        system.req("product.get", json!({"id": "sku-count"})).await;
    }
    let missing = request_json(
        &system.client,
        "product.get",
        json!({"id": "nope"}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(missing.error_code, Some(404));

    let url = system.nats.url();
    let (code, out, err) = shop_async(&url, &["status", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    let instances: BTreeSet<&str> = rows
        .iter()
        .map(|r| r["instance"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = system.procs.keys().map(String::as_str).collect();
    assert_eq!(instances, expected);
    let product: Vec<&Value> = rows.iter().filter(|r| r["service"] == "product").collect();
    let requests: u64 = product
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    let errors: u64 = product.iter().map(|r| r["errors"].as_u64().unwrap()).sum();
    assert_eq!(
        requests, 32,
        "create + 30 gets + 1 miss, over both instances"
    );
    assert_eq!(errors, 1);
    for row in &product {
        assert!(
            row["requests"].as_u64().unwrap() > 0,
            "both instances served: {row}"
        );
    }
    for row in &rows {
        assert_eq!(row["health"], "ok", "{row}");
        assert_eq!(row["state_lag"], 0, "{row}");
        assert!(row["uptime_secs"].is_u64(), "{row}");
    }
    let order = rows.iter().find(|r| r["service"] == "order").unwrap();
    assert_eq!(order["consumer_lag"], 0, "the saga consumer's lag: {order}");
    assert_eq!(order["consumers"][0]["durable"], "order-saga");

    let (code, table, _) = shop_async(&url, &["status"]).await;
    assert_eq!(code, 0);
    let header = table.lines().next().unwrap();
    assert!(header.contains("CONSUMER_LAG"), "{header}");
    for id in &expected {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(id)),
            "{id} in\n{table}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_neither_blocks_nor_crashes_when_nats_stops() {
    let mut system = System::start(&[("product", 1)], &[("LOG_PUBLISH_BUFFER", "2")]).await;
    let product = &system.procs["product-1"];
    let admin = product.admin_addr.clone();
    let metric = |text: &str, name: &str| testkit::metrics::value(text, name, &[]).unwrap_or(0.0);
    let (_, text) = testkit::http::get(&admin, "/metrics").await.unwrap();
    let published_before = metric(&text, "shop_log_records_published_total");

    let mut stderr = product.subscribe();
    system.nats.stop().unwrap();
    testkit::service::wait_for_line(&mut stderr, "nats disconnected", Duration::from_secs(10))
        .await
        .expect("stderr logging goes on");

    // The publisher holds at most 2 records while NATS is down; the rest are counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let dropped = loop {
        let asked = Instant::now();
        let (status, body) = testkit::http::get(&admin, "/health").await.unwrap();
        assert!(
            asked.elapsed() < Duration::from_secs(3),
            "/health answered in {:?}",
            asked.elapsed()
        );
        assert_eq!(status, 503, "{body}");
        let health: Value = serde_json::from_str(&body).unwrap();
        let publisher = &health["checks"]["telemetry"]["log_publisher"];
        assert_eq!(health["checks"]["nats"]["status"], "down");
        let dropped = publisher["dropped"].as_u64().unwrap();
        if dropped > 0 {
            assert_eq!(publisher["status"], "disconnected", "{publisher}");
            assert!(publisher["buffered"].as_u64().unwrap() <= 2, "{publisher}");
            break dropped;
        }
        assert!(Instant::now() < deadline, "no record dropped: {publisher}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (_, text) = testkit::http::get(&admin, "/metrics").await.unwrap();
    assert!(metric(&text, "shop_log_records_dropped_total") >= dropped as f64);
    let published_during = metric(&text, "shop_log_records_published_total").max(published_before);

    system.nats.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = testkit::http::get(&admin, "/metrics").await.unwrap();
        if metric(&text, "shop_log_records_published_total") > published_during {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "publishing resumed after NATS came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, out, err) = shop_async(
        &system.nats.url(),
        &["logs", "--service", "product", "--level", "warn"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("nats disconnected"),
        "records buffered while NATS was down are published once it is back:\n{out}"
    );
    let (status, _) = testkit::http::get(&admin, "/ready").await.unwrap();
    assert_eq!(status, 200, "the service is alive and serving again");
}

#[test]
fn logs_without_a_logs_stream_is_exit_4() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let nats = runtime.block_on(NatsServer::start()).unwrap();
    let (code, _, err) = shop(&nats.url(), &["logs"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no LOGS stream"), "{err}");
    let (code, _, err) = shop(&nats.url(), &["logs", "--trace", "xyz"]);
    assert_eq!(code, 2, "{err}");
}

fn rand_u128() -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    (nanos << 64) ^ u128::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15
}

/// A JSON POST over a real socket: status and JSON body.
async fn http_post(addr: &str, path: &str, headers: &[(&str, &str)], body: Value) -> (u16, Value) {
    let body = body.to_string();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
