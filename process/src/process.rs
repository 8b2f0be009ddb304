//! One child process: how it is started ([`Spec`]), awaited, watched, stopped
//! and restarted ([`Process`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::{broadcast, oneshot};

use crate::output::{self, Output, Sinks};

/// Lines of output shown in an error about a process.
const ERROR_TAIL: usize = 30;
/// How long a SIGKILLed process may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What to run and how to tell it is ready; [`Spec::start`] runs it.
#[derive(Debug, Clone)]
pub struct Spec {
    pub(crate) name: String,
    program: PathBuf,
    args: Vec<OsString>,
    /// In order; `None` removes the variable.
    env: Vec<(OsString, Option<OsString>)>,
    cwd: Option<PathBuf>,
    ready_line: Option<String>,
    ready_timeout: Duration,
    log_file: Option<PathBuf>,
    keep_lines: usize,
    echo: Option<String>,
    own_group: bool,
    die_with_parent: bool,
}

impl Spec {
    /// `program` under `name` (in errors and log prefixes); ready once started
    /// unless [`Spec::ready_line`] says otherwise.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            ready_line: None,
            ready_timeout: Duration::from_secs(60),
            log_file: None,
            keep_lines: 200,
            echo: None,
            own_group: false,
            die_with_parent: false,
        }
    }

    pub(crate) fn program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// Appends one command-line argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends command-line arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable (on top of this process's environment; a
    /// later setting of the same name wins).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable this process has (e.g. `NATS_CREDS`
    /// when a child must connect without credentials); a later setting wins.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    /// Sets environment variables, in order (see [`Spec::env`]).
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        self.env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), Some(v.into()))));
        self
    }

    /// Runs it in `dir` (default: this program's working directory).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Ready once it prints a line containing `needle` (nats-server: `Server is
    /// ready`; services and the gateway: `"service ready"`).
    pub fn ready_line(mut self, needle: impl Into<String>) -> Self {
        self.ready_line = Some(needle.into());
        self
    }

    /// How long the ready line may take (default 60 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Writes every line of output to `path` (created at the first start,
    /// appended to on a restart).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// Lines of output kept in memory (default 200; `usize::MAX` keeps all).
    pub fn keep_lines(mut self, n: usize) -> Self {
        self.keep_lines = n;
        self
    }

    /// Echoes every line to stderr after `prefix` (or not, with `None`).
    pub fn echo(mut self, prefix: Option<String>) -> Self {
        self.echo = prefix;
        self
    }

    /// Runs it in a process group of its own, so that a terminal's Ctrl-C
    /// reaches only its parent, which then stops it in order.
    pub fn own_process_group(mut self) -> Self {
        self.own_group = true;
        self
    }

    /// Has the kernel send it SIGTERM when the thread that started it ends
    /// (Linux `PR_SET_PDEATHSIG`), so a harness that dies leaves nothing behind.
    pub fn die_with_parent(mut self) -> Self {
        self.die_with_parent = true;
        self
    }

    /// The name it was given, for errors and log file names.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts it and waits until it is ready.
    pub async fn start(self) -> Result<Process> {
        let mut process = Process {
            output: Arc::new(Output::new(self.keep_lines)),
            spec: self,
            child: None,
            status: None,
            ready_line: None,
            runs: 0,
        };
        process.spawn().await?;
        Ok(process)
    }

    fn command(&self, out: std::io::PipeWriter) -> Result<tokio::process::Command> {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.args);
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone().context("duplicating the output pipe")?)
            .stderr(out)
            .kill_on_drop(true);
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        if self.own_group {
            command.process_group(0);
        }
        #[cfg(target_os = "linux")]
        if self.die_with_parent {
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        Ok(command)
    }
}

/// How [`Process::stop`] ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited within the grace period after SIGTERM.
    Exited(ExitStatus),
    /// It was still running after the grace period and got SIGKILL.
    Killed,
    /// It had already exited (or was never running).
    NotRunning,
}

/// A running (or stopped, or restartable) child process. Dropping it kills
/// the process (SIGKILL).
pub struct Process {
    spec: Spec,
    output: Arc<Output>,
    child: Option<tokio::process::Child>,
    status: Option<ExitStatus>,
    ready_line: Option<String>,
    runs: usize,
}

