//! Log records that wait together are published as one message, one JSON
//! object per line (each message the `LOGS` stream stores is an fsync with
//! `sync_interval: always`), and none is lost or split.

use std::time::Duration;

use futures::StreamExt;
use shop_actors::log_publisher::{self, LogPublishSettings, MAX_RECORDS_PER_MESSAGE};
use testkit::NatsServer;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_records_share_messages_and_none_is_lost() {
    let layer = log_publisher::capture_layer(&LogPublishSettings::default())
        .expect("the first capture layer of this process");
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer)).unwrap();

    // 500 records wait in the buffer before publishing starts.
    const RECORDS: usize = 500;
    for n in 0..RECORDS {
        tracing::info!(n, "record");
    }

    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let mut logs = client.subscribe("logs.>").await.unwrap();
    client.flush().await.unwrap();
    assert!(log_publisher::start("batches", "batches-1", &client));

    let mut seen = Vec::new();
    let mut messages = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while seen.len() < RECORDS {
            let message = logs.next().await.expect("logs subscription");
            assert_eq!(message.subject.as_str(), "logs.batches.batches-1");
            messages += 1;
            let text = String::from_utf8(message.payload.to_vec()).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert!(
                (1..=MAX_RECORDS_PER_MESSAGE).contains(&lines.len()),
                "{} records in one message",
                lines.len()
            );
            for line in lines {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(record["service"], "batches");
                if record["message"] == "record" {
                    seen.push(record["fields"]["n"].as_u64().unwrap());
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {RECORDS} records arrived", seen.len()));
    let expected: Vec<u64> = (0..RECORDS as u64).collect();
    assert_eq!(seen, expected, "every record once, in order");
    assert!(
        messages < RECORDS / 4,
        "{RECORDS} waiting records took {messages} messages"
    );
    log_publisher::flush(Duration::from_secs(2)).await;
}
