//! `mixed`: a shop's traffic, by default 70% product views (`product.get`), 20%
//! product lists, 5% logins (`user.login`, an Argon2id hash each) and 5%
//! orders (`order.create`; the reply, not the saga). Each request's kind is
//! drawn from its number, so a run is repeatable; latency is reported per kind.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::{Client, Request};
use bytes::Bytes;

use super::reads::{id_payloads, list_payloads, seed_reads};
use super::{
    connect_clients, measure, order_place, pick, request, run_id, spread, Options, Target,
};
use crate::load::{Operation, Outcome};
use crate::results::ScenarioResult;

/// Mix of the `mixed` scenario, in relative weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    pub get: u32,
    pub list: u32,
    pub login: u32,
    pub order: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            get: 70,
            list: 20,
            login: 5,
            order: 5,
        }
    }
}

impl Mix {
    /// Parses `get=70,list=20,login=5,order=5` (missing names weigh 0).
    pub fn parse(s: &str) -> Result<Self> {
        let mut mix = Mix {
            get: 0,
            list: 0,
            login: 0,
            order: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("mix entry {part:?}: expected name=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .with_context(|| format!("mix entry {part:?}: weight must be a whole number"))?;
            match name.trim() {
                "get" => mix.get = weight,
                "list" => mix.list = weight,
                "login" => mix.login = weight,
                "order" => mix.order = weight,
                other => bail!("mix entry {other:?}: use get, list, login or order"),
            }
        }
        if mix.get + mix.list + mix.login + mix.order == 0 {
            bail!("the mix {s:?} has no weight");
        }
        Ok(mix)
    }

    pub fn describe(&self) -> String {
        let Mix {
            get,
            list,
            login,
            order,
        } = self;
        format!("get={get},list={list},login={login},order={order}")
    }
}

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
    auth: async_nats::HeaderMap,
    products: Vec<String>,
    run: String,
    timeout: Duration,
}

impl Operation for Mixed {
    async fn call(&self, seq: u64) -> Outcome {
        let client = &self.clients[(seq % self.clients.len() as u64) as usize];
        let kind = kind(&self.mix, seq);
        let other = seq.rotate_left(17);
        let payload = match kind {
            Kind::Get => pick(&self.gets, other).clone(),
            Kind::List => pick(&self.lists, other).clone(),
            Kind::Login => self.login.clone(),
            Kind::Order => {
                let product = pick(&self.products, other);
                let key = format!("mixed-{}-{seq}", self.run);
                let (op, user, timeout) = (kind.name(), &self.user_id, self.timeout);
                let auth = &self.auth;
                return match order_place::create_order(
                    client, op, auth, user, product, key, timeout,
                )
                .await
                {
                    Ok((_, bytes, _)) => Outcome::ok(op, bytes),
                    Err(failed) => failed,
                };
            }
        };
        let get = Request::new().payload(payload).timeout(Some(self.timeout));
        match request(client, kind.name(), kind.name(), get).await {
            Ok(reply) => Outcome::ok(kind.name(), reply.payload.len()),
            Err(failed) => failed,
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
    let (user_id, email, password, auth) = order_place::register_user(&clients[0], &run).await?;
    let login =
        Bytes::from(serde_json::json!({ "email": email, "password": password }).to_string());
    let op = Arc::new(Mixed {
        clients,
        mix: opts.mix,
        gets: id_payloads(opts.products),
        lists: list_payloads(opts.products, opts.list_limit),
        login,
        user_id,
        auth,
        products,
        run,
        timeout: opts.timeout,
    });
    let (runs, cpu) = measure(op, target, opts).await?;
    let under_load = format!("mix {}", opts.mix.describe());
    target.result("mixed", opts.variant.as_deref(), under_load, &runs, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse() {
        assert_eq!(
            Mix::parse("get=70,list=20,login=5,order=5").unwrap(),
            Mix::default()
        );
        let m = Mix::parse("get=1").unwrap();
        assert_eq!((m.get, m.list, m.login, m.order), (1, 0, 0, 0));
        assert!(Mix::parse("get=0").is_err());
        assert!(Mix::parse("browse=3").is_err());
        assert!(Mix::parse("get=x").is_err());
    }

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
