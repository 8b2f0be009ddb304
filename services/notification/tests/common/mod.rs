//! Shared set-up for the notification service's tests: a real nats-server,
//! the `USER` and `ORDER` streams as their owners create them, and real
//! `notification-service` processes.

#![allow(dead_code)]

pub mod smtp;

use std::{
    ops::{Deref, DerefMut},
    path::PathBuf,
    time::{Duration, Instant},
};

use async_nats::jetstream::stream;
use futures::StreamExt;
use serde_json::{json, Value};
use testkit::{request_json_with_headers, Reply};

pub fn notification_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_notification-service"))
}

/// Quick retries so failure paths finish within a test.
pub const FAST_RETRIES: &[(&str, &str)] = &[
    ("NOTIFY_MAX_DELIVER", "3"),
    ("NOTIFY_BACKOFF_MS", "200,400"),
];

/// Notification instances on a nats-server of their own, and a stand-in
/// token issuer (`user.keys`): `notification.list` needs a user's token.
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
    /// A nats-server with the `USER` and `ORDER` streams, and `n` instances
    /// (`notification-1` ... `notification-n`).
    pub async fn start(n: usize, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut cluster = testkit::Cluster::empty(&notification_bin(), &[]).await?;
        for (name, subjects) in [("USER", "events.user.>"), ("ORDER", "events.order.>")] {
            cluster
                .js
                .get_or_create_stream(stream::Config {
                    name: name.to_string(),
                    subjects: vec![subjects.to_string()],
                    ..Default::default()
                })
                .await?;
        }
        let issuer = testkit::tokens::Issuer::serve(&cluster.client).await?;
        cluster.add_instances("notification", n, env).await?;
        Ok(Self(cluster, issuer))
    }

    /// Headers with an admin's token (who may list anyone's notifications).
    pub fn admin(&self) -> async_nats::HeaderMap {
        self.1.admin()
    }

    /// The messages in an instance's default spool directory, whatever its
    /// `SPOOL_FORMAT`: every mbox segment's in order, then every `.eml` file's
    /// by name; each as its RFC 5322 text.
    pub fn spooled(&self, id: &str) -> Vec<String> {
        let dir = self.data_dir(id).join("spool");
        let mut messages: Vec<String> = notification_service::mbox::segments(&dir)
            .unwrap()
            .iter()
            .flat_map(|segment| notification_service::mbox::messages(segment).unwrap())
            .collect();
        messages.extend(
            self.spool_files(id)
                .iter()
                .map(|file| std::fs::read_to_string(file).unwrap()),
        );
        messages
    }

    /// The spooled message of one notification (by its `Message-ID`), split
    /// into its header block and body.
    pub fn spooled_message(&self, id: &str, notification_id: &str) -> (String, String) {
        let wanted = format!("<{notification_id}@");
        let found: Vec<String> = self
            .spooled(id)
            .into_iter()
            .filter(|m| {
                header(split_message(m).0.as_str(), "Message-ID")
                    .is_some_and(|v| v.starts_with(&wanted))
            })
            .collect();
        assert_eq!(found.len(), 1, "one message for {notification_id}");
        split_message(&found[0])
    }

    /// The `.eml` files in an instance's default spool directory, sorted
    /// (`SPOOL_FORMAT=eml`).
    pub fn spool_files(&self, id: &str) -> Vec<PathBuf> {
        let dir = self.data_dir(id).join("spool");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
    }

    /// Publishes raw JSON to a stream subject as its owner would; returns the
    /// event id `<stream>:<sequence>`.
    pub async fn publish(&self, subject: &str, payload: String) -> String {
        let ack = self
            .js
            .publish(subject.to_string(), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
        format!("{}:{}", ack.stream, ack.sequence)
    }

    pub async fn register_user(&self, id: &str, email: &str, name: &str) -> String {
        let event = json!({
            "type": "user.registered",
            "user": {"id": id, "email": email, "name": name, "created_at": "2025-01-01T00:00:00Z"},
        });
        self.publish(&format!("events.user.registered.{id}"), event.to_string())
            .await
    }

    pub async fn order_event(&self, event_type: &str, order: Value) -> String {
        let id = order["id"].as_str().unwrap().to_string();
        let mut event = json!({"type": event_type, "order": order});
        if let Some(reason) = order.get("reason") {
            event["reason"] = reason.clone();
        }
        self.publish(&format!("events.order.{id}"), event.to_string())
            .await
    }

    /// `notification.list` as an admin.
    pub async fn list(&self, payload: Value) -> Reply {
        self.list_with(self.admin(), payload).await
    }

    /// `notification.list` with these headers.
    pub async fn list_with(&self, headers: async_nats::HeaderMap, payload: Value) -> Reply {
        request_json_with_headers(
            &self.client,
            "notification.list",
            headers,
            payload.to_string(),
        )
        .await
        .unwrap_or_else(|e| panic!("notification.list failed: {e:#}"))
    }

    /// The list for a user, from state that includes everything stored so far.
    pub async fn list_fresh(&self, user_id: &str) -> Vec<Value> {
        let revision = self.stream_last_sequence("NOTIFICATION").await;
        let reply = self
            .list(json!({"user_id": user_id, "min_revision": revision, "limit": 100}))
            .await;
        assert!(reply.is_ok(), "{:?}", reply.error);
        reply.body["items"].as_array().unwrap().clone()
    }

    pub async fn stream_last_sequence(&self, name: &str) -> u64 {
        let mut stream = self.js.get_stream(name).await.expect("stream");
        stream
            .info()
            .await
            .expect("stream info")
            .state
            .last_sequence
    }

    /// How many `notification.sent` events the stream holds.
    pub async fn sent_events_stored(&self) -> u64 {
        let stream = self.js.get_stream("NOTIFICATION").await.unwrap();
        let info = stream
            .info_with_subjects("events.notification.sent.>")
            .await
            .unwrap();
        let mut total = 0;
        let mut subjects = info;
        while let Some(entry) = subjects.next().await {
            total += entry.unwrap().1 as u64;
        }
        total
    }

    pub async fn metrics(&self, instance: usize) -> String {
        let (status, body) = testkit::http::get(&self.instances[instance].admin_addr, "/metrics")
            .await
            .unwrap();
        assert_eq!(status, 200);
        body
    }
}

