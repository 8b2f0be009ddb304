//! A minimal HTTP/1.1 keep-alive client for GET requests (gateway-get), so HTTP
//! figures come from the same harness, histograms and load models as the NATS
//! ones. Content-Length and chunked bodies; one request at a time per connection.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::stats::OpError;

/// Largest header block accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// `http://host:port/path` split up; the path may hold an `{id}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Self> {
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("{url:?}: only http:// URLs are supported");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .with_context(|| format!("{url:?}: bad port {p:?}"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            bail!("{url:?}: no host");
        }
        Ok(Self {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The path with `{id}` replaced.
    pub fn path_for(&self, id: &str) -> String {
        self.path.replace("{id}", id)
    }
}

/// A response: status, body, and whether the server will close the connection.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
    pub close: bool,
}

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    host: String,
}

impl Conn {
    pub async fn connect(url: &Url) -> std::io::Result<Self> {
        let stream = TcpStream::connect(url.addr()).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: BytesMut::with_capacity(8 * 1024),
            host: url.addr(),
        })
    }

    /// GET `path` and read the whole response.
    pub async fn get(&mut self, path: &str) -> Result<Response> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: shop-bench\r\nAccept: application/json\r\n\r\n",
            self.host
        );
        self.stream
            .write_all(request.as_bytes())
            .await
            .context("sending request")?;
        self.read_response().await
    }

    async fn fill(&mut self) -> Result<()> {
        let n = self
            .stream
            .read_buf(&mut self.buf)
            .await
            .context("reading response")?;
        if n == 0 {
            bail!("connection closed by the server mid-response");
        }
        Ok(())
    }

    async fn read_response(&mut self) -> Result<Response> {
        let (status, head_len, length, chunked, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&self.buf).context("malformed response head")? {
                httparse::Status::Complete(len) => {
                    let status = parsed.code.unwrap_or(0);
                    let mut length = None;
                    let mut chunked = false;
                    let mut close = parsed.version == Some(0);
                    for h in parsed.headers.iter() {
                        let value = String::from_utf8_lossy(h.value);
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = Some(
                                value
                                    .trim()
                                    .parse::<usize>()
                                    .context("bad Content-Length")?,
                            );
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = value.to_ascii_lowercase().contains("chunked");
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = value.eq_ignore_ascii_case("close");
                        }
                    }
                    break (status, len, length, chunked, close);
                }
                httparse::Status::Partial => {
                    if self.buf.len() > MAX_HEAD {
                        bail!("response head over {MAX_HEAD} bytes");
                    }
                    self.fill().await?;
                }
            }
        };
        self.buf.advance(head_len);
        let body = if chunked {
            self.read_chunked().await?
        } else if let Some(n) = length {
            if n > MAX_BODY {
                bail!("response body of {n} bytes over {MAX_BODY}");
            }
            while self.buf.len() < n {
                self.fill().await?;
            }
            self.buf.split_to(n).freeze()
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Bytes::new()
        } else {
            // No length: the body runs to the end of the connection.
            loop {
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) => break,
                    Ok(_) if self.buf.len() > MAX_BODY => bail!("response body over {MAX_BODY}"),
                    Ok(_) => {}
                    Err(e) => return Err(e).context("reading response body"),
                }
            }
            return Ok(Response {
                status,
                body: self.buf.split().freeze(),
                close: true,
            });
        };
        Ok(Response {
            status,
            body,
            close,
        })
    }

    async fn read_line(&mut self) -> Result<BytesMut> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(i);
                self.buf.advance(2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                bail!("chunk line over {MAX_HEAD} bytes");
            }
            self.fill().await?;
        }
    }

    async fn read_chunked(&mut self) -> Result<Bytes> {
        let mut body = BytesMut::new();
        loop {
            let line = self.read_line().await?;
            let text = String::from_utf8_lossy(&line);
            let size_text = text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .with_context(|| format!("bad chunk size {size_text:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(body.freeze());
            }
            if body.len() + size > MAX_BODY {
                bail!("response body over {MAX_BODY}");
            }
            while self.buf.len() < size + 2 {
                self.fill().await?;
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.advance(size + 2);
        }
    }
}

/// Keep-alive connections to one server, reused across requests.
pub struct Pool {
    url: Url,
    idle: Mutex<Vec<Conn>>,
    timeout: Duration,
}

impl Pool {
    pub fn new(url: Url, timeout: Duration) -> Self {
        Self {
            url,
            idle: Mutex::new(Vec::new()),
            timeout,
        }
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// GET `path` on an idle connection (or a new one); errors as [`OpError`]s.
    pub async fn get(&self, path: &str) -> Result<Response, OpError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let attempt = async {
            let mut conn = match idle {
                Some(c) => c,
                None => Conn::connect(&self.url).await.map_err(|e| {
                    OpError::new("connect", format!("connecting to {}: {e}", self.url.addr()))
                })?,
            };
            let response = conn
                .get(path)
                .await
                .map_err(|e| OpError::new("http_io", format!("GET {path}: {e:#}")))?;
            if !response.close {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(conn);
                }
            }
            Ok(response)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(OpError::new(
                "timeout",
                format!("GET {path}: no response within {:?}", self.timeout),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn parses_urls() {
        let u = Url::parse("http://127.0.0.1:3000/api/products/{id}").unwrap();
        assert_eq!(u.addr(), "127.0.0.1:3000");
        assert_eq!(u.path_for("bench-0001"), "/api/products/bench-0001");
        assert_eq!(Url::parse("http://localhost").unwrap().port, 80);
        assert!(Url::parse("https://x").is_err());
        assert!(Url::parse("http://:80/").is_err());
    }

    /// Serves the given raw responses, one per request, on one connection.
    async fn serve(responses: Vec<&'static str>) -> Url {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            for r in responses {
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    seen.extend_from_slice(&buf[..n]);
                }
                assert!(
                    seen.starts_with(b"GET /p/"),
                    "{}",
                    String::from_utf8_lossy(&seen)
                );
                // Split the response in two writes to exercise partial reads.
                let (a, b) = r.split_at(r.len() / 2);
                socket.write_all(a.as_bytes()).await.unwrap();
                socket.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
                socket.write_all(b.as_bytes()).await.unwrap();
            }
        });
        Url::parse(&format!("http://127.0.0.1:{port}/p/{{id}}")).unwrap()
    }

    #[tokio::test]
    async fn reads_length_and_chunked_bodies_on_one_connection() {
        let url = serve(vec![
            "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n{\"id\":\"a\"}\n",
            "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        ])
        .await;
        let pool = Pool::new(url.clone(), Duration::from_secs(5));
        let r = pool.get(&url.path_for("a")).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (200, &b"{\"id\":\"a\"}\n"[..]));
        let r = pool.get(&url.path_for("b")).await.unwrap();
        assert_eq!((r.status, &r.body[..]), (404, &b"{\"a\":1}"[..]));
        let r = pool.get(&url.path_for("c")).await.unwrap();
        assert!(r.close);
        assert_eq!(&r.body[..], b"ok");
        assert!(
            pool.idle.lock().unwrap().is_empty(),
            "closed connection not reused"
        );
    }

    #[tokio::test]
    async fn refused_connection_is_an_error() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = Url::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
        let err = Pool::new(url, Duration::from_secs(2))
            .get("/")
            .await
            .unwrap_err();
        assert_eq!(err.kind, "connect");
    }
}
