//! `user.register`: a new customer account, unique by email across instances
//! ([`Users::create_account`]).

use std::sync::Arc;

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::Users;
use crate::domain::{self, RegisterUser};

impl RequestBody for RegisterUser {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_register(self).map(drop)
    }
}

/// Registers a customer and answers the new profile (409 when the email is taken).
pub async fn register(
    users: Arc<Users>,
    request: Request,
    register: RegisterUser,
) -> HandlerResult {
    let account = domain::validate_register(&register)?;
    let profile = users.create_account(account, &request.trace).await?;
    request.encode(&profile)
}
