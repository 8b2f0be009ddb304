//! `shop status`: every live instance from the registry, with its `$SRV.STATS`
//! counters, its `/health` (state lag, and each durable consumer's lag:
//! events undelivered plus unacknowledged) and the NATS server it is connected
//! to; then every stream with its leader and replicas (which node of a
//! cluster leads it, and whether each replica is current).

use std::time::Duration;

use futures::TryStreamExt;
use serde_json::{json, Value};
use shop_nats::discovery::{InstanceInfo, Registry};

use crate::{
    exit::{Failure, NO_ANSWER, UNREACHABLE},
    http,
};

pub async fn run(
    client: &async_nats::Client,
    service: Option<&str>,
    as_json: bool,
    streams_only: bool,
) -> Result<(), Failure> {
    if streams_only {
        let streams = streams(client).await?;
        if as_json {
            println!(
                "{}",
                serde_json::to_string_pretty(&streams).unwrap_or_default()
            );
        } else {
            print_streams(&streams);
        }
        return Ok(());
    }
    let js = async_nats::jetstream::new(client.clone());
    let registry = Registry::existing(&js)
        .await
        .map_err(|e| Failure::new(UNREACHABLE, format!("reading the registry: {e}")))?
        .ok_or_else(|| {
            Failure::new(
                NO_ANSWER,
                "no registry bucket: no service has started on this NATS server",
            )
        })?;
    let instances = registry
        .list(service)
        .await
        .map_err(|e| Failure::new(UNREACHABLE, format!("reading the registry: {e}")))?;
    if instances.is_empty() {
        return Err(Failure::new(
            NO_ANSWER,
            match service {
                Some(s) => format!("no live instance of {s}"),
                None => "no live instances".to_string(),
            },
        ));
    }
    let mut rows = Vec::new();
    for info in &instances {
        rows.push(describe(client, info).await);
    }
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
    } else {
        print_table(&rows);
        // The streams are an addition to the instances: a failure to read
        // them is said, not fatal.
        match streams(client).await {
            Ok(streams) => {
                println!();
                print_streams(&streams);
            }
            Err(e) => eprintln!("streams: {}", e.message),
        }
    }
    Ok(())
}

/// Every stream: messages, last sequence, and where it lives (`cluster`:
/// the leader's server name and each replica's name, current, lag, offline).
pub async fn streams(client: &async_nats::Client) -> Result<Vec<Value>, Failure> {
    let js = async_nats::jetstream::new(client.clone());
    let unreadable =
        |e: &dyn std::fmt::Display| Failure::new(UNREACHABLE, format!("listing the streams: {e}"));
    let mut names: Vec<String> = js
        .stream_names()
        .try_collect()
        .await
        .map_err(|e| unreadable(&e))?;
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let info = match js.get_stream(&name).await {
            Ok(mut stream) => stream.info().await.cloned().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let row = match info {
            Ok(info) => {
                let cluster = info.cluster.as_ref();
                let leader = cluster.and_then(|c| c.leader.clone());
                let mut replicas = Vec::new();
                if let Some(leader) = &leader {
                    replicas.push(json!({"name": leader, "leader": true, "current": true, "offline": false, "lag": 0}));
                }
                for peer in cluster.map(|c| c.replicas.as_slice()).unwrap_or_default() {
                    replicas.push(json!({
                        "name": peer.name,
                        "leader": false,
                        "current": peer.current,
                        "offline": peer.offline,
                        "lag": peer.lag.unwrap_or(0),
                    }));
                }
                json!({
                    "stream": name,
                    "replicas_wanted": info.config.num_replicas,
                    "messages": info.state.messages,
                    "last_sequence": info.state.last_sequence,
                    "leader": leader,
                    "replicas": replicas,
                })
            }
            Err(e) => json!({"stream": name, "error": e}),
        };
        out.push(row);
    }
    Ok(out)
}

/// `n1*, n2, n3 (offline)`: the leader starred, replicas that are not
/// current with their lag.
fn replicas_cell(replicas: &Value) -> String {
    let cells: Vec<String> = replicas
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let mut cell = r["name"].as_str().unwrap_or("?").to_string();
            if r["leader"] == true {
                cell.push('*');
            } else if r["offline"] == true {
                cell.push_str(" (offline)");
            } else if r["current"] != true {
                cell.push_str(&format!(" (behind {})", r["lag"]));
            }
            cell
        })
        .collect();
    if cells.is_empty() {
        "-".to_string()
    } else {
        cells.join(", ")
    }
}

