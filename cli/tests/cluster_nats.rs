//! The shop on a three-node NATS cluster (real nats-servers with the generated
//! auth, every stream and bucket with 3 replicas, every service given all
//! three URLs; two instances of product, payment and order, which the order
//! path calls, one of the others), losing the `ORDER` stream's leader to `kill -9` under order
//! load and getting it back, with no service restarted. Then the invariants:
//! every acknowledged order exists and ends, nothing is charged twice, stock
//! is conserved, the restarted node's replica catches up, and the services'
//! consumers still deliver.
//!
//! It prints the failover pause (p99 and max of `order.create` latency
//! around the kill, the longest gap between confirmations); run with
//! `--nocapture` to see it, and `CLUSTER_TEST_RATE` (orders per second,
//! default 20) for more load.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::{Duration, Instant},
};

use async_nats::jetstream;
use futures::StreamExt;
use serde_json::{json, Value};
use testkit::{request_json_with_headers, workspace_bin, NatsCluster, ServiceProcess};

const ADMIN_EMAIL: &str = "admin@shop.test";
const ADMIN_PASSWORD: &str = "admin-password-for-tests";
const PASSWORD: &str = "correct horse battery";
const PRODUCT: &str = "sku-cluster";
const INITIAL_STOCK: i64 = 100_000;
/// Load before the kill, with the leader gone, and after the restart.
const BEFORE_KILL: Duration = Duration::from_secs(4);
const LEADER_DOWN: Duration = Duration::from_secs(8);
const AFTER_RESTART: Duration = Duration::from_secs(4);
const USERS: usize = 4;

/// One `order.create` the load generator sent.
#[derive(Debug, Clone)]
struct Attempt {
    /// Since the load started.
    sent: Duration,
    latency: Duration,
    /// The order id, when the service acknowledged it.
    id: Option<String>,
    error: Option<String>,
}

struct Shop {
    cluster: NatsCluster,
    _data: tempfile::TempDir,
    processes: Vec<ServiceProcess>,
}

async fn start_shop() -> anyhow::Result<Shop> {
    let cluster = NatsCluster::start(3).await?;
    let data = tempfile::tempdir()?;
    let url = cluster.url();
    let mut processes = Vec::new();
    let common = [
        ("JS_REPLICAS", "3"),
        ("ARGON2_MEMORY_KIB", "1024"),
        ("ARGON2_ITERATIONS", "1"),
        ("ADMIN_EMAIL", ADMIN_EMAIL),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("ORDER_SAGA_ACK_WAIT_SECS", "2"),
        ("ORDER_DEADLINE_SECS", "120"),
    ];
    for (service, id) in [
        ("product", "product-1"),
        ("product", "product-2"),
        ("user", "user-1"),
        ("payment", "payment-1"),
        ("payment", "payment-2"),
        ("notification", "notification-1"),
        ("order", "order-1"),
        ("order", "order-2"),
    ] {
        let bin = workspace_bin(&format!("{service}-service"))?;
        let dir = data.path().join(id);
        processes.push(ServiceProcess::start(&bin, &url, id, &dir, &common).await?);
    }
    Ok(Shop {
        cluster,
        _data: data,
        processes,
    })
}

/// Logs in, retrying while the user service creates the account.
async fn login(client: &async_nats::Client, email: &str, password: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match shop_nats::login::login(client, email, password, Duration::from_secs(5)).await {
            Ok(token) => return token,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                // The account is created by the user service a moment after it starts.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("login {email}: {e}"),
        }
    }
}

async fn req(
    client: &async_nats::Client,
    subject: &str,
    token: &str,
    body: Value,
) -> testkit::Reply {
    request_json_with_headers(
        client,
        subject,
        shop_nats::auth::bearer_headers(token),
        body.to_string(),
    )
    .await
    .unwrap_or_else(|e| panic!("{subject}: {e:#}"))
}

/// Every event of `stream`, in order (read as the operator).
async fn stream_events(js: &jetstream::Context, stream: &str) -> Vec<(String, Value)> {
    let mut handle = js.get_stream(stream).await.unwrap();
    let last = handle.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    if last == 0 {
        return out;
    }
    let consumer = handle
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        let value: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
        out.push((message.subject.to_string(), value));
        if message.info().unwrap().stream_sequence >= last {
            break;
        }
    }
    out
}

