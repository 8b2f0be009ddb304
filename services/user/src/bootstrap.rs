//! The admin account from `ADMIN_EMAIL` / `ADMIN_PASSWORD`, for the demo seed:
//! created at start-up when absent. Idempotent across instances: it is
//! registered like any other account, so the stream refuses a second claim of
//! its email, and an instance that finds it present writes nothing.

use std::{sync::Arc, time::Duration};

use shop_nats::{ServiceError, TraceContext};

use crate::{
    domain::{NewAccount, Role},
    endpoints::Users,
};

/// Attempts at each step before giving up (transient failures only).
const ATTEMPTS: u32 = 30;

/// Creates the admin account unless it exists; spawned once the service's state exists.
pub async fn bootstrap_admin(users: Arc<Users>, admin: NewAccount) {
    let email = admin.email.clone();
    let trace = TraceContext::new_root();
    let created = retry("creating the admin account", || {
        users.create_account(admin.clone(), &trace)
    })
    .await;
    match created {
        Ok(profile) => tracing::info!(user_id = %profile.id, "admin account created"),
        Err(e) if e.code == 409 => match users.profile_by_email(&email) {
            Ok(Some(profile)) if profile.roles.contains(&Role::Admin) => {
                tracing::info!(user_id = %profile.id, "admin account already present")
            }
            Ok(Some(profile)) => tracing::warn!(
                user_id = %profile.id,
                "ADMIN_EMAIL is registered without the admin role; not changed"
            ),
            Ok(None) => tracing::warn!("admin account claimed but not yet visible locally"),
            Err(e) => tracing::error!(error = %e, "reading the admin account"),
        },
        Err(e) => tracing::error!(error = %e, "admin account not created"),
    }
}

async fn retry<T, F, Fut>(what: &str, mut step: F) -> Result<T, ServiceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ServiceError>>,
{
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        match step().await {
            Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                tracing::warn!(attempt, error = %e, "{what} failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            outcome => return outcome,
        }
    }
    Err(ServiceError::unavailable(format!("{what}: gave up")))
}
