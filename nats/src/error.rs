//! The one error type of the request contract.
//!
//! On the wire a failure is a reply with the headers `Nats-Service-Error-Code`
//! (an HTTP-style status) and `Nats-Service-Error` (one line), plus the JSON body
//! `{"error":{"code":...,"message":...}}`.

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Header carrying the HTTP-style status code of a failed request.
pub const ERROR_CODE_HEADER: &str = "Nats-Service-Error-Code";
/// Header carrying the one-line message of a failed request.
pub const ERROR_HEADER: &str = "Nats-Service-Error";

/// A failed request: HTTP-style status code and a one-line, human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    pub code: u16,
    pub message: String,
}

#[derive(Serialize, Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, Deserialize)]
struct ErrorDetail {
    code: u16,
    message: String,
}

impl ServiceError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        let message: String = message.into();
        // Header values must stay on one line.
        let message = message.replace(['\r', '\n'], " ");
        Self { code, message }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(429, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, message)
    }

    /// Busy, unavailable or timed out: the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self.code, 429 | 503 | 504)
    }

    /// The caller's fault (4xx): retrying the same request cannot help.
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// The headers that mark a reply as this error.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ERROR_CODE_HEADER, self.code.to_string().as_str());
        headers.insert(ERROR_HEADER, self.message.as_str());
        headers
    }

    /// The JSON error body `{"error":{"code":...,"message":...}}`.
    pub fn body(&self) -> Bytes {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
            },
        };
        // Serializing a struct of an integer and a string cannot fail.
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// Reads an error out of a reply's headers, if the reply is one.
    pub fn from_reply(headers: Option<&HeaderMap>, payload: &[u8]) -> Option<Self> {
        let headers = headers?;
        let code = headers.get(ERROR_CODE_HEADER)?;
        let code = code.as_str().trim().parse::<u16>().unwrap_or(500);
        let message = headers
            .get(ERROR_HEADER)
            .map(|v| v.as_str().to_string())
            .or_else(|| {
                serde_json::from_slice::<ErrorBody>(payload)
                    .ok()
                    .map(|b| b.error.message)
            })
            .unwrap_or_default();
        Some(Self { code, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_headers_and_body() {
        let err = ServiceError::conflict("stock short:\nonly 2 left");
        assert_eq!(err.message, "stock short: only 2 left");
        let headers = err.headers();
        assert_eq!(
            headers.get(ERROR_CODE_HEADER).map(|v| v.as_str()),
            Some("409")
        );
        let body: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
        assert_eq!(body["error"]["code"], 409);
        assert_eq!(body["error"]["message"], "stock short: only 2 left");
        assert_eq!(
            ServiceError::from_reply(Some(&headers), &err.body()),
            Some(err)
        );
    }

    #[test]
    fn a_reply_without_error_headers_is_not_an_error() {
        assert_eq!(ServiceError::from_reply(None, b"{}"), None);
        assert_eq!(
            ServiceError::from_reply(Some(&HeaderMap::new()), b"{}"),
            None
        );
    }

    #[test]
    fn classifies_transient_and_client_errors() {
        assert!(ServiceError::unavailable("x").is_transient());
        assert!(ServiceError::timeout("x").is_transient());
        assert!(!ServiceError::bad_request("x").is_transient());
        assert!(ServiceError::not_found("x").is_client_error());
        assert!(!ServiceError::internal("x").is_client_error());
    }
}
