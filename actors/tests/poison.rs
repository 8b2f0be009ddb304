//! The state actor against a real nats-server and real sled files: events it
//! cannot apply are parked once, counted and skipped, on a running instance and
//! on one rebuilding from the stream; a failure that may pass is retried and
//! never skipped.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use ractor::Actor;
use shop_actors::{
    eventlog::Written,
    metrics::Metrics,
    parking::PARKED_STREAM,
    state::{StateActor, StateShared},
    Append, ApplyError, EventLog, Projection, Store, StoredEvent,
};
use shop_nats::{NatsConfig, TraceContext};
use testkit::NatsServer;

/// Stores `{"id": ..., "n": ...}` under its id. `flaky` fails (transiently)
/// the first `flaky_failures` times it is seen.
struct Items {
    flaky_failures: usize,
    flaky_seen: AtomicUsize,
}

#[derive(serde::Deserialize)]
struct Item {
    id: String,
    n: u64,
}

impl Projection for Items {
    fn apply(&self, event: &StoredEvent<'_>, batch: &mut sled::Batch) -> Result<(), ApplyError> {
        let item: Item = event.decode()?;
        event.check_aggregate(&item.id)?;
        if item.id == "flaky"
            && self.flaky_seen.fetch_add(1, Ordering::SeqCst) < self.flaky_failures
        {
            return Err(ApplyError::Transient("store busy".into()));
        }
        batch.insert(item.id.as_bytes(), &item.n.to_be_bytes());
        Ok(())
    }
}

struct Instance {
    shared: Arc<StateShared>,
    metrics: Metrics,
    actor: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Instance {
    /// A state actor on an empty store, tailing `ITEMS` from its start.
    async fn start(nats: &NatsServer, flaky_failures: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = NatsConfig {
            creds: nats.operator_creds(),
            ..NatsConfig::with_url(nats.url())
        };
        let connection = shop_nats::connect(&config, "operator", "items")
            .await
            .unwrap();
        let js = jetstream::new(connection.client.clone());
        let metrics = Metrics::new("items", "items-1").unwrap();
        let shared = StateShared::new(
            js,
            "ITEMS".into(),
            Store::open(dir.path(), "items").unwrap(),
            Arc::new(Items {
                flaky_failures,
                flaky_seen: AtomicUsize::new(0),
            }),
            metrics.clone(),
            connection,
        )
        .unwrap();
        let (_, handle) = Actor::spawn(None, StateActor, shared.clone())
            .await
            .unwrap();
        let actor = tokio::spawn(async move {
            let _ = handle.await;
        });
        Self {
            shared,
            metrics,
            actor,
            _dir: dir,
        }
    }

    /// Waits (at most 5 s) until the state has applied `revision`.
    async fn caught_up(&self, revision: u64) -> Result<(), shop_nats::ServiceError> {
        self.shared
            .handle()
            .wait_for(revision, Duration::from_secs(5))
            .await
    }

    fn value(&self, id: &str) -> Option<u64> {
        self.shared
            .store
            .tree()
            .get(id)
            .unwrap()
            .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap()))
    }

    fn parked(&self, reason: &str) -> u64 {
        self.metrics
            .state_events_parked
            .with_label_values(&[reason])
            .get()
    }
}

