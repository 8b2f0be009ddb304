//! The runtime with a toy service, in process, against a real nats-server.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use futures::{future::BoxFuture, FutureExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use shop_actors::consumer::{ConsumedEvent, ConsumerSpec, EventHandler, HandleError};
use shop_actors::{
    metrics::Metrics,
    read,
    supervisor::{ChildSpec, RestartPolicy, ServiceSupervisor, SupervisorArgs, SupervisorMsg},
    write, Access, ApplyError, Declaration, Empty, HandlerResult, Projection, Request, RequestBody,
    RuntimeConfig, StoredEvent,
};
use shop_nats::{
    auth::{bearer_headers, Claims, TokenSigner, AUDIENCE, ISSUER},
    discovery::{Registry, RegistryEvent},
};
use testkit::{request_json, NatsServer};

struct NoProjection;
impl Projection for NoProjection {
    fn apply(&self, _event: &StoredEvent<'_>, _batch: &mut sled::Batch) -> Result<(), ApplyError> {
        Ok(())
    }
}

/// The toy service's state: it answers with how far its local state is.
struct Toy {
    state: shop_actors::StateHandle,
    events: shop_actors::EventLog,
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Read {
    #[serde(default)]
    min_revision: Option<u64>,
}
impl RequestBody for Read {
    fn min_revision(&self) -> Option<u64> {
        self.min_revision
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Named {
    name: String,
}
impl RequestBody for Named {
    fn validate(&self) -> Result<(), shop_nats::ServiceError> {
        match self.name.is_empty() {
            true => Err(shop_nats::ServiceError::bad_request(
                "name must not be empty",
            )),
            false => Ok(()),
        }
    }
}

fn ok(toy: &Toy, request: &Request, _: Read) -> HandlerResult {
    request.encode(&serde_json::json!({"ok": true, "applied": toy.state.applied()}))
}

fn panic_inline(_: &Toy, _: &Request, _: Empty) -> HandlerResult {
    panic!("boom inline")
}

async fn panic_pool(_: Arc<Toy>, _: Request, _: Empty) -> HandlerResult {
    panic!("boom in pool")
}

async fn slow(_: Arc<Toy>, _: Request, _: Empty) -> HandlerResult {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Ok(Bytes::from_static(b"{\"slow\":true}"))
}

fn hello(_: &Toy, request: &Request, body: Named) -> HandlerResult {
    let caller = request.caller.as_ref().map(|c| c.user_id.clone());
    request.encode(&serde_json::json!({"hello": body.name, "caller": caller}))
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct AppendTo {
    subject: String,
}
impl RequestBody for AppendTo {}

/// Appends an empty event on any subject: the event log must refuse the undeclared.
async fn append(toy: Arc<Toy>, request: Request, body: AppendTo) -> HandlerResult {
    let append = shop_actors::Append {
        subject: body.subject,
        event_type: "toy.appended",
        payload: Bytes::from_static(b"{}"),
        expected_revision: None,
        msg_id: shop_actors::EventLog::new_msg_id(),
    };
    match toy.events.append(&append, &request.trace).await {
        Ok(appended) => request.encode(&serde_json::json!({"revision": appended.revision})),
        Err(shop_actors::eventlog::AppendError::Failed(e)) => Err(e),
        Err(shop_actors::eventlog::AppendError::Conflict) => {
            Err(shop_nats::ServiceError::conflict("conflict"))
        }
    }
}

fn toy() -> Declaration<Toy> {
    Declaration::new("toy", "toy service for runtime tests")
        .version("0.0.1")
        .stream("TOY", &["events.toy.>"], NoProjection)
        .endpoint("toy.ok", Access::Public, read(ok))
        .endpoint("toy.panic_inline", Access::Public, read(panic_inline))
        .endpoint("toy.panic_pool", Access::Public, write(panic_pool))
        .endpoint("toy.slow", Access::Public, write(slow))
        .endpoint("toy.hello", Access::user(), read(hello))
        .endpoint("toy.admin.hello", Access::admin(), read(hello))
        .endpoint("toy.append", Access::Public, write(append))
        .publishes(&["events.toy.declared.*"])
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeConfig,
}

/// Starts the toy service in this process and waits for its registry entry.
async fn start_toy(
    nats: &NatsServer,
    data: &std::path::Path,
    extra: &[&str],
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    start_toy_with(nats, data, extra, None).await
}

async fn start_toy_with(
    nats: &NatsServer,
    data: &std::path::Path,
    extra: &[&str],
    consumer: Option<ConsumerSpec>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client);
    let registry = Registry::open(&js).await.unwrap();
    let mut watch = registry.watch().await.unwrap();
    let mut args = vec![
        "toy".to_string(),
        "--nats-url".into(),
        nats.url(),
        "--instance-id".into(),
        "toy-1".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    if let Some(creds) = nats.operator_creds() {
        args.extend(["--nats-creds".into(), creds.display().to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let config = Cli::parse_from(args).runtime;
    let mut spec = toy();
    if let Some(consumer) = &consumer {
        let filters: Vec<&str> = consumer
            .filter_subjects
            .iter()
            .map(String::as_str)
            .collect();
        spec = spec.consumes(&consumer.durable, &consumer.stream, &filters);
    }
    let task = tokio::spawn(shop_actors::run(spec, config, move |ctx| async move {
        let wiring = shop_actors::Wiring::new(Toy {
            state: ctx.state,
            events: ctx.events,
        });
        Ok(match consumer {
            Some(consumer) => wiring.with_consumer(consumer),
            None => wiring,
        })
    }));
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = watch.next().await {
            if matches!(&event, RegistryEvent::Up(info) if info.key() == "toy.toy-1") {
                return;
            }
        }
    })
    .await
    .expect("toy service registered");
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_500_and_the_service_keeps_serving() {
    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let task = start_toy(&nats, data.path(), &[]).await;
    let client = nats.client().await.unwrap();

    for subject in [
        "toy.panic_inline",
        "toy.panic_pool",
        "toy.panic_inline",
        "toy.panic_pool",
    ] {
        let reply = request_json(&client, subject, "{}").await.unwrap();
        assert_eq!(reply.error_code, Some(500), "{subject}");
        assert_eq!(
            reply.body["error"]["message"],
            "internal error while handling the request"
        );
        let ok = request_json(&client, "toy.ok", "{}").await.unwrap();
        assert!(ok.is_ok(), "still serving after a panic in {subject}");
        assert_eq!(ok.body["ok"], true);
    }
    assert!(!task.is_finished());
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_pool_answers_503_at_once() {
    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let task = start_toy(
        &nats,
        data.path(),
        &["--workers", "1", "--queue-depth", "1"],
    )
    .await;
    let client = nats.client().await.unwrap();

    let started = Instant::now();
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                let reply = request_json(&client, "toy.slow", "{}").await.unwrap();
                (reply, sent.elapsed())
            })
        })
        .collect();
    let mut served = 0;
    let mut busy = 0;
    for request in requests {
        let (reply, took) = request.await.unwrap();
        match reply.error_code {
            None => served += 1,
            Some(503) => {
                busy += 1;
                assert!(
                    took < Duration::from_millis(500),
                    "503 must come at once, took {took:?}"
                );
                assert!(reply.error.unwrap().contains("busy"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(served, 2, "one running and one queued are served");
    assert_eq!(busy, 4);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The inline path is not blocked by a saturated pool.
    assert!(request_json(&client, "toy.ok", "{}").await.unwrap().is_ok());
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_with_min_revision_answers_from_state_that_has_it() {
    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let task = start_toy(&nats, data.path(), &[]).await;
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    // Revision 1 is stored; a read asking for it right away must not answer
    // from state that has not applied it yet (it waits if it has to).
    js.publish("events.toy.declared.a", Bytes::from_static(b"{}"))
        .await
        .unwrap()
        .await
        .unwrap();
    let reply = request_json(&client, "toy.ok", r#"{"min_revision":1}"#)
        .await
        .unwrap();
    assert!(reply.is_ok(), "{:?}", reply.error);
    assert_eq!(
        reply.body["applied"], 1,
        "answered from state that has revision 1"
    );

    // A revision the stream does not have is the caller's mistake: 400 at once.
    let started = Instant::now();
    let reply = request_json(&client, "toy.ok", r#"{"min_revision":1000}"#)
        .await
        .unwrap();
    assert_eq!(reply.error_code, Some(400));
    assert!(reply
        .error
        .unwrap()
        .contains("beyond the stream's last revision 1"));
    assert!(started.elapsed() < Duration::from_secs(1));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_decoded_validated_and_access_checked_before_the_handler() {
    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let task = start_toy(&nats, data.path(), &[]).await;
    let client = nats.client().await.unwrap();

    // A stand-in user service: the keys tokens are verified with.
    let issuer = testkit::tokens::Issuer::serve(&client).await.unwrap();
    let token = |user: &str, roles: &[&str]| issuer.token(user, roles);
    let customer = bearer_headers(&token("u1", &["customer"]));
    for (payload, message) in [
        ("{}", "missing field `name`"),
        (r#"{"name":""}"#, "name must not be empty"),
        (r#"{"name":7}"#, "invalid type"),
        ("", "empty payload"),
    ] {
        let reply =
            testkit::request_json_with_headers(&client, "toy.hello", customer.clone(), payload)
                .await
                .unwrap();
        assert_eq!(reply.error_code, Some(400), "{payload}");
        assert!(
            reply.error.as_deref().unwrap_or_default().contains(message),
            "{payload}: {:?}",
            reply.error
        );
    }
    // An endpoint without parameters takes an empty payload as `{}`.
    let reply = request_json(&client, "toy.slow", "").await.unwrap();
    assert!(reply.is_ok(), "{:?}", reply.error);

    let call = |subject: &'static str, headers: async_nats::HeaderMap| {
        let client = client.clone();
        async move {
            testkit::request_json_with_headers(&client, subject, headers, r#"{"name":"a"}"#)
                .await
                .unwrap()
        }
    };
    // Headers that merely claim a user or a role: 401.
    let mut claimed = async_nats::HeaderMap::new();
    claimed.insert("Shop-User-Id", "u1");
    claimed.insert("Shop-User-Roles", "customer,admin");
    for subject in ["toy.hello", "toy.admin.hello"] {
        let reply = call(subject, claimed.clone()).await;
        assert_eq!(reply.error_code, Some(401), "{subject}: {:?}", reply.error);
    }
    let reply = call("toy.hello", bearer_headers(&token("u1", &["customer"]))).await;
    assert!(reply.is_ok(), "{:?}", reply.error);
    assert_eq!(reply.body["caller"], "u1", "the handler sees the caller");
    let refused = call(
        "toy.admin.hello",
        bearer_headers(&token("u1", &["customer"])),
    )
    .await;
    assert_eq!(refused.error_code, Some(403));
    let admitted = call(
        "toy.admin.hello",
        bearer_headers(&token("u2", &["customer", "admin"])),
    )
    .await;
    assert!(admitted.is_ok(), "{:?}", admitted.error);
    let forged = TokenSigner::claiming_kid(&[8; 32], issuer.signer().kid());
    let now = shop_nats::clock::now_secs();
    let forged = forged
        .sign(&Claims {
            sub: "u2".into(),
            email: "u2@example.com".into(),
            roles: vec!["admin".into()],
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + 600,
        })
        .unwrap();
    let reply = call("toy.admin.hello", bearer_headers(&forged)).await;
    assert_eq!(reply.error_code, Some(401), "{:?}", reply.error);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_only_to_declared_subjects() {
    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let task = start_toy(&nats, data.path(), &[]).await;
    let client = nats.client().await.unwrap();

    let ok = request_json(
        &client,
        "toy.append",
        r#"{"subject":"events.toy.declared.a"}"#,
    )
    .await
    .unwrap();
    assert!(ok.is_ok(), "{:?}", ok.error);
    let refused = request_json(&client, "toy.append", r#"{"subject":"events.toy.other"}"#)
        .await
        .unwrap();
    assert_eq!(refused.error_code, Some(500));
    assert!(refused.error.unwrap().contains("not among the subjects"));
    let js = async_nats::jetstream::new(client);
    let info = js
        .get_stream("TOY")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.state.messages, 1, "only the declared event is stored");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_info_is_the_declaration() {
    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let task = start_toy(&nats, data.path(), &[]).await;
    let client = nats.client().await.unwrap();

    let info = request_json(&client, "$SRV.INFO.toy", "")
        .await
        .unwrap()
        .body;
    let manifest = toy().manifest();
    let endpoints = info["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), manifest.endpoints.len());
    for (served, declared) in endpoints.iter().zip(&manifest.endpoints) {
        assert_eq!(served["subject"], declared.subject);
        assert_eq!(served["name"], declared.name);
        assert_eq!(served["queue_group"], "toy");
        assert_eq!(served["metadata"]["access"], declared.access.name());
        assert_eq!(served["metadata"]["request"], declared.request);
    }
    assert_eq!(info["metadata"], serde_json::json!({}));
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_is_not_declared_stops_the_start() {
    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let creds = nats.operator_creds().unwrap_or_default();
    let config = Cli::parse_from([
        "toy",
        "--nats-url",
        &nats.url(),
        "--nats-creds",
        &creds.display().to_string(),
        "--data-dir",
        &data.path().display().to_string(),
    ])
    .runtime;
    let undeclared = ConsumerSpec::new(
        "toy-undeclared",
        "TOY",
        &["events.toy.>"],
        Arc::new(Recorder {
            seen: tokio::sync::mpsc::unbounded_channel().0,
        }),
    );
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        shop_actors::run(toy(), config, move |ctx| async move {
            Ok(shop_actors::Wiring::new(Toy {
                state: ctx.state,
                events: ctx.events,
            })
            .with_consumer(undeclared))
        }),
    )
    .await
    .expect("run returns instead of serving");
    let err = result.unwrap_err();
    assert!(
        format!("{err:#}").contains("not the ones declared"),
        "{err:#}"
    );
}

/// A child that fails right after starting, `failures` times, then stays up.
struct Flaky {
    starts: Arc<AtomicUsize>,
    failures: usize,
}

impl Actor for Flaky {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn post_start(&self, _: ActorRef<()>, _: &mut ()) -> Result<(), ActorProcessingErr> {
        if self.starts.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err("crashing on purpose".into());
        }
        Ok(())
    }
}

async fn supervise_flaky(
    failures: usize,
    max_restarts: usize,
) -> (
    Arc<AtomicUsize>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    Metrics,
    ActorRef<SupervisorMsg>,
) {
    let metrics = Metrics::new("test", "t1").unwrap();
    let (fatal, fatal_rx) = tokio::sync::mpsc::unbounded_channel();
    let policy = RestartPolicy {
        max_restarts,
        window: Duration::from_secs(60),
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    };
    let (supervisor, _) = Actor::spawn(
        None,
        ServiceSupervisor,
        SupervisorArgs {
            policy,
            metrics: metrics.clone(),
            fatal,
        },
    )
    .await
    .unwrap();
    let starts = Arc::new(AtomicUsize::new(0));
    let counter = starts.clone();
    let spec = ChildSpec {
        name: "flaky".into(),
        start: Arc::new(move |sup| {
            let starts = counter.clone();
            async move {
                Actor::spawn_linked(None, Flaky { starts, failures }, (), sup)
                    .await
                    .map(|(a, _)| a.get_cell())
                    .map_err(|e| e.to_string())
            }
            .boxed()
        }),
    };
    let started = supervisor
        .call(|reply| SupervisorMsg::Start(spec, reply), None)
        .await
        .unwrap();
    assert!(matches!(started, ractor::rpc::CallResult::Success(Ok(()))));
    (starts, fatal_rx, metrics, supervisor)
}

#[tokio::test]
async fn supervisor_restarts_a_crashed_child() {
    let (starts, mut fatal, metrics, supervisor) = supervise_flaky(2, 5).await;
    // Third start succeeds: wait for the two restarts to be counted.
    let restarts = metrics.actor_restarts.with_label_values(&["flaky"]);
    tokio::time::timeout(Duration::from_secs(5), async {
        while restarts.get() < 2 || starts.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("restarted twice");
    assert_eq!(restarts.get(), 2);
    assert!(fatal.try_recv().is_err(), "within budget: not fatal");
    supervisor.stop(None);
}

#[tokio::test]
async fn supervisor_gives_up_past_the_restart_budget() {
    let (starts, mut fatal, metrics, supervisor) = supervise_flaky(usize::MAX, 3).await;
    let reason = tokio::time::timeout(Duration::from_secs(5), fatal.recv())
        .await
        .expect("budget exhaustion reported")
        .expect("a reason");
    assert!(reason.contains("restart budget exhausted"), "{reason}");
    assert!(reason.contains("flaky"));
    assert_eq!(
        metrics.actor_restarts.with_label_values(&["flaky"]).get(),
        3
    );
    assert_eq!(
        starts.load(Ordering::SeqCst),
        4,
        "first start and three restarts"
    );
    supervisor.stop(None);
}

/// Records every delivery; fails some on purpose, by payload.
struct Recorder {
    seen: tokio::sync::mpsc::UnboundedSender<(String, i64)>,
}

impl EventHandler for Recorder {
    fn handle(
        self: Arc<Self>,
        event: ConsumedEvent,
    ) -> BoxFuture<'static, Result<(), HandleError>> {
        async move {
            let body = String::from_utf8_lossy(&event.payload).to_string();
            let _ = self.seen.send((body.clone(), event.delivered));
            match body.as_str() {
                "transient-once" if event.delivered == 1 => {
                    Err(HandleError::Transient("not yet".into()))
                }
                "always-transient" => Err(HandleError::Transient("dependency down".into())),
                "permanent" => Err(HandleError::Permanent("cannot ever handle this".into())),
                _ => Ok(()),
            }
        }
        .boxed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_ack_retry_and_dead_letter() {
    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let client = nats.client().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "FEED".into(),
        subjects: vec!["events.feed.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut dead = client.subscribe("deadletter.>").await.unwrap();

    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let mut consumer = ConsumerSpec::new(
        "toy-feed",
        "FEED",
        &["events.feed.>"],
        Arc::new(Recorder { seen: seen_tx }),
    );
    consumer.max_deliver = 3;
    consumer.backoff = vec![Duration::from_millis(20)];
    let task = start_toy_with(&nats, data.path(), &[], Some(consumer)).await;

    for body in ["fine", "transient-once", "permanent", "always-transient"] {
        js.publish(format!("events.feed.{body}"), body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let mut deliveries: std::collections::HashMap<String, Vec<i64>> = Default::default();
    let mut dead_letters = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while dead_letters.len() < 2 || deliveries.get("transient-once").map(Vec::len) != Some(2) {
            tokio::select! {
                Some((body, attempt)) = seen.recv() => deliveries.entry(body).or_default().push(attempt),
                Some(message) = dead.next() => dead_letters.push(message),
            }
        }
    })
    .await
    .expect("every event reached its outcome");

    assert_eq!(deliveries["fine"], vec![1], "handled once, acked");
    assert_eq!(
        deliveries["transient-once"],
        vec![1, 2],
        "retried after a transient failure"
    );
    assert_eq!(
        deliveries["permanent"],
        vec![1],
        "a permanent failure is not retried"
    );
    assert_eq!(
        deliveries["always-transient"],
        vec![1, 2, 3],
        "retried up to max_deliver"
    );
    let mut reasons: Vec<(String, String)> = dead_letters
        .iter()
        .map(|m| {
            let h = m.headers.as_ref().unwrap();
            (
                h.get("Shop-Original-Subject").unwrap().to_string(),
                h.get("Shop-Dead-Letter-Reason").unwrap().to_string(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons[0].0, "events.feed.always-transient");
    assert!(reasons[0].1.contains("dependency down"), "{:?}", reasons[0]);
    assert_eq!(reasons[1].0, "events.feed.permanent");
    assert!(reasons[1].1.contains("cannot ever handle this"));
    assert_eq!(dead_letters[0].subject.as_str(), "deadletter.toy-feed");
    let mut stored = js.get_stream("DEADLETTER").await.unwrap();
    assert_eq!(
        stored.info().await.unwrap().state.messages,
        2,
        "dead letters are kept in a stream"
    );

    let consumer_info = js
        .get_stream("FEED")
        .await
        .unwrap()
        .consumer_info("toy-feed")
        .await
        .unwrap();
    assert_eq!(
        consumer_info.num_ack_pending, 0,
        "every event acknowledged or terminated"
    );
    assert_eq!(consumer_info.num_pending, 0);
    task.abort();
}

/// The toy instance's admin address, from its registry entry.
async fn toy_admin_addr(nats: &NatsServer) -> String {
    let client = nats.client().await.unwrap();
    let registry = Registry::open(&async_nats::jetstream::new(client))
        .await
        .unwrap();
    let instances = registry.list(Some("toy")).await.unwrap();
    instances[0].admin_addr.clone().expect("an admin address")
}

/// `shop_replies_refused_total{source}` as the admin endpoint reports it.
async fn refused_replies(admin: &str, source: &str) -> f64 {
    let (_, text) = testkit::http::get(admin, "/metrics").await.unwrap();
    testkit::metrics::value(&text, "shop_replies_refused_total", &[("source", source)])
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_go_only_to_inbox_subjects() {
    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let task = start_toy(&nats, data.path(), &[]).await;
    let client = nats.client().await.unwrap();
    let admin = toy_admin_addr(&nats).await;

    // Someone names another service's event subject as the reply subject.
    let mut stolen = client.subscribe("events.user.>").await.unwrap();
    client.flush().await.unwrap();
    client
        .publish_with_reply("toy.ok", "events.user.registered.x", "{}".into())
        .await
        .unwrap();
    client
        .publish_with_reply("toy.nothing", "events.user.profile.x", "{}".into())
        .await
        .unwrap();
    client
        .publish_with_reply("$SRV.PING.toy", "events.user.credential.x", "".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while refused_replies(&admin, "endpoint").await < 2.0
        || refused_replies(&admin, "srv").await < 1.0
    {
        assert!(Instant::now() < deadline, "refusals counted within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Requests with an inbox are answered as always, on the same subscriptions.
    assert!(request_json(&client, "toy.ok", "{}").await.unwrap().is_ok());
    client.flush().await.unwrap();
    let leaked = tokio::time::timeout(Duration::from_millis(300), stolen.next()).await;
    assert!(
        leaked.is_err(),
        "nothing was published on events.user.>: {leaked:?}"
    );
    task.abort();
}
