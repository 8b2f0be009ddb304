//! Ownership: a request is made for the user its verified token proves;
//! orders are reachable by their owner or an admin only, and headers that
//! merely claim a user or a role count for nothing.

mod common;

use async_nats::HeaderMap;
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use common::Shop;
use serde_json::{json, Value};
use shop_nats::ServiceError;

/// A request with `headers`; the reply body, or the error.
async fn req_with(
    shop: &Shop,
    headers: HeaderMap,
    subject: &str,
    payload: Value,
) -> Result<Value, ServiceError> {
    let reply = shop.req_with(subject, headers, payload).await;
    match reply.error_code {
        Some(code) => Err(ServiceError::new(code, reply.error.unwrap_or_default())),
        None => Ok(reply.body),
    }
}

/// Headers that claim a user and the admin role, the way the gateway once
/// passed callers on, added to `base`.
fn claiming(mut base: HeaderMap, user_id: &str) -> HeaderMap {
    base.insert("Shop-User-Id", user_id);
    base.insert("Shop-User-Roles", "customer,admin");
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_reach_only_their_own_orders() {
    let shop = Shop::start(1, &[]).await.unwrap();
    shop.product("lamp", 10, 2_500).await;
    let ann = shop.user("ann@example.com").await;
    let bob = shop.user("bob@example.com").await;
    let (ann_h, bob_h) = (shop.auth_of(&ann), shop.auth_of(&bob));
    let admin = shop.admin_headers().await;
    let items = json!([{"product_id": "lamp", "quantity": 1}]);

    let refused = req_with(
        &shop,
        bob_h.clone(),
        "order.create",
        json!({"user_id": ann, "items": items, "payment_token": "tok_ok", "idempotency_key": "k1"}),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code, 403, "{refused:?}");
    let order = req_with(
        &shop,
        ann_h.clone(),
        "order.create",
        json!({"user_id": ann, "items": items, "payment_token": "tok_ok", "idempotency_key": "k1"}),
    )
    .await
    .unwrap();
    let id = order["id"].as_str().unwrap().to_string();

    let own = req_with(&shop, ann_h.clone(), "order.get", json!({"id": id}))
        .await
        .unwrap();
    assert_eq!(own["user_id"], ann.as_str());
    let hidden = req_with(&shop, bob_h.clone(), "order.get", json!({"id": id}))
        .await
        .unwrap_err();
    assert_eq!(hidden.code, 404);
    assert_eq!(hidden.message, format!("order {id} not found"));
    let unknown = req_with(
        &shop,
        bob_h.clone(),
        "order.get",
        json!({"id": "no-such-order"}),
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.code, 404, "the same answer as for an unknown id");
    assert!(
        req_with(&shop, admin.clone(), "order.get", json!({"id": id}))
            .await
            .is_ok()
    );

    let listed = req_with(&shop, bob_h.clone(), "order.list", json!({"user_id": ann}))
        .await
        .unwrap_err();
    assert_eq!(listed.code, 403);
    let bobs = req_with(&shop, bob_h.clone(), "order.list", json!({"user_id": bob}))
        .await
        .unwrap();
    assert_eq!(bobs["items"], json!([]));
    let anns = req_with(&shop, admin.clone(), "order.list", json!({"user_id": ann}))
        .await
        .unwrap();
    assert_eq!(anns["items"][0]["id"], id.as_str());

    let cancel = req_with(&shop, bob_h.clone(), "order.cancel", json!({"id": id}))
        .await
        .unwrap_err();
    assert_eq!(cancel.code, 404);
    let after = req_with(&shop, ann_h.clone(), "order.get", json!({"id": id}))
        .await
        .unwrap();
    assert_ne!(
        after["reason"], "cancelled_by_user",
        "bob's cancel changed nothing"
    );
    let cancelled = req_with(&shop, ann_h.clone(), "order.cancel", json!({"id": id}))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_users_and_roles_count_for_nothing() {
    let shop = Shop::start(1, &[]).await.unwrap();
    shop.product("lamp", 10, 2_500).await;
    let ann = shop.user("ann@example.com").await;
    let bob = shop.user("bob@example.com").await;
    let order = shop
        .place(
            &ann,
            json!([{"product_id": "lamp", "quantity": 1}]),
            "tok_ok",
            "k1",
        )
        .await;
    let id = order["id"].as_str().unwrap().to_string();

    // No token: the claimed user and admin role are not believed.
    for (subject, payload) in [
        ("order.get", json!({"id": id})),
        ("order.list", json!({"user_id": ann})),
        ("order.cancel", json!({"id": id})),
        (
            "order.create",
            json!({"user_id": ann, "items": [{"product_id": "lamp", "quantity": 1}], "payment_token": "tok_ok", "idempotency_key": "forged"}),
        ),
    ] {
        let err = req_with(&shop, claiming(HeaderMap::new(), &ann), subject, payload)
            .await
            .unwrap_err();
        assert_eq!(err.code, 401, "{subject}: {err:?}");
        assert!(err.message.contains("Authorization"), "{subject}: {err:?}");
    }
    let err = req_with(&shop, HeaderMap::new(), "order.get", json!({"id": id}))
        .await
        .unwrap_err();
    assert_eq!(err.code, 401, "no token, no caller: {err:?}");

    // Bob's real token with headers claiming ann and the admin role: still bob.
    let bob_claiming = claiming(shop.auth_of(&bob), &ann);
    let err = req_with(&shop, bob_claiming.clone(), "order.get", json!({"id": id}))
        .await
        .unwrap_err();
    assert_eq!(err.code, 404, "{err:?}");
    let err = req_with(
        &shop,
        bob_claiming.clone(),
        "order.list",
        json!({"user_id": ann}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, 403, "{err:?}");
    let err = req_with(
        &shop,
        bob_claiming,
        "product.create",
        json!({"id": "forged", "name": "Forged", "price_cents": 1, "currency": "USD", "stock": 1}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, 403, "no admin power: {err:?}");

    // Bob's token with its claims rewritten to ann's id and the admin role:
    // the signature no longer matches.
    let token = shop.token_of(&bob).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!(ann);
    claims["roles"] = json!(["customer", "admin"]);
    let altered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    let err = req_with(
        &shop,
        shop_nats::auth::bearer_headers(&altered),
        "order.get",
        json!({"id": id}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code, 401, "{err:?}");
    assert!(err.message.contains("signature"), "{err:?}");
    let anns = req_with(
        &shop,
        shop.admin_headers().await,
        "order.list",
        json!({"user_id": ann}),
    )
    .await
    .unwrap();
    assert_eq!(
        anns["items"].as_array().map(Vec::len),
        Some(1),
        "no forged order was placed: {anns}"
    );
}
