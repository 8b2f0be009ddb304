//! Where payment requests are answered: `payment.get` inline from the local
//! store; charges and refunds in the worker pool, through the event log and
//! the payment provider.
//!
//! A charge runs in three steps, each decided by [`domain`] against the
//! payment as the local state has it:
//! 1. claim the charge attempt: append `payment.charge_started` with expected
//!    revision 0 (only one instance anywhere can), or `payment.charge_resumed`
//!    at the payment's revision when the previous attempt gave up or its lease
//!    ran out. Retries that find an open attempt wait for its outcome instead;
//!    retries that find an outcome answer it.
//! 2. the claimant asks the provider, with the payment id as the provider's
//!    idempotency key and transient failures retried until the deadline;
//! 3. it appends the outcome (`payment.captured` / `payment.declined`), or
//!    `payment.charge_unresolved` when the provider gave no answer in time.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::{future::BoxFuture, FutureExt};
use shop_actors::{
    eventlog::Written, Append, EndpointSpec, EventLog, Handler, HandlerResult, Request, StateHandle,
};
use shop_nats::ServiceError;
use tokio::time::Instant;

use crate::{
    domain::{
        self, ChargeCommand, ChargeDecision, ChargeReply, PaymentEvent, PaymentRecord,
        PaymentStatus, RefundDecision, RefundStatus,
    },
    money::Money,
    provider::{
        self, ChargeOutcome, ChargeRequest, DeclineReason, PaymentProvider, ProviderError,
        RefundRequest,
    },
    store,
};

pub const SERVICE: &str = "payment";
/// The stream holding every payment change.
pub const STREAM: &str = "PAYMENT";
pub const STREAM_SUBJECTS: &[&str] = &["events.payment.>"];
/// Request header with the caller's timeout in milliseconds: a charge or
/// refund answers before it runs out.
pub const TIMEOUT_HEADER: &str = "Shop-Timeout-Ms";
/// Shortest and longest accepted `Shop-Timeout-Ms`.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(25);

/// Every subject the service answers.
pub const ENDPOINTS: &[EndpointSpec] = &[
    EndpointSpec {
        name: "charge",
        subject: "payment.charge",
    },
    EndpointSpec {
        name: "refund",
        subject: "payment.refund",
    },
    EndpointSpec {
        name: "get",
        subject: "payment.get",
    },
];

/// How long a read with `min_revision` waits for this instance to catch up.
const MIN_REVISION_WAIT: Duration = Duration::from_secs(2);
/// Longest single wait for the local state before a waiting charge looks again.
const WAIT_SLICE: Duration = Duration::from_millis(200);

/// The stream subject of one payment's events.
pub fn event_subject(payment_id: &str) -> String {
    format!("events.payment.{payment_id}")
}

/// Tunables of the request handling.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Time budget of a request without a `Shop-Timeout-Ms` header.
    pub default_timeout: Duration,
    /// How long an open charge attempt is presumed alive.
    pub lease: Duration,
}

/// When a request must be answered, and when the provider must have answered
/// (earlier, leaving time to store the outcome).
#[derive(Debug, Clone, Copy)]
struct Deadline {
    reply: Instant,
    provider: Instant,
}

pub struct PaymentHandler {
    events: EventLog,
    state: StateHandle,
    provider: Arc<dyn PaymentProvider>,
    instance_id: String,
    settings: Settings,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn append(
    event: &PaymentEvent,
    expected_revision: u64,
    msg_id: String,
) -> Result<Append, ServiceError> {
    let payload = serde_json::to_vec(event)
        .map_err(|e| ServiceError::internal(format!("encoding event: {e}")))?;
    Ok(Append {
        subject: event_subject(&event.payment.payment_id),
        event_type: event.kind.type_name(),
        payload: payload.into(),
        expected_revision: Some(expected_revision),
        msg_id,
    })
}

/// The payment an append produced: as decided, at its new revision.
fn appended_payment(event: &PaymentEvent, revision: u64) -> domain::Payment {
    let mut payment = event.payment.clone();
    payment.revision = revision;
    payment
}

impl PaymentHandler {
    pub fn new(
        events: EventLog,
        provider: Arc<dyn PaymentProvider>,
        instance_id: String,
        settings: Settings,
    ) -> Self {
        let state = events.state().clone();
        Self {
            events,
            state,
            provider,
            instance_id,
            settings,
        }
    }

    fn record(&self, payment_id: &str) -> Result<Option<PaymentRecord>, ServiceError> {
        store::record(self.state.tree(), payment_id)
    }

