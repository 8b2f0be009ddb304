//! What each identity may do on the bus, as plain functions of the services'
//! declarations ([`Manifest`]): nobody writes a permission by hand.
//!
//! A service may
//! - subscribe to its own request subjects in its own queue group
//!   (`<service>.> <service>`: the runtime's one subscription, so that a
//!   mistyped subject gets a 404), to `$SRV` discovery, to what it declares in
//!   `subscribes`, and to its own inbox `_INBOX.<service>.>`;
//! - publish its declared events (`publishes`), the subjects it declares it
//!   calls (`calls`), and one reply to each request it received (`resp`);
//! - use the JetStream API on what it owns (streams, key-value buckets), on
//!   the durable consumers it declares on other services' streams (durable
//!   name and filter pinned in the API subject), and on the shared
//!   infrastructure: the `registry` bucket (it writes only its own keys), the
//!   `LOGS` stream (its own `logs.<service>.>`), `PARKED` (its own
//!   `parked.<service>.>`, when it owns a stream) and `DEADLETTER` (its own
//!   `deadletter.<durable>`, when it consumes).
//!
//! The `operator` identity (people with the nats CLI, `shop`, the bench
//! harness, the tests' own clients) may do everything.

use std::collections::BTreeSet;

use serde::Serialize;
use shop_actors::{
    consumer::DEADLETTER_STREAM, endpoint::ROUND_TRIP_SUBJECT, log_publisher::LOGS_STREAM,
    parking::PARKED_STREAM,
};
use shop_nats::{
    connect::inbox_prefix,
    discovery::REGISTRY_BUCKET,
    manifest::{ConsumerManifest, Manifest, ServiceManifest},
};

/// The identity people and tools use: everything allowed.
pub const OPERATOR: &str = shop_nats::connect::OPERATOR_IDENTITY;
/// The JetStream API prefix (no domain).
const API: &str = "$JS.API";

/// What one identity may publish and subscribe to. Anything not listed is
/// refused by the server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Permissions {
    /// Subjects it may publish to (NATS wildcards).
    pub publish: BTreeSet<String>,
    /// Subjects it may subscribe to; `"<subject> <queue>"` only in that queue group.
    pub subscribe: BTreeSet<String>,
    /// Whether it may answer requests it received (the JWT `resp` permission:
    /// one reply each, to the request's reply subject).
    pub responses: bool,
}

/// One NATS user: its name (also its `.creds` file and inbox prefix) and what
/// it may do; `None` means everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub name: String,
    pub permissions: Option<Permissions>,
}

/// Every identity of the system: one per declared service (the gateway
/// included), then `operator`; or why a declaration cannot be enforced.
pub fn identities(manifest: &Manifest) -> Result<Vec<Identity>, String> {
    let mut out = Vec::new();
    for service in &manifest.services {
        out.push(Identity {
            name: service.name.clone(),
            permissions: Some(of_service(service)?),
        });
    }
    out.push(Identity {
        name: OPERATOR.to_string(),
        permissions: None,
    });
    Ok(out)
}

