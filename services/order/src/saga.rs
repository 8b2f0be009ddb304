//! The order-placement saga: a durable consumer of the order's own stream that
//! all order instances share. Each recorded event triggers the order's next
//! step; each step's outcome is recorded before the next step starts, so when
//! an instance dies at any step, another one resumes from the recorded state.
//! Steps call other services idempotently (derived reservation ids and payment
//! idempotency keys), so a step repeated after a crash has no second effect.
//!
//! Every saga ends. A step that fails transiently is redelivered with a capped
//! backoff for as long as it fails (the consumer holds it on the server, so an
//! instance crash only hands it to another instance); forward steps end when
//! the deadline sweep cancels their order, compensation when it succeeds. A
//! step that can never succeed is dead-lettered with its reason, for an
//! operator to list and replay (`shop dlq`).
//!
//! # No refund is lost: a cancel racing a charge
//!
//! The steps involved: the reserve-and-charge step sends the charge (C:
//! captured at the payment service) and records `confirmed` with it (R); a
//! cancel is recorded (X, by a user, the deadline sweep, or a step that found
//! a line out of stock); compensation (K) runs on the `cancelling` event.
//! Every append expects the order's revision, so R and X cannot both land on
//! the same revision.
//!
//! - C, R, X: the order carries `payment_id`; K refunds it (`payment.refund`
//!   catches up with its stream when it does not know the payment, so it never
//!   answers from a replica that is behind).
//! - X with no capture recorded, and C before, during or after it, on this or
//!   any other instance, or never: K voids the order's charge key
//!   ([`domain::PaymentCheck::Void`]). The payment service answers the outcome
//!   the key has, or asks the provider, where a charge in flight and the void
//!   meet one after the other: it answers the charge's outcome, or voids the
//!   key and answers `voided` to every later charge with it. Once it has
//!   answered, no charge can land under the key any more. K then refunds
//!   what it answered as captured (refund key `order-<id>:refund`).
//! - C, X, R: R finds the order moved on; the charge step refunds its capture
//!   at once with the same refund key (the payment service refunds once).
//!   When it dies first, K's void above finds the capture.
//! - A crash between any two steps: the unacknowledged event is redelivered
//!   to another instance. A redelivered step whose order moved on does
//!   nothing (K settles); a redelivered K starts again (void, refund, release
//!   and record are all idempotent).
//!
//! A declined charge is final for its key, so an order cancelled for it
//! needs nothing from the payment service.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{future::BoxFuture, FutureExt};
use serde::Deserialize;
use serde_json::json;
use shop_actors::{
    consumer::{ConsumedEvent, ConsumerSpec, EventHandler, HandleError},
    metrics::{IntCounterVec, Metrics},
    EventLog,
};
use shop_nats::{clock::now_ms, CallOptions, ServiceClient, ServiceError, TraceContext};

use crate::{
    domain::{self, reason, Order, OrderEvent, PaymentCheck, Status, Step},
    endpoints::{record_order, Recorded},
    store,
    tokens::PaymentTokens,
};

/// Durable name of the saga's consumer, shared by every order instance (they
/// split the work).
pub const DURABLE: &str = "order-saga";
/// What the saga consumes of the `ORDER` stream: every order event.
pub const FILTERS: &[&str] = &["events.order.>"];

/// Where a test may ask an instance to die (`ORDER_FAULT_AT`, one or more,
/// comma-separated; test-only): the `after_*`/`before_confirm` points abort the
/// process; the `hold_*` points stop the step there until the order's saga has
/// ended (another instance, or another step of this one, finished it).
pub const FAULT_POINTS: &[&str] = &[
    "after_reserve",
    "after_charge",
    "before_confirm",
    "after_compensate",
    "hold_before_charge",
    "hold_after_charge",
];

/// Longest a `hold_*` fault point waits for the order's saga to end.
const HOLD_LIMIT: Duration = Duration::from_secs(120);

