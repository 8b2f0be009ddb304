//! A NATS cluster for one test: `n` real nats-servers on loopback (free client,
//! route and monitoring ports), JetStream on each with its own store and
//! `sync_interval: always`, and the auth `shop auth init` generates, the same
//! on every node, as `shop up --nats-cluster` runs them.
//!
//! Services started with [`NatsCluster::url`] (every node, comma-separated)
//! get their identity's credentials from [`crate::service_auth_env`], as on a
//! single [`crate::NatsServer`]. A node can be killed (`kill -9`) and started
//! again on the same ports and store.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use async_nats::jetstream;

use crate::nats_server::{auth_init, nats_server_bin, register_auth_dir, unregister_auth_dir};

/// How long a node may take to print `Server is ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the cluster may take to answer JetStream requests (meta leader).
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
pub const OPERATOR: &str = crate::nats_server::OPERATOR;

/// One node: its `server_name` (`n1`, `n2` ...), process and monitoring port.
pub struct NatsNode {
    pub name: String,
    pub server: shop_process::NatsProcess,
    pub monitor_port: u16,
}

impl NatsNode {
    pub fn url(&self) -> String {
        self.server.url()
    }
}

pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    auth: PathBuf,
    /// Configurations (next to the auth they include) and stores.
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `n` clustered nodes with auth and waits until JetStream answers.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(n >= 1, "a cluster needs a node");
        let dir = tempfile::tempdir().context("creating the cluster's directory")?;
        let auth = dir.path().join("auth");
        auth_init(&auth)?;
        let route_ports: Vec<u16> = (0..n)
            .map(|_| shop_process::free_port())
            .collect::<anyhow::Result<_>>()?;
        let routes: Vec<String> = (route_ports.iter())
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, route_port) in route_ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let config = format!(
                "server_name: {name}\nmax_payload: 8MB\n\
                 jetstream {{ store_dir: $NATS_STORE_DIR, sync_interval: always }}\n\
                 cluster {{ name: shop, listen: 127.0.0.1:{route_port}, routes: [{}] }}\n\
                 include auth.conf\n",
                routes.join(", ")
            );
            let monitor_port = shop_process::free_port()?;
            let mut server = shop_process::NatsServer::new(&auth)
                .name(format!("nats-{name}"))
                .bin(nats_server_bin())
                .config_text(config)
                .store_dir(dir.path().join(format!("{name}-store")))
                .monitor_port(monitor_port)
                .process(|p| p.ready_timeout(READY_TIMEOUT));
            if let Some(logs) = std::env::var_os("TESTKIT_NATS_LOG_DIR") {
                let log = PathBuf::from(logs).join(format!(
                    "{}-{name}.log",
                    dir.path().file_name().unwrap_or_default().to_string_lossy()
                ));
                server = server.process(|p| p.log_file(log));
            }
            let server = server
                .start()
                .await
                .with_context(|| format!("starting cluster node {name}"))?;
            nodes.push(NatsNode {
                name,
                server,
                monitor_port,
            });
        }
        let cluster = Self {
            nodes,
            auth,
            _dir: dir,
        };
        register_auth_dir(&cluster.url(), &cluster.auth);
        for node in &cluster.nodes {
            register_auth_dir(&node.url(), &cluster.auth);
        }
        cluster.wait_for_jetstream().await?;
        Ok(cluster)
    }

    /// Every node's URL, comma-separated (what `NATS_URL` takes).
    pub fn url(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(NatsNode::url).collect();
        urls.join(",")
    }

    /// The auth directory every node includes.
    pub fn auth_dir(&self) -> &std::path::Path {
        &self.auth
    }

    /// The `.creds` file of `identity`.
    pub fn creds(&self, identity: &str) -> PathBuf {
        self.auth.join(format!("{identity}.creds"))
    }

    /// The node named `name` (`n1` ...).
    pub fn node(&self, name: &str) -> anyhow::Result<usize> {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .with_context(|| format!("no node named {name}"))
    }

    /// An operator client on `urls` (one node's URL, or [`Self::url`]).
    pub async fn client_on(&self, urls: &str) -> anyhow::Result<async_nats::Client> {
        let creds = self.creds(OPERATOR);
        let servers = shop_nats::server_addrs(urls)?;
        async_nats::ConnectOptions::with_credentials_file(&creds)
            .await
            .with_context(|| format!("reading {}", creds.display()))?
            .max_reconnects(None)
            .connect(servers.as_slice())
            .await
            .with_context(|| format!("connecting to {urls}"))
    }

    /// An operator client that may use any node.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        self.client_on(&self.url()).await
    }

    /// Waits until the cluster answers JetStream requests (a meta leader is
    /// elected a moment after the routes connect).
    pub async fn wait_for_jetstream(&self) -> anyhow::Result<()> {
        let js = jetstream::new(self.client().await?);
        let deadline = tokio::time::Instant::now() + JETSTREAM_TIMEOUT;
        loop {
            match js.query_account().await {
                Ok(_) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    anyhow::bail!("JetStream not ready after {JETSTREAM_TIMEOUT:?}: {e}")
                }
                // Nothing to await: the election is internal to the servers.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The server name of `stream`'s leader, as the cluster reports it.
    pub async fn leader_of(
        &self,
        js: &jetstream::Context,
        stream: &str,
    ) -> anyhow::Result<Option<String>> {
        let mut handle = js
            .get_stream(stream)
            .await
            .with_context(|| format!("stream {stream}"))?;
        let info = handle.info().await.context("stream info")?;
        Ok(info.cluster.as_ref().and_then(|c| c.leader.clone()))
    }

    /// `stream`'s last sequence in node `index`'s own copy (its `/jsz`), when
    /// that node holds a replica.
    pub async fn replica_last_sequence(
        &self,
        index: usize,
        stream: &str,
    ) -> anyhow::Result<Option<u64>> {
        let addr = format!("127.0.0.1:{}", self.nodes[index].monitor_port);
        let (status, body) =
            crate::http::get(&addr, "/jsz?accounts=true&streams=true&raft=false").await?;
        anyhow::ensure!(status == 200, "/jsz answered {status}: {body}");
        let jsz: serde_json::Value = serde_json::from_str(&body).context("decoding /jsz")?;
        let found = jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == stream)
            .and_then(|s| s["state"]["last_seq"].as_u64());
        Ok(found)
    }

    /// `kill -9` of node `index`.
    pub fn kill9(&mut self, index: usize) -> anyhow::Result<()> {
        self.nodes[index].server.process.kill9()
    }

    /// Starts node `index` again on the same ports and store, and waits until
    /// it is ready.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.nodes[index].server.process.restart().await
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        // The nodes are killed as their processes drop: the test is over.
        unregister_auth_dir(&self.url());
        for node in &self.nodes {
            unregister_auth_dir(&node.url());
        }
    }
}
