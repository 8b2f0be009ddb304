//! The registry actor: keeps this instance's entry in the `registry` bucket
//! fresh. A crash stops the heartbeat and the entry expires; a clean stop
//! deletes it (see [`crate::service`]).

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use shop_nats::discovery::{InstanceInfo, Registry, HEARTBEAT_INTERVAL};
use tokio::sync::Mutex;

#[derive(Clone, Copy)]
pub struct RegistryActor;

pub struct RegistryArgs {
    /// This instance's connection: each heartbeat names the server it is on.
    pub nats: async_nats::Client,
    pub registry: Registry,
    pub info: InstanceInfo,
    /// Set to true (under the lock) at shutdown, so no heartbeat lands after deregistration.
    pub stopped: Arc<Mutex<bool>>,
}

pub enum RegistryMsg {
    Heartbeat,
}

pub struct RegistryState {
    args: RegistryArgs,
    timer: tokio::task::JoinHandle<()>,
}

impl Actor for RegistryActor {
    type Msg = RegistryMsg;
    type State = RegistryState;
    type Arguments = RegistryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RegistryArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        heartbeat(&args).await;
        let timer = myself.send_interval(HEARTBEAT_INTERVAL, || RegistryMsg::Heartbeat);
        Ok(RegistryState { args, timer })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        RegistryMsg::Heartbeat: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        heartbeat(&state.args).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.timer.abort();
        Ok(())
    }
}

async fn heartbeat(args: &RegistryArgs) {
    let stopped = args.stopped.lock().await;
    if *stopped {
        return;
    }
    let mut info = args.info.clone();
    let server = args.nats.server_info().server_name;
    info.nats_server = (!server.is_empty()).then_some(server);
    if let Err(e) = args.registry.register(&info).await {
        tracing::warn!(key = %args.info.key(), error = %e, "registry heartbeat failed");
    }
}

/// Deregisters this instance for good: no heartbeat can re-create the entry afterwards.
pub async fn deregister(registry: &Registry, info: &InstanceInfo, stopped: &Mutex<bool>) {
    let mut stopped = stopped.lock().await;
    *stopped = true;
    match registry.deregister(&info.service, &info.instance_id).await {
        Ok(()) => tracing::info!(key = %info.key(), "deregistered"),
        Err(e) => {
            tracing::warn!(key = %info.key(), error = %e, "deregistering failed; the entry will expire")
        }
    }
}