/// The saga's state: the order stream, clients for the services it calls,
/// the payment tokens, and how compensation retries are reported.
pub struct Saga {
    pub events: EventLog,
    pub client: ServiceClient,
    pub tokens: PaymentTokens,
    pub retries: CompensationRetries,
    /// Test-only fault hook: abort the process (or hold the step) at these points.
    pub fault_at: Vec<String>,
}

/// How the saga's consumer retries: every step failing transiently is
/// redelivered after a backoff that doubles up to `retry_max`.
#[derive(Debug, Clone)]
pub struct SagaSettings {
    /// How soon another instance takes over a step from one that stopped answering.
    pub ack_wait: Duration,
    /// Steps in progress at once per instance.
    pub concurrency: usize,
    /// Longest wait between two attempts of a failing step.
    pub retry_max: Duration,
    /// Attempts before a transiently failing step is dead-lettered; `None`:
    /// never (a test setting brings the dead letters back).
    pub max_deliver: Option<i64>,
}

/// Counts compensation attempts that failed transiently
/// (`shop_order_compensation_retries_total{step}`) and warns, once per order
/// and instance, when an order's compensation has been failing for `warn_after`.
pub struct CompensationRetries {
    counter: IntCounterVec,
    warn_after: Duration,
    warned: Mutex<HashSet<String>>,
}

/// At most this many orders are remembered as warned about; then the memory starts over.
const MAX_WARNED: usize = 10_000;

impl CompensationRetries {
    /// Registers the counter with the instance's metrics.
    pub fn new(metrics: &Metrics, warn_after: Duration) -> anyhow::Result<Self> {
        let counter = metrics.counter_vec(
            "order_compensation_retries_total",
            "Compensation attempts that failed transiently and will be retried, per step (payment, refund, release, record)",
            &["step"],
        )?;
        Ok(Self {
            counter,
            warn_after,
            warned: Mutex::default(),
        })
    }

    fn failed(&self, order: &Order, step: &str, reason: &str) {
        self.counter.with_label_values(&[step]).inc();
        let now = now_ms();
        let first_warning =
            domain::compensation_stalled(order, now, self.warn_after.as_millis() as u64)
                && self
                    .warned
                    .lock()
                    .map(|mut warned| {
                        if warned.len() >= MAX_WARNED {
                            warned.clear();
                        }
                        warned.insert(order.id.clone())
                    })
                    .unwrap_or(false);
        let failing_for_secs = now.saturating_sub(order.updated_at_ms) / 1000;
        if first_warning {
            tracing::warn!(order_id = %order.id, step, failing_for_secs, reason, "compensation keeps failing; still retrying");
        } else {
            tracing::debug!(order_id = %order.id, step, failing_for_secs, reason, "compensation failed; will retry");
        }
    }

    fn finished(&self, order_id: &str) {
        if let Ok(mut warned) = self.warned.lock() {
            warned.remove(order_id);
        }
    }
}

/// A compensation that did not finish: which part failed, and how.
struct Unfinished {
    step: &'static str,
    error: HandleError,
}

trait AtStep<T> {
    fn at(self, step: &'static str) -> Result<T, Unfinished>;
}

impl<T> AtStep<T> for Result<T, HandleError> {
    fn at(self, step: &'static str) -> Result<T, Unfinished> {
        self.map_err(|error| Unfinished { step, error })
    }
}

#[derive(Debug, Deserialize)]
struct ChargeReply {
    payment_id: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

fn transient(e: ServiceError) -> HandleError {
    HandleError::Transient(e.to_string())
}

/// A failure of a call another service may answer differently later.
fn retryable(e: &ServiceError) -> bool {
    e.is_transient() || e.code >= 500
}

/// The waits between attempts of a failing step: 0.2, 0.5, 1 s, then doubling
/// from 2 s, capped at `max` (the last value repeats for every later attempt).
pub fn retry_backoff(max: Duration) -> Vec<Duration> {
    let mut waits = vec![
        Duration::from_millis(200),
        Duration::from_millis(500),
        Duration::from_secs(1),
    ];
    let mut next = Duration::from_secs(2);
    while next < max {
        waits.push(next);
        next *= 2;
    }
    waits.retain(|w| *w < max);
    waits.push(max.max(Duration::from_millis(100)));
    waits
}

impl Saga {
    fn at_fault(&self, point: &str) -> bool {
        self.fault_at.iter().any(|p| p == point)
    }