    fn deadline(&self, request: &Request) -> Result<Deadline, ServiceError> {
        let budget = match request.header(TIMEOUT_HEADER) {
            None => self.settings.default_timeout,
            Some(value) => value
                .trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| {
                    ServiceError::bad_request(format!(
                        "header {TIMEOUT_HEADER} must be a whole number of milliseconds"
                    ))
                })?
                .clamp(MIN_TIMEOUT, MAX_TIMEOUT),
        };
        let now = Instant::now();
        // Answer a little early, so the reply reaches the caller in time.
        let reply = now + budget - (budget / 10).min(Duration::from_millis(250));
        let provider = reply - (budget / 5).min(Duration::from_millis(200));
        Ok(Deadline { reply, provider })
    }

    // ---- get ----------------------------------------------------------------

    fn read_payment(&self, request: &Request, payment_id: &str) -> HandlerResult {
        let record = self
            .record(payment_id)?
            .ok_or_else(|| domain::not_found(payment_id))?;
        request.encode(&record.payment)
    }

    /// `payment.get` when the local state is recent enough; `None` defers to the pool.
    fn get_now(&self, request: &Request) -> Option<HandlerResult> {
        let get: domain::GetPayment = match request.decode() {
            Ok(get) => get,
            Err(e) => return Some(Err(e)),
        };
        let payment_id = match domain::validate_get(&get) {
            Ok(payment_id) => payment_id,
            Err(e) => return Some(Err(e)),
        };
        if get
            .min_revision
            .is_some_and(|min| self.state.applied() < min)
        {
            return None;
        }
        Some(self.read_payment(request, &payment_id))
    }

    async fn get_after_catch_up(&self, request: Request) -> HandlerResult {
        let get: domain::GetPayment = request.decode()?;
        let payment_id = domain::validate_get(&get)?;
        self.state
            .wait_for(get.min_revision.unwrap_or(0), MIN_REVISION_WAIT)
            .await?;
        self.read_payment(&request, &payment_id)
    }

    // ---- charge -------------------------------------------------------------

    async fn charge(&self, request: Request) -> HandlerResult {
        let charge: domain::ChargePayment = request.decode()?;
        let command = domain::validate_charge(&charge)?;
        let deadline = self.deadline(&request)?;
        let id = command.payment_id.as_str();
        let lease_ms = self.settings.lease.as_millis() as u64;
        loop {
            let mut decided = None;
            let written = self
                .events
                .write(id, &request.trace, |state| {
                    let current = store::record(state.tree(), id)?;
                    let expected = current.as_ref().map_or(0, |r| r.payment.revision);
                    let decision = domain::decide_charge(
                        current.as_ref(),
                        &command,
                        &self.instance_id,
                        wall_ms(),
                        lease_ms,
                    )?;
                    let to_append = match &decision {
                        // Too late to ask the provider: leave the attempt to a retry.
                        ChargeDecision::Claim(_) if Instant::now() >= deadline.provider => {
                            return Err(ServiceError::timeout(format!(
                                "no time left to charge {id} before the deadline; retry with the same idempotency_key"
                            )))
                        }
                        // A fresh id: a duplicate can then only be this request's own resend.
                        ChargeDecision::Claim(event) => {
                            Some(append(event, expected, EventLog::new_msg_id())?)
                        }
                        _ => None,
                    };
                    decided = Some(decision);
                    Ok(to_append)
                })
                .await?;
            match (decided, written) {
                (Some(ChargeDecision::Claim(event)), Written::Appended(_)) => {
                    return self
                        .run_charge(&request, &command, event.attempt.number, deadline)
                        .await;
                }
                (Some(ChargeDecision::Done(payment)), _) => {
                    return request.encode(&ChargeReply::from(&payment))
                }
                (Some(ChargeDecision::Wait { attempt, until_ms }), _) => {
                    self.wait_for_attempt(id, attempt, until_ms, deadline.reply)
                        .await?;
                }
                _ => return Err(ServiceError::internal("charge decided nothing")),
            }
        }
    }

