//! `/api/users` and `/api/auth/login`: accounts and tokens.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::Response,
    Extension,
};
use serde_json::Value;

use super::{encode, json_object, json_reply, refuse_field};
use crate::{context::RequestContext, error::ApiError, Gateway};

pub async fn register(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_object(&gw, &headers, body).await?;
    let reply = gw
        .downstream
        .call("user.register", encode(&body)?, &ctx.trace, None)
        .await?;
    Ok(json_reply(StatusCode::CREATED, reply))
}

pub async fn login(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = json_object(&gw, &headers, body).await?;
    let reply = gw
        .downstream
        .call("user.login", encode(&body)?, &ctx.trace, None)
        .await?;
    Ok(json_reply(StatusCode::OK, reply))
}

pub async fn me(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
) -> Result<Response, ApiError> {
    let user = ctx.user()?;
    let payload = encode(&serde_json::json!({"id": user.user_id()}))?;
    let reply = gw
        .downstream
        .call("user.get", payload, &ctx.trace, Some(user))
        .await?;
    Ok(json_reply(StatusCode::OK, reply))
}

pub async fn update_me(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let user = ctx.user()?;
    let mut body = json_object(&gw, &headers, body).await?;
    refuse_field(&body, "id", "the account is the token's")?;
    body.insert("id".to_string(), Value::String(user.user_id().to_string()));
    let reply = gw
        .downstream
        .call("user.update", encode(&body)?, &ctx.trace, Some(user))
        .await?;
    Ok(json_reply(StatusCode::OK, reply))
}
