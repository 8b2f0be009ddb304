//! `shop req SUBJECT JSON`, optionally as the admin (`--admin`: logs in with
//! `user.login`) or with a user's token (`--token`).

use std::time::Duration;

use async_nats::client::RequestErrorKind;
use shop_nats::ServiceError;

use crate::exit::{Failure, NO_ANSWER, SERVICE_ERROR, USAGE};

/// Whose token a request carries.
pub enum As {
    /// None: public subjects, or calls as a service.
    Nobody,
    /// This token (`--token`).
    Token(String),
    /// The admin's, logged in with these credentials (`--admin`).
    Admin { email: String, password: String },
}

pub async fn run(
    client: &async_nats::Client,
    subject: &str,
    json: &str,
    timeout: Duration,
    acting_as: As,
) -> Result<(), Failure> {
    let payload: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| Failure::new(USAGE, format!("the payload is not JSON: {e}")))?;
    let token = match acting_as {
        As::Nobody => None,
        As::Token(token) => Some(token),
        As::Admin { email, password } => Some(
            shop_nats::login::login(client, &email, &password, timeout)
                .await
                .map_err(|e| match e.code {
                    503 => Failure::new(NO_ANSWER, e.message),
                    _ => Failure::new(SERVICE_ERROR, format!("error {}: {}", e.code, e.message)),
                })?,
        ),
    };
    let reply = request(client, subject, &payload, timeout, token.as_deref()).await?;
    match serde_json::from_slice::<serde_json::Value>(&reply) {
        Ok(value) => println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        ),
        Err(_) => println!("{}", String::from_utf8_lossy(&reply)),
    }
    Ok(())
}

/// Sends `payload` to `subject`, with `token` as its bearer if any, and returns
/// the reply's body, or why not with its exit code: nobody answered (4) or the
/// service answered an error (1).
pub async fn request(
    client: &async_nats::Client,
    subject: &str,
    payload: &serde_json::Value,
    timeout: Duration,
    token: Option<&str>,
) -> Result<bytes::Bytes, Failure> {
    let mut request = async_nats::Request::new()
        .payload(payload.to_string().into())
        .timeout(Some(timeout));
    if let Some(token) = token {
        request = request.headers(shop_nats::auth::bearer_headers(token));
    }
    let reply = client
        .send_request(subject.to_string(), request)
        .await
        .map_err(|e| match e.kind() {
            RequestErrorKind::NoResponders => Failure::new(
                NO_ANSWER,
                format!("nothing answers {subject}: is its service running? (shop status)"),
            ),
            RequestErrorKind::TimedOut => Failure::new(
                NO_ANSWER,
                format!("{subject} did not answer within {timeout:?}"),
            ),
            _ => Failure::new(NO_ANSWER, format!("request to {subject} failed: {e}")),
        })?;
    if let Some(err) = ServiceError::from_reply(reply.headers.as_ref(), &reply.payload) {
        return Err(Failure::new(
            SERVICE_ERROR,
            format!("error {}: {}", err.code, err.message),
        ));
    }
    Ok(reply.payload)
}
