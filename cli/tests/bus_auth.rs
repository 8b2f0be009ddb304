//! The locked bus: the identities `shop auth init` makes, on a real
//! nats-server running the configuration it writes, with the real user and
//! order services. Every refusal is observed: the server reports a
//! permissions violation to that client (async-nats's event callback), and a
//! request it refused gets no answer, while the same request from an identity
//! that may make it is answered.

use std::time::Duration;

use async_nats::{jetstream, Client, Event};
use futures::StreamExt;
use serde_json::json;
use testkit::{request_json, workspace_bin, NatsServer, ServiceProcess};
use tokio::sync::mpsc;

/// How long a refused request is given to (not) be answered.
const NO_ANSWER: Duration = Duration::from_millis(1500);
/// How long the server may take to report a violation, or deliver a message
/// (generous: a loaded 2-core machine stalled one delivery past 5 s).
const REPORTED: Duration = Duration::from_secs(15);

/// A nats-server with auth and the user and order services on it, each on
/// its own identity, with one registered user (so the USER stream holds
/// credential events and the signing-key bucket holds keys).
struct Bus {
    nats: NatsServer,
    operator: Client,
    _data: tempfile::TempDir,
    _services: Vec<ServiceProcess>,
}

impl Bus {
    async fn start() -> Self {
        let nats = NatsServer::start().await.unwrap();
        assert!(
            nats.auth_dir().is_some(),
            "testkit starts servers with auth"
        );
        let operator = nats.client().await.unwrap();
        let data = tempfile::tempdir().unwrap();
        let fast_hash = [("ARGON2_MEMORY_KIB", "1024"), ("ARGON2_ITERATIONS", "1")];
        let mut services = Vec::new();
        for name in ["user", "order"] {
            let bin = workspace_bin(&format!("{name}-service")).unwrap();
            let id = format!("{name}-1");
            let process =
                ServiceProcess::start(&bin, &nats.url(), &id, &data.path().join(&id), &fast_hash)
                    .await
                    .unwrap_or_else(|e| panic!("starting {id}: {e:#}"));
            services.push(process);
        }
        let bus = Self {
            nats,
            operator,
            _data: data,
            _services: services,
        };
        let registered = bus
            .operator_request(
                "user.register",
                json!({"email": "ann@example.com", "password": "ann-secret-password", "name": "Ann"}),
            )
            .await;
        assert!(registered.is_ok(), "{:?}", registered.error);
        bus
    }

    async fn operator_request(&self, subject: &str, body: serde_json::Value) -> testkit::Reply {
        request_json(&self.operator, subject, body.to_string())
            .await
            .unwrap_or_else(|e| panic!("{subject}: {e:#}"))
    }

    /// A client on `identity`'s credentials and inbox prefix, and the errors
    /// the server reports to it.
    async fn connect_as(&self, identity: &str) -> (Client, Violations) {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self
            .nats
            .options(identity)
            .await
            .unwrap()
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let Event::ServerError(error) = event {
                        let _ = tx.send(error.to_string());
                    }
                }
            })
            .connect(self.nats.url())
            .await
            .unwrap_or_else(|e| panic!("connecting as {identity}: {e}"));
        (client, Violations(rx))
    }
}

/// The errors the server reported to one client, in order.
struct Violations(mpsc::UnboundedReceiver<String>);

impl Violations {
    /// Waits for the server to report a permissions violation naming `what`
    /// (e.g. `Publish to "payment.charge"`).
    async fn expect(&mut self, what: &str) {
        let wanted = format!("permissions violation for {what}").to_lowercase();
        let found = tokio::time::timeout(REPORTED, async {
            let mut seen = Vec::new();
            while let Some(error) = self.0.recv().await {
                if error.to_lowercase().contains(&wanted) {
                    return Ok(());
                }
                seen.push(error);
            }
            Err(seen)
        })
        .await;
        match found {
            Ok(Ok(())) => {}
            Ok(Err(seen)) => panic!("connection closed before {wanted:?}; errors: {seen:?}"),
            Err(_) => panic!("the server reported no {wanted:?} within {REPORTED:?}"),
        }
    }

