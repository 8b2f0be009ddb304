//! CPU used by each process during a measurement window, from `/proc/<pid>/stat`
//! (Linux). With the load generator, nats-server and the services on the same
//! cores, this says which of them limits a figure.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::load::Schedule;

/// A process to account for, under a role such as `nats-server` or `product`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub role: String,
    pub pid: u32,
}

/// CPU a role used in the window: `cores` = CPU seconds / wall seconds
/// (1.0 = one core busy the whole time).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CpuUse {
    pub role: String,
    pub processes: usize,
    pub cores: f64,
}

/// The role under which this process (the load generator) is reported.
pub const LOAD_GENERATOR: &str = "load-generator";

/// User + system CPU time of `pid` in clock ticks; `None` when it is gone or
/// this is not Linux.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_ticks(&stat)
}

/// utime + stime from the text of `/proc/<pid>/stat` (fields 14 and 15; the
/// command name in field 2 may contain spaces and parentheses).
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

fn sample(watched: &[Watched]) -> (Instant, Vec<Option<u64>>) {
    (
        Instant::now(),
        watched.iter().map(|w| cpu_ticks(w.pid)).collect(),
    )
}

/// Samples `watched` (plus this process) at the start and end of the window
/// of `schedule`; run it concurrently with the load.
pub async fn measure(mut watched: Vec<Watched>, schedule: Schedule) -> Vec<CpuUse> {
    watched.push(Watched {
        role: LOAD_GENERATOR.to_string(),
        pid: std::process::id(),
    });
    tokio::time::sleep_until(schedule.measure_start.into()).await;
    let (t0, before) = sample(&watched);
    tokio::time::sleep_until(schedule.end.into()).await;
    let (t1, after) = sample(&watched);
    let wall = t1.duration_since(t0).as_secs_f64();
    let hz = ticks_per_second();
    let mut by_role: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for ((w, b), a) in watched.iter().zip(&before).zip(&after) {
        if let (Some(b), Some(a)) = (b, a) {
            let entry = by_role.entry(&w.role).or_default();
            entry.0 += 1;
            entry.1 += a.saturating_sub(*b) as f64 / hz;
        }
    }
    by_role
        .into_iter()
        .map(|(role, (processes, cpu_s))| CpuUse {
            role: role.to_string(),
            processes,
            cores: if wall > 0.0 { cpu_s / wall } else { 0.0 },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 12345 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(cpu_ticks(std::process::id()).is_some());
    }

    #[tokio::test]
    async fn a_busy_process_uses_about_a_core() {
        let s = Schedule::starting_now(
            std::time::Duration::from_millis(50),
            std::time::Duration::from_millis(400),
        );
        let spin = std::thread::spawn(move || {
            let mut x = 0u64;
            while Instant::now() < s.end + std::time::Duration::from_millis(50) {
                x = x.wrapping_add(1);
                std::hint::black_box(x);
            }
        });
        let used = measure(Vec::new(), s).await;
        spin.join().unwrap();
        let me = used.iter().find(|u| u.role == LOAD_GENERATOR).unwrap();
        assert!(me.cores > 0.2, "{used:?}");
    }
}
