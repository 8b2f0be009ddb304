//! `shop-bench`: the benchmark harness of the shop services.
//!
//! - [`scenarios`]: what is measured (echo, product-get, product-list,
//!   stock-contention, gateway-get, order-place, mixed).
//! - [`load`]: the two load models (closed loop: N requests in flight; open loop:
//!   a fixed arrival rate, latency from the intended send time) and [`stats`]:
//!   HDR histograms and their percentiles.
//! - [`stack`]: starts what a run needs (nats-server, services, echo responder,
//!   gateway, Express baseline) through `shop-process` and stops it again;
//!   [`cpu`] samples what each process used during a measurement.
//! - [`suite`] (the standard set) and [`scaling`] (1, 2, 4 instances).
//! - [`results`] (the JSON results file and the targets checked in it) and
//!   [`report`] (terminal and markdown tables, `--compare`, the generated
//!   tables of BENCHMARKS.md).

pub mod cpu;
pub mod echo;
pub mod load;
pub mod machine;
pub mod nats;
pub mod report;
pub mod results;
pub mod scaling;
pub mod scenarios;
pub mod seed;
pub mod stack;
pub mod stats;
pub mod suite;
