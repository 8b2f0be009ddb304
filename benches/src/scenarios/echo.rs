//! `echo`: the same `{"id":...}` requests as product-get, answered by a raw
//! async-nats responder (`shop-bench echo-server`) with a reply of a product's
//! size. It does no work, so its rate is the ceiling of this machine, NATS
//! server and load generator: every other request-reply figure is read as a
//! share of it.

use std::sync::Arc;

use anyhow::Result;
use async_nats::Subject;

use super::{
    connect_clients, id_payloads, measure, NatsRequest, Options, Target, ECHO_SUBJECT, READ_PREFIX,
};
use crate::results::{Meta, ScenarioResult};

pub async fn run(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let clients = connect_clients(&target.nats_url, opts.connections, opts.timeout).await?;
    let op = Arc::new(NatsRequest {
        name: ECHO_SUBJECT,
        clients,
        subject: Subject::from(ECHO_SUBJECT),
        payloads: id_payloads(READ_PREFIX, opts.products),
        headers: None,
        timeout: opts.timeout,
    });
    let (runs, cpu) = measure(op, target, opts).await?;
    let meta = Meta {
        instances: target.instances,
        nats_sync: target.nats_sync.clone(),
        ..Meta::new("echo", opts.variant.as_deref(), ECHO_SUBJECT)
    };
    ScenarioResult::from_runs(meta, &runs, cpu)
}