    /// True when the server has reported nothing so far.
    fn none(&mut self) -> bool {
        self.0.try_recv().is_err()
    }
}

/// Publishes a request as `client` and expects no answer.
async fn unanswered(client: &Client, subject: &str, payload: &str) {
    let answer = tokio::time::timeout(
        NO_ANSWER,
        client.request(subject.to_string(), payload.to_string().into()),
    )
    .await;
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "{subject} was answered: {answer:?}"
    );
}

/// Subscribes as `client` (expected refused), then proves nothing reaches
/// that subscription: the operator publishes on `subject` and then a marker
/// on a subject the subscriber may read (its own inbox); the marker arrives
/// first at a subscription that works, so nothing before it means refused.
async fn subscription_gets_nothing(
    operator: &Client,
    subscriber: &mut async_nats::Subscriber,
    subject: &str,
    marker_subject: &str,
    marker: &mut async_nats::Subscriber,
) {
    operator
        .publish(subject.to_string(), "leak".into())
        .await
        .unwrap();
    operator
        .publish(marker_subject.to_string(), "marker".into())
        .await
        .unwrap();
    operator.flush().await.unwrap();
    let got_marker = tokio::time::timeout(REPORTED, marker.next()).await;
    assert!(matches!(got_marker, Ok(Some(_))), "the marker arrives");
    assert!(
        subscriber.next().now_or_never_ready().is_none(),
        "{subject} reached a refused subscription"
    );
}

/// Non-blocking poll of a subscription.
trait NowOrNever {
    fn now_or_never_ready(self) -> Option<async_nats::Message>;
}

