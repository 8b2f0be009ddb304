//! Payment tokens, kept out of events and logs: a private key-value bucket,
//! read by the saga's charge step and deleted when the order is final. Each
//! token is sealed with the order data key (`ORDER_DATA_KEY`,
//! [`shop_nats::sealed`]) for its order, so whoever reads the bucket learns no
//! token, and a sealed token copied onto another order does not open.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use shop_nats::{
    jetstream::ensure_kv,
    sealed::{is_sealed, DataKeys},
    ServiceError,
};

pub const BUCKET: &str = "order_payment_tokens";

/// The payment tokens of orders whose saga runs, sealed.
#[derive(Clone)]
pub struct PaymentTokens {
    kv: kv::Store,
    data_keys: DataKeys,
}

/// What a token is sealed for: its order.
fn context(order_id: &str) -> String {
    format!("{BUCKET}:{order_id}")
}

impl PaymentTokens {
    /// Opens (or creates) the bucket; tokens are sealed with `data_keys`.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
        data_keys: DataKeys,
    ) -> anyhow::Result<Self> {
        let kv = ensure_kv(
            js,
            kv::Config {
                bucket: BUCKET.to_string(),
                description: "payment tokens of orders whose saga is running".to_string(),
                history: 1,
                max_age: Duration::from_secs(24 * 3600),
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        Ok(Self { kv, data_keys })
    }

    /// Keeps `token` for the order's saga, sealed.
    pub async fn put(&self, order_id: &str, token: &str) -> Result<(), ServiceError> {
        let sealed = self.data_keys.seal(token.as_bytes(), &context(order_id));
        self.kv
            .put(order_id, sealed.into())
            .await
            .map(|_| ())
            .map_err(|e| ServiceError::unavailable(format!("storing the payment token: {e}")))
    }

    /// The order's token, opened; `None` when there is none (or it is not
    /// one this service sealed: a token is never kept in clear).
    pub async fn get(&self, order_id: &str) -> Result<Option<String>, ServiceError> {
        let stored =
            self.kv.get(order_id).await.map_err(|e| {
                ServiceError::unavailable(format!("reading the payment token: {e}"))
            })?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        let stored = String::from_utf8_lossy(&stored);
        if !is_sealed(&stored) {
            tracing::warn!(
                order_id,
                "a payment token in clear was ignored (and forgotten)"
            );
            self.forget(order_id);
            return Ok(None);
        }
        match self.data_keys.open_text(&stored, &context(order_id)) {
            Ok(token) => Ok(Some(token)),
            Err(e) => {
                tracing::error!(order_id, error = %e, "a payment token does not open: is ORDER_DATA_KEY right?");
                Err(ServiceError::internal(format!(
                    "the payment token of order {order_id} cannot be read"
                )))
            }
        }
    }

    /// Deletes the order's token (and its history), in a task of its own:
    /// the order is final, and waiting for one more append would hold the
    /// saga step (and its consumer slot) for nothing; a dropped step does not
    /// cancel it. Should the purge fail or the process stop first, the token,
    /// still sealed, expires with the bucket's 24 h.
    pub fn forget(&self, order_id: &str) {
        let (kv, order_id) = (self.kv.clone(), order_id.to_string());
        tokio::spawn(async move {
            if let Err(e) = kv.purge(&order_id).await {
                tracing::warn!(order_id, error = %e, "forgetting a payment token failed; it expires in 24 h");
            }
        });
    }
}
