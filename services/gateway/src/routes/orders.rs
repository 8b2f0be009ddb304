//! `/api/orders`: the caller's orders. The user id comes from the token; the
//! order service checks ownership itself from the caller headers (someone
//! else's order is a 404, as if it did not exist).

use std::sync::Arc;

use axum::{
    extract::{
        rejection::{PathRejection, QueryRejection},
        Path, Query, State,
    },
    http::{HeaderMap, HeaderName, StatusCode},
    response::Response,
    Extension,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{path_id, query, refuse_field, relay, JsonBody};
use crate::{context::RequestContext, error::ApiError, Gateway};

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// `GET /api/orders` query.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Whose orders (admins only; default: the caller's).
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

pub async fn create(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    headers: HeaderMap,
    JsonBody(mut body): JsonBody,
) -> Result<Response, ApiError> {
    let user = ctx.user()?;
    refuse_field(&body, "user_id", "orders are placed for the token's user")?;
    body.insert(
        "user_id".to_string(),
        Value::String(user.user_id().to_string()),
    );
    if !body.contains_key("idempotency_key") {
        if let Some(key) = headers.get(IDEMPOTENCY_KEY) {
            let key = key
                .to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key header is not text"))?;
            body.insert(
                "idempotency_key".to_string(),
                Value::String(key.to_string()),
            );
        }
    }
    relay(
        &gw,
        &ctx,
        "order.create",
        &body,
        Some(user),
        StatusCode::CREATED,
    )
    .await
}

pub async fn list(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    params: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let user = ctx.user()?;
    let mut params = query(params)?;
    params
        .user_id
        .get_or_insert_with(|| user.user_id().to_string());
    relay(&gw, &ctx, "order.list", &params, Some(user), StatusCode::OK).await
}

pub async fn get_one(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    by_id(&gw, &ctx, path, "order.get").await
}

pub async fn cancel(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    by_id(&gw, &ctx, path, "order.cancel").await
}

/// `subject` with `{"id": <the path's order id>}`, as the signed-in caller.
async fn by_id(
    gw: &Gateway,
    ctx: &RequestContext,
    path: Result<Path<String>, PathRejection>,
    subject: &str,
) -> Result<Response, ApiError> {
    let user = ctx.user()?;
    let id = path_id(path)?;
    relay(
        gw,
        ctx,
        subject,
        &json!({"id": id}),
        Some(user),
        StatusCode::OK,
    )
    .await
}
