//! `GET /api/orders/{id}/details`: the order, then in parallel each product's
//! current details (through the cache), the payment and the customer's
//! profile. A part whose service is down or slow is marked `unavailable` with
//! the reason; the response still comes (200), with `complete: false`.

use std::sync::Arc;

use axum::{
    extract::{rejection::PathRejection, Path, State},
    http::StatusCode,
    response::Response,
    Extension,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{encode, json_reply, path_id, products};
use crate::{context::RequestContext, error::ApiError, Gateway};

/// What the aggregation needs from an order.
#[derive(Deserialize)]
struct OrderRefs {
    id: String,
    user_id: String,
    #[serde(default)]
    payment_id: Option<String>,
    items: Vec<LineRef>,
}

#[derive(Deserialize)]
struct LineRef {
    product_id: String,
}

fn unavailable(error: &ApiError) -> Value {
    json!({"status": "unavailable", "error": {"code": error.status.as_u16(), "message": error.message}})
}

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

pub async fn details(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let user = ctx.user()?;
    let id = path_id(path)?;
    let order_bytes = gw
        .downstream
        .call(
            "order.get",
            encode(&json!({"id": id}))?,
            &ctx.trace,
            Some(user),
        )
        .await?;
    let refs: OrderRefs = serde_json::from_slice(&order_bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("order service answered an unreadable order: {e}"),
        )
    })?;

    let product_parts = futures::future::join_all(refs.items.iter().map(|line| {
        let (gw, trace) = (&gw, &ctx.trace);
        async move {
            match products::fetch(gw, &line.product_id, trace).await {
                Ok(reply) => json!({"product_id": line.product_id, "status": "ok", "product": parse(&reply.body)}),
                Err(e) if e.status == StatusCode::NOT_FOUND => {
                    json!({"product_id": line.product_id, "status": "not_found"})
                }
                Err(e) => {
                    let mut part = unavailable(&e);
                    part["product_id"] = json!(line.product_id);
                    part
                }
            }
        }
    }));
    let payment_query = match &refs.payment_id {
        Some(payment_id) => json!({"payment_id": payment_id}),
        None => json!({"idempotency_key": format!("order-{}:charge", refs.id)}),
    };
    let payment = async {
        let reply = gw
            .downstream
            .call(
                "payment.get",
                encode(&payment_query)?,
                &ctx.trace,
                Some(user),
            )
            .await;
        Ok::<Value, ApiError>(match reply {
            Ok(body) => json!({"status": "ok", "payment": parse(&body)}),
            Err(e) if e.status == StatusCode::NOT_FOUND => json!({"status": "none"}),
            Err(e) => unavailable(&e),
        })
    };
    let customer = async {
        let reply = gw
            .downstream
            .call(
                "user.get",
                encode(&json!({"id": refs.user_id}))?,
                &ctx.trace,
                Some(user),
            )
            .await;
        Ok::<Value, ApiError>(match reply {
            Ok(body) => json!({"status": "ok", "profile": parse(&body)}),
            Err(e) => unavailable(&e),
        })
    };
    let (products, payment, customer) = futures::join!(product_parts, payment, customer);
    let (payment, customer) = (payment?, customer?);
    let complete = products.iter().all(|p| p["status"] == "ok")
        && payment["status"] != "unavailable"
        && customer["status"] == "ok";
    let body = json!({
        "order": parse(&order_bytes),
        "products": products,
        "payment": payment,
        "customer": customer,
        "complete": complete,
    });
    Ok(json_reply(StatusCode::OK, encode(&body)?))
}
