//! Where user requests are answered: profile reads inline from the local
//! store; registration, login, updates and keys in the worker pool.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::{future::BoxFuture, FutureExt};
use shop_actors::{
    eventlog::{AppendError, Written},
    Append, EndpointSpec, EventLog, Handler, HandlerResult, Request, ServiceContext, StateHandle,
};
use shop_nats::{Encoding, ServiceError, TraceContext};

use crate::{
    config::Settings,
    domain::{
        self, email_key, Account, Decision, LoginReply, NewAccount, Secret, UserEvent, UserProfile,
    },
    keys::KeyRing,
    password::Hasher,
    store,
    throttle::LoginThrottle,
    token::{Claims, Jwks},
};

pub const SERVICE: &str = "user";
/// The stream holding every account change.
pub const STREAM: &str = "USER";
pub const STREAM_SUBJECTS: &[&str] = &["events.user.>"];

/// Every subject the service answers.
pub const ENDPOINTS: &[EndpointSpec] = &[
    EndpointSpec {
        name: "register",
        subject: "user.register",
    },
    EndpointSpec {
        name: "login",
        subject: "user.login",
    },
    EndpointSpec {
        name: "get",
        subject: "user.get",
    },
    EndpointSpec {
        name: "update",
        subject: "user.update",
    },
    EndpointSpec {
        name: "keys",
        subject: "user.keys",
    },
];

/// How long a read with `min_revision` waits for this instance to catch up.
const MIN_REVISION_WAIT: Duration = Duration::from_secs(2);

/// Registration of one email: the claim that makes it unique, and the public
/// `user.registered` event other services consume.
pub fn registered_subject(email_key: &str) -> String {
    format!("events.user.registered.{email_key}")
}

/// Profile updates of one account.
pub fn profile_subject(user_id: &str) -> String {
    format!("events.user.profile.{user_id}")
}

/// The password hash of one account (private to this service).
pub fn credential_subject(user_id: &str) -> String {
    format!("events.user.credential.{user_id}")
}

pub struct UserHandler {
    events: EventLog,
    state: StateHandle,
    hasher: Hasher,
    settings: Settings,
    keys: KeyRing,
    throttle: LoginThrottle,
}

impl UserHandler {
    /// Opens the key-value buckets (signing keys, failed logins) and makes
    /// sure a signing key exists, so the first login does not have to.
    pub async fn open(
        ctx: &ServiceContext,
        hasher: Hasher,
        settings: Settings,
    ) -> anyhow::Result<Self> {
        let replicas = ctx.config.js_replicas;
        let keys = KeyRing::open(&ctx.js, replicas).await?;
        let throttle = LoginThrottle::open(&ctx.js, settings.login, replicas).await?;
        let set = keys
            .load_or_create(now_secs())
            .await
            .map_err(|e| anyhow::anyhow!("loading signing keys: {e}"))?;
        tracing::info!(kid = %set.current().map(|k| k.kid.as_str()).unwrap_or_default(), "signing keys ready");
        Ok(Self {
            events: ctx.events.clone(),
            state: ctx.state.clone(),
            hasher,
            settings,
            keys,
            throttle,
        })
    }

    fn tree(&self) -> &sled::Tree {
        self.state.tree()
    }

    fn read_profile(&self, request: &Request, id: &str) -> HandlerResult {
        let user = store::user(self.tree(), id)?.ok_or_else(|| domain::not_found(id))?;
        request.encode(&user.profile)
    }

    /// The account registered with a normalized email, from local state.
    pub fn profile_by_email(&self, email: &str) -> Result<Option<UserProfile>, ServiceError> {
        match store::user_id_by_email(self.tree(), &email_key(email))? {
            Some(id) => Ok(store::user(self.tree(), &id)?.map(|u| u.profile)),
            None => Ok(None),
        }
    }

    /// `user.get` when the local state is recent enough; `None` defers to the pool.
    fn get_now(&self, request: &Request) -> Option<HandlerResult> {
        let get: domain::GetUser = match request.decode() {
            Ok(get) => get,
            Err(e) => return Some(Err(e)),
        };
        if let Err(e) = domain::validate_id("id", &get.id) {
            return Some(Err(e));
        }
        if get
            .min_revision
            .is_some_and(|min| self.state.applied() < min)
        {
            return None;
        }
        Some(self.read_profile(request, &get.id))
    }

