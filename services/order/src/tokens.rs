//! Payment tokens, kept out of events and logs: a private key-value bucket,
//! read by the saga's charge step and deleted when the order is final.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use shop_nats::{jetstream::ensure_kv, ServiceError};

pub const BUCKET: &str = "order_payment_tokens";

#[derive(Clone)]
pub struct PaymentTokens {
    kv: kv::Store,
}

impl PaymentTokens {
    pub async fn open(js: &jetstream::Context, replicas: usize) -> anyhow::Result<Self> {
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
        Ok(Self { kv })
    }

    pub async fn put(&self, order_id: &str, token: &str) -> Result<(), ServiceError> {
        self.kv
            .put(order_id, token.to_string().into())
            .await
            .map(|_| ())
            .map_err(|e| ServiceError::unavailable(format!("storing the payment token: {e}")))
    }

    pub async fn get(&self, order_id: &str) -> Result<Option<String>, ServiceError> {
        self.kv
            .get(order_id)
            .await
            .map(|v| v.map(|b| String::from_utf8_lossy(&b).into_owned()))
            .map_err(|e| ServiceError::unavailable(format!("reading the payment token: {e}")))
    }

    pub async fn forget(&self, order_id: &str) {
        if let Err(e) = self.kv.purge(order_id).await {
            tracing::warn!(order_id, error = %e, "forgetting a payment token failed; it expires in 24 h");
        }
    }
}
