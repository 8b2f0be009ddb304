//! Codec: JSON vs bincode encode and decode of a product-size value and of a
//! `product.get` request, through `shop_nats::Encoding` (the one place every
//! payload in the system is encoded).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use product_service::domain::{GetProduct, Product};
use shop_nats::Encoding;

mod common;

fn codec(c: &mut Criterion) {
    let product = common::product(7);
    let get = GetProduct {
        id: product.id.clone(),
        min_revision: None,
    };
    for (name, encoding) in [("json", Encoding::Json), ("bincode", Encoding::Bincode)] {
        let bytes = encoding.encode(&product).expect("encode product");
        let mut group = c.benchmark_group(format!("codec/{name}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function("encode product", |b| {
            b.iter(|| encoding.encode(black_box(&product)))
        });
        group.bench_function("decode product", |b| {
            b.iter(|| encoding.decode::<Product>(black_box(&bytes)))
        });
        let request = encoding.encode(&get).expect("encode request");
        group.throughput(Throughput::Bytes(request.len() as u64));
        group.bench_function("decode product.get request", |b| {
            b.iter(|| encoding.decode::<GetProduct>(black_box(&request)))
        });
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
