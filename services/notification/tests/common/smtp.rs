//! A small real SMTP server for tests (RFC 5321 subset: EHLO/HELO, MAIL,
//! RCPT, DATA, RSET, NOOP, QUIT) on a loopback port, recording what it accepts.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::{mpsc, Mutex},
};

/// A message the server accepted.
#[derive(Debug, Clone)]
pub struct Received {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message as sent after DATA (dot-stuffing removed), CRLF line ends.
    pub data: String,
}

/// How the server answers `RCPT TO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// `550 5.1.1`: a permanent refusal of the recipient.
    RejectRecipients,
}

pub struct SmtpServer {
    pub port: u16,
    messages: Mutex<mpsc::UnboundedReceiver<Received>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpServer {
    pub async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = session(socket, mode, tx).await;
                });
            }
        });
        Self {
            port,
            messages: Mutex::new(rx),
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The next accepted message.
    pub async fn next_message(&self, timeout: Duration) -> Received {
        tokio::time::timeout(timeout, async { self.messages.lock().await.recv().await })
            .await
            .unwrap_or_else(|_| panic!("no SMTP message within {timeout:?}"))
            .expect("server running")
    }

    /// Messages accepted and not yet taken with `next_message`.
    pub async fn pending(&self) -> Vec<Received> {
        let mut rx = self.messages.lock().await;
        let mut out = Vec::new();
        while let Ok(message) = rx.try_recv() {
            out.push(message);
        }
        out
    }

    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn address(argument: &str) -> String {
    let start = argument.find('<').map_or(0, |i| i + 1);
    let end = argument.rfind('>').unwrap_or(argument.len());
    argument[start..end].to_string()
}

async fn session(
    socket: TcpStream,
    mode: Mode,
    tx: mpsc::UnboundedSender<Received>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 test-smtp ESMTP ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_string();
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-test-smtp\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n"
        } else if upper.starts_with("HELO") {
            b"250 test-smtp\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            from = address(&command[10..]);
            to.clear();
            b"250 2.1.0 OK\r\n"
        } else if upper.starts_with("RCPT TO:") {
            if mode == Mode::RejectRecipients {
                b"550 5.1.1 mailbox unavailable\r\n"
            } else {
                to.push(address(&command[8..]));
                b"250 2.1.5 OK\r\n"
            }
        } else if upper == "DATA" {
            if to.is_empty() {
                b"503 5.5.1 no valid recipients\r\n"
            } else {
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                let _ = tx.send(Received {
                    mail_from: std::mem::take(&mut from),
                    rcpt_to: std::mem::take(&mut to),
                    data,
                });
                b"250 2.0.0 queued\r\n"
            }
        } else if upper == "RSET" {
            from.clear();
            to.clear();
            b"250 2.0.0 OK\r\n"
        } else if upper == "NOOP" {
            b"250 2.0.0 OK\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 2.0.0 bye\r\n").await?;
            return Ok(());
        } else {
            b"502 5.5.2 command not recognized\r\n"
        };
        write.write_all(reply).await?;
    }
}
