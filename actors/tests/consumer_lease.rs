//! A durable consumer whose handler runs three times its ack wait keeps the
//! event: it is delivered once, not handed out again while it runs, then acked.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{self, stream};
use futures::{future::BoxFuture, FutureExt};
use ractor::Actor;
use shop_actors::{
    consumer::{
        ConsumedEvent, ConsumerActor, ConsumerShared, ConsumerSpec, EventHandler, HandleError,
    },
    metrics::Metrics,
};
use testkit::NatsServer;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Takes `duration` over each event; reports each start (with its delivery
/// count) and each end.
struct Slow {
    duration: Duration,
    seen: mpsc::UnboundedSender<(&'static str, i64)>,
}

impl EventHandler for Slow {
    fn handle(
        self: Arc<Self>,
        event: ConsumedEvent,
    ) -> BoxFuture<'static, Result<(), HandleError>> {
        async move {
            let _ = self.seen.send(("start", event.delivered));
            tokio::time::sleep(self.duration).await;
            let _ = self.seen.send(("end", event.delivered));
            Ok(())
        }
        .boxed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_longer_than_the_ack_wait_is_delivered_once() {
    let nats = NatsServer::start().await.unwrap();
    let js = jetstream::new(nats.client().await.unwrap());
    let mut feed = js
        .create_stream(stream::Config {
            name: "FEED".into(),
            subjects: vec!["events.feed.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let ack_wait = Duration::from_secs(1);
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let mut spec = ConsumerSpec::new(
        "slow-feed",
        "FEED",
        &["events.feed.>"],
        Arc::new(Slow {
            duration: ack_wait * 3,
            seen: seen_tx,
        }),
    );
    spec.ack_wait = ack_wait;
    let shared = Arc::new(ConsumerShared {
        spec,
        js: js.clone(),
        metrics: Metrics::new("test", "t1").unwrap(),
        stop: CancellationToken::new(),
        tracker: TaskTracker::new(),
    });
    let (consumer, _) = Actor::spawn(None, ConsumerActor, shared.clone())
        .await
        .unwrap();
    js.publish("events.feed.long", "step".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let first = tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("delivered")
        .unwrap();
    assert_eq!(first, ("start", 1));
    let next = tokio::time::timeout(ack_wait * 6, seen.recv())
        .await
        .expect("the step ended")
        .unwrap();
    assert_eq!(
        next,
        ("end", 1),
        "no second delivery while the first one ran"
    );

    // Acked once its effect is done, and never redelivered.
    let info = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let info = feed.consumer_info("slow-feed").await.unwrap().clone();
            if info.num_ack_pending == 0 {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("acked");
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(info.delivered.stream_sequence, 1);
    assert_eq!(
        shared
            .metrics
            .events_consumed
            .with_label_values(&["slow-feed", "ok"])
            .get(),
        1
    );
    // Nothing else comes after an ack wait more.
    assert!(
        tokio::time::timeout(ack_wait * 2, seen.recv())
            .await
            .is_err(),
        "delivered again"
    );
    assert_eq!(feed.info().await.unwrap().state.messages, 1);
    shared.stop.cancel();
    consumer.stop(None);
}
