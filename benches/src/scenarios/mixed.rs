//! `mixed`: a shop's traffic, each request's kind drawn from its number (repeatable).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::{Client, Request};
use bytes::Bytes;

use super::reads::{id_payloads, list_payloads, seed_reads};
use super::{connect, measure, order_place, pick, request, run_id, spread};
use super::{Options, Target};
use crate::load::{Operation, Outcome};
use crate::results::{Meta, ScenarioResult};

/// The kinds of request of a mix: each one's name in `--mix`, and its subject.
const KINDS: [(&str, &str); 4] = [
    ("get", "product.get"),
    ("list", "product.list"),
    ("login", "user.login"),
    ("order", "order.create"),
];

/// Mix of the `mixed` scenario: relative weights of the [`KINDS`], in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix(pub [u32; 4]);

impl Default for Mix {
    fn default() -> Self {
        Mix([70, 20, 5, 5])
    }
}

impl Mix {
    /// Parses `get=70,list=20,login=5,order=5` (missing names weigh 0).
    pub fn parse(s: &str) -> Result<Self> {
        let mut weights = [0; 4];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("mix entry {part:?}: expected name=weight"))?;
            let Some(kind) = KINDS.iter().position(|(n, _)| *n == name.trim()) else {
                bail!("mix entry {part:?}: use get, list, login or order");
            };
            weights[kind] = (weight.trim().parse())
                .with_context(|| format!("mix entry {part:?}: weight must be a whole number"))?;
        }
        if weights.iter().sum::<u32>() == 0 {
            bail!("the mix {s:?} has no weight");
        }
        Ok(Mix(weights))
    }

    /// `get=70,list=20,login=5,order=5`.
    pub fn describe(&self) -> String {
        let parts = KINDS.iter().zip(self.0);
        let parts = parts.map(|((name, _), weight)| format!("{name}={weight}"));
        parts.collect::<Vec<_>>().join(",")
    }

    /// The kind of request `seq` (an index into [`KINDS`]), by the weights.
    fn kind(&self, seq: u64) -> usize {
        let total: u64 = self.0.iter().map(|w| u64::from(*w)).sum();
        let mut r = spread(seq) % total.max(1);
        for (kind, weight) in self.0.iter().map(|w| u64::from(*w)).enumerate() {
            if r < weight {
                return kind;
            }
            r -= weight;
        }
        KINDS.len() - 1
    }
}

struct Mixed {
    client: Client,
    mix: Mix,
    /// Payloads of each kind but the order, taken in turn.
    payloads: [Vec<Bytes>; 3],
    user: order_place::User,
    products: Vec<String>,
    run: String,
    timeout: Duration,
}

impl Operation for Mixed {
    async fn call(&self, seq: u64) -> Outcome {
        let client = &self.client;
        let kind = self.mix.kind(seq);
        let op = KINDS[kind].1;
        let other = seq.rotate_left(17);
        let Some(payloads) = self.payloads.get(kind) else {
            let product = pick(&self.products, other);
            let key = format!("mixed-{}-{seq}", self.run);
            let created =
                order_place::create_order(client, op, &self.user, product, key, self.timeout);
            return match created.await {
                Ok((_, bytes, _)) => Outcome::ok(op, bytes),
                Err(failed) => failed,
            };
        };
        let payload = pick(payloads, other).clone();
        let req = Request::new().payload(payload).timeout(Some(self.timeout));
        match request(client, op, op, req).await {
            Ok(reply) => Outcome::ok(op, reply.payload.len()),
            Err(failed) => failed,
        }
    }

    fn label(&self, seq: u64) -> &'static str {
        KINDS[self.mix.kind(seq)].1
    }
}

pub async fn run(target: &Target, opts: &Options) -> Result<ScenarioResult> {
    let client = connect(target, opts).await?;
    seed_reads(&client, opts.products).await?;
    let products = order_place::seed_order_products(&client).await?;
    let run = run_id();
    let user = order_place::register_user(&client, &run).await?;
    let op = Arc::new(Mixed {
        client,
        mix: opts.mix,
        payloads: [
            id_payloads(opts.products),
            list_payloads(opts.products, opts.list_limit),
            vec![user.login.clone()],
        ],
        user,
        products,
        run,
        timeout: opts.timeout,
    });
    let under_load = format!("mix {}", opts.mix.describe());
    let meta = Meta::new("mixed", opts.variant.as_deref(), under_load);
    measure(op, target, opts, meta).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse() {
        let default = Mix::parse("get=70,list=20,login=5,order=5").unwrap();
        assert_eq!(default, Mix::default());
        assert_eq!(default.describe(), "get=70,list=20,login=5,order=5");
        assert_eq!(Mix::parse("get=1").unwrap(), Mix([1, 0, 0, 0]));
        for wrong in ["get=0", "browse=3", "get=x", "get"] {
            assert!(Mix::parse(wrong).is_err(), "{wrong}");
        }
    }

    #[test]
    fn kinds_follow_the_weights() {
        let mix = Mix::default();
        let mut counts = [0u32; 4];
        for seq in 0..100_000 {
            counts[mix.kind(seq)] += 1;
        }
        let [get, list, login, order] = counts;
        assert!((69_000..71_000).contains(&get), "{counts:?}");
        assert!((19_000..21_000).contains(&list), "{counts:?}");
        assert!((4_500..5_500).contains(&login), "{counts:?}");
        assert!((4_500..5_500).contains(&order), "{counts:?}");
        let only_gets = Mix([1, 0, 0, 0]);
        assert!((0..1000).all(|s| only_gets.kind(s) == 0));
    }
}
