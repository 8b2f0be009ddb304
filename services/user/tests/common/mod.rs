//! Shared set-up for the user service's tests: a real nats-server and real
//! `user-service` processes.

#![allow(dead_code)]

use std::{
    ops::{Deref, DerefMut},
    path::PathBuf,
};

use async_nats::HeaderMap;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde_json::{json, Value};
use testkit::{request_json_with_headers, Reply};
use user_service::{
    keys::{KeySet, BUCKET, KEYSET},
    token::{Claims, Jwks, AUDIENCE, ISSUER},
};

pub fn user_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_user-service"))
}

/// Cheap hashing so tests run fast; tests that measure hashing override it.
pub const FAST_HASH: &[(&str, &str)] = &[("ARGON2_MEMORY_KIB", "1024"), ("ARGON2_ITERATIONS", "1")];

/// User instances on a nats-server of their own.
pub struct Cluster(testkit::Cluster);

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
        let mut cluster = testkit::Cluster::empty(&user_bin(), FAST_HASH).await?;
        cluster.add_instances("user", n, env).await?;
        Ok(Self(cluster))
    }

    /// The user service's data keys, from the key file testkit made.
    pub fn data_keys(&self) -> shop_nats::sealed::DataKeys {
        let text = std::fs::read_to_string(self.data.path().join("user-data.key"))
            .expect("testkit's user data key");
        let key = shop_nats::sealed::DataKey::parse(&text, "user-data.key").unwrap();
        shop_nats::sealed::DataKeys::new(key, None)
    }

    /// Headers with an admin token signed, as a privileged test client, with
    /// the service's current key (read from its bucket, opened with its data
    /// key): no account is created for it.
    pub async fn admin_headers(&self) -> HeaderMap {
        let js = async_nats::jetstream::new(self.client.clone());
        let kv = js.get_key_value(BUCKET).await.expect("signing keys bucket");
        let value = kv.get(KEYSET).await.unwrap().expect("a key set");
        let set: KeySet = serde_json::from_slice(&value).unwrap();
        let signer = set.current().unwrap().signer(&self.data_keys()).unwrap();
        let now = shop_nats::clock::now_secs();
        let token = signer
            .sign(&Claims {
                sub: "test-admin".into(),
                email: "test-admin@example.com".into(),
                roles: vec!["customer".into(), "admin".into()],
                iss: ISSUER.into(),
                aud: AUDIENCE.into(),
                iat: now,
                exp: now + 600,
            })
            .unwrap();
        shop_nats::auth::bearer_headers(&token)
    }

    /// A request as an admin.
    pub async fn req(&self, subject: &str, payload: Value) -> Reply {
        self.req_raw(subject, payload.to_string()).await
    }

    /// A request as an admin, with a payload sent as is.
    pub async fn req_raw(&self, subject: &str, payload: String) -> Reply {
        let admin = self.admin_headers().await;
        request_json_with_headers(&self.client, subject, admin, payload)
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
}

/// The decoded header and claims of a JWT (not verified).
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let decode = |part: Option<&str>| -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part.unwrap()).unwrap()).unwrap()
    };
    (decode(parts.next()), decode(parts.next()))
}
