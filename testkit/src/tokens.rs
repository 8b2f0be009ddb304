//! A stand-in token issuer for tests of a service without the user service:
//! it answers `user.keys` with its own key and signs tokens for any user and
//! roles, so the service's runtime verifies them as it would real ones.

use anyhow::Context;
use async_nats::HeaderMap;
use futures::StreamExt;
use shop_nats::auth::{bearer_headers, Claims, Jwks, TokenSigner, AUDIENCE, ISSUER};

/// Answers `user.keys` while it lives; signs tokens.
pub struct Issuer {
    signer: TokenSigner,
    task: tokio::task::JoinHandle<()>,
}

impl Issuer {
    /// Starts answering `user.keys` on `client`'s server with a fixed test key.
    pub async fn serve(client: &async_nats::Client) -> anyhow::Result<Self> {
        let signer = TokenSigner::from_seed(&[0x5e; 32]);
        let mut requests = client
            .subscribe("user.keys")
            .await
            .context("subscribing to user.keys")?;
        client.flush().await.context("flushing")?;
        let jwks = serde_json::to_vec(&Jwks {
            keys: vec![signer.jwk()],
        })?;
        let client = client.clone();
        let task = tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    let _ = client.publish(reply, jwks.clone().into()).await;
                }
            }
        });
        Ok(Self { signer, task })
    }

    /// A token for `user_id` with `roles`, valid for ten minutes.
    pub fn token(&self, user_id: &str, roles: &[&str]) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = Claims {
            sub: user_id.to_string(),
            email: format!("{user_id}@example.com"),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            iss: ISSUER.to_string(),
            aud: AUDIENCE.to_string(),
            iat: now,
            exp: now + 600,
        };
        // Serializing these claims cannot fail.
        self.signer.sign(&claims).unwrap_or_default()
    }

    /// Headers carrying a token for `user_id` with `roles`.
    pub fn headers(&self, user_id: &str, roles: &[&str]) -> HeaderMap {
        bearer_headers(&self.token(user_id, roles))
    }

    /// Headers carrying an admin's token.
    pub fn admin(&self) -> HeaderMap {
        self.headers("test-admin", &["customer", "admin"])
    }

    /// The signing key (to forge with its key id, for instance).
    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
