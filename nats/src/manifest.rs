//! What a service is, as data: the endpoints it serves and who may call them,
//! the events it publishes, the subjects it calls, the streams it consumes and
//! the streams and buckets it owns.
//!
//! Every service states this once (`shop_actors::Declaration` builds it for a
//! service, the gateway writes its own). The runtime serves from it, `shop
//! manifest` prints it, and the bus permissions and the docs checks are made
//! from it, so what a service says it does and what it may do cannot drift.

use serde::{Deserialize, Serialize};

/// Who may call an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "access", content = "callers")]
pub enum Access {
    /// Anyone who may publish on the subject.
    Public,
    /// A signed-in user, for their own data (an admin for anyone's); the listed
    /// services may also call it without a user.
    User(Vec<String>),
    /// A signed-in user with the `admin` role; the listed services may also
    /// call it without a user.
    Admin(Vec<String>),
    /// Only the listed services (the bus refuses everyone else).
    Internal(Vec<String>),
}

impl Access {
    /// A signed-in user, for their own data.
    pub fn user() -> Self {
        Access::User(Vec::new())
    }

    /// A signed-in admin.
    pub fn admin() -> Self {
        Access::Admin(Vec::new())
    }

    /// Only these services.
    pub fn internal(services: &[&str]) -> Self {
        Access::Internal(services.iter().map(|s| s.to_string()).collect())
    }

    /// A user or admin endpoint these services may also call without a user.
    pub fn or_services(self, services: &[&str]) -> Self {
        let add = |mut list: Vec<String>| {
            list.extend(services.iter().map(|s| s.to_string()));
            list
        };
        match self {
            Access::User(list) => Access::User(add(list)),
            Access::Admin(list) => Access::Admin(add(list)),
            Access::Internal(list) => Access::Internal(add(list)),
            Access::Public => Access::Public,
        }
    }

    /// `public`, `user`, `admin` or `internal`.
    pub fn name(&self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::User(_) => "user",
            Access::Admin(_) => "admin",
            Access::Internal(_) => "internal",
        }
    }

    /// The services that may call without a user.
    pub fn services(&self) -> &[String] {
        match self {
            Access::Public => &[],
            Access::User(s) | Access::Admin(s) | Access::Internal(s) => s,
        }
    }

    /// True when a request needs no user: public, or internal only.
    pub fn needs_user(&self) -> bool {
        matches!(self, Access::User(_) | Access::Admin(_))
    }
}

/// Whether an endpoint only reads local state (answered inline, may wait for
/// `min_revision`) or changes something (answered from the worker pool).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointKind {
    Read,
    Write,
}

/// One request subject a service answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointManifest {
    /// Name as `nats micro` shows it, e.g. `stock_reserve`.
    pub name: String,
    /// Request subject, e.g. `product.stock.reserve`.
    pub subject: String,
    pub kind: EndpointKind,
    #[serde(flatten)]
    pub access: Access,
    /// The request type's name, e.g. `StockChange`.
    pub request: String,
    /// JSON Schema of the request payload.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub request_schema: serde_json::Value,
}

/// A durable consumer a service runs on a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerManifest {
    pub durable: String,
    pub stream: String,
    /// Filter subjects; empty means the whole stream.
    pub filters: Vec<String>,
}

/// A stream a service owns: its source of truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamManifest {
    pub name: String,
    pub subjects: Vec<String>,
}

/// What a service owns: nobody else writes there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owns {
    pub streams: Vec<StreamManifest>,
    /// Key-value buckets, by bucket name (the stream is `KV_<bucket>`).
    pub buckets: Vec<String>,
}

