//! A shop for the gateway's tests: a real nats-server, real service processes,
//! a real gateway process, and a small real HTTP/1.1 client.

#![allow(dead_code)]

use std::{collections::HashMap, time::Duration};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::{header::HeaderMap, Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use testkit::{request_json_with_headers, workspace_bin, NatsServer, Reply, ServiceProcess};

pub const ADMIN_EMAIL: &str = "admin@shop.test";
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";
pub const PASSWORD: &str = "correct horse battery";

pub struct Shop {
    pub nats: NatsServer,
    pub client: async_nats::Client,
    data: tempfile::TempDir,
    pub services: HashMap<String, ServiceProcess>,
    pub gateway: Option<ServiceProcess>,
    /// The public API.
    pub http: Http,
    /// The gateway's admin listener: detailed /health, /ready, /metrics.
    pub admin: Http,
    admin_token: tokio::sync::OnceCell<String>,
}

impl Shop {
    /// nats-server, one instance of each of `services`, then the gateway with `gateway_env`.
    pub async fn start(services: &[&str], gateway_env: &[(&str, &str)]) -> Self {
        let nats = NatsServer::start().await.unwrap();
        let client = nats.client().await.unwrap();
        let mut shop = Self {
            nats,
            client,
            data: tempfile::tempdir().unwrap(),
            services: HashMap::new(),
            gateway: None,
            http: Http {
                addr: String::new(),
            },
            admin: Http {
                addr: String::new(),
            },
            admin_token: tokio::sync::OnceCell::new(),
        };
        for service in services {
            shop.add(service).await;
        }
        shop.start_gateway(gateway_env).await;
        shop
    }

    /// The whole shop.
    pub async fn full(gateway_env: &[(&str, &str)]) -> Self {
        Self::start(
            &["product", "user", "payment", "notification", "order"],
            gateway_env,
        )
        .await
    }

    pub async fn add(&mut self, service: &str) {
        let env: Vec<(&str, &str)> = match service {
            "user" => vec![
                ("ARGON2_MEMORY_KIB", "1024"),
                ("ARGON2_ITERATIONS", "1"),
                ("ADMIN_EMAIL", ADMIN_EMAIL),
                ("ADMIN_PASSWORD", ADMIN_PASSWORD),
            ],
            "order" => vec![("ORDER_SAGA_ACK_WAIT_SECS", "2")],
            _ => vec![],
        };
        let bin = workspace_bin(&format!("{service}-service")).unwrap();
        let dir = self.data.path().join(service);
        let process = ServiceProcess::start(&bin, &self.nats.url(), service, &dir, &env)
            .await
            .unwrap();
        if service == "user" {
            process
                .wait_for_log("admin account", Duration::from_secs(20))
                .await
                .unwrap();
        }
        self.services.insert(service.to_string(), process);
    }

    pub async fn start_gateway(&mut self, env: &[(&str, &str)]) {
        let mut all = vec![("GATEWAY_ADDR", "127.0.0.1:0")];
        all.extend_from_slice(env);
        let bin = workspace_bin("gateway").unwrap();
        let dir = self.data.path().join("gateway");
        let process = ServiceProcess::start(&bin, &self.nats.url(), "gateway-1", &dir, &all)
            .await
            .unwrap();
        self.http = Http {
            addr: process
                .ready_field("addr")
                .expect("the gateway's public address"),
        };
        self.admin = Http {
            addr: process.admin_addr.clone(),
        };
        self.gateway = Some(process);
    }

    pub fn service(&mut self, name: &str) -> &mut ServiceProcess {
        self.services.get_mut(name).expect("service started")
    }

    pub fn gateway(&self) -> &ServiceProcess {
        self.gateway.as_ref().expect("gateway started")
    }

    /// A request over NATS as the admin (as an operator with `shop req --admin`).
    pub async fn req(&self, subject: &str, payload: Value) -> Reply {
        let token = self
            .admin_token
            .get_or_init(|| async {
                shop_nats::login::login(
                    &self.client,
                    ADMIN_EMAIL,
                    ADMIN_PASSWORD,
                    Duration::from_secs(10),
                )
                .await
                .unwrap_or_else(|e| panic!("admin login over NATS: {e}"))
            })
            .await;
        self.req_as(token, subject, payload).await
    }

    /// A request over NATS carrying `token`.
    pub async fn req_as(&self, token: &str, subject: &str, payload: Value) -> Reply {
        self.req_with(subject, shop_nats::auth::bearer_headers(token), payload)
            .await
    }

    /// A request over NATS with exactly these headers.
    pub async fn req_with(
        &self,
        subject: &str,
        headers: async_nats::HeaderMap,
        payload: Value,
    ) -> Reply {
        request_json_with_headers(&self.client, subject, headers, payload.to_string())
            .await
            .unwrap_or_else(|e| panic!("{subject}: {e:#}"))
    }

    /// The data key file testkit made for `service` (`user`, `order`).
    pub fn data_key_file(&self, service: &str) -> std::path::PathBuf {
        self.data.path().join(format!("{service}-data.key"))
    }

    /// The user service's data keys (to read its bucket as a privileged test).
    pub fn user_data_keys(&self) -> shop_nats::sealed::DataKeys {
        let text = std::fs::read_to_string(self.data_key_file("user")).unwrap();
        let key = shop_nats::sealed::DataKey::parse(&text, "user-data.key").unwrap();
        shop_nats::sealed::DataKeys::new(key, None)
    }

    /// Creates a product over NATS (as an operator would).
    pub async fn product(&self, id: &str, stock: i64, price_cents: i64) {
        let reply = self
            .req("product.create", json!({"id": id, "name": format!("Product {id}"), "price_cents": price_cents, "currency": "USD", "stock": stock}))
            .await;
        assert!(reply.is_ok(), "creating {id}: {:?}", reply.error);
    }

    /// Registers `email` through the gateway and logs in: (user id, token).
    pub async fn customer(&self, email: &str) -> (String, String) {
        let registered = self
            .http
            .post(
                "/api/users",
                None,
                json!({"email": email, "password": PASSWORD, "name": "Test Customer"}),
            )
            .await;
        assert_eq!(registered.status, 201, "{registered:?}");
        let token = self.login(email, PASSWORD).await;
        (registered.json["id"].as_str().unwrap().to_string(), token)
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let login = self
            .http
            .post(
                "/api/auth/login",
                None,
                json!({"email": email, "password": password}),
            )
            .await;
        assert_eq!(login.status, 200, "{login:?}");
        login.json["token"].as_str().unwrap().to_string()
    }

    pub async fn admin_token(&self) -> String {
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Subscribes to an order's events before acting, so none is missed.
    pub async fn order_events(&self) -> async_nats::Subscriber {
        let sub = self.client.subscribe("events.order.>").await.unwrap();
        self.client.flush().await.unwrap();
        sub
    }

    /// Waits for the event that makes order `id` final; returns (order, event headers).
    pub async fn settled(
        events: &mut async_nats::Subscriber,
        id: &str,
    ) -> (Value, Option<async_nats::HeaderMap>) {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let message = events.next().await.expect("order events");
                let event: Value = serde_json::from_slice(&message.payload).unwrap();
                let order = &event["order"];
                if order["id"] == id
                    && matches!(order["status"].as_str(), Some("confirmed" | "cancelled"))
                {
                    return (order.clone(), message.headers);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("order {id} not settled within 30 s"))
    }

    /// The gateway's `/health` once `check` holds (awaited from the gateway's own
    /// log of registry changes, not guessed with sleeps).
    pub async fn health_when(&self, check: impl Fn(&Value) -> bool) -> Value {
        let gateway = self.gateway();
        let mut lines = gateway.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let health = self.admin.get("/health", None).await;
            if check(&health.json) {
                return health.json;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            assert!(!left.is_zero(), "health never matched: {}", health.json);
            let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), lines.recv()).await;
        }
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error.message` of an error body.
    pub fn message(&self) -> &str {
        self.json["error"]["message"].as_str().unwrap_or_default()
    }
}

/// A minimal HTTP/1.1 client (hyper), one connection per request.
#[derive(Debug, Clone)]
pub struct Http {
    pub addr: String,
}

impl Http {
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let stream = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.addr);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            json: serde_json::from_slice(&body).unwrap_or(Value::Null),
            body,
        }
    }

    fn auth(token: Option<&str>) -> Option<String> {
        token.map(|t| format!("Bearer {t}"))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Resp {
        let auth = Self::auth(token);
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.send(Method::GET, path, &headers, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.with_body(Method::POST, path, token, body.to_string().into_bytes())
            .await
    }

    pub async fn patch(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.with_body(Method::PATCH, path, token, body.to_string().into_bytes())
            .await
    }

    pub async fn with_body(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let auth = Self::auth(token);
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.send(method, path, &headers, Some(body)).await
    }
}
