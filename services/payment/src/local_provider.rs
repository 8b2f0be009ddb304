//! The local payment provider: a stand-in card processor that behaves like a
//! real one, failures included, chosen by the payment token.
//!
//! | token                    | behaviour |
//! |--------------------------|-----------|
//! | `tok_ok`                 | approves |
//! | `tok_decline`            | declines (`card_declined`) |
//! | `tok_insufficient_funds` | declines (`insufficient_funds`) |
//! | `tok_timeout`            | charges, but answers only after the caller's deadline |
//! | `tok_flaky`              | fails transiently twice, then approves |
//! | anything else            | declines (`invalid_token`) |
//!
//! A token may carry a suffix after an underscore (`tok_ok_4f2a...`) and
//! behaves as its prefix. Like a real processor it is an outside system with
//! its own ledger: the JetStream key-value bucket [`LEDGER_BUCKET`], shared by
//! every instance and surviving their restarts. The ledger deduplicates by
//! idempotency key (a repeat answers the recorded outcome at once, without
//! charging again), counts `tok_flaky` failures per key, and never refunds more
//! than was charged. A void (`payment.void`) of a key without an outcome
//! records it voided, and a charge with that key then answers voided. Each
//! entry is updated with compare-and-set, so the requests of one key are
//! serialized, as a processor's are.

use std::{collections::BTreeMap, time::Duration};

use async_nats::jetstream::{
    self,
    kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
};
use futures::{future::BoxFuture, FutureExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::{
    money::Money,
    provider::{
        ChargeOutcome, ChargeRequest, DeclineReason, PaymentProvider, ProviderError, RefundRequest,
        VoidRequest,
    },
};

/// The key-value bucket playing the processor's ledger.
pub const LEDGER_BUCKET: &str = "payment_provider_local";
/// Transient failures a `tok_flaky` charge answers before it approves.
pub const FLAKY_FAILURES: u32 = 2;
/// How far past the caller's deadline a `tok_timeout` charge answers.
const LATE_BY: Duration = Duration::from_millis(200);
/// Compare-and-set rounds before a contended ledger entry counts as a transient failure.
const CAS_ROUNDS: u32 = 20;

/// What a token makes the processor do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Approve,
    Decline,
    InsufficientFunds,
    Timeout,
    Flaky,
    Invalid,
}

impl Behaviour {
    pub fn of(token: &str) -> Self {
        const TOKENS: [(&str, Behaviour); 5] = [
            ("tok_ok", Behaviour::Approve),
            ("tok_decline", Behaviour::Decline),
            ("tok_insufficient_funds", Behaviour::InsufficientFunds),
            ("tok_timeout", Behaviour::Timeout),
            ("tok_flaky", Behaviour::Flaky),
        ];
        TOKENS
            .iter()
            .find(|(name, _)| {
                token
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
            })
            .map(|(_, behaviour)| *behaviour)
            .unwrap_or(Behaviour::Invalid)
    }
}

/// A final answer the ledger keeps for a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LedgerOutcome {
    Approved,
    Declined {
        reason: DeclineReason,
    },
    /// Voided before any charge: the key never charges.
    Voided,
}

impl LedgerOutcome {
    /// What a charge call with the key answers once this is recorded.
    fn answer(self) -> Result<ChargeOutcome, ProviderError> {
        match self {
            LedgerOutcome::Approved => Ok(ChargeOutcome::Approved),
            LedgerOutcome::Declined { reason } => Ok(ChargeOutcome::Declined(reason)),
            LedgerOutcome::Voided => Ok(ChargeOutcome::Voided),
        }
    }
}

/// One charge in the processor's ledger (key `charge.<sha256 of its idempotency key>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerCharge {
    pub amount_cents: i64,
    pub currency: String,
    /// Charge requests received with this key, repeats included.
    pub requests: u32,
    /// Transient failures answered so far.
    pub failures: u32,
    /// The final answer, once there is one; a repeat gets the same.
    pub outcome: Option<LedgerOutcome>,
    pub refunded_cents: i64,
    /// Refunds by the sha256 of their idempotency key, with their amounts.
    pub refunds: BTreeMap<String, i64>,
}

impl LedgerCharge {
    /// The entry of a key nothing was asked of yet.
    fn new(amount: &Money) -> Self {
        Self {
            amount_cents: amount.amount_cents,
            currency: amount.currency.clone(),
            requests: 0,
            failures: 0,
            outcome: None,
            refunded_cents: 0,
            refunds: BTreeMap::new(),
        }
    }
}

/// The ledger key of a charge.
pub fn ledger_key(idempotency_key: &str) -> String {
    format!("charge.{}", sha256_hex(idempotency_key))
}