    async fn get_after_catch_up(&self, request: Request) -> HandlerResult {
        let get: domain::GetUser = request.decode()?;
        domain::validate_id("id", &get.id)?;
        self.state
            .wait_for(get.min_revision.unwrap_or(0), MIN_REVISION_WAIT)
            .await?;
        self.read_profile(&request, &get.id)
    }

    async fn register(&self, request: Request) -> HandlerResult {
        let register: domain::RegisterUser = request.decode()?;
        let account = domain::validate_register(&register)?;
        let profile = self.create_account(account, &request.trace).await?;
        request.encode(&profile)
    }

    /// Creates an account with a unique email: the password hash is stored
    /// first (on the account's credential subject), then the email is claimed
    /// by appending `user.registered` to the email's subject with expected
    /// revision 0, which the stream grants to one writer only, across every
    /// instance. A lost claim leaves an unreachable credential behind.
    pub async fn create_account(
        &self,
        new: NewAccount,
        trace: &TraceContext,
    ) -> Result<UserProfile, ServiceError> {
        let key = email_key(&new.email);
        // Most duplicates are known locally: no hash, no write for them.
        if store::user_id_by_email(self.tree(), &key)?.is_some() {
            return Err(domain::email_taken());
        }
        let password_hash = self.hasher.hash(&new.password).await?;
        let id = uuid::Uuid::now_v7().simple().to_string();
        let credential = UserEvent::CredentialSet {
            user_id: id.clone(),
            password_hash: Secret::new(password_hash),
        };
        self.events
            .append(
                &Append {
                    subject: credential_subject(&id),
                    event_type: credential.type_name(),
                    payload: encode_event(&credential)?,
                    expected_revision: Some(0),
                    msg_id: format!("user.credential:{id}"),
                },
                trace,
            )
            .await
            .map_err(|e| match e {
                AppendError::Conflict => ServiceError::internal(format!("user id {id} collided")),
                AppendError::Failed(e) => e,
            })?;

        let account = Account {
            id: id.clone(),
            email: new.email,
            name: new.name,
            roles: new.roles,
            created_at: now_rfc3339()?,
        };
        let written = self
            .events
            .write(&key, trace, |state| {
                let existing = store::user_id_by_email(state.tree(), &key)?;
                match domain::decide_register(existing.as_deref(), account.clone())? {
                    Decision::AlreadyDone => Ok(None),
                    Decision::Append(event) => Ok(Some(Append {
                        subject: registered_subject(&key),
                        event_type: event.type_name(),
                        payload: encode_event(&event)?,
                        // The email's subject must be empty: that is the uniqueness check.
                        expected_revision: Some(0),
                        msg_id: format!("user.registered:{id}"),
                    })),
                }
            })
            .await?;
        match written {
            Written::Appended(appended) => {
                tracing::info!(user_id = %id, revision = appended.revision, "account registered");
                Ok(UserProfile::new(account, appended.revision))
            }
            Written::Unchanged => Err(ServiceError::internal("registration decided nothing")),
        }
    }

