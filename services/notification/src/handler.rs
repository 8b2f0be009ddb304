//! Where notification requests are answered: local reads, inline when the
//! local state is recent enough.

use std::{sync::Arc, time::Duration};

use futures::{future::BoxFuture, FutureExt};
use shop_actors::{page::StoredPage, EndpointSpec, Handler, HandlerResult, Request, StateHandle};
use shop_nats::ServiceError;

use crate::{
    domain::{self, ListNotifications, Notification},
    store,
};

pub const SERVICE: &str = "notification";
/// The stream holding every delivered notification and recorded recipient.
pub const STREAM: &str = "NOTIFICATION";
pub const STREAM_SUBJECTS: &[&str] = &["events.notification.>"];

/// Every subject the service answers.
pub const ENDPOINTS: &[EndpointSpec] = &[EndpointSpec {
    name: "list",
    subject: "notification.list",
}];

/// How long a read with `min_revision` waits for this instance to catch up.
const MIN_REVISION_WAIT: Duration = Duration::from_secs(2);

/// Answers `notification.list` from this instance's store.
pub struct NotificationHandler {
    state: StateHandle,
}

impl NotificationHandler {
    pub fn new(state: StateHandle) -> Self {
        Self { state }
    }

    /// `notification.list` when the local state is recent enough; `None` defers to the pool.
    fn list_now(&self, request: &Request) -> Option<HandlerResult> {
        let list: ListNotifications = match request.decode() {
            Ok(list) => list,
            Err(e) => return Some(Err(e)),
        };
        let page = match domain::validate_list(&list) {
            Ok(page) => page,
            Err(e) => return Some(Err(e)),
        };
        if list
            .min_revision
            .is_some_and(|min| self.state.applied() < min)
        {
            return None;
        }
        Some(self.list(request, &list.user_id, page))
    }

    async fn list_after_catch_up(&self, request: Request) -> HandlerResult {
        let list: ListNotifications = request.decode()?;
        let page = domain::validate_list(&list)?;
        self.state
            .wait_for(list.min_revision.unwrap_or(0), MIN_REVISION_WAIT)
            .await?;
        self.list(&request, &list.user_id, page)
    }

    /// One page of `user_id`'s notifications: `(limit, older than sequence)`.
    fn list(
        &self,
        request: &Request,
        user_id: &str,
        (limit, before): (usize, Option<u64>),
    ) -> HandlerResult {
        let (items, next_cursor) = store::user_page(self.state.tree(), user_id, before, limit)?;
        StoredPage { items, next_cursor }.encode::<Notification>(request, "notification")
    }
}

impl Handler for NotificationHandler {
    fn inline(&self, endpoint: &'static str, request: &Request) -> Option<HandlerResult> {
        match endpoint {
            "list" => self.list_now(request),
            _ => None,
        }
    }

    fn call(
        self: Arc<Self>,
        endpoint: &'static str,
        request: Request,
    ) -> BoxFuture<'static, HandlerResult> {
        async move {
            match endpoint {
                "list" => self.list_after_catch_up(request).await,
                other => Err(ServiceError::not_found(format!(
                    "no handler for endpoint {other}"
                ))),
            }
        }
        .boxed()
    }
}
