//! Accounts, their requests and events, and every rule about them, as plain
//! functions: what is valid, and what a request turns into given current state.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shop_nats::ServiceError;

pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_EMAIL_LOCAL_LEN: usize = 64;
pub const MAX_NAME_LEN: usize = 100;
pub const MIN_PASSWORD_LEN: usize = 10;
pub const MAX_PASSWORD_LEN: usize = 1024;

/// The one answer to a failed login, whether the email is unknown or the
/// password wrong: callers must not learn which.
pub const INVALID_CREDENTIALS: &str = "invalid email or password";

/// What an account may do. Roles are set at registration only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }
}

/// An account as events carry it (no revision, never a credential).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    /// Normalized: trimmed and lower-cased.
    pub email: String,
    pub name: String,
    pub roles: Vec<Role>,
    /// RFC 3339, UTC.
    pub created_at: String,
}

/// A profile as every reply shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    pub id: String,
    pub email: String,
    pub name: String,
    pub roles: Vec<Role>,
    pub created_at: String,
    /// Stream sequence of the account's last change (registration or profile update).
    pub revision: u64,
}

impl UserProfile {
    pub fn new(account: Account, revision: u64) -> Self {
        let Account {
            id,
            email,
            name,
            roles,
            created_at,
        } = account;
        Self {
            id,
            email,
            name,
            roles,
            created_at,
            revision,
        }
    }

    pub fn account(&self) -> Account {
        Account {
            id: self.id.clone(),
            email: self.email.clone(),
            name: self.name.clone(),
            roles: self.roles.clone(),
            created_at: self.created_at.clone(),
        }
    }
}

/// A secret string (a password or a password hash): serialized as itself, but
/// never shown by `Debug`, so it cannot slip into a log line through `{:?}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

// ---- requests ---------------------------------------------------------------

/// `user.register`: a new customer account.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterUser {
    pub email: String,
    pub password: Secret,
    pub name: String,
}

/// `user.login`: an email and password, for a token.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub email: String,
    pub password: Secret,
}

/// `user.get`: one profile, by id.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetUser {
    pub id: String,
    /// Answer only from state that includes this revision (waits briefly for it).
    #[serde(default)]
    pub min_revision: Option<u64>,
}

/// `user.update`: profile fields only. Roles, email and password are not
/// fields of this request, so sending them is a 400 ("unknown field").
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Fail with 409 unless the account is still at this revision.
    #[serde(default)]
    pub expected_revision: Option<u64>,
}

// ---- replies ----------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginReply {
    /// A compact JWS (EdDSA); verify it with the keys from `user.keys`.
    pub token: String,
    pub token_type: String,
    /// Unix seconds after which the token is refused.
    pub expires_at: u64,
    pub user: UserProfile,
}

// ---- events -----------------------------------------------------------------

/// A change in the `USER` stream. Registration and profile events carry the
/// account as it is after the change and never a credential; the password
/// hash travels only in `CredentialSet`, on its own subject, sealed with the
/// user data key (`sealed_password_hash`; events of older versions carried
/// it in clear as `password_hash`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum UserEvent {
    #[serde(rename = "user.registered")]
    Registered { user: Account },
    #[serde(rename = "user.updated")]
    Updated { user: Account },
    #[serde(rename = "user.credential_set")]
    CredentialSet {
        user_id: String,
        #[serde(rename = "sealed_password_hash", alias = "password_hash")]
        password_hash: Secret,
    },
}

impl shop_actors::Event for UserEvent {
    fn type_name(&self) -> &'static str {
        match self {
            UserEvent::Registered { .. } => "user.registered",
            UserEvent::Updated { .. } => "user.updated",
            UserEvent::CredentialSet { .. } => "user.credential_set",
        }
    }
}

/// What a write request decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Append this event.
    Append(UserEvent),
    /// Nothing to write: the request changes nothing; answer from current state.
    AlreadyDone,
}

// ---- validation -------------------------------------------------------------

