//! `shop-bench`: [`scenarios`] under the [`load`] models, on a [`stack`] it starts,
//! as the [`suite`] or [`scaling`] runs, written as [`results`] and [`report`]ed.

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