impl Process {
    async fn spawn(&mut self) -> Result<()> {
        let spec = &self.spec;
        let mut ready = self.output.subscribe();
        let file = match &spec.log_file {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(self.runs > 0)
                    .write(true)
                    .truncate(self.runs == 0)
                    .open(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            ),
            None => None,
        };
        let (pipe, out) = std::io::pipe().context("creating an output pipe")?;
        // The command holds the pipe's write ends until it is dropped here, so
        // the reader sees the end of output when the process exits.
        let child = spec
            .command(out)?
            .spawn()
            .with_context(|| format!("starting {}", spec.program.display()))?;
        let pid = child.id().unwrap_or_default();
        let (eof_tx, mut eof) = oneshot::channel();
        let sinks = Sinks {
            file,
            echo: spec.echo.clone(),
        };
        let shared = self.output.clone();
        std::thread::Builder::new()
            .name(format!("{}-output", spec.name))
            .spawn(move || output::pump(pipe, shared, sinks, eof_tx))
            .context("starting the output reader")?;
        tracing::debug!(name = %spec.name, pid, program = %spec.program.display(), "process started");
        self.child = Some(child);
        self.status = None;
        self.runs += 1;
        let Some(needle) = spec.ready_line.clone() else {
            return Ok(());
        };
        let timeout = spec.ready_timeout;
        let waited = tokio::time::timeout(timeout, async {
            loop {
                tokio::select! {
                    biased;
                    line = ready.recv() => match line {
                        Ok(line) if line.contains(&needle) => return Some(line),
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = &mut eof => return None,
                }
            }
        })
        .await;
        if let Ok(Some(line)) = waited {
            self.ready_line = Some(line);
            return Ok(());
        }
        let status = match self.child.as_mut() {
            Some(child) => match child.try_wait() {
                Ok(Some(status)) => Some(status),
                _ if waited.is_ok() => {
                    // Output ended: it is exiting; give it a moment to be reaped.
                    tokio::time::timeout(KILL_WAIT, child.wait())
                        .await
                        .ok()
                        .and_then(Result::ok)
                }
                _ => None,
            },
            None => None,
        };
        self.kill9()?;
        let what = match status {
            Some(status) => format!("exited ({status}) before it was ready"),
            None => format!("did not print {needle:?} within {timeout:?}"),
        };
        bail!("{} {what}; {}", self.spec.name, self.tail_text())
    }

    /// "last lines of <log>:" and the tail of the output, for error messages.
    fn tail_text(&self) -> String {
        let log = self
            .spec
            .log_file
            .as_ref()
            .map(|p| format!(" ({})", p.display()))
            .unwrap_or_default();
        format!(
            "last lines of its output{log}:\n{}",
            self.output.tail(ERROR_TAIL)
        )
    }

    /// The name its [`Spec`] gave it.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its pid while it runs (not yet reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// The line that announced readiness, when a ready line was asked for.
    pub fn ready_line(&self) -> Option<&str> {
        self.ready_line.as_deref()
    }

    /// Where its output is written, if anywhere.
    pub fn log_file(&self) -> Option<&Path> {
        self.spec.log_file.as_deref()
    }

    /// The kept lines of output since the last (re)start, oldest first.
    pub fn logs(&self) -> Vec<String> {
        self.output.lines()
    }

    /// The last `n` kept lines, joined with newlines.
    pub fn tail(&self, n: usize) -> String {
        self.output.tail(n)
    }

    /// A receiver of every line printed from now on (see [`output::wait_for_line`]).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.output.subscribe()
    }

    /// Waits for a line containing `needle`, counting the kept lines.
    pub async fn wait_for_line(&self, needle: &str, timeout: Duration) -> Result<String> {
        let mut rx = self.output.subscribe();
        if let Some(line) = self.output.lines().into_iter().find(|l| l.contains(needle)) {
            return Ok(line);
        }
        output::wait_for_line(&mut rx, needle, timeout).await
    }

    /// Its exit status once it has exited (reaping it); `None` while it runs.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                self.status = Some(status);
            }
        }
        self.status
    }

    /// Whether it runs (reaping it if it has exited).
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none() && self.child.is_some()
    }

    fn signal(&self, signal: libc::c_int) -> Result<()> {
        let pid = self.pid().context("process not running")?;
        let pid = i32::try_from(pid).context("pid out of range")?;
        // SAFETY: kill(2) on a child of ours that has not been reaped (the pid
        // cannot have been reused).
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("kill -{signal} {pid}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends SIGTERM (a graceful stop request) and returns at once.
    pub fn sigterm(&self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// SIGKILL and reap: the process dies without any clean-up.
    pub fn kill9(&mut self) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        child.start_kill().context("kill -9")?;
        let status = reap_blocking(child, KILL_WAIT).context("waiting for a killed process")?;
        self.child = None;
        self.status = Some(status);
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_exit() {
            return Ok(status);
        }
        let child = self.child.as_mut().context("process not running")?;
        let status = tokio::time::timeout(timeout, child.wait())
            .await
            .with_context(|| format!("{} did not exit within {timeout:?}", self.spec.name))?
            .context("waiting for exit")?;
        self.child = None;
        self.status = Some(status);
        Ok(status)
    }

    /// SIGTERM, then up to `grace` for it to exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> Result<Stopped> {
        if !self.is_running() {
            return Ok(Stopped::NotRunning);
        }
        self.sigterm()?;
        match self.wait_exit(grace).await {
            Ok(status) => Ok(Stopped::Exited(status)),
            Err(_) => self.kill9().map(|()| Stopped::Killed),
        }
    }

    /// [`Process::stop`] for where nothing can be awaited (`Drop`).
    pub fn stop_blocking(&mut self, grace: Duration) -> Result<Stopped> {
        if !self.is_running() {
            return Ok(Stopped::NotRunning);
        }
        self.sigterm()?;
        let Some(child) = self.child.as_mut() else {
            return Ok(Stopped::NotRunning);
        };
        match reap_blocking(child, grace) {
            Ok(status) => {
                self.child = None;
                self.status = Some(status);
                Ok(Stopped::Exited(status))
            }
            Err(_) => self.kill9().map(|()| Stopped::Killed),
        }
    }

    /// Starts the same program again with the same settings (a stopped
    /// process only); its kept output starts afresh.
    pub async fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("{} is still running", self.spec.name);
        }
        self.output.clear();
        self.ready_line = None;
        self.spawn().await
    }
}

