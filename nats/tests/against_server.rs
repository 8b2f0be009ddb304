//! shop-nats against a real nats-server.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use serde_json::json;
use shop_nats::{
    breaker::BreakerConfig,
    discovery::{InstanceInfo, Registry, RegistryEvent},
    error::ERROR_CODE_HEADER,
    jetstream::{ensure_kv, ensure_stream},
    CallOptions, ServiceClient, ServiceError,
};
use testkit::NatsServer;

/// Answers `svc.flaky` with 503 for the first `failures` requests, then `{"ok":true}`.
/// Counts requests and remembers the last `traceparent` seen.
async fn flaky_responder(
    client: &async_nats::Client,
    failures: usize,
) -> (Arc<AtomicUsize>, Arc<std::sync::Mutex<String>>) {
    failing_responder(client, "svc.flaky", failures, || {
        ServiceError::unavailable("warming up")
    })
    .await
}

/// Answers `subject` with `error()` for the first `failures` requests, then `{"ok":true}`.
async fn failing_responder(
    client: &async_nats::Client,
    subject: &str,
    failures: usize,
    error: fn() -> ServiceError,
) -> (Arc<AtomicUsize>, Arc<std::sync::Mutex<String>>) {
    let mut sub = client.subscribe(subject.to_string()).await.unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let trace = Arc::new(std::sync::Mutex::new(String::new()));
    let (responder, count, last_trace) = (client.clone(), seen.clone(), trace.clone());
    tokio::spawn(async move {
        let client = responder;
        while let Some(msg) = sub.next().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            if let Some(tp) = msg.headers.as_ref().and_then(|h| h.get("traceparent")) {
                *last_trace.lock().unwrap() = tp.to_string();
            }
            let Some(reply) = msg.reply else { continue };
            if n < failures {
                let err = error();
                client
                    .publish_with_headers(reply, err.headers(), err.body())
                    .await
                    .unwrap();
            } else {
                client
                    .publish(reply, json!({"ok": true}).to_string().into())
                    .await
                    .unwrap();
            }
        }
    });
    client.flush().await.unwrap();
    (seen, trace)
}

#[tokio::test]
async fn no_responders_fails_fast_and_clearly() {
    let nats = NatsServer::start().await.unwrap();
    let client = ServiceClient::new(nats.client().await.unwrap());
    let started = Instant::now();
    let err = client
        .call::<_, serde_json::Value>("ghost.get", &json!({}), CallOptions::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code, 503);
    assert!(
        err.message.contains("no instance of ghost"),
        "{}",
        err.message
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn only_idempotent_calls_are_retried() {
    let nats = NatsServer::start().await.unwrap();
    let raw = nats.client().await.unwrap();
    let (seen, trace) = flaky_responder(&raw, 2).await;
    let client = ServiceClient::new(raw.clone());

    let err = client
        .call::<_, serde_json::Value>("svc.flaky", &json!({}), CallOptions::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code, 503, "not idempotent: no retry");
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    let root = shop_nats::TraceContext::new_root();
    let ok: serde_json::Value = client
        .call(
            "svc.flaky",
            &json!({}),
            CallOptions::default().idempotent(),
            Some(&root),
        )
        .await
        .unwrap();
    assert_eq!(ok["ok"], true);
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "one failure, then a retry that succeeded"
    );
    let propagated =
        shop_nats::TraceContext::parse(&trace.lock().unwrap()).expect("traceparent sent");
    assert_eq!(
        propagated.trace_id(),
        root.trace_id(),
        "the caller's trace travels with the call"
    );

    let timeout = client
        .call::<_, serde_json::Value>(
            "svc.nobody-answers",
            &json!({}),
            CallOptions::default().timeout(Duration::from_millis(50)),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        timeout.code, 503,
        "no responders, not a timeout, when nobody subscribes"
    );
}

#[tokio::test]
async fn the_breaker_opens_and_fails_fast() {
    let nats = NatsServer::start().await.unwrap();
    let raw = nats.client().await.unwrap();
    let (seen, _) = failing_responder(&raw, "svc.broken", usize::MAX, || {
        ServiceError::internal("disk on fire")
    })
    .await;
    let client = ServiceClient::with_breaker_config(
        raw,
        BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(30),
        },
    );
    for _ in 0..3 {
        let err = client
            .call::<_, serde_json::Value>("svc.broken", &json!({}), CallOptions::default(), None)
            .await
            .unwrap_err();
        assert!(err.message.contains("disk on fire"));
    }
    let started = Instant::now();
    let err = client
        .call::<_, serde_json::Value>("svc.broken", &json!({}), CallOptions::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code, 503);
    assert!(err.message.contains("circuit open"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_millis(20));
    assert_eq!(
        seen.load(Ordering::SeqCst),
        3,
        "an open breaker sends nothing"
    );
    // Another service's breaker is unaffected.
    assert_eq!(
        client.breaker("other").state(),
        shop_nats::breaker::BreakerState::Closed
    );
}

/// A service shedding load answers 503 "retry after" fast: its callers keep
/// calling it (the ones it accepts go through), rather than opening the
/// circuit and refusing everything themselves.
#[tokio::test]
async fn a_service_shedding_load_with_503_keeps_the_breaker_closed() {
    let nats = NatsServer::start().await.unwrap();
    let raw = nats.client().await.unwrap();
    let (seen, _) = flaky_responder(&raw, 10).await;
    let client = ServiceClient::with_breaker_config(
        raw,
        BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(30),
        },
    );
    let body = json!({});
    let calls = (0..10).map(|_| {
        client.call::<_, serde_json::Value>("svc.flaky", &body, CallOptions::default(), None)
    });
    for refused in futures::future::join_all(calls).await {
        let err = refused.unwrap_err();
        assert_eq!(err.code, 503);
        assert!(err.message.contains("warming up"), "{}", err.message);
    }
    assert_eq!(
        client.breaker("svc").state(),
        shop_nats::breaker::BreakerState::Closed
    );
    let ok: serde_json::Value = client
        .call("svc.flaky", &json!({}), CallOptions::default(), None)
        .await
        .unwrap();
    assert_eq!(ok["ok"], true);
    assert_eq!(seen.load(Ordering::SeqCst), 11, "every call reached it");
}

