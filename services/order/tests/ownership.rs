//! Ownership: with a caller in the headers (as the gateway sends), orders are
//! only reachable by their owner or an admin; without one, calls are trusted.

mod common;

use common::Shop;
use serde_json::{json, Value};
use shop_nats::{auth::Caller, ServiceError};

/// A request as `caller`; the reply body, or the error.
async fn req_as(
    shop: &Shop,
    caller: &Caller,
    subject: &str,
    payload: Value,
) -> Result<Value, ServiceError> {
    let reply = shop
        .client
        .request_with_headers(
            subject.to_string(),
            caller.headers(),
            payload.to_string().into(),
        )
        .await
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
    match ServiceError::from_reply(reply.headers.as_ref(), &reply.payload) {
        Some(err) => Err(err),
        None => Ok(serde_json::from_slice(&reply.payload).unwrap()),
    }
}

fn customer(user_id: &str) -> Caller {
    Caller {
        user_id: user_id.to_string(),
        roles: vec!["customer".into()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_reach_only_their_own_orders() {
    let shop = Shop::start(1, &[]).await.unwrap();
    shop.product("lamp", 10, 2_500).await;
    let ann = shop.user("ann@example.com").await;
    let bob = shop.user("bob@example.com").await;
    let (ann_c, bob_c) = (customer(&ann), customer(&bob));
    let admin = Caller {
        user_id: "the-admin".into(),
        roles: vec!["customer".into(), "admin".into()],
    };
    let items = json!([{"product_id": "lamp", "quantity": 1}]);

    let refused = req_as(
        &shop,
        &bob_c,
        "order.create",
        json!({"user_id": ann, "items": items, "payment_token": "tok_ok", "idempotency_key": "k1"}),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code, 403, "{refused:?}");
    let order = req_as(
        &shop,
        &ann_c,
        "order.create",
        json!({"user_id": ann, "items": items, "payment_token": "tok_ok", "idempotency_key": "k1"}),
    )
    .await
    .unwrap();
    let id = order["id"].as_str().unwrap().to_string();

    let own = req_as(&shop, &ann_c, "order.get", json!({"id": id}))
        .await
        .unwrap();
    assert_eq!(own["user_id"], ann.as_str());
    let hidden = req_as(&shop, &bob_c, "order.get", json!({"id": id}))
        .await
        .unwrap_err();
    assert_eq!(hidden.code, 404);
    assert_eq!(hidden.message, format!("order {id} not found"));
    let unknown = req_as(&shop, &bob_c, "order.get", json!({"id": "no-such-order"}))
        .await
        .unwrap_err();
    assert_eq!(unknown.code, 404, "the same answer as for an unknown id");
    assert!(req_as(&shop, &admin, "order.get", json!({"id": id}))
        .await
        .is_ok());

    let listed = req_as(&shop, &bob_c, "order.list", json!({"user_id": ann}))
        .await
        .unwrap_err();
    assert_eq!(listed.code, 403);
    let bobs = req_as(&shop, &bob_c, "order.list", json!({"user_id": bob}))
        .await
        .unwrap();
    assert_eq!(bobs["items"], json!([]));
    let anns = req_as(&shop, &admin, "order.list", json!({"user_id": ann}))
        .await
        .unwrap();
    assert_eq!(anns["items"][0]["id"], id.as_str());

    let cancel = req_as(&shop, &bob_c, "order.cancel", json!({"id": id}))
        .await
        .unwrap_err();
    assert_eq!(cancel.code, 404);
    let after = shop.req("order.get", json!({"id": id})).await;
    assert!(after.is_ok(), "an internal call needs no caller");
    assert_ne!(
        after.body["reason"], "cancelled_by_user",
        "bob's cancel changed nothing"
    );
    let cancelled = req_as(&shop, &ann_c, "order.cancel", json!({"id": id}))
        .await
        .unwrap();
    assert!(
        matches!(
            cancelled["status"].as_str(),
            Some("cancelling" | "cancelled")
        ),
        "{cancelled}"
    );
}
