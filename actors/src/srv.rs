//! The NATS services protocol (`$SRV.PING|INFO|STATS[.<name>[.<id>]]`), so that
//! `nats micro ls|info|stats` sees every instance and endpoint with true counts.

use std::sync::{atomic::Ordering, Arc};

use async_nats::{Client, Message};
use futures::{stream::select_all, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde_json::{json, Value};

use crate::{
    reply::ReplyGuard,
    responder::{Endpoint, Responder},
};

/// Who this instance is, as the protocol reports it.
#[derive(Clone)]
pub struct SrvIdentity {
    pub name: &'static str,
    pub id: String,
    pub version: &'static str,
    pub description: &'static str,
    /// RFC 3339 start time.
    pub started: String,
}

pub struct SrvArgs {
    pub nats: Client,
    /// Cancelled at shutdown: the instance stops answering discovery.
    pub stop: tokio_util::sync::CancellationToken,
    pub identity: SrvIdentity,
    pub responder: Arc<Responder>,
    /// Replies only to inboxes, as the endpoints.
    pub replies: Arc<ReplyGuard>,
}

#[derive(Clone, Copy)]
pub struct SrvActor;

pub enum SrvMsg {
    Run,
}

pub struct SrvState {
    args: Arc<SrvArgs>,
    subscribers: Vec<async_nats::Subscriber>,
}

impl Actor for SrvActor {
    type Msg = SrvMsg;
    type State = SrvState;
    type Arguments = SrvArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SrvArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut subscribers = Vec::new();
        for verb in ["PING", "INFO", "STATS"] {
            for subject in [
                format!("$SRV.{verb}"),
                format!("$SRV.{verb}.{}", args.identity.name),
                format!("$SRV.{verb}.{}.{}", args.identity.name, args.identity.id),
            ] {
                let sub = args
                    .nats
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| format!("subscribing to {subject}: {e}"))?;
                subscribers.push(sub);
            }
        }
        myself.cast(SrvMsg::Run)?;
        Ok(SrvState {
            args: Arc::new(args),
            subscribers,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        SrvMsg::Run: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let mut all = select_all(std::mem::take(&mut state.subscribers));
        loop {
            tokio::select! {
                _ = state.args.stop.cancelled() => break,
                message = all.next() => match message {
                    Some(message) => answer(&state.args, message).await,
                    None => return Err("$SRV subscriptions closed".into()),
                },
            }
        }
        myself.stop(None);
        Ok(())
    }
}

async fn answer(args: &SrvArgs, message: Message) {
    let Some(reply) = message.reply else { return };
    if !args.replies.allows(&reply, message.subject.as_str(), "srv") {
        return;
    }
    let verb = message
        .subject
        .as_str()
        .split('.')
        .nth(1)
        .unwrap_or_default();
    let body = match verb {
        "PING" => ping(&args.identity),
        "INFO" => info(&args.identity, &args.responder),
        "STATS" => stats(&args.identity, &args.responder),
        _ => return,
    };
    if let Err(e) = args.nats.publish(reply, body.to_string().into()).await {
        tracing::warn!(error = %e, "answering $SRV request");
    }
}

fn base(identity: &SrvIdentity, kind: &str) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    map.insert(
        "type".into(),
        json!(format!("io.nats.micro.v1.{kind}_response")),
    );
    map.insert("name".into(), json!(identity.name));
    map.insert("id".into(), json!(identity.id));
    map.insert("version".into(), json!(identity.version));
    map.insert("metadata".into(), json!({}));
    map
}

pub fn ping(identity: &SrvIdentity) -> Value {
    Value::Object(base(identity, "ping"))
}

pub fn info(identity: &SrvIdentity, responder: &Responder) -> Value {
    let mut map = base(identity, "info");
    map.insert("description".into(), json!(identity.description));
    let endpoints: Vec<Value> = responder
        .endpoints
        .list
        .iter()
        .map(|e| {
            json!({
                "name": e.manifest.name,
                "subject": e.manifest.subject,
                "queue_group": responder.endpoints.service,
                "metadata": metadata(e),
            })
        })
        .collect();
    map.insert("endpoints".into(), json!(endpoints));
    Value::Object(map)
}

pub fn stats(identity: &SrvIdentity, responder: &Responder) -> Value {
    let mut map = base(identity, "stats");
    map.insert("started".into(), json!(identity.started));
    let endpoints: Vec<Value> = responder
        .endpoints
        .list
        .iter()
        .map(|e| {
            let requests = e.stats.requests.load(Ordering::Relaxed);
            let processing = e.stats.processing_ns.load(Ordering::Relaxed);
            let last_error = e
                .stats
                .last_error
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default();
            json!({
                "name": e.manifest.name,
                "subject": e.manifest.subject,
                "queue_group": responder.endpoints.service,
                "num_requests": requests,
                "num_errors": e.stats.errors.load(Ordering::Relaxed),
                "last_error": last_error,
                "processing_time": processing,
                "average_processing_time": processing.checked_div(requests).unwrap_or(0),
            })
        })
        .collect();
    map.insert("endpoints".into(), json!(endpoints));
    Value::Object(map)
}

/// An endpoint's declaration as `$SRV.INFO` metadata (string values only):
/// `kind`, `access`, `callers` (comma-separated) and `request`.
pub fn metadata(endpoint: &Endpoint) -> Value {
    let m = &endpoint.manifest;
    let kind = match m.kind {
        shop_nats::manifest::EndpointKind::Read => "read",
        shop_nats::manifest::EndpointKind::Write => "write",
    };
    json!({
        "kind": kind,
        "access": m.access.name(),
        "callers": m.access.services().join(","),
        "request": m.request,
    })
}
