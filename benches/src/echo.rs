//! Raw async-nats echo responder, the baseline: a queue subscription, an inline publish.

use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;

use crate::nats;

/// Serves `subject`, replying with the request payload or `reply_bytes` bytes.
pub async fn run(url: &str, subject: &str, queue: &str, reply_bytes: Option<usize>) -> Result<()> {
    let fixed = reply_bytes.map(|n| bytes::Bytes::from(vec![b'x'; n]));
    let client = nats::connect(url, "shop-bench-echo", Duration::from_secs(5)).await?;
    let sub = client.queue_subscribe(subject.to_owned(), queue.to_owned());
    let mut sub =
        (sub.await).with_context(|| format!("subscribing to {subject} (queue {queue})"))?;
    // Make sure the server has registered the subscription before announcing readiness.
    client.flush().await.context("flushing subscription")?;
    eprintln!("echo-server: serving {subject} (queue {queue}) on {url}");

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut served = 0u64;
    loop {
        let msg = tokio::select! {
            biased;
            stop = &mut shutdown => break stop?,
            msg = sub.next() => msg,
        };
        let Some(msg) = msg else {
            eprintln!("echo-server: subscription closed");
            break;
        };
        let Some(reply) = msg.reply else { continue };
        let payload = fixed.clone().unwrap_or(msg.payload);
        let published = client.publish(reply, payload).await;
        published.context("publishing echo reply")?;
        served += 1;
    }
    // Best effort, bounded: flush waits for a reconnect if the server is gone.
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    eprintln!("echo-server: stopped after {served} replies");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing SIGTERM handler")?;
    tokio::select! {
        res = tokio::signal::ctrl_c() => res.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}