/// What `service` may do, from its declaration alone.
pub fn of_service(service: &ServiceManifest) -> Result<Permissions, String> {
    let name = service.name.as_str();
    let mut p = Permissions::default();

    // Requests it serves, and the NATS services protocol.
    if !service.endpoints.is_empty() {
        p.subscribe.insert(format!("{name}.> {name}"));
        for verb in ["PING", "INFO", "STATS"] {
            p.subscribe.insert(format!("$SRV.{verb}"));
        }
        p.subscribe.insert(format!("$SRV.*.{name}"));
        p.subscribe.insert(format!("$SRV.*.{name}.*"));
        p.responses = true;
        // Leaving the queue group waits for a "no responders" answer from the
        // server to a subject nobody serves (actors/src/endpoint.rs).
        p.publish.insert(ROUND_TRIP_SUBJECT.to_string());
    }
    p.subscribe.extend(service.subscribes.iter().cloned());
    p.subscribe.insert(format!("{}.>", inbox_prefix(name)));

    // Its events, and the requests it sends.
    p.publish.extend(service.publishes.iter().cloned());
    p.publish.extend(service.calls.iter().cloned());

    // JetStream: account information (limits, usage), what it owns.
    p.publish.insert(format!("{API}.INFO"));
    let owned: BTreeSet<String> = service
        .owns
        .streams
        .iter()
        .map(|s| s.name.clone())
        .chain(service.owns.buckets.iter().map(|b| kv_stream(b)))
        .collect();
    for stream in &owned {
        p.publish.extend(stream_owner(stream));
    }
    for bucket in &service.owns.buckets {
        p.publish.insert(format!("$KV.{bucket}.>"));
    }
    for consumer in &service.consumes {
        if !owned.contains(&consumer.stream) {
            p.publish.extend(foreign_consumer(consumer)?);
        }
    }

    // Shared infrastructure.
    p.publish.extend(registry_writer(name));
    p.publish.extend(shared_stream(LOGS_STREAM));
    p.publish.insert(format!("logs.{name}.>"));
    if !service.owns.streams.is_empty() {
        p.publish.extend(shared_stream(PARKED_STREAM));
        p.publish.insert(format!("parked.{name}.>"));
    }
    if !service.consumes.is_empty() {
        p.publish.extend(shared_stream(DEADLETTER_STREAM));
        for consumer in &service.consumes {
            p.publish.insert(format!("deadletter.{}", consumer.durable));
        }
    }
    Ok(p)
}

/// The stream behind key-value bucket `bucket`.
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// Everything an owner does with its stream: create or update it, read its
/// messages, run ordered and durable consumers on it (named by the server or
/// by the client, pull or push with flow control), acknowledge. Not delete
/// or purge it.
fn stream_owner(stream: &str) -> Vec<String> {
    let mut out = stream_reader(stream);
    out.extend([
        format!("{API}.CONSUMER.INFO.{stream}.*"),
        format!("{API}.CONSUMER.DELETE.{stream}.*"),
        format!("{API}.CONSUMER.MSG.NEXT.{stream}.*"),
        format!("$JS.ACK.{stream}.>"),
    ]);
    out
}

