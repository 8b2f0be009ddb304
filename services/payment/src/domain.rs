//! Payments, their requests, events and every rule about them, as plain
//! functions: what is valid, and what a request turns into given the payment's
//! current state.
//!
//! A payment is one aggregate, named by its id, which is derived from the
//! charge's idempotency key: every retry of a charge lands on the same
//! aggregate, whichever instance takes it. A payment is recorded once the
//! provider has answered its key, as `captured`, `declined` or `voided` (a
//! `payment.void` ended a key nothing was charged under: no charge can land
//! under it any more); a captured payment then takes refunds up to its
//! amount. The provider deduplicates by key and answers a key alike once it
//! has an outcome, so it is where concurrent requests of a key meet.
//! (`pending` payments were recorded by earlier versions, which claimed an
//! attempt before asking the provider.)

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use shop_nats::ServiceError;
use uuid::Uuid;

use crate::{
    money::{validate_amount, validate_currency, Money},
    provider::{ChargeOutcome, DeclineReason, PaymentToken},
};

pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;
pub const MAX_TOKEN_LEN: usize = 200;
/// Refunds one payment may take (as processors limit them too).
pub const MAX_REFUNDS: usize = 100;

/// Namespace of the name-based (v5) uuids that payment ids are.
const PAYMENT_NAMESPACE: Uuid = Uuid::from_u128(0x5d1c_9f6e_2b4a_4e0f_9a61_7c3e_8b2d_f401);

// ---- state ------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Earlier versions only: the charge was being processed, outcome unknown.
    Pending,
    Captured,
    Declined,
    /// Voided before any charge went through: the key never charges.
    Voided,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Amount reserved, provider not confirmed yet; a retry with the same key completes it.
    Pending,
    Refunded,
    /// The provider refused it; the amount is refundable again under another key.
    Failed,
}

/// One refund of a payment. Its id is derived from the refund's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub amount_cents: i64,
    pub status: RefundStatus,
    /// Why the provider refused it.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A payment as `payment.get` shows it and events carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: String,
    pub order_id: String,
    /// The user the charge is for: who (besides admins) may read it.
    /// Payments recorded before it was kept have none (admins only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub status: PaymentStatus,
    /// Why it was declined.
    #[serde(default)]
    pub reason: Option<DeclineReason>,
    pub amount_cents: i64,
    pub currency: String,
    /// Sum of the refunds the provider confirmed.
    pub refunded_cents: i64,
    pub refunds: Vec<Refund>,
    /// Stream sequence of the payment's last change.
    pub revision: u64,
    /// A fingerprint of the payment token it was charged with (never the
    /// token): a retry of the key with another token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_fingerprint: Option<String>,
}

impl Payment {
    /// What may still be refunded: the amount less confirmed and pending refunds.
    pub fn refundable_cents(&self) -> i64 {
        let pending: i64 = self
            .refunds
            .iter()
            .filter(|r| r.status == RefundStatus::Pending)
            .map(|r| r.amount_cents)
            .sum();
        self.amount_cents - self.refunded_cents - pending
    }

    pub fn refund(&self, refund_id: &str) -> Option<&Refund> {
        self.refunds.iter().find(|r| r.refund_id == refund_id)
    }
}

/// Which instance asked the provider for the outcome a payment records, and
/// when. (Earlier versions claimed charge attempts before asking the
/// provider, with a lease; their `pending` payments carry the open attempt.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeAttempt {
    pub number: u32,
    /// Instance id of the holder.
    pub owner: String,
    /// Wall-clock start (ms since the Unix epoch), by the holder's clock.
    pub started_at_ms: u64,
    pub open: bool,
    /// Why the last attempt ended without an outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Everything the service keeps about a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub payment: Payment,
    pub attempt: ChargeAttempt,
}

// ---- requests ---------------------------------------------------------------

/// `payment.charge`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChargePayment {
    pub order_id: String,
    /// The user the charge is for (the order's), kept with the payment.
    pub user_id: String,
    pub amount_cents: i64,
    pub currency: String,
    pub payment_token: PaymentToken,
    /// Names the charge: the same key never charges twice.
    pub idempotency_key: String,
}

/// `payment.void`: the charge `idempotency_key` names must never go through.
/// It is the charge's request without the token; the answer is the key's
/// final outcome (`voided`, or what a charge under it got).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidPayment {
    pub order_id: String,
    pub user_id: String,
    pub amount_cents: i64,
    pub currency: String,
    pub idempotency_key: String,
}

/// `payment.refund`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundPayment {
    pub payment_id: String,
    /// Absent: everything still refundable.
    #[serde(default)]
    pub amount_cents: Option<i64>,
    /// When given, must be the payment's currency.
    #[serde(default)]
    pub currency: Option<String>,
    /// Names the refund: the same key never refunds twice.
    pub idempotency_key: String,
}

