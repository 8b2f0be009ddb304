//! A service as one declaration: what it serves (and who may call it), what it
//! publishes, calls and consumes, and what it owns.
//!
//! ```ignore
//! Declaration::new("product", "Catalog and inventory")
//!     .stream("PRODUCT", &["events.product.>"], ProductProjection)
//!     .publishes(&["events.product.*"])
//!     .endpoint("product.get", Access::Public, read(get))
//!     .endpoint("product.stock.reserve", Access::internal(&["order"]), write(reserve))
//! ```
//!
//! [`crate::run`] serves exactly this: one queue subscription per endpoint
//! actor on `<name>.>`, `$SRV.INFO` from the endpoints, dispatch to the typed
//! handlers ([`crate::route`]), the access check, the consumers checked against
//! what is declared. [`Declaration::manifest`] is the same as data, for `shop
//! manifest`, the bus permissions and the docs checks.

use std::{collections::HashSet, sync::Arc};

use shop_nats::manifest::{
    Access, ConsumerManifest, EndpointManifest, Owns, ServiceManifest, StreamManifest,
};

use crate::{
    dispatch::BoundRoute,
    route::Route,
    state::{Projection, StateHandle},
};

/// `Declaration::new(name, description)` with the calling crate's version
/// (`CARGO_PKG_VERSION`), which `$SRV.INFO` and the registry report.
#[macro_export]
macro_rules! declare {
    ($name:expr, $description:expr $(,)?) => {
        $crate::Declaration::new($name, $description).version(env!("CARGO_PKG_VERSION"))
    };
}

/// The subject answering the keys users' tokens are verified with.
pub const KEYS_SUBJECT: &str = "user.keys";

/// One endpoint: its subject, who may call it, and its handler.
pub struct Endpoint<S> {
    /// As `nats micro` shows it: the subject after `<service>.`, dots as `_`.
    pub name: String,
    pub subject: &'static str,
    pub access: Access,
    pub route: Route<S>,
}

impl<S> Endpoint<S> {
    pub fn manifest(&self) -> EndpointManifest {
        EndpointManifest {
            name: self.name.clone(),
            subject: self.subject.to_string(),
            kind: self.route.kind,
            access: self.access.clone(),
            request: self.route.request.to_string(),
            request_schema: (self.route.schema)(),
        }
    }
}

/// The stream a service owns and how its events become local state.
#[derive(Clone)]
pub struct OwnedStream {
    pub name: &'static str,
    pub subjects: &'static [&'static str],
    pub projection: Arc<dyn Projection>,
}

/// Everything a service is, in one place. `S` is the service's own state, built
/// at start-up and handed to every handler.
pub struct Declaration<S> {
    pub name: &'static str,
    pub description: &'static str,
    pub version: &'static str,
    pub endpoints: Vec<Endpoint<S>>,
    pub stream: Option<OwnedStream>,
    pub buckets: Vec<&'static str>,
    pub publishes: Vec<&'static str>,
    pub calls: Vec<&'static str>,
    pub consumes: Vec<ConsumerManifest>,
}

