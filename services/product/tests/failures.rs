//! Crashes, graceful stops and a restarted NATS server.

mod common;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::Cluster;
use futures::StreamExt;
use serde_json::json;
use shop_nats::discovery::{Registry, RegistryEvent};
use testkit::service::wait_for_line;

/// Sends `product.get` requests in a loop until stopped; records every outcome.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &async_nats::Client, workers: usize, ids: Vec<String>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..workers)
            .map(|w| {
                let (client, stop, ok, failures, ids) = (
                    client.clone(),
                    stop.clone(),
                    ok.clone(),
                    failures.clone(),
                    ids.clone(),
                );
                tokio::spawn(async move {
                    let mut i = w;
                    while !stop.load(Ordering::Relaxed) {
                        let id = &ids[i % ids.len()];
                        i += 1;
                        let sent = Instant::now();
                        let request =
                            client.request("product.get", json!({"id": id}).to_string().into());
                        match tokio::time::timeout(Duration::from_secs(3), request).await {
                            Ok(Ok(reply)) if reply.headers.is_none() => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Ok(reply)) => failures
                                .lock()
                                .unwrap()
                                .push((sent, format!("{:?}", reply.headers))),
                            Ok(Err(e)) => failures.lock().unwrap().push((sent, e.to_string())),
                            Err(_) => failures.lock().unwrap().push((sent, "timeout".into())),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    async fn stop(self) -> (u64, Vec<(Instant, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[tokio::test]
async fn kill_9_under_load_then_resume_from_checkpoint() {
    let mut c = Cluster::start_with_env(3, &[("RUST_LOG", "info,shop_actors::state=debug")])
        .await
        .unwrap();
    let ids: Vec<String> = (0..150).map(|i| format!("k{i:03}")).collect();
    for id in &ids {
        c.create(id, 10).await;
    }
    let last = c.stream_last_sequence().await;
    assert_eq!(last, 150);
    // Wait until the victim's state is on disk up to the last event.
    c.instances[1]
        .wait_for_log(
            &format!("\"message\":\"state flushed\",\"revision\":{last},"),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let before: Vec<_> = {
        let mut v = Vec::new();
        for id in ids.iter().take(20) {
            v.push(c.req("product.get", json!({"id": id})).await.body);
        }
        v
    };

    let js = async_nats::jetstream::new(c.client.clone());
    let registry = Registry::open(&js).await.unwrap();
    let mut watch = registry.watch().await.unwrap();

    let load = Load::start(&c.client, 8, ids.clone());
    let warm = load.ok.clone();
    while warm.load(Ordering::Relaxed) < 200 {
        tokio::task::yield_now().await;
    }
    let killed_at = Instant::now();
    c.instances[1].kill9().unwrap();
    let after_kill = load.ok.load(Ordering::Relaxed);
    while load.ok.load(Ordering::Relaxed) < after_kill + 1000 {
        tokio::task::yield_now().await;
    }
    let (ok, failures) = load.stop().await;
    assert!(ok >= after_kill + 1000);
    let late: Vec<_> = failures
        .iter()
        .filter(|(sent, _)| *sent > killed_at + Duration::from_millis(500))
        .collect();
    assert!(
        late.is_empty(),
        "requests sent after the crash failed: {late:?}"
    );
    assert!(
        failures.len() <= 8,
        "at most the requests in flight at the crash are lost: {failures:?}"
    );

    // The dead instance's registry entry expires on its own.
    let expired = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(event) = watch.next().await {
            if event
                == (RegistryEvent::Down {
                    key: "product.product-2".into(),
                })
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        expired,
        Ok(true),
        "registry entry of the killed instance expired within 15 s"
    );
    assert!(killed_at.elapsed() < Duration::from_secs(15));
    assert!(registry
        .get("product", "product-2")
        .await
        .unwrap()
        .is_none());
    assert!(registry
        .get("product", "product-1")
        .await
        .unwrap()
        .is_some());

    // Restarted on the same data, it resumes from its checkpoint instead of replaying.
    c.instances[1].restart().await.unwrap();
    let resumed = c.instances[1]
        .wait_for_log("state resuming from checkpoint", Duration::from_secs(5))
        .await
        .unwrap();
    let resumed: serde_json::Value = serde_json::from_str(&resumed).unwrap();
    assert_eq!(resumed["checkpoint"], last, "{resumed}");
    assert_eq!(resumed["to_replay"], 0, "{resumed}");
    let (_, metrics) = testkit::http::get(&c.instances[1].admin_addr, "/metrics")
        .await
        .unwrap();
    assert_eq!(
        testkit::metrics::value(&metrics, "shop_state_events_applied_total", &[]),
        Some(0.0)
    );
    assert!(
        registry
            .get("product", "product-2")
            .await
            .unwrap()
            .is_some(),
        "registered again"
    );

    // And serves the same data: ask it directly through its own $SRV-free path by
    // stopping the others, so every read lands on the restarted instance.
    c.instances[0].kill9().unwrap();
    c.instances[2].kill9().unwrap();
    for (id, expected) in ids.iter().zip(before) {
        assert_eq!(c.req("product.get", json!({"id": id})).await.body, expected);
    }
}

#[tokio::test]
async fn sigterm_under_load_drains_and_exits_zero() {
    let mut c = Cluster::start(2).await.unwrap();
    let ids: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    for id in &ids {
        c.create(id, 1_000_000).await;
    }
    let js = async_nats::jetstream::new(c.client.clone());
    let registry = Registry::open(&js).await.unwrap();
    assert!(registry
        .get("product", "product-1")
        .await
        .unwrap()
        .is_some());

    // Writes too: each reserve waits on a JetStream ack inside the worker pool.
    let writer_stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, stop) = (c.client.clone(), writer_stop.clone());
            tokio::spawn(async move {
                let mut results = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = json!({"product_id": format!("t{:02}", n % 20), "quantity": 1, "reservation_id": format!("w{w}-{n}")});
                    results.push(testkit::request_json(&client, "product.stock.reserve", body.to_string()).await.map(|r| r.error));
                    n += 1;
                }
                results
            })
        })
        .collect();
    let load = Load::start(&c.client, 6, ids.clone());
    while load.ok.load(Ordering::Relaxed) < 300 {
        tokio::task::yield_now().await;
    }
    c.instances[0].sigterm().unwrap();
    let status = c.instances[0]
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let at_exit = load.ok.load(Ordering::Relaxed);
    while load.ok.load(Ordering::Relaxed) < at_exit + 300 {
        tokio::task::yield_now().await;
    }
    writer_stop.store(true, Ordering::Relaxed);
    let (ok, failures) = load.stop().await;
    assert!(ok > 600);
    assert!(
        failures.is_empty(),
        "no request lost to the drain: {failures:?}"
    );
    let mut writes = 0;
    for writer in writers {
        for result in writer.await.unwrap() {
            assert_eq!(result.unwrap(), None, "every write answered successfully");
            writes += 1;
        }
    }
    assert!(writes > 0);
    assert!(
        registry
            .get("product", "product-1")
            .await
            .unwrap()
            .is_none(),
        "deregistered on a clean stop"
    );
    assert!(c.instances[0]
        .logs()
        .iter()
        .any(|l| l.contains("stopped cleanly")));
}

#[tokio::test]
async fn survives_a_nats_server_restart() {
    let mut c = Cluster::start(1).await.unwrap();
    let created = c.create("durable", 5).await;
    let mut lines = c.instances[0].subscribe();
    let pid = c.instances[0].pid();

    c.nats.restart().await.unwrap();
    wait_for_line(&mut lines, "\"nats connected\"", Duration::from_secs(20))
        .await
        .unwrap();

    let client = c.nats.client().await.unwrap();
    let read = testkit::request_json(&client, "product.get", json!({"id": "durable"}).to_string())
        .await
        .unwrap();
    assert_eq!(
        read.body, created,
        "serves the same data after reconnecting"
    );
    let reserved = testkit::request_json(
        &client,
        "product.stock.reserve",
        json!({"product_id": "durable", "quantity": 2, "reservation_id": "after-restart"})
            .to_string(),
    )
    .await
    .unwrap();
    assert!(reserved.is_ok(), "writes work again: {:?}", reserved.error);
    let revision = reserved.body["revision"].as_u64().unwrap();
    let read = testkit::request_json(
        &client,
        "product.get",
        json!({"id": "durable", "min_revision": revision}).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(
        read.body["stock"], 3,
        "the state actor tails the stream again: {:?}",
        read.error
    );
    assert_eq!(c.instances[0].pid(), pid, "the service was not restarted");
}
