//! Where product data lands locally: the sled layout and the projection that
//! fills it from the `PRODUCT` stream.
//!
//! | key                        | value                                  |
//! |----------------------------|----------------------------------------|
//! | `p/<product_id>`           | format byte + product JSON (the reply) |
//! | `r/<product_id>/<res_id>`  | format byte + reservation JSON         |
//!
//! Products are stored as their reply JSON so a JSON `product.get` returns the
//! stored bytes without decoding and re-encoding them.

use bytes::Bytes;
use shop_actors::{ApplyError, Projection, StoredEvent};
use shop_nats::ServiceError;

use crate::domain::{Product, ProductEvent, Reservation};

/// Version of the value format; bumped when it changes incompatibly.
pub const FORMAT_VERSION: u8 = 1;
const PRODUCT_PREFIX: &str = "p/";

pub fn product_key(id: &str) -> Vec<u8> {
    format!("{PRODUCT_PREFIX}{id}").into_bytes()
}

pub fn reservation_key(product_id: &str, reservation_id: &str) -> Vec<u8> {
    format!("r/{product_id}/{reservation_id}").into_bytes()
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApplyError> {
    shop_actors::store::encode_versioned(FORMAT_VERSION, value).map_err(ApplyError::Invalid)
}

fn body(value: &[u8]) -> Result<&[u8], ServiceError> {
    shop_actors::store::versioned_body(FORMAT_VERSION, value)
}

fn read(tree: &sled::Tree, key: &[u8]) -> Result<Option<sled::IVec>, ServiceError> {
    tree.get(key)
        .map_err(|e| ServiceError::internal(format!("reading local store: {e}")))
}

/// The product's reply JSON, as stored.
pub fn product_json(tree: &sled::Tree, id: &str) -> Result<Option<Bytes>, ServiceError> {
    read(tree, &product_key(id))?
        .map(|v| body(&v).map(Bytes::copy_from_slice))
        .transpose()
}

pub fn product(tree: &sled::Tree, id: &str) -> Result<Option<Product>, ServiceError> {
    read(tree, &product_key(id))?
        .map(|v| {
            serde_json::from_slice(body(&v)?)
                .map_err(|e| ServiceError::internal(format!("corrupt stored product {id}: {e}")))
        })
        .transpose()
}

pub fn reservation(
    tree: &sled::Tree,
    product_id: &str,
    reservation_id: &str,
) -> Result<Option<Reservation>, ServiceError> {
    read(tree, &reservation_key(product_id, reservation_id))?
        .map(|v| {
            serde_json::from_slice(body(&v)?).map_err(|e| {
                ServiceError::internal(format!("corrupt stored reservation {reservation_id}: {e}"))
            })
        })
        .transpose()
}

/// One page of products in id order, after `cursor`; the stored JSON of each,
/// and the cursor of the next page when there is one.
pub fn product_page(
    tree: &sled::Tree,
    cursor: Option<&str>,
    limit: usize,
) -> Result<(Vec<Bytes>, Option<String>), ServiceError> {
    let start = match cursor {
        // The byte after the cursor id: the first key strictly greater than it.
        Some(cursor) => {
            let mut key = product_key(cursor);
            key.push(0);
            key
        }
        None => PRODUCT_PREFIX.as_bytes().to_vec(),
    };
    let mut items = Vec::with_capacity(limit);
    let mut last_id = None;
    let mut more = false;
    for entry in tree.range(start..) {
        let (key, value) =
            entry.map_err(|e| ServiceError::internal(format!("reading local store: {e}")))?;
        if !key.starts_with(PRODUCT_PREFIX.as_bytes()) {
            break;
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push(Bytes::copy_from_slice(body(&value)?));
        last_id = Some(String::from_utf8_lossy(&key[PRODUCT_PREFIX.len()..]).into_owned());
    }
    Ok((items, if more { last_id } else { None }))
}

/// Applies `PRODUCT` stream events to the local store.
pub struct ProductProjection;

impl Projection for ProductProjection {
    fn apply(&self, event: &StoredEvent<'_>, batch: &mut sled::Batch) -> Result<(), ApplyError> {
        let decoded: ProductEvent = event.decode()?;
        let mut product = decoded.product().clone();
        event.check_aggregate(&product.id)?;
        product.revision = event.sequence;
        batch.insert(product_key(&product.id), encode(&product)?);
        for (reservation_id, reservation) in decoded.reservations() {
            batch.insert(
                reservation_key(&product.id, reservation_id),
                encode(&reservation)?,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ReservationStatus;

    fn temp_tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("product").unwrap();
        (dir, tree)
    }

    fn product(id: &str, stock: i64) -> Product {
        Product {
            id: id.into(),
            name: format!("Product {id}"),
            description: String::new(),
            price_cents: 100,
            currency: "USD".into(),
            stock,
            revision: 0,
        }
    }

    fn apply(tree: &sled::Tree, sequence: u64, event: &ProductEvent) {
        let payload = serde_json::to_vec(event).unwrap();
        let mut batch = sled::Batch::default();
        ProductProjection
            .apply(
                &StoredEvent {
                    sequence,
                    subject: &format!("events.product.{}", event.product().id),
                    headers: None,
                    payload: &payload,
                },
                &mut batch,
            )
            .unwrap();
        tree.apply_batch(batch).unwrap();
    }

    #[test]
    fn projection_sets_revision_and_reservations() {
        let (_dir, tree) = temp_tree();
        apply(
            &tree,
            3,
            &ProductEvent::Created {
                product: product("a", 5),
            },
        );
        apply(
            &tree,
            9,
            &ProductEvent::StockReserved {
                product: product("a", 3),
                reservation_id: "r1".into(),
                quantity: 2,
            },
        );
        let stored = super::product(&tree, "a").unwrap().unwrap();
        assert_eq!((stored.stock, stored.revision), (3, 9));
        let json: serde_json::Value =
            serde_json::from_slice(&product_json(&tree, "a").unwrap().unwrap()).unwrap();
        assert_eq!(json["revision"], 9);
        assert_eq!(
            reservation(&tree, "a", "r1").unwrap(),
            Some(Reservation {
                quantity: 2,
                status: ReservationStatus::Reserved
            })
        );
        assert_eq!(reservation(&tree, "a", "r2").unwrap(), None);
    }

    #[test]
    fn pages_walk_every_product_once() {
        let (_dir, tree) = temp_tree();
        for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            apply(
                &tree,
                i as u64 + 1,
                &ProductEvent::Created {
                    product: product(id, 1),
                },
            );
        }
        apply(
            &tree,
            6,
            &ProductEvent::StockReserved {
                product: product("b", 0),
                reservation_id: "r".into(),
                quantity: 1,
            },
        );
        let (page1, cursor) = product_page(&tree, None, 2).unwrap();
        assert_eq!((page1.len(), cursor.as_deref()), (2, Some("b")));
        let (page2, cursor) = product_page(&tree, cursor.as_deref(), 2).unwrap();
        assert_eq!((page2.len(), cursor.as_deref()), (2, Some("d")));
        let (page3, cursor) = product_page(&tree, cursor.as_deref(), 2).unwrap();
        assert_eq!((page3.len(), cursor), (1, None));
        let (exact, cursor) = product_page(&tree, None, 5).unwrap();
        assert_eq!((exact.len(), cursor), (5, None));
    }
}