impl<S: Send + Sync + 'static> Declaration<S> {
    /// A service named `name` (its subject prefix, queue group and registry key prefix).
    pub fn new(name: &'static str, description: &'static str) -> Self {
        Self {
            name,
            description,
            version: "0.0.0",
            endpoints: Vec::new(),
            stream: None,
            buckets: Vec::new(),
            publishes: Vec::new(),
            calls: Vec::new(),
            consumes: Vec::new(),
        }
    }

    /// The version `$SRV.INFO` and the registry report (`env!("CARGO_PKG_VERSION")`).
    pub fn version(mut self, version: &'static str) -> Self {
        self.version = version;
        self
    }

    /// The service's stream (its source of truth), the subjects it binds and
    /// how its events are projected into the local sled store.
    pub fn stream(
        mut self,
        name: &'static str,
        subjects: &'static [&'static str],
        projection: impl Projection,
    ) -> Self {
        self.stream = Some(OwnedStream {
            name,
            subjects,
            projection: Arc::new(projection),
        });
        self
    }

    /// A key-value bucket only this service reads and writes.
    pub fn bucket(mut self, bucket: &'static str) -> Self {
        self.buckets.push(bucket);
        self
    }

    /// Event subjects this service publishes (wildcards allowed).
    pub fn publishes(mut self, subjects: &[&'static str]) -> Self {
        self.publishes.extend_from_slice(subjects);
        self
    }

    /// Request subjects of other services this service calls.
    pub fn calls(mut self, subjects: &[&'static str]) -> Self {
        self.calls.extend_from_slice(subjects);
        self
    }

    /// A durable consumer this service runs on `stream` (its handler is wired
    /// at start-up under the same durable name).
    pub fn consumes(mut self, durable: &str, stream: &str, filters: &[&str]) -> Self {
        self.consumes.push(ConsumerManifest {
            durable: durable.to_string(),
            stream: stream.to_string(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
        });
        self
    }

    /// An endpoint: `subject` (under `<name>.`), who may call it, its handler
    /// ([`crate::route::read`] or [`crate::route::write`]). A user or admin
    /// endpoint makes the service call [`KEYS_SUBJECT`] (its users' tokens are
    /// verified with those keys), so that call is declared with it.
    pub fn endpoint(mut self, subject: &'static str, access: Access, route: Route<S>) -> Self {
        if access.needs_user() && !self.calls.contains(&KEYS_SUBJECT) {
            self.calls.push(KEYS_SUBJECT);
        }
        let name = subject
            .strip_prefix(self.name)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(subject)
            .replace('.', "_");
        self.endpoints.push(Endpoint {
            name,
            subject,
            access,
            route,
        });
        self
    }

    /// Whether some endpoint serves users (or admins): the service verifies tokens.
    pub fn verifies_tokens(&self) -> bool {
        self.endpoints.iter().any(|e| e.access.needs_user())
    }

    /// Mistakes a declaration can hold: a subject outside `<name>.`, one subject
    /// twice, no stream.
    pub fn check(&self) -> Result<(), String> {
        let prefix = format!("{}.", self.name);
        let mut seen = HashSet::new();
        for endpoint in &self.endpoints {
            if !endpoint.subject.starts_with(&prefix) {
                return Err(format!(
                    "{}: endpoint subject {} is outside {prefix}>",
                    self.name, endpoint.subject
                ));
            }
            if !seen.insert(endpoint.subject) {
                return Err(format!(
                    "{}: endpoint subject {} is declared twice",
                    self.name, endpoint.subject
                ));
            }
        }
        if self.stream.is_none() {
            return Err(format!("{}: no stream declared", self.name));
        }
        Ok(())
    }

    /// Each endpoint's route bound to the service's state, in endpoint order:
    /// what the dispatcher runs.
    pub fn bind(&self, service: Arc<S>, state: StateHandle) -> Vec<BoundRoute> {
        self.endpoints
            .iter()
            .map(|endpoint| {
                let (route, service, state) =
                    (endpoint.route.clone(), service.clone(), state.clone());
                Arc::new(move |request| route.dispatch(&service, &state, request)) as BoundRoute
            })
            .collect()
    }

    /// The declaration as data, once [`Declaration::check`] finds no mistake.
    pub fn checked_manifest(&self) -> Result<ServiceManifest, String> {
        self.check().map(|()| self.manifest())
    }

    /// The declaration as data.
    pub fn manifest(&self) -> ServiceManifest {
        ServiceManifest {
            name: self.name.to_string(),
            description: self.description.to_string(),
            version: self.version.to_string(),
            endpoints: self.endpoints.iter().map(Endpoint::manifest).collect(),
            publishes: self.publishes.iter().map(|s| s.to_string()).collect(),
            calls: self.calls.iter().map(|s| s.to_string()).collect(),
            subscribes: Vec::new(),
            consumes: self.consumes.clone(),
            owns: Owns {
                streams: self
                    .stream
                    .iter()
                    .map(|s| StreamManifest {
                        name: s.name.to_string(),
                        subjects: s.subjects.iter().map(|s| s.to_string()).collect(),
                    })
                    .collect(),
                buckets: self.buckets.iter().map(|b| b.to_string()).collect(),
            },
        }
    }
}
