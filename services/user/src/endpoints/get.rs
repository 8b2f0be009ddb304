//! `user.get`: one profile, from the local store.

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::Users;
use crate::domain::{validate_id, GetUser};

impl RequestBody for GetUser {
    fn validate(&self) -> Result<(), ServiceError> {
        validate_id("id", &self.id)
    }

    fn min_revision(&self) -> Option<u64> {
        self.min_revision
    }
}

/// Answers the profile as this instance has it: the caller's own, or
/// anyone's for an admin (404 when unknown or not the caller's).
pub fn get(users: &Users, request: &Request, get: GetUser) -> HandlerResult {
    super::reachable(request.user()?, &get.id)?;
    users.read_profile(request, &get.id)
}
