//! Breakers recover, against a real nats-server: a half-open probe whose caller
//! stops waiting still closes the circuit, and a nats-server restart is not held
//! against the services being called.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use shop_nats::{
    breaker::{BreakerConfig, BreakerState, CircuitBreaker},
    CallOptions, NatsConfig, ServiceClient, ServiceError,
};
use testkit::NatsServer;
use tokio::task::JoinHandle;

/// Answers every request on `subject` with `{"ok":true}` after `delay`, until
/// aborted. Returns once the server routes requests to it.
async fn responder(client: &async_nats::Client, subject: &str, delay: Duration) -> JoinHandle<()> {
    let mut sub = client.subscribe(subject.to_string()).await.unwrap();
    let answering = client.clone();
    let task = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let client = answering.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                if let Some(reply) = msg.reply {
                    let _ = client
                        .publish(reply, json!({"ok": true}).to_string().into())
                        .await;
                }
            });
        }
    });
    // Answered through the server: the subscription is live for every connection.
    client
        .request(subject.to_string(), "{}".into())
        .await
        .expect("the responder answers");
    task
}

async fn call(client: &ServiceClient, subject: &str) -> Result<serde_json::Value, ServiceError> {
    let options = CallOptions::default().timeout(Duration::from_secs(2));
    client.call(subject, &json!({}), options, None).await
}

/// A caller as services connect (reconnecting forever), whose breakers open
/// after two failures and stay open a minute.
async fn reconnecting_caller(nats: &NatsServer) -> (shop_nats::Connection, ServiceClient) {
    let config = NatsConfig {
        creds: nats.operator_creds(),
        ..NatsConfig::with_url(nats.url())
    };
    let connection = shop_nats::connect(&config, "operator", "caller")
        .await
        .unwrap();
    let client = ServiceClient::with_breaker_config(
        connection.client.clone(),
        BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_secs(60),
        },
    );
    (connection, client)
}

/// Waits (at most 5 s) until `breaker` is in `state`.
async fn until_state(breaker: &CircuitBreaker, state: BreakerState) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while breaker.state() != state {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("breaker still {:?}, not {state:?}", breaker.state()));
}

/// The order service's `try_join_all` over two lines, reduced: at half-open, the
/// first call takes the probe, the second is refused, and `try_join_all` drops
/// the probe's future. The probe's reply must still close the circuit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_dropped_by_try_join_all_still_closes_the_breaker() {
    let nats = NatsServer::start().await.unwrap();
    let raw = nats.client().await.unwrap();
    let open_for = Duration::from_millis(300);
    let client = ServiceClient::with_breaker_config(
        raw.clone(),
        BreakerConfig {
            failure_threshold: 2,
            open_for,
        },
    );
    let breaker = client.breaker("svc");
    for _ in 0..2 {
        let err = call(&client, "svc.get").await.unwrap_err();
        assert!(err.message.contains("no instance"), "{err:?}");
    }
    assert_eq!(breaker.state(), BreakerState::Open);

    // The service is back, a little slow: the probe is still out when the
    // second line asks.
    let _responder = responder(&raw, "svc.get", Duration::from_millis(200)).await;
    until_state(&breaker, BreakerState::HalfOpen).await;
    let lines = futures::future::try_join_all([call(&client, "svc.get"), call(&client, "svc.get")]);
    let refused = lines.await.unwrap_err();
    assert_eq!(refused.code, 503);
    assert!(refused.message.contains("circuit open"), "{refused:?}");

    // The dropped probe's reply arrives and is recorded.
    until_state(&breaker, BreakerState::Closed).await;
    let both = futures::future::try_join_all([call(&client, "svc.get"), call(&client, "svc.get")])
        .await
        .expect("both lines priced once the breaker closed");
    assert_eq!(both, vec![json!({"ok": true}), json!({"ok": true})]);
}

