//! `user.keys`: the public keys that verify tokens (a JWKS), including a
//! retired key until the tokens it signed have expired.

use std::sync::Arc;

use shop_actors::{Empty, HandlerResult, Request};
use shop_nats::clock;

use super::Users;

/// Answers the published signing keys, making the first one if there is none.
pub async fn keys(users: Arc<Users>, request: Request, _: Empty) -> HandlerResult {
    let now = clock::now_secs();
    let set = users.keys.load_or_create(now).await?;
    request.encode(&set.published(now, users.settings.token_ttl, users.keys.data_keys())?)
}