/// Polls for the exit of `child` for up to `timeout` (where no runtime can
/// await it).
fn reap_blocking(child: &mut tokio::process::Child, timeout: Duration) -> Result<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for exit")? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            bail!("still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.kill9();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn sh(name: &str, script: &str) -> Spec {
        Spec::new(name, "sh").args(["-c", script])
    }

    /// The error of a start that must fail, as text with its causes.
    pub(crate) async fn failure<T>(start: impl std::future::Future<Output = Result<T>>) -> String {
        match start.await {
            Ok(_) => panic!("started, but should have failed"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[tokio::test]
    async fn an_exit_before_ready_is_reported_with_the_output() {
        let started = Instant::now();
        let broken = sh("broken", "echo starting; echo broken >&2; exit 3");
        let text = failure(broken.ready_line("never printed").start()).await;
        assert!(text.contains("broken exited"), "{text}");
        assert!(text.contains("starting\nbroken"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(10), "failed fast");
    }

    #[tokio::test]
    async fn no_ready_line_in_time_is_an_error() {
        let silent = sh("silent", "echo hello; exec sleep 30").ready_line("ready");
        let text = failure(silent.ready_timeout(Duration::from_millis(300)).start()).await;
        assert!(text.contains("did not print \"ready\""), "{text}");
        assert!(text.contains("hello"), "{text}");
    }

    #[tokio::test]
    async fn stops_with_sigterm_and_writes_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sleeper.log");
        let mut p = sh("sleeper", "echo up and ready; exec sleep 60")
            .ready_line("ready")
            .log_file(&log)
            .die_with_parent()
            .start()
            .await
            .unwrap();
        assert_eq!(p.ready_line(), Some("up and ready"));
        let pid = p.pid().unwrap();
        assert!(p.is_running());
        let started = Instant::now();
        let stopped = p.stop(Duration::from_secs(10)).await.unwrap();
        assert!(matches!(stopped, Stopped::Exited(_)), "{stopped:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "by SIGTERM");
        assert!(p.pid().is_none() && !p.is_running());
        // SAFETY: signal 0 only checks whether the pid exists.
        assert_ne!(unsafe { libc::kill(pid as i32, 0) }, 0, "{pid} is gone");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "up and ready\n");
        assert_eq!(
            p.stop(Duration::from_secs(1)).await.unwrap(),
            Stopped::NotRunning
        );
    }

    #[tokio::test]
    async fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
        let mut p = sh(
            "stubborn",
            "trap '' TERM; echo ready; while :; do sleep 1; done",
        )
        .ready_line("ready")
        .start()
        .await
        .unwrap();
        let stopped = p.stop(Duration::from_millis(300)).await.unwrap();
        assert_eq!(stopped, Stopped::Killed);
    }

    #[tokio::test]
    async fn kill9_restart_and_lines() {
        let mut p = sh(
            "counter",
            "echo first; echo ready; echo later; exec sleep 60",
        )
        .ready_line("ready")
        .keep_lines(usize::MAX)
        .start()
        .await
        .unwrap();
        p.wait_for_line("later", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(p.restart().await.is_err(), "still running");
        p.kill9().unwrap();
        let status = p.try_exit().unwrap();
        assert!(!status.success());
        let mut lines = p.subscribe();
        p.restart().await.unwrap();
        assert!(p.is_running());
        assert_eq!(p.logs()[..2], ["first".to_string(), "ready".to_string()]);
        output::wait_for_line(&mut lines, "later", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(p.wait_exit(Duration::from_millis(50)).await.is_err());
        p.sigterm().unwrap();
        assert!(!p.wait_exit(Duration::from_secs(5)).await.unwrap().success());
    }
}