/// `payment.get`: by `payment_id`, or by the charge's `idempotency_key`
/// (for a caller that lost the reply of its charge); exactly one of them.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetPayment {
    #[serde(default)]
    pub payment_id: Option<String>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Answer only from state that includes this revision (waits briefly for it).
    #[serde(default)]
    pub min_revision: Option<u64>,
}

/// The charge an idempotency key names, checked: what a charge request and a
/// void request both carry (a void is a charge's request without the token).
#[derive(Debug, Clone)]
pub struct ChargeKey {
    pub payment_id: String,
    pub order_id: String,
    pub user_id: String,
    pub amount: Money,
}

/// A checked charge request.
#[derive(Debug, Clone)]
pub struct ChargeCommand {
    pub key: ChargeKey,
    pub token: PaymentToken,
    pub token_fingerprint: String,
}

/// A checked refund request.
#[derive(Debug, Clone)]
pub struct RefundCommand {
    pub payment_id: String,
    pub refund_id: String,
    pub amount_cents: Option<i64>,
    pub currency: Option<String>,
}

// ---- replies ----------------------------------------------------------------

/// The answer to `payment.charge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeReply {
    pub payment_id: String,
    pub order_id: String,
    pub status: PaymentStatus,
    #[serde(default)]
    pub reason: Option<DeclineReason>,
    pub amount_cents: i64,
    pub currency: String,
    pub revision: u64,
}

impl From<&Payment> for ChargeReply {
    fn from(p: &Payment) -> Self {
        Self {
            payment_id: p.payment_id.clone(),
            order_id: p.order_id.clone(),
            status: p.status,
            reason: p.reason,
            amount_cents: p.amount_cents,
            currency: p.currency.clone(),
            revision: p.revision,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundReplyStatus {
    /// Nothing is left to refund.
    Refunded,
    PartiallyRefunded,
}

/// The answer to `payment.refund`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundReply {
    pub payment_id: String,
    pub refund_id: String,
    pub amount_cents: i64,
    /// Everything refunded of the payment so far.
    pub refunded_cents: i64,
    pub status: RefundReplyStatus,
    pub revision: u64,
}

// ---- events -----------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Earlier versions only: first attempt of a charge claimed (`pending`).
    #[serde(rename = "payment.charge_started")]
    ChargeStarted,
    /// Earlier versions only: a later attempt claimed.
    #[serde(rename = "payment.charge_resumed")]
    ChargeResumed,
    /// Earlier versions only: an attempt ended without an answer.
    #[serde(rename = "payment.charge_unresolved")]
    ChargeUnresolved,
    #[serde(rename = "payment.captured")]
    Captured,
    #[serde(rename = "payment.declined")]
    Declined,
    /// The key is voided: it never charges.
    #[serde(rename = "payment.voided")]
    Voided,
    /// A refund's amount reserved before the provider is asked.
    #[serde(rename = "payment.refund_started")]
    RefundStarted,
    #[serde(rename = "payment.refunded")]
    Refunded,
    #[serde(rename = "payment.refund_failed")]
    RefundFailed,
}

impl EventKind {
    pub fn type_name(self) -> &'static str {
        match self {
            EventKind::ChargeStarted => "payment.charge_started",
            EventKind::ChargeResumed => "payment.charge_resumed",
            EventKind::ChargeUnresolved => "payment.charge_unresolved",
            EventKind::Captured => "payment.captured",
            EventKind::Declined => "payment.declined",
            EventKind::Voided => "payment.voided",
            EventKind::RefundStarted => "payment.refund_started",
            EventKind::Refunded => "payment.refunded",
            EventKind::RefundFailed => "payment.refund_failed",
        }
    }
}

/// A change to one payment, as stored in the stream: the payment and its
/// charge attempt as they are after the change (the payment's `revision` is the
/// one it replaced), and the refund the change is about, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEvent {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub payment: Payment,
    pub attempt: ChargeAttempt,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<Refund>,
}

impl PaymentEvent {
    fn new(kind: EventKind, record: PaymentRecord, refund: Option<Refund>) -> Self {
        Self {
            kind,
            payment: record.payment,
            attempt: record.attempt,
            refund,
        }
    }

    pub fn record(&self) -> PaymentRecord {
        PaymentRecord {
            payment: self.payment.clone(),
            attempt: self.attempt.clone(),
        }
    }
}

impl shop_actors::Event for PaymentEvent {
    fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }
}

// ---- ids and validation -----------------------------------------------------

/// The payment a charge's idempotency key names, within the calling service's
/// keys (`scope`, from [`shop_nats::client::CALLER_SERVICE_HEADER`]; empty for
/// a call that names no service): two services using the same key name two
/// payments.
pub fn payment_id_for(scope: &str, idempotency_key: &str) -> String {
    let name = match scope {
        "" => idempotency_key.to_string(),
        scope => format!("{scope}\u{0}{idempotency_key}"),
    };
    Uuid::new_v5(&PAYMENT_NAMESPACE, name.as_bytes())
        .simple()
        .to_string()
}

