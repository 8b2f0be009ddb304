//! `shop manifest [--json]`: every service's declaration, the gateway's
//! included: what each serves and who may call it, what it publishes, calls
//! and consumes, what it owns. The same data the bus permissions are made from.

use shop_nats::manifest::{EndpointKind, Manifest, ServiceManifest};

use crate::exit::{Failure, USAGE};

/// Every declaration in the system, in start order, the gateway last; or the
/// first mistake one of them holds.
pub fn all() -> Result<Manifest, String> {
    Ok(Manifest {
        services: vec![
            product_service::declaration().checked_manifest()?,
            user_service::declaration().checked_manifest()?,
            payment_service::declaration().checked_manifest()?,
            notification_service::declaration().checked_manifest()?,
            order_service::declaration().checked_manifest()?,
            gateway::route_table::declaration(),
        ],
    })
}

pub fn run(json: bool, markdown: bool) -> Result<(), Failure> {
    let manifest = all().map_err(|e| Failure::new(USAGE, format!("invalid declaration: {e}")))?;
    if markdown {
        print!("{}", markdown_tables(&manifest));
    } else if json {
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| Failure::new(USAGE, format!("encoding the manifest: {e}")))?;
        println!("{text}");
    } else {
        for service in &manifest.services {
            print!("{}", text(service));
        }
    }
    let problems = manifest.problems();
    for problem in &problems {
        eprintln!("shop: manifest problem: {problem}");
    }
    Ok(())
}

/// Two Markdown tables: every request subject with its service, kind, access
/// and request type; and each service's events, calls, consumers and what it
/// owns. `docs/subjects.md` carries them between two marker comments
/// (`scripts/docs-manifest.sh` rewrites them).
pub fn markdown_tables(manifest: &Manifest) -> String {
    let code = |items: &[String]| -> String {
        match items.is_empty() {
            true => "–".to_string(),
            false => items
                .iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    };
    let mut out = String::from(
        "| subject | service | kind | access | services that may call it | request type |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for (service, endpoint) in manifest.endpoints() {
        let kind = match endpoint.kind {
            EndpointKind::Read => "read",
            EndpointKind::Write => "write",
        };
        out += &format!(
            "| `{}` | {} | {kind} | {} | {} | `{}` |\n",
            endpoint.subject,
            service.name,
            endpoint.access.name(),
            code(endpoint.access.services()),
            endpoint.request
        );
    }
    out += "\n| service | publishes | calls | consumes (durable on stream: filter) | owns |\n| --- | --- | --- | --- | --- |\n";
    for service in &manifest.services {
        let consumes: Vec<String> = service
            .consumes
            .iter()
            .map(|c| format!("{} on {}: {}", c.durable, c.stream, c.filters.join(" ")))
            .collect();
        let mut owns: Vec<String> = service
            .owns
            .streams
            .iter()
            .map(|s| format!("stream {}: {}", s.name, s.subjects.join(" ")))
            .collect();
        owns.extend(service.owns.buckets.iter().map(|b| format!("bucket {b}")));
        let mut publishes = service.publishes.clone();
        publishes.extend(
            service
                .subscribes
                .iter()
                .map(|s| format!("(subscribes) {s}")),
        );
        out += &format!(
            "| {} | {} | {} | {} | {} |\n",
            service.name,
            code(&publishes),
            code(&service.calls),
            code(&consumes),
            code(&owns)
        );
    }
    out
}

/// One service as a few aligned lines.
pub fn text(service: &ServiceManifest) -> String {
    let mut out = format!(
        "{} {}: {}\n",
        service.name, service.version, service.description
    );
    let access: Vec<String> = service
        .endpoints
        .iter()
        .map(|e| match e.access.services() {
            [] => e.access.name().to_string(),
            callers => format!("{} ({})", e.access.name(), callers.join(", ")),
        })
        .collect();
    let width = service
        .endpoints
        .iter()
        .map(|e| e.subject.len())
        .max()
        .unwrap_or(0);
    let access_width = access.iter().map(String::len).max().unwrap_or(0);
    for (endpoint, access) in service.endpoints.iter().zip(&access) {
        let kind = match endpoint.kind {
            EndpointKind::Read => "read ",
            EndpointKind::Write => "write",
        };
        out += &format!(
            "  serves     {:width$}  {kind}  {access:access_width$}  {}\n",
            endpoint.subject, endpoint.request,
        );
    }
    let list = |label: &str, items: Vec<String>| match items.is_empty() {
        true => String::new(),
        false => format!("  {label:<10} {}\n", items.join(", ")),
    };
    out += &list("publishes", service.publishes.clone());
    out += &list("calls", service.calls.clone());
    out += &list("subscribes", service.subscribes.clone());
    out += &list(
        "consumes",
        service
            .consumes
            .iter()
            .map(|c| format!("{} on {} ({})", c.durable, c.stream, c.filters.join(" ")))
            .collect(),
    );
    out += &list(
        "owns",
        service
            .owns
            .streams
            .iter()
            .map(|s| format!("stream {} ({})", s.name, s.subjects.join(" ")))
            .chain(service.owns.buckets.iter().map(|b| format!("bucket {b}")))
            .collect(),
    );
    out
}

/// What a doc of the workspace (`docs/subjects.md`) carries between the
/// marker comments `<!-- MARKER: begin -->` and `<!-- MARKER: end -->`, where
/// `scripts/docs-manifest.sh` writes generated tables; trimmed.
#[cfg(test)]
pub fn generated_block(doc: &str, marker: &str) -> Option<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(doc);
    let text = std::fs::read_to_string(&path).ok()?;
    let (_, rest) = text.split_once(&format!("<!-- {marker}: begin -->"))?;
    let (block, _) = rest.split_once(&format!("<!-- {marker}: end -->"))?;
    Some(block.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_manifest_has_no_problems() {
        let manifest = all().unwrap();
        assert_eq!(manifest.problems(), Vec::<String>::new());
        let names: Vec<&str> = manifest.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "product",
                "user",
                "payment",
                "notification",
                "order",
                "gateway"
            ]
        );
    }

    /// `docs/subjects.md` must carry the generated tables as they are now, so
    /// every declared subject is documented (regenerate with
    /// `scripts/docs-manifest.sh`).
    #[test]
    fn docs_subjects_lists_every_declared_subject() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/subjects.md");
        let docs = std::fs::read_to_string(&path).unwrap_or_default();
        let manifest = all().unwrap();
        for (service, endpoint) in manifest.endpoints() {
            assert!(
                docs.contains(&format!("`{}`", endpoint.subject)),
                "docs/subjects.md does not mention {} ({})",
                endpoint.subject,
                service.name
            );
        }
        let block = generated_block("docs/subjects.md", "shop manifest --markdown");
        assert_eq!(
            block.as_deref(),
            Some(markdown_tables(&manifest).trim()),
            "docs/subjects.md's generated tables are out of date: run scripts/docs-manifest.sh"
        );
    }

    #[test]
    fn text_shows_access_and_callers() {
        let manifest = all().unwrap();
        let product = manifest.service("product").map(text).unwrap_or_default();
        assert!(product.contains("product.stock.reserve"), "{product}");
        assert!(product.contains("internal (order)"), "{product}");
        assert!(product.contains("stream PRODUCT"), "{product}");
    }
}
