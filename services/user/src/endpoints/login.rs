//! `user.login`: checks an email and password (slowed down after repeated
//! failures, [`crate::throttle`]) and answers a signed token.

use std::sync::Arc;

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::{clock, ServiceError};

use super::Users;
use crate::{
    domain::{self, email_key, Login, LoginReply, UserProfile},
    store,
    token::{Claims, AUDIENCE, ISSUER},
};

impl RequestBody for Login {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_login(self).map(drop)
    }
}

/// Answers a signed token for a matching email and password; 401 otherwise.
pub async fn login(users: Arc<Users>, request: Request, login: Login) -> HandlerResult {
    let key = email_key(&domain::validate_login(&login)?);
    // Counted before the hash is checked: a burst of guesses cannot all pass.
    users.throttle.admit(&key, clock::now_ms()).await?;
    // Every registration acknowledged before this login is visible to it.
    users.events.catch_up().await?;
    let tree = users.tree();
    let account = match store::user_id_by_email(tree, &key)? {
        Some(id) => store::user(tree, &id)?
            .map(|user| Ok::<_, ServiceError>((user, store::credential(tree, &id)?)))
            .transpose()?,
        None => None,
    };
    // Unknown email or not: exactly one hash is checked, with the same cost.
    let stored_hash = match &account {
        Some((user, Some(stored))) => Some(users.password_hash(&user.profile.id, stored)?),
        _ => None,
    };
    let matched = users
        .hasher
        .verify(&login.password, stored_hash.as_ref().map(|h| h.expose()))
        .await?;
    let user = match account {
        Some((user, _)) if matched => user,
        _ => return Err(domain::invalid_credentials()),
    };
    users.throttle.succeeded(&key).await;
    request.encode(&issue_token(&users, user.profile).await?)
}

/// A token for `profile`, signed with the current key.
async fn issue_token(users: &Users, profile: UserProfile) -> Result<LoginReply, ServiceError> {
    let now = clock::now_secs();
    let signer = users
        .keys
        .load_or_create(now)
        .await?
        .current()?
        .signer(users.keys.data_keys())?;
    let claims = Claims {
        sub: profile.id.clone(),
        email: profile.email.clone(),
        roles: profile
            .roles
            .iter()
            .map(|r| r.as_str().to_string())
            .collect(),
        iss: ISSUER.to_string(),
        aud: AUDIENCE.to_string(),
        iat: now,
        exp: now + users.settings.token_ttl.as_secs(),
    };
    let token = signer
        .sign(&claims)
        .map_err(|e| ServiceError::internal(format!("signing token: {e}")))?;
    tracing::info!(user_id = %profile.id, kid = signer.kid(), "login succeeded");
    Ok(LoginReply {
        token,
        token_type: "Bearer".to_string(),
        expires_at: claims.exp,
        user: profile,
    })
}