    /// Waits until attempt `attempt` of the charge ends, its lease runs out
    /// (`until_ms`), or the request's deadline passes (then 504).
    async fn wait_for_attempt(
        &self,
        payment_id: &str,
        attempt: u32,
        until_ms: u64,
        deadline: Instant,
    ) -> Result<(), ServiceError> {
        tracing::debug!(
            payment_id,
            attempt,
            "another request holds the charge attempt; waiting for its outcome"
        );
        loop {
            let still_open = self.record(payment_id)?.is_some_and(|r| {
                r.payment.status == PaymentStatus::Pending
                    && r.attempt.number == attempt
                    && r.attempt.open
            });
            let now_ms = wall_ms();
            if !still_open || now_ms >= until_ms {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ServiceError::timeout(format!(
                    "charge {payment_id} is still being processed (attempt {attempt}) and had no outcome before the deadline; retry with the same idempotency_key"
                )));
            }
            let slice = (deadline - now)
                .min(Duration::from_millis(until_ms - now_ms))
                .min(WAIT_SLICE);
            // Wakes when anything new reaches the local state; then look again.
            let _ = self.state.wait_for(self.state.applied() + 1, slice).await;
        }
    }

    /// This instance holds attempt `attempt`: asks the provider and records the answer.
    async fn run_charge(
        &self,
        request: &Request,
        command: &ChargeCommand,
        attempt: u32,
        deadline: Deadline,
    ) -> HandlerResult {
        let id = command.payment_id.as_str();
        tracing::info!(
            payment_id = id,
            order_id = %command.order_id,
            amount_cents = command.amount.amount_cents,
            currency = %command.amount.currency,
            attempt,
            provider = self.provider.name(),
            "charge attempt claimed; asking the provider"
        );
        let provider_request = ChargeRequest {
            idempotency_key: id.to_string(),
            amount: command.amount.clone(),
            token: command.token.clone(),
        };
        let result = provider::with_retries(deadline.provider, || {
            self.provider.charge(&provider_request, deadline.provider)
        })
        .await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(ProviderError::Permanent(reason)) => {
                tracing::warn!(
                    payment_id = id,
                    reason,
                    "provider refused the charge; recording it as declined"
                );
                ChargeOutcome::Declined(DeclineReason::ProcessingError)
            }
            Err(error) => return Err(self.charge_unresolved(request, id, attempt, &error).await),
        };
        let mut decided = None;
        let written = self
            .events
            .write(id, &request.trace, |state| {
                let current = store::record(state.tree(), id)?;
                let expected = current.as_ref().map_or(0, |r| r.payment.revision);
                let event = domain::decide_charge_outcome(current.as_ref(), id, outcome)?;
                let to_append = event
                    .as_ref()
                    .map(|e| append(e, expected, format!("payment.outcome:{id}")))
                    .transpose()?;
                decided = event;
                Ok(to_append)
            })
            .await?;
        let payment = match (written, decided) {
            (Written::Appended(appended), Some(event)) if !appended.duplicate => {
                tracing::info!(
                    payment_id = id,
                    attempt,
                    outcome = event.kind.type_name(),
                    revision = appended.revision,
                    "charge recorded"
                );
                appended_payment(&event, appended.revision)
            }
            // Another attempt recorded the outcome first: it is the one that counts.
            _ => {
                self.record(id)?
                    .ok_or_else(|| domain::not_found(id))?
                    .payment
            }
        };
        request.encode(&ChargeReply::from(&payment))
    }

    /// The provider gave no answer: closes the attempt so that a retry may
    /// ask again at once, and tells the caller to retry.
    async fn charge_unresolved(
        &self,
        request: &Request,
        id: &str,
        attempt: u32,
        error: &ProviderError,
    ) -> ServiceError {
        tracing::warn!(payment_id = id, attempt, error = %error, "charge unresolved; it stays pending");
        let message = error.to_string();
        let closed = self
            .events
            .write(id, &request.trace, |state| {
                let current = store::record(state.tree(), id)?;
                let expected = current.as_ref().map_or(0, |r| r.payment.revision);
                domain::decide_charge_unresolved(current.as_ref(), attempt, &message)
                    .map(|e| append(&e, expected, EventLog::new_msg_id()))
                    .transpose()
            })
            .await;
        if let Err(e) = closed {
            tracing::warn!(payment_id = id, attempt, error = %e, "could not close the charge attempt; its lease will");
        }
        let message =
            format!("{error}; charge {id} is pending: retry with the same idempotency_key");
        match error {
            ProviderError::Timeout => ServiceError::timeout(message),
            _ => ServiceError::unavailable(message),
        }
    }

    // ---- refund -------------------------------------------------------------

    async fn refund(&self, request: Request) -> HandlerResult {
        let refund: domain::RefundPayment = request.decode()?;
        let command = domain::validate_refund(&refund)?;
        let deadline = self.deadline(&request)?;
        let id = command.payment_id.as_str();
        let refund_id = command.refund_id.as_str();
        // A payment this instance does not know as captured may only be behind
        // the stream (charged through another instance a moment ago).
        if self
            .record(id)?
            .is_none_or(|r| r.payment.status == PaymentStatus::Pending)
        {
            self.events.catch_up().await?;
        }
        let mut decided = None;
        let written = self
            .events
            .write(id, &request.trace, |state| {
                let current = store::record(state.tree(), id)?;
                let expected = current.as_ref().map_or(0, |r| r.payment.revision);
                let decision = domain::decide_refund(current.as_ref(), &command)?;
                let to_append = match &decision {
                    RefundDecision::Start(event) => Some(append(
                        event,
                        expected,
                        format!("payment.refund_started:{refund_id}"),
                    )?),
                    _ => None,
                };
                let currency = current.map(|r| r.payment.currency).unwrap_or_default();
                decided = Some((decision, currency));
                Ok(to_append)
            })
            .await?;
        let (refund, currency) = match decided {
            Some((RefundDecision::Done(_), _)) => {
                return self.refund_reply(&request, id, refund_id)
            }
            Some((RefundDecision::Start(event), currency)) => match (event.refund, written) {
                (Some(refund), Written::Appended(_)) => (refund, currency),
                _ => return Err(ServiceError::internal("refund start recorded nothing")),
            },
            Some((RefundDecision::Resume(refund), currency)) => (refund, currency),
            None => return Err(ServiceError::internal("refund decided nothing")),
        };
        tracing::info!(
            payment_id = id,
            refund_id,
            amount_cents = refund.amount_cents,
            provider = self.provider.name(),
            "refund started; asking the provider"
        );
        let provider_request = RefundRequest {
            idempotency_key: refund_id.to_string(),
            charge_idempotency_key: id.to_string(),
            amount: Money {
                amount_cents: refund.amount_cents,
                currency,
            },
        };
        let result = provider::with_retries(deadline.provider, || {
            self.provider.refund(&provider_request, deadline.provider)
        })
        .await;
        let result = match result {
            Ok(()) => Ok(()),
            Err(ProviderError::Permanent(reason)) => Err(reason),
            Err(error) => {
                tracing::warn!(payment_id = id, refund_id, error = %error, "refund unresolved; it stays pending");
                let message = format!(
                    "{error}; refund {refund_id} is pending: retry with the same idempotency_key"
                );
                return Err(match error {
                    ProviderError::Timeout => ServiceError::timeout(message),
                    _ => ServiceError::unavailable(message),
                });
            }
        };
        let written = self
            .events
            .write(id, &request.trace, |state| {
                let current = store::record(state.tree(), id)?;
                let expected = current.as_ref().map_or(0, |r| r.payment.revision);
                domain::decide_refund_outcome(current.as_ref(), id, refund_id, result.clone())?
                    .map(|e| append(&e, expected, format!("payment.refund_outcome:{refund_id}")))
                    .transpose()
            })
            .await?;
        if let Written::Appended(appended) = written {
            tracing::info!(
                payment_id = id,
                refund_id,
                revision = appended.revision,
                refunded = result.is_ok(),
                "refund recorded"
            );
        }
        self.refund_reply(&request, id, refund_id)
    }

    /// The answer to a refund, from the local state (which has its outcome).
    fn refund_reply(&self, request: &Request, payment_id: &str, refund_id: &str) -> HandlerResult {
        let payment = self
            .record(payment_id)?
            .ok_or_else(|| domain::not_found(payment_id))?
            .payment;
        let refund = payment.refund(refund_id).ok_or_else(|| {
            ServiceError::unavailable(format!(
                "refund {refund_id} is not in this instance's state yet; retry with the same idempotency_key"
            ))
        })?;
        match refund.status {
            RefundStatus::Refunded => request.encode(&domain::refund_reply(&payment, refund)),
            RefundStatus::Failed => Err(ServiceError::conflict(format!(
                "refund {refund_id} refused by the payment provider: {}",
                refund.reason.as_deref().unwrap_or("no reason given")
            ))),
            RefundStatus::Pending => Err(ServiceError::unavailable(format!(
                "refund {refund_id} is pending: retry with the same idempotency_key"
            ))),
        }
    }
}

impl Handler for PaymentHandler {
    fn inline(&self, endpoint: &'static str, request: &Request) -> Option<HandlerResult> {
        match endpoint {
            "get" => self.get_now(request),
            _ => None,
        }
    }

    fn call(
        self: Arc<Self>,
        endpoint: &'static str,
        request: Request,
    ) -> BoxFuture<'static, HandlerResult> {
        async move {
            match endpoint {
                "get" => self.get_after_catch_up(request).await,
                "charge" => self.charge(request).await,
                "refund" => self.refund(request).await,
                other => Err(ServiceError::not_found(format!(
                    "no handler for endpoint {other}"
                ))),
            }
        }
        .boxed()
    }
}