impl<F: std::future::Future<Output = Option<async_nats::Message>>> NowOrNever for F {
    fn now_or_never_ready(self) -> Option<async_nats::Message> {
        futures::FutureExt::now_or_never(self).flatten()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_connection_is_refused() {
    let nats = NatsServer::start().await.unwrap();
    let refused = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(nats.url())
        .await;
    let error = refused.expect_err("an anonymous connection must be refused");
    assert_eq!(
        error.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{error}"
    );
    // The operator's credentials are accepted by the same server.
    let operator = nats.client().await.unwrap();
    operator.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_cannot_listen_everywhere_or_charge_or_read_secrets() {
    let bus = Bus::start().await;
    let (gateway, mut violations) = bus.connect_as("gateway").await;
    let mut marker = gateway.subscribe("_INBOX.gateway.marker").await.unwrap();

    // Subscriptions to everything, or to user events, are refused.
    let mut everything = gateway.subscribe(">").await.unwrap();
    violations.expect(r#"Subscription to ">""#).await;
    let mut user_events = gateway.subscribe("events.user.>").await.unwrap();
    violations
        .expect(r#"Subscription to "events.user.>""#)
        .await;
    gateway.flush().await.unwrap();
    for (subscription, subject) in [
        (&mut everything, "events.user.registered.x"),
        (&mut user_events, "events.user.credential.x"),
    ] {
        subscription_gets_nothing(
            &bus.operator,
            subscription,
            subject,
            "_INBOX.gateway.marker",
            &mut marker,
        )
        .await;
    }

    // Charging, voiding and refunding are the order service's: someone answers
    // them (here a stand-in, so that an answer would show), but not to the gateway.
    let mut stand_in = bus.operator.subscribe("payment.*").await.unwrap();
    let operator = bus.operator.clone();
    tokio::spawn(async move {
        while let Some(request) = stand_in.next().await {
            if let Some(reply) = request.reply {
                let _ = operator.publish(reply, "{}".into()).await;
            }
        }
    });
    bus.operator.flush().await.unwrap();
    let answered = bus.operator.request("payment.charge", "{}".into()).await;
    assert!(answered.is_ok(), "the stand-in answers: {answered:?}");
    for subject in ["payment.charge", "payment.void", "payment.refund"] {
        unanswered(&gateway, subject, "{}").await;
        violations
            .expect(&format!(r#"Publish to "{subject}""#))
            .await;
    }

    // The token-signing keys: neither the bucket's API nor its subjects.
    let js = jetstream::new(gateway.clone());
    let bucket = tokio::time::timeout(NO_ANSWER, js.get_key_value("user_signing_keys")).await;
    assert!(!matches!(bucket, Ok(Ok(_))), "the bucket opened");
    violations
        .expect(r#"Publish to "$JS.API.STREAM.INFO.KV_user_signing_keys""#)
        .await;
    unanswered(
        &gateway,
        "$JS.API.DIRECT.GET.KV_user_signing_keys.$KV.user_signing_keys.keys",
        "",
    )
    .await;
    violations
        .expect(r#"Publish to "$JS.API.DIRECT.GET.KV_user_signing_keys"#)
        .await;
    let _keys = gateway.subscribe("$KV.user_signing_keys.>").await.unwrap();
    violations
        .expect(r#"Subscription to "$KV.user_signing_keys.>""#)
        .await;

    // The USER stream's credential events: no consumer of any kind.
    for (subject, body) in [
        (
            "$JS.API.CONSUMER.CREATE.USER",
            json!({"stream_name": "USER", "config": {"filter_subject": "events.user.credential.>"}}),
        ),
        (
            "$JS.API.CONSUMER.CREATE.USER.peek.events.user.credential.>",
            json!({"stream_name": "USER", "config": {"name": "peek", "filter_subject": "events.user.credential.>"}}),
        ),
    ] {
        unanswered(&gateway, subject, &body.to_string()).await;
        violations
            .expect(&format!(r#"Publish to "{subject}""#))
            .await;
    }
    unanswered(&gateway, "$JS.API.STREAM.MSG.GET.USER", r#"{"seq":1}"#).await;
    violations
        .expect(r#"Publish to "$JS.API.STREAM.MSG.GET.USER""#)
        .await;

    // What it may do, it can: a public request through its declared calls.
    let login = request_json(
        &gateway,
        "user.login",
        json!({"email": "ann@example.com", "password": "ann-secret-password"}).to_string(),
    )
    .await
    .unwrap();
    assert!(login.is_ok(), "{:?}", login.error);
    assert!(login.body["token"].is_string(), "{}", login.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_keeps_to_its_own_events_requests_and_buckets() {
    let bus = Bus::start().await;
    let (product, mut violations) = bus.connect_as("product").await;
    let mut marker = product.subscribe("_INBOX.product.marker").await.unwrap();

    // Its own events go out; another service's are refused.
    let mut order_events = bus.operator.subscribe("events.order.>").await.unwrap();
    let mut product_events = bus.operator.subscribe("events.product.>").await.unwrap();
    bus.operator.flush().await.unwrap();
    product
        .publish("events.product.p1", "{}".into())
        .await
        .unwrap();
    product
        .publish("events.order.o1", "{}".into())
        .await
        .unwrap();
    product.flush().await.unwrap();
    violations.expect(r#"Publish to "events.order.o1""#).await;
    // Core NATS delivers at most once, and on a loaded machine a message now
    // and then never reaches a subscriber: publish again until one arrives.
    let own = tokio::time::timeout(REPORTED, async {
        loop {
            match tokio::time::timeout(Duration::from_secs(1), product_events.next()).await {
                Ok(event) => return event,
                Err(_) => {
                    product
                        .publish("events.product.p1", "{}".into())
                        .await
                        .unwrap();
                    product.flush().await.unwrap();
                }
            }
        }
    })
    .await;
    assert!(matches!(own, Ok(Some(_))), "its own event arrives");
    bus.operator
        .publish("events.order.marker", "marker".into())
        .await
        .unwrap();
    let first = tokio::time::timeout(REPORTED, order_events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.subject.as_str(),
        "events.order.marker",
        "the forged event was dropped"
    );

    // Another service's requests: neither in that service's queue group nor plainly.
    let mut stolen = product
        .queue_subscribe("order.>", "order".into())
        .await
        .unwrap();
    violations.expect(r#"Subscription to "order.>""#).await;
    let _plain = product.subscribe("user.login").await.unwrap();
    violations.expect(r#"Subscription to "user.login""#).await;
    product.flush().await.unwrap();
    subscription_gets_nothing(
        &bus.operator,
        &mut stolen,
        "order.get",
        "_INBOX.product.marker",
        &mut marker,
    )
    .await;
    // Nor another identity's replies.
    let _replies = product.subscribe("_INBOX.gateway.>").await.unwrap();
    violations
        .expect(r#"Subscription to "_INBOX.gateway.>""#)
        .await;

    // Another service's buckets: the order service's payment tokens, the user
    // service's signing keys.
    let js = jetstream::new(product.clone());
    for bucket in ["order_payment_tokens", "user_signing_keys"] {
        let opened = tokio::time::timeout(NO_ANSWER, js.get_key_value(bucket)).await;
        assert!(!matches!(opened, Ok(Ok(_))), "{bucket} opened");
        violations
            .expect(&format!(r#"Publish to "$JS.API.STREAM.INFO.KV_{bucket}""#))
            .await;
    }
    // The order service's own identity reads its bucket (the same request works).
    let (order, mut order_violations) = bus.connect_as("order").await;
    let tokens = jetstream::new(order)
        .get_key_value("order_payment_tokens")
        .await;
    assert!(tokens.is_ok(), "{:?}", tokens.err());
    assert!(order_violations.none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_on_another_stream_is_pinned_to_its_declared_filter() {
    let bus = Bus::start().await;
    let (notification, mut violations) = bus.connect_as("notification").await;
    let js = jetstream::new(notification.clone());
    let users = js.get_stream_no_info("USER").await.unwrap();

    // The declared durable and filter: created, and it reads registrations.
    let consumer = users
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("notification-users".into()),
            filter_subject: "events.user.registered.>".into(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut batch = consumer.fetch().max_messages(1).messages().await.unwrap();
    let registered = tokio::time::timeout(REPORTED, batch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(registered.subject.starts_with("events.user.registered."));
    registered.ack().await.unwrap();

    // The same durable on the credential subjects, or another name: refused.
    for (durable, filter) in [
        ("notification-users", "events.user.credential.>"),
        ("notification-peek", "events.user.>"),
    ] {
        let created = tokio::time::timeout(
            NO_ANSWER,
            users.create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some(durable.into()),
                filter_subject: filter.into(),
                ..Default::default()
            }),
        )
        .await;
        assert!(!matches!(created, Ok(Ok(_))), "{durable} on {filter}");
        violations
            .expect(&format!(
                r#"Publish to "$JS.API.CONSUMER.CREATE.USER.{durable}.{filter}""#
            ))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_revokes_the_old_identities_once_the_server_reloads() {
    let nats = NatsServer::start().await.unwrap();
    let auth = nats.auth_dir().unwrap().to_path_buf();
    let kept = tempfile::tempdir().unwrap();
    let old = kept.path().join("product.creds");
    std::fs::copy(auth.join("product.creds"), &old).unwrap();
    let connect = |creds: std::path::PathBuf| {
        let url = nats.url();
        async move {
            async_nats::ConnectOptions::with_credentials_file(creds)
                .await
                .unwrap()
                .connection_timeout(Duration::from_secs(2))
                .connect(url)
                .await
        }
    };
    connect(old.clone())
        .await
        .expect("the current identity connects");

    let rotated = std::process::Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(["auth", "init", "--rotate"])
        .arg(&auth)
        .output()
        .unwrap();
    assert!(rotated.status.success(), "{rotated:?}");
    let pid = nats.pid().unwrap().to_string();
    let reload = std::process::Command::new(testkit::nats_server::nats_server_bin())
        .arg("--signal")
        .arg(format!("reload={pid}"))
        .output()
        .unwrap();
    assert!(reload.status.success(), "{reload:?}");
    nats.wait_for_log("Reloaded server configuration", REPORTED)
        .await
        .unwrap();

    let refused = connect(old)
        .await
        .expect_err("the rotated-out identity is refused");
    assert_eq!(
        refused.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{refused}"
    );
    connect(auth.join("product.creds"))
        .await
        .expect("the new identity connects");
}
