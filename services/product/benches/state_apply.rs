//! State apply: what the state actor does per batch of stream events — the
//! product projection writes each event into a sled batch, the checkpoint
//! goes in the same batch, and the batch is applied to a temporary store.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use product_service::domain::ProductEvent;
use product_service::store;
use shop_actors::Store;

mod common;

/// `product.stock_reserved` events for `n` products, as the stream holds them.
fn events(n: usize) -> Vec<(String, Vec<u8>)> {
    common::encode((0..n).map(|i| ProductEvent::StockReserved {
        product: common::product(i % 1000),
        reservation_id: format!("bench-res-{i}"),
        quantity: 1,
    }))
}

fn state_apply(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), "product").expect("open store");
    let tree = store.tree().clone();
    common::apply(&tree, &events(1), 1);
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
                |first| common::apply(black_box(&tree), black_box(&payloads), first),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, state_apply);
criterion_main!(benches);
