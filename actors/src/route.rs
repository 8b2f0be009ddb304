//! Typed handlers: how a plain function becomes an endpoint.
//!
//! - [`read`] takes `fn(&S, &Request, Body) -> HandlerResult`: it only reads
//!   local state, so it runs inline on the endpoint actor that received the
//!   request. When the body asks for a `min_revision` this instance has not
//!   applied yet, the runtime waits for it in the worker pool and then calls
//!   the same function: the catch-up is written once, here.
//! - [`write`] takes `async fn(Arc<S>, Request, Body) -> HandlerResult`: it runs
//!   in the bounded worker pool (appends, calls to other services).
//!
//! In both, the payload is decoded once into `Body` and validated
//! ([`RequestBody`]) before the function runs; a bad payload is a 400 without
//! touching the pool.

use std::{future::Future, sync::Arc, time::Duration};

use futures::{future::BoxFuture, FutureExt};
use schemars::JsonSchema;
use shop_nats::{manifest::EndpointKind, ServiceError};

use crate::{
    request::{decode_body, HandlerResult, Request, RequestBody},
    state::StateHandle,
};

/// How long a read with `min_revision` waits for this instance to catch up.
pub const MIN_REVISION_WAIT: Duration = Duration::from_secs(2);

/// What handling a request comes to: an answer now, or work for the pool.
pub enum Dispatch {
    Now(HandlerResult),
    Later(BoxFuture<'static, HandlerResult>),
}

type Call<S> = dyn Fn(&Arc<S>, &StateHandle, Request) -> Dispatch + Send + Sync;

/// A typed handler with its request type erased: what an endpoint runs.
pub struct Route<S> {
    pub kind: EndpointKind,
    /// The request type's short name, e.g. `GetProduct`.
    pub request: &'static str,
    /// JSON Schema of the request type.
    pub schema: fn() -> serde_json::Value,
    call: Arc<Call<S>>,
}

impl<S> Clone for Route<S> {
    fn clone(&self) -> Self {
        Self {
            kind: self.kind,
            request: self.request,
            schema: self.schema,
            call: self.call.clone(),
        }
    }
}

impl<S: Send + Sync + 'static> Route<S> {
    /// Runs `check` inline, on the endpoint actor, before the request is
    /// decoded or queued for the pool: when it refuses, the caller is
    /// answered at once instead of after waiting in the pool's queue. For
    /// cheap admission checks (e.g. "at capacity, retry after 1 s").
    pub fn gate(
        self,
        check: impl Fn(&S) -> Result<(), ServiceError> + Send + Sync + 'static,
    ) -> Self {
        let inner = self.call;
        Self {
            call: Arc::new(move |service: &Arc<S>, state: &StateHandle, request| {
                match check(service) {
                    Ok(()) => inner(service, state, request),
                    Err(refused) => Dispatch::Now(Err(refused)),
                }
            }),
            ..self
        }
    }

    /// Runs the route for one request.
    pub fn dispatch(&self, service: &Arc<S>, state: &StateHandle, request: Request) -> Dispatch {
        (self.call)(service, state, request)
    }
}

/// A read endpoint: `handler(&service, &request, body)`, answered inline.
pub fn read<S, B, F>(handler: F) -> Route<S>
where
    S: Send + Sync + 'static,
    B: RequestBody,
    F: Fn(&S, &Request, B) -> HandlerResult + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    Route {
        kind: EndpointKind::Read,
        request: short_type_name::<B>(),
        schema: schema_of::<B>,
        call: Arc::new(move |service: &Arc<S>, state: &StateHandle, request| {
            let body: B = match decode_body(&request) {
                Ok(body) => body,
                Err(e) => return Dispatch::Now(Err(e)),
            };
            match body.min_revision() {
                Some(min) if state.applied() < min => {
                    let (handler, service, state) =
                        (handler.clone(), service.clone(), state.clone());
                    Dispatch::Later(
                        async move {
                            state.wait_for_read(min, MIN_REVISION_WAIT).await?;
                            handler(&service, &request, body)
                        }
                        .boxed(),
                    )
                }
                _ => Dispatch::Now(handler(service, &request, body)),
            }
        }),
    }
}

/// A write endpoint: `handler(service, request, body).await`, in the worker pool.
pub fn write<S, B, F, Fut>(handler: F) -> Route<S>
where
    S: Send + Sync + 'static,
    B: RequestBody,
    F: Fn(Arc<S>, Request, B) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Route {
        kind: EndpointKind::Write,
        request: short_type_name::<B>(),
        schema: schema_of::<B>,
        call: Arc::new(move |service: &Arc<S>, _: &StateHandle, request| {
            match decode_body::<B>(&request) {
                Ok(body) => Dispatch::Later(handler(service.clone(), request, body).boxed()),
                Err(e) => Dispatch::Now(Err(e)),
            }
        }),
    }
}

fn schema_of<B: JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(B)).unwrap_or_default()
}

/// `product_service::domain::GetProduct` → `GetProduct`.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, JsonSchema)]
    struct Thing {
        #[allow(dead_code)]
        id: String,
    }
    impl RequestBody for Thing {}

    #[test]
    fn short_names_drop_the_path() {
        assert_eq!(short_type_name::<Thing>(), "Thing");
        assert_eq!(short_type_name::<crate::request::Empty>(), "Empty");
    }

    #[test]
    fn schemas_name_the_fields() {
        let schema = schema_of::<Thing>();
        assert!(schema["properties"]["id"].is_object(), "{schema}");
    }
}
