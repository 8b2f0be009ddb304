//! `shop up` starts the whole system (its own nats-server included), and Ctrl-C
//! stops every process it started, cleanly.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// Runs `shop` against `url`, as the identity of `creds` when given.
fn shop(url: &str, creds: Option<&Path>, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shop"));
    command.arg("--server").arg(url).env_remove("NATS_CREDS");
    if let Some(creds) = creds {
        command.arg("--creds").arg(creds);
    }
    let out = command.args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Sends `shop up` SIGINT if the test ends (fails) while it runs, so that it
/// stops what it started instead of leaving it running.
struct StopOnDrop(Option<u32>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            unsafe { libc::kill(pid as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn alive(pid: u32) -> bool {
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// Lines `shop up` prints, until one contains `needle`.
fn wait_for(
    lines: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return;
                }
            }
            Err(_) => panic!(
                "no line containing {needle:?} within {timeout:?}:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// Starts `shop up --replicas 1` on `url` with free ports, `run_dir` and
/// `args`, and waits until it says the system runs; returns it, the guard
/// that stops it if the test fails, its further output and what it printed.
fn start_up(
    url: &str,
    run_dir: &Path,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> (
    std::process::Child,
    StopOnDrop,
    mpsc::Receiver<String>,
    Vec<String>,
) {
    let mut up = Command::new(env!("CARGO_BIN_EXE_shop"))
        .args([
            "--server",
            url,
            "up",
            "--replicas",
            "1",
            "--admin-port-base",
            "0",
        ])
        .args(["--gateway-addr", "127.0.0.1:0", "--nats-http-port", "0"])
        .args(args)
        .arg("--root")
        .arg(testkit::workspace_root())
        .arg("--run-dir")
        .arg(run_dir)
        .env("NATS_SERVER_BIN", testkit::nats_server::nats_server_bin())
        .env_remove("NATS_URL")
        // The demo admin (it seeds the catalog); the data keys are the ones
        // `shop up` makes (auth directory, or <run-dir>/keys with --no-auth).
        .env("ADMIN_EMAIL", "admin@shop.test")
        .env("ADMIN_PASSWORD", "admin-password-for-tests")
        .env_remove("USER_DATA_KEY")
        .env_remove("ORDER_DATA_KEY")
        .env_remove("NATS_CREDS")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let guard = StopOnDrop(Some(up.id()));
    let (tx, lines) = mpsc::channel();
    let stdout = up.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    wait_for(
        &lines,
        &mut seen,
        "Press Ctrl-C to stop everything",
        Duration::from_secs(120),
    );
    (up, guard, lines, seen)
}

#[test]
fn up_starts_everything_and_ctrl_c_stops_it() {
    let port = testkit::nats_server::free_port().unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let run_dir = tempfile::tempdir().unwrap();
    let (mut up, mut guard, lines, seen) = start_up(&url, run_dir.path(), &[], &[]);
    let printed = seen.join("\n");
    assert!(
        printed.contains(&format!("starting nats-server on 127.0.0.1:{port}")),
        "{printed}"
    );
    assert!(printed.contains("demo catalog seeded"), "{printed}");
    for instance in [
        "product-1",
        "user-1",
        "payment-1",
        "notification-1",
        "order-1",
        "gateway-1",
    ] {
        assert!(
            printed.contains(&format!("{instance} ready")),
            "{instance}:\n{printed}"
        );
    }

    // Auth is on: the run's operator identity may look, an anonymous client may not.
    let operator = run_dir.path().join("auth/operator.creds");
    assert!(
        printed.contains(&format!(
            "nats --creds {} req product.get",
            operator.display()
        )),
        "{printed}"
    );
    let (code, _, err) = shop(&url, None, &["status"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("authorization violation"), "{err}");
    let (code, out, err) = shop(&url, Some(&operator), &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 6, "{out}");
    let pids: Vec<u32> = rows
        .iter()
        .map(|r| r["pid"].as_u64().unwrap() as u32)
        .collect();
    let (code, out, err) = shop(
        &url,
        Some(&operator),
        &["req", "product.get", r#"{"id":"sku-keyboard"}"#],
    );
    assert_eq!(code, 0, "the demo catalog is there: {err}");
    assert!(out.contains("Mechanical Keyboard"), "{out}");

    // The printed HTTP API address is the gateway's public listener.
    let api = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("HTTP API: http://"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no HTTP API line:\n{printed}"))
        .to_string();
    let (status, body) = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(testkit::http::get(&api, "/api/products"))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sku-keyboard"), "{body}");

    let status = interrupt(&mut up);
    guard.0 = None;
    assert_eq!(status.code(), Some(0));
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("shop up: stopped")),
        "{rest:?}"
    );
    for pid in pids {
        assert!(!alive(pid), "pid {pid} still running");
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the nats-server it started has stopped"
    );
    assert!(run_dir.path().join("logs/order-1.log").is_file());
}

#[test]
fn up_without_service_binaries_says_so() {
    let port = testkit::nats_server::free_port().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = shop(
        &format!("nats://127.0.0.1:{port}"),
        None,
        &[
            "up",
            "--bin-dir",
            &empty.path().display().to_string(),
            "--run-dir",
            &empty.path().display().to_string(),
        ],
    );
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("product-service is missing"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_a_running_server_needs_its_auth_dir() {
    let nats = testkit::NatsServer::start().await.unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    let url = nats.url();
    let run = run_dir.path().display().to_string();
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        shop(&url, None, &["up", "--run-dir", &run, "--no-seed"])
    })
    .await
    .unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--auth-dir"), "{err}");
}

#[test]
fn up_without_auth_runs_an_open_bus_and_says_so() {
    let port = testkit::nats_server::free_port().unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let run_dir = tempfile::tempdir().unwrap();
    // Credentials in this environment must not reach the children.
    let stray = run_dir.path().join("no-such.creds");
    let (mut up, mut guard, _lines, seen) = start_up(
        &url,
        run_dir.path(),
        &["--no-auth", "--no-seed"],
        &[("NATS_CREDS", stray.as_os_str())],
    );
    let printed = seen.join("\n");
    assert!(printed.contains("WARNING auth is OFF"), "{printed}");
    assert!(!run_dir.path().join("auth").exists(), "no auth directory");

    let (code, out, err) = shop(&url, None, &["status", "--json"]);
    assert_eq!(code, 0, "an anonymous client may: {err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 6, "{out}");

    unsafe { libc::kill(up.id() as i32, libc::SIGINT) };
    let status = up.wait().unwrap();
    guard.0 = None;
    assert_eq!(status.code(), Some(0));
}

/// A client port with the cluster's other ports (the next two, and their
/// routes 2000 above) free too.
fn free_cluster_base() -> u16 {
    for _ in 0..50 {
        let base = testkit::nats_server::free_port().unwrap();
        let ports = [base + 1, base + 2, base + 2000, base + 2001, base + 2002];
        if base < 60000
            && ports
                .iter()
                .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        {
            return base;
        }
    }
    panic!("no free run of ports for a cluster");
}

#[test]
fn up_with_a_nats_cluster_runs_every_stream_on_three_nodes() {
    let base = free_cluster_base();
    let url = format!("nats://127.0.0.1:{base}");
    let nodes: Vec<String> = (0..3)
        .map(|i| format!("nats://127.0.0.1:{}", base + i))
        .collect();
    let all = nodes.join(",");
    let run_dir = tempfile::tempdir().unwrap();
    let (mut up, mut guard, _lines, seen) =
        start_up(&url, run_dir.path(), &["--nats-cluster", "3"], &[]);
    let printed = seen.join("\n");
    for (i, node) in nodes.iter().enumerate() {
        assert!(
            printed.contains(&format!("started NATS node n{} on {node}", i + 1)),
            "{printed}"
        );
    }
    assert!(printed.contains(&format!("NATS at {all}")), "{printed}");
    let config = std::fs::read_to_string(run_dir.path().join("auth/nats-n2.conf")).unwrap();
    assert!(config.contains("server_name: n2"), "{config}");
    assert!(config.contains("sync_interval: always"), "{config}");
    assert!(config.contains("include auth.conf"), "{config}");

    // Every instance says which node it is on; every stream has 3 replicas and a leader.
    let operator = run_dir.path().join("auth/operator.creds");
    let (code, out, err) = shop(&all, Some(&operator), &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 6, "{out}");
    for row in &rows {
        let node = row["nats_server"].as_str().unwrap_or_default();
        assert!(["n1", "n2", "n3"].contains(&node), "{row}");
    }
    let (code, out, err) = shop(&all, Some(&operator), &["status", "--streams", "--json"]);
    assert_eq!(code, 0, "{err}");
    let streams: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = streams
        .iter()
        .filter_map(|s| s["stream"].as_str())
        .collect();
    for name in [
        "PRODUCT",
        "ORDER",
        "USER",
        "PAYMENT",
        "NOTIFICATION",
        "KV_registry",
        "LOGS",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    for stream in &streams {
        assert_eq!(stream["replicas_wanted"], 3, "{stream}");
        assert!(stream["leader"].is_string(), "{stream}");
        assert_eq!(
            stream["replicas"].as_array().map(Vec::len),
            Some(3),
            "{stream}"
        );
    }
    let (code, table, _) = shop(&all, Some(&operator), &["status"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("LEADER") && table.contains("NATS"),
        "{table}"
    );

    let status = interrupt(&mut up);
    guard.0 = None;
    assert_eq!(status.code(), Some(0));
    for i in 0..3 {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", base + i)).is_err(),
            "node {} has stopped",
            i + 1
        );
    }
}

#[test]
fn up_refuses_a_cluster_of_two() {
    let (code, _, err) = {
        let out = Command::new(env!("CARGO_BIN_EXE_shop"))
            .args(["up", "--nats-cluster", "2"])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--nats-cluster 2"), "{err}");
}

/// Sends `shop up` Ctrl-C (SIGINT) and waits (at most 60 s) for it to exit.
fn interrupt(up: &mut std::process::Child) -> std::process::ExitStatus {
    unsafe { libc::kill(up.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = up.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "shop up did not stop within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