    fn fault(&self, point: &str) {
        if self.at_fault(point) {
            tracing::error!(
                point,
                "ORDER_FAULT_AT reached: aborting the process (test-only fault hook)"
            );
            std::process::abort();
        }
    }

    /// Test-only: holds the step here until the order's saga has ended.
    async fn hold(&self, point: &str, order: &Order) {
        if !self.at_fault(point) {
            return;
        }
        tracing::warn!(
            point,
            order_id = %order.id,
            "ORDER_FAULT_AT reached: holding the step until the order's saga ends (test-only fault hook)"
        );
        let state = self.events.state();
        let until = tokio::time::Instant::now() + HOLD_LIMIT;
        let ended = |id: &str| {
            store::order(state.tree(), id)
                .ok()
                .flatten()
                .is_some_and(|o| o.status.is_final())
        };
        while tokio::time::Instant::now() < until && !ended(&order.id) {
            let _ = state
                .wait_for(state.applied() + 1, Duration::from_millis(200))
                .await;
        }
        tracing::warn!(point, order_id = %order.id, "ORDER_FAULT_AT: the held step goes on");
    }

    /// Whether the local state has a later revision of `order` than the one
    /// this step runs for (a later event drives the saga from there).
    fn moved_on(&self, order: &Order) -> bool {
        store::order(self.events.state().tree(), &order.id)
            .ok()
            .flatten()
            .is_some_and(|current| current.revision != order.revision)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        subject: &str,
        body: serde_json::Value,
        trace: &TraceContext,
    ) -> Result<T, ServiceError> {
        // Every saga call is idempotent by its derived key, so retrying is safe.
        let options = CallOptions::default()
            .idempotent()
            .retries(2)
            .timeout(Duration::from_secs(3));
        self.client.call(subject, &body, options, Some(trace)).await
    }

    /// Records `change(order)` unless another event moved the order on first
    /// (then nothing is appended and the order as it is now comes back). A
    /// change the state machine refuses is a permanent failure.
    async fn advance(
        &self,
        order: &Order,
        trace: &TraceContext,
        change: impl Fn(&Order) -> Result<Order, ServiceError>,
    ) -> Result<Recorded, HandleError> {
        let msg_id = format!("order.saga:{}:{}", order.id, order.revision);
        let mut refused = None;
        let recorded =
            record_order(
                &self.events,
                trace,
                &order.id,
                Some(msg_id),
                |current| match current {
                    Some(current) if current.revision == order.revision => match change(current) {
                        Ok(next) => Ok(Some(OrderEvent::new(next))),
                        Err(e) => {
                            refused = Some(e);
                            Ok(None)
                        }
                    },
                    _ => Ok(None),
                },
            )
            .await
            .map_err(transient)?;
        match refused {
            Some(e) => Err(HandleError::Permanent(format!("order {}: {e}", order.id))),
            None => Ok(recorded),
        }
    }

    async fn cancel(
        &self,
        order: &Order,
        why: &str,
        trace: &TraceContext,
    ) -> Result<(), HandleError> {
        tracing::info!(order_id = %order.id, reason = why, "order cancelling");
        self.advance(order, trace, |o| domain::start_cancelling(o, why, now_ms()))
            .await
            .map(|_| ())
    }