/// Trims and lower-cases an email and checks its shape: one `@`, a non-empty
/// local part of at most 64 characters, a domain with a dot and no empty
/// labels, no spaces or control characters, at most 254 characters in all.
pub fn normalize_email(email: &str) -> Result<String, ServiceError> {
    let email = email.trim().to_lowercase();
    let bad = |why: &str| ServiceError::bad_request(format!("email is not valid: {why}"));
    if email.is_empty() {
        return Err(bad("it is empty"));
    }
    if email.chars().count() > MAX_EMAIL_LEN {
        return Err(bad(&format!("longer than {MAX_EMAIL_LEN} characters")));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains spaces or control characters"));
    }
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("it must contain exactly one @"));
    };
    if local.is_empty() || local.chars().count() > MAX_EMAIL_LOCAL_LEN {
        return Err(bad(&format!(
            "the part before @ must be 1-{MAX_EMAIL_LOCAL_LEN} characters"
        )));
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return Err(bad("the domain must have a dot and no empty labels"));
    }
    Ok(email)
}

/// The key of a normalized email in subjects and store keys: hex SHA-256, so
/// the address itself never appears in a subject.
pub fn email_key(normalized_email: &str) -> String {
    let digest = Sha256::digest(normalized_email.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Trims a display name and checks it is 1-100 characters without control characters.
pub fn validate_name(name: &str) -> Result<String, ServiceError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ServiceError::bad_request("name must not be empty"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(ServiceError::bad_request(format!(
            "name must be at most {MAX_NAME_LEN} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ServiceError::bad_request(
            "name must not contain control characters",
        ));
    }
    Ok(name.to_string())
}

/// A new password: 10-1024 characters. The message never repeats it.
pub fn validate_new_password(password: &Secret) -> Result<(), ServiceError> {
    let len = password.expose().chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&len) {
        return Err(ServiceError::bad_request(format!(
            "password must be {MIN_PASSWORD_LEN}-{MAX_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

/// A password offered at login: not empty and not so long that hashing it is
/// a denial of service. Short ones are checked (and fail) like any other.
pub fn validate_login_password(password: &Secret) -> Result<(), ServiceError> {
    let len = password.expose().chars().count();
    if len == 0 || len > MAX_PASSWORD_LEN {
        return Err(ServiceError::bad_request(format!(
            "password must be 1-{MAX_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

/// Ids become subject tokens and store keys.
pub use shop_nats::subject::validate_token as validate_id;

/// Checks a login request; returns the normalized email.
pub fn validate_login(request: &Login) -> Result<String, ServiceError> {
    let email = normalize_email(&request.email)?;
    validate_login_password(&request.password)?;
    Ok(email)
}

/// A checked registration: normalized email and name, the password untouched.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub email: String,
    pub name: String,
    pub password: Secret,
    pub roles: Vec<Role>,
}

/// Checks a registration request; every account registered this way is a customer.
pub fn validate_register(request: &RegisterUser) -> Result<NewAccount, ServiceError> {
    validate_new_account(
        &request.email,
        &request.name,
        &request.password,
        vec![Role::Customer],
    )
}

/// Checks the fields of any new account, whatever its roles.
pub fn validate_new_account(
    email: &str,
    name: &str,
    password: &Secret,
    mut roles: Vec<Role>,
) -> Result<NewAccount, ServiceError> {
    let email = normalize_email(email)?;
    let name = validate_name(name)?;
    validate_new_password(password)?;
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err(ServiceError::bad_request("an account needs a role"));
    }
    Ok(NewAccount {
        email,
        name,
        password: password.clone(),
        roles,
    })
}

/// A registration against what is stored under the same email.
pub fn decide_register(
    existing_user_id: Option<&str>,
    account: Account,
) -> Result<Decision, ServiceError> {
    match existing_user_id {
        Some(_) => Err(email_taken()),
        None => Ok(Decision::Append(UserEvent::Registered { user: account })),
    }
}

pub fn email_taken() -> ServiceError {
    ServiceError::conflict("email is already registered")
}

/// Checks an update request on its own, before any state is read.
pub fn validate_update(request: &UpdateUser) -> Result<(), ServiceError> {
    validate_id("id", &request.id)?;
    if request.name.is_none() {
        return Err(ServiceError::bad_request(
            "nothing to update: give at least one of name",
        ));
    }
    Ok(())
}

/// A partial profile update of `current`.
pub fn decide_update(
    current: Option<&UserProfile>,
    request: &UpdateUser,
) -> Result<Decision, ServiceError> {
    let current = current.ok_or_else(|| not_found(&request.id))?;
    shop_actors::eventlog::check_expected_revision(
        "user",
        &current.id,
        current.revision,
        request.expected_revision,
    )?;
    let mut account = current.account();
    if let Some(name) = &request.name {
        account.name = validate_name(name)?;
    }
    if account == current.account() {
        return Ok(Decision::AlreadyDone);
    }
    Ok(Decision::Append(UserEvent::Updated { user: account }))
}

pub fn not_found(id: &str) -> ServiceError {
    ServiceError::not_found(format!("user {id} not found"))
}

pub fn invalid_credentials() -> ServiceError {
    ServiceError::unauthorized(INVALID_CREDENTIALS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> UserProfile {
        UserProfile {
            id: "u1".into(),
            email: "ann@example.com".into(),
            name: "Ann".into(),
            roles: vec![Role::Customer],
            created_at: "2025-01-01T00:00:00Z".into(),
            revision: 7,
        }
    }

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email("  Ann.Lee@Example.COM ").unwrap(),
            "ann.lee@example.com"
        );
        for bad in [
            "",
            "   ",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "ann@@example.com",
            "a@b@example.com",
            "ann@example..com",
            "ann@.example.com",
            "ann@example.com.",
            "an n@example.com",
            "ann@exa\u{7}mple.com",
        ] {
            let err = normalize_email(bad).unwrap_err();
            assert_eq!(err.code, 400, "{bad:?}");
            assert!(err.message.starts_with("email is not valid"), "{bad:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(normalize_email(&long_local).unwrap_err().code, 400);
        let long = format!("{}@{}.com", "a".repeat(60), "b".repeat(200));
        assert!(normalize_email(&long).unwrap_err().message.contains("254"));
    }

    #[test]
    fn email_key_is_stable_hex_sha256_of_the_normalized_form() {
        let key = email_key("ann@example.com");
        assert_eq!(key.len(), 64);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            key,
            email_key(&normalize_email(" ANN@example.com").unwrap())
        );
        assert_ne!(key, email_key("bob@example.com"));
        // Known vector: sha256("abc").
        assert_eq!(
            email_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_and_passwords_have_bounds() {
        assert_eq!(validate_name("  Ann  ").unwrap(), "Ann");
        assert_eq!(validate_name(" ").unwrap_err().code, 400);
        assert!(validate_name(&"x".repeat(100)).is_ok());
        assert_eq!(validate_name(&"x".repeat(101)).unwrap_err().code, 400);
        assert_eq!(validate_name("a\nb").unwrap_err().code, 400);

        assert!(validate_new_password(&Secret::new("0123456789")).is_ok());
        let short = validate_new_password(&Secret::new("012345678")).unwrap_err();
        assert_eq!(short.code, 400);
        assert!(
            !short.message.contains("012345678"),
            "never echo a password"
        );
        assert!(validate_new_password(&Secret::new("é".repeat(1024))).is_ok());
        assert_eq!(
            validate_new_password(&Secret::new("x".repeat(1025)))
                .unwrap_err()
                .code,
            400
        );
        assert!(validate_login_password(&Secret::new("short")).is_ok());
        assert_eq!(
            validate_login_password(&Secret::new("")).unwrap_err().code,
            400
        );
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let request = RegisterUser {
            email: "ann@example.com".into(),
            password: Secret::new("hunter2hunter2"),
            name: "Ann".into(),
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        let event = UserEvent::CredentialSet {
            user_id: "u1".into(),
            password_hash: Secret::new("$argon2id$v=19$..."),
        };
        assert!(!format!("{event:?}").contains("argon2"));
    }

    #[test]
    fn registration_makes_customers_and_claims_once() {
        let request = RegisterUser {
            email: " Ann@Example.com".into(),
            password: Secret::new("correct horse"),
            name: " Ann ".into(),
        };
        let account = validate_register(&request).unwrap();
        assert_eq!(
            (account.email.as_str(), account.name.as_str()),
            ("ann@example.com", "Ann")
        );
        assert_eq!(account.roles, vec![Role::Customer]);
        let admin = validate_new_account(
            "root@example.com",
            "Root",
            &Secret::new("0123456789"),
            vec![Role::Customer, Role::Admin, Role::Admin],
        )
        .unwrap();
        assert_eq!(admin.roles, vec![Role::Customer, Role::Admin]);

        let new = profile().account();
        assert!(matches!(
            decide_register(None, new.clone()).unwrap(),
            Decision::Append(UserEvent::Registered { .. })
        ));
        let taken = decide_register(Some("u0"), new).unwrap_err();
        assert_eq!(taken.code, 409);
    }

    #[test]
    fn update_changes_profile_fields_only() {
        let current = profile();
        let rename = UpdateUser {
            id: "u1".into(),
            name: Some(" Ann Lee ".into()),
            expected_revision: None,
        };
        let Decision::Append(UserEvent::Updated { user }) =
            decide_update(Some(&current), &rename).unwrap()
        else {
            panic!("expected an update")
        };
        assert_eq!(user.name, "Ann Lee");
        assert_eq!(
            (user.email.as_str(), user.roles.as_slice()),
            ("ann@example.com", &[Role::Customer][..])
        );
        let same = UpdateUser {
            name: Some("Ann".into()),
            ..rename.clone()
        };
        assert_eq!(
            decide_update(Some(&current), &same).unwrap(),
            Decision::AlreadyDone
        );
        let stale = UpdateUser {
            expected_revision: Some(6),
            ..rename.clone()
        };
        assert_eq!(decide_update(Some(&current), &stale).unwrap_err().code, 409);
        assert_eq!(decide_update(None, &rename).unwrap_err().code, 404);
        let empty = UpdateUser {
            id: "u1".into(),
            ..Default::default()
        };
        assert_eq!(validate_update(&empty).unwrap_err().code, 400);
        let blank = UpdateUser {
            name: Some("  ".into()),
            ..rename
        };
        assert_eq!(decide_update(Some(&current), &blank).unwrap_err().code, 400);
    }

    #[test]
    fn update_refuses_roles_email_and_password() {
        for field in ["roles", "email", "password"] {
            let json = format!(r#"{{"id":"u1","{field}":"x"}}"#);
            let err = shop_nats::Encoding::Json
                .decode::<UpdateUser>(json.as_bytes())
                .unwrap_err();
            assert_eq!(err.code, 400);
            assert!(
                err.message.contains(&format!("unknown field `{field}`")),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn events_are_tagged_json_without_credentials() {
        let registered = UserEvent::Registered {
            user: profile().account(),
        };
        let json = serde_json::to_value(&registered).unwrap();
        assert_eq!(json["type"], "user.registered");
        assert_eq!(json["user"]["email"], "ann@example.com");
        assert_eq!(json["user"]["roles"], serde_json::json!(["customer"]));
        assert!(json["user"].get("revision").is_none());
        assert!(!json.to_string().contains("password"));
        assert_eq!(
            serde_json::from_value::<UserEvent>(json).unwrap(),
            registered
        );
        let credential = UserEvent::CredentialSet {
            user_id: "u1".into(),
            password_hash: Secret::new("v1.kid.sealed"),
        };
        let json = serde_json::to_value(&credential).unwrap();
        assert_eq!(json["type"], "user.credential_set");
        assert_eq!(json["sealed_password_hash"], "v1.kid.sealed");
        assert!(json.get("password_hash").is_none());
        // Events of older versions name the field password_hash.
        let legacy: UserEvent = serde_json::from_value(serde_json::json!(
            {"type": "user.credential_set", "user_id": "u1", "password_hash": "$argon2id$x"}
        ))
        .unwrap();
        assert!(
            matches!(legacy, UserEvent::CredentialSet { password_hash, .. } if password_hash.expose() == "$argon2id$x")
        );
    }
}
