//! Group commit against a real nats-server and real sled files: concurrent
//! writes to one aggregate share appends and none is lost, two instances
//! racing on one aggregate stay exact, a refused item does not fail its group,
//! and a caller that gives up does not cancel the write it queued.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, stream};
use ractor::Actor;
use serde::{Deserialize, Serialize};
use shop_actors::{
    metrics::Metrics,
    state::{StateActor, StateShared},
    ApplyError, Change, Committed, Decided, Event, EventLog, GroupCommit, GroupWrite, Projection,
    Store, StoredEvent,
};
use shop_nats::{NatsConfig, ServiceError, TraceContext};
use testkit::NatsServer;

/// A counter: each event adds `adds` to `total`, in order.
#[derive(Serialize, Deserialize)]
struct Added {
    id: String,
    adds: Vec<u64>,
    total: u64,
}

impl Event for Added {
    fn type_name(&self) -> &'static str {
        "added"
    }
}

/// Stores `(total, revision)` under the counter's id.
struct Counters;

impl Projection for Counters {
    fn apply(&self, event: &StoredEvent<'_>, batch: &mut sled::Batch) -> Result<(), ApplyError> {
        let added: Added = event.decode()?;
        event.check_aggregate(&added.id)?;
        let mut value = added.total.to_be_bytes().to_vec();
        value.extend(event.sequence.to_be_bytes());
        batch.insert(added.id.as_bytes(), value);
        Ok(())
    }
}

fn counter(tree: &sled::Tree, id: &str) -> (u64, u64) {
    tree.get(id)
        .unwrap()
        .map(|v| {
            let (total, revision) = v.split_at(8);
            (
                u64::from_be_bytes(total.try_into().unwrap()),
                u64::from_be_bytes(revision.try_into().unwrap()),
            )
        })
        .unwrap_or((0, 0))
}

/// An amount whose decision panics (a bug in a service's decision).
const PANICS: u64 = 1_000_013;

/// Adds each item to the counter; 0 is refused (400), [`PANICS`] panics.
/// Answers the total after the item.
struct Adder;

impl GroupWrite for Adder {
    type Item = u64;
    type Event = Added;
    type Outcome = u64;

    fn decide(
        &self,
        tree: &sled::Tree,
        id: &str,
        items: &[u64],
    ) -> Result<Decided<Added, u64>, ServiceError> {
        let (mut total, revision) = counter(tree, id);
        let mut adds = Vec::new();
        let outcomes = items
            .iter()
            .map(|&n| {
                assert_ne!(n, PANICS, "unlucky");
                if n == 0 {
                    return Err(ServiceError::bad_request("nothing to add"));
                }
                total += n;
                adds.push(n);
                Ok(total)
            })
            .collect();
        Ok(Decided {
            change: (!adds.is_empty()).then(|| Change {
                subject: format!("events.counter.{id}"),
                expected_revision: revision,
                event: Added {
                    id: id.to_string(),
                    adds,
                    total,
                },
            }),
            revision,
            msg_id: None,
            outcomes,
        })
    }
}

struct Instance {
    commit: Arc<GroupCommit<Adder>>,
    shared: Arc<StateShared>,
    _dir: tempfile::TempDir,
}

impl Instance {
    async fn start(nats: &NatsServer, name: &str, max_group: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = NatsConfig {
            creds: nats.operator_creds(),
            ..NatsConfig::with_url(nats.url())
        };
        let connection = shop_nats::connect(&config, "operator", name).await.unwrap();
        let js = jetstream::new(connection.client.clone());
        let shared = StateShared::new(
            js.clone(),
            "COUNTERS".into(),
            Store::open(dir.path(), "counters").unwrap(),
            Arc::new(Counters),
            Metrics::new("counters", name).unwrap(),
            connection,
        )
        .unwrap();
        let (_, handle) = Actor::spawn(None, StateActor, shared.clone())
            .await
            .unwrap();
        tokio::spawn(handle);
        let log = EventLog::new(js, shared.clone(), vec!["events.counter.*".into()]);
        Self {
            commit: GroupCommit::new(log, Adder, max_group),
            shared,
            _dir: dir,
        }
    }

    fn add(
        &self,
        id: &'static str,
        n: u64,
    ) -> impl std::future::Future<Output = Result<Committed<u64>, ServiceError>> {
        let commit = self.commit.clone();
        async move { commit.submit(id, &TraceContext::new_root(), n).await }
    }

    async fn counter_at(&self, id: &str, revision: u64) -> (u64, u64) {
        self.shared
            .handle()
            .wait_for(revision, Duration::from_secs(5))
            .await
            .unwrap();
        counter(self.shared.store.tree(), id)
    }
}

