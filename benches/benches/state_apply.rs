//! State apply: what the state actor does per batch of stream events — the
//! product projection writes each event into a sled batch, the checkpoint
//! goes in the same batch, and the batch is applied to a temporary store.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use product_service::domain::ProductEvent;
use product_service::store::{self, ProductProjection};
use shop_actors::store::{encode_u64, CHECKPOINT_KEY};
use shop_actors::{Projection, Store, StoredEvent};

mod common;

/// `product.stock_reserved` events for `n` products, as the stream holds them.
fn events(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let event = ProductEvent::StockReserved {
                product: common::product(i % 1000),
                reservation_id: format!("bench-res-{i}"),
                quantity: 1,
            };
            serde_json::to_vec(&event).expect("encode event")
        })
        .collect()
}

fn apply(tree: &sled::Tree, payloads: &[Vec<u8>], first_sequence: u64) {
    let mut batch = sled::Batch::default();
    for (i, payload) in payloads.iter().enumerate() {
        let event = StoredEvent {
            sequence: first_sequence + i as u64,
            subject: "events.product.bench",
            headers: None,
            payload,
        };
        ProductProjection
            .apply(&event, &mut batch)
            .expect("projection accepts the event");
    }
    batch.insert(
        CHECKPOINT_KEY,
        &encode_u64(first_sequence + payloads.len() as u64 - 1)[..],
    );
    tree.apply_batch(batch).expect("apply batch");
}

fn state_apply(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), "product").expect("open store");
    let tree = store.tree().clone();
    apply(&tree, &events(1), 1);
    assert!(
        store::product(&tree, "bench-0000").expect("read").is_some(),
        "the projection wrote the product"
    );
    let mut group = c.benchmark_group("state apply");
    for size in [1usize, 64, 512] {
        let payloads = events(size);
        group.throughput(Throughput::Elements(size as u64));
        let mut sequence = 10u64;
        group.bench_function(format!("{size} event(s) per batch"), |b| {
            b.iter_batched(
                || {
                    sequence += size as u64;
                    sequence
                },
                |first| apply(black_box(&tree), black_box(&payloads), first),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, state_apply);
criterion_main!(benches);
