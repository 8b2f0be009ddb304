//! The router: every HTTP route's handler (the table of routes is in
//! [`crate::route_table`]), and the helpers they share: reading JSON bodies within
//! the size limit, checking path ids, and answering with a service's bytes.

pub mod details;
pub mod health;
pub mod orders;
pub mod products;
pub mod users;

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{rejection::PathRejection, rejection::QueryRejection, Path, Query},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::{
    context::{Identity, RequestContext},
    error::ApiError,
    middleware::front_door,
    Gateway,
};

/// The gateway's router, with the front door on every route.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/api/products", get(products::list).post(products::create))
        .route(
            "/api/products/{id}",
            get(products::get_one).patch(products::update),
        )
        .route("/api/users", post(users::register))
        .route("/api/auth/login", post(users::login))
        .route("/api/users/me", get(users::me).patch(users::update_me))
        .route("/api/orders", get(orders::list).post(orders::create))
        .route("/api/orders/{id}", get(orders::get_one))
        .route("/api/orders/{id}/cancel", post(orders::cancel))
        .route("/api/orders/{id}/details", get(details::details))
        .route("/api/openapi.json", get(health::openapi))
        .route("/health", get(health::liveness))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(gw.clone(), front_door))
        .with_state(gw)
}

/// The admin listener's router (`ADMIN_ADDR`): the detailed health, readiness
/// and metrics, for operators and Prometheus, not for the public.
pub fn admin_router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(gw)
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such route; see /api/openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route; see /api/openapi.json",
    )
}

/// The `{id}` of a path, checked to be a valid id (a subject token).
pub fn path_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    shop_nats::subject::validate_token("id", &id).map_err(|e| ApiError::bad_request(e.message))?;
    Ok(id)
}

/// Query parameters, or 400 naming what is wrong.
pub fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// The request body as a JSON object: 400 when it is larger than the limit,
/// empty, not JSON, or not an object.
pub async fn json_object(
    gw: &Gateway,
    headers: &HeaderMap,
    body: Body,
) -> Result<Map<String, Value>, ApiError> {
    let limit = gw.config.max_body_bytes;
    let too_large = || ApiError::bad_request(format!("request body is larger than {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "request body is empty: expected a JSON object",
        ));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("request body must be a JSON object")),
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON: {e}"))),
    }
}

/// The request body as a JSON object, within the size limit ([`json_object`]);
/// as an extractor it must come last.
pub struct JsonBody(pub Map<String, Value>);

impl axum::extract::FromRequest<Arc<Gateway>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        gw: &Arc<Gateway>,
    ) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        json_object(gw, &parts.headers, body).await.map(JsonBody)
    }
}

/// Calls `subject` with `payload` as `identity` (`None`: public data) and
/// answers `status` with the service's JSON reply as it is.
pub async fn relay(
    gw: &Gateway,
    ctx: &RequestContext,
    subject: &str,
    payload: &impl serde::Serialize,
    identity: Option<&Identity>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let reply = gw
        .downstream
        .call(subject, encode(payload)?, &ctx.trace, identity)
        .await?;
    Ok(json_reply(status, reply))
}

/// Refuses a body field the gateway sets itself.
pub fn refuse_field(body: &Map<String, Value>, field: &str, why: &str) -> Result<(), ApiError> {
    if body.contains_key(field) {
        return Err(ApiError::bad_request(format!(
            "{field} is not accepted: {why}"
        )));
    }
    Ok(())
}

/// Encodes a JSON value for a service.
pub fn encode(value: &impl serde::Serialize) -> Result<Bytes, ApiError> {
    serde_json::to_vec(value).map(Bytes::from).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding request: {e}"),
        )
    })
}

/// A service's JSON reply, passed through as is.
pub fn json_reply(status: StatusCode, body: Bytes) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}
