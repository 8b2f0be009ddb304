//! Fuzzing every declared endpoint over raw NATS.
//!
//! Each request goes to one endpoint with a payload from [`Generator`]. The
//! contract says every reply is a result or an error with
//! `Nats-Service-Error-Code`, a one-line `Nats-Service-Error` and a JSON body
//! `{"error":{"code","message"}}`; bad input is a 4xx. So a finding is: a 5xx,
//! an error without the contract's shape, no reply within the timeout, or
//! "no responders" (the service is gone).

use std::{collections::BTreeMap, time::Duration};

use async_nats::{Client, HeaderMap, RequestErrorKind};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use shop_nats::manifest::Manifest;

use crate::payload::Generator;

/// One endpoint to fuzz: its subject and its request type's JSON Schema.
#[derive(Debug, Clone)]
pub struct Target {
    pub subject: String,
    pub schema: Value,
}

impl Target {
    /// Every endpoint of every service in `manifest`.
    pub fn all(manifest: &Manifest) -> Vec<Target> {
        manifest
            .endpoints()
            .map(|(_, e)| Target {
                subject: e.subject.clone(),
                schema: e.request_schema.clone(),
            })
            .collect()
    }
}

/// What a fuzz run is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Requests in all, spread round-robin over the targets.
    pub requests: u64,
    pub seed: u64,
    /// Requests in flight at once.
    pub concurrency: usize,
    pub timeout: Duration,
    /// Sent with every request (e.g. `Authorization`).
    pub headers: HeaderMap,
}

/// A reply that breaks the contract, with what was sent.
#[derive(Debug, Clone)]
pub struct Finding {
    pub subject: String,
    /// The payload, lossily as text and cut to 200 characters.
    pub payload: String,
    pub problem: String,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub sent: u64,
    /// Replies by subject and outcome (`ok`, `400`, `404` ...).
    pub outcomes: BTreeMap<String, BTreeMap<String, u64>>,
    pub findings: Vec<Finding>,
}

impl Report {
    /// One line per subject: its outcomes and counts.
    pub fn summary(&self) -> String {
        let mut out = format!("{} requests, {} findings\n", self.sent, self.findings.len());
        for (subject, outcomes) in &self.outcomes {
            let counts: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o}: {n}")).collect();
            out += &format!("  {subject:24} {}\n", counts.join(", "));
        }
        out
    }
}

/// Sends `plan.requests` payloads over the targets and sorts the replies.
pub async fn run(client: &Client, targets: &[Target], plan: &Plan) -> Report {
    let mut generator = Generator::new(plan.seed);
    let requests = (0..plan.requests).filter_map(|i| {
        let target = targets.get((i % targets.len().max(1) as u64) as usize)?;
        Some((
            target.subject.clone(),
            Bytes::from(generator.payload(&target.schema)),
        ))
    });
    let mut replies = futures::stream::iter(requests)
        .map(|(subject, payload)| async move {
            let outcome = send(client, &subject, payload.clone(), plan).await;
            (subject, payload, outcome)
        })
        .buffer_unordered(plan.concurrency.max(1));
    let mut report = Report::default();
    while let Some((subject, payload, outcome)) = replies.next().await {
        report.sent += 1;
        let label = match &outcome {
            Ok(label) => label.clone(),
            Err(_) => "finding".to_string(),
        };
        *report
            .outcomes
            .entry(subject.clone())
            .or_default()
            .entry(label)
            .or_default() += 1;
        if let Err(problem) = outcome {
            let text = String::from_utf8_lossy(&payload);
            report.findings.push(Finding {
                subject,
                payload: text.chars().take(200).collect(),
                problem,
            });
        }
    }
    report
}

/// The outcome's label when the reply keeps the contract, else the problem.
async fn send(
    client: &Client,
    subject: &str,
    payload: Bytes,
    plan: &Plan,
) -> Result<String, String> {
    let request = async_nats::Request::new()
        .payload(payload)
        .headers(plan.headers.clone())
        .timeout(Some(plan.timeout));
    let reply = match client.send_request(subject.to_string(), request).await {
        Ok(reply) => reply,
        Err(e) if e.kind() == RequestErrorKind::NoResponders => {
            return Err("no responders: the service is gone".to_string())
        }
        Err(e) if e.kind() == RequestErrorKind::TimedOut => {
            return Err(format!("no reply within {:?}", plan.timeout))
        }
        Err(e) => return Err(format!("request failed: {e}")),
    };
    let header = |name: &str| {
        reply
            .headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    let Some(code) = header(shop_nats::error::ERROR_CODE_HEADER) else {
        return Ok("ok".to_string());
    };
    let message = header(shop_nats::error::ERROR_HEADER).unwrap_or_default();
    let body: Value = serde_json::from_slice(&reply.payload).unwrap_or(Value::Null);
    let shaped = body["error"]["code"].as_u64().map(|c| c.to_string()) == Some(code.clone())
        && body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty());
    match code.parse::<u16>() {
        Ok(400..=499) if shaped && !message.trim().is_empty() => Ok(code),
        Ok(400..=499) => Err(format!("{code} without the contract's error shape: {body}")),
        _ => Err(format!("{code}: {message}")),
    }
}
