//! `shop-bench`: [`scenarios`] under [`load`] models on a [`stack`], [`results`] and [`report`]s.

pub mod appends;
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
