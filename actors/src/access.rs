//! The access check every request passes before its handler runs, from the
//! endpoint's declared [`Access`].
//!
//! The caller is whom the request claims to act for (the gateway sets
//! `Shop-User-Id` / `Shop-User-Roles` from a verified token). Admin endpoints
//! refuse a caller without the `admin` role; ownership of a user's data is
//! checked by the handler, which knows whose data it is.

use async_nats::HeaderMap;
use shop_nats::{auth::Caller, manifest::Access, ServiceError};

/// Whom a request to an endpoint with `access` acts for, or why it is refused.
pub fn authorize(
    access: &Access,
    headers: Option<&HeaderMap>,
) -> Result<Option<Caller>, ServiceError> {
    let caller = Caller::from_headers(headers);
    if let (Access::Admin(_), Some(caller)) = (access, &caller) {
        if !caller.is_admin() {
            return Err(ServiceError::forbidden("this request needs the admin role"));
        }
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(user: &str, roles: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(shop_nats::auth::USER_ID_HEADER, user);
        h.insert(shop_nats::auth::USER_ROLES_HEADER, roles);
        h
    }

    #[test]
    fn admin_endpoints_refuse_a_customer() {
        let customer = headers("u1", "customer");
        let err = authorize(&Access::admin(), Some(&customer)).unwrap_err();
        assert_eq!(err.code, 403);
        let admin = headers("u2", "customer,admin");
        let caller = authorize(&Access::admin(), Some(&admin)).unwrap();
        assert_eq!(caller.map(|c| c.user_id), Some("u2".to_string()));
    }

    #[test]
    fn user_endpoints_pass_the_caller_on() {
        let customer = headers("u1", "customer");
        let caller = authorize(&Access::user(), Some(&customer)).unwrap();
        assert_eq!(caller.map(|c| c.user_id), Some("u1".to_string()));
        assert!(authorize(&Access::Public, None).unwrap().is_none());
    }
}
