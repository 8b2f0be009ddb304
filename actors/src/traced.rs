//! A handler's slow path run inside its request's trace, so that what it logs
//! carries the trace id (see `shop_nats::trace::scope`).

use std::sync::Arc;

use futures::{future::BoxFuture, FutureExt};

use crate::request::{Handler, HandlerResult, Request};

/// Wraps the handler the worker pool runs; `inline` is never called through it
/// (the endpoint actor scopes inline work itself).
pub struct TraceScoped(pub Arc<dyn Handler>);

impl Handler for TraceScoped {
    fn inline(&self, endpoint: &'static str, request: &Request) -> Option<HandlerResult> {
        shop_nats::trace::sync_scope(&request.trace, || self.0.inline(endpoint, request))
    }

    fn call(
        self: Arc<Self>,
        endpoint: &'static str,
        request: Request,
    ) -> BoxFuture<'static, HandlerResult> {
        let trace = request.trace.clone();
        shop_nats::trace::scope(&trace, self.0.clone().call(endpoint, request)).boxed()
    }
}
