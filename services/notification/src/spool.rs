//! The local mailer's `.eml` format (`SPOOL_FORMAT=eml`): one RFC 5322 file
//! per message in a spool directory, as a mail relay's pickup directory would
//! take it. The file is named after the notification id, written to a
//! temporary file, synced, renamed, and the directory synced, so a reader
//! never sees half a message, a crash never loses one reported delivered, and
//! delivering the same message again replaces the file instead of adding a
//! second one. Each message costs a file creation and two syncs; the default
//! format, [`crate::mbox`], appends and syncs them in groups.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::Context;
use futures::{future::BoxFuture, FutureExt};
use lettre::message::Mailbox;

use crate::{
    mailer::{build_message, DeliveryError, Mailer},
    render::Email,
};

/// Writes each message to `<dir>/<notification id>.eml`.
pub struct SpoolMailer {
    dir: PathBuf,
    from: Mailbox,
}

impl SpoolMailer {
    /// Creates the spool directory if needed.
    pub fn new(dir: impl Into<PathBuf>, from: Mailbox) -> anyhow::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating spool directory {}", dir.display()))?;
        Ok(Self { dir, from })
    }

    /// The file a notification is spooled to.
    pub fn path_of(dir: &Path, notification_id: &str) -> PathBuf {
        dir.join(format!("{notification_id}.eml"))
    }
}

fn write_atomically(dir: &Path, id: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join(format!(
        ".{id}.{}-{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, SpoolMailer::path_of(dir, id))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// A spool write that failed: transient (the disk may recover), naming the
/// message and the spool; both spool formats answer it.
pub(crate) fn spool_failure(
    verb: &str,
    id: &str,
    dir: &Path,
    error: impl std::fmt::Display,
) -> DeliveryError {
    DeliveryError::Transient(format!("{verb} {id} to spool {}: {error}", dir.display()))
}

impl Mailer for SpoolMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), DeliveryError>> {
        async move {
            let message = build_message(&self.from, email, SystemTime::now())?;
            let (dir, id) = (self.dir.clone(), email.id.clone());
            tokio::task::spawn_blocking(move || write_atomically(&dir, &id, &message.formatted()))
                .await
                .map_err(|e| DeliveryError::Transient(format!("spool task failed: {e}")))?
                .map_err(|e| spool_failure("writing", &email.id, &self.dir, e))
        }
        .boxed()
    }

    fn describe(&self) -> String {
        format!("spool:{}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::UserInfo, mailer::parse_from, render};

    fn welcome(to: &str) -> Email {
        render::welcome(
            "USER:5",
            "shop@localhost",
            &UserInfo {
                id: "u5".into(),
                email: to.into(),
                name: Some("Bo".into()),
            },
        )
    }

    #[tokio::test]
    async fn spools_one_file_per_message_and_overwrites_on_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolMailer::new(
            dir.path().join("out"),
            parse_from("shop@localhost").unwrap(),
        )
        .unwrap();
        let email = welcome("bo@example.com");
        spool.send(&email).await.unwrap();
        spool.send(&email).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files, vec![format!("{}.eml", email.id)]);
        let text =
            std::fs::read_to_string(SpoolMailer::path_of(&dir.path().join("out"), &email.id))
                .unwrap();
        assert!(text.contains("To: Bo <bo@example.com>\r\n"), "{text}");
        assert!(text.contains(&format!("Message-ID: {}\r\n", email.message_id)));
    }

    #[tokio::test]
    async fn failures_are_classified() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolMailer::new(dir.path(), parse_from("shop@localhost").unwrap()).unwrap();
        assert!(matches!(
            spool.send(&welcome("not an address")).await,
            Err(DeliveryError::Permanent(_))
        ));
        // The directory vanished (unmounted disk): worth retrying later.
        drop(dir);
        assert!(matches!(
            spool.send(&welcome("bo@example.com")).await,
            Err(DeliveryError::Transient(_))
        ));
    }
}
