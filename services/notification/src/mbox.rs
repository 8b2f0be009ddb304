//! The local mailer's default format: messages appended to mbox files
//! (mboxrd, as RFC 4155 describes it) in the spool directory, the way local
//! delivery fills `/var/mail`. Mail readers (`mutt -f`, `mail -f`) open them.
//!
//! Why not a file per message ([`crate::spool::SpoolMailer`], `SPOOL_FORMAT=eml`):
//! creating a file and syncing it costs a journal commit each, and on some
//! disks the creation alone costs 0.3 ms of CPU, more than the rest of the
//! notification. Here one thread appends every message waiting at that moment
//! and syncs them with one `fdatasync` (group commit); each `send` answers only
//! once its message is on the disk.
//!
//! - Each process appends to its own segment, `<ms>-<pid>-<n>.mbox`, and
//!   starts a new one past [`SEGMENT_BYTES`] and after a failed write (whose
//!   torn tail, never reported as delivered, is then left behind).
//! - Each entry carries a `Content-Length` header (the mboxcl2 convention,
//!   which `mutt` honours) with its body's length as written, so an entry a
//!   crash cut short is told from a whole one: it is not a delivered message.
//! - Sending a message whose `Message-ID` the spool already holds whole
//!   appends nothing: the ids are read from the directory's segments at start
//!   and remembered as they are written, so a redelivered event leaves one
//!   copy, and one whose only copy was cut short is appended again.

use std::{
    collections::HashSet,
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::mpsc,
    time::SystemTime,
};

use anyhow::Context;
use futures::{future::BoxFuture, FutureExt};
use lettre::message::Mailbox;
use tokio::sync::oneshot;

use crate::{
    mailer::{build_message, DeliveryError, Mailer},
    render::Email,
    spool::spool_failure,
};

/// A segment past this size is closed and the next message starts a new one.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Most messages one append (and its one sync) carries.
const MAX_BATCH: usize = 256;
/// Most `Message-ID`s remembered for dedupe; past it the memory starts over
/// (a repeat comes within seconds of its first delivery, not a million
/// messages later).
const MAX_REMEMBERED: usize = 1_000_000;

/// Appends each message to the process's mbox segment in `dir`.
pub struct MboxMailer {
    dir: PathBuf,
    from: Mailbox,
    jobs: mpsc::Sender<Job>,
}

/// One message waiting for the writer thread.
struct Job {
    message_id: String,
    entry: Vec<u8>,
    done: oneshot::Sender<Result<(), String>>,
}

impl MboxMailer {
    /// Creates the spool directory if needed, reads the `Message-ID`s its
    /// segments hold, and starts the writer thread.
    pub fn new(dir: impl Into<PathBuf>, from: Mailbox) -> anyhow::Result<Self> {
        Self::with_segment_bytes(dir, from, SEGMENT_BYTES)
    }

    fn with_segment_bytes(
        dir: impl Into<PathBuf>,
        from: Mailbox,
        segment_bytes: u64,
    ) -> anyhow::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating spool directory {}", dir.display()))?;
        let mut held = HashSet::new();
        for segment in segments(&dir)? {
            held.extend(
                message_ids(&segment)
                    .with_context(|| format!("reading spool segment {}", segment.display()))?,
            );
        }
        let (jobs, queue) = mpsc::channel();
        let writer = Writer {
            dir: dir.clone(),
            segment_bytes,
            file: None,
            next_segment: 0,
            held,
        };
        std::thread::Builder::new()
            .name("mbox-spool".into())
            .spawn(move || writer.run(queue))
            .context("starting the spool writer thread")?;
        Ok(Self { dir, from, jobs })
    }
}

impl Mailer for MboxMailer {
    fn send<'a>(&'a self, email: &'a Email) -> BoxFuture<'a, Result<(), DeliveryError>> {
        async move {
            let message = build_message(&self.from, email, SystemTime::now())?;
            let (done, outcome) = oneshot::channel();
            let job = Job {
                message_id: email.message_id.clone(),
                entry: entry(&message.formatted(), SystemTime::now()),
                done,
            };
            let stopped = || DeliveryError::Transient("the spool writer stopped".into());
            self.jobs.send(job).map_err(|_| stopped())?;
            (outcome.await.map_err(|_| stopped())?)
                .map_err(|e| spool_failure("appending", &email.id, &self.dir, e))
        }
        .boxed()
    }

    fn describe(&self) -> String {
        format!("spool:{} (mbox)", self.dir.display())
    }
}

/// The writer thread's state: the open segment and the ids the spool holds.
struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    file: Option<(File, u64)>,
    next_segment: u32,
    held: HashSet<String>,
}

