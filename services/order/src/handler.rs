//! Where order requests are answered.

use std::{sync::Arc, time::Duration};

use futures::{future::BoxFuture, FutureExt};
use shop_actors::{EndpointSpec, EventLog, Handler, HandlerResult, Request, StateHandle};
use shop_nats::{CallOptions, ServiceClient, ServiceError};

use crate::{
    domain::{self, OrderPage, PricedProduct},
    record::record,
    store,
    tokens::PaymentTokens,
};

pub const SERVICE: &str = "order";
pub const STREAM: &str = "ORDER";
pub const STREAM_SUBJECTS: &[&str] = &["events.order.>"];

pub const ENDPOINTS: &[EndpointSpec] = &[
    EndpointSpec {
        name: "create",
        subject: "order.create",
    },
    EndpointSpec {
        name: "get",
        subject: "order.get",
    },
    EndpointSpec {
        name: "list",
        subject: "order.list",
    },
    EndpointSpec {
        name: "cancel",
        subject: "order.cancel",
    },
];

pub struct OrderHandler {
    events: EventLog,
    state: StateHandle,
    client: ServiceClient,
    tokens: PaymentTokens,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl OrderHandler {
    pub fn new(events: EventLog, client: ServiceClient, tokens: PaymentTokens) -> Self {
        let state = events.state().clone();
        Self {
            events,
            state,
            client,
            tokens,
        }
    }

    fn get_now(&self, request: &Request) -> Option<HandlerResult> {
        let get: domain::GetOrder = match request.decode() {
            Ok(g) => g,
            Err(e) => return Some(Err(e)),
        };
        if let Err(e) = domain::validate_id("id", &get.id) {
            return Some(Err(e));
        }
        if get
            .min_revision
            .is_some_and(|min| self.state.applied() < min)
        {
            return None;
        }
        Some(self.read(request, &get.id))
    }

    fn read(&self, request: &Request, id: &str) -> HandlerResult {
        let order = store::order(self.state.tree(), id)?
            .ok_or_else(|| ServiceError::not_found(format!("order {id} not found")))?;
        let order = domain::visible_to(request.caller().as_ref(), order)?;
        request.encode(&order)
    }

    fn list(&self, request: &Request) -> HandlerResult {
        let list: domain::ListOrders = request.decode()?;
        domain::validate_id("user_id", &list.user_id)?;
        domain::check_list(request.caller().as_ref(), &list.user_id)?;
        let limit = domain::page_limit(list.limit)?;
        let (items, next_cursor) = store::user_orders(
            self.state.tree(),
            &list.user_id,
            list.cursor.as_deref(),
            limit,
        )?;
        request.encode(&OrderPage { items, next_cursor })
    }

    async fn create(&self, request: Request) -> HandlerResult {
        let create: domain::CreateOrder = request.decode()?;
        domain::validate_create(&create)?;
        domain::check_create(request.caller().as_ref(), &create.user_id)?;
        // The same key from the same user names the same order, on any instance.
        let id = uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_OID,
            format!("{}\u{0}{}", create.user_id, create.idempotency_key).as_bytes(),
        )
        .simple()
        .to_string();
        if let Some(existing) = store::order(self.state.tree(), &id)? {
            return request.encode(&existing);
        }
        let products = futures::future::try_join_all(create.items.iter().map(|line| {
            let client = self.client.clone();
            let trace = request.trace.clone();
            async move {
                let options = CallOptions::default()
                    .idempotent()
                    .timeout(Duration::from_secs(2));
                client
                    .call::<_, PricedProduct>(
                        "product.get",
                        &serde_json::json!({"id": line.product_id}),
                        options,
                        Some(&trace),
                    )
                    .await
                    .map_err(|e| match e.code {
                        404 => ServiceError::bad_request(format!(
                            "product {} does not exist",
                            line.product_id
                        )),
                        _ => ServiceError::new(
                            if e.is_transient() { 503 } else { e.code },
                            format!("pricing {}: {}", line.product_id, e.message),
                        ),
                    })
            }
        }))
        .await?;
        let order = domain::price_order(id.clone(), &create, &products, now_ms())?;
        self.tokens.put(&id, &create.payment_token).await?;
        let recorded = record(
            &self.events,
            &request.trace,
            &id,
            Some(format!("order.create:{id}")),
            |current| match current {
                Some(_) => Ok(None),
                None => Ok(Some(order.clone())),
            },
        )
        .await?
        .ok_or_else(|| ServiceError::internal("order vanished after being created"))?;
        tracing::info!(order_id = %id, user_id = %create.user_id, total_cents = recorded.total_cents, "order created");
        request.encode(&recorded)
    }

    async fn cancel(&self, request: Request) -> HandlerResult {
        let cancel: domain::CancelOrder = request.decode()?;
        domain::validate_id("id", &cancel.id)?;
        let id = cancel.id.clone();
        let caller = request.caller();
        let order = record(&self.events, &request.trace, &id, None, |current| {
            let current = current
                .filter(|order| domain::may_access(caller.as_ref(), order))
                .ok_or_else(|| ServiceError::not_found(format!("order {id} not found")))?;
            domain::decide_cancel(current, now_ms())
        })
        .await?
        .ok_or_else(|| ServiceError::not_found(format!("order {} not found", cancel.id)))?;
        request.encode(&order)
    }
}

impl Handler for OrderHandler {
    fn inline(&self, endpoint: &'static str, request: &Request) -> Option<HandlerResult> {
        match endpoint {
            "get" => self.get_now(request),
            "list" => Some(self.list(request)),
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
                "create" => self.create(request).await,
                "cancel" => self.cancel(request).await,
                "get" => {
                    let get: domain::GetOrder = request.decode()?;
                    self.state
                        .wait_for(get.min_revision.unwrap_or(0), Duration::from_secs(2))
                        .await?;
                    self.read(&request, &get.id)
                }
                "list" => self.list(&request),
                other => Err(ServiceError::not_found(format!(
                    "no handler for endpoint {other}"
                ))),
            }
        }
        .boxed()
    }
}
