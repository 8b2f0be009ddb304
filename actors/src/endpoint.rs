//! Endpoint actors: where a request enters a service.
//!
//! Each endpoint actor owns one queue subscription to `<service>.>` in the queue
//! group `<service>`, so the NATS server spreads requests over every actor of
//! every instance with no extra hop, and a mistyped subject gets a 404 naming
//! the declared ones. What arrives goes to the [`Dispatcher`]. At shutdown the
//! actor leaves the queue group without losing what the server already routed
//! to it ([`drain_subscription`]).

use std::{sync::Arc, time::Duration};

use async_nats::Client;
use futures::{FutureExt, StreamExt};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::dispatch::Dispatcher;

/// Messages the server may still route here after the drain starts.
const DRAIN_SLACK: u64 = 256;
/// A quiet gap this long means no request is in flight to this subscription.
const DRAIN_IDLE: Duration = Duration::from_millis(100);
/// Longest a drain waits for the server to reach the slack.
const DRAIN_CAP: Duration = Duration::from_secs(2);

/// Leaves the queue group without losing a request the server already routed here.
///
/// async-nats 0.51's `Subscriber::drain` forgets the subscription as soon as the
/// UNSUB is written, so requests the server routed here before it processed the
/// UNSUB are dropped (nats.rs issue #1325). Instead: `UNSUB <sid> <n>` with n =
/// received + slack makes the server stop after exactly n deliveries and the client
/// keep the subscription until it has received those n, so the stream ends with
/// nothing in flight. When traffic stops before n, a quiet gap followed by a round
/// trip to the server (see [`server_round_trip`]) with nothing new behind it means
/// nothing routed here is still on its way, and a plain unsubscribe is safe: a
/// busy machine that left requests unread in the socket for the whole gap no
/// longer loses them. What remains is a request the server routes here in the
/// microseconds between that round trip's answer and the unsubscribe, or when
/// the slack is not reached within the cap while traffic never pauses.
async fn drain_subscription(
    nats: &Client,
    subscriber: &mut async_nats::Subscriber,
    received: u64,
    dispatcher: &Dispatcher,
) {
    if let Err(e) = subscriber.unsubscribe_after(received + DRAIN_SLACK).await {
        tracing::warn!(error = %e, "unsubscribing");
    }
    let cap = tokio::time::sleep(DRAIN_CAP);
    tokio::pin!(cap);
    loop {
        tokio::select! {
            message = tokio::time::timeout(DRAIN_IDLE, subscriber.next()) => match message {
                Ok(Some(message)) => dispatcher.dispatch(message).await,
                // The server delivered its last message to this subscription.
                Ok(None) => return,
                Err(_) => {
                    server_round_trip(nats).await;
                    match subscriber.next().now_or_never() {
                        Some(Some(message)) => dispatcher.dispatch(message).await,
                        Some(None) => return,
                        None => break,
                    }
                }
            },
            _ = &mut cap => break,
        }
    }
    if let Err(e) = subscriber.unsubscribe().await {
        tracing::warn!(error = %e, "unsubscribing");
    }
    // The receiver is closed; what was already delivered is still readable.
    while let Some(message) = subscriber.next().await {
        dispatcher.dispatch(message).await;
    }
}

/// Subject nobody serves: a request to it comes back from the server itself
/// (every service may publish on it: `shop auth permissions`).
pub const ROUND_TRIP_SUBJECT: &str = "_SHOP.DRAIN.ROUND_TRIP";

/// Waits for an answer from the server on this connection (its "no responders"
/// reply to a request nobody serves). The server writes to a connection in
/// order, so once the answer is read, every message it routed to this
/// connection before answering has been read too and sits in its
/// subscription's channel. async-nats' `flush` only writes and `drain` does
/// not wait for the server, hence this.
async fn server_round_trip(nats: &Client) {
    let request = nats.request(ROUND_TRIP_SUBJECT, bytes::Bytes::new());
    match tokio::time::timeout(DRAIN_IDLE * 10, request).await {
        Err(_) => tracing::warn!("no round trip to the server while draining"),
        Ok(Err(e)) if e.kind() != async_nats::RequestErrorKind::NoResponders => {
            tracing::warn!(error = %e, "round trip to the server while draining")
        }
        Ok(_) => {}
    }
}

/// Owns one queue subscription and answers what arrives on it.
#[derive(Clone, Copy)]
pub struct EndpointActor;

pub struct EndpointArgs {
    pub nats: Client,
    pub dispatcher: Arc<Dispatcher>,
    /// Cancelled at shutdown: the actor drains its subscription and stops.
    pub drain: CancellationToken,
    /// Tracks running loops so shutdown can wait for them to finish.
    pub tracker: TaskTracker,
}

pub enum EndpointMsg {
    Run,
}

pub struct EndpointState {
    args: EndpointArgs,
    subscriber: Option<async_nats::Subscriber>,
}

impl Actor for EndpointActor {
    type Msg = EndpointMsg;
    type State = EndpointState;
    type Arguments = EndpointArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: EndpointArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let service = args.dispatcher.responder.endpoints.service;
        let subscriber = args
            .nats
            .queue_subscribe(format!("{service}.>"), service.to_string())
            .await
            .map_err(|e| format!("subscribing to {service}.>: {e}"))?;
        myself.cast(EndpointMsg::Run)?;
        Ok(EndpointState {
            args,
            subscriber: Some(subscriber),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        EndpointMsg::Run: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(mut subscriber) = state.subscriber.take() else {
            return Ok(());
        };
        let dispatcher = state.args.dispatcher.clone();
        let drain = state.args.drain.clone();
        let nats = state.args.nats.clone();
        let serve = async move {
            let mut received: u64 = 0;
            loop {
                tokio::select! {
                    biased;
                    _ = drain.cancelled() => break,
                    message = subscriber.next() => match message {
                        Some(message) => {
                            received += 1;
                            dispatcher.dispatch(message).await;
                        }
                        None => return Err("subscription closed unexpectedly".to_string()),
                    },
                }
            }
            drain_subscription(&nats, &mut subscriber, received, &dispatcher).await;
            Ok(())
        };
        state.args.tracker.track_future(serve).await?;
        myself.stop(Some("drained".to_string()));
        Ok(())
    }
}