async fn counters_stream() -> (NatsServer, jetstream::stream::Stream) {
    let nats = NatsServer::start().await.unwrap();
    let js = jetstream::new(nats.client().await.unwrap());
    let stream = js
        .create_stream(stream::Config {
            name: "COUNTERS".into(),
            subjects: vec!["events.counter.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    (nats, stream)
}

async fn events_in(stream: &mut jetstream::stream::Stream) -> u64 {
    stream.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_appends_and_none_is_lost() {
    let (nats, mut stream) = counters_stream().await;
    let instance = Instance::start(&nats, "counters-1", 64).await;
    let tasks: Vec<_> = (1..=300u64)
        .map(|n| tokio::spawn(instance.add("c", n)))
        .collect();
    let mut totals = Vec::new();
    let mut last_revision = 0;
    let mut largest_group = 0;
    for task in tasks {
        let committed = task.await.unwrap().unwrap();
        totals.push(committed.outcome);
        last_revision = last_revision.max(committed.revision);
        largest_group = largest_group.max(committed.group_size);
    }
    let sum: u64 = (1..=300).sum();
    assert_eq!(instance.counter_at("c", last_revision).await.0, sum);
    // Each caller saw the running total after its own add: all distinct, the
    // largest one the final sum.
    totals.sort_unstable();
    totals.dedup();
    assert_eq!(totals.len(), 300);
    assert_eq!(totals.last(), Some(&sum));
    let events = events_in(&mut stream).await;
    assert!(
        events < 300 && largest_group > 1,
        "300 writes made {events} appends (largest group {largest_group}): none were grouped"
    );
    assert!(largest_group <= 64, "a group of {largest_group} > max 64");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_racing_on_one_aggregate_stay_exact() {
    let (nats, _stream) = counters_stream().await;
    let a = Instance::start(&nats, "counters-a", 16).await;
    let b = Instance::start(&nats, "counters-b", 16).await;
    let tasks: Vec<_> = (1..=200u64)
        .map(|n| {
            let instance = if n % 2 == 0 { &a } else { &b };
            tokio::spawn(instance.add("shared", n))
        })
        .collect();
    let mut last_revision = 0;
    for task in tasks {
        let committed = task.await.unwrap().unwrap();
        last_revision = last_revision.max(committed.revision);
    }
    let sum: u64 = (1..=200).sum();
    assert_eq!(a.counter_at("shared", last_revision).await.0, sum);
    assert_eq!(b.counter_at("shared", last_revision).await.0, sum);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_item_fails_alone() {
    let (nats, _stream) = counters_stream().await;
    let instance = Instance::start(&nats, "counters-1", 64).await;
    let tasks: Vec<_> = [5, 0, 7, 0, 11]
        .into_iter()
        .map(|n| tokio::spawn(instance.add("r", n)))
        .collect();
    let mut refused = 0;
    let mut last_revision = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(committed) => last_revision = last_revision.max(committed.revision),
            Err(e) => {
                assert_eq!(e.code, 400, "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 2);
    assert_eq!(instance.counter_at("r", last_revision).await.0, 23);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_does_not_cancel_its_write() {
    let (nats, _stream) = counters_stream().await;
    let instance = Instance::start(&nats, "counters-1", 64).await;
    // Polled once, the write is queued; then its caller drops it.
    {
        let abandoned = instance.add("d", 40);
        tokio::pin!(abandoned);
        assert!(futures::poll!(abandoned.as_mut()).is_pending());
    }
    // A later write still goes through, and sees the abandoned one's effect.
    let committed = instance.add("d", 2).await.unwrap();
    assert_eq!(committed.outcome, 42);
    assert_eq!(instance.counter_at("d", committed.revision).await.0, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_that_panics_fails_its_group_and_the_aggregate_goes_on() {
    let (nats, _stream) = counters_stream().await;
    let instance = Instance::start(&nats, "counters-1", 64).await;
    let failed = instance.add("p", PANICS).await.unwrap_err();
    assert_eq!(failed.code, 500, "{failed}");
    assert!(failed.message.contains("unlucky"), "{failed}");
    // The aggregate's driver is still there: later writes go through.
    let tasks: Vec<_> = [1, 2, 3]
        .into_iter()
        .map(|n| tokio::spawn(instance.add("p", n)))
        .collect();
    let mut last_revision = 0;
    for task in tasks {
        let committed = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("a write after the panic was answered")
            .unwrap()
            .unwrap();
        last_revision = last_revision.max(committed.revision);
    }
    assert_eq!(instance.counter_at("p", last_revision).await.0, 6);
}