impl Writer {
    /// Takes every message waiting, appends them, syncs once, answers all.
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let outcome = self.append(&batch);
            if let Err(e) = &outcome {
                tracing::warn!(dir = %self.dir.display(), messages = batch.len(), error = %e, "spool append failed; the messages will be delivered again");
            }
            for job in batch {
                let _ = job.done.send(outcome.clone());
            }
        }
    }

    fn append(&mut self, batch: &[Job]) -> Result<(), String> {
        let mut fresh = HashSet::new();
        let mut bytes = Vec::new();
        for job in batch {
            if !self.held.contains(&job.message_id) && fresh.insert(job.message_id.as_str()) {
                bytes.extend_from_slice(&job.entry);
            }
        }
        if bytes.is_empty() {
            return Ok(());
        }
        let written = self.write_synced(&bytes);
        if written.is_err() {
            // Whatever part of it reached the file stays there, unreported:
            // the next message starts a clean segment.
            self.file = None;
        }
        written?;
        if self.held.len() + fresh.len() > MAX_REMEMBERED {
            self.held.clear();
        }
        self.held.extend(fresh.into_iter().map(str::to_owned));
        Ok(())
    }

    fn write_synced(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self
            .file
            .as_ref()
            .is_none_or(|(_, len)| *len >= self.segment_bytes)
        {
            self.file = Some((self.new_segment()?, 0));
        }
        let Some((file, len)) = self.file.as_mut() else {
            return Err("no open segment".into());
        };
        file.write_all(bytes)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("writing the segment: {e}"))?;
        *len += bytes.len() as u64;
        Ok(())
    }

    /// Creates the next segment and syncs the directory, so the file a
    /// synced message is in survives a crash too.
    fn new_segment(&mut self) -> Result<File, String> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let name = format!(
            "{now:013}-{}-{}.mbox",
            std::process::id(),
            self.next_segment
        );
        self.next_segment += 1;
        let path = self.dir.join(name);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| format!("syncing {}: {e}", self.dir.display()))?;
        Ok(file)
    }
}

