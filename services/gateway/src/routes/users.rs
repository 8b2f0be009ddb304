//! `/api/users` and `/api/auth/login`: accounts and tokens.

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, response::Response, Extension};
use serde_json::{json, Value};

use super::{refuse_field, relay, JsonBody};
use crate::{context::RequestContext, error::ApiError, Gateway};

pub async fn register(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    relay(&gw, &ctx, "user.register", &body, None, StatusCode::CREATED).await
}

pub async fn login(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    relay(&gw, &ctx, "user.login", &body, None, StatusCode::OK).await
}

pub async fn me(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
) -> Result<Response, ApiError> {
    let user = ctx.user()?;
    let payload = json!({"id": user.user_id()});
    relay(&gw, &ctx, "user.get", &payload, Some(user), StatusCode::OK).await
}

pub async fn update_me(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    JsonBody(mut body): JsonBody,
) -> Result<Response, ApiError> {
    let user = ctx.user()?;
    refuse_field(&body, "id", "the account is the token's")?;
    body.insert("id".to_string(), Value::String(user.user_id().to_string()));
    relay(&gw, &ctx, "user.update", &body, Some(user), StatusCode::OK).await
}
