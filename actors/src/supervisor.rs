//! The service supervisor: restarts a crashed child with exponential backoff,
//! within a restart budget. Past the budget the service is declared failed and
//! the process exits non-zero, so its process manager restarts it whole.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// Starts one child, linked to the supervisor cell it is given.
pub type StartFn =
    Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, String>> + Send + Sync>;

/// A supervised child: a name for logs and metrics, and how to (re)start it.
#[derive(Clone)]
pub struct ChildSpec {
    pub name: String,
    pub start: StartFn,
}

#[derive(Debug, Clone, Copy)]
pub struct RestartPolicy {
    /// Restarts allowed within `window` before the service gives up.
    pub max_restarts: usize,
    pub window: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            max_restarts: 10,
            window: Duration::from_secs(60),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

pub struct SupervisorArgs {
    pub policy: RestartPolicy,
    pub metrics: Metrics,
    /// Receives one message when the restart budget is exhausted.
    pub fatal: mpsc::UnboundedSender<String>,
}

pub enum SupervisorMsg {
    /// Start a child now (and restart it whenever it dies).
    Start(ChildSpec, ractor::RpcReplyPort<Result<(), String>>),
    Restart(String),
    /// Stop restarting: the service is shutting down.
    ShuttingDown,
}

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    restarts: u32,
}

pub struct SupervisorState {
    args: SupervisorArgs,
    children: HashMap<String, Child>,
    recent_restarts: VecDeque<Instant>,
    stopping: bool,
}

pub struct ServiceSupervisor;

impl Actor for ServiceSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            args,
            children: HashMap::new(),
            recent_restarts: VecDeque::new(),
            stopping: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Start(spec, reply) => {
                let result = (spec.start)(myself.get_cell()).await;
                let outcome = result.as_ref().map(|_| ()).map_err(Clone::clone);
                state.children.insert(
                    spec.name.clone(),
                    Child {
                        cell: result.ok(),
                        spec,
                        restarts: 0,
                    },
                );
                let _ = reply.send(outcome);
            }
            SupervisorMsg::Restart(name) => {
                if state.stopping {
                    return Ok(());
                }
                let Some(child) = state.children.get_mut(&name) else {
                    return Ok(());
                };
                match (child.spec.start)(myself.get_cell()).await {
                    Ok(cell) => {
                        tracing::info!(actor = %name, "actor restarted");
                        child.cell = Some(cell);
                    }
                    Err(e) => {
                        tracing::error!(actor = %name, error = %e, "actor restart failed");
                        schedule_restart(&myself, state, &name);
                    }
                }
            }
            SupervisorMsg::ShuttingDown => state.stopping = true,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, format!("stopped: {}", reason.unwrap_or_default()))
            }
            _ => return Ok(()),
        };
        let Some(name) = state
            .children
            .iter()
            .find(|(_, c)| c.cell.as_ref().map(|c| c.get_id()) == Some(cell.get_id()))
            .map(|(name, _)| name.clone())
        else {
            return Ok(());
        };
        if let Some(child) = state.children.get_mut(&name) {
            child.cell = None;
        }
        if state.stopping {
            tracing::debug!(actor = %name, reason, "actor ended during shutdown");
            return Ok(());
        }
        tracing::error!(actor = %name, reason, "supervised actor ended; restarting");
        schedule_restart(&myself, state, &name);
        Ok(())
    }
}

fn schedule_restart(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState, name: &str) {
    let now = Instant::now();
    let policy = state.args.policy;
    while state
        .recent_restarts
        .front()
        .is_some_and(|t| now.duration_since(*t) > policy.window)
    {
        state.recent_restarts.pop_front();
    }
    if state.recent_restarts.len() >= policy.max_restarts {
        let reason = format!(
            "restart budget exhausted: {} restarts within {:?}, last by {name}",
            state.recent_restarts.len(),
            policy.window
        );
        tracing::error!(reason, "service failing");
        state.stopping = true;
        let _ = state.args.fatal.send(reason);
        return;
    }
    state.recent_restarts.push_back(now);
    state
        .args
        .metrics
        .actor_restarts
        .with_label_values(&[name])
        .inc();
    let Some(child) = state.children.get_mut(name) else {
        return;
    };
    let backoff = policy
        .initial_backoff
        .saturating_mul(1 << child.restarts.min(10))
        .min(policy.max_backoff);
    child.restarts = child.restarts.saturating_add(1);
    let name = name.to_string();
    myself.send_after(backoff, move || SupervisorMsg::Restart(name));
}
