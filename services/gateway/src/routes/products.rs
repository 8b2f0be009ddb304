//! `/api/products`: reads through the cache, writes for admins.

use std::sync::Arc;

use axum::{
    extract::{
        rejection::{PathRejection, QueryRejection},
        FromRequestParts, Path, Query, State,
    },
    http::{header, request::Parts, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Extension,
};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shop_nats::TraceContext;

use super::{encode, json_reply, path_id, query, relay, JsonBody};
use crate::{
    cache::{if_none_match, Cached},
    context::RequestContext,
    error::ApiError,
    Gateway,
};

/// The `If-None-Match` header, if any (one header, not the whole map).
pub struct IfNoneMatch(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(header::IF_NONE_MATCH).cloned()))
    }
}

/// `GET /api/products` query.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A cached or fresh product reply: 304 when the client has it, else 200 with its ETag.
fn conditional(reply: Cached, if_none: &IfNoneMatch) -> Response {
    let not_modified = if_none
        .0
        .as_ref()
        .is_some_and(|h| if_none_match(h, &reply.etag));
    let cache_control = HeaderValue::from_static("no-cache");
    if not_modified {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, reply.etag),
                (header::CACHE_CONTROL, cache_control),
            ],
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, reply.etag),
            (header::CACHE_CONTROL, cache_control),
        ],
        reply.body,
    )
        .into_response()
}

/// Product `id` from the cache, or from the product service (then cached).
pub async fn fetch(gw: &Gateway, id: &str, trace: &TraceContext) -> Result<Cached, ApiError> {
    if let Some(hit) = gw.cache.item(id) {
        return Ok(hit);
    }
    let ticket = gw.cache.item_ticket();
    // Ids are subject tokens (letters, digits, '-', '_'): safe inside a JSON string.
    let payload = Bytes::from(format!(r#"{{"id":"{id}"}}"#));
    let body = gw
        .downstream
        .call("product.get", payload, trace, None)
        .await?;
    Ok(gw.cache.put_item(id, ticket, body))
}

pub async fn get_one(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    path: Result<Path<String>, PathRejection>,
    if_none: IfNoneMatch,
) -> Result<Response, ApiError> {
    let id = path_id(path)?;
    let reply = fetch(&gw, &id, &ctx.trace).await?;
    Ok(conditional(reply, &if_none))
}

pub async fn list(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    params: Result<Query<ListQuery>, QueryRejection>,
    if_none: IfNoneMatch,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let key = format!("{:?}|{:?}", params.limit, params.cursor);
    if let Some(hit) = gw.cache.list(&key) {
        return Ok(conditional(hit, &if_none));
    }
    let ticket = gw.cache.list_ticket();
    let body = gw
        .downstream
        .call("product.list", encode(&params)?, &ctx.trace, None)
        .await?;
    Ok(conditional(gw.cache.put_list(&key, ticket, body), &if_none))
}

pub async fn create(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let admin = ctx.admin()?;
    relay(
        &gw,
        &ctx,
        "product.create",
        &body,
        Some(admin),
        StatusCode::CREATED,
    )
    .await
}

pub async fn update(
    State(gw): State<Arc<Gateway>>,
    Extension(ctx): Extension<Arc<RequestContext>>,
    path: Result<Path<String>, PathRejection>,
    JsonBody(mut body): JsonBody,
) -> Result<Response, ApiError> {
    let admin = ctx.admin()?;
    let id = path_id(path)?;
    match body.get("id") {
        Some(Value::String(given)) if *given == id => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "id in the body differs from the path; leave it out",
            ))
        }
        None => {
            body.insert("id".to_string(), Value::String(id.clone()));
        }
    }
    let reply = gw
        .downstream
        .call("product.update", encode(&body)?, &ctx.trace, Some(admin))
        .await?;
    // This gateway sees its own write at once; others learn from the event.
    if let Some(revision) = serde_json::from_slice::<Value>(&reply)
        .ok()
        .and_then(|v| v["revision"].as_u64())
    {
        gw.cache.invalidate_item(&id, revision.saturating_sub(1));
    }
    Ok(json_reply(StatusCode::OK, reply))
}