fn sha256_hex(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What one charge call does to the ledger entry, and what it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStep {
    /// Answer now.
    Answer(Result<ChargeOutcome, ProviderError>),
    /// The charge is recorded, but the answer comes after the deadline.
    AnswerLate(ChargeOutcome),
}

/// The processor's rules for one charge call against its ledger entry; updates `entry`.
pub fn charge_step(
    entry: &mut LedgerCharge,
    request: &ChargeRequest,
    behaviour: Behaviour,
) -> ChargeStep {
    entry.requests += 1;
    if entry.amount_cents != request.amount.amount_cents
        || entry.currency != request.amount.currency
    {
        return ChargeStep::Answer(Err(ProviderError::Permanent(
            "idempotency key already used for a charge of another amount".into(),
        )));
    }
    if let Some(outcome) = entry.outcome {
        return ChargeStep::Answer(outcome.answer());
    }
    let outcome = match behaviour {
        Behaviour::Approve => LedgerOutcome::Approved,
        Behaviour::Decline => LedgerOutcome::Declined {
            reason: DeclineReason::CardDeclined,
        },
        Behaviour::InsufficientFunds => LedgerOutcome::Declined {
            reason: DeclineReason::InsufficientFunds,
        },
        Behaviour::Invalid => LedgerOutcome::Declined {
            reason: DeclineReason::InvalidToken,
        },
        Behaviour::Flaky if entry.failures < FLAKY_FAILURES => {
            entry.failures += 1;
            return ChargeStep::Answer(Err(ProviderError::Transient(format!(
                "processor unavailable (failure {} of {FLAKY_FAILURES})",
                entry.failures
            ))));
        }
        Behaviour::Flaky => LedgerOutcome::Approved,
        Behaviour::Timeout => {
            entry.outcome = Some(LedgerOutcome::Approved);
            return ChargeStep::AnswerLate(ChargeOutcome::Approved);
        }
    };
    entry.outcome = Some(outcome);
    ChargeStep::Answer(outcome.answer())
}

/// The processor's rules for a void against the key's ledger entry: a key
/// with an outcome answers it, any other becomes voided.
pub fn void_step(entry: &mut LedgerCharge) -> ChargeOutcome {
    let outcome = *entry.outcome.get_or_insert(LedgerOutcome::Voided);
    match outcome {
        LedgerOutcome::Approved => ChargeOutcome::Approved,
        LedgerOutcome::Declined { reason } => ChargeOutcome::Declined(reason),
        LedgerOutcome::Voided => ChargeOutcome::Voided,
    }
}

/// The processor's rules for one refund call against the charge's ledger entry.
pub fn refund_step(entry: &mut LedgerCharge, request: &RefundRequest) -> Result<(), ProviderError> {
    if entry.outcome != Some(LedgerOutcome::Approved) {
        return Err(ProviderError::Permanent(
            "no approved charge to refund".into(),
        ));
    }
    if entry.currency != request.amount.currency {
        return Err(ProviderError::Permanent(
            "refund currency differs from the charge's".into(),
        ));
    }
    let key = sha256_hex(&request.idempotency_key);
    match entry.refunds.get(&key) {
        Some(&amount) if amount == request.amount.amount_cents => Ok(()),
        Some(_) => Err(ProviderError::Permanent(
            "idempotency key already used for a refund of another amount".into(),
        )),
        None if entry.refunded_cents + request.amount.amount_cents > entry.amount_cents => Err(
            ProviderError::Permanent("refund exceeds the charge's remaining amount".into()),
        ),
        None => {
            entry.refunded_cents += request.amount.amount_cents;
            entry.refunds.insert(key, request.amount.amount_cents);
            Ok(())
        }
    }
}

/// The local processor over its key-value ledger.
pub struct LocalProvider {
    ledger: kv::Store,
    latency: Duration,
}

impl LocalProvider {
    /// Opens (or creates) the ledger bucket. `latency` is added to every call,
    /// as a network round trip to a processor would.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
        latency: Duration,
    ) -> anyhow::Result<Self> {
        let ledger = shop_nats::jetstream::ensure_kv(
            js,
            kv::Config {
                bucket: LEDGER_BUCKET.to_string(),
                description: "the local payment provider's ledger (an outside system)".to_string(),
                history: 1,
                num_replicas: replicas,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            },
        )
        .await?;
        Ok(Self { ledger, latency })
    }

    /// One charge or void call about a key: the processor's round trip, then
    /// `step` on the key's entry (a fresh one for `amount` when it has none).
    async fn call_on_key<T>(
        &self,
        idempotency_key: &str,
        amount: &Money,
        step: impl FnMut(&mut LedgerCharge) -> T,
    ) -> Result<T, ProviderError> {
        tokio::time::sleep(self.latency).await;
        let fresh = || Some(LedgerCharge::new(amount));
        self.update(&ledger_key(idempotency_key), fresh, step).await
    }

    /// Reads the entry, lets `step` change it, and stores it if nobody changed
    /// it meanwhile (compare-and-set); `step` sees a fresh entry on each round.
    async fn update<T>(
        &self,
        key: &str,
        fresh: impl Fn() -> Option<LedgerCharge>,
        mut step: impl FnMut(&mut LedgerCharge) -> T,
    ) -> Result<T, ProviderError> {
        let ledger = &self.ledger;
        for _ in 0..CAS_ROUNDS {
            let current = ledger
                .entry(key)
                .await
                .map_err(|e| ProviderError::Transient(format!("reading ledger: {e}")))?
                .filter(|entry| entry.operation == Operation::Put);
            let (mut entry, revision) = match current {
                Some(stored) => (
                    serde_json::from_slice::<LedgerCharge>(&stored.value).map_err(|e| {
                        ProviderError::Permanent(format!("corrupt ledger entry: {e}"))
                    })?,
                    Some(stored.revision),
                ),
                None => match fresh() {
                    Some(entry) => (entry, None),
                    None => return Err(ProviderError::Permanent("no such charge".into())),
                },
            };
            let answer = step(&mut entry);
            let value = serde_json::to_vec(&entry)
                .map_err(|e| ProviderError::Permanent(format!("encoding ledger entry: {e}")))?;
            let stored = match revision {
                None => ledger
                    .create(key, value.into())
                    .await
                    .map_err(|e| (e.kind() == CreateErrorKind::AlreadyExists, e.to_string())),
                Some(revision) => ledger
                    .update(key, value.into(), revision)
                    .await
                    .map_err(|e| {
                        (
                            e.kind() == UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
            };
            match stored {
                Ok(_) => return Ok(answer),
                Err((true, _)) => continue,
                Err((false, e)) => {
                    return Err(ProviderError::Transient(format!("writing ledger: {e}")))
                }
            }
        }
        Err(ProviderError::Transient("ledger entry contended".into()))
    }
}

impl PaymentProvider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn charge<'a>(
        &'a self,
        request: &'a ChargeRequest,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<ChargeOutcome, ProviderError>> {
        async move {
            let behaviour = Behaviour::of(request.token.expose());
            let step = self
                .call_on_key(&request.idempotency_key, &request.amount, |entry| {
                    charge_step(entry, request, behaviour)
                })
                .await?;
            match step {
                ChargeStep::Answer(answer) => answer,
                ChargeStep::AnswerLate(outcome) => {
                    tokio::time::sleep_until(deadline + LATE_BY).await;
                    Ok(outcome)
                }
            }
        }
        .boxed()
    }

    fn refund<'a>(
        &'a self,
        request: &'a RefundRequest,
        _deadline: Instant,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            tokio::time::sleep(self.latency).await;
            self.update(
                &ledger_key(&request.charge_idempotency_key),
                || None,
                |entry| refund_step(entry, request),
            )
            .await?
        }
        .boxed()
    }

    fn void<'a>(
        &'a self,
        request: &'a VoidRequest,
        _deadline: Instant,
    ) -> BoxFuture<'a, Result<ChargeOutcome, ProviderError>> {
        async move {
            self.call_on_key(&request.idempotency_key, &request.amount, void_step)
                .await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::PaymentToken;

    fn charge(token: &str, amount: i64) -> ChargeRequest {
        ChargeRequest {
            idempotency_key: "k1".into(),
            amount: Money::new(amount, "USD").unwrap(),
            token: PaymentToken::new(token),
        }
    }

    fn entry(amount: i64) -> LedgerCharge {
        LedgerCharge {
            amount_cents: amount,
            currency: "USD".into(),
            requests: 0,
            failures: 0,
            outcome: None,
            refunded_cents: 0,
            refunds: BTreeMap::new(),
        }
    }

    fn refund(key: &str, amount: i64) -> RefundRequest {
        RefundRequest {
            idempotency_key: key.into(),
            charge_idempotency_key: "k1".into(),
            amount: Money::new(amount, "USD").unwrap(),
        }
    }

    #[test]
    fn tokens_choose_behaviour() {
        for (token, behaviour) in [
            ("tok_ok", Behaviour::Approve),
            ("tok_ok_abc123", Behaviour::Approve),
            ("tok_okay", Behaviour::Invalid),
            ("tok_decline", Behaviour::Decline),
            ("tok_insufficient_funds_x", Behaviour::InsufficientFunds),
            ("tok_timeout", Behaviour::Timeout),
            ("tok_flaky", Behaviour::Flaky),
            ("card_4242", Behaviour::Invalid),
        ] {
            assert_eq!(Behaviour::of(token), behaviour, "{token}");
        }
    }

    #[test]
    fn flaky_fails_twice_then_approves_and_repeats_replay() {
        let mut e = entry(500);
        let request = charge("tok_flaky", 500);
        for _ in 0..FLAKY_FAILURES {
            assert!(matches!(
                charge_step(&mut e, &request, Behaviour::Flaky),
                ChargeStep::Answer(Err(ProviderError::Transient(_)))
            ));
        }
        assert_eq!(
            charge_step(&mut e, &request, Behaviour::Flaky),
            ChargeStep::Answer(Ok(ChargeOutcome::Approved))
        );
        assert_eq!(
            charge_step(&mut e, &request, Behaviour::Flaky),
            ChargeStep::Answer(Ok(ChargeOutcome::Approved))
        );
        assert_eq!((e.requests, e.failures), (4, 2));
    }

    #[test]
    fn timeout_charges_then_answers_late_and_repeats_answer_at_once() {
        let mut e = entry(500);
        let request = charge("tok_timeout", 500);
        assert_eq!(
            charge_step(&mut e, &request, Behaviour::Timeout),
            ChargeStep::AnswerLate(ChargeOutcome::Approved)
        );
        assert_eq!(
            charge_step(&mut e, &request, Behaviour::Timeout),
            ChargeStep::Answer(Ok(ChargeOutcome::Approved))
        );
    }

    #[test]
    fn declines_are_recorded_and_other_amounts_refused() {
        let mut e = entry(500);
        assert_eq!(
            charge_step(
                &mut e,
                &charge("tok_insufficient_funds", 500),
                Behaviour::InsufficientFunds
            ),
            ChargeStep::Answer(Ok(ChargeOutcome::Declined(
                DeclineReason::InsufficientFunds
            )))
        );
        assert_eq!(
            charge_step(&mut e, &charge("tok_ok", 500), Behaviour::Approve),
            ChargeStep::Answer(Ok(ChargeOutcome::Declined(
                DeclineReason::InsufficientFunds
            ))),
            "the recorded outcome wins"
        );
        assert!(matches!(
            charge_step(&mut e, &charge("tok_ok", 501), Behaviour::Approve),
            ChargeStep::Answer(Err(ProviderError::Permanent(_)))
        ));
    }

    #[test]
    fn refunds_are_deduplicated_and_bounded() {
        let mut e = entry(500);
        charge_step(&mut e, &charge("tok_ok", 500), Behaviour::Approve);
        assert_eq!(refund_step(&mut e, &refund("r1", 300)), Ok(()));
        assert_eq!(refund_step(&mut e, &refund("r1", 300)), Ok(()));
        assert_eq!(e.refunded_cents, 300);
        assert!(matches!(
            refund_step(&mut e, &refund("r1", 200)),
            Err(ProviderError::Permanent(_))
        ));
        assert!(matches!(
            refund_step(&mut e, &refund("r2", 201)),
            Err(ProviderError::Permanent(_))
        ));
        assert_eq!(refund_step(&mut e, &refund("r2", 200)), Ok(()));
        assert_eq!(e.refunded_cents, 500);
        let mut declined = entry(500);
        charge_step(
            &mut declined,
            &charge("tok_decline", 500),
            Behaviour::Decline,
        );
        assert!(refund_step(&mut declined, &refund("r1", 1)).is_err());
    }

    #[test]
    fn a_void_fences_the_key_or_answers_its_charge() {
        let mut fresh = entry(500);
        assert_eq!(void_step(&mut fresh), ChargeOutcome::Voided);
        assert_eq!(
            void_step(&mut fresh),
            ChargeOutcome::Voided,
            "repeats answer the same"
        );
        assert_eq!(
            charge_step(&mut fresh, &charge("tok_ok", 500), Behaviour::Approve),
            ChargeStep::Answer(Ok(ChargeOutcome::Voided)),
            "a voided key never charges"
        );
        assert!(refund_step(&mut fresh, &refund("r1", 1)).is_err());
        let mut charged = entry(500);
        charge_step(&mut charged, &charge("tok_ok", 500), Behaviour::Approve);
        assert_eq!(void_step(&mut charged), ChargeOutcome::Approved);
        assert_eq!(refund_step(&mut charged, &refund("r1", 500)), Ok(()));
        let mut failing = entry(500);
        charge_step(&mut failing, &charge("tok_flaky", 500), Behaviour::Flaky);
        assert_eq!(
            void_step(&mut failing),
            ChargeOutcome::Voided,
            "a charge that never got an outcome is voided"
        );
    }
}
