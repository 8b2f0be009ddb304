//! Service discovery through the key-value bucket `registry`.
//!
//! Key `<service>.<instance-id>`, value [`InstanceInfo`] as JSON. Instances
//! refresh their entry every [`HEARTBEAT_INTERVAL`]; the bucket's max age is
//! [`ENTRY_TTL`], so the entry of a crashed instance expires on its own (the
//! server leaves a delete marker that watchers see), and a clean stop deletes it.

use std::time::Duration;

use async_nats::jetstream::{
    kv::{self, Operation},
    Context,
};
use futures::{stream::BoxStream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::jetstream::{ensure_kv, SetupError};

pub const REGISTRY_BUCKET: &str = "registry";
/// How long an entry lives without a heartbeat.
pub const ENTRY_TTL: Duration = Duration::from_secs(10);
/// How often a live instance refreshes its entry.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);

/// What a live instance says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceInfo {
    pub service: String,
    pub instance_id: String,
    pub version: String,
    /// RFC 3339.
    pub started_at: String,
    /// Request subjects this instance answers.
    pub endpoints: Vec<String>,
    /// Admin HTTP address (`/health`, `/ready`, `/metrics`).
    pub admin_addr: Option<String>,
    pub host: String,
    pub pid: u32,
    /// The NATS server (its `server_name`) this instance is connected to, as
    /// of its last heartbeat: which node of a cluster it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats_server: Option<String>,
}

impl InstanceInfo {
    pub fn key(&self) -> String {
        registry_key(&self.service, &self.instance_id)
    }
}

pub fn registry_key(service: &str, instance_id: &str) -> String {
    format!("{service}.{instance_id}")
}

/// A change in the set of live instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// An instance registered or refreshed its entry.
    Up(InstanceInfo),
    /// An instance stopped (entry deleted) or died (entry expired). Carries the key.
    Down { key: String },
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("registry {op} failed: {message}")]
    Kv { op: &'static str, message: String },
}

fn kv_err(op: &'static str) -> impl Fn(&dyn std::fmt::Display) -> RegistryError {
    move |e| RegistryError::Kv {
        op,
        message: e.to_string(),
    }
}

/// The `registry` bucket.
#[derive(Clone)]
pub struct Registry {
    kv: kv::Store,
}

impl Registry {
    /// Opens the bucket, creating it if needed, with one replica (or as many
    /// as it has); see [`Registry::open_replicated`].
    pub async fn open(js: &Context) -> Result<Self, RegistryError> {
        Self::open_replicated(js, 1).await
    }

    /// Opens the bucket, creating it if needed with `replicas` replicas
    /// (`JS_REPLICAS`: 3 in a cluster, so discovery survives losing a node;
    /// never fewer than it has). On servers before 2.11 the bucket has no
    /// expiry markers: entries still expire, but watchers are not told (use
    /// [`Registry::list`]).
    pub async fn open_replicated(js: &Context, replicas: usize) -> Result<Self, RegistryError> {
        let config = kv::Config {
            num_replicas: replicas.max(1),
            bucket: REGISTRY_BUCKET.to_string(),
            description: "live service instances (heartbeat-refreshed)".to_string(),
            history: 1,
            max_age: ENTRY_TTL,
            storage: async_nats::jetstream::stream::StorageType::Memory,
            limit_markers: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let kv = match ensure_kv(js, config.clone()).await {
            Ok(kv) => kv,
            Err(e) => {
                tracing::warn!(error = %e, "registry without expiry markers (nats-server < 2.11?)");
                ensure_kv(
                    js,
                    kv::Config {
                        limit_markers: None,
                        ..config
                    },
                )
                .await?
            }
        };
        Ok(Self { kv })
    }

    /// Opens the bucket if it exists, without creating it (for tools that only read).
    pub async fn existing(js: &Context) -> Result<Option<Self>, RegistryError> {
        match js.get_key_value(REGISTRY_BUCKET).await {
            Ok(kv) => Ok(Some(Self { kv })),
            Err(e)
                if matches!(
                    e.kind(),
                    async_nats::jetstream::context::KeyValueErrorKind::GetBucket
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(kv_err("open")(&e)),
        }
    }

    /// Writes (or refreshes) an instance's entry; returns its bucket revision.
    pub async fn register(&self, info: &InstanceInfo) -> Result<u64, RegistryError> {
        let value = serde_json::to_vec(info).map_err(|e| kv_err("encode")(&e))?;
        self.kv
            .put(info.key(), value.into())
            .await
            .map_err(|e| kv_err("put")(&e))
    }

    /// Removes an instance's entry (on a clean stop).
    pub async fn deregister(&self, service: &str, instance_id: &str) -> Result<(), RegistryError> {
        self.kv
            .delete(registry_key(service, instance_id))
            .await
            .map_err(|e| kv_err("delete")(&e))
    }

    /// One instance's entry, if it is live.
    pub async fn get(
        &self,
        service: &str,
        instance_id: &str,
    ) -> Result<Option<InstanceInfo>, RegistryError> {
        let value = self
            .kv
            .get(registry_key(service, instance_id))
            .await
            .map_err(|e| kv_err("get")(&e))?;
        Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Every live instance, optionally of one service only.
    ///
    /// The keys come from the stream's own subject index (`STREAM.INFO` with
    /// a subjects filter), which the server reads at one instant; a listing
    /// through a consumer (`keys()`) races the heartbeats that rewrite the
    /// entries meanwhile, and once left a live instance out of `shop status`.
    pub async fn list(&self, service: Option<&str>) -> Result<Vec<InstanceInfo>, RegistryError> {
        let prefix = self.kv.prefix.as_str();
        let filter = match service {
            Some(service) => format!("{prefix}{service}.>"),
            None => format!("{prefix}>"),
        };
        let subjects: Vec<(String, usize)> = self
            .kv
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(|e| kv_err("list")(&e))?
            .try_collect()
            .await
            .map_err(|e| kv_err("list")(&e))?;
        let keys = subjects
            .into_iter()
            .filter_map(|(subject, _)| subject.strip_prefix(prefix).map(str::to_string));
        let mut out = Vec::new();
        for key in keys {
            // An entry may expire between listing and reading it.
            if let Some(value) = self.kv.get(&key).await.map_err(|e| kv_err("get")(&e))? {
                match serde_json::from_slice::<InstanceInfo>(&value) {
                    Ok(info) => out.push(info),
                    Err(e) => tracing::warn!(key, error = %e, "ignoring malformed registry entry"),
                }
            }
        }
        out.sort_by_key(InstanceInfo::key);
        Ok(out)
    }

    /// Every change from now on, starting with the current entries.
    pub async fn watch(&self) -> Result<BoxStream<'static, RegistryEvent>, RegistryError> {
        let watch = self
            .kv
            .watch_with_history(">")
            .await
            .map_err(|e| kv_err("watch")(&e))?;
        Ok(watch.filter_map(|entry| async move {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!(error = %e, "registry watch error");
                    return None;
                }
            };
            match entry.operation {
                Operation::Put => match serde_json::from_slice::<InstanceInfo>(&entry.value) {
                    Ok(info) => Some(RegistryEvent::Up(info)),
                    Err(e) => {
                        tracing::warn!(key = entry.key, error = %e, "ignoring malformed registry entry");
                        None
                    }
                },
                Operation::Delete | Operation::Purge => Some(RegistryEvent::Down { key: entry.key }),
            }
        })
        .boxed())
    }
}
