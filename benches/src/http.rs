//! HTTP GETs for gateway-get over hyper's HTTP/1.1 connections, kept alive
//! and reused (as many as requests in flight), so HTTP figures come from the
//! same harness, histograms and load models as the NATS ones.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper::header::{ACCEPT, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;

use crate::stats::OpError;

/// A response: status and whole body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

type Connection = SendRequest<Empty<Bytes>>;

/// Keep-alive connections to one HTTP server, reused across requests.
pub struct Client {
    authority: String,
    idle: Mutex<Vec<Connection>>,
    timeout: Duration,
}

impl Client {
    /// A client of the server `authority` (`host:port`) whose requests fail
    /// with `timeout` after `timeout`.
    pub fn new(authority: &str, timeout: Duration) -> Self {
        Self {
            authority: authority.to_string(),
            idle: Mutex::new(Vec::new()),
            timeout,
        }
    }

    async fn connect(&self) -> Result<Connection, OpError> {
        let failed = |e: &dyn std::fmt::Display| {
            OpError::new("connect", format!("connecting to {}: {e}", self.authority))
        };
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| failed(&e))?;
        stream.set_nodelay(true).map_err(|e| failed(&e))?;
        let (sender, connection) = handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(&e))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    /// GET `path` on an idle connection (or a new one) and read the whole body;
    /// errors as [`OpError`]s (`connect`, `http_io`, `timeout`).
    pub async fn get(&self, path: &Uri) -> Result<Response, OpError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let io = |e: &dyn std::fmt::Display| OpError::new("http_io", format!("GET {path}: {e}"));
        let attempt = async {
            let mut connection = match idle {
                Some(c) => c,
                None => self.connect().await?,
            };
            connection.ready().await.map_err(|e| io(&e))?;
            let request = Request::get(path.clone())
                .header(HOST, &self.authority)
                .header(USER_AGENT, "shop-bench")
                .header(ACCEPT, "application/json")
                .body(Empty::new())
                .map_err(|e| io(&e))?;
            let response = connection.send_request(request).await.map_err(|e| io(&e))?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(|e| io(&e))?;
            if !connection.is_closed() {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(connection);
                }
            }
            Ok(Response {
                status,
                body: body.to_bytes(),
            })
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                let message = format!("GET {path}: no response within {:?}", self.timeout);
                Err(OpError::new("timeout", message))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let authority = format!("127.0.0.1:{}", shop_process::free_port().unwrap());
        let client = Client::new(&authority, Duration::from_secs(2));
        let err = client.get(&Uri::from_static("/")).await.unwrap_err();
        assert_eq!(err.kind, "connect", "{err:?}");
    }
}
