//! Payment tokens, kept out of events and logs: a private key-value bucket,
//! read by the saga's charge step and deleted when the order is final. Each
//! token is sealed with the order data key (`ORDER_DATA_KEY`,
//! [`shop_nats::sealed`]) for its order, so whoever reads the bucket learns no
//! token, and a sealed token copied onto another order does not open.
//!
//! Where the bucket keeps them ([`TokenStorage`]): a token is needed for the
//! moment between an order's create and its charge. A replicated bucket (a
//! cluster) keeps it in memory by default: stored once a quorum of servers
//! holds it, as every write is, it costs no fsync and is never on a disk; it
//! is lost only when every server holding it restarts in that moment, and its
//! order is then cancelled (`payment_token_lost`), never charged. A lone
//! server keeps it on file, where it survives the server's restart.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream::StorageType};
use shop_nats::{
    jetstream::ensure_kv,
    sealed::{is_sealed, DataKeys},
    ServiceError,
};

pub const BUCKET: &str = "order_payment_tokens";

/// The most the bucket holds, so a pile-up of unfinished orders cannot fill
/// the servers' memory: past it `order.create` answers 503.
const MAX_BYTES: i64 = 256 * 1024 * 1024;

/// Where the bucket keeps tokens (`ORDER_TOKEN_STORAGE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenStorage {
    /// Memory when the bucket has more than one replica, else file: a token
    /// survives the loss of any one server either way.
    Auto,
    /// In the servers' memory (replicated like any stream): never on a disk,
    /// no fsync per order; lost when every server holding it restarts.
    Memory,
    /// On disk, fsynced: survives a restart of every server.
    File,
}

impl TokenStorage {
    /// The storage a bucket with `replicas` replicas gets.
    pub fn resolve(self, replicas: usize) -> StorageType {
        match self {
            TokenStorage::Auto if replicas > 1 => StorageType::Memory,
            TokenStorage::Auto | TokenStorage::File => StorageType::File,
            TokenStorage::Memory => StorageType::Memory,
        }
    }
}

/// The payment tokens of orders whose saga runs, sealed.
#[derive(Clone)]
pub struct PaymentTokens {
    kv: kv::Store,
    js: jetstream::Context,
    config: kv::Config,
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
        storage: TokenStorage,
        data_keys: DataKeys,
    ) -> anyhow::Result<Self> {
        let config = kv::Config {
            bucket: BUCKET.to_string(),
            description: "payment tokens of orders whose saga is running".to_string(),
            history: 1,
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: MAX_BYTES,
            storage: storage.resolve(replicas),
            num_replicas: replicas,
            ..Default::default()
        };
        let kv = ensure_kv(js, config.clone()).await?;
        Ok(Self {
            kv,
            js: js.clone(),
            config,
            data_keys,
        })
    }

    /// Whether the bucket's stream is gone: a memory bucket does not outlive
    /// a restart of every server holding it (a lone server forgets the stream
    /// itself). A failed lookup counts as there.
    async fn bucket_gone(&self) -> bool {
        match self.js.get_stream(format!("KV_{BUCKET}")).await {
            Err(e) => matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(error)
                    if error.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ),
            Ok(_) => false,
        }
    }

    /// Keeps `token` for the order's saga, sealed. A bucket lost with a
    /// server restart is created again first; a put that failed while another
    /// create was making it again is tried once more (the same value under
    /// the same key, so a second write changes nothing).
    pub async fn put(&self, order_id: &str, token: &str) -> Result<(), ServiceError> {
        let sealed = bytes::Bytes::from(self.data_keys.seal(token.as_bytes(), &context(order_id)));
        let failed = match self.kv.put(order_id, sealed.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        if self.bucket_gone().await {
            tracing::warn!(
                bucket = BUCKET,
                "the payment token bucket is gone (every server holding it restarted); creating it again"
            );
            ensure_kv(&self.js, self.config.clone())
                .await
                .map_err(|e| {
                    ServiceError::unavailable(format!("storing the payment token: {e}"))
                })?;
        }
        self.kv
            .put(order_id, sealed)
            .await
            .map(|_| ())
            .map_err(|e| {
                ServiceError::unavailable(format!(
                    "storing the payment token: {e} (first attempt: {failed})"
                ))
            })
    }

    /// The order's token, opened; `None` when there is none: purged, lost
    /// with its bucket, or not one this service sealed (a token is never kept
    /// in clear).
    pub async fn get(&self, order_id: &str) -> Result<Option<String>, ServiceError> {
        let stored = match self.kv.get(order_id).await {
            Ok(stored) => stored,
            Err(_) if self.bucket_gone().await => {
                tracing::warn!(
                    order_id,
                    bucket = BUCKET,
                    "the payment token bucket is gone (every server holding it restarted): the order's token is lost"
                );
                return Ok(None);
            }
            Err(e) => {
                return Err(ServiceError::unavailable(format!(
                    "reading the payment token: {e}"
                )))
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_keeps_tokens_in_memory_only_where_they_are_replicated() {
        assert_eq!(TokenStorage::Auto.resolve(1), StorageType::File);
        assert_eq!(TokenStorage::Auto.resolve(3), StorageType::Memory);
        assert_eq!(TokenStorage::Memory.resolve(1), StorageType::Memory);
        assert_eq!(TokenStorage::File.resolve(3), StorageType::File);
    }
}
