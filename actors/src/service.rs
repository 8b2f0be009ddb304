//! Running a service: start-up, serving and graceful shutdown, in one place.

use std::{
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use async_nats::{
    jetstream::{self, stream},
    Client,
};
use futures::FutureExt;
use ractor::{Actor, ActorRef};
use shop_nats::{
    auth::Jwks,
    discovery::{InstanceInfo, Registry},
    jetstream::ensure_stream,
    verifier::TokenVerifier,
    CallOptions, ServiceClient,
};
use tokio::sync::{mpsc, Mutex};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    admin::{self, AdminState, ConsumerRef},
    config::RuntimeConfig,
    consumer::{ConsumerActor, ConsumerShared, ConsumerSpec, DEADLETTER_STREAM},
    declaration::Declaration,
    dispatch::Dispatcher,
    endpoint::{EndpointActor, EndpointArgs},
    eventlog::EventLog,
    metrics::Metrics,
    pool::WorkerPool,
    registry::{self, RegistryActor, RegistryArgs},
    reply::ReplyGuard,
    responder::{Endpoints, Responder},
    srv::{SrvActor, SrvArgs, SrvIdentity},
    state::{StateActor, StateHandle, StateShared},
    store::Store,
    supervisor::{ChildSpec, RestartPolicy, ServiceSupervisor, SupervisorArgs, SupervisorMsg},
    telemetry,
    telemetry_metrics::TelemetryMetrics,
};

/// What a service plugs into the runtime once its state has caught up: its
/// own state (handed to every handler) and the handlers of the consumers its
/// declaration names.
pub struct Wiring<S> {
    pub service: Arc<S>,
    pub consumers: Vec<ConsumerSpec>,
}

impl<S> Wiring<S> {
    pub fn new(service: impl Into<Arc<S>>) -> Self {
        Self {
            service: service.into(),
            consumers: Vec::new(),
        }
    }

    pub fn with_consumer(mut self, consumer: ConsumerSpec) -> Self {
        self.consumers.push(consumer);
        self
    }
}

/// What a handler gets to work with.
pub struct ServiceContext {
    pub nats: Client,
    pub js: jetstream::Context,
    pub events: EventLog,
    pub state: StateHandle,
    pub client: ServiceClient,
    pub instance_id: String,
    pub config: RuntimeConfig,
    /// This instance's metrics, for series of the service's own
    /// ([`Metrics::counter_vec`]); served on `/metrics` with the runtime's.
    pub metrics: Metrics,
}

/// Runs the service `declaration` describes until SIGTERM/SIGINT. `wire`
/// builds the service's state and its consumers' handlers once the local state
/// has caught up (it may do async set-up, e.g. open a key-value bucket).
///
/// Runs until SIGTERM/SIGINT (then drains and returns `Ok`) or until
/// its supervisor gives up (then returns `Err`, and `main` should exit non-zero).
///
/// Telemetry ([`crate::telemetry`]: span export, log publishing) starts as soon
/// as the service is connected, and is flushed last.
pub async fn run<S, F, Fut>(
    declaration: Declaration<S>,
    config: RuntimeConfig,
    wire: F,
) -> anyhow::Result<()>
where
    S: Send + Sync + 'static,
    F: FnOnce(ServiceContext) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Wiring<S>>>,
{
    declaration
        .check()
        .map_err(|e| anyhow::anyhow!("invalid declaration: {e}"))?;
    let instance_id = config.instance_id()?;
    config.reply_prefix()?;
    let mut telemetry = None;
    let result = serve(declaration, config, instance_id, wire, &mut telemetry).await;
    if let Err(e) = &result {
        tracing::error!(error = format!("{e:#}"), "service stopped with an error");
    }
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    result
}

