//! The gateway's own entry in the `registry` bucket (service `gateway`, admin
//! address = its HTTP address, so `shop status` and `shop prometheus-targets`
//! find its `/health` and `/metrics`): refreshed by heartbeat, deleted on a
//! clean stop.

use std::sync::Arc;

use shop_nats::discovery::{InstanceInfo, Registry, HEARTBEAT_INTERVAL};
use tokio::sync::Mutex;

/// A registered gateway instance.
pub struct Registration {
    registry: Registry,
    info: InstanceInfo,
    /// Set once deregistered, so no heartbeat re-creates the entry.
    stopped: Arc<Mutex<bool>>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Registration {
    /// Registers `info` now and keeps it fresh until [`Registration::deregister`].
    /// Each beat names the NATS server `nats` is connected to (`nats_server`).
    pub async fn start(registry: Registry, info: InstanceInfo, nats: async_nats::Client) -> Self {
        let stopped = Arc::new(Mutex::new(false));
        beat(&registry, &info, &stopped, &nats).await;
        let heartbeat = {
            let (registry, info, stopped) = (registry.clone(), info.clone(), stopped.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(HEARTBEAT_INTERVAL);
                every.tick().await;
                loop {
                    every.tick().await;
                    beat(&registry, &info, &stopped, &nats).await;
                }
            })
        };
        Self {
            registry,
            info,
            stopped,
            heartbeat,
        }
    }

    /// Deletes the entry for good.
    pub async fn deregister(self) {
        shop_actors::registry::deregister(&self.registry, &self.info, &self.stopped).await;
        self.heartbeat.abort();
    }
}

async fn beat(
    registry: &Registry,
    info: &InstanceInfo,
    stopped: &Mutex<bool>,
    nats: &async_nats::Client,
) {
    let stopped = stopped.lock().await;
    if *stopped {
        return;
    }
    let mut info = info.clone();
    let server = nats.server_info().server_name;
    info.nats_server = (!server.is_empty()).then_some(server);
    if let Err(e) = registry.register(&info).await {
        tracing::warn!(key = %info.key(), error = %e, "registry heartbeat failed");
    }
}
