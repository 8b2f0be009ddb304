//! The access check every request passes before its handler runs, from the
//! endpoint's declared [`Access`]. Done here, once, for every service.
//!
//! A request made on behalf of a user carries the user's token in the
//! `Authorization: Bearer <token>` header; the caller is whom that token
//! proves once verified against the user service's keys
//! ([`shop_nats::verifier`]). No header that merely claims a user counts.
//!
//! | access | without a token | with a valid token | with a bad token |
//! | --- | --- | --- | --- |
//! | public | served, no caller | served, no caller (not even checked) | served, no caller |
//! | internal | served (the bus decides who may publish) | served as that user | 401 |
//! | user | 401, unless the endpoint lists services (their calls carry no token) | served as that user | 401 |
//! | admin | as user | 403 without the `admin` role | 401 |
//!
//! Ownership of a user's data is the handler's to check, against
//! `request.caller`, as only it knows whose data it is.

use std::sync::Arc;

use async_nats::HeaderMap;
use shop_nats::{
    auth::{bearer, Bearer, Caller, TokenError, AUTHORIZATION_HEADER},
    manifest::Access,
    verifier::{TokenVerifier, Verified, VerifyError},
    ServiceError,
};

/// Whom a request acts for: a verified user, or `None` (public data, or a
/// call from a service).
pub type Authorized = Result<Option<Arc<Caller>>, Refused>;

/// A request the access check refused: the error to answer, and a short
/// reason for the metrics (`no_token`, `bad_header`, `forbidden`,
/// `keys_unavailable`, or a [`TokenError::reason`]).
#[derive(Debug, Clone)]
pub struct Refused {
    pub reason: &'static str,
    pub error: ServiceError,
}

impl Refused {
    fn new(reason: &'static str, error: ServiceError) -> Self {
        Self { reason, error }
    }
}

/// The outcome of the access check without waiting.
pub enum Check {
    /// Decided.
    Done(Authorized),
    /// The token names a key this instance has not fetched yet:
    /// [`authorize_fetching`] decides, after fetching the keys.
    NeedsKeys,
}

/// The access check of a request with `headers` to an endpoint with
/// `access`, as far as it can go without a network call. `verifier` is
/// `None` for a service without user or admin endpoints: it has no use for
/// tokens and ignores them.
pub fn authorize(
    access: &Access,
    headers: Option<&HeaderMap>,
    verifier: Option<&TokenVerifier>,
) -> Check {
    if *access == Access::Public {
        return Check::Done(Ok(None));
    }
    let Some(verifier) = verifier else {
        return Check::Done(decide(access, None));
    };
    match bearer(authorization(headers)) {
        Bearer::None => Check::Done(decide(access, None)),
        Bearer::Invalid(why) => Check::Done(Err(bad_header(why))),
        Bearer::Token(token) => match verifier.check(token) {
            Err(TokenError::UnknownKey) => Check::NeedsKeys,
            checked => Check::Done(decide(access, Some(checked.map_err(VerifyError::from)))),
        },
    }
}

/// The access check of a request whose token names a key not known yet:
/// fetches the keys (single-flight, rate-limited) and decides.
pub async fn authorize_fetching(
    access: &Access,
    headers: Option<&HeaderMap>,
    verifier: &TokenVerifier,
) -> Authorized {
    match bearer(authorization(headers)) {
        Bearer::Token(token) => decide(access, Some(verifier.verify(token).await)),
        Bearer::None => decide(access, None),
        Bearer::Invalid(why) => Err(bad_header(why)),
    }
}

fn bad_header(why: &str) -> Refused {
    Refused::new("bad_header", ServiceError::unauthorized(why))
}

fn authorization(headers: Option<&HeaderMap>) -> Option<&str> {
    headers?.get(AUTHORIZATION_HEADER).map(|v| v.as_str())
}

