//! HTTP errors: every failure is a status and the JSON body
//! `{"error":{"code":...,"message":...}}`, the same shape the services use on NATS.

use std::time::Duration;

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use shop_nats::ServiceError;

use crate::service::Service;

/// A failed HTTP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
    /// Adds `WWW-Authenticate: Bearer` (401).
    pub challenge: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            challenge: false,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            challenge: true,
            ..Self::new(StatusCode::UNAUTHORIZED, message)
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn too_many_requests(message: impl Into<String>, retry_after: Duration) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, message).retry_after(retry_after)
    }

    pub fn unavailable(message: impl Into<String>, retry_after: Duration) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(retry_after)
    }

    /// Sets `Retry-After` to `after`, rounded up to whole seconds (at least 1).
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(retry_after_secs(after));
        self
    }

    /// What a service's error means for the HTTP caller. The service's 4xx pass
    /// through; 429/503 say when to retry; 504 stays 504; anything else is the
    /// service failing: 502.
    pub fn from_service(service: Service, err: ServiceError) -> Self {
        match err.code {
            400 | 401 | 403 | 404 | 409 | 413 | 422 => {
                let status = StatusCode::from_u16(err.code).unwrap_or(StatusCode::BAD_REQUEST);
                Self::new(status, err.message)
            }
            429 => {
                let after = retry_after_in(&err.message).unwrap_or(Duration::from_secs(1));
                Self::too_many_requests(err.message, after)
            }
            503 => Self::unavailable(
                format!("{service} service unavailable: {}", err.message),
                Duration::from_secs(1),
            ),
            504 => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{service} service timed out: {}", err.message),
            ),
            code => Self::new(
                StatusCode::BAD_GATEWAY,
                format!("{service} service failed ({code}): {}", err.message),
            ),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let body =
            serde_json::json!({"error": {"code": self.status.as_u16(), "message": self.message}});
        Bytes::from(body.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body(),
        )
            .into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"shop\""),
            );
        }
        response
    }
}

/// Whole seconds, rounded up, at least 1: what `Retry-After` carries.
pub fn retry_after_secs(after: Duration) -> u64 {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    secs.max(1)
}

/// The delay in a service message like "... retry after 4 s" or "... retry after 250 ms".
fn retry_after_in(message: &str) -> Option<Duration> {
    let rest = &message[message.find("retry after ")? + "retry after ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let value: u64 = digits.parse().ok()?;
    let unit = rest[digits.len()..].trim_start();
    if unit.starts_with("ms") {
        Some(Duration::from_millis(value))
    } else {
        Some(Duration::from_secs(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_to_http() {
        let cases = [
            (400, StatusCode::BAD_REQUEST),
            (403, StatusCode::FORBIDDEN),
            (404, StatusCode::NOT_FOUND),
            (409, StatusCode::CONFLICT),
            (429, StatusCode::TOO_MANY_REQUESTS),
            (500, StatusCode::BAD_GATEWAY),
            (503, StatusCode::SERVICE_UNAVAILABLE),
            (504, StatusCode::GATEWAY_TIMEOUT),
        ];
        for (code, status) in cases {
            let err = ApiError::from_service(Service::Order, ServiceError::new(code, "boom"));
            assert_eq!(err.status, status, "{code}");
            assert_eq!(
                err.retry_after.is_some(),
                matches!(code, 429 | 503),
                "{code}"
            );
        }
        let not_found =
            ApiError::from_service(Service::Order, ServiceError::not_found("order x not found"));
        assert_eq!(not_found.message, "order x not found");
    }

    #[test]
    fn retry_after_comes_from_the_service_message() {
        let err = ApiError::from_service(
            Service::User,
            ServiceError::too_many_requests(
                "too many failed logins for this account; retry after 7 s",
            ),
        );
        assert_eq!(err.retry_after, Some(7));
        assert_eq!(
            retry_after_in("circuit open, retry after 250 ms"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(retry_after_in("no hint"), None);
        assert_eq!(retry_after_secs(Duration::from_millis(250)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn body_is_the_contract_shape() {
        let err = ApiError::bad_request("invalid JSON: expected value at line 1 column 1");
        let body: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
        assert_eq!(body["error"]["code"], 400);
        assert_eq!(
            body["error"]["message"],
            "invalid JSON: expected value at line 1 column 1"
        );
    }
}
