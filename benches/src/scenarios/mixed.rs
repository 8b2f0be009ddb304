//! `mixed`: a shop's traffic, by default 70% product views (`product.get`), 20%
//! product lists, 5% logins (`user.login`, an Argon2id hash each) and 5%
//! orders (`order.create`; the reply, not the saga). Each request's kind is
//! drawn from its number, so a run is repeatable; latency is reported per kind.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use async_nats::{Client, Request};
use bytes::Bytes;

use super::{
    connect_clients, id_payloads, measure, order_place, product_get::seed_reads, product_list,
    run_id, spread, Mix, Options, Target, READ_PREFIX,
};
use crate::load::{Operation, Outcome};
use crate::nats;
use crate::results::{Meta, ScenarioResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Get,
    List,
    Login,
    Order,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Get => "product.get",
            Kind::List => "product.list",
            Kind::Login => "user.login",
            Kind::Order => "order.create",
        }
    }
}

fn kind(mix: &Mix, seq: u64) -> Kind {
    let total = u64::from(mix.get + mix.list + mix.login + mix.order).max(1);
    let r = spread(seq) % total;
    let (get, list, login) = (
        u64::from(mix.get),
        u64::from(mix.get + mix.list),
        u64::from(mix.get + mix.list + mix.login),
    );
    if r < get {
        Kind::Get
    } else if r < list {
        Kind::List
    } else if r < login {
        Kind::Login
    } else {
        Kind::Order
    }
}

struct Mixed {
    clients: Vec<Client>,
    mix: Mix,
    gets: Vec<Bytes>,
    lists: Vec<Bytes>,
    login: Bytes,
    user_id: String,
    products: Vec<String>,
    run: String,
    timeout: Duration,
}

impl Mixed {
    async fn request(&self, client: &Client, kind: Kind, payload: Bytes) -> Outcome {
        let request = Request::new().payload(payload).timeout(Some(self.timeout));
        match nats::reply_outcome(client.send_request(kind.name(), request).await) {
            Ok(reply) => Outcome::ok(kind.name(), reply.payload.len()),
            Err(e) => Outcome::err(kind.name(), e),
        }
    }
}

impl Operation for Mixed {
    async fn call(&self, seq: u64) -> Outcome {
        let client = &self.clients[(seq % self.clients.len() as u64) as usize];
        let pick = |n: usize| (spread(seq.rotate_left(17)) % n as u64) as usize;
        match kind(&self.mix, seq) {
            Kind::Get => {
                self.request(client, Kind::Get, self.gets[pick(self.gets.len())].clone())
                    .await
            }
            Kind::List => {
                self.request(
                    client,
                    Kind::List,
                    self.lists[pick(self.lists.len())].clone(),
                )
                .await
            }
            Kind::Login => self.request(client, Kind::Login, self.login.clone()).await,
            Kind::Order => {
                let product = &self.products[pick(self.products.len())];
                let key = format!("mixed-{}-{seq}", self.run);
                match order_place::create_order(client, &self.user_id, product, key, self.timeout)
                    .await
                {
                    Ok((_, bytes, _)) => Outcome::ok(Kind::Order.name(), bytes),
                    Err(e) => Outcome::err(Kind::Order.name(), e),
                }
            }
        }
    }

    fn label(&self, seq: u64) -> &'static str {
        kind(&self.mix, seq).name()
    }
}

pub async fn run(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let clients = connect_clients(&target.nats_url, opts.connections, opts.timeout).await?;
    seed_reads(&clients[0], opts.products).await?;
    let products = order_place::seed_order_products(&clients[0]).await?;
    let run = run_id();
    let (user_id, email, password) = order_place::register_user(&clients[0], &run).await?;
    let login =
        Bytes::from(serde_json::json!({ "email": email, "password": password }).to_string());
    let op = Arc::new(Mixed {
        clients,
        mix: opts.mix,
        gets: id_payloads(READ_PREFIX, opts.products),
        lists: product_list::payloads(opts.products, opts.list_limit),
        login,
        user_id,
        products,
        run,
        timeout: opts.timeout,
    });
    let (runs, cpu) = measure(op, target, opts).await?;
    let meta = Meta {
        instances: target.instances,
        nats_sync: target.nats_sync.clone(),
        ..Meta::new(
            "mixed",
            opts.variant.as_deref(),
            format!("mix {}", opts.mix.describe()),
        )
    };
    ScenarioResult::from_runs(meta, &runs, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_weights() {
        let mix = Mix::default();
        let mut counts = [0u32; 4];
        for seq in 0..100_000 {
            counts[kind(&mix, seq) as usize] += 1;
        }
        let [get, list, login, order] = counts;
        assert!((69_000..71_000).contains(&get), "{counts:?}");
        assert!((19_000..21_000).contains(&list), "{counts:?}");
        assert!((4_500..5_500).contains(&login), "{counts:?}");
        assert!((4_500..5_500).contains(&order), "{counts:?}");
        let only_gets = Mix::parse("get=1").unwrap();
        assert!((0..1000).all(|s| kind(&only_gets, s) == Kind::Get));
    }
}
