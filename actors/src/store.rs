//! The service's local sled store: one tree, keys prefixed by the service, plus
//! the applied stream sequence (the checkpoint) under a reserved key.

use std::path::Path;

use anyhow::Context;

/// Reserved key holding the last stream sequence applied to this store.
pub const CHECKPOINT_KEY: &[u8] = b"\0checkpoint";

/// A sled tree owned by one service instance.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    service: std::sync::Arc<str>,
}

impl Store {
    /// Opens (or creates) the store under `dir`. Fails clearly if another process holds it.
    pub fn open(dir: &Path, service: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        let path = dir.join(format!("{service}.sled"));
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(Some(500))
            .open()
            .with_context(|| {
                format!(
                    "opening sled store {} (is another instance using this DATA_DIR?)",
                    path.display()
                )
            })?;
        let tree = db
            .open_tree(service)
            .with_context(|| format!("opening tree {service} in {}", path.display()))?;
        Ok(Self {
            db,
            tree,
            service: service.into(),
        })
    }

    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// The service this store belongs to.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The last stream sequence applied to this store (0 when new).
    pub fn checkpoint(&self) -> anyhow::Result<u64> {
        let value = self
            .tree
            .get(CHECKPOINT_KEY)
            .context("reading checkpoint")?;
        Ok(value.map(|v| decode_u64(&v)).transpose()?.unwrap_or(0))
    }

    /// Removes everything (used when the stream was reset under the store).
    pub fn clear(&self) -> anyhow::Result<()> {
        self.tree.clear().context("clearing store")
    }

    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Writes everything applied so far to disk. (sled 0.34's `flush_async`
    /// can fail to complete, so the blocking flush runs on a blocking thread.)
    pub async fn flush(&self) -> anyhow::Result<()> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .context("flush task")?
            .context("flushing sled")?;
        Ok(())
    }
}

pub fn encode_u64(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

pub fn decode_u64(bytes: &[u8]) -> anyhow::Result<u64> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("corrupt u64 value of {} bytes", bytes.len()))?;
    Ok(u64::from_be_bytes(array))
}

/// Encodes a service's sled value: a format byte (the service's own version of
/// its value layout), then JSON.
pub fn encode_versioned<T: serde::Serialize>(version: u8, value: &T) -> Result<Vec<u8>, String> {
    let mut out = vec![version];
    serde_json::to_writer(&mut out, value).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The JSON of a value written by [`encode_versioned`] with `version`; an
/// unknown format byte is an internal error, never a silent misread.
pub fn versioned_body(version: u8, value: &[u8]) -> Result<&[u8], shop_nats::ServiceError> {
    match value.split_first() {
        Some((found, rest)) if *found == version => Ok(rest),
        Some((found, _)) => Err(shop_nats::ServiceError::internal(format!(
            "stored value has unknown format {found}"
        ))),
        None => Err(shop_nats::ServiceError::internal("stored value is empty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_values_round_trip_and_refuse_other_formats() {
        let bytes = encode_versioned(1, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(versioned_body(1, &bytes).unwrap(), br#"{"a":1}"#);
        assert_eq!(versioned_body(2, &bytes).unwrap_err().code, 500);
        assert_eq!(versioned_body(1, &[]).unwrap_err().code, 500);
    }
}
