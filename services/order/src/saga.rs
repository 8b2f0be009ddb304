//! The order-placement saga: a durable consumer of the order's own stream that
//! all order instances share. Each recorded event triggers the order's next
//! step; each step's outcome is recorded before the next step starts, so when
//! an instance dies at any step, another one resumes from the recorded state.
//! Steps call other services idempotently (derived reservation ids and payment
//! idempotency keys), so a step repeated after a crash has no second effect.

use std::{sync::Arc, time::Duration};

use futures::{future::BoxFuture, FutureExt};
use serde::Deserialize;
use serde_json::json;
use shop_actors::{
    consumer::{ConsumedEvent, ConsumerSpec, EventHandler, HandleError},
    EventLog,
};
use shop_nats::{clock::now_ms, CallOptions, ServiceClient, ServiceError, TraceContext};

use crate::{
    domain::{self, reason, Order, OrderEvent, Status, Step},
    endpoints::change_order,
    store,
    tokens::PaymentTokens,
};

/// Durable name of the saga's consumer, shared by every order instance (they
/// split the work).
pub const DURABLE: &str = "order-saga";
/// What the saga consumes of the `ORDER` stream: every order event.
pub const FILTERS: &[&str] = &["events.order.>"];

/// Where a test may ask an instance to die (`ORDER_FAULT_AT`; test-only).
pub const FAULT_POINTS: &[&str] = &[
    "after_reserve",
    "after_charge",
    "before_confirm",
    "after_compensate",
];

