//! Which service instances are alive, kept locally from a watch of the
//! `registry` bucket, so a request to a service with no live instance is
//! refused at once instead of waiting for a timeout, and no request looks
//! anything up over the network.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        RwLock,
    },
    time::Duration,
};

use futures::StreamExt;
use shop_nats::{
    discovery::{InstanceInfo, Registry, RegistryEvent},
    ConnectionEvent,
};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::service::Service;

/// The live instances the registry lists, by registry key.
#[derive(Default)]
pub struct Liveness {
    live: [AtomicUsize; Service::ALL.len()],
    instances: RwLock<BTreeMap<String, InstanceInfo>>,
}

impl Liveness {
    /// Live instances of `service`: one atomic load.
    pub fn live(&self, service: Service) -> usize {
        self.live[service.index()].load(Ordering::Relaxed)
    }

    /// Every live instance (of any service, the gateway's own included).
    pub fn instances(&self) -> BTreeMap<String, InstanceInfo> {
        self.instances
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the view with a full listing.
    pub fn replace(&self, instances: Vec<InstanceInfo>) {
        let mut map = self
            .instances
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *map = instances.into_iter().map(|i| (i.key(), i)).collect();
        self.recount(&map);
    }

    /// Applies one change from the watch.
    pub fn apply(&self, event: RegistryEvent) {
        let mut map = self
            .instances
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match event {
            RegistryEvent::Up(info) => {
                let key = info.key();
                if !map.contains_key(&key) {
                    tracing::info!(key, "instance up");
                }
                map.insert(key, info);
            }
            RegistryEvent::Down { key } => {
                if map.remove(&key).is_some() {
                    tracing::info!(key, "instance down");
                }
            }
        }
        self.recount(&map);
    }

    fn recount(&self, map: &BTreeMap<String, InstanceInfo>) {
        for service in Service::ALL {
            let count = map
                .values()
                .filter(|info| info.service == service.name())
                .count();
            self.live[service.index()].store(count, Ordering::Relaxed);
        }
    }
}

/// Keeps `liveness` in step with the registry until `stop`: a full listing, then
/// the watch; both again after a reconnect (changes may have been missed) or
/// when the watch ends.
pub async fn follow_registry(
    liveness: std::sync::Arc<Liveness>,
    registry: Registry,
    mut connection: broadcast::Receiver<ConnectionEvent>,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        if failures > 0 {
            let delay = Duration::from_millis(100u64 << failures.min(5));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return,
            }
        }
        let mut watch = match registry.watch().await {
            Ok(watch) => watch,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the registry; retrying");
                failures += 1;
                continue;
            }
        };
        match registry.list(None).await {
            Ok(list) => liveness.replace(list),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the registry; retrying");
                failures += 1;
                continue;
            }
        }
        failures = 0;
        loop {
            tokio::select! {
                event = watch.next() => match event {
                    Some(event) => liveness.apply(event),
                    None => {
                        tracing::warn!("registry watch ended; watching again");
                        failures = 1;
                        break;
                    }
                },
                event = connection.recv() => match event {
                    Ok(ConnectionEvent::Connected) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        tracing::info!("nats reconnected; reading the registry again");
                        break;
                    }
                    Ok(ConnectionEvent::Disconnected) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(service: &str, id: &str) -> InstanceInfo {
        InstanceInfo {
            service: service.into(),
            instance_id: id.into(),
            version: "0.1.0".into(),
            started_at: "2025-01-01T00:00:00Z".into(),
            endpoints: vec![],
            admin_addr: None,
            host: "h".into(),
            pid: 1,
            nats_server: None,
        }
    }

    #[test]
    fn counts_follow_ups_and_downs() {
        let live = Liveness::default();
        live.replace(vec![
            info("product", "p1"),
            info("product", "p2"),
            info("gateway", "g1"),
        ]);
        assert_eq!(live.live(Service::Product), 2);
        assert_eq!(live.live(Service::Order), 0);
        live.apply(RegistryEvent::Up(info("order", "o1")));
        live.apply(RegistryEvent::Up(info("order", "o1")));
        assert_eq!(
            live.live(Service::Order),
            1,
            "a heartbeat is not a new instance"
        );
        live.apply(RegistryEvent::Down {
            key: "product.p1".into(),
        });
        assert_eq!(live.live(Service::Product), 1);
        live.apply(RegistryEvent::Down {
            key: "product.unknown".into(),
        });
        assert_eq!(live.live(Service::Product), 1);
        assert_eq!(live.instances().len(), 3);
        live.replace(vec![]);
        assert_eq!(live.live(Service::Order), 0);
    }
}
