//! `user.update`: change some of a profile's fields, optionally only if it is
//! still at an `expected_revision`.

use std::sync::Arc;

use shop_actors::{HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::{change, profile_subject, Users};
use crate::{
    domain::{self, UpdateUser, UserEvent, UserProfile},
    store,
};

impl RequestBody for UpdateUser {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_update(self)
    }
}

/// Updates the profile (the caller's own, or anyone's for an admin; 404
/// otherwise) and answers it with its new revision.
pub async fn update(users: Arc<Users>, request: Request, update: UpdateUser) -> HandlerResult {
    super::reachable(request.user()?, &update.id)?;
    let changed = users
        .events
        .change(&update.id, &request.trace, None, |tree| {
            let current = store::user(tree, &update.id)?;
            // The expected revision comes from the same read as the decision.
            let expected = current.as_ref().map_or(0, |u| u.profile_revision);
            let decision = domain::decide_update(current.as_ref().map(|u| &u.profile), &update)?;
            Ok(change(decision, profile_subject(&update.id), expected))
        })
        .await?;
    match changed.appended() {
        Some((UserEvent::Updated { user }, revision)) => {
            request.encode(&UserProfile::new(user, revision))
        }
        // A repeat, or nothing to change: the local state has the profile.
        _ => users.read_profile(&request, &update.id),
    }
}