    async fn reserve(&self, order: &Order, trace: &TraceContext) -> Result<(), HandleError> {
        for (index, line) in order.items.iter().enumerate() {
            let body = json!({"product_id": line.product_id, "quantity": line.quantity, "reservation_id": order.reservation_id(index)});
            match self
                .call::<serde_json::Value>("product.stock.reserve", body, trace)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 409 => {
                    return self.cancel(order, reason::OUT_OF_STOCK, trace).await
                }
                Err(e) if e.code == 404 => {
                    return self.cancel(order, reason::PRODUCT_UNAVAILABLE, trace).await
                }
                Err(e) => return Err(transient(e)),
            }
        }
        self.fault("after_reserve");
        // No `stock_reserved` record: the charge goes out at once, and an
        // order cancelled meanwhile voids its key (compensation), so the
        // record would only cost an append and a saga round per order.
        self.charge(order, trace).await
    }

    /// `payment.charge` with the order's key: captures once, however often sent.
    async fn send_charge(
        &self,
        order: &Order,
        token: &str,
        trace: &TraceContext,
    ) -> Result<ChargeReply, ServiceError> {
        let body = json!({
            "order_id": order.id,
            "user_id": order.user_id,
            "amount_cents": order.total_cents,
            "currency": order.currency,
            "payment_token": token,
            "idempotency_key": order.charge_key(),
        });
        self.call::<ChargeReply>("payment.charge", body, trace)
            .await
    }

    async fn charge(&self, order: &Order, trace: &TraceContext) -> Result<(), HandleError> {
        let Some(token) = self.tokens.get(&order.id).await.map_err(transient)? else {
            return self.cancel(order, reason::PAYMENT_TOKEN_LOST, trace).await;
        };
        if self.moved_on(order) {
            // Cancelled (or re-driven) meanwhile: the later event decides.
            return Ok(());
        }
        self.hold("hold_before_charge", order).await;
        let reply = match self.send_charge(order, &token, trace).await {
            Ok(reply) => reply,
            Err(e) if retryable(&e) => return Err(transient(e)),
            Err(_) => return self.cancel(order, reason::PAYMENT_FAILED, trace).await,
        };
        if reply.status == "voided" {
            // Compensation voided the key: the order was cancelled meanwhile.
            tracing::info!(order_id = %order.id, "charge refused: the order's cancellation voided its key");
            return Ok(());
        }
        if reply.status != "captured" {
            tracing::info!(order_id = %order.id, reason = ?reply.reason, "payment declined");
            return self.cancel(order, reason::PAYMENT_DECLINED, trace).await;
        }
        self.fault("after_charge");
        self.hold("hold_after_charge", order).await;
        self.fault("before_confirm");
        // The capture and the confirmation are one record: confirming does
        // nothing outside this service, so a separate `paid` event would only
        // cost an append (and a saga round) per order. A crash before it
        // lands replays this step, whose charge answers the same capture.
        let payment_id = reply.payment_id.clone();
        let recorded = self
            .advance(order, trace, |o| {
                let mut next = domain::advance(o, Status::Confirmed, now_ms())?;
                next.payment_id = Some(payment_id.clone());
                Ok(next)
            })
            .await?;
        if let Recorded::Appended(_) = recorded {
            self.tokens.forget(&order.id);
            tracing::info!(order_id = %order.id, "order confirmed");
        }
        let now = recorded
            .order()
            .ok_or_else(|| HandleError::Transient(format!("order {} vanished", order.id)))?;
        if domain::capture_orphaned(&now, &reply.payment_id) {
            // Cancelled between the capture and its recording: give the money
            // back now. Compensation's void finds the capture too (same refund
            // key), so a failure here loses nothing.
            tracing::info!(order_id = %order.id, payment_id = %reply.payment_id, "charge captured after the order was cancelled; refunding it");
            if let Err(e) = self.refund(order, &reply.payment_id, trace).await {
                tracing::warn!(order_id = %order.id, payment_id = %reply.payment_id, error = %e, "refunding the unrecorded capture failed; compensation refunds it");
            }
        }
        Ok(())
    }

