//! Reacting to other services' events: each event becomes at most one
//! delivered message, whichever instance handles it and however often it is
//! delivered.
//!
//! Per event: catch up the local state → if `s/<event>` says it was delivered,
//! acknowledge → deliver → append `notification.sent` (subject unique per
//! notification, so only one can ever be stored) → return `Ok` (the runtime
//! acknowledges). A crash after the append is deduplicated on redelivery by any
//! instance; a crash between delivery and append delivers again: the spool
//! rewrites the same file, SMTP resends the same `Message-ID`.

use std::{sync::Arc, time::Duration};

use futures::{future::BoxFuture, FutureExt};
use shop_actors::{
    consumer::{ConsumedEvent, ConsumerSpec, EventHandler, HandleError},
    Change, Changed, EventLog,
};
use shop_nats::{clock, ServiceError};

use crate::{
    domain::{self, Notification, NotificationEvent, OrderEvent, Recipient, UserEvent},
    mailer::{DeliveryError, Mailer},
    render::{self, Email},
    settings::{Fault, NotifySettings},
    store,
};

/// The user service's stream, and the events of it this service reads.
pub const USER_STREAM: &str = "USER";
pub const USER_SUBJECTS: &[&str] = &["events.user.registered.>"];
pub const USERS_CONSUMER: &str = "notification-users";
/// The order service's stream, and the events of it this service reads.
pub const ORDER_STREAM: &str = "ORDER";
pub const ORDER_SUBJECTS: &[&str] = &["events.order.>"];
pub const ORDERS_CONSUMER: &str = "notification-orders";

/// Stream subject of one delivered notification.
pub fn sent_subject(notification_id: &str) -> String {
    format!("events.notification.sent.{notification_id}")
}

/// Stream subject of one user's recorded address.
pub fn recipient_subject(user_id: &str) -> String {
    format!("events.notification.recipient.{user_id}")
}

/// Where in the processing of an event a [`Fault`] may strike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultPoint {
    AfterDelivery,
    AfterRecord,
}

/// The event handler of both consumers: renders, delivers once, records.
pub struct Notifier {
    events: EventLog,
    mailer: Arc<dyn Mailer>,
    from: String,
    fault: Fault,
}

impl Notifier {
    pub fn new(events: EventLog, mailer: Arc<dyn Mailer>, from: String, fault: Fault) -> Self {
        Self {
            events,
            mailer,
            from,
            fault,
        }
    }

    async fn process(&self, event: &ConsumedEvent) -> Result<(), HandleError> {
        match event.stream.as_str() {
            USER_STREAM => self.on_user_event(event).await,
            ORDER_STREAM => self.on_order_event(event).await,
            other => Err(HandleError::Permanent(format!(
                "no handling for events of stream {other}"
            ))),
        }
    }

    async fn on_user_event(&self, event: &ConsumedEvent) -> Result<(), HandleError> {
        let UserEvent::Registered { user } = event.decode()? else {
            tracing::debug!(source_event = %event.event_id(), subject = %event.subject, "user event ignored");
            return Ok(());
        };
        domain::validate_user_id(&user.id).map_err(HandleError::Permanent)?;
        self.catch_up().await?;
        self.record_recipient(event, &user).await?;
        let email = render::welcome(&event.event_id(), &self.from, &user);
        self.deliver_once(event, email).await
    }

    async fn on_order_event(&self, event: &ConsumedEvent) -> Result<(), HandleError> {
        let (order, reason) = match event.decode()? {
            OrderEvent::Confirmed { order } => (order, None),
            OrderEvent::Cancelled { order, reason } => {
                let reason = reason.or(order.reason.clone());
                (order, Some(reason))
            }
            OrderEvent::Other => {
                tracing::debug!(source_event = %event.event_id(), subject = %event.subject, "order event ignored");
                return Ok(());
            }
        };
        domain::validate_user_id(&order.user_id).map_err(HandleError::Permanent)?;
        let tree = self.events.state().tree();
        let mut recipient = store::recipient(tree, &order.user_id).map_err(transient)?;
        // A repeat may have been delivered and recorded by another instance, and
        // the user's registration may have been recorded by another one just now:
        // only then is the local state worth a round trip to catch up.
        if event.delivered > 1 || recipient.is_none() {
            self.catch_up().await?;
            recipient = store::recipient(tree, &order.user_id).map_err(transient)?;
        }
        let to = domain::order_address(&order, recipient.as_ref()).ok_or_else(|| {
            HandleError::Transient(format!(
                "unknown user {}: no address in the order and no user.registered seen for it",
                order.user_id
            ))
        })?;
        let name = recipient.as_ref().and_then(|r| r.name.as_deref());
        let source = event.event_id();
        let email = match reason {
            None => render::order_confirmed(&source, &self.from, &order, to, name),
            Some(reason) => {
                render::order_cancelled(&source, &self.from, &order, reason.as_deref(), to, name)
            }
        };
        self.deliver_once(event, email).await
    }

