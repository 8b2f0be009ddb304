//! Logging in over NATS (`user.login`) for tools that act as a user: `shop
//! req --admin`, the demo catalog seed, the benchmarks. Services never log
//! in: they pass on the token of the user they act for.

use std::time::Duration;

use crate::ServiceError;

/// Logs in with `email` and `password` and returns the token (for the
/// `Authorization: Bearer` header, [`crate::auth::bearer_headers`]).
pub async fn login(
    nats: &async_nats::Client,
    email: &str,
    password: &str,
    timeout: Duration,
) -> Result<String, ServiceError> {
    let body = serde_json::json!({"email": email, "password": password}).to_string();
    let request = async_nats::Request::new()
        .payload(body.into())
        .timeout(Some(timeout));
    let reply = nats
        .send_request("user.login", request)
        .await
        .map_err(|e| ServiceError::unavailable(format!("user.login: {e}")))?;
    if let Some(err) = ServiceError::from_reply(reply.headers.as_ref(), &reply.payload) {
        return Err(ServiceError::new(
            err.code,
            format!("logging in as {email}: {}", err.message),
        ));
    }
    #[derive(serde::Deserialize)]
    struct LoginReply {
        token: String,
    }
    serde_json::from_slice::<LoginReply>(&reply.payload)
        .map(|r| r.token)
        .map_err(|e| ServiceError::internal(format!("user.login answered no token: {e}")))
}
