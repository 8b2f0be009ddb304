//! The payment token bucket against a real nats-server that restarts: in
//! memory (the default) a restart loses the tokens and the bucket, which the
//! next create makes again; on file they survive. Either way a bucket keeps
//! the storage it was created with. And the whole shop: an order whose token
//! was lost that way is cancelled (`payment_token_lost`) and charged nothing.

mod common;

use std::time::Duration;

use common::Shop;
use serde_json::json;

use async_nats::jetstream::{self, stream::StorageType};
use order_service::tokens::{PaymentTokens, TokenStorage, BUCKET};
use shop_nats::sealed::{DataKey, DataKeys};
use testkit::NatsServer;

fn keys() -> DataKeys {
    DataKeys::new(
        DataKey::parse(&DataKey::generate_text(), "test key").unwrap(),
        None,
    )
}

/// A JetStream context as the order service, and the client's connection events.
async fn connect(
    nats: &NatsServer,
) -> (
    jetstream::Context,
    tokio::sync::mpsc::UnboundedReceiver<async_nats::Event>,
) {
    let (events_tx, events) = tokio::sync::mpsc::unbounded_channel::<async_nats::Event>();
    let client = nats
        .options("order")
        .await
        .unwrap()
        .event_callback(move |event| {
            let events_tx = events_tx.clone();
            async move {
                let _ = events_tx.send(event);
            }
        })
        .connect(nats.url())
        .await
        .unwrap();
    let mut events = events;
    // The first connection is an event too: take it, so a later one is a reconnect.
    reconnected(&mut events).await;
    (jetstream::new(client), events)
}

/// Waits (10 s at most) for the client's next connection.
async fn reconnected(events: &mut tokio::sync::mpsc::UnboundedReceiver<async_nats::Event>) {
    let connected = async {
        while let Some(event) = events.recv().await {
            if matches!(event, async_nats::Event::Connected) {
                return;
            }
        }
        panic!("the client's events ended before it reconnected");
    };
    tokio::time::timeout(Duration::from_secs(10), connected)
        .await
        .expect("no connection within 10 s");
}

async fn storage_of_bucket(js: &jetstream::Context) -> StorageType {
    let mut stream = js.get_stream(format!("KV_{BUCKET}")).await.unwrap();
    stream.info().await.unwrap().config.storage
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bucket_loses_its_tokens_on_restart_and_is_made_again() {
    let mut nats = NatsServer::start().await.unwrap();
    let (js, mut events) = connect(&nats).await;
    let tokens = PaymentTokens::open(&js, 1, TokenStorage::Memory, keys())
        .await
        .unwrap();
    assert_eq!(storage_of_bucket(&js).await, StorageType::Memory);
    tokens.put("o1", "tok_ok").await.unwrap();
    assert_eq!(tokens.get("o1").await.unwrap().as_deref(), Some("tok_ok"));

    nats.restart().await.unwrap();

    // The token is gone, with the bucket: the saga reads "no token" (and
    // cancels the order as payment_token_lost), not an error to retry forever.
    reconnected(&mut events).await;
    assert_eq!(tokens.get("o1").await.unwrap(), None);
    assert!(
        js.get_stream(format!("KV_{BUCKET}")).await.is_err(),
        "a lone server forgets a memory stream on restart"
    );
    // The next creates store their tokens, racing to make the bucket again.
    let puts = (0..8).map(|i| {
        let tokens = tokens.clone();
        async move { tokens.put(&format!("o{i}"), &format!("tok_{i}")).await }
    });
    for stored in futures::future::join_all(puts).await {
        stored.unwrap();
    }
    for i in 0..8 {
        let token = tokens.get(&format!("o{i}")).await.unwrap();
        assert_eq!(token, Some(format!("tok_{i}")));
    }
    assert_eq!(storage_of_bucket(&js).await, StorageType::Memory);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_bucket_keeps_its_tokens_and_a_bucket_keeps_its_storage() {
    let mut nats = NatsServer::start().await.unwrap();
    let (js, mut events) = connect(&nats).await;
    let tokens = PaymentTokens::open(&js, 1, TokenStorage::File, keys())
        .await
        .unwrap();
    tokens.put("o1", "tok_ok").await.unwrap();

    nats.restart().await.unwrap();

    reconnected(&mut events).await;
    assert_eq!(tokens.get("o1").await.unwrap().as_deref(), Some("tok_ok"));
    // Asking for memory now keeps the file bucket (and its tokens): JetStream
    // cannot move a stream between storages.
    let again = PaymentTokens::open(&js, 1, TokenStorage::Memory, keys())
        .await
        .unwrap();
    assert_eq!(storage_of_bucket(&js).await, StorageType::File);
    again.put("o3", "tok_ok").await.unwrap();
    assert_eq!(again.get("o3").await.unwrap().as_deref(), Some("tok_ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_token_was_lost_is_cancelled_and_charged_nothing() {
    let memory = [("ORDER_TOKEN_STORAGE", "memory")];
    let mut shop = Shop::start(1, &memory).await.unwrap();
    // Only an instance that dies after reserving, before reading the token, runs.
    let first_order = shop.processes.len() - 1;
    shop.processes[first_order].kill9().unwrap();
    shop.product("kb", 10, 1_000).await;
    let user = shop.user("lost@example.com").await;
    let mut faulty_env = memory.to_vec();
    faulty_env.push(("ORDER_FAULT_AT", "after_reserve"));
    let faulty = shop.add_order(&faulty_env).await.unwrap();
    let order = shop
        .place(
            &user,
            json!([{"product_id": "kb", "quantity": 2}]),
            "tok_ok",
            "lost-1",
        )
        .await;
    let id = order["id"].as_str().unwrap().to_string();
    let status = shop.processes[faulty]
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        !status.success(),
        "the faulty instance aborted after reserving"
    );
    assert_eq!(shop.stock("kb").await, 8, "reserved before the crash");

    // The lone server restarts: the memory bucket goes, with the token.
    shop.nats.restart().await.unwrap();
    shop.add_order(&memory).await.unwrap();
    let settled = shop
        .settle(std::slice::from_ref(&id), Duration::from_secs(60))
        .await;
    assert_eq!(settled[&id]["status"], "cancelled", "{}", settled[&id]);
    assert_eq!(settled[&id]["reason"], "payment_token_lost");
    assert_eq!(shop.stock("kb").await, 10, "the reservation was released");
    let money = shop.money(&id).await;
    assert_eq!(money.captures, 0, "nothing was charged");

    // The bucket was made again: the next order goes through.
    let next = shop
        .place(
            &user,
            json!([{"product_id": "kb", "quantity": 1}]),
            "tok_ok",
            "lost-2",
        )
        .await;
    let next_id = next["id"].as_str().unwrap().to_string();
    let settled = shop
        .settle(std::slice::from_ref(&next_id), Duration::from_secs(30))
        .await;
    assert_eq!(settled[&next_id]["status"], "confirmed");
}
