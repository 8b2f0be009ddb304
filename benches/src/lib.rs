//! `shop-bench`: the benchmark harness of the shop services: [`scenarios`]
//! under the [`load`] models, on a [`stack`] it starts, as the standard
//! [`suite`] or [`scaling`] runs, written as a [`results`] file and
//! [`report`]ed as tables.

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
