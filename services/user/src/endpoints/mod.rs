//! Where user requests are answered, one file per endpoint. `user.get` reads
//! this instance's sled store inline; registration, login, updates and keys
//! run in the worker pool. Writes decide against the local store and append to
//! the `USER` stream through [`EventLog::change`].

pub mod get;
pub mod keys;
pub mod login;
pub mod register;
pub mod update;

use shop_actors::{Change, Changed, EventLog, HandlerResult, Request, ServiceContext};
use shop_nats::{
    auth::Caller,
    clock,
    sealed::{is_sealed, DataKeys},
    ServiceError, TraceContext,
};

use crate::{
    config::Settings,
    domain::{self, email_key, Account, Decision, NewAccount, Secret, UserEvent, UserProfile},
    keys::KeyRing,
    password::Hasher,
    store,
    throttle::LoginThrottle,
};

/// Registration of one email: the claim that makes it unique, and the public
/// `user.registered` event other services consume.
pub fn registered_subject(email_key: &str) -> String {
    format!("events.user.registered.{email_key}")
}

/// Profile updates of one account.
pub fn profile_subject(user_id: &str) -> String {
    format!("events.user.profile.{user_id}")
}

/// The password hash of one account (sealed: readable by this service only).
pub fn credential_subject(user_id: &str) -> String {
    format!("events.user.credential.{user_id}")
}

/// What a password hash is sealed for: its account, so a sealed hash copied
/// onto another account's subject does not open.
pub fn credential_context(user_id: &str) -> String {
    format!("user.credential:{user_id}")
}

/// The user service's state, shared by every handler: the stream, the password
/// hasher, the signing keys (sealed with the data keys) and the login throttle.
pub struct Users {
    events: EventLog,
    hasher: Hasher,
    settings: Settings,
    keys: KeyRing,
    throttle: LoginThrottle,
}

impl Users {
    /// Opens the key-value buckets (signing keys, failed logins) and makes
    /// sure a signing key exists, so the first login does not have to.
    pub async fn open(
        ctx: &ServiceContext,
        hasher: Hasher,
        settings: Settings,
        data_keys: DataKeys,
    ) -> anyhow::Result<Self> {
        let replicas = ctx.config.js_replicas;
        let keys = KeyRing::open(&ctx.js, replicas, data_keys).await?;
        keys.reseal()
            .await
            .map_err(|e| anyhow::anyhow!("sealing the signing keys: {e}"))?;
        let throttle = LoginThrottle::open(&ctx.js, settings.login, replicas).await?;
        let set = keys
            .load_or_create(clock::now_secs())
            .await
            .map_err(|e| anyhow::anyhow!("loading signing keys: {e}"))?;
        tracing::info!(kid = %set.current().map(|k| k.kid.as_str()).unwrap_or_default(), "signing keys ready");
        Ok(Self {
            events: ctx.events.clone(),
            hasher,
            settings,
            keys,
            throttle,
        })
    }

    fn tree(&self) -> &sled::Tree {
        self.events.state().tree()
    }

    fn data_keys(&self) -> &DataKeys {
        self.keys.data_keys()
    }

    /// An account's password hash from its stored credential (sealed; a
    /// credential of an older version is in clear).
    fn password_hash(&self, user_id: &str, stored: &str) -> Result<Secret, ServiceError> {
        if !is_sealed(stored) {
            return Ok(Secret::new(stored));
        }
        self.data_keys()
            .open_text(stored, &credential_context(user_id))
            .map(Secret::new)
            .map_err(|e| {
                tracing::error!(user_id, error = %e, "credential does not open: is USER_DATA_KEY right?");
                ServiceError::internal(format!("the credential of {user_id} cannot be read"))
            })
    }

    /// One profile, as this instance has it.
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
        let hash = self.hasher.hash(&new.password).await?;
        let id = uuid::Uuid::now_v7().simple().to_string();
        let password_hash = Secret::new(
            self.data_keys()
                .seal(hash.as_bytes(), &credential_context(&id)),
        );
        drop(hash);
        self.events
            .change(&id, trace, Some(format!("user.credential:{id}")), |tree| {
                // The id is fresh: a credential already stored under it is a collision.
                if store::credential(tree, &id)?.is_some() {
                    return Err(ServiceError::internal(format!("user id {id} collided")));
                }
                let event = UserEvent::CredentialSet {
                    user_id: id.clone(),
                    password_hash: password_hash.clone(),
                };
                Ok(change(Decision::Append(event), credential_subject(&id), 0))
            })
            .await?;

        let account = Account {
            id: id.clone(),
            email: new.email,
            name: new.name,
            roles: new.roles,
            created_at: clock::now_rfc3339(),
        };
        let changed = self
            .events
            .change(&key, trace, Some(format!("user.registered:{id}")), |tree| {
                let existing = store::user_id_by_email(tree, &key)?;
                let decision = domain::decide_register(existing.as_deref(), account.clone())?;
                // The email's subject must be empty: that is the uniqueness check.
                Ok(change(decision, registered_subject(&key), 0))
            })
            .await?;
        let revision = match changed {
            Changed::Appended { revision, .. } | Changed::Duplicate { revision } => revision,
            Changed::Unchanged => {
                return Err(ServiceError::internal("registration decided nothing"))
            }
        };
        tracing::info!(user_id = %id, revision, "account registered");
        Ok(UserProfile::new(account, revision))
    }
}

/// The 404 a caller gets for an account it may not reach, the same as for
/// one that does not exist (a caller acts for itself, an admin for anyone).
pub fn reachable(caller: &Caller, id: &str) -> Result<(), ServiceError> {
    if caller.may_act_for(id) {
        Ok(())
    } else {
        Err(domain::not_found(id))
    }
}

/// The change a decision asks for: its event on `subject`, decided on the
/// state at `expected_revision`; `None` when there is nothing to write.
fn change(
    decision: Decision,
    subject: String,
    expected_revision: u64,
) -> Option<Change<UserEvent>> {
    match decision {
        Decision::AlreadyDone => None,
        Decision::Append(event) => Some(Change {
            subject,
            expected_revision,
            event,
        }),
    }
}