/// One service's declaration, as data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceManifest {
    pub name: String,
    pub description: String,
    pub version: String,
    pub endpoints: Vec<EndpointManifest>,
    /// Event subjects (NATS wildcards allowed) the service publishes.
    pub publishes: Vec<String>,
    /// Request subjects of other services it calls.
    pub calls: Vec<String>,
    /// Subjects it subscribes to outside its endpoints (plain subscriptions,
    /// e.g. events that invalidate a cache).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribes: Vec<String>,
    pub consumes: Vec<ConsumerManifest>,
    pub owns: Owns,
}

impl ServiceManifest {
    /// The endpoint answering `subject`.
    pub fn endpoint(&self, subject: &str) -> Option<&EndpointManifest> {
        self.endpoints.iter().find(|e| e.subject == subject)
    }
}

/// Every service of the system: what `shop manifest --json` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub services: Vec<ServiceManifest>,
}

impl Manifest {
    pub fn service(&self, name: &str) -> Option<&ServiceManifest> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Every endpoint of every service, with its service.
    pub fn endpoints(&self) -> impl Iterator<Item = (&ServiceManifest, &EndpointManifest)> {
        self.services
            .iter()
            .flat_map(|s| s.endpoints.iter().map(move |e| (s, e)))
    }

    /// Problems that make the manifest inconsistent: a call to a subject nobody
    /// serves, an internal endpoint called by a service it does not list, two
    /// services serving one subject.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for (service, endpoint) in self.endpoints() {
            if let Some(other) = seen.insert(endpoint.subject.as_str(), service.name.as_str()) {
                problems.push(format!(
                    "{} is served by both {other} and {}",
                    endpoint.subject, service.name
                ));
            }
        }
        for caller in &self.services {
            for subject in &caller.calls {
                let Some((owner, endpoint)) = self.endpoints().find(|(_, e)| &e.subject == subject)
                else {
                    problems.push(format!(
                        "{} calls {subject}, which no service serves",
                        caller.name
                    ));
                    continue;
                };
                let listed = endpoint.access.services().contains(&caller.name);
                let open_to_users = !matches!(endpoint.access, Access::Internal(_));
                if !listed && !open_to_users {
                    problems.push(format!(
                        "{} calls {subject}, but {} lets only {:?} call it",
                        caller.name,
                        owner.name,
                        endpoint.access.services()
                    ));
                }
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(subject: &str, access: Access) -> EndpointManifest {
        EndpointManifest {
            name: subject.rsplit('.').next().unwrap_or_default().to_string(),
            subject: subject.to_string(),
            kind: EndpointKind::Read,
            access,
            request: "Req".to_string(),
            request_schema: serde_json::Value::Null,
        }
    }

    fn service(name: &str, endpoints: Vec<EndpointManifest>, calls: &[&str]) -> ServiceManifest {
        ServiceManifest {
            name: name.to_string(),
            description: String::new(),
            version: "0".to_string(),
            endpoints,
            publishes: vec![],
            calls: calls.iter().map(|s| s.to_string()).collect(),
            subscribes: vec![],
            consumes: vec![],
            owns: Owns::default(),
        }
    }

    #[test]
    fn access_serializes_flat_with_its_callers() {
        let e = endpoint("a.get", Access::Internal(vec!["b".into()]));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["access"], "internal");
        assert_eq!(json["callers"], serde_json::json!(["b"]));
        let back: EndpointManifest = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
        let public = serde_json::to_value(endpoint("a.list", Access::Public)).unwrap();
        assert_eq!(public["access"], "public");
        assert!(public.get("callers").is_none());
    }

    #[test]
    fn problems_name_undeclared_callers_and_missing_subjects() {
        let manifest = Manifest {
            services: vec![
                service(
                    "a",
                    vec![endpoint("a.secret", Access::Internal(vec!["b".into()]))],
                    &[],
                ),
                service("b", vec![], &["a.secret"]),
                service("c", vec![], &["a.secret", "a.nothing"]),
            ],
        };
        let problems = manifest.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("c calls a.secret"), "{problems:?}");
        assert!(problems[1].contains("a.nothing"), "{problems:?}");
    }
}
