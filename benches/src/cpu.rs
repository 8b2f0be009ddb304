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
/// Role for the whole machine's busy CPU (every process, the kernel included).
pub const MACHINE_BUSY: &str = "machine-busy";
/// Role for CPU the hypervisor gave to others while this VM wanted it (steal
/// time): a run that lost much of it measured a smaller machine.
pub const MACHINE_STOLEN: &str = "machine-stolen";

/// Whether `role` is one of the machine-wide figures rather than a process.
pub fn is_machine_role(role: &str) -> bool {
    role == MACHINE_BUSY || role == MACHINE_STOLEN
}

/// Busy and stolen ticks of the whole machine from the `cpu` line of
/// `/proc/stat`; `None` when it is not readable (not Linux).
pub fn machine_ticks() -> Option<(u64, u64)> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// (busy, steal) from the text of `/proc/stat`: busy is user + nice + system
/// + irq + softirq; idle and iowait are not busy; steal is counted apart.
pub fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    Some((at(0) + at(1) + at(2) + at(5) + at(6), at(7)))
}

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
    let machine_before = machine_ticks();
    tokio::time::sleep_until(schedule.end.into()).await;
    let (t1, after) = sample(&watched);
    let machine_after = machine_ticks();
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
    let cores = |cpu_s: f64| if wall > 0.0 { cpu_s / wall } else { 0.0 };
    let mut used: Vec<CpuUse> = by_role
        .into_iter()
        .map(|(role, (processes, cpu_s))| CpuUse {
            role: role.to_string(),
            processes,
            cores: cores(cpu_s),
        })
        .collect();
    if let (Some((busy0, steal0)), Some((busy1, steal1))) = (machine_before, machine_after) {
        for (role, ticks) in [
            (MACHINE_BUSY, busy1.saturating_sub(busy0)),
            (MACHINE_STOLEN, steal1.saturating_sub(steal0)),
        ] {
            used.push(CpuUse {
                role: role.to_string(),
                processes: 0,
                cores: cores(ticks as f64 / hz),
            });
        }
    }
    used
}

/// `base` with each role's cores averaged over `rounds` (the rounds that
/// sampled that role).
pub fn average(base: &[CpuUse], rounds: &[&[CpuUse]]) -> Vec<CpuUse> {
    let mean = |role: &str| {
        let found = rounds
            .iter()
            .filter_map(|r| r.iter().find(|x| x.role == role));
        let samples: Vec<f64> = found.map(|x| x.cores).collect();
        samples.iter().sum::<f64>() / samples.len().max(1) as f64
    };
    base.iter()
        .map(|c| CpuUse {
            cores: mean(&c.role),
            ..c.clone()
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
    fn machine_ticks_count_busy_and_steal_apart() {
        let stat = "cpu  100 5 20 900 7 0 3 40 0 0\ncpu0 50 2 10 450 3 0 1 20 0 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((128, 40)));
        assert_eq!(parse_machine_ticks("intr 1 2 3"), None);
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
        let busy = used.iter().find(|u| u.role == MACHINE_BUSY).unwrap();
        assert!(busy.cores >= me.cores * 0.5, "{used:?}");
    }
}
