//! CPU used by each process and the whole machine during a window, from `/proc` (Linux).

use std::collections::BTreeMap;
use std::time::Instant;

use procfs::{process::Process, CurrentSI, KernelStats};
use serde::{Deserialize, Serialize};

use crate::load::Schedule;

/// A process to account for, under a role such as `nats-server` or `product`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub role: String,
    pub pid: u32,
}

/// CPU a role used in the window: `cores` = CPU seconds / wall seconds.
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
/// Role for CPU the hypervisor gave to others while this VM wanted it (steal time).
pub const MACHINE_STOLEN: &str = "machine-stolen";

/// Whether `role` is one of the machine-wide figures rather than a process.
pub fn is_machine_role(role: &str) -> bool {
    role == MACHINE_BUSY || role == MACHINE_STOLEN
}

/// User + system CPU time of `pid` in clock ticks; `None` when it is gone.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = Process::new(i32::try_from(pid).ok()?).ok()?.stat().ok()?;
    Some(stat.utime + stat.stime)
}

/// Busy (user, nice, system, irq, softirq) and stolen ticks of the whole machine.
fn machine_ticks() -> Option<[u64; 2]> {
    let t = KernelStats::current().ok()?.total;
    let irqs = t.irq.unwrap_or(0) + t.softirq.unwrap_or(0);
    Some([t.user + t.nice + t.system + irqs, t.steal.unwrap_or(0)])
}

fn sample(watched: &[Watched]) -> (Instant, Vec<Option<u64>>, Option<[u64; 2]>) {
    let processes = watched.iter().map(|w| process_ticks(w.pid)).collect();
    (Instant::now(), processes, machine_ticks())
}

/// Samples `watched` (and this process) at the start and end of `schedule`'s window.
pub async fn measure(mut watched: Vec<Watched>, schedule: Schedule) -> Vec<CpuUse> {
    watched.push(Watched {
        role: LOAD_GENERATOR.to_string(),
        pid: std::process::id(),
    });
    tokio::time::sleep_until(schedule.measure_start.into()).await;
    let (t0, before, machine_before) = sample(&watched);
    tokio::time::sleep_until(schedule.end.into()).await;
    let (t1, after, machine_after) = sample(&watched);
    let wall_ticks = t1.duration_since(t0).as_secs_f64() * procfs::ticks_per_second() as f64;
    let cores = |ticks: u64| match wall_ticks > 0.0 {
        true => ticks as f64 / wall_ticks,
        false => 0.0,
    };
    let mut by_role: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for ((w, b), a) in watched.iter().zip(&before).zip(&after) {
        if let (Some(b), Some(a)) = (b, a) {
            let (processes, ticks) = by_role.entry(&w.role).or_default();
            (*processes, *ticks) = (*processes + 1, *ticks + a.saturating_sub(*b));
        }
    }
    let mut used: Vec<CpuUse> = by_role
        .into_iter()
        .map(|(role, (processes, ticks))| CpuUse {
            role: role.to_string(),
            processes,
            cores: cores(ticks),
        })
        .collect();
    if let (Some(before), Some(after)) = (machine_before, machine_after) {
        for (role, i) in [(MACHINE_BUSY, 0), (MACHINE_STOLEN, 1)] {
            used.push(CpuUse {
                role: role.to_string(),
                processes: 0,
                cores: cores(after[i].saturating_sub(before[i])),
            });
        }
    }
    used
}

/// `base` with each role's cores averaged over the `rounds` that sampled it.
pub fn average(base: &[CpuUse], rounds: &[&[CpuUse]]) -> Vec<CpuUse> {
    let mean = |role: &str| {
        let named = |x: &&CpuUse| x.role == role;
        let found = rounds.iter().filter_map(|r| r.iter().find(named));
        let samples: Vec<f64> = found.map(|x| x.cores).collect();
        samples.iter().sum::<f64>() / samples.len().max(1) as f64
    };
    let mut averaged = base.to_vec();
    averaged.iter_mut().for_each(|c| c.cores = mean(&c.role));
    averaged
}
