//! Shared by the micro-benchmarks: a product the size of a seeded one, and
//! its events applied to a store the way the state actor applies a batch.
// Each benchmark uses a part of this.
#![allow(dead_code)]

use product_service::domain::{Product, ProductEvent};
use product_service::store::ProductProjection;
use shop_actors::store::{encode_u64, CHECKPOINT_KEY};
use shop_actors::{Projection, StoredEvent};

/// A product like `shop-bench seed-products` creates (reply JSON ~220 bytes).
pub fn product(i: usize) -> Product {
    Product {
        id: format!("bench-{i:04}"),
        name: format!("Bench product {i}"),
        description: format!(
            "Benchmark product number {i:04}; a plausible catalogue description sized like real data."
        ),
        price_cents: 1999,
        currency: "USD".to_string(),
        stock: 1_000_000,
        revision: 42,
    }
}

/// `events` as the stream holds them: each one's subject (which names its
/// product) and its JSON.
pub fn encode(events: impl Iterator<Item = ProductEvent>) -> Vec<(String, Vec<u8>)> {
    let stored = |e: ProductEvent| {
        let subject = format!("events.product.{}", e.product().id);
        (subject, serde_json::to_vec(&e).expect("encode event"))
    };
    events.map(stored).collect()
}

/// Applies `events` (stream sequences from `first_sequence` on) through the
/// product projection, with the checkpoint, in one sled batch.
pub fn apply(tree: &sled::Tree, events: &[(String, Vec<u8>)], first_sequence: u64) {
    let mut batch = sled::Batch::default();
    for (i, (subject, payload)) in events.iter().enumerate() {
        let event = StoredEvent {
            sequence: first_sequence + i as u64,
            subject,
            headers: None,
            payload,
        };
        ProductProjection
            .apply(&event, &mut batch)
            .expect("projection accepts the event");
    }
    let last = first_sequence + events.len() as u64 - 1;
    batch.insert(CHECKPOINT_KEY, &encode_u64(last)[..]);
    tree.apply_batch(batch).expect("apply batch");
}
