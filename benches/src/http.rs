//! HTTP GETs for gateway-get through hyper's pooled keep-alive client (as many
//! connections as requests in flight), so HTTP figures come from the same
//! harness, histograms and load models as the NATS ones.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{ACCEPT, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client as Hyper};
use hyper_util::rt::TokioExecutor;

use crate::stats::OpError;

/// A response: status and whole body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// Keep-alive connections to HTTP servers, reused across requests.
pub struct Client {
    hyper: Hyper<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl Client {
    /// A client whose requests fail with `timeout` after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            hyper: Hyper::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// GET `uri` and read the whole body; errors as [`OpError`]s (`connect`,
    /// `http_io`, `timeout`).
    pub async fn get(&self, uri: &Uri) -> Result<Response, OpError> {
        let io = |e: &dyn std::error::Error| OpError::new("http_io", format!("GET {uri}: {e}"));
        let attempt = async {
            let request = Request::get(uri.clone())
                .header(USER_AGENT, "shop-bench")
                .header(ACCEPT, "application/json")
                .body(Empty::new())
                .map_err(|e| io(&e))?;
            let response = self.hyper.request(request).await.map_err(|e| {
                let kind = if e.is_connect() { "connect" } else { "http_io" };
                let source = std::error::Error::source(&e).map(|s| format!(": {s}"));
                OpError::new(
                    kind,
                    format!("GET {uri}: {e}{}", source.unwrap_or_default()),
                )
            })?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(|e| io(&e))?;
            Ok(Response {
                status,
                body: body.to_bytes(),
            })
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or_else(|_| {
                let message = format!("GET {uri}: no response within {:?}", self.timeout);
                Err(OpError::new("timeout", message))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let port = shop_process::free_port().unwrap();
        let uri: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let err = Client::new(Duration::from_secs(2))
            .get(&uri)
            .await
            .unwrap_err();
        assert_eq!(err.kind, "connect", "{err:?}");
    }
}
