//! Shared by the micro-benchmarks: a product the size of a seeded one.

use product_service::domain::Product;

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