async fn serve<S, F, Fut>(
    spec: Declaration<S>,
    config: RuntimeConfig,
    instance_id: String,
    wire: F,
    telemetry: &mut Option<telemetry::TelemetryGuard>,
) -> anyhow::Result<()>
where
    S: Send + Sync + 'static,
    F: FnOnce(ServiceContext) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Wiring<S>>>,
{
    let stream = spec
        .stream
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{} declares no stream", spec.name))?;
    let started = Instant::now();
    let started_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let metrics = Metrics::new(spec.name, &instance_id)?;
    let telemetry_metrics = TelemetryMetrics::new(spec.name, &instance_id)?;
    tracing::info!(service = spec.name, instance_id, nats_url = %config.nats.url, data_dir = %config.data_dir.display(), "starting");

    let connection = shop_nats::connect(
        &config.nats,
        spec.name,
        &format!("{}-{instance_id}", spec.name),
    )
    .await?;
    let nats = connection.client.clone();
    *telemetry = Some(telemetry::start(
        spec.name,
        &instance_id,
        spec.version,
        &nats,
    )?);
    let js = jetstream::new(nats.clone());
    let store = Store::open(&config.data_dir, spec.name)?;
    ensure_stream(
        &js,
        stream::Config {
            name: stream.name.to_string(),
            description: Some(format!(
                "{} events: the service's source of truth",
                spec.name
            )),
            subjects: stream.subjects.iter().map(|s| s.to_string()).collect(),
            storage: stream::StorageType::File,
            num_replicas: config.js_replicas,
            duplicate_window: Duration::from_secs(120),
            allow_direct: true,
            ..Default::default()
        },
    )
    .await?;
    let registry = Registry::open_replicated(&js, config.js_replicas).await?;

    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel();
    let (supervisor, supervisor_done) = Actor::spawn(
        None,
        ServiceSupervisor,
        SupervisorArgs {
            policy: RestartPolicy::default(),
            metrics: metrics.clone(),
            fatal: fatal_tx,
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting supervisor: {e}"))?;

    // State first: endpoints must not answer from a store that is still replaying.
    let state_shared = StateShared::new(
        js.clone(),
        stream.name.to_string(),
        store.clone(),
        stream.projection.clone(),
        metrics.clone(),
        connection.clone(),
    )?;
    {
        let shared = state_shared.clone();
        supervise(&supervisor, "state", StateActor, move || shared.clone()).await?;
    }
    tokio::spawn(state_shared.clone().flush_loop());
    let state = state_shared.handle();
    let last = state_shared.stream_last_sequence().await?;
    let catch_up_started = Instant::now();
    tokio::select! {
        caught_up = state.wait_for(last, Duration::from_secs(600)) => caught_up?,
        reason = fatal_rx.recv() => anyhow::bail!("failed while catching up: {}", reason.unwrap_or_default()),
    }
    tracing::info!(
        revision = last,
        elapsed_ms = catch_up_started.elapsed().as_millis() as u64,
        "state caught up"
    );

    let publishes = spec.publishes.iter().map(|s| s.to_string()).collect();
    let events = EventLog::new(js.clone(), state_shared.clone(), publishes);
    let client = ServiceClient::new(nats.clone())
        .calling_only(&spec.calls)
        .as_service(spec.name);
    let verifier = spec
        .verifies_tokens()
        .then(|| Arc::new(token_verifier(client.clone())));
    let Wiring { service, consumers } = wire(ServiceContext {
        nats: nats.clone(),
        js: js.clone(),
        events,
        state: state.clone(),
        client,
        instance_id: instance_id.clone(),
        config: config.clone(),
        metrics: metrics.clone(),
    })
    .await?;
    check_consumers(&spec, &consumers)?;
    let responder = Arc::new(Responder::new(
        nats.clone(),
        Endpoints::new(
            spec.name,
            spec.endpoints.iter().map(|e| e.manifest()).collect(),
            &metrics,
        ),
    ));
    let pool = WorkerPool::start(
        responder.clone(),
        config.workers,
        config.queue_depth,
        metrics.clone(),
    )
    .await?;
    let routes = spec.bind(service, state.clone());
    let replies = Arc::new(ReplyGuard::new(
        config.reply_prefix()?,
        metrics.replies_refused.clone(),
    ));
    let mut dispatcher =
        Dispatcher::new(responder.clone(), routes, pool.clone(), config.max_payload)
            .with_replies(replies.clone());
    if let Some(verifier) = &verifier {
        dispatcher = dispatcher.with_verifier(verifier.clone());
    }
    let dispatcher = Arc::new(dispatcher);
    let drain = CancellationToken::new();
    let tracker = TaskTracker::new();
    for i in 0..config.endpoint_actor_count() {
        let (nats, dispatcher, drain, tracker) = (
            nats.clone(),
            dispatcher.clone(),
            drain.clone(),
            tracker.clone(),
        );
        supervise(
            &supervisor,
            &format!("endpoint-{i}"),
            EndpointActor,
            move || EndpointArgs {
                nats: nats.clone(),
                dispatcher: dispatcher.clone(),
                drain: drain.clone(),
                tracker: tracker.clone(),
            },
        )
        .await?;
    }
    let identity = SrvIdentity {
        name: spec.name,
        id: instance_id.clone(),
        version: spec.version,
        description: spec.description,
        started: started_at.clone(),
    };
    {
        let (nats, responder, drain) = (nats.clone(), responder.clone(), drain.clone());
        supervise(&supervisor, "srv", SrvActor, move || SrvArgs {
            nats: nats.clone(),
            stop: drain.clone(),
            identity: identity.clone(),
            responder: responder.clone(),
            replies: replies.clone(),
        })
        .await?;
    }

    let consumers_stop = CancellationToken::new();
    let consumers_tracker = TaskTracker::new();
    if !consumers.is_empty() {
        ensure_stream(
            &js,
            stream::Config {
                name: DEADLETTER_STREAM.to_string(),
                description: Some(
                    "events that failed their last attempt, with the reason".to_string(),
                ),
                subjects: vec!["deadletter.>".to_string()],
                storage: stream::StorageType::File,
                num_replicas: config.js_replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            },
        )
        .await?;
    }
    let consumer_refs: Vec<ConsumerRef> = consumers
        .iter()
        .map(|c| ConsumerRef {
            durable: c.durable.clone(),
            stream: c.stream.clone(),
        })
        .collect();
    for consumer in consumers {
        let shared = Arc::new(ConsumerShared {
            spec: consumer,
            js: js.clone(),
            metrics: metrics.clone(),
            stop: consumers_stop.clone(),
            tracker: consumers_tracker.clone(),
        });
        let name = format!("consumer-{}", shared.spec.durable);
        supervise(&supervisor, &name, ConsumerActor, move || shared.clone()).await?;
    }

    let ready = Arc::new(AtomicBool::new(false));
    let admin_stop = CancellationToken::new();
    let admin_addr = admin::serve(
        config.admin_addr,
        Arc::new(AdminState {
            service: spec.name,
            instance_id: instance_id.clone(),
            version: spec.version,
            started,
            nats: nats.clone(),
            state: state_shared.clone(),
            metrics: metrics.clone(),
            ready: ready.clone(),
            consumers: consumer_refs,
            telemetry: telemetry_metrics,
        }),
        admin_stop.clone(),
    )
    .await?;

    // Subscriptions must be live on the server before the instance announces itself.
    nats.flush().await?;
    let info = InstanceInfo {
        service: spec.name.to_string(),
        instance_id: instance_id.clone(),
        version: spec.version.to_string(),
        started_at,
        endpoints: responder.endpoints.subjects(),
        admin_addr: Some(admin_addr.to_string()),
        host: crate::process::hostname(),
        pid: std::process::id(),
        nats_server: None,
    };
    let heartbeat_stopped = Arc::new(Mutex::new(false));
    {
        let (registry, info, stopped) = (registry.clone(), info.clone(), heartbeat_stopped.clone());
        let nats = nats.clone();
        supervise(&supervisor, "registry", RegistryActor, move || {
            RegistryArgs {
                nats: nats.clone(),
                registry: registry.clone(),
                info: info.clone(),
                stopped: stopped.clone(),
            }
        })
        .await?;
    }
    if let Some(verifier) = verifier {
        tokio::spawn(refresh_keys(
            verifier,
            Duration::from_secs(config.jwks_refresh_secs.max(1)),
            drain.clone(),
        ));
    }
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    tracing::info!(
        service = spec.name,
        instance_id,
        admin_addr = %admin_addr,
        revision = state.applied(),
        endpoint_actors = config.endpoint_actor_count(),
        workers = config.workers,
        "service ready"
    );

    let fatal = tokio::select! {
        signal = crate::process::shutdown_signal() => { tracing::info!(signal, "shutting down"); None }
        reason = fatal_rx.recv() => Some(reason.unwrap_or_else(|| "supervisor stopped".to_string())),
    };

    // Drain: leave the registry, stop taking requests, finish what was taken.
    let deadline = Instant::now() + config.shutdown_timeout();
    ready.store(false, std::sync::atomic::Ordering::SeqCst);
    supervisor.cast(SupervisorMsg::ShuttingDown)?;
    registry::deregister(&registry, &info, &heartbeat_stopped).await;
    drain.cancel();
    tracker.close();
    if tokio::time::timeout_at(deadline.into(), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("endpoint actors did not drain before the deadline");
    }
    if !pool
        .wait_idle(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        tracing::warn!(
            busy = pool.busy(),
            "in-flight work did not finish before the deadline"
        );
    }
    state_shared.stop.cancel();
    pool.stop();
    supervisor
        .stop_children_and_wait(None, Some(Duration::from_secs(5)))
        .await;
    supervisor.stop(None);
    let _ = supervisor_done.await;
    store.flush().await?;
    // With the server gone, a flush would wait for a reconnection that may never come.
    match tokio::time::timeout(FINAL_FLUSH_TIMEOUT, nats.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "flushing nats connection"),
        Err(_) => tracing::warn!(
            timeout_ms = FINAL_FLUSH_TIMEOUT.as_millis() as u64,
            "nats connection not flushed: the server is unreachable"
        ),
    }
    admin_stop.cancel();
    match fatal {
        None => {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "stopped cleanly"
            );
            Ok(())
        }
        Some(reason) => anyhow::bail!("service failed: {reason}"),
    }
}

