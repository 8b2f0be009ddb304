//! `shop up` starts the whole system (its own nats-server included), and Ctrl-C
//! stops every process it started, cleanly.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

fn shop(url: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shop"))
        .arg("--server")
        .arg(url)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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

#[test]
fn up_starts_everything_and_ctrl_c_stops_it() {
    let port = testkit::nats_server::free_port().unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let run_dir = tempfile::tempdir().unwrap();
    let mut up = Command::new(env!("CARGO_BIN_EXE_shop"))
        .args([
            "--server",
            &url,
            "up",
            "--replicas",
            "1",
            "--admin-port-base",
            "0",
        ])
        .args(["--gateway-addr", "127.0.0.1:0", "--nats-http-port", "0"])
        .arg("--root")
        .arg(testkit::workspace_root())
        .arg("--run-dir")
        .arg(run_dir.path())
        .env("NATS_SERVER_BIN", testkit::nats_server::nats_server_bin())
        .env_remove("NATS_URL")
        // The data keys `shop auth init` writes and `shop up` passes on; here
        // the children inherit them. The admin seeds the demo catalog.
        .env("USER_DATA_KEY", shop_nats::sealed::DataKey::generate_text())
        .env(
            "ORDER_DATA_KEY",
            shop_nats::sealed::DataKey::generate_text(),
        )
        .env("ADMIN_EMAIL", "admin@shop.test")
        .env("ADMIN_PASSWORD", "admin-password-for-tests")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
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
        "The system is running",
        Duration::from_secs(120),
    );
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

    let (code, out, err) = shop(&url, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 6, "{out}");
    let pids: Vec<u32> = rows
        .iter()
        .map(|r| r["pid"].as_u64().unwrap() as u32)
        .collect();
    let (code, out, err) = shop(&url, &["req", "product.get", r#"{"id":"sku-keyboard"}"#]);
    assert_eq!(code, 0, "the demo catalog is there: {err}");
    assert!(out.contains("Mechanical Keyboard"), "{out}");

    unsafe { libc::kill(up.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = up.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "shop up did not stop within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
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