    async fn refund(
        &self,
        order: &Order,
        payment_id: &str,
        trace: &TraceContext,
    ) -> Result<(), HandleError> {
        let body = json!({"payment_id": payment_id, "idempotency_key": order.refund_key()});
        match self
            .call::<serde_json::Value>("payment.refund", body, trace)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if retryable(&e) => Err(transient(e)),
            Err(e) => Err(HandleError::Permanent(format!(
                "refunding {payment_id} for order {}: {e}",
                order.id
            ))),
        }
    }

    /// The captured payment compensation must refund, if any (see the module docs).
    async fn money_to_return(
        &self,
        order: &Order,
        trace: &TraceContext,
    ) -> Result<Option<String>, HandleError> {
        match domain::payment_check(order) {
            PaymentCheck::Nothing => Ok(None),
            PaymentCheck::Refund(payment_id) => Ok(Some(payment_id)),
            PaymentCheck::Void => self.void_charge(order, trace).await,
        }
    }

    /// `payment.void` with the order's key: its answer is the key's final
    /// outcome, and no charge can land under the key afterwards.
    async fn void_charge(
        &self,
        order: &Order,
        trace: &TraceContext,
    ) -> Result<Option<String>, HandleError> {
        let body = json!({
            "order_id": order.id,
            "user_id": order.user_id,
            "amount_cents": order.total_cents,
            "currency": order.currency,
            "idempotency_key": order.charge_key(),
        });
        match self.call::<ChargeReply>("payment.void", body, trace).await {
            Ok(reply) if reply.status == "captured" => Ok(Some(reply.payment_id)),
            Ok(_) => Ok(None),
            Err(e) if retryable(&e) => Err(transient(e)),
            Err(e) => Err(HandleError::Permanent(format!(
                "voiding the charge of order {}: {e}",
                order.id
            ))),
        }
    }

    async fn release_all(&self, order: &Order, trace: &TraceContext) -> Result<(), HandleError> {
        for (index, line) in order.items.iter().enumerate() {
            let body = json!({"product_id": line.product_id, "quantity": line.quantity, "reservation_id": order.reservation_id(index)});
            match self
                .call::<serde_json::Value>("product.stock.release", body, trace)
                .await
            {
                Ok(_) => {}
                // Never reserved under that id (a tombstone is recorded), or the product is gone.
                Err(e) if e.code == 404 => {}
                Err(e) if retryable(&e) => return Err(transient(e)),
                Err(e) => {
                    return Err(HandleError::Permanent(format!(
                        "releasing {} for order {}: {e}",
                        line.product_id, order.id
                    )))
                }
            }
        }
        Ok(())
    }

    /// Refund what was captured, release every line, record `cancelled`.
    async fn try_compensate(&self, order: &Order, trace: &TraceContext) -> Result<(), Unfinished> {
        if let Some(payment_id) = self.money_to_return(order, trace).await.at("payment")? {
            self.refund(order, &payment_id, trace).await.at("refund")?;
        }
        self.release_all(order, trace).await.at("release")?;
        self.fault("after_compensate");
        let recorded = self
            .advance(order, trace, |o| {
                domain::advance(o, Status::Cancelled, now_ms())
            })
            .await
            .at("record")?;
        if let Recorded::Appended(_) = recorded {
            self.tokens.forget(&order.id);
            tracing::info!(order_id = %order.id, reason = ?order.reason, "order cancelled");
        }
        Ok(())
    }

    async fn compensate(&self, order: &Order, trace: &TraceContext) -> Result<(), HandleError> {
        let outcome = self.try_compensate(order, trace).await;
        match &outcome {
            Ok(()) => self.retries.finished(&order.id),
            Err(Unfinished {
                step,
                error: HandleError::Transient(reason),
            }) => self.retries.failed(order, step, reason),
            Err(Unfinished {
                step,
                error: HandleError::Permanent(reason),
            }) => {
                self.retries.finished(&order.id);
                tracing::error!(order_id = %order.id, step, reason, "compensation cannot finish by itself; the event goes to DEADLETTER for an operator (shop dlq ls, shop dlq replay)");
            }
        }
        outcome.map_err(|unfinished| unfinished.error)
    }