/// A verifier of users' tokens with the keys of `user.keys`, fetched through
/// the service's own client (so with its timeout and breaker).
fn token_verifier(client: ServiceClient) -> TokenVerifier {
    TokenVerifier::new(Arc::new(move || {
        let client = client.clone();
        async move {
            let options = CallOptions::default()
                .idempotent()
                .timeout(Duration::from_secs(2));
            client
                .call::<_, Jwks>(
                    crate::declaration::KEYS_SUBJECT,
                    &serde_json::json!({}),
                    options,
                    None,
                )
                .await
        }
        .boxed()
    }))
}

/// Fetches the token keys at start (the user service may not be up yet:
/// then the first token fetches them) and every `every`, until `stop`.
async fn refresh_keys(verifier: Arc<TokenVerifier>, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = verifier.refresh().await {
                    tracing::debug!(error = %e, "token keys not fetched; fetched again when a token needs them");
                }
            }
            _ = prune.tick() => verifier.prune(),
            _ = stop.cancelled() => return,
        }
    }
}

/// Starts `actor` under the supervisor, which restarts it (with fresh `args()`) when it dies.
async fn supervise<A, F>(
    supervisor: &ActorRef<SupervisorMsg>,
    name: &str,
    actor: A,
    args: F,
) -> anyhow::Result<()>
where
    A: Actor + Clone + Sync,
    F: Fn() -> A::Arguments + Send + Sync + 'static,
{
    let spec = ChildSpec {
        name: name.to_string(),
        start: Arc::new(move |sup| {
            let (actor, args) = (actor.clone(), args());
            async move {
                Actor::spawn_linked(None, actor, args, sup)
                    .await
                    .map(|(child, _)| child.get_cell())
                    .map_err(|e| e.to_string())
            }
            .boxed()
        }),
    };
    let result = supervisor
        .call(
            |reply| SupervisorMsg::Start(spec, reply),
            Some(Duration::from_secs(30)),
        )
        .await
        .map_err(|e| anyhow::anyhow!("starting {name}: {e}"))?;
    match result {
        ractor::rpc::CallResult::Success(Ok(())) => Ok(()),
        ractor::rpc::CallResult::Success(Err(e)) => anyhow::bail!("starting {name}: {e}"),
        other => anyhow::bail!("starting {name}: supervisor did not answer ({other:?})"),
    }
}

/// The consumers wired at start-up must be the ones declared: same durable
/// names, streams and filters.
fn check_consumers<S>(spec: &Declaration<S>, wired: &[ConsumerSpec]) -> anyhow::Result<()> {
    let mut declared: Vec<_> = spec
        .consumes
        .iter()
        .map(|c| (c.durable.clone(), c.stream.clone(), c.filters.clone()))
        .collect();
    let mut actual: Vec<_> = wired
        .iter()
        .map(|c| {
            (
                c.durable.clone(),
                c.stream.clone(),
                c.filter_subjects.clone(),
            )
        })
        .collect();
    declared.sort();
    actual.sort();
    anyhow::ensure!(
        declared == actual,
        "{}: the consumers wired {actual:?} are not the ones declared {declared:?}",
        spec.name
    );
    Ok(())
}

/// How long a stopping instance waits to flush what it published last.
const FINAL_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