/// Set up a stream and read all of it: get messages (key-value gets are
/// direct gets of the last message on a subject) and run ordered consumers
/// on it (key-value watches and key listings are pushed ones, with flow control).
fn stream_reader(stream: &str) -> Vec<String> {
    let mut out = shared_stream(stream);
    out.extend([
        format!("{API}.STREAM.MSG.GET.{stream}"),
        format!("{API}.DIRECT.GET.{stream}"),
        format!("{API}.DIRECT.GET.{stream}.>"),
        format!("{API}.CONSUMER.CREATE.{stream}"),
        format!("{API}.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]);
    out
}

/// A stream every process may set up (create, or update to its configuration)
/// and look at, but not read from: `LOGS`, `PARKED`, `DEADLETTER`.
fn shared_stream(stream: &str) -> Vec<String> {
    ["INFO", "CREATE", "UPDATE"]
        .iter()
        .map(|verb| format!("{API}.STREAM.{verb}.{stream}"))
        .collect()
}

/// A durable consumer on another service's stream: created only with its
/// declared name and filter (async-nats puts both in the API subject when
/// there is exactly one filter, and the server checks the request against it),
/// then read, acknowledged and asked about by that name only.
fn foreign_consumer(consumer: &ConsumerManifest) -> Result<Vec<String>, String> {
    let (stream, durable) = (&consumer.stream, &consumer.durable);
    let [filter] = consumer.filters.as_slice() else {
        return Err(format!(
            "consumer {durable} on {stream} has {} filters: the bus can pin a consumer \
             on another service's stream only with exactly one",
            consumer.filters.len()
        ));
    };
    Ok(vec![
        format!("{API}.STREAM.INFO.{stream}"),
        format!("{API}.CONSUMER.CREATE.{stream}.{durable}.{filter}"),
        format!("{API}.CONSUMER.INFO.{stream}.{durable}"),
        format!("{API}.CONSUMER.MSG.NEXT.{stream}.{durable}"),
        format!("$JS.ACK.{stream}.{durable}.>"),
    ])
}

/// The `registry` bucket: set it up, read and watch every entry, write only
/// `<service>.<instance>` keys of its own.
fn registry_writer(service: &str) -> Vec<String> {
    let mut out = stream_reader(&kv_stream(REGISTRY_BUCKET));
    out.push(format!("$KV.{REGISTRY_BUCKET}.{service}.>"));
    out
}

/// The permissions as a Markdown table: identity, what it may publish, what
/// it may subscribe to, whether it answers requests. `docs/security.md`
/// carries it between two marker comments (`scripts/docs-manifest.sh`
/// rewrites it).
pub fn markdown_table(identities: &[Identity]) -> String {
    let list = |items: &BTreeSet<String>| {
        items
            .iter()
            .map(|i| format!("`{i}`"))
            .collect::<Vec<_>>()
            .join("<br>")
    };
    let mut out = String::from(
        "| identity | may publish | may subscribe | answers requests |\n| --- | --- | --- | --- |\n",
    );
    for identity in identities {
        match &identity.permissions {
            None => {
                out += &format!(
                    "| {} | everything | everything (inbox `_INBOX`) | yes |\n",
                    identity.name
                )
            }
            Some(p) => {
                out += &format!(
                    "| {} | {} | {} | {} |\n",
                    identity.name,
                    list(&p.publish),
                    list(&p.subscribe),
                    if p.responses { "yes" } else { "no" }
                )
            }
        }
    }
    out
}

/// The permissions as text: per identity, one subject per line.
pub fn text(identities: &[Identity]) -> String {
    let mut out = String::new();
    for identity in identities {
        out += &format!("{}\n", identity.name);
        let Some(p) = &identity.permissions else {
            out += "  everything (inbox _INBOX)\n";
            continue;
        };
        for subject in &p.publish {
            out += &format!("  publish    {subject}\n");
        }
        for subject in &p.subscribe {
            out += &format!("  subscribe  {subject}\n");
        }
        if p.responses {
            out += "  reply      to requests it received (one reply each)\n";
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_nats::manifest::{Access, EndpointKind, EndpointManifest, Owns, StreamManifest};

    fn endpoint(subject: &str) -> EndpointManifest {
        EndpointManifest {
            name: subject.to_string(),
            subject: subject.to_string(),
            kind: EndpointKind::Read,
            access: Access::Public,
            request: "Req".to_string(),
            request_schema: serde_json::Value::Null,
        }
    }

    fn service(name: &str) -> ServiceManifest {
        ServiceManifest {
            name: name.to_string(),
            description: String::new(),
            version: "0".to_string(),
            endpoints: vec![endpoint(&format!("{name}.get"))],
            publishes: vec![format!("events.{name}.*")],
            calls: vec![],
            subscribes: vec![],
            consumes: vec![],
            owns: Owns {
                streams: vec![StreamManifest {
                    name: name.to_uppercase(),
                    subjects: vec![format!("events.{name}.>")],
                }],
                buckets: vec![format!("{name}_secrets")],
            },
        }
    }

    fn consumer(durable: &str, stream: &str, filters: &[&str]) -> ConsumerManifest {
        ConsumerManifest {
            durable: durable.to_string(),
            stream: stream.to_string(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
        }
    }

    #[test]
    fn a_service_serves_its_own_subjects_in_its_queue_group_and_answers() {
        let p = of_service(&service("a")).unwrap();
        assert!(p.subscribe.contains("a.> a"), "{p:?}");
        assert!(!p.subscribe.contains("a.>"), "{p:?}");
        assert!(p.subscribe.contains("$SRV.*.a.*"), "{p:?}");
        assert!(p.subscribe.contains("_INBOX.a.>"), "{p:?}");
        assert!(
            !p.subscribe.iter().any(|s| s.starts_with("_INBOX.>")),
            "{p:?}"
        );
        assert!(p.responses);
        assert!(p.publish.contains("events.a.*"), "{p:?}");
        assert!(!p.publish.iter().any(|s| s.starts_with("a.")), "{p:?}");
    }

    #[test]
    fn jetstream_rights_only_on_what_it_owns_and_the_shared_streams() {
        let p = of_service(&service("a")).unwrap();
        for owned in [
            "$JS.API.STREAM.UPDATE.A",
            "$JS.API.CONSUMER.CREATE.A.>",
            "$JS.API.DIRECT.GET.KV_a_secrets.>",
            "$KV.a_secrets.>",
            "$JS.ACK.A.>",
            "$KV.registry.a.>",
            "logs.a.>",
            "parked.a.>",
        ] {
            assert!(p.publish.contains(owned), "{owned} missing from {p:?}");
        }
        for refused in [
            "$JS.API.>",
            "$JS.API.STREAM.DELETE.A",
            "$JS.API.STREAM.PURGE.A",
        ] {
            assert!(!p.publish.contains(refused), "{refused} in {p:?}");
        }
        // Every JetStream right names one of its own streams or a shared one.
        let allowed = ["A", "KV_a_secrets", "KV_registry", "LOGS", "PARKED"];
        for subject in p.publish.iter().filter(|s| s.starts_with("$JS.API.")) {
            let named = allowed.iter().any(|stream| {
                subject.ends_with(&format!(".{stream}")) || subject.contains(&format!(".{stream}."))
            });
            assert!(named || subject == "$JS.API.INFO", "{subject}");
        }
    }

    #[test]
    fn a_consumer_on_another_stream_is_pinned_to_its_name_and_filter() {
        let mut b = service("b");
        b.consumes = vec![consumer("b-users", "A", &["events.a.registered.>"])];
        let p = of_service(&b).unwrap();
        assert!(
            p.publish
                .contains("$JS.API.CONSUMER.CREATE.A.b-users.events.a.registered.>"),
            "{p:?}"
        );
        assert!(p.publish.contains("$JS.API.CONSUMER.MSG.NEXT.A.b-users"));
        assert!(p.publish.contains("$JS.ACK.A.b-users.>"));
        assert!(p.publish.contains("deadletter.b-users"));
        assert!(!p.publish.contains("$JS.API.CONSUMER.CREATE.A"));
        assert!(!p.publish.contains("$JS.API.CONSUMER.CREATE.A.>"));
        assert!(!p.publish.iter().any(|s| s.contains("DIRECT.GET.A")));

        b.consumes = vec![consumer("b-two", "A", &["events.a.x.>", "events.a.y.>"])];
        let err = of_service(&b).unwrap_err();
        assert!(err.contains("exactly one"), "{err}");
        // On its own stream any filters are fine: it may read all of it anyway.
        b.consumes = vec![consumer("b-own", "B", &["events.b.x.>", "events.b.y.>"])];
        assert!(of_service(&b).is_ok());
    }

    #[test]
    fn the_system_gives_every_declared_service_and_the_operator_an_identity() {
        let manifest = crate::manifest::all().unwrap();
        let all = identities(&manifest).unwrap();
        let names: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
        let mut declared: Vec<&str> = manifest.services.iter().map(|s| s.name.as_str()).collect();
        declared.push(OPERATOR);
        assert_eq!(names, declared);
        let of = |name: &str| {
            all.iter()
                .find(|i| i.name == name)
                .and_then(|i| i.permissions.clone())
                .unwrap()
        };
        let gateway = of("gateway");
        assert!(!gateway.responses);
        assert!(gateway.subscribe.contains("events.product.>"));
        assert!(!gateway.publish.contains("payment.charge"));
        assert!(!gateway.publish.contains("payment.refund"));
        assert!(!gateway.publish.contains("payment.void"));
        assert!(gateway.publish.contains("user.login"));
        assert!(!gateway
            .publish
            .iter()
            .any(|s| s.contains("user_signing_keys")));
        let notification = of("notification");
        assert!(notification
            .publish
            .contains("$JS.API.CONSUMER.CREATE.USER.notification-users.events.user.registered.>"));
        assert!(!notification.publish.iter().any(|s| s.contains("KV_user")));
        let order = of("order");
        assert!(order.publish.contains("payment.charge"));
        assert!(order.publish.contains("payment.void"));
        assert!(
            !order.publish.contains("payment.get"),
            "the saga no longer looks payments up"
        );
        assert!(!order.subscribe.iter().any(|s| s.starts_with("payment.")));
    }
}
