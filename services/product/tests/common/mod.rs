//! Shared set-up for the product service's tests: a real nats-server and real
//! `product-service` processes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use testkit::{request_json, NatsServer, Reply, ServiceProcess};

pub fn product_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_product-service"))
}

pub struct Cluster {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub instances: Vec<ServiceProcess>,
    pub data: tempfile::TempDir,
}

impl Cluster {
    /// A nats-server and `n` product instances (`product-1` ... `product-n`).
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        Self::start_with_env(n, &[]).await
    }

    pub async fn start_with_env(n: usize, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let client = nats.client().await?;
        let data = tempfile::tempdir()?;
        let mut cluster = Self {
            nats,
            client,
            instances: Vec::new(),
            data,
        };
        for i in 1..=n {
            cluster.add_instance(&format!("product-{i}"), env).await?;
        }
        Ok(cluster)
    }

    pub async fn add_instance(&mut self, id: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let dir = self.data_dir(id);
        let process =
            ServiceProcess::start(&product_bin(), &self.nats.url(), id, &dir, env).await?;
        self.instances.push(process);
        Ok(())
    }

    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.data.path().join(id)
    }

    pub async fn req(&self, subject: &str, payload: Value) -> Reply {
        request_json(&self.client, subject, payload.to_string())
            .await
            .unwrap_or_else(|e| panic!("{subject} failed: {e:#}"))
    }

    pub async fn create(&self, id: &str, stock: i64) -> Value {
        let reply = self
            .req(
                "product.create",
                json!({"id": id, "name": format!("Product {id}"), "price_cents": 1999, "currency": "USD", "stock": stock}),
            )
            .await;
        assert!(reply.is_ok(), "create {id}: {:?}", reply.error);
        reply.body
    }

    /// Stream sequence of the product stream's last message.
    pub async fn stream_last_sequence(&self) -> u64 {
        let js = async_nats::jetstream::new(self.client.clone());
        let mut stream = js.get_stream("PRODUCT").await.expect("PRODUCT stream");
        stream
            .info()
            .await
            .expect("stream info")
            .state
            .last_sequence
    }
}

pub fn data_path(dir: &Path) -> String {
    dir.display().to_string()
}