/// The spool's segments, oldest first.
pub fn segments(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|x| x == "mbox") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// The mboxrd entry of one RFC 5322 message: the `From ` separator line, the
/// message's header block with `Content-Length: <body bytes as written>`
/// added, a blank line, the body, and a blank line; LF line ends, and every
/// line starting `>*From ` quoted with one more `>`.
pub fn entry(message: &[u8], at: SystemTime) -> Vec<u8> {
    let text = message.strip_suffix(b"\r\n").unwrap_or(message);
    let (mut head, mut body) = (Vec::new(), Vec::new());
    let mut in_head = true;
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if in_head && line.is_empty() {
            in_head = false;
            continue;
        }
        let out = if in_head { &mut head } else { &mut body };
        if line.iter().skip_while(|b| **b == b'>').take(5).eq(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    let mut out = Vec::with_capacity(message.len() + 96);
    out.extend_from_slice(format!("From MAILER-DAEMON {}\n", asctime(at)).as_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(format!("Content-Length: {}\n\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    out.push(b'\n');
    out
}

/// One entry of a segment, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The RFC 5322 text it was sent as (CRLF line ends, quoting undone,
    /// without the spool's `Content-Length`), as far as it was written.
    pub message: String,
    /// Whether it was written whole: its body has its `Content-Length` and
    /// the blank line after it. Only a crash leaves one that is not, and only
    /// as a segment's last entry; it was never reported delivered.
    pub complete: bool,
}

/// The entries of one segment, in order.
pub fn entries(segment: &Path) -> anyhow::Result<Vec<Entry>> {
    let bytes = std::fs::read(segment).with_context(|| format!("reading {}", segment.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = match text.strip_suffix('\n') {
        Some(whole_lines) => whole_lines.split('\n').collect(),
        None => {
            // A line a crash cut short belongs to no whole entry (each ends
            // with a line end): dropped, so that a torn separator line does
            // not make the entry before it look torn.
            let mut lines: Vec<&str> = text.split('\n').collect();
            lines.pop();
            lines
        }
    };
    if lines.is_empty() {
        return Ok(Vec::new());
    }
    let mut grouped: Vec<Vec<&str>> = Vec::new();
    let mut after_blank = true;
    for line in lines {
        if after_blank && line.starts_with("From ") {
            grouped.push(Vec::new());
        } else if let Some(current) = grouped.last_mut() {
            current.push(line);
        }
        after_blank = line.is_empty();
    }
    Ok(grouped.iter().map(|lines| read_entry(lines)).collect())
}

fn unquote(line: &str) -> &str {
    match line.strip_prefix('>') {
        Some(rest) if rest.trim_start_matches('>').starts_with("From ") => rest,
        _ => line,
    }
}

/// One entry from its lines (after the separator line).
fn read_entry(lines: &[&str]) -> Entry {
    let split = lines.iter().position(|l| l.is_empty());
    let (mut head, rest) = match split {
        Some(at) => (lines[..at].to_vec(), &lines[at + 1..]),
        None => (lines.to_vec(), &lines[lines.len()..]),
    };
    let length = head
        .last()
        .and_then(|l| l.strip_prefix("Content-Length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    if length.is_some() {
        head.pop();
    }
    // The blank line closing the entry is not the body's.
    let (body, closed) = match rest.split_last() {
        Some((&"", body)) => (body, true),
        _ => (rest, false),
    };
    let written: usize = body.iter().map(|l| l.len() + 1).sum();
    let complete = split.is_some() && closed && length == Some(written);
    let mut message: Vec<&str> = head.iter().map(|l| unquote(l)).collect();
    message.push("");
    message.extend(body.iter().map(|l| unquote(l)));
    let mut message = message.join("\r\n");
    message.push_str("\r\n");
    Entry { message, complete }
}

/// The messages a segment holds whole, each as the RFC 5322 text it was
/// sent as.
pub fn messages(segment: &Path) -> anyhow::Result<Vec<String>> {
    Ok(entries(segment)?
        .into_iter()
        .filter(|e| e.complete)
        .map(|e| e.message)
        .collect())
}

/// The `Message-ID`s of the messages a segment holds whole.
fn message_ids(segment: &Path) -> anyhow::Result<Vec<String>> {
    Ok(messages(segment)?
        .iter()
        .filter_map(|message| {
            let head = message.split("\r\n\r\n").next()?;
            head.split("\r\n").find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("message-id")
                    .then(|| value.trim().to_string())
            })
        })
        .collect())
}

/// `Wed Dec  2 11:30:00 2026`, the date format of an mbox separator line (UTC).
fn asctime(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let in_day = secs % 86_400;
    format!(
        "{} {} {day:>2} {:02}:{:02}:{:02} {year}",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        in_day / 3600,
        in_day % 3600 / 60,
        in_day % 60
    )
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use crate::{domain::UserInfo, mailer::parse_from, render};

    fn welcome(event: &str, to: &str) -> Email {
        render::welcome(
            event,
            "shop@localhost",
            &UserInfo {
                id: "u5".into(),
                email: to.into(),
                name: Some("Bo".into()),
            },
        )
    }

    fn spooled(dir: &Path) -> Vec<String> {
        segments(dir)
            .unwrap()
            .iter()
            .flat_map(|s| messages(s).unwrap())
            .collect()
    }

    #[test]
    fn separator_dates_are_asctime_in_utc() {
        assert_eq!(asctime(SystemTime::UNIX_EPOCH), "Thu Jan  1 00:00:00 1970");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_606_200);
        assert_eq!(asctime(at), "Wed Nov 25 11:30:00 2026");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(asctime(leap), "Tue Feb 29 00:00:00 2000");
    }

    #[test]
    fn from_lines_are_quoted_and_read_back_unquoted() {
        let message = b"Subject: x\r\n\r\nFrom here\r\n>From there\r\nplain\r\n";
        let bytes = entry(message, SystemTime::UNIX_EPOCH);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert_eq!(
            text,
            "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nSubject: x\nContent-Length: 30\n\n>From here\n>>From there\nplain\n\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mbox");
        let mut twice = bytes.clone();
        twice.extend_from_slice(&bytes);
        std::fs::write(&path, twice).unwrap();
        let read = messages(&path).unwrap();
        assert_eq!(read, vec![String::from_utf8(message.to_vec()).unwrap(); 2]);
    }

    #[test]
    fn an_entry_cut_short_anywhere_is_not_a_message() {
        let whole = entry(
            b"Subject: a\r\n\r\nbody\r\n\r\nmore\r\n",
            SystemTime::UNIX_EPOCH,
        );
        let next = entry(b"Subject: b\r\n\r\nline\r\n\r\n", SystemTime::UNIX_EPOCH);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.mbox");
        for cut in 1..next.len() {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(&next[..cut]);
            std::fs::write(&path, &bytes).unwrap();
            let read = entries(&path).unwrap();
            assert!(read[0].complete, "cut at {cut}: {read:?}");
            assert!(
                read.len() == 1 || !read[1].complete,
                "cut at {cut} reads as whole: {read:?}"
            );
        }
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&next);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(
            messages(&path).unwrap(),
            [
                "Subject: a\r\n\r\nbody\r\n\r\nmore\r\n",
                "Subject: b\r\n\r\nline\r\n\r\n"
            ]
        );
    }

    #[tokio::test]
    async fn a_message_cut_short_by_a_crash_is_appended_again() {
        let dir = tempfile::tempdir().unwrap();
        let from = || parse_from("shop@localhost").unwrap();
        let (a, b) = (
            welcome("USER:a", "a@example.com"),
            welcome("USER:b", "b@example.com"),
        );
        let spool = MboxMailer::new(dir.path(), from()).unwrap();
        spool.send(&a).await.unwrap();
        spool.send(&b).await.unwrap();
        drop(spool);
        // A crash in the middle of b's append: half of it reached the disk.
        let segment = segments(dir.path()).unwrap().remove(0);
        let bytes = std::fs::read(&segment).unwrap();
        let b_starts = bytes.windows(6).rposition(|w| w == b"\nFrom ").unwrap() + 1;
        std::fs::write(&segment, &bytes[..b_starts + (bytes.len() - b_starts) / 2]).unwrap();
        assert_eq!(spooled(dir.path()).len(), 1);
        let restarted = MboxMailer::new(dir.path(), from()).unwrap();
        restarted.send(&a).await.unwrap();
        restarted.send(&b).await.unwrap();
        let held = spooled(dir.path());
        assert_eq!(held.len(), 2, "a once, b again whole");
        assert!(held[1].contains(&format!("Message-ID: {}\r\n", b.message_id)));
    }

    #[tokio::test]
    async fn a_full_segment_is_closed_and_the_next_one_started() {
        let dir = tempfile::tempdir().unwrap();
        let spool =
            MboxMailer::with_segment_bytes(dir.path(), parse_from("shop@localhost").unwrap(), 1)
                .unwrap();
        for i in 0..3 {
            spool
                .send(&welcome(&format!("USER:{i}"), "x@example.com"))
                .await
                .unwrap();
        }
        assert_eq!(segments(dir.path()).unwrap().len(), 3);
        assert_eq!(spooled(dir.path()).len(), 3);
    }

    #[tokio::test]
    async fn a_send_dropped_midway_then_repeated_leaves_one_copy() {
        let dir = tempfile::tempdir().unwrap();
        let spool = MboxMailer::new(dir.path(), parse_from("shop@localhost").unwrap()).unwrap();
        let email = welcome("USER:1", "bo@example.com");
        // Polled once (its message handed to the writer), then dropped.
        let _ = futures::FutureExt::now_or_never(spool.send(&email));
        spool.send(&email).await.unwrap();
        assert_eq!(spooled(dir.path()).len(), 1);
    }

    #[tokio::test]
    async fn concurrent_sends_land_once_each_and_a_repeat_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool =
            Arc::new(MboxMailer::new(dir.path(), parse_from("shop@localhost").unwrap()).unwrap());
        let emails: Vec<Email> = (0..40)
            .map(|i| welcome(&format!("USER:{i}"), &format!("u{i}@example.com")))
            .collect();
        let sends = emails.iter().chain(emails.iter().take(10)).map(|email| {
            let spool = spool.clone();
            let email = email.clone();
            tokio::spawn(async move { spool.send(&email).await })
        });
        for sent in futures::future::join_all(sends).await {
            sent.unwrap().unwrap();
        }
        let held = spooled(dir.path());
        assert_eq!(held.len(), 40, "each message once");
        for email in &emails {
            let needle = format!("Message-ID: {}\r\n", email.message_id);
            assert_eq!(held.iter().filter(|m| m.contains(&needle)).count(), 1);
        }
        // A new process over the same directory knows what it holds.
        drop(spool);
        let again = MboxMailer::new(dir.path(), parse_from("shop@localhost").unwrap()).unwrap();
        again.send(&emails[3]).await.unwrap();
        again
            .send(&welcome("USER:new", "new@example.com"))
            .await
            .unwrap();
        assert_eq!(spooled(dir.path()).len(), 41);
        assert_eq!(
            segments(dir.path()).unwrap().len(),
            2,
            "one segment per process"
        );
    }

    #[tokio::test]
    async fn failures_are_classified() {
        let dir = tempfile::tempdir().unwrap();
        let spool = MboxMailer::new(
            dir.path().join("out"),
            parse_from("shop@localhost").unwrap(),
        )
        .unwrap();
        assert!(matches!(
            spool.send(&welcome("USER:1", "not an address")).await,
            Err(DeliveryError::Permanent(_))
        ));
        // The directory vanished (unmounted disk): worth retrying later.
        drop(dir);
        assert!(matches!(
            spool.send(&welcome("USER:1", "bo@example.com")).await,
            Err(DeliveryError::Transient(_))
        ));
    }
}
