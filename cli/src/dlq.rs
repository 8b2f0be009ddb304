//! `shop dlq`: what the system set aside, and replaying it.
//!
//! Two streams keep messages that could not be handled, each with the
//! original payload and headers plus where it came from and why
//! (`shop_actors::parking`):
//!
//! - `DEADLETTER` (`deadletter.<durable>`): events a durable consumer gave up
//!   on. Those of the order saga (`deadletter.order-saga`) can be replayed:
//!   `shop dlq replay` asks the order service to re-drive the order
//!   (`order.redrive`, its saga runs the order's current step again), waits
//!   until the order's saga has ended, and then removes the dead letter.
//! - `PARKED` (`parked.<service>.<stream>.<sequence>`): events a service's
//!   projection could not apply. They are listed, never replayed: the same
//!   bytes would fail the same way.
//!
//! An id is `<STREAM>:<sequence>`, e.g. `DEADLETTER:3`.

use std::time::Duration;

use async_nats::{
    jetstream::{self, consumer::pull::OrderedConfig, stream::RawMessageErrorKind},
    HeaderMap,
};
use clap::Subcommand;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use shop_actors::{
    consumer::{DEADLETTER_REASON_HEADER, DEADLETTER_STREAM, DELIVERIES_HEADER},
    parking::{
        ORIGINAL_SEQUENCE_HEADER, ORIGINAL_STREAM_HEADER, ORIGINAL_SUBJECT_HEADER,
        PARKED_REASON_HEADER, PARKED_STREAM,
    },
};

use crate::{
    exit::{Failure, NO_ANSWER, SERVICE_ERROR, UNREACHABLE, USAGE},
    req::request,
};

/// The streams `shop dlq` reads, in the order it lists them.
const STREAMS: [&str; 2] = [DEADLETTER_STREAM, PARKED_STREAM];
/// The subject the order saga's dead letters are on.
fn saga_subject() -> String {
    format!("deadletter.{}", order_service::saga::DURABLE)
}
/// Longest wait for the next message while listing a stream.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for an answer of the order service.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Dead letters replayed at once by `replay --all`.
const REPLAYS_AT_ONCE: usize = 16;

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Everything set aside, oldest first: id, who set it aside, where it came
    /// from, its subject, when, deliveries and the reason.
    Ls {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-drive the orders of order-saga dead letters, wait until each saga
    /// has ended, then remove the dead letter. Safe to repeat.
    Replay {
        /// Ids from `shop dlq ls`, e.g. DEADLETTER:3.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter of the order saga.
        #[arg(long)]
        all: bool,
        /// Seconds to wait for each order's saga to end.
        #[arg(long, default_value_t = 60.0)]
        wait: f64,
        /// The admin's email: `order.redrive` is an admin endpoint.
        #[arg(long, env = "ADMIN_EMAIL")]
        admin_email: String,
        /// The admin's password (prefer the environment).
        #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: String,
    },
}

/// Runs `shop dlq ...`.
pub async fn run(client: &async_nats::Client, command: DlqCommand) -> Result<(), Failure> {
    let js = jetstream::new(client.clone());
    match command {
        DlqCommand::Ls { json } => ls(&js, json).await,
        DlqCommand::Replay {
            ids,
            all,
            wait,
            admin_email,
            admin_password,
        } => {
            let wait = Duration::from_secs_f64(wait.max(0.0));
            let ids = match all {
                true => saga_dead_letters(&js).await?,
                false => ids
                    .iter()
                    .map(|id| parse_id(id))
                    .collect::<Result<_, _>>()?,
            };
            if ids.is_empty() {
                return Ok(());
            }
            let token =
                shop_nats::login::login(client, &admin_email, &admin_password, REQUEST_TIMEOUT)
                    .await
                    .map_err(|e| match e.code {
                        503 => Failure::new(NO_ANSWER, e.message),
                        _ => Failure::new(
                            SERVICE_ERROR,
                            format!("admin login: error {}: {}", e.code, e.message),
                        ),
                    })?;
            replay_all(client, &js, ids, wait, &token).await
        }
    }
}

/// One message set aside, as `shop dlq ls` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetAside {
    /// `<STREAM>:<sequence>`.
    pub id: String,
    /// The consumer (dead letters) or service (parked events) that set it aside.
    pub by: String,
    /// `<stream>:<sequence>` of the original message.
    pub original: String,
    pub subject: String,
    pub reason: String,
    /// RFC 3339, seconds.
    pub when: String,
    /// Deliveries before it was dead-lettered (none for parked events).
    pub deliveries: Option<u64>,
}

