//! Group commit: writes to one aggregate that arrive while an append for it is
//! in flight wait, then are decided together and stored as **one** event.
//!
//! With `sync_interval: always` every append is an fsync, and one stream syncs
//! its appends one after another; a hot aggregate (a product everyone orders)
//! then caps its writes at the stream's fsync rate. Grouping keeps the
//! per-aggregate order and the expected-revision check, and turns n waiting
//! writes into one append.
//!
//! Each aggregate with work has one driver task: it takes up to `max_group`
//! waiting items, asks [`GroupWrite::decide`] for the change and each item's
//! outcome, appends (through [`EventLog::write`], so conflicts with other
//! instances catch up and decide again), answers every item, and repeats until
//! nothing waits. The driver is spawned, so a caller that gives up (its future
//! dropped) never cancels the others' write: its item is still decided and
//! stored, and only its answer goes unread.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
};

use futures::FutureExt;

use shop_nats::{ServiceError, TraceContext};
use tokio::sync::oneshot;

use crate::eventlog::{Change, Event, EventLog, Written};

/// How a service decides a group of writes to one aggregate.
pub trait GroupWrite: Send + Sync + 'static {
    /// One caller's request.
    type Item: Send + Sync + 'static;
    /// What is appended for the whole group.
    type Event: Event + Send + 'static;
    /// What each caller is answered (before the revision is known).
    type Outcome: Send + 'static;

    /// Decides `items`, in order, against the aggregate as `tree` has it: the
    /// one change to append (if any) and one outcome per item. An `Err` fails
    /// the whole group (every caller gets it).
    fn decide(
        &self,
        tree: &sled::Tree,
        aggregate: &str,
        items: &[Self::Item],
    ) -> Result<Decided<Self::Event, Self::Outcome>, ServiceError>;

    /// Whether the local state should catch up with the stream before
    /// deciding (e.g. the aggregate is not known here yet).
    fn needs_catch_up(&self, _tree: &sled::Tree, _aggregate: &str) -> bool {
        false
    }
}

/// A group's decision.
pub struct Decided<E, O> {
    /// The event to append, `None` when no item changes anything.
    pub change: Option<Change<E>>,
    /// The aggregate's revision the decision was made on (answered when
    /// nothing is appended).
    pub revision: u64,
    /// Deduplication id; `None`: a fresh one. Only a group of one can name
    /// its request's own id.
    pub msg_id: Option<String>,
    /// One per item, in the items' order.
    pub outcomes: Vec<Result<O, ServiceError>>,
}

/// What one caller gets: its outcome and the aggregate's revision after its
/// group (the appended event's, or the current one when nothing changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<O> {
    pub outcome: O,
    pub revision: u64,
    /// How many callers shared the append.
    pub group_size: usize,
}

type Reply<O> = oneshot::Sender<Result<Committed<O>, ServiceError>>;

struct Waiting<W: GroupWrite> {
    item: W::Item,
    trace: TraceContext,
    reply: Reply<W::Outcome>,
}

/// Attempts of a group whose append came back as a duplicate before its
/// callers are told to retry (each attempt first waits for the local state).
const DUPLICATE_ATTEMPTS: usize = 3;

/// Groups concurrent writes per aggregate (see the module docs).
pub struct GroupCommit<W: GroupWrite> {
    log: EventLog,
    writer: Arc<W>,
    max_group: usize,
    /// Aggregates with a running driver, and what waits for it.
    waiting: Mutex<Queues<W>>,
}

/// Per aggregate with a running driver: the writes waiting for it.
type Queues<W> = HashMap<String, Vec<Waiting<W>>>;

impl<W: GroupWrite> GroupCommit<W> {
    /// Groups writes through `log`, at most `max_group` items per append.
    pub fn new(log: EventLog, writer: W, max_group: usize) -> Arc<Self> {
        Arc::new(Self {
            log,
            writer: Arc::new(writer),
            max_group: max_group.max(1),
            waiting: Mutex::default(),
        })
    }

