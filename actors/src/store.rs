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
        Ok(Self { db, tree })
    }

    pub fn tree(&self) -> &sled::Tree {
        &self.tree
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