/// Reads what `stream`'s message at `sequence` says about itself.
pub fn describe(
    stream: &str,
    sequence: u64,
    subject: &str,
    headers: Option<&HeaderMap>,
    when: time::OffsetDateTime,
) -> SetAside {
    let header = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default()
    };
    let by = match stream {
        PARKED_STREAM => subject.split('.').nth(1),
        _ => subject.strip_prefix("deadletter."),
    }
    .unwrap_or("?")
    .to_string();
    let reason = match stream {
        PARKED_STREAM => header(PARKED_REASON_HEADER),
        _ => header(DEADLETTER_REASON_HEADER),
    };
    SetAside {
        id: format!("{stream}:{sequence}"),
        by,
        original: format!(
            "{}:{}",
            header(ORIGINAL_STREAM_HEADER),
            header(ORIGINAL_SEQUENCE_HEADER)
        ),
        subject: header(ORIGINAL_SUBJECT_HEADER),
        reason,
        when: when
            .replace_nanosecond(0)
            .unwrap_or(when)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        deliveries: header(DELIVERIES_HEADER).parse().ok(),
    }
}

/// `<STREAM>:<sequence>` (the stream's name in any case) → the stream and sequence.
pub fn parse_id(id: &str) -> Result<(&'static str, u64), Failure> {
    let usage = || {
        Failure::new(
            USAGE,
            format!("{id:?} is not an id from `shop dlq ls` (DEADLETTER:<n> or PARKED:<n>)"),
        )
    };
    let (stream, sequence) = id.trim().split_once(':').ok_or_else(usage)?;
    let stream = STREAMS
        .into_iter()
        .find(|s| s.eq_ignore_ascii_case(stream))
        .ok_or_else(usage)?;
    match sequence.parse::<u64>() {
        Ok(sequence) if sequence > 0 => Ok((stream, sequence)),
        _ => Err(usage()),
    }
}

