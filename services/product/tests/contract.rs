//! The request contract through raw JSON, exactly what `nats req` sends.

mod common;

use async_nats::HeaderMap;
use common::Cluster;
use serde_json::{json, Value};
use testkit::http;

#[tokio::test]
async fn create_get_update_list_reserve_release() {
    let c = Cluster::start(1).await.unwrap();

    let created = c
        .req(
            "product.create",
            json!({"name": "Mechanical keyboard", "description": "Tactile", "price_cents": 8999, "currency": "eur", "stock": 5}),
        )
        .await;
    assert!(created.is_ok(), "{:?}", created.error);
    let id = created.body["id"]
        .as_str()
        .expect("generated id")
        .to_string();
    assert_eq!(created.body["currency"], "EUR");
    assert_eq!(created.body["stock"], 5);
    let rev1 = created.body["revision"].as_u64().unwrap();
    assert!(rev1 > 0);

    let got = c.req("product.get", json!({"id": id})).await;
    assert_eq!(
        got.body, created.body,
        "a read after a write on the same instance sees it"
    );

    let updated = c
        .req(
            "product.update",
            json!({"id": id, "price_cents": 7999, "expected_revision": rev1}),
        )
        .await;
    assert!(updated.is_ok(), "{:?}", updated.error);
    assert_eq!(updated.body["price_cents"], 7999);
    assert_eq!(updated.body["name"], "Mechanical keyboard");
    let rev2 = updated.body["revision"].as_u64().unwrap();
    assert!(rev2 > rev1);

    let stale = c
        .req(
            "product.update",
            json!({"id": id, "price_cents": 1, "expected_revision": rev1}),
        )
        .await;
    assert_eq!(stale.error_code, Some(409));
    assert!(stale
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("revision"));
    assert_eq!(stale.body["error"]["code"], 409);

    let reserved = c
        .req(
            "product.stock.reserve",
            json!({"product_id": id, "quantity": 2, "reservation_id": "order-1:line-0"}),
        )
        .await;
    assert!(reserved.is_ok(), "{:?}", reserved.error);
    assert_eq!(reserved.body["stock"], 3);
    assert_eq!(reserved.body["status"], "reserved");
    let again = c
        .req(
            "product.stock.reserve",
            json!({"product_id": id, "quantity": 2, "reservation_id": "order-1:line-0"}),
        )
        .await;
    assert!(again.is_ok());
    assert_eq!(
        again.body["stock"], 3,
        "repeating a reservation takes nothing more"
    );

    let short = c
        .req(
            "product.stock.reserve",
            json!({"product_id": id, "quantity": 4, "reservation_id": "order-2:line-0"}),
        )
        .await;
    assert_eq!(short.error_code, Some(409));
    assert!(short
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("insufficient stock"));

    for _ in 0..2 {
        let released = c
            .req(
                "product.stock.release",
                json!({"product_id": id, "quantity": 2, "reservation_id": "order-1:line-0"}),
            )
            .await;
        assert!(released.is_ok(), "{:?}", released.error);
        assert_eq!(
            released.body["stock"], 5,
            "release returns the units exactly once"
        );
        assert_eq!(released.body["status"], "released");
    }

    for i in 0..3 {
        c.create(&format!("sku-{i}"), 1).await;
    }
    let page1 = c.req("product.list", json!({"limit": 2})).await;
    assert_eq!(page1.body["items"].as_array().unwrap().len(), 2);
    let cursor = page1.body["next_cursor"].as_str().unwrap().to_string();
    let page2 = c
        .req("product.list", json!({"limit": 2, "cursor": cursor}))
        .await;
    assert_eq!(page2.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(page2.body["next_cursor"], Value::Null);
    let mut ids: Vec<String> = page1.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(page2.body["items"].as_array().unwrap())
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "every product listed exactly once");

    let missing = c.req("product.get", json!({"id": "nope"})).await;
    assert_eq!(missing.error_code, Some(404));
    assert_eq!(missing.body["error"]["message"], "product nope not found");
}

#[tokio::test]
async fn idempotent_create_and_duplicate_ids() {
    let c = Cluster::start(1).await.unwrap();
    let request = json!({"name": "Mug", "price_cents": 1200, "currency": "USD", "stock": 3, "idempotency_key": "k-1"});
    let first = c.req("product.create", request.clone()).await;
    let second = c.req("product.create", request).await;
    assert!(first.is_ok() && second.is_ok());
    assert_eq!(
        first.body["id"], second.body["id"],
        "a retried create names the same product"
    );
    assert_eq!(
        first.body["revision"], second.body["revision"],
        "and creates it once"
    );

    c.create("fixed", 1).await;
    let dup = c
        .req("product.create", json!({"id": "fixed", "name": "Other", "price_cents": 1, "currency": "USD", "stock": 0}))
        .await;
    assert_eq!(dup.error_code, Some(409));
    assert_eq!(
        c.req("product.get", json!({"id": "fixed"})).await.body["name"],
        "Product fixed"
    );
}

