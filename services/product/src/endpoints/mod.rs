//! Where product requests are answered, one file per endpoint. Reads come
//! from this instance's sled store; writes decide against it and append to the
//! `PRODUCT` stream through [`Products::write_product`].

pub mod create;
pub mod get;
pub mod list;
pub mod stock;
pub mod update;

use std::sync::Arc;

use shop_actors::{Change, Changed, EventLog, GroupCommit, HandlerResult, Request};
use shop_nats::{Encoding, ServiceError, TraceContext};

use crate::{
    domain::{self, Decision, Product, ProductEvent},
    store,
};

/// The stream subject of one product's events.
pub fn event_subject(product_id: &str) -> String {
    format!("events.product.{product_id}")
}

/// The product service's state, shared by every handler.
pub struct Products {
    events: EventLog,
    /// Stock changes, grouped per product (see [`stock`]).
    stock: Arc<GroupCommit<stock::StockWrites>>,
}

impl Products {
    /// The service's state; at most `stock_group_max` stock changes to one
    /// product share an event.
    pub fn new(events: EventLog, stock_group_max: usize) -> Self {
        Self {
            stock: GroupCommit::new(events.clone(), stock::StockWrites, stock_group_max),
            events,
        }
    }

    fn tree(&self) -> &sled::Tree {
        self.events.state().tree()
    }

    /// One product in the request's encoding: JSON as stored, bincode re-encoded.
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

    /// Decides with `decide` against the product as this instance has it and
    /// appends the event, with the product's revision as the expected one.
    async fn write_product<F>(
        &self,
        trace: &TraceContext,
        id: &str,
        msg_id: Option<String>,
        mut decide: F,
    ) -> Result<Changed<ProductEvent>, ServiceError>
    where
        F: FnMut(Option<&Product>, &sled::Tree) -> Result<Decision, ServiceError>,
    {
        if store::product(self.tree(), id)?.is_none() {
            // Perhaps created a moment ago through another instance: catch up
            // before deciding against a product this instance has not seen.
            self.events.catch_up().await?;
        }
        self.events
            .change(id, trace, msg_id, |tree| {
                let current = store::product(tree, id)?;
                let expected_revision = current.as_ref().map_or(0, |p| p.revision);
                Ok(match decide(current.as_ref(), tree)? {
                    Decision::AlreadyDone => None,
                    Decision::Append(event) => Some(Change {
                        subject: event_subject(id),
                        expected_revision,
                        event,
                    }),
                })
            })
            .await
    }

    /// The product after a write: as decided (with its new revision), or as the
    /// local state has it when the write was a repeat.
    fn product_after(
        &self,
        request: &Request,
        id: &str,
        changed: Changed<ProductEvent>,
    ) -> HandlerResult {
        match changed.appended() {
            Some((event, revision)) => {
                let mut product = event.product().clone();
                product.revision = revision;
                request.encode(&product)
            }
            None => self.read_product(request, id),
        }
    }
}
