//! `shop-bench`: the benchmark harness of the shop services.
//!
//! - [`scenarios`]: what is measured (echo, product-get, product-list,
//!   stock-contention, gateway-get, order-place, mixed), one file each.
//! - [`load`]: the two load models (closed loop: N requests in flight; open loop:
//!   a fixed arrival rate, latency from the intended send time) and [`stats`]:
//!   HDR histograms and their percentiles.
//! - [`stack`]: starts what a run needs (nats-server, services, echo responder,
//!   gateway, Express baseline) and stops it again; [`cpu`] samples what each
//!   process used during a measurement.
//! - [`suite`] (the standard set) and [`scaling`] (1, 2, 4 instances).
//! - [`results`] (the JSON results file), [`table`] (terminal and markdown
//!   tables), [`compare`] (ratios against an older results file), [`markdown`]
//!   (rewrites the generated tables in BENCHMARKS.md).

pub mod compare;
pub mod cpu;
pub mod duration;
pub mod echo;
pub mod http;
pub mod load;
pub mod machine;
pub mod markdown;
pub mod nats;
pub mod results;
pub mod scaling;
pub mod scenarios;
pub mod seed;
pub mod stack;
pub mod stats;
pub mod suite;
pub mod table;
pub mod targets;