/// The order a dead letter left unfinished, or why it cannot be replayed.
pub fn replay_target(
    stream: &str,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<String, String> {
    let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
    if stream == PARKED_STREAM {
        return Err(format!(
            "it is an event the {} service's state could not apply ({}); the same bytes would fail the same way, so it is not replayed: it stays at {}:{} in its own stream",
            subject.split('.').nth(1).unwrap_or("?"),
            header(PARKED_REASON_HEADER).unwrap_or("no reason given"),
            header(ORIGINAL_STREAM_HEADER).unwrap_or("?"),
            header(ORIGINAL_SEQUENCE_HEADER).unwrap_or("?"),
        ));
    }
    if subject != saga_subject() {
        return Err(format!(
            "only the order saga's dead letters ({}) can be replayed; this one was set aside by {}",
            saga_subject(),
            subject.strip_prefix("deadletter.").unwrap_or(subject)
        ));
    }
    // The aggregate is the last token of the original subject; an event too
    // broken to decode still names its order there.
    let from_subject = header(ORIGINAL_SUBJECT_HEADER)
        .and_then(|s| s.strip_prefix("events.order."))
        .map(str::to_string);
    let from_payload = || {
        serde_json::from_slice::<Value>(payload)
            .ok()
            .and_then(|v| v["order"]["id"].as_str().map(str::to_string))
    };
    from_subject
        .or_else(from_payload)
        .filter(|id| shop_nats::subject::validate_token("order id", id).is_ok())
        .ok_or_else(|| "it names no order (neither its original subject nor its payload)".into())
}

async fn ls(js: &jetstream::Context, as_json: bool) -> Result<(), Failure> {
    let mut all = Vec::new();
    for stream in STREAMS {
        all.extend(read(js, stream).await?);
    }
    if as_json {
        for item in &all {
            println!("{}", serde_json::to_string(item).unwrap_or_default());
        }
    } else {
        print!("{}", table(&all));
    }
    Ok(())
}

/// The table `shop dlq ls` prints.
pub fn table(items: &[SetAside]) -> String {
    if items.is_empty() {
        return "nothing parked\n".to_string();
    }
    let rows: Vec<[String; 7]> = items
        .iter()
        .map(|i| {
            [
                i.id.clone(),
                i.by.clone(),
                i.original.clone(),
                i.subject.clone(),
                i.when.clone(),
                i.deliveries.map_or("-".into(), |d| d.to_string()),
                i.reason.clone(),
            ]
        })
        .collect();
    let head = [
        "ID",
        "BY",
        "FROM",
        "SUBJECT",
        "WHEN",
        "DELIVERIES",
        "REASON",
    ]
    .map(String::from);
    let widths: Vec<usize> = (0..6)
        .map(|c| {
            rows.iter()
                .chain(std::iter::once(&head))
                .map(|r| r[c].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in std::iter::once(&head).chain(&rows) {
        for (c, width) in widths.iter().enumerate() {
            out += &format!("{:<width$}  ", row[c]);
        }
        out += &row[6];
        out.push('\n');
    }
    out
}

/// Every message of `stream`, oldest first (none when it does not exist).
async fn read(js: &jetstream::Context, stream: &str) -> Result<Vec<SetAside>, Failure> {
    let unreadable = |e: &dyn std::fmt::Display| {
        Failure::new(UNREACHABLE, format!("reading the {stream} stream: {e}"))
    };
    let Some(source) = open(js, stream).await? else {
        return Ok(Vec::new());
    };
    let consumer = source
        .create_consumer(OrderedConfig::default())
        .await
        .map_err(|e| unreadable(&e))?;
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(|e| unreadable(&e))?;
    loop {
        let message = match tokio::time::timeout(READ_TIMEOUT, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => return Err(unreadable(&e)),
            Ok(None) => return Ok(out),
            Err(_) => return Err(unreadable(&"no message within 5 s")),
        };
        let info = message.info().map_err(|e| unreadable(&e))?;
        out.push(describe(
            stream,
            info.stream_sequence,
            &message.subject,
            message.headers.as_ref(),
            info.published,
        ));
        if info.pending == 0 {
            return Ok(out);
        }
    }
}

/// The stream, or `None` when it does not exist (nothing was ever set aside there).
async fn open(
    js: &jetstream::Context,
    stream: &str,
) -> Result<Option<jetstream::stream::Stream>, Failure> {
    match js.get_stream(stream).await {
        Ok(stream) => Ok(Some(stream)),
        Err(e) if e.to_string().contains("not found") => Ok(None),
        Err(e) => Err(Failure::new(
            UNREACHABLE,
            format!("opening the {stream} stream: {e}"),
        )),
    }
}

/// Ids of every dead letter of the order saga.
async fn saga_dead_letters(js: &jetstream::Context) -> Result<Vec<(&'static str, u64)>, Failure> {
    let subject = saga_subject();
    let ids: Vec<_> = read(js, DEADLETTER_STREAM)
        .await?
        .into_iter()
        .filter(|item| format!("deadletter.{}", item.by) == subject)
        .filter_map(|item| parse_id(&item.id).ok())
        .collect();
    if ids.is_empty() {
        println!("no dead letters of the order saga: nothing to replay");
    }
    Ok(ids)
}

/// Replays each id (several at once), printing one line per outcome; fails
/// with the first failure's code when any failed.
async fn replay_all(
    client: &async_nats::Client,
    js: &jetstream::Context,
    ids: Vec<(&'static str, u64)>,
    wait: Duration,
    token: &str,
) -> Result<(), Failure> {
    let total = ids.len();
    let outcomes: Vec<_> = futures::stream::iter(ids)
        .map(|(stream, sequence)| async move {
            let outcome = replay(client, js, stream, sequence, wait, token).await;
            (format!("{stream}:{sequence}"), outcome)
        })
        .buffered(REPLAYS_AT_ONCE)
        .collect()
        .await;
    let mut first_failure = None;
    let mut failed = 0;
    for (id, outcome) in outcomes {
        match outcome {
            Ok(done) => println!("{id}: {done}"),
            Err(failure) => {
                eprintln!("shop: {id}: {}", failure.message);
                failed += 1;
                first_failure.get_or_insert(failure.code);
            }
        }
    }
    match first_failure {
        None => Ok(()),
        Some(code) => Err(Failure::new(
            code,
            format!("{failed} of {total} not replayed"),
        )),
    }
}

/// Replays one dead letter; `Ok` says what became of it.
async fn replay(
    client: &async_nats::Client,
    js: &jetstream::Context,
    stream: &'static str,
    sequence: u64,
    wait: Duration,
    token: &str,
) -> Result<String, Failure> {
    let id = format!("{stream}:{sequence}");
    let Some(mut source) = open(js, stream).await? else {
        return Err(Failure::new(
            SERVICE_ERROR,
            format!("no {id}: nothing was ever set aside in {stream}"),
        ));
    };
    let message = match source.get_raw_message(sequence).await {
        Ok(message) => message,
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {
            let last = source
                .info()
                .await
                .map(|info| info.state.last_sequence)
                .unwrap_or(0);
            return match sequence <= last {
                true => Ok("no longer parked (replayed or removed already): nothing to do".into()),
                false => Err(Failure::new(
                    SERVICE_ERROR,
                    format!("no {id}: {stream} has only reached {stream}:{last}"),
                )),
            };
        }
        Err(e) => return Err(Failure::new(UNREACHABLE, format!("reading {id}: {e}"))),
    };
    let order_id = replay_target(
        stream,
        &message.subject,
        Some(&message.headers),
        &message.payload,
    )
    .map_err(|why| Failure::new(SERVICE_ERROR, format!("{id} cannot be replayed: {why}")))?;
    // Listen before asking, so the saga's last event (or its next dead
    // letter) cannot slip by.
    let order_ref = &order_id;
    let watch = |subject: String| async move {
        client
            .subscribe(subject)
            .await
            .map_err(|e| Failure::new(UNREACHABLE, format!("watching order {order_ref}: {e}")))
    };
    let mut events = watch(format!("events.order.{order_id}")).await?;
    let mut dead_letters = watch(saga_subject()).await?;
    let reply = request(
        client,
        "order.redrive",
        &json!({"id": order_id}),
        REQUEST_TIMEOUT,
        Some(token),
    )
    .await?;
    let mut order: Value = serde_json::from_slice(&reply)
        .map_err(|e| Failure::new(SERVICE_ERROR, format!("order.redrive answered {e}")))?;
    let already_over = is_final(&order);
    let original_subject = format!("events.order.{order_id}");
    let waited = tokio::time::timeout(wait, async {
        while !is_final(&order) {
            tokio::select! {
                Some(message) = events.next() => {
                    if let Ok(event) = serde_json::from_slice::<Value>(&message.payload) {
                        order = event["order"].clone();
                    }
                }
                Some(letter) = dead_letters.next() => {
                    let header = |name| letter.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_string());
                    if header(ORIGINAL_SUBJECT_HEADER).as_deref() == Some(original_subject.as_str()) {
                        return Err(Failure::new(
                            SERVICE_ERROR,
                            format!(
                                "order {order_id} re-driven, but its saga step was dead-lettered again ({}); {id} stays listed, and so does the new dead letter",
                                header(DEADLETTER_REASON_HEADER).unwrap_or_default()
                            ),
                        ));
                    }
                }
                else => break,
            }
        }
        Ok(())
    })
    .await;
    match waited {
        Ok(Err(failure)) => return Err(failure),
        Ok(Ok(())) if is_final(&order) => {}
        _ => {
            return Err(Failure::new(
                NO_ANSWER,
                format!(
                    "order {order_id} re-driven, but still {} after {wait:?}: its saga keeps retrying (shop logs --service order); {id} stays listed",
                    order["status"].as_str().unwrap_or("unfinished")
                ),
            ))
        }
    }
    let ended = match already_over {
        true => format!(
            "order {order_id} was already {}: nothing left to replay",
            describe_order(&order)
        ),
        false => format!("order {order_id} re-driven: {}", describe_order(&order)),
    };
    match source.delete_message(sequence).await {
        Ok(_) => Ok(format!("{ended}; removed from {stream}")),
        Err(e) => {
            eprintln!("shop: {id}: could not remove it ({e}); it stays listed");
            Ok(ended)
        }
    }
}

fn is_final(order: &Value) -> bool {
    matches!(order["status"].as_str(), Some("confirmed" | "cancelled"))
}

fn describe_order(order: &Value) -> String {
    match order["reason"].as_str() {
        Some(reason) => format!("{} ({reason})", order["status"].as_str().unwrap_or("?")),
        None => order["status"].as_str().unwrap_or("?").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, *v);
        }
        h
    }

    #[test]
    fn ids_name_a_stream_and_a_sequence() {
        assert_eq!(parse_id("DEADLETTER:3").unwrap(), ("DEADLETTER", 3));
        assert_eq!(parse_id("parked:12").unwrap(), ("PARKED", 12));
        for bad in [
            "DEADLETTER",
            "DEADLETTER:0",
            "DEADLETTER:x",
            "LOGS:1",
            ":4",
            "",
        ] {
            assert_eq!(parse_id(bad).unwrap_err().code, USAGE, "{bad}");
        }
    }

    #[test]
    fn a_dead_letter_and_a_parked_event_described() {
        // 2026-01-05T10:00:00.75Z
        let when =
            time::OffsetDateTime::from_unix_timestamp_nanos(1_767_607_200_750_000_000).unwrap();
        let dead = headers(&[
            (DEADLETTER_REASON_HEADER, "permanent: refunding p1: 409"),
            (ORIGINAL_SUBJECT_HEADER, "events.order.o1"),
            (ORIGINAL_STREAM_HEADER, "ORDER"),
            (ORIGINAL_SEQUENCE_HEADER, "14"),
            (DELIVERIES_HEADER, "3"),
        ]);
        let item = describe("DEADLETTER", 2, "deadletter.order-saga", Some(&dead), when);
        assert_eq!(
            item,
            SetAside {
                id: "DEADLETTER:2".into(),
                by: "order-saga".into(),
                original: "ORDER:14".into(),
                subject: "events.order.o1".into(),
                reason: "permanent: refunding p1: 409".into(),
                when: "2026-01-05T10:00:00Z".into(),
                deliveries: Some(3),
            }
        );
        let parked = headers(&[
            (
                PARKED_REASON_HEADER,
                "undecodable: expected value at line 1",
            ),
            (ORIGINAL_SUBJECT_HEADER, "events.product.kb"),
            (ORIGINAL_STREAM_HEADER, "PRODUCT"),
            (ORIGINAL_SEQUENCE_HEADER, "9"),
        ]);
        let item = describe("PARKED", 1, "parked.product.PRODUCT.9", Some(&parked), when);
        assert_eq!(item.by, "product");
        assert_eq!(item.deliveries, None);
        let text = table(&[item]);
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("ID "));
        let row = lines.next().unwrap();
        assert!(row.starts_with("PARKED:1  "), "{row}");
        assert!(row.contains(" - "), "no deliveries: {row}");
        assert!(
            row.ends_with("undecodable: expected value at line 1"),
            "{row}"
        );
        assert_eq!(table(&[]), "nothing parked\n");
    }

    #[test]
    fn only_the_order_sagas_dead_letters_replay() {
        let saga = headers(&[(ORIGINAL_SUBJECT_HEADER, "events.order.o1")]);
        assert_eq!(
            replay_target("DEADLETTER", "deadletter.order-saga", Some(&saga), b"junk"),
            Ok("o1".into()),
            "the subject names the order even when the payload is junk"
        );
        assert_eq!(
            replay_target(
                "DEADLETTER",
                "deadletter.order-saga",
                None,
                br#"{"order":{"id":"o2"}}"#
            ),
            Ok("o2".into())
        );
        let nothing = replay_target("DEADLETTER", "deadletter.order-saga", None, b"junk");
        assert!(nothing.unwrap_err().contains("names no order"));
        let other = replay_target(
            "DEADLETTER",
            "deadletter.notification-orders",
            Some(&saga),
            b"{}",
        );
        assert!(
            other
                .unwrap_err()
                .contains("set aside by notification-orders"),
            "another consumer's dead letter"
        );
        let parked = headers(&[
            (PARKED_REASON_HEADER, "wrong_aggregate"),
            (ORIGINAL_STREAM_HEADER, "ORDER"),
            (ORIGINAL_SEQUENCE_HEADER, "7"),
        ]);
        let refused =
            replay_target("PARKED", "parked.order.ORDER.7", Some(&parked), b"{}").unwrap_err();
        assert!(refused.contains("order service's state could not apply (wrong_aggregate)"));
        assert!(refused.contains("ORDER:7"), "{refused}");
        let forged = headers(&[(ORIGINAL_SUBJECT_HEADER, "events.order.a.b")]);
        assert!(
            replay_target("DEADLETTER", "deadletter.order-saga", Some(&forged), b"{}").is_err(),
            "not an order id"
        );
    }
}
