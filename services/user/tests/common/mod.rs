//! Shared set-up for the user service's tests: a real nats-server and real
//! `user-service` processes.

#![allow(dead_code)]

use std::path::PathBuf;

use async_nats::HeaderMap;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde_json::{json, Value};
use testkit::{request_json, NatsServer, Reply, ServiceProcess};
use user_service::token::Jwks;

pub fn user_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_user-service"))
}

/// Cheap hashing so tests run fast; tests that measure hashing override it.
pub const FAST_HASH: &[(&str, &str)] = &[("ARGON2_MEMORY_KIB", "1024"), ("ARGON2_ITERATIONS", "1")];

pub struct Cluster {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    pub instances: Vec<ServiceProcess>,
    pub data: tempfile::TempDir,
}

/// One event read back from the `USER` stream.
#[derive(Debug, Clone)]
pub struct Event {
    pub sequence: u64,
    pub subject: String,
    pub headers: HeaderMap,
    pub raw: String,
    pub json: Value,
}

impl Cluster {
    /// A nats-server and `n` user instances (`user-1` ... `user-n`).
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
            cluster.add_instance(&format!("user-{i}"), env).await?;
        }
        Ok(cluster)
    }

    pub async fn add_instance(&mut self, id: &str, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let process = self.spawn_instance(id, env).await?;
        self.instances.push(process);
        Ok(())
    }

    /// Starts an instance without adding it to `instances`.
    pub async fn spawn_instance(
        &self,
        id: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<ServiceProcess> {
        let mut all: Vec<(&str, &str)> = FAST_HASH.to_vec();
        all.extend_from_slice(env);
        ServiceProcess::start(&user_bin(), &self.nats.url(), id, &self.data_dir(id), &all).await
    }

    pub fn data_dir(&self, id: &str) -> PathBuf {
        self.data.path().join(id)
    }

    pub async fn req(&self, subject: &str, payload: Value) -> Reply {
        self.req_raw(subject, payload.to_string()).await
    }

    pub async fn req_raw(&self, subject: &str, payload: String) -> Reply {
        request_json(&self.client, subject, payload)
            .await
            .unwrap_or_else(|e| panic!("{subject} failed: {e:#}"))
    }

    pub async fn register(&self, email: &str, password: &str, name: &str) -> Value {
        let reply = self
            .req(
                "user.register",
                json!({"email": email, "password": password, "name": name}),
            )
            .await;
        assert!(reply.is_ok(), "register {email}: {:?}", reply.error);
        reply.body
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.req("user.login", json!({"email": email, "password": password}))
            .await
    }

    pub async fn keys(&self) -> Jwks {
        let reply = self.req_raw("user.keys", String::new()).await;
        assert!(reply.is_ok(), "user.keys: {:?}", reply.error);
        serde_json::from_value(reply.body).expect("a JWKS")
    }

    async fn stream(&self) -> async_nats::jetstream::stream::Stream {
        let js = async_nats::jetstream::new(self.client.clone());
        js.get_stream("USER").await.expect("USER stream")
    }

    /// Stream sequence of the user stream's last message.
    pub async fn stream_last_sequence(&self) -> u64 {
        self.stream()
            .await
            .info()
            .await
            .expect("stream info")
            .state
            .last_sequence
    }

    /// Every event in the `USER` stream, in order.
    pub async fn events(&self) -> Vec<Event> {
        let stream = self.stream().await;
        let last = self.stream_last_sequence().await;
        let mut out = Vec::new();
        for sequence in 1..=last {
            let message = stream
                .get_raw_message(sequence)
                .await
                .expect("stream message");
            let raw = String::from_utf8(message.payload.to_vec()).expect("utf-8 event");
            out.push(Event {
                sequence,
                subject: message.subject.to_string(),
                headers: message.headers,
                json: serde_json::from_str(&raw).expect("JSON event"),
                raw,
            });
        }
        out
    }

    /// `num_requests` of `endpoint` on each instance, from `$SRV.STATS`.
    pub async fn served_by_instance(&self, endpoint: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for instance in &self.instances {
            let reply = self
                .client
                .request(
                    format!("$SRV.STATS.user.{}", instance.instance_id),
                    "".into(),
                )
                .await
                .unwrap();
            let stats: Value = serde_json::from_slice(&reply.payload).unwrap();
            let n = stats["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == endpoint)
                .map(|e| e["num_requests"].as_u64().unwrap())
                .unwrap();
            out.push((instance.instance_id.clone(), n));
        }
        out
    }
}

/// The decoded header and claims of a JWT (not verified).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let decode = |part: Option<&str>| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part.unwrap()).unwrap()).unwrap()
    };
    (decode(parts.next()), decode(parts.next()))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
