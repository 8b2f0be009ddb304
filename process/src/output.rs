//! A process's output: read line by line from one pipe (stdout and stderr
//! merged), kept as a tail in memory, broadcast to whoever waits for a line,
//! appended to a log file and, for debugging tests, echoed to stderr.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::{broadcast, oneshot};

/// Lines a subscriber may fall behind by before it misses some.
const CHANNEL_LINES: usize = 4096;

/// The kept lines and the broadcast of new ones, shared by the reader thread
/// and the [`crate::Process`] handle (across restarts).
pub(crate) struct Output {
    kept: Mutex<VecDeque<String>>,
    keep: usize,
    lines: broadcast::Sender<String>,
}

impl Output {
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            kept: Mutex::new(VecDeque::new()),
            keep,
            lines: broadcast::channel(CHANNEL_LINES).0,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.lines.subscribe()
    }

    /// The kept lines, oldest first.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.kept
            .lock()
            .map(|kept| kept.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The last `n` kept lines, joined.
    pub(crate) fn tail(&self, n: usize) -> String {
        let Ok(kept) = self.kept.lock() else {
            return String::new();
        };
        let skip = kept.len().saturating_sub(n);
        kept.iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.clear();
        }
    }

    fn push(&self, line: String) {
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() == self.keep {
                kept.pop_front();
            }
            if self.keep > 0 {
                kept.push_back(line.clone());
            }
        }
        let _ = self.lines.send(line);
    }
}

/// Where else each line goes.
pub(crate) struct Sinks {
    pub file: Option<File>,
    /// Prefix of lines echoed to stderr (`TESTKIT_ECHO`).
    pub echo: Option<String>,
}

/// Reads `pipe` until every writer has closed it (the process exited), then
/// signals `eof`. Runs on a thread of its own, so a process never blocks on a
/// full pipe whatever its owner is doing.
pub(crate) fn pump(
    pipe: std::io::PipeReader,
    output: std::sync::Arc<Output>,
    mut sinks: Sinks,
    eof: oneshot::Sender<()>,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        if let Some(file) = sinks.file.as_mut() {
            // A full disk must not stop the process: the line is still kept.
            let _ = writeln!(file, "{line}");
        }
        if let Some(prefix) = &sinks.echo {
            eprintln!("{prefix}{line}");
        }
        output.push(line);
    }
    let _ = eof.send(());
}

/// Waits for a line containing `needle` on a receiver from
/// [`crate::Process::subscribe`] (lines printed before it was made do not count).
pub async fn wait_for_line(
    rx: &mut broadcast::Receiver<String>,
    needle: &str,
    timeout: Duration,
) -> Result<String> {
    tokio::time::timeout(timeout, async {
        loop {
            match rx.recv().await {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => bail!("log channel closed"),
            }
        }
    })
    .await
    .with_context(|| format!("no log line containing {needle:?} within {timeout:?}"))?
}

/// The last `n` lines of `text`.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_lines() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("", 2), "");
        let output = Output::new(2);
        for line in ["a", "b", "c"] {
            output.push(line.to_string());
        }
        assert_eq!(output.lines(), vec!["b", "c"]);
        assert_eq!(output.tail(1), "c");
        output.clear();
        assert!(output.lines().is_empty());
    }
}