/// A nats-server with the empty stream `ITEMS` on `events.item.>`.
async fn items_stream() -> (NatsServer, jetstream::Context) {
    let nats = NatsServer::start().await.unwrap();
    let js = jetstream::new(nats.client().await.unwrap());
    js.create_stream(stream::Config {
        name: "ITEMS".into(),
        subjects: vec!["events.item.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    (nats, js)
}

async fn publish(js: &jetstream::Context, subject: &str, payload: &'static [u8]) -> u64 {
    js.publish(subject.to_string(), payload.into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_parked_once_and_skipped_by_every_instance() {
    let (nats, js) = items_stream().await;
    publish(&js, "events.item.a", br#"{"id":"a","n":1}"#).await;
    let running = Instance::start(&nats, 0).await;
    running.caught_up(1).await.unwrap();

    // Junk, then a forged event for `a` under `b`'s subject, then a good one.
    let junk = publish(&js, "events.item.junk", b"\x00\xff not an item").await;
    let forged = publish(&js, "events.item.b", br#"{"id":"a","n":99}"#).await;
    let good = publish(&js, "events.item.c", br#"{"id":"c","n":3}"#).await;
    running
        .caught_up(good)
        .await
        .expect("the state moved past the poison");
    assert_eq!(
        running.value("a"),
        Some(1),
        "not overwritten by the forged event"
    );
    assert_eq!(running.value("b"), None);
    assert_eq!(running.value("c"), Some(3));
    assert_eq!(running.parked("undecodable"), 1);
    assert_eq!(running.parked("wrong_aggregate"), 1);
    assert!(!running.actor.is_finished(), "the state actor keeps going");

    // A new instance rebuilds from the stream's start, past the same events.
    let rebuilt = Instance::start(&nats, 0).await;
    rebuilt
        .caught_up(good)
        .await
        .expect("catch-up moved past the poison");
    assert_eq!(
        (rebuilt.value("a"), rebuilt.value("b"), rebuilt.value("c")),
        (Some(1), None, Some(3))
    );
    assert_eq!(
        rebuilt.parked("undecodable") + rebuilt.parked("wrong_aggregate"),
        2
    );

    // Parked once each, whoever parked them, with where they came from and why.
    let mut parked = js.get_stream(PARKED_STREAM).await.unwrap();
    assert_eq!(parked.info().await.unwrap().state.messages, 2);
    for (sequence, subject, payload, why) in [
        (
            junk,
            "events.item.junk",
            &b"\x00\xff not an item"[..],
            "undecodable: not a Item: syntax error",
        ),
        (
            forged,
            "events.item.b",
            br#"{"id":"a","n":99}"#,
            "wrong aggregate: the event names a but its subject events.item.b names b",
        ),
    ] {
        let message = parked
            .get_last_raw_message_by_subject(&format!("parked.items.ITEMS.{sequence}"))
            .await
            .unwrap();
        assert_eq!(message.payload.as_ref(), payload);
        let header = |name: &str| message.headers.get(name).map(|v| v.to_string());
        assert_eq!(header("Shop-Original-Subject").as_deref(), Some(subject));
        assert_eq!(header("Shop-Original-Stream").as_deref(), Some("ITEMS"));
        assert_eq!(header("Shop-Original-Sequence"), Some(sequence.to_string()));
        let reason = header("Shop-Parked-Reason").unwrap();
        assert!(reason.starts_with(why), "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_that_may_pass_is_retried_and_never_skipped() {
    let (nats, js) = items_stream().await;
    let flaky = publish(&js, "events.item.flaky", br#"{"id":"flaky","n":7}"#).await;

    // Fails twice, then applies: within the actor's own retries.
    let retried = Instance::start(&nats, 2).await;
    retried.caught_up(flaky).await.unwrap();
    assert_eq!(retried.value("flaky"), Some(7));
    assert!(!retried.actor.is_finished());

    // Keeps failing: the actor fails (its supervisor restarts it) without
    // moving past the event or parking it.
    let mut failing = Instance::start(&nats, usize::MAX).await;
    tokio::time::timeout(Duration::from_secs(10), &mut failing.actor)
        .await
        .expect("the state actor failed")
        .unwrap();
    assert_eq!(failing.shared.handle().applied(), 0);
    assert_eq!(failing.value("flaky"), None);
    assert!(
        js.get_stream(PARKED_STREAM).await.is_err(),
        "nothing parked"
    );
    let mut messages = js
        .get_stream("ITEMS")
        .await
        .unwrap()
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();
    assert!(
        messages.next().await.is_some(),
        "the event is still in its stream"
    );
}

/// Poison on an aggregate's own subject would make every later write to it
/// conflict: an append expects past the events parked there, but never past
/// an event that was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_past_poison_on_their_subject_but_not_past_events() {
    let (nats, js) = items_stream().await;
    let a = publish(&js, "events.item.a", br#"{"id":"a","n":1}"#).await;
    let junk = publish(&js, "events.item.a", b"\x00\xff not an item").await;
    let instance = Instance::start(&nats, 0).await;
    instance.caught_up(junk).await.unwrap();
    let append = |expected: u64| Append {
        subject: "events.item.a".into(),
        event_type: "item",
        payload: br#"{"id":"a","n":2}"#.as_slice().into(),
        expected_revision: Some(expected),
        msg_id: EventLog::new_msg_id(),
    };

    // The revision an append decided on `decided` is sent with.
    let sent_with = |decided: u64| {
        let (shared, append) = (instance.shared.clone(), append(decided));
        async move {
            shared
                .expect_past_parked(&append.subject, append.expected_revision)
                .await
                .unwrap()
        }
    };
    assert_eq!(sent_with(a).await, Some(junk));

    // Through the write path: decided on `a`'s revision before the junk, the
    // append conflicts once, then lands after the junk.
    let events = EventLog::new(
        js.clone(),
        instance.shared.clone(),
        vec!["events.item.*".into()],
    );
    let written = events
        .write("a", &TraceContext::new_root(), |_| Ok(Some(append(a))))
        .await
        .unwrap();
    let Written::Appended(appended) = written else {
        panic!("nothing written: {written:?}");
    };
    assert_eq!(appended.revision, junk + 1);
    assert_eq!(instance.value("a"), Some(2));

    // Junk again, after an applied event: an append decided before that event
    // still conflicts (no lost update).
    let junk_again = publish(&js, "events.item.a", b"\x00\xff").await;
    instance.caught_up(junk_again).await.unwrap();
    assert_eq!(sent_with(a).await, Some(a), "not past the applied event");
    assert_eq!(sent_with(appended.revision).await, Some(junk_again));
}