/// What a payment remembers of its token: enough to tell a retry with another
/// token apart, nothing to charge with (SHA-256, first 16 bytes, hex).
pub fn token_fingerprint(token: &PaymentToken) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.expose().as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The refund a refund's idempotency key names, within its payment.
pub fn refund_id_for(payment_id: &str, idempotency_key: &str) -> String {
    let namespace = Uuid::new_v5(&PAYMENT_NAMESPACE, payment_id.as_bytes());
    Uuid::new_v5(&namespace, idempotency_key.as_bytes())
        .simple()
        .to_string()
}

/// Ids become subject tokens and store keys.
pub use shop_nats::subject::validate_token as validate_id;

fn validate_idempotency_key(key: &str) -> Result<(), ServiceError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || key.chars().any(char::is_control) {
        return Err(ServiceError::bad_request(format!(
            "idempotency_key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

/// The message never repeats the token.
fn validate_token(token: &PaymentToken) -> Result<(), ServiceError> {
    let value = token.expose();
    if value.is_empty()
        || value.len() > MAX_TOKEN_LEN
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ServiceError::bad_request(format!(
            "payment_token must be 1-{MAX_TOKEN_LEN} characters of letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// Checks a charge request from the service `scope` names (see [`payment_id_for`]).
pub fn validate_charge(
    request: &ChargePayment,
    scope: &str,
) -> Result<ChargeCommand, ServiceError> {
    let key = charge_key(
        [
            &request.order_id,
            &request.user_id,
            &request.idempotency_key,
        ],
        (request.amount_cents, &request.currency),
        scope,
    )?;
    validate_token(&request.payment_token)?;
    Ok(ChargeCommand {
        key,
        token: request.payment_token.clone(),
        token_fingerprint: token_fingerprint(&request.payment_token),
    })
}

/// Checks a void request from the service `scope` names (see [`payment_id_for`]).
pub fn validate_void(request: &VoidPayment, scope: &str) -> Result<ChargeKey, ServiceError> {
    charge_key(
        [
            &request.order_id,
            &request.user_id,
            &request.idempotency_key,
        ],
        (request.amount_cents, &request.currency),
        scope,
    )
}

/// Checks `[order_id, user_id, idempotency_key]` and the amount of a charge's
/// request (or a void's), and names its payment within `scope`'s keys.
fn charge_key(
    [order_id, user_id, idempotency_key]: [&String; 3],
    (amount_cents, currency): (i64, &str),
    scope: &str,
) -> Result<ChargeKey, ServiceError> {
    validate_id("order_id", order_id)?;
    validate_id("user_id", user_id)?;
    validate_idempotency_key(idempotency_key)?;
    Ok(ChargeKey {
        payment_id: payment_id_for(scope, idempotency_key),
        order_id: order_id.clone(),
        user_id: user_id.clone(),
        amount: Money::new(amount_cents, currency)?,
    })
}

/// The payment a get request names; a key is looked up within `scope`'s keys.
pub fn validate_get(request: &GetPayment, scope: &str) -> Result<String, ServiceError> {
    match (&request.payment_id, &request.idempotency_key) {
        (Some(payment_id), None) => {
            validate_id("payment_id", payment_id)?;
            Ok(payment_id.clone())
        }
        (None, Some(key)) => {
            validate_idempotency_key(key)?;
            Ok(payment_id_for(scope, key))
        }
        _ => Err(ServiceError::bad_request(
            "give exactly one of payment_id or idempotency_key",
        )),
    }
}

pub fn validate_refund(request: &RefundPayment) -> Result<RefundCommand, ServiceError> {
    validate_id("payment_id", &request.payment_id)?;
    validate_idempotency_key(&request.idempotency_key)?;
    let amount_cents = request
        .amount_cents
        .map(|a| validate_amount("amount_cents", a))
        .transpose()?;
    let currency = request
        .currency
        .as_deref()
        .map(validate_currency)
        .transpose()?;
    Ok(RefundCommand {
        refund_id: refund_id_for(&request.payment_id, &request.idempotency_key),
        payment_id: request.payment_id.clone(),
        amount_cents,
        currency,
    })
}

pub fn not_found(payment_id: &str) -> ServiceError {
    ServiceError::not_found(format!("payment {payment_id} not found"))
}

/// `payment` if `caller` may read it (its user, or an admin); otherwise the
/// same 404 as an unknown payment.
pub fn visible_to(
    caller: &shop_nats::auth::Caller,
    payment: Payment,
) -> Result<Payment, ServiceError> {
    let owner = payment.user_id.as_deref();
    if caller.is_admin() || owner == Some(caller.user_id.as_str()) {
        Ok(payment)
    } else {
        Err(not_found(&payment.payment_id))
    }
}

// ---- charge and void ---------------------------------------------------------

/// What a charge or a void does, given the payment its key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyDecision {
    /// No outcome is recorded for the key: ask the provider. It deduplicates
    /// by key and answers every request of one key alike once it has an
    /// outcome, so whichever request records first records the key's truth.
    AskProvider,
    /// The key has its outcome: answer with it.
    Done(Payment),
}

/// What a key is bound to: the charge it names.
#[derive(Debug, Clone, Copy)]
pub struct KeyTerms<'a> {
    pub payment_id: &'a str,
    pub order_id: &'a str,
    pub user_id: &'a str,
    pub amount: &'a Money,
    /// A charge's token fingerprint; a void carries none.
    pub token_fingerprint: Option<&'a str>,
}

impl ChargeKey {
    /// What a void binds the key to (no token).
    pub fn terms(&self) -> KeyTerms<'_> {
        KeyTerms {
            payment_id: &self.payment_id,
            order_id: &self.order_id,
            user_id: &self.user_id,
            amount: &self.amount,
            token_fingerprint: None,
        }
    }
}

impl ChargeCommand {
    /// What a charge binds the key to: its charge and token.
    pub fn terms(&self) -> KeyTerms<'_> {
        KeyTerms {
            token_fingerprint: Some(&self.token_fingerprint),
            ..self.key.terms()
        }
    }
}

/// A charge or void (`terms`) against the payment its key names. A payment
/// still `pending` was recorded by an earlier version, which claimed charge
/// attempts: the provider knows its outcome.
pub fn decide_key(
    current: Option<&PaymentRecord>,
    terms: &KeyTerms<'_>,
) -> Result<KeyDecision, ServiceError> {
    let Some(record) = current else {
        return Ok(KeyDecision::AskProvider);
    };
    let payment = &record.payment;
    same_charge(payment, terms)?;
    Ok(match payment.status {
        PaymentStatus::Pending => KeyDecision::AskProvider,
        _ => KeyDecision::Done(payment.clone()),
    })
}

/// Refuses a request that reuses a payment's key for a different charge: other
/// order, user, amount or (when the request carries one) token.
fn same_charge(payment: &Payment, terms: &KeyTerms<'_>) -> Result<(), ServiceError> {
    let other_token = matches!(
        (&payment.token_fingerprint, terms.token_fingerprint),
        (Some(kept), Some(given)) if kept != given
    );
    let other_user = payment
        .user_id
        .as_ref()
        .is_some_and(|user| user != terms.user_id);
    if payment.order_id != terms.order_id
        || other_user
        || payment.amount_cents != terms.amount.amount_cents
        || payment.currency != terms.amount.currency
        || other_token
    {
        return Err(ServiceError::conflict(format!(
            "idempotency_key already used for payment {} (order {}, {} {}, another payment token or not); use a new key for a different charge",
            payment.payment_id, payment.order_id, payment.amount_cents, payment.currency
        )));
    }
    Ok(())
}

/// Records the provider's answer for a key: the payment created with it
/// (expected revision 0, so only the first answer recorded counts), or a
/// `pending` one settled; nothing when the payment already has its outcome
/// (the provider answers a key alike, so it is the same). `owner` (this
/// instance) and `now_ms` say who asked the provider, when.
pub fn decide_outcome(
    current: Option<&PaymentRecord>,
    terms: &KeyTerms<'_>,
    owner: &str,
    now_ms: u64,
    outcome: ChargeOutcome,
) -> Result<Option<PaymentEvent>, ServiceError> {
    let mut next = match current {
        Some(record) if record.payment.status != PaymentStatus::Pending => return Ok(None),
        Some(record) => record.clone(),
        None => PaymentRecord {
            payment: Payment {
                payment_id: terms.payment_id.to_string(),
                order_id: terms.order_id.to_string(),
                user_id: Some(terms.user_id.to_string()),
                status: PaymentStatus::Pending,
                reason: None,
                amount_cents: terms.amount.amount_cents,
                currency: terms.amount.currency.clone(),
                refunded_cents: 0,
                refunds: Vec::new(),
                revision: 0,
                token_fingerprint: terms.token_fingerprint.map(str::to_string),
            },
            attempt: ChargeAttempt {
                number: 1,
                owner: owner.to_string(),
                started_at_ms: now_ms,
                open: false,
                last_error: None,
            },
        },
    };
    next.attempt.open = false;
    let kind = match outcome {
        ChargeOutcome::Approved => {
            next.payment.status = PaymentStatus::Captured;
            EventKind::Captured
        }
        ChargeOutcome::Declined(reason) => {
            next.payment.status = PaymentStatus::Declined;
            next.payment.reason = Some(reason);
            EventKind::Declined
        }
        ChargeOutcome::Voided => {
            next.payment.status = PaymentStatus::Voided;
            EventKind::Voided
        }
    };
    Ok(Some(PaymentEvent::new(kind, next, None)))
}

// ---- refund -----------------------------------------------------------------

/// What a refund request does, given its payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundDecision {
    /// Reserve the amount with this event, then ask the provider.
    Start(Box<PaymentEvent>),
    /// Started earlier without a confirmation: ask the provider (again).
    Resume(Refund),
    /// Already refunded: answer with it.
    Done(Refund),
}

pub fn decide_refund(
    current: Option<&PaymentRecord>,
    command: &RefundCommand,
) -> Result<RefundDecision, ServiceError> {
    let record = current.ok_or_else(|| not_found(&command.payment_id))?;
    let payment = &record.payment;
    if let Some(currency) = &command.currency {
        if *currency != payment.currency {
            return Err(ServiceError::conflict(format!(
                "payment {} is in {}, not {currency}",
                payment.payment_id, payment.currency
            )));
        }
    }
    if let Some(existing) = payment.refund(&command.refund_id) {
        if command
            .amount_cents
            .is_some_and(|amount| amount != existing.amount_cents)
        {
            return Err(ServiceError::conflict(format!(
                "idempotency_key already used for refund {} of {} {}",
                existing.refund_id, existing.amount_cents, payment.currency
            )));
        }
        return match existing.status {
            RefundStatus::Refunded => Ok(RefundDecision::Done(existing.clone())),
            RefundStatus::Pending => Ok(RefundDecision::Resume(existing.clone())),
            RefundStatus::Failed => Err(ServiceError::conflict(format!(
                "refund {} failed: {}",
                existing.refund_id,
                existing
                    .reason
                    .as_deref()
                    .unwrap_or("refused by the provider")
            ))),
        };
    }
    match payment.status {
        PaymentStatus::Captured => {}
        PaymentStatus::Declined | PaymentStatus::Voided => {
            return Err(ServiceError::conflict(format!(
                "payment {} was {}; there is nothing to refund",
                payment.payment_id,
                if payment.status == PaymentStatus::Voided {
                    "voided"
                } else {
                    "declined"
                }
            )))
        }
        PaymentStatus::Pending => {
            return Err(ServiceError::conflict(format!(
                "payment {} is still pending; only a captured payment can be refunded",
                payment.payment_id
            )))
        }
    }
    if payment.refunds.len() >= MAX_REFUNDS {
        return Err(ServiceError::conflict(format!(
            "payment {} already has {MAX_REFUNDS} refunds, the most it may have",
            payment.payment_id
        )));
    }
    let refundable = payment.refundable_cents();
    if refundable <= 0 {
        return Err(ServiceError::conflict(format!(
            "payment {} is fully refunded",
            payment.payment_id
        )));
    }
    let amount = command.amount_cents.unwrap_or(refundable);
    if amount > refundable {
        return Err(ServiceError::conflict(format!(
            "refund of {amount} exceeds the {refundable} {} still refundable on payment {}",
            payment.currency, payment.payment_id
        )));
    }
    let refund = Refund {
        refund_id: command.refund_id.clone(),
        amount_cents: amount,
        status: RefundStatus::Pending,
        reason: None,
    };
    let mut next = record.clone();
    next.payment.refunds.push(refund.clone());
    Ok(RefundDecision::Start(Box::new(PaymentEvent::new(
        EventKind::RefundStarted,
        next,
        Some(refund),
    ))))
}

/// Records the provider's answer to a pending refund (`Err` = refused, with
/// the reason); nothing when the refund is no longer pending.
pub fn decide_refund_outcome(
    current: Option<&PaymentRecord>,
    payment_id: &str,
    refund_id: &str,
    result: Result<(), String>,
) -> Result<Option<PaymentEvent>, ServiceError> {
    let record = current.ok_or_else(|| not_found(payment_id))?;
    let mut next = record.clone();
    let Some(refund) = next
        .payment
        .refunds
        .iter_mut()
        .find(|r| r.refund_id == refund_id && r.status == RefundStatus::Pending)
    else {
        return Ok(None);
    };
    let kind = match result {
        Ok(()) => {
            refund.status = RefundStatus::Refunded;
            EventKind::Refunded
        }
        Err(reason) => {
            refund.status = RefundStatus::Failed;
            refund.reason = Some(reason);
            EventKind::RefundFailed
        }
    };
    let refund = refund.clone();
    if refund.status == RefundStatus::Refunded {
        next.payment.refunded_cents += refund.amount_cents;
    }
    Ok(Some(PaymentEvent::new(kind, next, Some(refund))))
}

/// The answer to a refund that the provider confirmed.
pub fn refund_reply(payment: &Payment, refund: &Refund) -> RefundReply {
    RefundReply {
        payment_id: payment.payment_id.clone(),
        refund_id: refund.refund_id.clone(),
        amount_cents: refund.amount_cents,
        refunded_cents: payment.refunded_cents,
        status: if payment.refunded_cents >= payment.amount_cents {
            RefundReplyStatus::Refunded
        } else {
            RefundReplyStatus::PartiallyRefunded
        },
        revision: payment.revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(key: &str, amount: i64) -> ChargeCommand {
        validate_charge(
            &ChargePayment {
                order_id: "o1".into(),
                user_id: "u1".into(),
                amount_cents: amount,
                currency: "usd".into(),
                payment_token: PaymentToken::new("tok_ok"),
                idempotency_key: key.into(),
            },
            "order",
        )
        .unwrap()
    }

    /// The payment recorded when the provider answered `outcome` for the key.
    fn recorded(key: &str, amount: i64, outcome: ChargeOutcome) -> PaymentRecord {
        decide_outcome(None, &charge(key, amount).terms(), "a", 1_000, outcome)
            .unwrap()
            .unwrap()
            .record()
    }

    fn captured(amount: i64) -> PaymentRecord {
        recorded("k", amount, ChargeOutcome::Approved)
    }

    fn refund_cmd(record: &PaymentRecord, key: &str, amount: Option<i64>) -> RefundCommand {
        validate_refund(&RefundPayment {
            payment_id: record.payment.payment_id.clone(),
            amount_cents: amount,
            currency: None,
            idempotency_key: key.into(),
        })
        .unwrap()
    }

    fn refunded(record: &PaymentRecord, key: &str, amount: Option<i64>) -> PaymentRecord {
        let command = refund_cmd(record, key, amount);
        let RefundDecision::Start(started) = decide_refund(Some(record), &command).unwrap() else {
            panic!("a new refund starts")
        };
        let started = started.record();
        decide_refund_outcome(
            Some(&started),
            &command.payment_id,
            &command.refund_id,
            Ok(()),
        )
        .unwrap()
        .unwrap()
        .record()
    }

    #[test]
    fn keys_are_scoped_by_the_calling_service() {
        assert_ne!(
            payment_id_for("order", "k1"),
            payment_id_for("subscriptions", "k1")
        );
        assert_ne!(payment_id_for("order", "k1"), payment_id_for("", "k1"));
        assert_eq!(payment_id_for("", "k1"), payment_id_for("", "k1"));
    }

    #[test]
    fn a_key_is_bound_to_its_token() {
        let record = captured(500);
        let mut other = charge("k", 500);
        other.token = PaymentToken::new("tok_other");
        other.token_fingerprint = token_fingerprint(&other.token);
        let err = decide_key(Some(&record), &other.terms()).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("idempotency_key already used"),
            "{}",
            err.message
        );
        // The fingerprint is not the token.
        let fingerprint = record.payment.token_fingerprint.clone().unwrap_or_default();
        assert_eq!(fingerprint.len(), 32);
        assert!(!fingerprint.contains("tok_ok"));
        // The same token again is the same charge.
        assert!(decide_key(Some(&record), &charge("k", 500).terms()).is_ok());
    }

    #[test]
    fn ids_are_derived_from_keys() {
        assert_eq!(payment_id_for("order", "k1"), payment_id_for("order", "k1"));
        assert_ne!(payment_id_for("order", "k1"), payment_id_for("order", "k2"));
        assert_eq!(payment_id_for("order", "k1").len(), 32);
        assert_ne!(refund_id_for("p1", "r"), refund_id_for("p2", "r"));
        assert!(validate_id("payment_id", &payment_id_for("order", "k1")).is_ok());
    }

    #[test]
    fn get_names_one_payment() {
        let by_key = GetPayment {
            idempotency_key: Some("k1".into()),
            ..Default::default()
        };
        assert_eq!(
            validate_get(&by_key, "order").unwrap(),
            payment_id_for("order", "k1")
        );
        let by_id = GetPayment {
            payment_id: Some("abc".into()),
            ..Default::default()
        };
        assert_eq!(validate_get(&by_id, "order").unwrap(), "abc");
        for bad in [
            GetPayment::default(),
            GetPayment {
                payment_id: Some("abc".into()),
                idempotency_key: Some("k1".into()),
                min_revision: None,
            },
            GetPayment {
                payment_id: Some("a b".into()),
                ..Default::default()
            },
        ] {
            assert_eq!(validate_get(&bad, "order").unwrap_err().code, 400);
        }
    }

    #[test]
    fn charge_validation() {
        let base = ChargePayment {
            order_id: "o1".into(),
            user_id: "u1".into(),
            amount_cents: 100,
            currency: "EUR".into(),
            payment_token: PaymentToken::new("tok_ok"),
            idempotency_key: "k".into(),
        };
        for (request, needle) in [
            (
                ChargePayment {
                    amount_cents: 0,
                    ..base.clone()
                },
                "amount_cents",
            ),
            (
                ChargePayment {
                    currency: "EURO".into(),
                    ..base.clone()
                },
                "currency",
            ),
            (
                ChargePayment {
                    order_id: "a b".into(),
                    ..base.clone()
                },
                "order_id",
            ),
            (
                ChargePayment {
                    user_id: "u 1".into(),
                    ..base.clone()
                },
                "user_id",
            ),
            (
                ChargePayment {
                    idempotency_key: String::new(),
                    ..base.clone()
                },
                "idempotency_key",
            ),
            (
                ChargePayment {
                    payment_token: PaymentToken::new("tok ok secret"),
                    ..base.clone()
                },
                "payment_token",
            ),
        ] {
            let err = validate_charge(&request, "order").unwrap_err();
            assert_eq!(err.code, 400);
            assert!(err.message.contains(needle), "{}", err.message);
            assert!(!err.message.contains("secret"));
        }
        assert_eq!(
            validate_charge(&base, "order").unwrap().key.amount.currency,
            "EUR"
        );
    }

    #[test]
    fn a_key_without_an_outcome_asks_the_provider() {
        assert_eq!(
            decide_key(None, &charge("k", 500).terms()).unwrap(),
            KeyDecision::AskProvider
        );
        // A `pending` payment of an earlier version: the provider knows its outcome.
        let mut pending = captured(500);
        pending.payment.status = PaymentStatus::Pending;
        pending.attempt.open = true;
        assert_eq!(
            decide_key(Some(&pending), &charge("k", 500).terms()).unwrap(),
            KeyDecision::AskProvider
        );
        let settled = decide_outcome(
            Some(&pending),
            &charge("k", 500).terms(),
            "b",
            2_000,
            ChargeOutcome::Approved,
        )
        .unwrap()
        .unwrap();
        assert_eq!(settled.kind, EventKind::Captured);
        assert!(!settled.attempt.open);
        assert_eq!(settled.attempt.owner, "a", "the attempt it had");
    }

    #[test]
    fn same_key_other_charge_conflicts() {
        let record = captured(500);
        let err = decide_key(Some(&record), &charge("k", 501).terms()).unwrap_err();
        assert_eq!(err.code, 409);
        let mut other_order = charge("k", 500);
        other_order.key.order_id = "o2".into();
        assert_eq!(
            decide_key(Some(&record), &other_order.terms())
                .unwrap_err()
                .code,
            409
        );
        let mut other_user = charge("k", 500);
        other_user.key.user_id = "u2".into();
        assert_eq!(
            decide_key(Some(&record), &other_user.terms())
                .unwrap_err()
                .code,
            409
        );
        // A void names the charge without its token.
        let void = validate_void(
            &VoidPayment {
                order_id: "o1".into(),
                user_id: "u1".into(),
                amount_cents: 500,
                currency: "USD".into(),
                idempotency_key: "k".into(),
            },
            "order",
        )
        .unwrap();
        assert_eq!(void.payment_id, record.payment.payment_id);
        assert_eq!(
            decide_key(Some(&record), &void.terms()).unwrap(),
            KeyDecision::Done(record.payment.clone())
        );
        let mut other_amount = void.clone();
        other_amount.amount = Money::new(499, "USD").unwrap();
        assert_eq!(
            decide_key(Some(&record), &other_amount.terms())
                .unwrap_err()
                .code,
            409
        );
    }

    #[test]
    fn a_payment_is_read_by_its_user_or_an_admin() {
        use shop_nats::auth::Caller;
        let payment = captured(500).payment;
        assert_eq!(payment.user_id.as_deref(), Some("u1"));
        let caller = |user: &str, roles: &[&str]| Caller {
            user_id: user.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        assert!(visible_to(&caller("u1", &["customer"]), payment.clone()).is_ok());
        assert!(visible_to(&caller("a", &["customer", "admin"]), payment.clone()).is_ok());
        let hidden = visible_to(&caller("u2", &["customer"]), payment.clone()).unwrap_err();
        assert_eq!(hidden.code, 404);
        assert_eq!(hidden, not_found(&payment.payment_id));
        let legacy = Payment {
            user_id: None,
            ..payment
        };
        assert_eq!(
            visible_to(&caller("u1", &["customer"]), legacy.clone())
                .unwrap_err()
                .code,
            404
        );
        assert!(visible_to(&caller("a", &["admin"]), legacy).is_ok());
    }

    #[test]
    fn outcome_is_recorded_once() {
        let declined = decide_outcome(
            None,
            &charge("k", 500).terms(),
            "a",
            1_000,
            ChargeOutcome::Declined(DeclineReason::InsufficientFunds),
        )
        .unwrap()
        .unwrap();
        assert_eq!(declined.kind, EventKind::Declined);
        assert_eq!(
            declined.payment.reason,
            Some(DeclineReason::InsufficientFunds)
        );
        assert_eq!(
            declined.payment.token_fingerprint.as_deref(),
            Some(charge("k", 500).token_fingerprint.as_str())
        );
        let done = declined.record();
        assert_eq!(
            decide_outcome(
                Some(&done),
                &charge("k", 500).terms(),
                "b",
                2_000,
                ChargeOutcome::Approved
            )
            .unwrap(),
            None,
            "the first outcome recorded stays"
        );
        assert_eq!(
            decide_key(Some(&done), &charge("k", 500).terms()).unwrap(),
            KeyDecision::Done(done.payment.clone())
        );
        let voided = recorded("v", 500, ChargeOutcome::Voided);
        assert_eq!(voided.payment.status, PaymentStatus::Voided);
        assert_eq!(
            decide_key(Some(&voided), &charge("v", 500).terms()).unwrap(),
            KeyDecision::Done(voided.payment.clone()),
            "a charge after a void answers voided"
        );
    }

    #[test]
    fn refunds_never_exceed_the_captured_amount() {
        let payment = captured(1_000);
        let partial = refunded(&payment, "r1", Some(300));
        assert_eq!(partial.payment.refunded_cents, 300);
        let reply = refund_reply(&partial.payment, &partial.payment.refunds[0]);
        assert_eq!(reply.status, RefundReplyStatus::PartiallyRefunded);

        let over = decide_refund(Some(&partial), &refund_cmd(&partial, "r2", Some(701)));
        assert_eq!(over.unwrap_err().code, 409);

        let full = refunded(&partial, "r2", None);
        assert_eq!(full.payment.refunded_cents, 1_000);
        let last = full
            .payment
            .refund(&refund_id_for(&full.payment.payment_id, "r2"));
        assert_eq!(last.map(|r| r.amount_cents), Some(700));
        let reply = refund_reply(&full.payment, last.unwrap());
        assert_eq!(reply.status, RefundReplyStatus::Refunded);

        let err = decide_refund(Some(&full), &refund_cmd(&full, "r3", None)).unwrap_err();
        assert!(err.message.contains("fully refunded"), "{}", err.message);
    }

    #[test]
    fn refunds_per_payment_are_bounded() {
        let mut payment = captured(1_000);
        for i in 0..MAX_REFUNDS {
            payment = refunded(&payment, &format!("r{i}"), Some(1));
        }
        let err =
            decide_refund(Some(&payment), &refund_cmd(&payment, "one-more", Some(1))).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(err.message.contains("100 refunds"), "{}", err.message);
    }

    #[test]
    fn refund_repeats_answer_the_same_and_other_amounts_conflict() {
        let payment = refunded(&captured(1_000), "r1", Some(300));
        assert!(matches!(
            decide_refund(Some(&payment), &refund_cmd(&payment, "r1", Some(300))).unwrap(),
            RefundDecision::Done(Refund {
                amount_cents: 300,
                ..
            })
        ));
        assert!(matches!(
            decide_refund(Some(&payment), &refund_cmd(&payment, "r1", None)).unwrap(),
            RefundDecision::Done(_)
        ));
        assert_eq!(
            decide_refund(Some(&payment), &refund_cmd(&payment, "r1", Some(200)))
                .unwrap_err()
                .code,
            409
        );
    }

    #[test]
    fn pending_refunds_hold_their_amount_and_failures_release_it() {
        let payment = captured(1_000);
        let command = refund_cmd(&payment, "r1", Some(600));
        let RefundDecision::Start(started) = decide_refund(Some(&payment), &command).unwrap()
        else {
            panic!()
        };
        let started = started.record();
        assert_eq!(started.payment.refundable_cents(), 400);
        assert_eq!(
            decide_refund(Some(&started), &refund_cmd(&started, "r2", Some(401)))
                .unwrap_err()
                .code,
            409
        );
        assert!(matches!(
            decide_refund(Some(&started), &command).unwrap(),
            RefundDecision::Resume(_)
        ));
        let failed = decide_refund_outcome(
            Some(&started),
            &command.payment_id,
            &command.refund_id,
            Err("refused".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(failed.kind, EventKind::RefundFailed);
        let failed = failed.record();
        assert_eq!(failed.payment.refundable_cents(), 1_000);
        assert_eq!(
            decide_refund(Some(&failed), &command).unwrap_err().code,
            409
        );
    }

    #[test]
    fn refunds_need_a_captured_payment_in_its_currency() {
        let mut pending = captured(500);
        pending.payment.status = PaymentStatus::Pending;
        assert_eq!(
            decide_refund(Some(&pending), &refund_cmd(&pending, "r", None))
                .unwrap_err()
                .code,
            409
        );
        let voided = recorded("k", 500, ChargeOutcome::Voided);
        let err = decide_refund(Some(&voided), &refund_cmd(&voided, "r", None)).unwrap_err();
        assert!(err.message.contains("voided"), "{}", err.message);
        let declined = recorded(
            "k",
            500,
            ChargeOutcome::Declined(DeclineReason::CardDeclined),
        );
        let err = decide_refund(Some(&declined), &refund_cmd(&declined, "r", None)).unwrap_err();
        assert!(err.message.contains("declined"), "{}", err.message);
        let payment = captured(500);
        let mut euros = refund_cmd(&payment, "r", Some(100));
        euros.currency = Some("EUR".into());
        assert_eq!(decide_refund(Some(&payment), &euros).unwrap_err().code, 409);
        assert_eq!(
            decide_refund(None, &refund_cmd(&payment, "r", None))
                .unwrap_err()
                .code,
            404
        );
    }
}