#[tokio::test]
async fn error_replies_map_to_service_errors() {
    let nats = NatsServer::start().await.unwrap();
    let raw = nats.client().await.unwrap();
    let mut sub = raw.subscribe("svc.strict").await.unwrap();
    let responder = raw.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let err = ServiceError::conflict("stock short");
            responder
                .publish_with_headers(msg.reply.unwrap(), err.headers(), err.body())
                .await
                .unwrap();
        }
    });
    raw.flush().await.unwrap();
    let client = ServiceClient::new(raw);
    let err = client
        .call::<_, serde_json::Value>(
            "svc.strict",
            &json!({}),
            CallOptions::default().idempotent(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err, ServiceError::conflict("stock short"));
    assert_eq!(
        client.breaker("svc").state(),
        shop_nats::breaker::BreakerState::Closed,
        "4xx is not a failure of the service"
    );
    assert_eq!(ERROR_CODE_HEADER, "Nats-Service-Error-Code");
}

#[tokio::test]
async fn concurrent_setup_of_the_same_stream_and_bucket_all_succeed() {
    let nats = NatsServer::start().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let client = nats.client().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let js = jetstream::new(client);
            let config = stream::Config {
                name: "RACE".into(),
                subjects: vec!["events.race.>".into()],
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            };
            ensure_stream(&js, config)
                .await
                .map_err(|e| format!("instance {i}: {e}"))?;
            Registry::open(&js)
                .await
                .map_err(|e| format!("instance {i}: {e}"))?;
            ensure_kv(
                &js,
                async_nats::jetstream::kv::Config {
                    bucket: "race".into(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("instance {i}: {e}"))?;
            Ok::<_, String>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // A changed configuration is applied to the existing stream.
    let js = jetstream::new(nats.client().await.unwrap());
    let mut updated = ensure_stream(
        &js,
        stream::Config {
            name: "RACE".into(),
            subjects: vec!["events.race.>".into(), "events.race2.>".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(updated.info().await.unwrap().config.subjects.len(), 2);
}

fn instance(service: &str, id: &str) -> InstanceInfo {
    InstanceInfo {
        service: service.into(),
        instance_id: id.into(),
        version: "0.1.0".into(),
        started_at: "2026-01-01T00:00:00Z".into(),
        endpoints: vec![format!("{service}.get")],
        admin_addr: None,
        host: "test".into(),
        pid: 1,
        nats_server: None,
    }
}

#[tokio::test]
async fn registry_lists_and_watches_instances() {
    let nats = NatsServer::start().await.unwrap();
    let js = jetstream::new(nats.client().await.unwrap());
    let registry = Registry::open(&js).await.unwrap();
    registry.register(&instance("product", "a")).await.unwrap();
    let mut watch = registry.watch().await.unwrap();
    assert_eq!(
        watch.next().await,
        Some(RegistryEvent::Up(instance("product", "a"))),
        "current entries first"
    );

    registry.register(&instance("product", "b")).await.unwrap();
    registry.register(&instance("user", "c")).await.unwrap();
    assert_eq!(
        watch.next().await,
        Some(RegistryEvent::Up(instance("product", "b")))
    );
    assert_eq!(
        watch.next().await,
        Some(RegistryEvent::Up(instance("user", "c")))
    );
    let products = registry.list(Some("product")).await.unwrap();
    assert_eq!(
        products,
        vec![instance("product", "a"), instance("product", "b")]
    );
    assert_eq!(registry.list(None).await.unwrap().len(), 3);

    registry.deregister("product", "a").await.unwrap();
    assert_eq!(
        watch.next().await,
        Some(RegistryEvent::Down {
            key: "product.a".into()
        })
    );
    assert_eq!(
        registry.list(Some("product")).await.unwrap(),
        vec![instance("product", "b")]
    );
    assert_eq!(registry.get("product", "a").await.unwrap(), None);
}

#[tokio::test]
async fn a_client_calls_only_its_declared_subjects() {
    let server = NatsServer::start().await.unwrap();
    let nats = server.client().await.unwrap();
    let (seen, _) = flaky_responder(&nats, 0).await;
    let declared = ServiceClient::new(nats.clone()).calling_only(&["svc.flaky"]);
    let ok: serde_json::Value = declared
        .call("svc.flaky", &json!({}), CallOptions::default(), None)
        .await
        .unwrap();
    assert_eq!(ok["ok"], true);

    let mut other = nats.subscribe("svc.other").await.unwrap();
    let err = declared
        .call_raw("svc.other", "{}".into(), CallOptions::default(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code, 500);
    assert!(
        err.message.contains("not among the subjects"),
        "{}",
        err.message
    );
    nats.flush().await.unwrap();
    let sent = tokio::time::timeout(Duration::from_millis(200), other.next()).await;
    assert!(sent.is_err(), "nothing was sent to the undeclared subject");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}
