//! Handler dispatch: a `product.get` through its declared route (decode into
//! `GetProduct`, validate, sled read, stored reply bytes), and through the
//! runtime's whole dispatch path (`Dispatcher::dispatch`: endpoint lookup,
//! metrics, access check, route, reply published to a real nats-server).
//!
//! Needs nats-server (`NATS_SERVER_BIN`, `.tools/bin/nats-server` or PATH):
//! a service cannot be built without a connection.

use std::hint::black_box;
use std::sync::Arc;

use async_nats::{Message, Subject};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use product_service::domain::ProductEvent;
use product_service::endpoints::Products;
use product_service::store::ProductProjection;
use product_service::{declaration, SERVICE, STREAM};
use shop_actors::dispatch::Dispatcher;
use shop_actors::metrics::Metrics;
use shop_actors::pool::WorkerPool;
use shop_actors::responder::{Endpoints, Responder};
use shop_actors::route::Dispatch;
use shop_actors::state::StateShared;
use shop_actors::{EventLog, Request, Store};
use shop_nats::{Encoding, NatsConfig, TraceContext};

mod common;

const PRODUCTS: usize = 1000;

/// The products, created in the store as the state actor would apply them.
fn seed(store: &Store) {
    let created = (0..PRODUCTS).map(|i| ProductEvent::Created {
        product: common::product(i),
    });
    common::apply(store.tree(), &common::encode(created), 1);
}

fn get_payload(i: usize) -> Bytes {
    Bytes::from(format!("{{\"id\":\"bench-{:04}\"}}", i % PRODUCTS))
}

fn dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, get, dispatcher) = rt.block_on(async {
        let server = testkit::NatsServer::start_without_auth()
            .await
            .expect("nats-server");
        let config = NatsConfig {
            url: server.url(),
            ..NatsConfig::default()
        };
        let connection = shop_nats::connect(&config, SERVICE, "bench-product")
            .await
            .expect("connect");
        let js = async_nats::jetstream::new(connection.client.clone());
        let metrics = Metrics::new(SERVICE, "bench").expect("metrics");
        let store = Store::open(dir.path(), SERVICE).expect("store");
        seed(&store);
        let shared = StateShared::new(
            js.clone(),
            STREAM.to_string(),
            store,
            Arc::new(ProductProjection),
            metrics.clone(),
            connection.clone(),
        )
        .expect("state");
        let state = shared.handle();
        let products = Arc::new(Products::new(
            EventLog::new(js, shared, vec!["events.product.*".into()]),
            128,
        ));
        let declaration = declaration();
        let manifest = declaration.manifest();
        let routes = declaration.bind(products, state);
        let get = manifest
            .endpoints
            .iter()
            .position(|e| e.subject == "product.get")
            .map(|i| routes[i].clone())
            .expect("product.get is declared");
        let responder = Arc::new(Responder::new(
            connection.client.clone(),
            Endpoints::new(SERVICE, manifest.endpoints, &metrics),
        ));
        let pool = WorkerPool::start(responder.clone(), 4, 16, metrics)
            .await
            .expect("pool");
        let dispatcher = Dispatcher::new(responder, routes, pool, 1024 * 1024);
        (server, get, dispatcher)
    });

    let requests: Vec<Request> = (0..PRODUCTS)
        .map(|i| Request {
            subject: Subject::from("product.get"),
            headers: None,
            payload: get_payload(i),
            encoding: Encoding::Json,
            trace: TraceContext::new_root(),
            caller: None,
        })
        .collect();
    let Dispatch::Now(Ok(reply)) = get(requests[7].clone()) else {
        panic!("product.get is answered inline");
    };
    assert!(reply.starts_with(b"{\"id\":\"bench-0007\""), "{reply:?}");

    let mut group = c.benchmark_group("dispatch");
    let mut i = 0usize;
    group.bench_function("product.get route inline", |b| {
        b.iter(|| {
            i = (i + 1) % PRODUCTS;
            match get(black_box(requests[i].clone())) {
                Dispatch::Now(result) => result.is_ok(),
                Dispatch::Later(_) => false,
            }
        })
    });
    let messages: Vec<Message> = (0..PRODUCTS)
        .map(|i| Message {
            subject: Subject::from("product.get"),
            reply: Some(Subject::from("_INBOX.shop-bench.dispatch")),
            payload: get_payload(i),
            headers: None,
            status: None,
            description: None,
            length: 0,
        })
        .collect();
    let mut j = 0usize;
    group.bench_function("runtime dispatch product.get (reply to nats-server)", |b| {
        b.to_async(&rt).iter(|| {
            j = (j + 1) % PRODUCTS;
            dispatcher.dispatch(messages[j].clone())
        })
    });
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
