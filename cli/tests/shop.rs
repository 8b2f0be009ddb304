//! The `shop` binary against a real nats-server and a service on the real runtime.

use std::{process::Command, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use shop_actors::{
    read, Access, ApplyError, Declaration, HandlerResult, Projection, Request, RequestBody,
    RuntimeConfig, StoredEvent, Wiring,
};
use shop_nats::{
    discovery::{Registry, RegistryEvent},
    ServiceError,
};
use testkit::NatsServer;

struct NoProjection;
impl Projection for NoProjection {
    fn apply(&self, _: &StoredEvent<'_>, _: &mut sled::Batch) -> Result<(), ApplyError> {
        Ok(())
    }
}

struct Demo;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct GetDemo {
    id: String,
}
impl RequestBody for GetDemo {}

fn get(_: &Demo, _: &Request, body: GetDemo) -> HandlerResult {
    match body.id.as_str() {
        "a" => Ok(Bytes::from_static(br#"{"id":"a","name":"Alpha"}"#)),
        _ => Err(ServiceError::not_found("demo not found")),
    }
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeConfig,
}

async fn start_demo(
    nats: &NatsServer,
    data: &std::path::Path,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let js = async_nats::jetstream::new(nats.client().await.unwrap());
    let mut watch = Registry::open(&js).await.unwrap().watch().await.unwrap();
    let mut args = vec![
        "demo".to_string(),
        "--nats-url".into(),
        nats.url(),
        "--instance-id".into(),
        "demo-1".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    if let Some(creds) = nats.operator_creds() {
        args.extend(["--nats-creds".into(), creds.display().to_string()]);
    }
    let config = <Cli as clap::Parser>::parse_from(args).runtime;
    let spec = Declaration::new("demo", "demo")
        .version("1.2.3")
        .stream("DEMO", &["events.demo.>"], NoProjection)
        .endpoint("demo.get", Access::Public, read(get));
    let task = tokio::spawn(shop_actors::run(spec, config, |_| async {
        Ok(Wiring::new(Demo))
    }));
    tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = watch.next().await {
            if matches!(&event, RegistryEvent::Up(i) if i.key() == "demo.demo-1") {
                return;
            }
        }
    })
    .await
    .expect("demo registered");
    task
}

fn shop(url: &str, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
    command.arg("--server").arg(url).env_remove("NATS_CREDS");
    if let Some(creds) = testkit::operator_creds_of(url) {
        command.arg("--creds").arg(creds);
    }
    let out = command.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_status_and_targets() {
    let nats = NatsServer::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let task = start_demo(&nats, data.path()).await;
    let url = nats.url();

    let (code, out, _) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || shop(&url, &["req", "demo.get", r#"{"id":"a"}"#])
    })
    .await
    .unwrap();
    assert_eq!(code, 0);
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply["name"], "Alpha");

    let run = |args: Vec<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || shop(&url, &args))
    };
    let (code, _, err) = run(vec!["req", "demo.get", r#"{"id":"zzz"}"#])
        .await
        .unwrap();
    assert_eq!(code, 1, "service error: {err}");
    assert!(err.contains("error 404: demo not found"), "{err}");
    let (code, _, err) = run(vec!["req", "nobody.home", "{}"]).await.unwrap();
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("nothing answers nobody.home"));
    let (code, _, err) = run(vec!["req", "demo.get", "{not json"]).await.unwrap();
    assert_eq!(code, 2, "{err}");

    let (code, out, err) = run(vec!["status"]).await.unwrap();
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("demo"))
        .unwrap_or_else(|| panic!("no demo row:\n{out}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&cells[..3], &["demo", "demo-1", "1.2.3"], "{out}");
    assert_eq!(cells[4], "ok", "health: {out}");
    assert_eq!(
        cells[5], "2",
        "requests counted from $SRV.STATS (bad JSON never left the CLI): {out}"
    );
    assert_eq!(cells[6], "1", "errors: {out}");
    let (code, out, _) = run(vec!["status", "--json", "--service", "demo"])
        .await
        .unwrap();
    assert_eq!(code, 0);
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["state_lag"], 0);
    let (code, _, err) = run(vec!["status", "--service", "ghost"]).await.unwrap();
    assert_eq!(code, 4);
    assert!(err.contains("no live instance of ghost"));

    let file = data.path().join("targets.json");
    let file_arg: &'static str = Box::leak(file.display().to_string().into_boxed_str());
    let (code, _, err) = run(vec!["prometheus-targets", "--once", file_arg])
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let targets: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(targets[0]["labels"]["service"], "demo");
    assert_eq!(targets[0]["labels"]["instance"], "demo-1");
    let admin = targets[0]["targets"][0].as_str().unwrap();
    let (status, _) = testkit::http::get(admin, "/metrics").await.unwrap();
    assert_eq!(status, 200, "the target is the instance's metrics endpoint");
    task.abort();
}

#[test]
fn unreachable_nats_is_exit_3() {
    let port = testkit::nats_server::free_port().unwrap();
    let (code, _, err) = shop(&format!("nats://127.0.0.1:{port}"), &["status"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach NATS"), "{err}");
}
