//! `user-service reseal`: after a data key rotation (or an upgrade from a
//! version that kept secrets in clear), seals every secret again with the
//! current `USER_DATA_KEY`, so the previous key can be dropped:
//!
//! - the signing keys in `user_signing_keys` ([`KeyRing::reseal`]; clear
//!   revisions are deleted from the bucket's history);
//! - every account's latest credential event on `events.user.credential.*`
//!   that is in clear or sealed with the previous key: a new
//!   `user.credential_set` sealed with the current key is appended (expected
//!   last subject sequence = the old one, so a concurrent change wins), and
//!   the superseded message is deleted from the stream.
//!
//! Safe to run while the service runs, and to run again.

use async_nats::jetstream::{
    self,
    consumer::{pull::OrderedConfig, DeliverPolicy},
    message::PublishMessage,
};
use futures::StreamExt;
use shop_nats::{
    sealed::{is_sealed, DataKeys},
    TraceContext,
};

use crate::{
    domain::{Secret, UserEvent},
    endpoints::credential_context,
    keys::KeyRing,
    STREAM,
};

/// What a reseal changed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Resealed {
    pub signing_keys: bool,
    pub credentials: usize,
    pub credentials_current: usize,
}

/// Reseals the signing keys and every credential not sealed with the current key.
pub async fn reseal(js: &jetstream::Context, ring: &KeyRing) -> anyhow::Result<Resealed> {
    let mut done = Resealed {
        signing_keys: ring.reseal().await?,
        ..Resealed::default()
    };
    let keys = ring.data_keys();
    let mut stream = js.get_stream(STREAM).await?;
    let info = stream.info().await?;
    if info.state.messages == 0 {
        return Ok(done);
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: "events.user.credential.>".to_string(),
            deliver_policy: DeliverPolicy::LastPerSubject,
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending as usize;
    let mut messages = consumer.messages().await?.take(pending);
    while let Some(message) = messages.next().await {
        let message = message?;
        let sequence = message.info().map_err(anyhow::Error::msg)?.stream_sequence;
        let subject = message.subject.to_string();
        let Ok(UserEvent::CredentialSet {
            user_id,
            password_hash,
        }) = serde_json::from_slice::<UserEvent>(&message.payload)
        else {
            tracing::warn!(subject, sequence, "not a credential event; left as it is");
            continue;
        };
        let Some(sealed) = reseal_one(keys, &user_id, &password_hash)? else {
            done.credentials_current += 1;
            continue;
        };
        let event = UserEvent::CredentialSet {
            user_id: user_id.clone(),
            password_hash: sealed,
        };
        let publish = PublishMessage::build()
            .payload(serde_json::to_vec(&event)?.into())
            .message_id(format!("user.credential.reseal:{user_id}:{sequence}"))
            .header(
                shop_actors::eventlog::EVENT_TYPE_HEADER,
                "user.credential_set",
            )
            .header(
                shop_nats::trace::TRACEPARENT_HEADER,
                TraceContext::new_root().header_value().as_str(),
            )
            .expected_last_subject_sequence(sequence);
        match js.send_publish(subject.clone(), publish).await?.await {
            Ok(_) => {
                stream.delete_message(sequence).await?;
                done.credentials += 1;
            }
            // Changed meanwhile: the newer credential is the service's own.
            Err(e) => tracing::warn!(user_id, error = %e, "credential not resealed"),
        }
    }
    Ok(done)
}

/// The credential sealed with the current key, or `None` when it already is.
fn reseal_one(keys: &DataKeys, user_id: &str, stored: &Secret) -> anyhow::Result<Option<Secret>> {
    let context = credential_context(user_id);
    let hash = match stored.expose() {
        sealed if is_sealed(sealed) => {
            if keys.is_current(sealed) {
                return Ok(None);
            }
            keys.open_text(sealed, &context)
                .map_err(|e| anyhow::anyhow!("credential of {user_id}: {e}"))?
        }
        clear => clear.to_string(),
    };
    Ok(Some(Secret::new(keys.seal(hash.as_bytes(), &context))))
}

#[cfg(test)]
mod tests {
    use shop_nats::sealed::DataKey;

    use super::*;

    #[test]
    fn credentials_are_resealed_once_with_the_current_key() {
        let old = DataKeys::new(DataKey::from_bytes(&[1; 32]), None);
        let keys = DataKeys::new(
            DataKey::from_bytes(&[2; 32]),
            Some(DataKey::from_bytes(&[1; 32])),
        );
        let context = credential_context("u1");
        let under_old = Secret::new(old.seal(b"$argon2id$h", &context));
        let resealed = reseal_one(&keys, "u1", &under_old).unwrap().unwrap();
        assert!(keys.is_current(resealed.expose()));
        assert_eq!(
            keys.open_text(resealed.expose(), &context).unwrap(),
            "$argon2id$h"
        );
        assert!(reseal_one(&keys, "u1", &resealed).unwrap().is_none());
        let clear = reseal_one(&keys, "u1", &Secret::new("$argon2id$h"))
            .unwrap()
            .unwrap();
        assert!(!clear.expose().contains("argon2"));
        assert!(
            reseal_one(&keys, "u2", &under_old).is_err(),
            "bound to its account"
        );
    }
}
