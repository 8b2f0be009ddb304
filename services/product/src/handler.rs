//! Where product requests are answered: reads inline from the local store,
//! writes in the worker pool through the event log.

use std::{sync::Arc, time::Duration};

use futures::{future::BoxFuture, FutureExt};
use shop_actors::{
    eventlog::Written, page::StoredPage, Append, EndpointSpec, EventLog, Handler, HandlerResult,
    Request, StateHandle,
};
use shop_nats::{Encoding, ServiceError};

use crate::{
    domain::{self, Decision, Product, ProductEvent, ReservationStatus, StockReply},
    store,
};

pub const SERVICE: &str = "product";
/// The stream holding every product change.
pub const STREAM: &str = "PRODUCT";
pub const STREAM_SUBJECTS: &[&str] = &["events.product.>"];

/// Every subject the service answers.
pub const ENDPOINTS: &[EndpointSpec] = &[
    EndpointSpec {
        name: "create",
        subject: "product.create",
    },
    EndpointSpec {
        name: "get",
        subject: "product.get",
    },
    EndpointSpec {
        name: "update",
        subject: "product.update",
    },
    EndpointSpec {
        name: "list",
        subject: "product.list",
    },
    EndpointSpec {
        name: "stock_reserve",
        subject: "product.stock.reserve",
    },
    EndpointSpec {
        name: "stock_release",
        subject: "product.stock.release",
    },
];

/// How long a read with `min_revision` waits for this instance to catch up.
const MIN_REVISION_WAIT: Duration = Duration::from_secs(2);

/// The stream subject of one product's events.
pub fn event_subject(product_id: &str) -> String {
    format!("events.product.{product_id}")
}

pub struct ProductHandler {
    events: EventLog,
    state: StateHandle,
}

impl ProductHandler {
    pub fn new(events: EventLog) -> Self {
        let state = events.state().clone();
        Self { events, state }
    }

    fn tree(&self) -> &sled::Tree {
        self.state.tree()
    }

    fn read_product(&self, request: &Request, id: &str) -> HandlerResult {
        match request.encoding {
            Encoding::Json => {
                store::product_json(self.tree(), id)?.ok_or_else(|| domain::not_found(id))
            }
            Encoding::Bincode => {
                let product =
                    store::product(self.tree(), id)?.ok_or_else(|| domain::not_found(id))?;
                request.encode(&product)
            }
        }
    }

    /// `product.get` when the local state is recent enough; `None` defers to the pool.
    fn get_now(&self, request: &Request) -> Option<HandlerResult> {
        let get: domain::GetProduct = match request.decode() {
            Ok(get) => get,
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
        Some(self.read_product(request, &get.id))
    }

    async fn get_after_catch_up(&self, request: Request) -> HandlerResult {
        let get: domain::GetProduct = request.decode()?;
        self.state
            .wait_for(get.min_revision.unwrap_or(0), MIN_REVISION_WAIT)
            .await?;
        self.read_product(&request, &get.id)
    }

    fn list(&self, request: &Request) -> HandlerResult {
        let list: domain::ListProducts = request.decode()?;
        let limit = domain::page_limit(&list)?;
        if let Some(cursor) = &list.cursor {
            domain::validate_id("cursor", cursor)?;
        }
        let (items, next_cursor) = store::product_page(self.tree(), list.cursor.as_deref(), limit)?;
        StoredPage { items, next_cursor }.encode::<Product>(request, "product")
    }

    /// Decides with `decide` against local state, appends the event, and answers
    /// with the product as the write left it.
    ///
    /// The product is read once per attempt and its revision is the expected
    /// revision of the append: the decision and the concurrency check must see
    /// the same state, or a decision made on stale stock could be accepted.
    async fn write_product<F>(
        &self,
        request: &Request,
        id: &str,
        msg_id: String,
        mut decide: F,
    ) -> Result<(Written, Option<ProductEvent>), ServiceError>
    where
        F: FnMut(Option<&Product>, &sled::Tree) -> Result<Decision, ServiceError>,
    {
        if store::product(self.tree(), id)?.is_none() {
            // Perhaps created a moment ago through another instance: catch up
            // before deciding against a product this instance has not seen.
            self.events.catch_up().await?;
        }
        let mut decided = None;
        let written = self
            .events
            .write(id, &request.trace, |state| {
                let current = store::product(state.tree(), id)?;
                let expected_revision = current.as_ref().map(|p| p.revision).unwrap_or(0);
                match decide(current.as_ref(), state.tree())? {
                    Decision::AlreadyDone => Ok(None),
                    Decision::Append(event) => {
                        let payload = serde_json::to_vec(&event)
                            .map_err(|e| ServiceError::internal(format!("encoding event: {e}")))?;
                        let append = Append {
                            subject: event_subject(id),
                            event_type: event.type_name(),
                            payload: payload.into(),
                            expected_revision: Some(expected_revision),
                            msg_id: msg_id.clone(),
                        };
                        decided = Some(event);
                        Ok(Some(append))
                    }
                }
            })
            .await?;
        Ok((written, decided))
    }

    /// The product after a write: as decided (with its new revision) unless the
    /// write was a repeat, in which case the local state is the truth.
    fn product_after(
        &self,
        request: &Request,
        id: &str,
        written: Written,
        decided: Option<ProductEvent>,
    ) -> HandlerResult {
        match (written, decided) {
            (Written::Appended(appended), Some(event)) if !appended.duplicate => {
                let mut product = event.product().clone();
                product.revision = appended.revision;
                request.encode(&product)
            }
            _ => self.read_product(request, id),
        }
    }

    async fn create(&self, request: Request) -> HandlerResult {
        let create: domain::CreateProduct = request.decode()?;
        let idempotent = create.idempotency_key.is_some();
        let product = domain::validate_create(&create, || match &create.idempotency_key {
            // A retried create with the same key names the same product.
            Some(key) => uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes())
                .simple()
                .to_string(),
            None => uuid::Uuid::now_v7().simple().to_string(),
        })?;
        let id = product.id.clone();
        let msg_id = format!("product.create:{id}");
        let (written, decided) = self
            .write_product(&request, &id, msg_id, |current, _| {
                domain::decide_create(current, product.clone(), idempotent)
            })
            .await?;
        self.product_after(&request, &id, written, decided)
    }

