//! Where notification requests are answered: local reads, inline when the
//! local state is recent enough.

use std::{sync::Arc, time::Duration};

use bytes::{BufMut, BytesMut};
use futures::{future::BoxFuture, FutureExt};
use shop_actors::{EndpointSpec, Handler, HandlerResult, Request, StateHandle};
use shop_nats::{Encoding, ServiceError};

use crate::{
    domain::{self, ListNotifications, NotificationPage},
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
        match request.encoding {
            Encoding::Json => {
                let mut out =
                    BytesMut::with_capacity(64 + items.iter().map(|i| i.len() + 1).sum::<usize>());
                out.put_slice(b"{\"items\":[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.put_u8(b',');
                    }
                    out.put_slice(item);
                }
                out.put_slice(b"],\"next_cursor\":");
                out.put_slice(
                    &serde_json::to_vec(&next_cursor)
                        .map_err(|e| ServiceError::internal(e.to_string()))?,
                );
                out.put_u8(b'}');
                Ok(out.freeze())
            }
            Encoding::Bincode => {
                let items = items
                    .iter()
                    .map(|i| {
                        serde_json::from_slice(i).map_err(|e| {
                            ServiceError::internal(format!("corrupt stored notification: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                request.encode(&NotificationPage { items, next_cursor })
            }
        }
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
