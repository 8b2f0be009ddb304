//! One service on its own nats-server: `n` real instances of its binary on one
//! queue group, each with its own data directory, and a client to talk to them.
//! A service's tests wrap it with their own helpers (create a product,
//! register a user ...).

use std::path::{Path, PathBuf};

use anyhow::Context;
use async_nats::jetstream;

use crate::{request_json, NatsServer, Reply, ServiceProcess};

pub struct Cluster {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// Running instances, in start order.
    pub instances: Vec<ServiceProcess>,
    /// Parent of every instance's `DATA_DIR`; removed on drop.
    pub data: tempfile::TempDir,
    bin: PathBuf,
    base_env: Vec<(String, String)>,
}

impl Cluster {
    /// A fresh nats-server and no instances yet; `base_env` is given to every
    /// instance started later (before any per-instance settings).
    pub async fn empty(bin: &Path, base_env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let client = nats.client().await?;
        let js = jetstream::new(client.clone());
        Ok(Self {
            nats,
            client,
            js,
            instances: Vec::new(),
            data: tempfile::tempdir().context("creating the data directory")?,
            bin: bin.to_path_buf(),
            base_env: base_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    /// A fresh nats-server and `n` instances named `<service>-1` ... `<service>-n`.
    pub async fn start(
        bin: &Path,
        service: &str,
        n: usize,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut cluster = Self::empty(bin, &[]).await?;
        cluster.add_instances(service, n, env).await?;
        Ok(cluster)
    }

    /// Starts `<service>-1` ... `<service>-n` (numbered after those running).
    pub async fn add_instances(
        &mut self,
        service: &str,
        n: usize,
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let first = self.instances.len() + 1;
        for i in first..first + n {
            self.add_instance(&format!("{service}-{i}"), env).await?;
        }
        Ok(())
    }

    /// Starts one instance and keeps it in `instances`.
    pub async fn add_instance(&mut self, id: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let process = self.spawn_instance(id, env).await?;
        self.instances.push(process);
        Ok(())
    }

    /// Starts one instance without keeping it (the caller owns it).
    pub async fn spawn_instance(
        &self,
        id: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<ServiceProcess> {
        let mut all: Vec<(&str, &str)> = self
            .base_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend_from_slice(env);
        ServiceProcess::start(&self.bin, &self.nats.url(), id, &self.data_dir(id), &all).await
    }

    /// The `DATA_DIR` of instance `id`.
    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.data.path().join(id)
    }

    /// A JSON request; panics when nobody answers (a test failure, with the subject).
    pub async fn req(&self, subject: &str, payload: serde_json::Value) -> Reply {
        self.req_raw(subject, payload.to_string()).await
    }

    /// A request with a payload sent as is (malformed input tests).
    pub async fn req_raw(&self, subject: &str, payload: String) -> Reply {
        request_json(&self.client, subject, payload)
            .await
            .unwrap_or_else(|e| panic!("{subject} failed: {e:#}"))
    }

    /// Sequence of the last message in `stream`.
    pub async fn stream_last_sequence(&self, stream: &str) -> anyhow::Result<u64> {
        let mut stream = self
            .js
            .get_stream(stream)
            .await
            .with_context(|| format!("stream {stream}"))?;
        Ok(stream
            .info()
            .await
            .context("stream info")?
            .state
            .last_sequence)
    }

    /// `num_requests` of `endpoint` on each running instance of `service`,
    /// from `$SRV.STATS`: how the queue group spread the work.
    pub async fn served_by_instance(
        &self,
        service: &str,
        endpoint: &str,
    ) -> anyhow::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for instance in &self.instances {
            let subject = format!("$SRV.STATS.{service}.{}", instance.instance_id);
            let reply = self
                .client
                .request(subject.clone(), "".into())
                .await
                .with_context(|| format!("requesting {subject}"))?;
            let stats: serde_json::Value =
                serde_json::from_slice(&reply.payload).context("decoding $SRV.STATS")?;
            let served = stats["endpoints"]
                .as_array()
                .and_then(|all| all.iter().find(|e| e["name"] == endpoint))
                .and_then(|e| e["num_requests"].as_u64())
                .with_context(|| format!("no num_requests for {endpoint} in {stats}"))?;
            out.push((instance.instance_id.clone(), served));
        }
        Ok(out)
    }
}
