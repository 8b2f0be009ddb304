//! `shop req SUBJECT JSON`.

use std::time::Duration;

use async_nats::client::RequestErrorKind;
use shop_nats::ServiceError;

use crate::exit::{Failure, NO_ANSWER, SERVICE_ERROR, USAGE};

pub async fn run(
    client: &async_nats::Client,
    subject: &str,
    json: &str,
    timeout: Duration,
) -> Result<(), Failure> {
    let payload: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| Failure::new(USAGE, format!("the payload is not JSON: {e}")))?;
    let reply = request(client, subject, &payload, timeout).await?;
    match serde_json::from_slice::<serde_json::Value>(&reply) {
        Ok(value) => println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        ),
        Err(_) => println!("{}", String::from_utf8_lossy(&reply)),
    }
    Ok(())
}

/// Sends `payload` to `subject` and returns the reply's body, or why not with
/// its exit code: nobody answered (4) or the service answered an error (1).
pub async fn request(
    client: &async_nats::Client,
    subject: &str,
    payload: &serde_json::Value,
    timeout: Duration,
) -> Result<bytes::Bytes, Failure> {
    let request = async_nats::Request::new()
        .payload(payload.to_string().into())
        .timeout(Some(timeout));
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