    async fn login(&self, request: Request) -> HandlerResult {
        let login: domain::Login = request.decode()?;
        let email = domain::normalize_email(&login.email)?;
        domain::validate_login_password(&login.password)?;
        let key = email_key(&email);
        let seen = self.throttle.check(&key, now_ms()).await?;
        // Every registration acknowledged before this login is visible to it.
        self.events.catch_up().await?;
        let account = match store::user_id_by_email(self.tree(), &key)? {
            Some(id) => store::user(self.tree(), &id)?
                .map(|user| Ok::<_, ServiceError>((user, store::credential(self.tree(), &id)?)))
                .transpose()?,
            None => None,
        };
        // Unknown email or not: exactly one hash is checked, with the same cost.
        let stored_hash = account.as_ref().and_then(|(_, hash)| hash.as_deref());
        let matched = self.hasher.verify(&login.password, stored_hash).await?;
        let user = match account {
            Some((user, _)) if matched => user,
            _ => {
                self.throttle.failed(&key, now_ms()).await?;
                return Err(domain::invalid_credentials());
            }
        };
        self.throttle.succeeded(&key, seen).await;
        let signer = self
            .keys
            .load_or_create(now_secs())
            .await?
            .current()?
            .signer()?;
        let now = now_secs();
        let profile = user.profile;
        let claims = Claims {
            sub: profile.id.clone(),
            email: profile.email.clone(),
            roles: profile
                .roles
                .iter()
                .map(|r| r.as_str().to_string())
                .collect(),
            iat: now,
            exp: now + self.settings.token_ttl.as_secs(),
        };
        let token = signer
            .sign(&claims)
            .map_err(|e| ServiceError::internal(format!("signing token: {e}")))?;
        tracing::info!(user_id = %profile.id, kid = signer.kid(), "login succeeded");
        request.encode(&LoginReply {
            token,
            token_type: "Bearer".to_string(),
            expires_at: claims.exp,
            user: profile,
        })
    }

    async fn update(&self, request: Request) -> HandlerResult {
        let update: domain::UpdateUser = request.decode()?;
        domain::validate_update(&update)?;
        let mut decided = None;
        let written = self
            .events
            .write(&update.id, &request.trace, |state| {
                let current = store::user(state.tree(), &update.id)?;
                match domain::decide_update(current.as_ref().map(|u| &u.profile), &update)? {
                    Decision::AlreadyDone => Ok(None),
                    Decision::Append(event) => {
                        // The expected revision comes from the same read as the decision.
                        let expected = current.as_ref().map_or(0, |u| u.profile_revision);
                        let append = Append {
                            subject: profile_subject(&update.id),
                            event_type: event.type_name(),
                            payload: encode_event(&event)?,
                            expected_revision: Some(expected),
                            msg_id: EventLog::new_msg_id(),
                        };
                        decided = Some(event);
                        Ok(Some(append))
                    }
                }
            })
            .await?;
        match (written, decided) {
            (Written::Appended(appended), Some(UserEvent::Updated { user }))
                if !appended.duplicate =>
            {
                request.encode(&UserProfile::new(user, appended.revision))
            }
            _ => self.read_profile(&request, &update.id),
        }
    }

    async fn keys(&self, request: Request) -> HandlerResult {
        // No parameters: an empty payload is fine, anything else must be `{}`.
        if !(request.encoding == Encoding::Json
            && request.payload.iter().all(u8::is_ascii_whitespace))
        {
            request.decode::<domain::GetKeys>()?;
        }
        let now = now_secs();
        let set = self.keys.load_or_create(now).await?;
        let jwks: Jwks = set.published(now, self.settings.token_ttl)?;
        request.encode(&jwks)
    }
}

impl Handler for UserHandler {
    fn inline(&self, endpoint: &'static str, request: &Request) -> Option<HandlerResult> {
        match endpoint {
            "get" => self.get_now(request),
            _ => None,
        }
    }

    fn call(
        self: Arc<Self>,
        endpoint: &'static str,
        request: Request,
    ) -> BoxFuture<'static, HandlerResult> {
        async move {
            match endpoint {
                "get" => self.get_after_catch_up(request).await,
                "register" => self.register(request).await,
                "login" => self.login(request).await,
                "update" => self.update(request).await,
                "keys" => self.keys(request).await,
                other => Err(ServiceError::not_found(format!(
                    "no handler for endpoint {other}"
                ))),
            }
        }
        .boxed()
    }
}

fn encode_event(event: &UserEvent) -> Result<bytes::Bytes, ServiceError> {
    serde_json::to_vec(event)
        .map(Into::into)
        .map_err(|e| ServiceError::internal(format!("encoding event: {e}")))
}

fn now_since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

pub fn now_secs() -> u64 {
    now_since_epoch().as_secs()
}

fn now_ms() -> u64 {
    u64::try_from(now_since_epoch().as_millis()).unwrap_or(u64::MAX)
}

fn now_rfc3339() -> Result<String, ServiceError> {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .unwrap_or_else(time::OffsetDateTime::now_utc)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| ServiceError::internal(format!("formatting time: {e}")))
}