    /// Submits one write to `aggregate` and waits for its group's outcome.
    pub async fn submit(
        self: &Arc<Self>,
        aggregate: &str,
        trace: &TraceContext,
        item: W::Item,
    ) -> Result<Committed<W::Outcome>, ServiceError> {
        let (reply, answer) = oneshot::channel();
        let start_driver = {
            let mut waiting = self.lock()?;
            let start = !waiting.contains_key(aggregate);
            waiting
                .entry(aggregate.to_string())
                .or_default()
                .push(Waiting {
                    item,
                    trace: trace.clone(),
                    reply,
                });
            start
        };
        if start_driver {
            tokio::spawn(self.clone().drive(aggregate.to_string()));
        }
        answer.await.map_err(|_| {
            ServiceError::unavailable(format!("the write to {aggregate} was abandoned; retry"))
        })?
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Queues<W>>, ServiceError> {
        self.waiting
            .lock()
            .map_err(|_| ServiceError::internal("group commit queue poisoned"))
    }

    /// The next group for `aggregate`, or `None` (and the driver's entry
    /// removed, under the same lock) when nothing waits.
    fn next_group(&self, aggregate: &str) -> Option<Vec<Waiting<W>>> {
        let mut waiting = self.lock().ok()?;
        if waiting.get(aggregate).is_none_or(Vec::is_empty) {
            waiting.remove(aggregate);
            return None;
        }
        let queue = waiting.get_mut(aggregate)?;
        let take = queue.len().min(self.max_group);
        Some(queue.drain(..take).collect())
    }

    async fn drive(self: Arc<Self>, aggregate: String) {
        while let Some(group) = self.next_group(&aggregate) {
            let (items, replies): (Vec<_>, Vec<_>) = group
                .into_iter()
                .map(|w| (w.item, (w.reply, w.trace)))
                .unzip();
            let trace = replies[0].1.clone();
            let group_size = items.len();
            // A panic in the service's decision fails its group only: the
            // driver lives on, so the aggregate's later writes still have one.
            let written = AssertUnwindSafe(self.write_group(&aggregate, &trace, &items))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let why = crate::responder::panic_message(&*panic);
                    tracing::error!(aggregate, panic = %why, "deciding a group of writes panicked");
                    Err(ServiceError::internal(format!(
                        "writing {aggregate} failed: {why}"
                    )))
                });
            match written {
                Ok((outcomes, revision)) => {
                    for (outcome, (reply, _)) in outcomes.into_iter().zip(replies) {
                        let _ = reply.send(outcome.map(|outcome| Committed {
                            outcome,
                            revision,
                            group_size,
                        }));
                    }
                }
                Err(e) => {
                    for (reply, _) in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// Decides and appends one group; each item's outcome and the revision after it.
    async fn write_group(
        &self,
        aggregate: &str,
        trace: &TraceContext,
        items: &[W::Item],
    ) -> Result<(Vec<Result<W::Outcome, ServiceError>>, u64), ServiceError> {
        if self
            .writer
            .needs_catch_up(self.log.state().tree(), aggregate)
        {
            self.log.catch_up().await?;
        }
        for _ in 0..DUPLICATE_ATTEMPTS {
            let mut decided = None;
            let mut revision = 0;
            let fresh_id = EventLog::new_msg_id();
            let written = self
                .log
                .write(aggregate, trace, |state| {
                    let decision = self.writer.decide(state.tree(), aggregate, items)?;
                    revision = decision.revision;
                    let append = match decision.change {
                        Some(change) => Some(
                            change
                                .to_append(decision.msg_id.unwrap_or_else(|| fresh_id.clone()))?,
                        ),
                        None => None,
                    };
                    decided = Some(decision.outcomes);
                    Ok(append)
                })
                .await?;
            let outcomes = decided.ok_or_else(|| ServiceError::internal("group not decided"))?;
            if outcomes.len() != items.len() {
                return Err(ServiceError::internal(format!(
                    "group of {} decided {} outcomes",
                    items.len(),
                    outcomes.len()
                )));
            }
            match written {
                Written::Unchanged => return Ok((outcomes, revision)),
                Written::Appended(appended) if !appended.duplicate => {
                    return Ok((outcomes, appended.revision))
                }
                // A retried request whose first try is stored: decide again
                // against the state that now holds it.
                Written::Appended(_) => continue,
            }
        }
        Err(ServiceError::unavailable(format!(
            "the write to {aggregate} is not applied locally yet; retry"
        )))
    }
}