    async fn update(&self, request: Request) -> HandlerResult {
        let update: domain::UpdateProduct = request.decode()?;
        domain::validate_update(&update)?;
        let (written, decided) = self
            .write_product(
                &request,
                &update.id,
                EventLog::new_msg_id(),
                |current, _| domain::decide_update(current, &update),
            )
            .await?;
        self.product_after(&request, &update.id, written, decided)
    }

    async fn stock(&self, request: Request, reserve: bool) -> HandlerResult {
        let change: domain::StockChange = request.decode()?;
        domain::validate_stock_change(&change)?;
        let verb = if reserve { "reserve" } else { "release" };
        let msg_id = format!(
            "product.stock.{verb}:{}:{}",
            change.product_id, change.reservation_id
        );
        let (written, decided) = self
            .write_product(&request, &change.product_id, msg_id, |product, tree| {
                // Read after the product: reservations only change with it, so this is at least as new.
                let reservation =
                    store::reservation(tree, &change.product_id, &change.reservation_id)?;
                if reserve {
                    domain::decide_reserve(product, reservation, &change)
                } else {
                    domain::decide_release(product, reservation, &change)
                }
            })
            .await?;
        let reply = match (written, decided) {
            (Written::Appended(appended), Some(event)) if !appended.duplicate => {
                let (_, reservation) = event
                    .reservation()
                    .ok_or_else(|| ServiceError::internal("stock event without reservation"))?;
                StockReply {
                    product_id: change.product_id,
                    reservation_id: change.reservation_id,
                    quantity: reservation.quantity,
                    status: reservation.status,
                    stock: event.product().stock,
                    revision: appended.revision,
                }
            }
            // A repeat: the first request's effect is in the local state.
            _ => {
                let product = store::product(self.tree(), &change.product_id)?
                    .ok_or_else(|| domain::not_found(&change.product_id))?;
                let reservation =
                    store::reservation(self.tree(), &change.product_id, &change.reservation_id)?;
                let (quantity, status) = reservation
                    .map(|r| (r.quantity, r.status))
                    .unwrap_or((0, ReservationStatus::Released));
                StockReply {
                    product_id: change.product_id,
                    reservation_id: change.reservation_id,
                    quantity,
                    status,
                    stock: product.stock,
                    revision: product.revision,
                }
            }
        };
        request.encode(&reply)
    }
}

impl Handler for ProductHandler {
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
                "get" => self.get_after_catch_up(request).await,
                "list" => self.list(&request),
                "create" => self.create(request).await,
                "update" => self.update(request).await,
                "stock_reserve" => self.stock(request, true).await,
                "stock_release" => self.stock(request, false).await,
                other => Err(ServiceError::not_found(format!(
                    "no handler for endpoint {other}"
                ))),
            }
        }
        .boxed()
    }
}
