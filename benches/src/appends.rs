//! JetStream appends per stream during a measured window, from the
//! nats-server's monitoring endpoint (`/jsz`).
//!
//! With `sync_interval: always` every message a file-backed stream stores is
//! one fsync, so the appends per confirmed order are the order path's fsync
//! budget: what a change to it adds or saves shows here in every run, per
//! stream. Memory-backed streams are named, since their appends sync nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::load::Schedule;

/// Each stream's last sequence, by stream name (every account's streams).
pub type Sequences = BTreeMap<String, u64>;

/// What one `/jsz` read says about the streams.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Streams {
    pub sequences: Sequences,
    /// The streams kept in memory rather than on file.
    pub memory: BTreeSet<String>,
}

/// What the streams stored during a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Appends {
    /// Messages stored per second, by stream (only streams that stored any).
    pub per_s: BTreeMap<String, f64>,
    /// Which of them are kept in memory (their appends sync nothing).
    pub memory: BTreeSet<String>,
}

/// How long one `/jsz` read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages each stream stored per second between `schedule`'s measure start
/// and its end; `None` when either read failed (the run goes on without them).
pub async fn measure(monitor: String, schedule: Schedule) -> Option<Appends> {
    tokio::time::sleep_until(schedule.measure_start.into()).await;
    let before = read_logged(&monitor).await?;
    tokio::time::sleep_until(schedule.end.into()).await;
    let after = read_logged(&monitor).await?;
    let per_s = per_second(&before.sequences, &after.sequences, schedule.measured());
    let memory = (after.memory.into_iter())
        .filter(|name| per_s.contains_key(name))
        .collect();
    Some(Appends { per_s, memory })
}

async fn read_logged(monitor: &str) -> Option<Streams> {
    match tokio::time::timeout(READ_TIMEOUT, read(monitor)).await {
        Ok(Ok(sequences)) => Some(sequences),
        Ok(Err(e)) => {
            eprintln!("appends per stream not measured: {e:#}");
            None
        }
        Err(_) => {
            eprintln!("appends per stream not measured: /jsz took over {READ_TIMEOUT:?}");
            None
        }
    }
}

/// Reads every stream's last sequence and storage from the server monitoring
/// at `monitor` (`host:port`).
pub async fn read(monitor: &str) -> Result<Streams> {
    let path = "/jsz?accounts=true&streams=true&config=true";
    let (status, body) = testkit::http::get(monitor, path)
        .await
        .with_context(|| format!("reading {path} from nats-server monitoring at {monitor}"))?;
    if status != 200 {
        bail!("{path} answered {status}: {body}");
    }
    parse(&body)
}

/// The streams' last sequences and storage in a
/// `/jsz?accounts=true&streams=true&config=true` answer.
pub fn parse(body: &str) -> Result<Streams> {
    #[derive(Deserialize)]
    struct Jsz {
        #[serde(default)]
        account_details: Vec<Account>,
    }
    #[derive(Deserialize)]
    struct Account {
        #[serde(default)]
        stream_detail: Vec<Stream>,
    }
    #[derive(Deserialize)]
    struct Stream {
        name: String,
        state: State,
        #[serde(default)]
        config: Option<Config>,
    }
    #[derive(Deserialize)]
    struct Config {
        #[serde(default)]
        storage: String,
    }
    #[derive(Deserialize)]
    struct State {
        last_seq: u64,
    }
    let jsz: Jsz = serde_json::from_str(body).context("decoding /jsz")?;
    let mut streams = Streams::default();
    for stream in jsz
        .account_details
        .into_iter()
        .flat_map(|a| a.stream_detail)
    {
        if stream.config.is_some_and(|c| c.storage == "memory") {
            streams.memory.insert(stream.name.clone());
        }
        streams.sequences.insert(stream.name, stream.state.last_seq);
    }
    Ok(streams)
}

/// Messages stored per second by each stream that stored any between the two
/// reads (a stream made in between counts from 0).
pub fn per_second(
    before: &Sequences,
    after: &Sequences,
    window: Duration,
) -> BTreeMap<String, f64> {
    let secs = window.as_secs_f64().max(f64::EPSILON);
    after
        .iter()
        .filter_map(|(name, last)| {
            let stored = last.saturating_sub(before.get(name).copied().unwrap_or(0));
            (stored > 0).then(|| (name.clone(), stored as f64 / secs))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_accounts_streams() {
        let body = r#"{"server_id":"X","account_details":[
            {"name":"A","stream_detail":[
                {"name":"ORDER","state":{"messages":4,"last_seq":10},"config":{"storage":"file"}},
                {"name":"KV_t","state":{"messages":0,"last_seq":7},"config":{"storage":"memory"}}]},
            {"name":"B","stream_detail":[{"name":"LOGS","state":{"last_seq":3}}]},
            {"name":"C"}]}"#;
        let parsed = parse(body).unwrap();
        let expected = [("KV_t", 7), ("LOGS", 3), ("ORDER", 10)];
        assert_eq!(
            parsed.sequences,
            expected.map(|(n, s)| (n.to_string(), s)).into()
        );
        assert_eq!(
            parsed.memory,
            ["KV_t".to_string()].into(),
            "no config: file"
        );
        assert!(parse("{\"account_details\":[{\"stream_detail\":[{}]}]}").is_err());
        assert_eq!(parse("{}").unwrap(), Streams::default());
    }

    #[test]
    fn counts_what_each_stream_stored_in_the_window() {
        let before: Sequences = [("ORDER", 100), ("PAYMENT", 50), ("IDLE", 5)]
            .map(|(n, s)| (n.to_string(), s))
            .into();
        let after: Sequences = [("ORDER", 300), ("PAYMENT", 150), ("IDLE", 5), ("NEW", 20)]
            .map(|(n, s)| (n.to_string(), s))
            .into();
        let rates = per_second(&before, &after, Duration::from_secs(10));
        let expected = [("NEW", 2.0), ("ORDER", 20.0), ("PAYMENT", 10.0)];
        assert_eq!(rates, expected.map(|(n, r)| (n.to_string(), r)).into());
    }
}
