//! Shared set-up for the product service's tests: a real nats-server and real
//! `product-service` processes.

#![allow(dead_code)]

use std::{
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

pub fn product_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_product-service"))
}

/// Product instances on a nats-server of their own, and a stand-in token
/// issuer (`user.keys`): creating and changing products is for admins.
pub struct Cluster(testkit::Cluster, pub testkit::tokens::Issuer);

impl Deref for Cluster {
    type Target = testkit::Cluster;
    fn deref(&self) -> &testkit::Cluster {
        &self.0
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut testkit::Cluster {
        &mut self.0
    }
}

impl Cluster {
    /// A nats-server and `n` product instances (`product-1` ... `product-n`).
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        Self::start_with_env(n, &[]).await
    }

    pub async fn start_with_env(n: usize, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let cluster = testkit::Cluster::start(&product_bin(), "product", n, env).await?;
        let issuer = testkit::tokens::Issuer::serve(&cluster.client).await?;
        Ok(Self(cluster, issuer))
    }

    /// A request as an admin (public and internal subjects ignore the token).
    pub async fn req(&self, subject: &str, payload: Value) -> testkit::Reply {
        self.req_raw(subject, payload.to_string()).await
    }

    /// A request as an admin, with a payload sent as is.
    pub async fn req_raw(&self, subject: &str, payload: String) -> testkit::Reply {
        testkit::request_json_with_headers(&self.client, subject, self.1.admin(), payload)
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
        self.0
            .stream_last_sequence("PRODUCT")
            .await
            .expect("PRODUCT stream info")
    }
}

pub fn data_path(dir: &Path) -> String {
    dir.display().to_string()
}
