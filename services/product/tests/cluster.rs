//! Three instances on one queue group.

mod common;

use std::collections::HashSet;

use common::Cluster;
use serde_json::json;

#[tokio::test]
async fn three_instances_share_work_and_read_their_writes() {
    let c = Cluster::start(3).await.unwrap();
    c.create("shared", 100).await;

    // A write through whichever instance takes it, read at once through
    // whichever takes the read: with min_revision, never stale.
    for round in 0..30i64 {
        let price = 1000 + round;
        let updated = c
            .req(
                "product.update",
                json!({"id": "shared", "price_cents": price}),
            )
            .await;
        assert!(updated.is_ok(), "{:?}", updated.error);
        let revision = updated.body["revision"].as_u64().unwrap();
        let read = c
            .req(
                "product.get",
                json!({"id": "shared", "min_revision": revision}),
            )
            .await;
        assert!(read.is_ok(), "{:?}", read.error);
        assert_eq!(read.body["price_cents"], price, "round {round}: stale read");
        assert!(read.body["revision"].as_u64().unwrap() >= revision);
    }
    for _ in 0..60 {
        assert!(c.req("product.get", json!({"id": "shared"})).await.is_ok());
    }

    let gets = c.served_by_instance("product", "get").await.unwrap();
    assert!(
        gets.iter().all(|(_, n)| *n > 0),
        "every instance served reads: {gets:?}"
    );
    assert_eq!(gets.iter().map(|(_, n)| n).sum::<u64>(), 90);
    let updates = c.served_by_instance("product", "update").await.unwrap();
    assert_eq!(updates.iter().map(|(_, n)| n).sum::<u64>(), 30);
    assert!(
        updates.iter().filter(|(_, n)| *n > 0).count() >= 2,
        "writes spread too: {updates:?}"
    );

    // A revision the stream does not have is refused at once, clearly, instead
    // of waited for or answered stale.
    let future = c
        .req(
            "product.get",
            json!({"id": "shared", "min_revision": 1_000_000}),
        )
        .await;
    assert_eq!(future.error_code, Some(400));
    assert!(future
        .error
        .unwrap()
        .contains("min_revision 1000000 is beyond the stream's last revision"));
}

#[tokio::test]
async fn fifty_concurrent_reservers_never_oversell() {
    let c = Cluster::start(3).await.unwrap();
    const STOCK: i64 = 30;
    c.create("hot", STOCK).await;

    let mut tasks = Vec::new();
    for client_no in 0..50 {
        let client = c.client.clone();
        tasks.push(tokio::spawn(async move {
            let request = json!({"product_id": "hot", "quantity": 1, "reservation_id": format!("client-{client_no}")});
            let first = testkit::request_json(&client, "product.stock.reserve", request.to_string()).await.unwrap();
            // The same reservation again, as a retrying client would: no effect.
            let again = testkit::request_json(&client, "product.stock.reserve", request.to_string()).await.unwrap();
            (client_no, first, again)
        }));
    }
    let mut granted = HashSet::new();
    let mut max_revision = 0;
    for task in tasks {
        let (client_no, first, again) = task.await.unwrap();
        match first.error_code {
            None => {
                granted.insert(client_no);
                assert!(
                    again.is_ok(),
                    "repeat of a granted reservation: {:?}",
                    again.error
                );
                max_revision = max_revision.max(first.body["revision"].as_u64().unwrap());
            }
            Some(409) => {
                let message = first.error.unwrap_or_default();
                assert!(
                    message.contains("insufficient stock"),
                    "only running out may refuse: {message}"
                );
                assert_eq!(again.error_code, Some(409));
            }
            other => panic!("client {client_no}: unexpected {other:?} {:?}", first.error),
        }
    }
    assert_eq!(granted.len() as i64, STOCK, "exactly the stock was granted");
    let product = c
        .req(
            "product.get",
            json!({"id": "hot", "min_revision": max_revision}),
        )
        .await;
    assert_eq!(product.body["stock"], 0, "final stock is exact");

    let reserves = c
        .served_by_instance("product", "stock_reserve")
        .await
        .unwrap();
    assert!(
        reserves.iter().filter(|(_, n)| *n > 0).count() >= 2,
        "contention across instances: {reserves:?}"
    );

    // Releasing every reservation restores the stock exactly, wherever it lands.
    for client_no in &granted {
        let released = c
            .req("product.stock.release", json!({"product_id": "hot", "quantity": 1, "reservation_id": format!("client-{client_no}")}))
            .await;
        assert!(released.is_ok(), "{:?}", released.error);
        max_revision = max_revision.max(released.body["revision"].as_u64().unwrap());
    }
    let product = c
        .req(
            "product.get",
            json!({"id": "hot", "min_revision": max_revision}),
        )
        .await;
    assert_eq!(product.body["stock"], STOCK);
}