/// A probe that fails re-opens the circuit; the next one, after the open
/// period, closes it. Concurrent callers during the probe are refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_callers_at_half_open_send_one_probe() {
    let nats = NatsServer::start().await.unwrap();
    let raw = nats.client().await.unwrap();
    let client = ServiceClient::with_breaker_config(
        raw.clone(),
        BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::from_millis(200),
        },
    );
    let breaker = client.breaker("svc");
    call(&client, "svc.get").await.unwrap_err();
    assert_eq!(breaker.state(), BreakerState::Open);
    let mut requests = raw.subscribe("svc.get").await.unwrap();
    raw.flush().await.unwrap();
    let _responder = responder(&raw, "svc.get", Duration::from_millis(100)).await;
    until_state(&breaker, BreakerState::HalfOpen).await;

    let results = futures::future::join_all((0..16).map(|_| call(&client, "svc.get"))).await;
    let served = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(served, 1, "one probe went through: {results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(refused.message.contains("circuit open"), "{refused:?}");
    }
    assert!(requests.next().await.is_some());
    assert_eq!(breaker.state(), BreakerState::Closed);
    let after = futures::future::join_all((0..16).map(|_| call(&client, "svc.get"))).await;
    assert!(after.iter().all(Result::is_ok), "{after:?}");
}

/// A nats-server restart: calls fail while the connection is down, and right
/// after it comes back nobody is subscribed yet (the service's instances
/// reconnect on their own schedule). None of it opens the breaker, so the
/// service is called again as soon as it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_does_not_open_the_breaker() {
    let mut nats = NatsServer::start().await.unwrap();
    let (connection, client) = reconnecting_caller(&nats).await;
    let breaker = client.breaker("svc");
    let service = nats.client().await.unwrap();
    let responding = responder(&service, "svc.get", Duration::ZERO).await;
    assert_eq!(call(&client, "svc.get").await.unwrap(), json!({"ok": true}));

    // The service goes away with the server and is not back when the caller is.
    responding.abort();
    drop(service);
    let mut events = connection.events();
    let mut reconnected = connection.events();
    let caller = client.clone();
    let during = tokio::spawn(async move {
        while events.recv().await != Ok(shop_nats::ConnectionEvent::Disconnected) {}
        let mut failures = Vec::new();
        for _ in 0..5 {
            let options = CallOptions::default().timeout(Duration::from_millis(100));
            if let Err(e) = caller
                .call::<_, serde_json::Value>("svc.get", &json!({}), options, None)
                .await
            {
                failures.push(e.code);
            }
        }
        failures
    });
    nats.restart().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while reconnected.recv().await != Ok(shop_nats::ConnectionEvent::Connected) {}
    })
    .await
    .expect("the caller reconnected");
    let failed_during = during.await.unwrap();
    assert!(!failed_during.is_empty(), "calls failed during the restart");
    for _ in 0..5 {
        let err = call(&client, "svc.get").await.unwrap_err();
        assert!(err.message.contains("no instance"), "{err:?}");
    }
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "{} failures during the restart and 5 no-responders after it did not open it",
        failed_during.len()
    );

    let service = nats.client().await.unwrap();
    let _responder = responder(&service, "svc.get", Duration::ZERO).await;
    assert_eq!(
        call(&client, "svc.get").await.unwrap(),
        json!({"ok": true}),
        "called again as soon as the service is back"
    );
}

/// Outside a reconnect, "no responders" still counts: a service that is gone
/// opens its breaker.
#[tokio::test]
async fn no_responders_without_a_reconnect_opens_the_breaker() {
    let nats = NatsServer::start().await.unwrap();
    let (_connection, client) = reconnecting_caller(&nats).await;
    for _ in 0..2 {
        call(&client, "svc.get").await.unwrap_err();
    }
    assert_eq!(client.breaker("svc").state(), BreakerState::Open);
    let refused = call(&client, "svc.get").await.unwrap_err();
    assert!(refused.message.contains("circuit open"), "{refused:?}");
}