/// Collects `notification.sent` events as they are stored.
pub struct SentWatch {
    sub: async_nats::Subscriber,
}

impl SentWatch {
    pub async fn start(client: &async_nats::Client) -> Self {
        let sub = client
            .subscribe("events.notification.sent.>")
            .await
            .unwrap();
        client.flush().await.unwrap();
        Self { sub }
    }

    /// The next `n` notifications stored, or a failure naming how many came.
    pub async fn next(&mut self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let message = tokio::time::timeout_at(deadline.into(), self.sub.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("only {} of {n} notifications within {timeout:?}", out.len())
                })
                .expect("subscription open");
            let event: Value = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(event["type"], "notification.sent");
            out.push(event["notification"].clone());
        }
        out
    }
}

/// Collects dead-lettered events.
pub struct DeadLetterWatch {
    sub: async_nats::Subscriber,
}

pub struct DeadLetter {
    pub subject: String,
    pub headers: async_nats::HeaderMap,
    pub payload: bytes::Bytes,
}

impl DeadLetter {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default()
    }
}

impl DeadLetterWatch {
    pub async fn start(client: &async_nats::Client) -> Self {
        let sub = client.subscribe("deadletter.>").await.unwrap();
        client.flush().await.unwrap();
        Self { sub }
    }

    pub async fn next(&mut self, timeout: Duration) -> DeadLetter {
        let message = tokio::time::timeout(timeout, self.sub.next())
            .await
            .unwrap_or_else(|_| panic!("no dead letter within {timeout:?}"))
            .expect("subscription open");
        DeadLetter {
            subject: message.subject.to_string(),
            headers: message.headers.unwrap_or_default(),
            payload: message.payload,
        }
    }
}

/// Polls a metric of one instance until it reaches `expected` (a condition
/// awaited with a deadline; the value is asserted, never assumed).
pub async fn await_metric(
    c: &Cluster,
    instance: usize,
    name: &str,
    labels: &[(&str, &str)],
    expected: f64,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = c.metrics(instance).await;
        let value = testkit::metrics::value(&metrics, name, labels).unwrap_or(0.0);
        if value == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name}{labels:?} is {value}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A message split into its header block and body.
pub fn split_message(text: &str) -> (String, String) {
    let (head, body) = text.split_once("\r\n\r\n").expect("header/body separator");
    (head.to_string(), body.to_string())
}

/// An `.eml` file split into its header block and body.
pub fn read_eml(path: &std::path::Path) -> (String, String) {
    split_message(&std::fs::read_to_string(path).unwrap())
}

/// The value of a header in a header block (first occurrence, unfolded).
pub fn header(head: &str, name: &str) -> Option<String> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    let mut lines = head.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        if line.to_ascii_lowercase().starts_with(&prefix) {
            let mut value = line[prefix.len()..].trim().to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with(' ') || next.starts_with('\t') {
                    value.push(' ');
                    value.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            return Some(value);
        }
    }
    None
}