/// The rule of the table above, given what became of the token (`None`: there was none).
pub fn decide(access: &Access, token: Option<Result<Verified, VerifyError>>) -> Authorized {
    match token {
        Some(Err(e)) => Err(Refused::new(
            match &e {
                VerifyError::Token(token) => token.reason(),
                VerifyError::Unavailable(_) => "keys_unavailable",
            },
            e.to_service_error(),
        )),
        Some(Ok(verified)) => {
            if matches!(access, Access::Admin(_)) && !verified.caller.is_admin() {
                return Err(Refused::new(
                    "forbidden",
                    ServiceError::forbidden("this request needs the admin role"),
                ));
            }
            Ok(Some(verified.caller))
        }
        None => match access {
            Access::Public | Access::Internal(_) => Ok(None),
            Access::User(services) | Access::Admin(services) if !services.is_empty() => Ok(None),
            Access::User(_) | Access::Admin(_) => Err(Refused::new(
                "no_token",
                ServiceError::unauthorized(
                    "this request needs a user's token: send the header \"Authorization: Bearer <token>\" (a token from user.login)",
                ),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(user: &str, roles: &[&str]) -> Option<Result<Verified, VerifyError>> {
        Some(Ok(Verified {
            caller: Arc::new(Caller {
                user_id: user.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            }),
            exp: u64::MAX,
        }))
    }

    #[test]
    fn admin_endpoints_refuse_a_customer() {
        let err = decide(&Access::admin(), verified("u1", &["customer"])).unwrap_err();
        assert_eq!((err.error.code, err.reason), (403, "forbidden"));
        let caller = decide(&Access::admin(), verified("u2", &["customer", "admin"])).unwrap();
        assert_eq!(caller.map(|c| c.user_id.clone()), Some("u2".to_string()));
    }

    #[test]
    fn user_endpoints_need_a_token_unless_they_list_services() {
        let caller = decide(&Access::user(), verified("u1", &["customer"])).unwrap();
        assert_eq!(caller.map(|c| c.user_id.clone()), Some("u1".to_string()));
        let missing = decide(&Access::user(), None).unwrap_err();
        assert_eq!((missing.error.code, missing.reason), (401, "no_token"));
        assert!(
            missing.error.message.contains("Authorization: Bearer"),
            "{missing:?}"
        );
        assert_eq!(decide(&Access::admin(), None).unwrap_err().error.code, 401);
        assert!(decide(&Access::user().or_services(&["order"]), None)
            .unwrap()
            .is_none());
        assert!(decide(&Access::internal(&["order"]), None)
            .unwrap()
            .is_none());
        assert!(decide(&Access::Public, None).unwrap().is_none());
    }

    #[test]
    fn a_bad_token_is_401_even_where_none_is_needed() {
        let bad = || Some(Err(VerifyError::Token(TokenError::BadSignature)));
        for access in [
            Access::user(),
            Access::user().or_services(&["order"]),
            Access::admin(),
            Access::internal(&["order"]),
        ] {
            let refused = decide(&access, bad()).unwrap_err();
            assert_eq!(
                (refused.error.code, refused.reason),
                (401, "bad_signature"),
                "{access:?}"
            );
        }
        let unreachable = Some(Err(VerifyError::Unavailable("down".into())));
        let refused = decide(&Access::user(), unreachable).unwrap_err();
        assert_eq!(
            (refused.error.code, refused.reason),
            (503, "keys_unavailable")
        );
    }

    #[test]
    fn claimed_user_headers_count_for_nothing() {
        let verifier = TokenVerifier::new(Arc::new(|| {
            Box::pin(async { Err(ServiceError::unavailable("unused")) })
        }));
        let mut headers = HeaderMap::new();
        headers.insert("Shop-User-Id", "u1");
        headers.insert("Shop-User-Roles", "customer,admin");
        for access in [Access::user(), Access::admin()] {
            let Check::Done(result) = authorize(&access, Some(&headers), Some(&verifier)) else {
                panic!("no token: decided at once");
            };
            assert_eq!(result.unwrap_err().error.code, 401);
        }
        headers.insert(AUTHORIZATION_HEADER, "Basic dTpw");
        let Check::Done(result) = authorize(&Access::user(), Some(&headers), Some(&verifier))
        else {
            panic!("not a bearer: decided at once");
        };
        assert_eq!(result.unwrap_err().reason, "bad_header");
        headers.insert(AUTHORIZATION_HEADER, "Bearer not-a-token");
        let Check::Done(result) = authorize(&Access::admin(), Some(&headers), Some(&verifier))
        else {
            panic!("malformed: decided at once");
        };
        assert_eq!(result.unwrap_err().error.code, 401);
        assert!(matches!(
            authorize(&Access::Public, Some(&headers), Some(&verifier)),
            Check::Done(Ok(None))
        ));
    }
}
