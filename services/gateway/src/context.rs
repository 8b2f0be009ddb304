//! What the front-door middleware learns about a request, for the handlers.

use std::sync::Arc;

use async_nats::HeaderMap;
use axum::http::HeaderValue;
use shop_nats::{auth::Caller, TraceContext};

use crate::{error::ApiError, rate_limit::ClientKey};

/// A verified bearer: who they are, and the NATS headers that carry their
/// token downstream (each service verifies it again).
#[derive(Debug)]
pub struct Identity {
    pub caller: Arc<Caller>,
    /// `Authorization: Bearer <the token as received>`.
    pub headers: HeaderMap,
    /// The rate-limit key of this user.
    pub client_key: ClientKey,
    /// Token expiry, Unix seconds.
    pub exp: u64,
}

impl Identity {
    pub fn new(caller: Arc<Caller>, token: &str, exp: u64) -> Self {
        Self {
            headers: shop_nats::auth::bearer_headers(token),
            client_key: ClientKey::User(Arc::from(caller.user_id.as_str())),
            caller,
            exp,
        }
    }

    pub fn user_id(&self) -> &str {
        &self.caller.user_id
    }
}

/// One HTTP request as the handlers see it.
#[derive(Debug)]
pub struct RequestContext {
    pub request_id: HeaderValue,
    /// The gateway's span: a child of the incoming `traceparent`, or a new trace.
    pub trace: TraceContext,
    /// The bearer, when the request carried a valid token.
    pub identity: Option<Arc<Identity>>,
}

impl RequestContext {
    /// The authenticated caller, or 401.
    pub fn user(&self) -> Result<&Arc<Identity>, ApiError> {
        self.identity
            .as_ref()
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))
    }

    /// The authenticated caller if an admin; 401 without a token, 403 for others.
    pub fn admin(&self) -> Result<&Arc<Identity>, ApiError> {
        let identity = self.user()?;
        if identity.caller.is_admin() {
            Ok(identity)
        } else {
            Err(ApiError::forbidden("this route is for admins only"))
        }
    }
}
