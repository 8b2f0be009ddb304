//! `shop manifest --json` against the running services: each one's `$SRV.INFO`
//! is its declaration, endpoint for endpoint.

use std::process::Command;

use shop_nats::manifest::{EndpointKind, Manifest};
use testkit::{request_json, workspace_bin, NatsServer, ServiceProcess};

fn manifest() -> Manifest {
    let out = Command::new(env!("CARGO_BIN_EXE_shop"))
        .args(["manifest", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "manifest problems: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn manifest_json_has_the_documented_shape() {
    let json: serde_json::Value = {
        let out = Command::new(env!("CARGO_BIN_EXE_shop"))
            .args(["manifest", "--json"])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let services = json["services"].as_array().unwrap();
    assert_eq!(services.len(), 6, "five services and the gateway");
    for service in services {
        for key in [
            "name",
            "endpoints",
            "publishes",
            "calls",
            "consumes",
            "owns",
        ] {
            assert!(
                service.get(key).is_some(),
                "{} lacks {key}",
                service["name"]
            );
        }
    }
    let order = services.iter().find(|s| s["name"] == "order").unwrap();
    let create = order["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subject"] == "order.create")
        .unwrap();
    assert_eq!(create["access"], "user");
    assert_eq!(create["kind"], "write");
    assert!(create["request_schema"]["properties"]["items"].is_object());
    assert!(order["calls"]
        .as_array()
        .unwrap()
        .contains(&"payment.charge".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_serves_its_declaration_in_srv_info() {
    let manifest = manifest();
    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let client = nats.client().await.unwrap();
    let mut running = Vec::new();
    for service in manifest.services.iter().filter(|s| !s.endpoints.is_empty()) {
        let bin = workspace_bin(&format!("{}-service", service.name)).unwrap();
        let dir = data.path().join(&service.name);
        let process =
            ServiceProcess::start(&bin, &nats.url(), &format!("{}-1", service.name), &dir, &[])
                .await
                .unwrap();
        running.push(process);

        let info = request_json(&client, &format!("$SRV.INFO.{}", service.name), "")
            .await
            .unwrap()
            .body;
        assert_eq!(info["name"], service.name);
        assert_eq!(info["version"], service.version);
        assert_eq!(info["description"], service.description);
        let served = info["endpoints"].as_array().unwrap();
        assert_eq!(served.len(), service.endpoints.len(), "{}", service.name);
        for (served, declared) in served.iter().zip(&service.endpoints) {
            let kind = match declared.kind {
                EndpointKind::Read => "read",
                EndpointKind::Write => "write",
            };
            assert_eq!(served["name"], declared.name);
            assert_eq!(served["subject"], declared.subject);
            assert_eq!(served["queue_group"], service.name);
            assert_eq!(served["metadata"]["kind"], kind, "{}", declared.subject);
            assert_eq!(
                served["metadata"]["access"],
                declared.access.name(),
                "{}",
                declared.subject
            );
            assert_eq!(
                served["metadata"]["callers"],
                declared.access.services().join(",")
            );
            assert_eq!(served["metadata"]["request"], declared.request);
        }
    }
    assert_eq!(running.len(), 5);
}
