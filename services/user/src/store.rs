//! Where account data lands locally: the sled layout and the projection that
//! fills it from the `USER` stream.
//!
//! | key              | value                                               |
//! |------------------|-----------------------------------------------------|
//! | `u/<user_id>`    | format byte + [`StoredUser`] JSON                   |
//! | `e/<email_key>`  | the user id owning that email (hex SHA-256 of it)   |
//! | `c/<user_id>`    | format byte + the argon2id PHC string               |

use serde::{Deserialize, Serialize};
use shop_actors::{ApplyError, Projection, StoredEvent};
use shop_nats::ServiceError;

use crate::domain::{email_key, UserEvent, UserProfile};

/// Version of the value format; bumped when it changes incompatibly.
pub const FORMAT_VERSION: u8 = 1;

/// An account as this instance keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredUser {
    pub profile: UserProfile,
    /// Last stream sequence on the account's profile subject (0 before any
    /// update): the expected revision of the next profile update.
    pub profile_revision: u64,
}

pub fn user_key(id: &str) -> Vec<u8> {
    format!("u/{id}").into_bytes()
}

pub fn email_index_key(email_key: &str) -> Vec<u8> {
    format!("e/{email_key}").into_bytes()
}

pub fn credential_key(id: &str) -> Vec<u8> {
    format!("c/{id}").into_bytes()
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApplyError> {
    shop_actors::store::encode_versioned(FORMAT_VERSION, value).map_err(ApplyError::Invalid)
}

fn body(value: &[u8]) -> Result<&[u8], ServiceError> {
    shop_actors::store::versioned_body(FORMAT_VERSION, value)
}

fn read(tree: &sled::Tree, key: &[u8]) -> Result<Option<sled::IVec>, ServiceError> {
    tree.get(key)
        .map_err(|e| ServiceError::internal(format!("reading local store: {e}")))
}

pub fn user(tree: &sled::Tree, id: &str) -> Result<Option<StoredUser>, ServiceError> {
    read(tree, &user_key(id))?
        .map(|v| {
            serde_json::from_slice(body(&v)?)
                .map_err(|e| ServiceError::internal(format!("corrupt stored user {id}: {e}")))
        })
        .transpose()
}

/// The id of the account registered with this email, if any.
pub fn user_id_by_email(
    tree: &sled::Tree,
    email_key: &str,
) -> Result<Option<String>, ServiceError> {
    read(tree, &email_index_key(email_key))?
        .map(|v| {
            String::from_utf8(v.to_vec())
                .map_err(|_| ServiceError::internal("corrupt stored email index"))
        })
        .transpose()
}

/// The account's password hash (PHC string).
pub fn credential(tree: &sled::Tree, id: &str) -> Result<Option<String>, ServiceError> {
    read(tree, &credential_key(id))?
        .map(|v| {
            String::from_utf8(body(&v)?.to_vec())
                .map_err(|_| ServiceError::internal(format!("corrupt stored credential of {id}")))
        })
        .transpose()
}

/// Applies `USER` stream events to the local store.
pub struct UserProjection;

impl Projection for UserProjection {
    fn apply(&self, event: &StoredEvent<'_>, batch: &mut sled::Batch) -> Result<(), ApplyError> {
        match event.decode()? {
            UserEvent::Registered { user } => {
                let id = user.id.clone();
                let email = email_key(&user.email);
                event.check_aggregate(&email)?;
                batch.insert(email_index_key(&email), id.as_bytes());
                let stored = StoredUser {
                    profile: UserProfile::new(user, event.sequence),
                    profile_revision: 0,
                };
                batch.insert(user_key(&id), encode(&stored)?);
            }
            UserEvent::Updated { user } => {
                let id = user.id.clone();
                event.check_aggregate(&id)?;
                let stored = StoredUser {
                    profile: UserProfile::new(user, event.sequence),
                    profile_revision: event.sequence,
                };
                batch.insert(user_key(&id), encode(&stored)?);
            }
            UserEvent::CredentialSet {
                user_id,
                password_hash,
            } => {
                event.check_aggregate(&user_id)?;
                let mut value = vec![FORMAT_VERSION];
                value.extend_from_slice(password_hash.expose().as_bytes());
                batch.insert(credential_key(&user_id), value);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Account, Role, Secret};

    fn temp_tree() -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("user").unwrap();
        (dir, tree)
    }

    fn account(name: &str) -> Account {
        Account {
            id: "u1".into(),
            email: "ann@example.com".into(),
            name: name.into(),
            roles: vec![Role::Customer],
            created_at: "2025-01-01T00:00:00Z".into(),
        }
    }

    /// The subject the user service stores `event` under.
    fn subject(event: &UserEvent) -> String {
        match event {
            UserEvent::Registered { user } => {
                format!("events.user.registered.{}", email_key(&user.email))
            }
            UserEvent::Updated { user } => format!("events.user.profile.{}", user.id),
            UserEvent::CredentialSet { user_id, .. } => {
                format!("events.user.credential.{user_id}")
            }
        }
    }

    fn apply(tree: &sled::Tree, sequence: u64, event: &UserEvent) {
        let payload = serde_json::to_vec(event).unwrap();
        let mut batch = sled::Batch::default();
        UserProjection
            .apply(
                &StoredEvent {
                    sequence,
                    subject: &subject(event),
                    headers: None,
                    payload: &payload,
                },
                &mut batch,
            )
            .unwrap();
        tree.apply_batch(batch).unwrap();
    }

    #[test]
    fn projection_indexes_email_and_tracks_revisions() {
        let (_dir, tree) = temp_tree();
        apply(
            &tree,
            3,
            &UserEvent::CredentialSet {
                user_id: "u1".into(),
                password_hash: Secret::new("$argon2id$h"),
            },
        );
        apply(
            &tree,
            4,
            &UserEvent::Registered {
                user: account("Ann"),
            },
        );
        let key = email_key("ann@example.com");
        assert_eq!(
            user_id_by_email(&tree, &key).unwrap().as_deref(),
            Some("u1")
        );
        let stored = user(&tree, "u1").unwrap().unwrap();
        assert_eq!((stored.profile.revision, stored.profile_revision), (4, 0));
        assert_eq!(
            credential(&tree, "u1").unwrap().as_deref(),
            Some("$argon2id$h")
        );

        apply(
            &tree,
            9,
            &UserEvent::Updated {
                user: account("Ann Lee"),
            },
        );
        let stored = user(&tree, "u1").unwrap().unwrap();
        assert_eq!(stored.profile.name, "Ann Lee");
        assert_eq!((stored.profile.revision, stored.profile_revision), (9, 9));
        assert_eq!(user(&tree, "u2").unwrap(), None);
        assert_eq!(user_id_by_email(&tree, &email_key("x@y.z")).unwrap(), None);
    }
}