/// Prints what the chaos suite's invariants find in the streams: which
/// orders, reservations or payments are behind totals that do not add up.
async fn explain_with_invariants(js: &jetstream::Context, acked: &[String]) {
    use shop_chaos::invariants::{check, Event, History, NAMES};
    let events = |stream: &'static str| async move {
        stream_events(js, stream)
            .await
            .into_iter()
            .enumerate()
            .map(|(i, (_, body))| Event::new(i as u64 + 1, body))
            .collect::<Vec<_>>()
    };
    let history = History {
        acknowledged: acked.to_vec(),
        retried: Vec::new(),
        order: events("ORDER").await,
        product: events("PRODUCT").await,
        payment: events("PAYMENT").await,
        notification: Vec::new(),
    };
    // Not notifications (this test runs no notification service), and the
    // sequences are positions, which are the streams' own (nothing deleted).
    let notifications = NAMES[5];
    let stocks: Vec<(u64, i64, &str)> = history
        .product
        .iter()
        .map(|e| {
            let stock = e.body["product"]["stock"].as_i64().unwrap_or(-1);
            (e.seq, stock, e.body["type"].as_str().unwrap_or_default())
        })
        .collect();
    println!(
        "PRODUCT holds {} events; the last five (sequence, stock, type): {:?}",
        stocks.len(),
        &stocks[stocks.len().saturating_sub(5)..]
    );
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for event in &history.order {
        if let Some(status) = event.body["order"]["status"].as_str() {
            *statuses
                .entry(format!("{}:{status}", event.body["type"]))
                .or_default() += 1;
        }
    }
    println!("ORDER events by type and status: {statuses:?}");
    for outcome in check(&history)
        .iter()
        .filter(|o| !o.held() && o.name != notifications)
    {
        println!(
            "invariant broken: {} ({} of {}): {:?}",
            outcome.name, outcome.violations, outcome.checked, outcome.examples
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_order_streams_leader_dies_under_load_and_nothing_is_lost() {
    let started = Instant::now();
    let mut shop = start_shop().await.unwrap();
    let rate: u64 = std::env::var("CLUSTER_TEST_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20)
        .max(1);
    let any = shop.cluster.client().await.unwrap();
    let js = jetstream::new(any.clone());

    // Every stream and bucket of the system has three replicas.
    for stream in [
        "PRODUCT",
        "ORDER",
        "PAYMENT",
        "USER",
        "NOTIFICATION",
        "KV_registry",
        "LOGS",
    ] {
        let mut handle = js.get_stream(stream).await.unwrap();
        let info = handle.info().await.unwrap();
        assert_eq!(info.config.num_replicas, 3, "{stream}");
    }

    let admin = login(&any, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let created = req(
        &any,
        "product.create",
        &admin,
        json!({"id": PRODUCT, "name": "Cluster keyboard", "price_cents": 1000, "currency": "USD", "stock": INITIAL_STOCK}),
    )
    .await;
    assert!(created.is_ok(), "{:?}", created.error);
    let mut users = Vec::new();
    for i in 0..USERS {
        let email = format!("buyer{i}@cluster.test");
        let reply = req(
            &any,
            "user.register",
            &admin,
            json!({"email": email, "password": PASSWORD, "name": "Buyer"}),
        )
        .await;
        assert!(reply.is_ok(), "{:?}", reply.error);
        let id = reply.body["id"].as_str().unwrap().to_string();
        users.push((id, login(&any, &email, PASSWORD).await));
    }

    // The load and the observer connect to a node that will survive, so
    // what is measured is the services' pause, not this client's reconnect.
    let leader = shop
        .cluster
        .leader_of(&js, "ORDER")
        .await
        .unwrap()
        .expect("ORDER has a leader");
    let victim = shop.cluster.node(&leader).unwrap();
    let survivor = (victim + 1) % shop.cluster.nodes.len();
    let client = shop
        .cluster
        .client_on(&shop.cluster.nodes[survivor].url())
        .await
        .unwrap();
    println!(
        "cluster up in {:.1} s; ORDER leader {leader}; load at {rate}/s through {}",
        started.elapsed().as_secs_f64(),
        shop.cluster.nodes[survivor].name
    );
    let mut confirmations = client.subscribe("events.order.>").await.unwrap();
    client.flush().await.unwrap();
    let load_started = Instant::now();
    let (confirmed_tx, mut confirmed_rx) =
        tokio::sync::mpsc::unbounded_channel::<(String, Duration)>();
    let observer = tokio::spawn(async move {
        while let Some(message) = confirmations.next().await {
            let event: Value = serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
            if event["order"]["status"] == "confirmed" {
                let id = event["order"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if confirmed_tx.send((id, load_started.elapsed())).is_err() {
                    return;
                }
            }
        }
    });

    // Open-loop load: one order.create every 1/rate s, whatever the replies do.
    let (attempt_tx, mut attempt_rx) = tokio::sync::mpsc::unbounded_channel::<Attempt>();
    let stop_load = tokio_util_stop();
    let load = {
        let (client, users, stop) = (client.clone(), users.clone(), stop_load.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                tick.tick().await;
                n += 1;
                let (user, token) = users[n % users.len()].clone();
                let (client, tx) = (client.clone(), attempt_tx.clone());
                tokio::spawn(async move {
                    let sent = load_started.elapsed();
                    let t = Instant::now();
                    let body = json!({"user_id": user, "items": [{"product_id": PRODUCT, "quantity": 1}], "payment_token": "tok_ok", "idempotency_key": format!("cluster-{n}")});
                    let reply = tokio::time::timeout(
                        Duration::from_secs(15),
                        request_json_with_headers(
                            &client,
                            "order.create",
                            shop_nats::auth::bearer_headers(&token),
                            body.to_string(),
                        ),
                    )
                    .await;
                    let latency = t.elapsed();
                    let (id, error) = match reply {
                        Ok(Ok(reply)) if reply.is_ok() => {
                            (reply.body["id"].as_str().map(String::from), None)
                        }
                        Ok(Ok(reply)) => (None, Some(format!("{:?}", reply.error))),
                        Ok(Err(e)) => (None, Some(format!("{e:#}"))),
                        Err(_) => (None, Some("no reply in 15 s".to_string())),
                    };
                    let _ = tx.send(Attempt {
                        sent,
                        latency,
                        id,
                        error,
                    });
                });
            }
        })
    };

    // Wait for orders to be confirmed before the kill: the saga runs.
    let mut confirmed_at: BTreeMap<String, Duration> = BTreeMap::new();
    let warm = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some((id, at)) = confirmed_rx.recv().await {
            confirmed_at.insert(id, at);
            if confirmed_at.len() >= 5 && load_started.elapsed() >= BEFORE_KILL {
                return;
            }
        }
    })
    .await;
    assert!(warm.is_ok(), "no orders confirmed before the kill");

    let killed_at = load_started.elapsed();
    shop.cluster.kill9(victim).unwrap();
    println!(
        "killed {leader} (kill -9) at {:.1} s",
        killed_at.as_secs_f64()
    );
    // A new leader is elected among the two left.
    let new_leader = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Each question bounded: during the election the API does not
            // answer, and the client's 5 s timeout would be measured instead.
            let asked = tokio::time::timeout(
                Duration::from_millis(500),
                shop.cluster.leader_of(&js, "ORDER"),
            )
            .await;
            match asked.unwrap_or(Ok(None)) {
                Ok(Some(name)) if name != leader => break name,
                _ if Instant::now() < deadline => {
                    // An election inside the servers: nothing to await but its outcome.
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                other => panic!("no new ORDER leader: {other:?}"),
            }
        }
    };
    println!(
        "new ORDER leader {new_leader} after {:.1} s",
        (load_started.elapsed() - killed_at).as_secs_f64()
    );
    drain_until(
        &mut confirmed_rx,
        &mut confirmed_at,
        load_started + killed_at + LEADER_DOWN,
    )
    .await;

    shop.cluster.restart(victim).await.unwrap();
    let restarted_at = load_started.elapsed();
    println!("restarted {leader} at {:.1} s", restarted_at.as_secs_f64());
    drain_until(
        &mut confirmed_rx,
        &mut confirmed_at,
        load_started + restarted_at + AFTER_RESTART,
    )
    .await;
    stop_load.store(true, std::sync::atomic::Ordering::SeqCst);
    load.await.unwrap();

    // Every reply (or its 15 s timeout) is in.
    let mut attempts = Vec::new();
    let sent_deadline = Instant::now() + Duration::from_secs(20);
    while let Ok(Some(attempt)) =
        tokio::time::timeout_at(sent_deadline.into(), attempt_rx.recv()).await
    {
        attempts.push(attempt);
    }
    let acked: Vec<String> = attempts.iter().filter_map(|a| a.id.clone()).collect();
    let failed: Vec<&Attempt> = attempts.iter().filter(|a| a.id.is_none()).collect();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for a in &failed {
        *reasons
            .entry(
                a.error
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(90)
                    .collect(),
            )
            .or_default() += 1;
    }
    println!(
        "{} order.create sent: {} acknowledged, {} refused or unanswered {reasons:?}",
        attempts.len(),
        acked.len(),
        failed.len()
    );
    assert!(
        acked.len() > attempts.len() / 2,
        "most orders are acknowledged"
    );

    // Every order the ORDER stream holds (acknowledged or not) ends.
    let admin_headers = || shop_nats::auth::bearer_headers(&admin);
    let deadline = Instant::now() + Duration::from_secs(60);
    let final_orders: HashMap<String, Value> = loop {
        let mut last: HashMap<String, Value> = HashMap::new();
        for (_, event) in stream_events(&js, "ORDER").await {
            if let Some(id) = event["order"]["id"].as_str() {
                last.insert(id.to_string(), event["order"].clone());
            }
        }
        let open: Vec<&String> = last
            .iter()
            .filter(|(_, o)| !matches!(o["status"].as_str(), Some("confirmed" | "cancelled")))
            .map(|(id, _)| id)
            .collect();
        if open.is_empty() {
            break last;
        }
        assert!(
            Instant::now() < deadline,
            "{} orders never ended: {:?}",
            open.len(),
            open.iter().take(5).collect::<Vec<_>>()
        );
        // Await the next order event rather than polling blindly.
        let _ = tokio::time::timeout(Duration::from_secs(1), confirmed_rx.recv()).await;
    };
    for id in &acked {
        let order = final_orders
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged order {id} is not in the ORDER stream"));
        assert!(
            matches!(order["status"].as_str(), Some("confirmed" | "cancelled")),
            "{order}"
        );
        // And the order service answers for it (with the admin's token).
        let got = request_json_with_headers(
            &client,
            "order.get",
            admin_headers(),
            json!({"id": id}).to_string(),
        )
        .await
        .unwrap();
        assert!(got.is_ok(), "order.get {id}: {:?}", got.error);
    }

    // Nothing charged twice.
    let mut captures: HashMap<String, usize> = HashMap::new();
    for (_, event) in stream_events(&js, "PAYMENT").await {
        if event["type"] == "payment.captured" {
            let order = event["payment"]["order_id"]
                .as_str()
                .or(event["order_id"].as_str())
                .unwrap_or_default();
            *captures.entry(order.to_string()).or_default() += 1;
        }
    }
    let twice: Vec<_> = captures.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "charged more than once: {twice:?}");
    let confirmed: Vec<&Value> = final_orders
        .values()
        .filter(|o| o["status"] == "confirmed")
        .collect();
    for order in &confirmed {
        let id = order["id"].as_str().unwrap_or_default();
        assert_eq!(
            captures.get(id),
            Some(&1),
            "confirmed order {id} is charged once"
        );
    }

    // Stock conserved: what is left plus what confirmed orders took. A create
    // the order service took during the election may be answered only now,
    // after its client gave up and after the wait above: its order is then
    // recorded, and its stock reserved, late. So orders and stock are read
    // until ORDER did not change around the stock's read (a reservation
    // follows its order's `created`, so none can hide from the count).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (stock, confirmed_units) = loop {
        let order_last = testkit::stream_state(&js, "ORDER").await.last_sequence;
        let mut orders: HashMap<String, Value> = HashMap::new();
        for (_, event) in stream_events(&js, "ORDER").await {
            if let Some(id) = event["order"]["id"].as_str() {
                orders.insert(id.to_string(), event["order"].clone());
            }
        }
        let open = orders
            .values()
            .filter(|o| !matches!(o["status"].as_str(), Some("confirmed" | "cancelled")))
            .count();
        let confirmed_units: i64 = orders
            .values()
            .filter(|o| o["status"] == "confirmed")
            .flat_map(|o| o["items"].as_array().cloned().unwrap_or_default())
            .map(|line| line["quantity"].as_i64().unwrap_or(0))
            .sum();
        let product_last = testkit::stream_state(&js, "PRODUCT").await.last_sequence;
        let product = req(
            &client,
            "product.get",
            &admin,
            json!({"id": PRODUCT, "min_revision": product_last}),
        )
        .await;
        assert!(product.is_ok(), "{:?}", product.error);
        let stock = product.body["stock"].as_i64().unwrap();
        let order_after = testkit::stream_state(&js, "ORDER").await.last_sequence;
        if open == 0 && order_after == order_last {
            println!(
                "ORDER holds {} orders ({confirmed_units} units confirmed); the wait for final orders saw {}",
                orders.len(),
                final_orders.len()
            );
            if stock + confirmed_units != INITIAL_STOCK {
                println!(
                    "product.get (min_revision {product_last}) answered stock {stock} at revision {}",
                    product.body["revision"]
                );
                explain_with_invariants(&js, &acked).await;
            }
            break (stock, confirmed_units);
        }
        assert!(
            Instant::now() < deadline,
            "ORDER kept changing: {open} orders open, last sequence {order_last} then {order_after}"
        );
        println!(
            "ORDER changed around the stock's read ({open} open, {order_last} -> {order_after}): a create answered late; reading again"
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), confirmed_rx.recv()).await;
    };
    assert_eq!(
        stock + confirmed_units,
        INITIAL_STOCK,
        "stock {stock} + confirmed {confirmed_units}"
    );

    // The restarted node's replica of ORDER catches up with the leader's.
    let leader_last = testkit::stream_state(&js, "ORDER").await.last_sequence;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let replica = shop
            .cluster
            .replica_last_sequence(victim, "ORDER")
            .await
            .unwrap();
        if replica == Some(leader_last) {
            println!("{leader}'s ORDER replica caught up at {leader_last}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{leader}'s ORDER replica at {replica:?}, the leader at {leader_last}"
        );
        // Raft catch-up happens inside the servers: check again shortly.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The services' consumers still deliver: an order placed now is
    // confirmed (order saga, payment) and its notification is sent.
    let mut notifications = client
        .subscribe("events.notification.sent.>")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let (user, token) = users[0].clone();
    let after = req(
        &client,
        "order.create",
        &token,
        json!({"user_id": user, "items": [{"product_id": PRODUCT, "quantity": 1}], "payment_token": "tok_ok", "idempotency_key": "after-restart"}),
    )
    .await;
    assert!(after.is_ok(), "{:?}", after.error);
    let after_id = after.body["id"].as_str().unwrap().to_string();
    let notified = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = notifications.next().await {
            if String::from_utf8_lossy(&message.payload).contains(&after_id) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        notified,
        Ok(true),
        "a notification for {after_id}, placed after the restart"
    );

    // Every instance is still the one started at the beginning, and registered.
    for process in &mut shop.processes {
        assert!(
            process.pid().is_some(),
            "{} is running",
            process.instance_id
        );
    }
    let registry = shop_nats::discovery::Registry::existing(&js)
        .await
        .unwrap()
        .unwrap();
    let live: HashSet<String> = registry
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    for process in &shop.processes {
        assert!(
            live.contains(&process.instance_id),
            "{} is in the registry: {live:?}",
            process.instance_id
        );
    }

    // The pause, as measured here.
    let window = |a: &Attempt| {
        a.sent + Duration::from_secs(2) >= killed_at && a.sent <= killed_at + LEADER_DOWN
    };
    let mut around: Vec<Duration> = attempts
        .iter()
        .filter(|a| window(a))
        .map(|a| a.latency)
        .collect();
    around.sort();
    let mut steady: Vec<Duration> = attempts
        .iter()
        .filter(|a| a.sent + Duration::from_secs(1) < killed_at)
        .map(|a| a.latency)
        .collect();
    steady.sort();
    let times: Vec<Duration> = confirmed_at
        .values()
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let (gap, gap_from) = times
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap_or_default();
    println!(
        "FAILOVER rate={rate}/s kill at {:.1}s: order.create before the kill p50 {} p99 {}; from 2 s before to {} s after the kill ({} requests) p99 {} max {}; longest gap between confirmations {} (from {:.1} s); {} confirmations seen; test took {:.0} s",
        killed_at.as_secs_f64(),
        ms(percentile(&steady, 50.0)),
        ms(percentile(&steady, 99.0)),
        LEADER_DOWN.as_secs(),
        around.len(),
        ms(percentile(&around, 99.0)),
        ms(around.last().copied().unwrap_or_default()),
        ms(gap),
        gap_from.as_secs_f64(),
        times.len(),
        started.elapsed().as_secs_f64()
    );
    observer.abort();
}

/// Receives confirmations until `until`.
async fn drain_until(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Duration)>,
    confirmed_at: &mut BTreeMap<String, Duration>,
    until: Instant,
) {
    while let Ok(Some((id, at))) = tokio::time::timeout_at(until.into(), rx.recv()).await {
        confirmed_at.entry(id).or_insert(at);
    }
}

fn tokio_util_stop() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}
