//! `notification.list`: a page of one user's notifications, newest first.

use shop_actors::{page::StoredPage, HandlerResult, Request, RequestBody};
use shop_nats::ServiceError;

use super::Notifications;
use crate::{
    domain::{self, ListNotifications, Notification},
    store,
};

impl RequestBody for ListNotifications {
    fn validate(&self) -> Result<(), ServiceError> {
        domain::validate_list(self).map(drop)
    }

    fn min_revision(&self) -> Option<u64> {
        self.min_revision
    }
}

/// Answers one page of the user's notifications, newest first: the caller's
/// own, or anyone's for an admin (403 otherwise).
pub fn list(
    notifications: &Notifications,
    request: &Request,
    list: ListNotifications,
) -> HandlerResult {
    if !request.user()?.may_act_for(&list.user_id) {
        return Err(ServiceError::forbidden(
            "only your own notifications can be listed",
        ));
    }
    let (limit, before) = domain::validate_list(&list)?;
    let (items, next_cursor) =
        store::user_page(notifications.tree(), &list.user_id, before, limit)?;
    StoredPage { items, next_cursor }.encode::<Notification>(request, "notification")
}