fn print_streams(streams: &[Value]) {
    let header = [
        "STREAM",
        "R",
        "MESSAGES",
        "LAST SEQ",
        "LEADER",
        "REPLICAS (* leader)",
    ];
    let cells: Vec<Vec<String>> = streams
        .iter()
        .map(|s| match s["error"].as_str() {
            Some(e) => vec![
                s["stream"].as_str().unwrap_or_default().to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("unreadable: {e}"),
            ],
            None => vec![
                s["stream"].as_str().unwrap_or_default().to_string(),
                s["replicas_wanted"].to_string(),
                s["messages"].to_string(),
                s["last_sequence"].to_string(),
                s["leader"].as_str().unwrap_or("-").to_string(),
                replicas_cell(&s["replicas"]),
            ],
        })
        .collect();
    print_rows(&header, &cells);
}

async fn describe(client: &async_nats::Client, info: &InstanceInfo) -> Value {
    let subject = format!("$SRV.STATS.{}.{}", info.service, info.instance_id);
    let stats = tokio::time::timeout(Duration::from_secs(1), client.request(subject, "".into()))
        .await
        .ok()
        .and_then(Result::ok)
        .and_then(|reply| serde_json::from_slice::<Value>(&reply.payload).ok());
    let (requests, errors, processing_ns) = stats
        .as_ref()
        .and_then(|s| s["endpoints"].as_array())
        .map(|endpoints| {
            endpoints.iter().fold((0u64, 0u64, 0u64), |(r, e, p), ep| {
                (
                    r + ep["num_requests"].as_u64().unwrap_or(0),
                    e + ep["num_errors"].as_u64().unwrap_or(0),
                    p + ep["processing_time"].as_u64().unwrap_or(0),
                )
            })
        })
        .unwrap_or_default();
    let health = match &info.admin_addr {
        Some(addr) => match http::get(addr, "/health").await {
            Ok((_, body)) => serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
            Err(e) => json!({"status": format!("unreachable: {e}")}),
        },
        None => Value::Null,
    };
    json!({
        "service": info.service,
        "instance": info.instance_id,
        "version": info.version,
        "host": info.host,
        "pid": info.pid,
        "admin": info.admin_addr,
        "nats_server": info.nats_server,
        "uptime_secs": health["uptime_secs"],
        "health": health["status"].as_str().unwrap_or("unknown"),
        "requests": requests,
        "errors": errors,
        "avg_ms": if requests > 0 { processing_ns as f64 / requests as f64 / 1e6 } else { 0.0 },
        "state_lag": health["checks"]["state"]["lag"],
        "consumer_lag": consumer_lag(&health["checks"]["consumers"]),
        "consumers": health["checks"]["consumers"],
        "stats_answered": stats.is_some(),
    })
}

/// Events waiting for this service's durable consumers (undelivered plus
/// unacknowledged), summed; null when it runs none or none could be read.
fn consumer_lag(consumers: &Value) -> Value {
    let read: Vec<u64> = consumers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "ok")
        .map(|c| c["pending"].as_u64().unwrap_or(0) + c["ack_pending"].as_u64().unwrap_or(0))
        .collect();
    if read.is_empty() {
        Value::Null
    } else {
        json!(read.iter().sum::<u64>())
    }
}

fn uptime(secs: &Value) -> String {
    match secs.as_u64() {
        Some(s) if s >= 3600 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        Some(s) if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        Some(s) => format!("{s}s"),
        None => "-".to_string(),
    }
}

fn print_table(rows: &[Value]) {
    let header = [
        "SERVICE",
        "INSTANCE",
        "VERSION",
        "UPTIME",
        "HEALTH",
        "REQUESTS",
        "ERRORS",
        "AVG MS",
        "LAG",
        "CONSUMER_LAG",
        "NATS",
        "ADMIN",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r["service"].as_str().unwrap_or_default().to_string(),
                r["instance"].as_str().unwrap_or_default().to_string(),
                r["version"].as_str().unwrap_or_default().to_string(),
                uptime(&r["uptime_secs"]),
                r["health"].as_str().unwrap_or_default().to_string(),
                r["requests"].to_string(),
                r["errors"].to_string(),
                format!("{:.3}", r["avg_ms"].as_f64().unwrap_or(0.0)),
                r["state_lag"]
                    .as_u64()
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".into()),
                r["consumer_lag"]
                    .as_u64()
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "-".into()),
                r["nats_server"].as_str().unwrap_or("-").to_string(),
                r["admin"].as_str().unwrap_or("-").to_string(),
            ]
        })
        .collect();
    print_rows(&header, &cells);
}

fn print_rows(header: &[&str], cells: &[Vec<String>]) {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(header.to_vec()));
    for row in cells {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
}
