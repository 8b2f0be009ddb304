//! The bounded worker pool for slow work, built on ractor's factory.
//!
//! Capacity is `workers + queue_depth` jobs; a semaphore enforces it before a
//! job reaches the factory, so a saturated service answers 503 at once instead
//! of queueing without bound.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Instant};

use async_nats::Subject;
use futures::{future::BoxFuture, FutureExt};
use ractor::{
    factory::{
        queues::DefaultQueue, routing::QueuerRouting, worker_builder, Factory, FactoryArguments,
        FactoryMessage, FactoryRef, Job, Worker, WorkerId,
    },
    Actor, ActorProcessingErr, ActorRef,
};
use shop_nats::{Encoding, ServiceError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    metrics::Metrics,
    request::HandlerResult,
    responder::{panic_message, Responder},
};

/// A request handed to the pool: the handler's future, not yet polled.
pub struct PoolJob {
    pub endpoint: usize,
    pub work: BoxFuture<'static, HandlerResult>,
    pub encoding: Encoding,
    pub reply_to: Subject,
    pub started: Instant,
    /// Held while the job is queued or running.
    pub permit: Option<PoolSlot>,
}

/// A place in the pool; frees itself (and updates the busy gauge) when dropped.
pub struct PoolSlot {
    _permit: OwnedSemaphorePermit,
    busy: prometheus::IntGauge,
}

impl Drop for PoolSlot {
    fn drop(&mut self) {
        self.busy.dec();
    }
}

impl std::fmt::Debug for PoolJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolJob")
            .field("endpoint", &self.endpoint)
            .field("reply_to", &self.reply_to)
            .finish()
    }
}

type PoolFactory =
    Factory<(), PoolJob, (), PoolWorker, QueuerRouting<(), PoolJob>, DefaultQueue<(), PoolJob>>;

/// Handle to the pool; cheap to clone.
#[derive(Clone)]
pub struct WorkerPool {
    factory: ActorRef<FactoryMessage<(), PoolJob>>,
    permits: Arc<Semaphore>,
    capacity: usize,
    metrics: Metrics,
}

impl WorkerPool {
    pub async fn start(
        responder: Arc<Responder>,
        workers: usize,
        queue_depth: usize,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let workers = workers.max(1);
        let capacity = workers + queue_depth;
        let args = FactoryArguments::builder()
            .worker_builder(Box::new(worker_builder(move |_wid| {
                (
                    PoolWorker {
                        responder: responder.clone(),
                    },
                    (),
                )
            })))
            .queue(DefaultQueue::default())
            .router(QueuerRouting::default())
            .num_initial_workers(workers)
            .build();
        let (factory, _handle) = Actor::spawn(None, PoolFactory::default(), args)
            .await
            .map_err(|e| anyhow::anyhow!("starting worker pool: {e}"))?;
        metrics.pool_capacity.set(capacity as i64);
        Ok(Self {
            factory,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            metrics,
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Jobs queued or running.
    pub fn busy(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    /// Queues a job; when the pool is saturated, gives back the reply subject
    /// so the caller can answer 503.
    pub fn submit(&self, mut job: PoolJob) -> Result<(), Subject> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics.pool_rejected.inc();
            return Err(job.reply_to);
        };
        self.metrics.pool_busy.inc();
        job.permit = Some(PoolSlot {
            _permit: permit,
            busy: self.metrics.pool_busy.clone(),
        });
        let dispatched = FactoryRef::from(self.factory.clone()).dispatch((), job);
        match dispatched {
            Ok(()) => Ok(()),
            Err(err) => match *err {
                ractor::MessagingErr::SendErr(FactoryMessage::Dispatch(job)) => {
                    Err(job.msg.reply_to)
                }
                _ => {
                    tracing::error!("worker pool refused a job it did not return");
                    Ok(())
                }
            },
        }
    }

    /// Waits until no job is queued or running, up to `deadline`. True when idle.
    pub async fn wait_idle(&self, deadline: std::time::Duration) -> bool {
        let all = u32::try_from(self.capacity).unwrap_or(u32::MAX);
        match tokio::time::timeout(deadline, self.permits.acquire_many(all)).await {
            Ok(Ok(permits)) => {
                drop(permits);
                true
            }
            _ => false,
        }
    }

    pub fn stop(&self) {
        self.factory.stop(Some("service stopping".to_string()));
    }
}

/// A pool worker: runs one job at a time and sends its reply.
pub struct PoolWorker {
    responder: Arc<Responder>,
}

impl Worker for PoolWorker {
    type Key = ();
    type Message = PoolJob;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<(), PoolJob>>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _wid: WorkerId,
        _factory: &ActorRef<FactoryMessage<(), PoolJob>>,
        Job { msg: job, .. }: Job<(), PoolJob>,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let PoolJob {
            endpoint,
            work,
            encoding,
            reply_to,
            started,
            permit,
        } = job;
        let result = AssertUnwindSafe(work)
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let name = &self.responder.endpoints.list[endpoint].manifest.name;
                tracing::error!(endpoint = %name, panic = %panic_message(&*panic), "handler panicked");
                Err(ServiceError::internal("internal error while handling the request"))
            });
        self.responder
            .respond(endpoint, reply_to, encoding, started, result)
            .await;
        drop(permit);
        Ok(())
    }
}