    /// Records where `user`'s messages go, unless that is already known.
    async fn record_recipient(
        &self,
        event: &ConsumedEvent,
        user: &domain::UserInfo,
    ) -> Result<(), HandleError> {
        let recipient = Recipient {
            user_id: user.id.clone(),
            email: user.email.trim().to_string(),
            name: domain::clean_name(user.name.as_deref()),
            revision: 0,
        };
        let subject = recipient_subject(&user.id);
        let msg_id = format!("notification.recipient:{}", event.event_id());
        self.events
            .change(&subject, &event.trace, Some(msg_id), |tree| {
                let stored = store::recipient(tree, &user.id)?;
                if !domain::recipient_changed(stored.as_ref(), user) {
                    return Ok(None);
                }
                Ok(Some(Change {
                    subject: subject.clone(),
                    expected_revision: stored.map_or(0, |r| r.revision),
                    event: NotificationEvent::RecipientRecorded {
                        recipient: recipient.clone(),
                    },
                }))
            })
            .await
            .map_err(from_service_error)?;
        Ok(())
    }

    /// Delivers `email` unless the event was already delivered, then records it.
    /// The caller has caught the local state up, so a delivery recorded by
    /// another instance is seen.
    async fn deliver_once(&self, event: &ConsumedEvent, email: Email) -> Result<(), HandleError> {
        let source = event.event_id();
        if let Some(id) = store::sent(self.events.state().tree(), &source).map_err(transient)? {
            tracing::info!(notification = %id, source_event = %source, attempt = event.delivered, "already delivered; acknowledging the repeat");
            return Ok(());
        }
        self.mailer.send(&email).await.map_err(|e| match e {
            DeliveryError::Transient(reason) => HandleError::Transient(reason),
            DeliveryError::Permanent(reason) => HandleError::Permanent(reason),
        })?;
        self.fault_point(FaultPoint::AfterDelivery, event).await;

        let notification = Notification {
            id: email.id.clone(),
            user_id: email.user_id.clone(),
            kind: email.kind,
            to: email.to.clone(),
            subject: email.subject.clone(),
            created_at: clock::now_rfc3339(),
            source_event: source.clone(),
            message_id: email.message_id.clone(),
        };
        let sent = NotificationEvent::Sent { notification };
        let changed = self
            .events
            .change(&email.id, &event.trace, Some(source.clone()), |tree| {
                if store::sent(tree, &source)?.is_some() {
                    return Ok(None);
                }
                Ok(Some(Change {
                    subject: sent_subject(&email.id),
                    // One notification.sent per notification, ever, across instances.
                    expected_revision: 0,
                    event: sent.clone(),
                }))
            })
            .await
            .map_err(from_service_error)?;
        match changed {
            Changed::Appended { revision, .. } => {
                tracing::info!(notification = %email.id, user_id = %email.user_id, kind = email.kind.as_str(), source_event = %source, revision, attempt = event.delivered, "notification sent");
            }
            Changed::Duplicate { .. } | Changed::Unchanged => {
                tracing::info!(notification = %email.id, source_event = %source, "notification delivered again; it was already recorded");
            }
        }
        self.fault_point(FaultPoint::AfterRecord, event).await;
        Ok(())
    }

    async fn catch_up(&self) -> Result<(), HandleError> {
        self.events
            .catch_up()
            .await
            .map_err(|e| HandleError::Transient(format!("catching up local state: {}", e.message)))
    }

    /// Applies the configured test fault, on an event's first delivery only.
    async fn fault_point(&self, point: FaultPoint, event: &ConsumedEvent) {
        if event.delivered != 1 {
            return;
        }
        let hit = matches!(
            (self.fault, point),
            (Fault::PauseAfterDelivery, FaultPoint::AfterDelivery)
                | (
                    Fault::PauseAfterRecord | Fault::AbortAfterRecord,
                    FaultPoint::AfterRecord
                )
        );
        if !hit {
            return;
        }
        tracing::warn!(fault = ?self.fault, source_event = %event.event_id(), "fault injected");
        if self.fault == Fault::AbortAfterRecord {
            std::process::abort();
        }
        // Hang here, holding the event unacknowledged, until the process is killed.
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}

impl EventHandler for Notifier {
    fn handle(
        self: Arc<Self>,
        event: ConsumedEvent,
    ) -> BoxFuture<'static, Result<(), HandleError>> {
        async move { self.process(&event).await }.boxed()
    }
}

/// The durable consumers one instance runs; every instance shares their work.
pub fn consumers(
    settings: &NotifySettings,
    backoff: &[Duration],
    notifier: Arc<Notifier>,
) -> Vec<ConsumerSpec> {
    let spec = |durable: &str, stream: &str, subjects: &[&str]| {
        let mut spec = ConsumerSpec::new(durable, stream, subjects, notifier.clone());
        spec.max_deliver = settings.max_deliver;
        spec.backoff = backoff.to_vec();
        spec.concurrency = settings.concurrency;
        spec.ack_wait = Duration::from_secs(settings.ack_wait_secs);
        spec
    };
    vec![
        spec(USERS_CONSUMER, USER_STREAM, USER_SUBJECTS),
        spec(ORDERS_CONSUMER, ORDER_STREAM, ORDER_SUBJECTS),
    ]
}

fn transient(e: ServiceError) -> HandleError {
    HandleError::Transient(e.message)
}

/// A failed append: bad input can never succeed, anything else may later.
fn from_service_error(e: ServiceError) -> HandleError {
    if e.code == 400 {
        HandleError::Permanent(e.message)
    } else {
        HandleError::Transient(e.message)
    }
}
