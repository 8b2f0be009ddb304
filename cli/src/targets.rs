//! `shop prometheus-targets FILE`: Prometheus file-based service discovery,
//! rewritten (atomically) whenever an instance appears or disappears.

use std::{collections::BTreeMap, path::Path};

use futures::StreamExt;
use serde_json::json;
use shop_nats::discovery::{InstanceInfo, Registry, RegistryEvent};

use crate::exit::{Failure, NO_ANSWER, UNREACHABLE};

pub async fn run(client: &async_nats::Client, file: &Path, once: bool) -> Result<(), Failure> {
    let js = async_nats::jetstream::new(client.clone());
    let registry = Registry::existing(&js)
        .await
        .map_err(|e| Failure::new(UNREACHABLE, format!("reading the registry: {e}")))?
        .ok_or_else(|| {
            Failure::new(
                NO_ANSWER,
                "no registry bucket: no service has started on this NATS server",
            )
        })?;
    if once {
        let instances = registry
            .list(None)
            .await
            .map_err(|e| Failure::new(UNREACHABLE, format!("reading the registry: {e}")))?;
        let live = instances.into_iter().map(|i| (i.key(), i)).collect();
        return write(file, &live);
    }
    let mut watch = registry
        .watch()
        .await
        .map_err(|e| Failure::new(UNREACHABLE, format!("watching the registry: {e}")))?;
    let mut live = BTreeMap::new();
    write(file, &live)?;
    while let Some(event) = watch.next().await {
        match event {
            RegistryEvent::Up(info) => {
                if live.get(&info.key()) == Some(&info) {
                    continue;
                }
                live.insert(info.key(), info);
            }
            RegistryEvent::Down { key } => {
                if live.remove(&key).is_none() {
                    continue;
                }
            }
        }
        write(file, &live)?;
    }
    Err(Failure::new(
        UNREACHABLE,
        "the registry watch ended (NATS connection lost)",
    ))
}

/// The file_sd document for these instances.
pub fn document(live: &BTreeMap<String, InstanceInfo>) -> serde_json::Value {
    let groups: Vec<_> = live
        .values()
        .filter_map(|info| {
            let addr = info.admin_addr.as_ref()?;
            Some(json!({
                "targets": [addr],
                "labels": {"service": info.service, "instance": info.instance_id, "version": info.version, "host": info.host},
            }))
        })
        .collect();
    json!(groups)
}

fn write(file: &Path, live: &BTreeMap<String, InstanceInfo>) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(&document(live)).unwrap_or_else(|_| "[]".into());
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, text + "\n")
        .and_then(|()| std::fs::rename(&tmp, file))
        .map_err(|e| {
            Failure::new(
                crate::exit::USAGE,
                format!("writing {}: {e}", file.display()),
            )
        })?;
    eprintln!(
        "shop: {} target(s) written to {}",
        live.values().filter(|i| i.admin_addr.is_some()).count(),
        file.display()
    );
    Ok(())
}