#[tokio::test]
async fn bincode_is_mirrored() {
    let c = Cluster::start(1).await.unwrap();
    c.create("bin-1", 4).await;
    #[derive(serde::Serialize)]
    struct Get<'a> {
        id: &'a str,
        min_revision: Option<u64>,
    }
    #[derive(serde::Deserialize, Debug)]
    struct Product {
        id: String,
        #[allow(dead_code)]
        name: String,
        #[allow(dead_code)]
        description: String,
        price_cents: i64,
        currency: String,
        stock: i64,
        #[allow(dead_code)]
        revision: u64,
    }
    let payload = bincode::serde::encode_to_vec(
        Get {
            id: "bin-1",
            min_revision: None,
        },
        bincode::config::standard(),
    )
    .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("Content-Type", "application/bincode");
    let reply = c
        .client
        .request_with_headers("product.get", headers, payload.into())
        .await
        .unwrap();
    assert_eq!(
        reply
            .headers
            .as_ref()
            .and_then(|h| h.get("Content-Type"))
            .map(|v| v.as_str()),
        Some("application/bincode")
    );
    let (product, _): (Product, usize) =
        bincode::serde::decode_from_slice(&reply.payload, bincode::config::standard()).unwrap();
    assert_eq!(
        (
            product.id.as_str(),
            product.price_cents,
            product.currency.as_str(),
            product.stock
        ),
        ("bin-1", 1999, "USD", 4)
    );
}

#[tokio::test]
async fn services_protocol_and_admin_http() {
    let c = Cluster::start(1).await.unwrap();
    c.create("srv-1", 1).await;
    for _ in 0..3 {
        c.req("product.get", json!({"id": "srv-1"})).await;
    }
    let missing = c.req("product.get", json!({"id": "missing"})).await;
    assert_eq!(missing.error_code, Some(404));

    let ping = c
        .client
        .request("$SRV.PING.product", "".into())
        .await
        .unwrap();
    let ping: Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");
    assert_eq!(ping["id"], "product-1");

    let info = c
        .client
        .request("$SRV.INFO.product", "".into())
        .await
        .unwrap();
    let info: Value = serde_json::from_slice(&info.payload).unwrap();
    let subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    for s in [
        "product.create",
        "product.get",
        "product.update",
        "product.list",
        "product.stock.reserve",
        "product.stock.release",
    ] {
        assert!(subjects.contains(&s), "{s} in $SRV.INFO");
    }

    let stats = c
        .client
        .request("$SRV.STATS.product.product-1", "".into())
        .await
        .unwrap();
    let stats: Value = serde_json::from_slice(&stats.payload).unwrap();
    let get = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "get")
        .unwrap()
        .clone();
    assert_eq!(get["num_requests"], 4);
    assert_eq!(get["num_errors"], 1);
    assert!(get["last_error"].as_str().unwrap().contains("404"));
    assert!(get["processing_time"].as_u64().unwrap() > 0);
    let create = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "create")
        .unwrap()
        .clone();
    assert_eq!(create["num_requests"], 1);

    let admin = &c.instances[0].admin_addr;
    let (status, body) = http::get(admin, "/health").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["checks"]["nats"]["status"], "ok");
    assert_eq!(health["checks"]["jetstream"]["status"], "ok");
    assert_eq!(health["checks"]["store"]["status"], "ok");
    assert_eq!(health["checks"]["state"]["lag"], 0);
    assert_eq!(http::get(admin, "/ready").await.unwrap().0, 200);
    let (status, metrics) = http::get(admin, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let value =
        |name: &str, labels: &[(&str, &str)]| testkit::metrics::value(&metrics, name, labels);
    assert_eq!(
        value(
            "shop_requests_total",
            &[
                ("endpoint", "get"),
                ("instance", "product-1"),
                ("service", "product")
            ]
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            "shop_request_errors_total",
            &[("endpoint", "get"), ("code", "404")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "shop_request_duration_seconds_count",
            &[("endpoint", "get")]
        ),
        Some(4.0)
    );
    assert_eq!(
        value("shop_requests_in_flight", &[("endpoint", "get")]),
        Some(0.0)
    );
    assert_eq!(value("shop_pool_capacity", &[]), Some((32 + 256) as f64));
    assert_eq!(value("shop_pool_busy", &[]), Some(0.0));
    assert_eq!(value("shop_state_lag_messages", &[]), Some(0.0));
    assert!(value("shop_state_applied_revision", &[]).unwrap_or_default() >= 1.0);

    let js = async_nats::jetstream::new(c.client.clone());
    let registry = js.get_key_value("registry").await.unwrap();
    let entry = registry
        .get("product.product-1")
        .await
        .unwrap()
        .expect("registry entry");
    let entry: Value = serde_json::from_slice(&entry).unwrap();
    assert_eq!(entry["admin_addr"], admin.as_str());
    assert_eq!(entry["endpoints"].as_array().unwrap().len(), 6);
}