/// The saga's state: the order stream, clients for the services it calls,
/// and the payment tokens.
pub struct Saga {
    pub events: EventLog,
    pub client: ServiceClient,
    pub tokens: PaymentTokens,
    /// Test-only fault hook: abort the process at this point.
    pub fault_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChargeReply {
    payment_id: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PaymentLookup {
    payment_id: String,
    status: String,
}

fn transient(e: ServiceError) -> HandleError {
    HandleError::Transient(e.to_string())
}

impl Saga {
    fn fault(&self, point: &str) {
        if self.fault_at.as_deref() == Some(point) {
            tracing::error!(
                point,
                "ORDER_FAULT_AT reached: aborting the process (test-only fault hook)"
            );
            std::process::abort();
        }
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

    /// Moves `order` to `to`, unless another instance or request moved it first.
    async fn advance(
        &self,
        order: &Order,
        trace: &TraceContext,
        change: impl Fn(&Order) -> Result<Order, ServiceError>,
    ) -> Result<Option<Order>, HandleError> {
        let msg_id = format!("order.saga:{}:{}", order.id, order.revision);
        change_order(
            &self.events,
            trace,
            &order.id,
            Some(msg_id),
            |current| match current {
                Some(current) if current.revision == order.revision => change(current).map(Some),
                _ => Ok(None),
            },
        )
        .await
        .map(|recorded| recorded.filter(|o| o.revision != order.revision))
        .map_err(transient)
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
        self.advance(order, trace, |o| {
            domain::advance(o, Status::StockReserved, now_ms())
        })
        .await
        .map(|_| ())
    }

    async fn charge(&self, order: &Order, trace: &TraceContext) -> Result<(), HandleError> {
        let Some(token) = self.tokens.get(&order.id).await.map_err(transient)? else {
            return self.cancel(order, reason::PAYMENT_FAILED, trace).await;
        };
        let body = json!({
            "order_id": order.id,
            "user_id": order.user_id,
            "amount_cents": order.total_cents,
            "currency": order.currency,
            "payment_token": token,
            "idempotency_key": order.charge_key(),
        });
        let reply = match self
            .call::<ChargeReply>("payment.charge", body, trace)
            .await
        {
            Ok(reply) => reply,
            Err(e) if e.is_client_error() => {
                return self.cancel(order, reason::PAYMENT_FAILED, trace).await
            }
            Err(e) => return Err(transient(e)),
        };
        if reply.status != "captured" {
            tracing::info!(order_id = %order.id, reason = ?reply.reason, "payment declined");
            return self.cancel(order, reason::PAYMENT_DECLINED, trace).await;
        }
        self.fault("after_charge");
        let payment_id = reply.payment_id.clone();
        let paid = self
            .advance(order, trace, |o| {
                let mut next = domain::advance(o, Status::Paid, now_ms())?;
                next.payment_id = Some(payment_id.clone());
                Ok(next)
            })
            .await?;
        if paid.is_none() {
            // The order moved on (cancelled meanwhile): the money must go back.
            self.refund(order, &reply.payment_id, trace).await?;
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
            Err(e) if e.is_transient() || e.code >= 500 => Err(transient(e)),
            Err(e) => Err(HandleError::Permanent(format!(
                "refunding {payment_id} for order {}: {e}",
                order.id
            ))),
        }
    }

    /// The payment captured for this order, if any, even when the order never
    /// recorded it (the instance died between the charge and recording it). A
    /// charge whose outcome is still pending (its provider call timed out) is
    /// settled first by sending it again with the same key.
    async fn captured_payment(
        &self,
        order: &Order,
        trace: &TraceContext,
    ) -> Result<Option<String>, HandleError> {
        if let Some(id) = &order.payment_id {
            return Ok(Some(id.clone()));
        }
        let payment = match self
            .call::<PaymentLookup>(
                "payment.get",
                json!({"idempotency_key": order.charge_key()}),
                trace,
            )
            .await
        {
            Ok(payment) => payment,
            Err(e) if e.code == 404 => return Ok(None),
            Err(e) => return Err(transient(e)),
        };
        match payment.status.as_str() {
            "captured" => Ok(Some(payment.payment_id)),
            "pending" => {
                let Some(token) = self.tokens.get(&order.id).await.map_err(transient)? else {
                    return Err(HandleError::Permanent(format!(
                        "payment {} of order {} is pending and its token is gone",
                        payment.payment_id, order.id
                    )));
                };
                let body = json!({
                    "order_id": order.id,
                    "user_id": order.user_id,
                    "amount_cents": order.total_cents,
                    "currency": order.currency,
                    "payment_token": token,
                    "idempotency_key": order.charge_key(),
                });
                match self
                    .call::<ChargeReply>("payment.charge", body, trace)
                    .await
                {
                    Ok(reply) if reply.status == "captured" => Ok(Some(reply.payment_id)),
                    Ok(_) => Ok(None),
                    Err(e) => Err(transient(e)),
                }
            }
            _ => Ok(None),
        }
    }

    async fn compensate(&self, order: &Order, trace: &TraceContext) -> Result<(), HandleError> {
        if let Some(payment_id) = self.captured_payment(order, trace).await? {
            self.refund(order, &payment_id, trace).await?;
        }
        for (index, line) in order.items.iter().enumerate() {
            let body = json!({"product_id": line.product_id, "quantity": line.quantity, "reservation_id": order.reservation_id(index)});
            match self
                .call::<serde_json::Value>("product.stock.release", body, trace)
                .await
            {
                Ok(_) => {}
                // Never reserved under that id (a tombstone is recorded), or the product is gone.
                Err(e) if e.code == 404 => {}
                Err(e) if e.is_client_error() => {
                    return Err(HandleError::Permanent(format!(
                        "releasing {} for order {}: {e}",
                        line.product_id, order.id
                    )))
                }
                Err(e) => return Err(transient(e)),
            }
        }
        self.fault("after_compensate");
        if self
            .advance(order, trace, |o| {
                domain::advance(o, Status::Cancelled, now_ms())
            })
            .await?
            .is_some()
        {
            self.tokens.forget(&order.id).await;
            tracing::info!(order_id = %order.id, reason = ?order.reason, "order cancelled");
        }
        Ok(())
    }

    async fn confirm(&self, order: &Order, trace: &TraceContext) -> Result<(), HandleError> {
        self.fault("before_confirm");
        if self
            .advance(order, trace, |o| {
                domain::advance(o, Status::Confirmed, now_ms())
            })
            .await?
            .is_some()
        {
            self.tokens.forget(&order.id).await;
            tracing::info!(order_id = %order.id, "order confirmed");
        }
        Ok(())
    }

    async fn step(&self, order: &Order, trace: &TraceContext) -> Result<(), HandleError> {
        match domain::next_step(order) {
            Step::ReserveStock => self.reserve(order, trace).await,
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

/// The saga's durable consumer (the one [`crate::declaration`] declares):
/// `ack_wait` before another instance takes over a step of one that stopped
/// answering, `concurrency` steps at once per instance.
pub fn consumer(saga: Arc<Saga>, ack_wait: Duration, concurrency: usize) -> ConsumerSpec {
    let mut consumer = ConsumerSpec::new(DURABLE, crate::STREAM, FILTERS, saga);
    consumer.ack_wait = ack_wait;
    consumer.concurrency = concurrency;
    consumer.max_deliver = 10;
    consumer.backoff = vec![
        Duration::from_millis(200),
        Duration::from_millis(500),
        Duration::from_secs(1),
        Duration::from_secs(2),
    ];
    consumer
}

/// Cancels orders whose saga has not finished within `deadline` (their steps
/// keep failing, or their events were dead-lettered). Every instance sweeps;
/// the revision check lets only one cancel each order.
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