    /// Confirms an order recorded as `paid` (by an earlier version, which
    /// recorded the capture and the confirmation apart).
    async fn confirm(&self, order: &Order, trace: &TraceContext) -> Result<(), HandleError> {
        self.fault("before_confirm");
        let recorded = self
            .advance(order, trace, |o| {
                domain::advance(o, Status::Confirmed, now_ms())
            })
            .await?;
        if let Recorded::Appended(_) = recorded {
            self.tokens.forget(&order.id);
            tracing::info!(order_id = %order.id, "order confirmed");
        }
        Ok(())
    }

    async fn step(&self, order: &Order, trace: &TraceContext) -> Result<(), HandleError> {
        match domain::next_step(order) {
            Step::ReserveAndCharge => self.reserve(order, trace).await,
            Step::Charge => self.charge(order, trace).await,
            Step::Confirm => self.confirm(order, trace).await,
            Step::Compensate => self.compensate(order, trace).await,
            Step::Done => Ok(()),
        }
    }
}

impl EventHandler for Saga {
    fn handle(
        self: Arc<Self>,
        event: ConsumedEvent,
    ) -> BoxFuture<'static, Result<(), HandleError>> {
        async move {
            let recorded: OrderEvent = event.decode()?;
            let state = self.events.state();
            state
                .wait_for(event.stream_sequence, Duration::from_secs(5))
                .await
                .map_err(transient)?;
            let order = store::order(state.tree(), &recorded.order.id)
                .map_err(transient)?
                .ok_or_else(|| {
                    HandleError::Transient(format!(
                        "order {} not in local state yet",
                        recorded.order.id
                    ))
                })?;
            if order.revision != event.stream_sequence {
                // A later event of this order drives the saga from here.
                return Ok(());
            }
            self.step(&order, &event.trace).await
        }
        .boxed()
    }
}

/// The saga's durable consumer (the one [`crate::declaration`] declares).
pub fn consumer(saga: Arc<Saga>, settings: &SagaSettings) -> ConsumerSpec {
    let mut consumer = ConsumerSpec::new(DURABLE, crate::STREAM, FILTERS, saga);
    consumer.ack_wait = settings.ack_wait;
    consumer.concurrency = settings.concurrency;
    consumer.max_deliver = settings.max_deliver.unwrap_or(i64::MAX);
    consumer.backoff = retry_backoff(settings.retry_max);
    consumer
}

/// Cancels orders whose saga has not finished within `deadline` (their
/// forward steps keep failing). Every instance sweeps; the revision check lets
/// only one cancel each order. Orders already `cancelling` are not touched:
/// their compensation is retried by the consumer until it finishes.
pub async fn sweep_overdue(saga: Arc<Saga>, deadline: Duration) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = now_ms();
        let cutoff = now.saturating_sub(deadline.as_millis() as u64);
        let overdue = match store::active_before(saga.events.state().tree(), cutoff) {
            Ok(orders) => orders,
            Err(e) => {
                tracing::warn!(error = %e, "sweeping overdue orders");
                continue;
            }
        };
        for order in overdue
            .into_iter()
            .filter(|o| domain::is_overdue(o, now, deadline.as_millis() as u64))
        {
            let trace = TraceContext::new_root();
            if let Err(e) = saga.cancel(&order, reason::TIMED_OUT, &trace).await {
                tracing::warn!(order_id = %order.id, error = %e, "cancelling an overdue order");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(
            retry_backoff(secs(30.0)),
            [0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0].map(secs)
        );
        assert_eq!(retry_backoff(secs(2.0)), [0.2, 0.5, 1.0, 2.0].map(secs));
        assert_eq!(retry_backoff(secs(0.7)), [0.2, 0.5, 0.7].map(secs));
        assert_eq!(retry_backoff(Duration::ZERO), [secs(0.1)]);
    }
}
