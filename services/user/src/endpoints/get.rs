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

/// Answers the profile as this instance has it (404 when unknown).
pub fn get(users: &Users, request: &Request, get: GetUser) -> HandlerResult {
    users.read_profile(request, &get.id)
}
