//! Where payment requests are answered, one file per endpoint: `payment.get`
//! from this instance's sled store; charges, voids and refunds in the worker pool,
//! through the payment provider, deciding against the store and appending to
//! the `PAYMENT` stream through [`Payments::change_payment`].

pub mod charge;
pub mod get;
pub mod refund;
pub mod void;

use std::{sync::Arc, time::Duration};

use shop_actors::{Change, Changed, EventLog, HandlerResult, Request, StateHandle};
use shop_nats::{clock::now_ms, ServiceError, TraceContext};
use tokio::time::Instant;

use crate::{
    config::Settings,
    domain::{self, ChargeReply, KeyTerms, PaymentEvent, PaymentRecord},
    provider::{ChargeOutcome, PaymentProvider, ProviderError},
    store,
};

/// Request header with the caller's timeout in milliseconds: a charge or
/// refund answers before it runs out.
pub const TIMEOUT_HEADER: &str = "Shop-Timeout-Ms";
/// Shortest accepted `Shop-Timeout-Ms`.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest accepted `Shop-Timeout-Ms`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(25);

/// The stream subject of one payment's events.
pub fn event_subject(payment_id: &str) -> String {
    format!("events.payment.{payment_id}")
}

/// The payment service's state, shared by every handler.
pub struct Payments {
    events: EventLog,
    provider: Arc<dyn PaymentProvider>,
    /// This instance, named in the payments whose outcome it recorded.
    instance_id: String,
    settings: Settings,
}

/// When the provider must have answered a request: before the reply is
/// due, leaving time to store the outcome.
#[derive(Debug, Clone, Copy)]
struct Deadline {
    provider: Instant,
}

impl Payments {
    /// The handlers' state: the event log, the provider, this instance's id.
    pub fn new(
        events: EventLog,
        provider: Arc<dyn PaymentProvider>,
        instance_id: String,
        settings: Settings,
    ) -> Self {
        Self {
            events,
            provider,
            instance_id,
            settings,
        }
    }

    fn state(&self) -> &StateHandle {
        self.events.state()
    }

    /// The payment and its charge attempt as this instance has them.
    fn record(&self, payment_id: &str) -> Result<Option<PaymentRecord>, ServiceError> {
        store::record(self.state().tree(), payment_id)
    }

    /// The request's deadlines, from its `Shop-Timeout-Ms` header or the default.
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
        Ok(Deadline { provider })
    }

    /// Decides with `decide` against the payment as this instance has it and
    /// appends the event it returns, with that payment's revision as the
    /// expected one (0: the payment must not exist yet).
    async fn change_payment<F>(
        &self,
        trace: &TraceContext,
        payment_id: &str,
        msg_id: Option<String>,
        mut decide: F,
    ) -> Result<Changed<PaymentEvent>, ServiceError>
    where
        F: FnMut(Option<&PaymentRecord>) -> Result<Option<PaymentEvent>, ServiceError>,
    {
        self.events
            .change(payment_id, trace, msg_id, |tree| {
                let current = store::record(tree, payment_id)?;
                let expected_revision = current.as_ref().map_or(0, |r| r.payment.revision);
                Ok(decide(current.as_ref())?.map(|event| Change {
                    subject: event_subject(payment_id),
                    expected_revision,
                    event,
                }))
            })
            .await
    }
}

impl Payments {
    /// Records the provider's answer for a key (see [`domain::decide_outcome`])
    /// and answers the payment as recorded: by this request, or by another
    /// one that recorded the key's outcome first.
    async fn record_outcome(
        &self,
        request: &Request,
        terms: &KeyTerms<'_>,
        outcome: ChargeOutcome,
    ) -> HandlerResult {
        let id = terms.payment_id;
        let changed = self
            .change_payment(
                &request.trace,
                id,
                Some(format!("payment.outcome:{id}")),
                |current| {
                    domain::decide_outcome(current, terms, &self.instance_id, now_ms(), outcome)
                },
            )
            .await?;
        let payment = match changed.appended() {
            Some((event, revision)) => {
                tracing::info!(
                    payment_id = id,
                    order_id = terms.order_id,
                    outcome = event.kind.type_name(),
                    revision,
                    "payment recorded"
                );
                let mut payment = event.payment;
                payment.revision = revision;
                payment
            }
            None => {
                self.record(id)?
                    .ok_or_else(|| domain::not_found(id))?
                    .payment
            }
        };
        request.encode(&ChargeReply::from(&payment))
    }
}

/// A permanent refusal of a request by the provider (a key reused for
/// another amount, a request it cannot take): a 409, with nothing recorded.
fn provider_refused(error: &ProviderError) -> Option<impl Fn(&str) -> ServiceError + '_> {
    match error {
        ProviderError::Permanent(reason) => Some(move |what: &str| {
            tracing::warn!(what, reason = %reason, "the provider refused the request; nothing recorded");
            ServiceError::conflict(format!(
                "the payment provider refused {what}: {reason}; nothing was recorded"
            ))
        }),
        _ => None,
    }
}

/// The answer to a charge or refund the provider did not settle: it stays
/// pending, and the caller retries with the same key.
fn still_pending(error: &ProviderError, what: &str) -> ServiceError {
    let message = format!("{error}; {what} is pending: retry with the same idempotency_key");
    match error {
        ProviderError::Timeout => ServiceError::timeout(message),
        _ => ServiceError::unavailable(message),
    }
}

/// The calling service whose idempotency keys a request's key is one of: its
/// [`shop_nats::client::CALLER_SERVICE_HEADER`], or none.
pub fn caller_scope(request: &Request) -> &str {
    request
        .header(shop_nats::client::CALLER_SERVICE_HEADER)
        .unwrap_or_default()
}
