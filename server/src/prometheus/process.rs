//! Process metrics read from Linux's `/proc`: what Prometheus's client
//! libraries call `process_*`, for the arbiter and each worker.
//!
//! The arbiter reads its workers' files itself (they share its user), so a
//! worker stuck in a request still shows its memory and CPU, and no worker
//! spends anything on it.

use std::fs;
use std::sync::OnceLock;

use nix::sys::resource::{UsageWho, getrusage};
use nix::unistd::{SysconfVar, sysconf};

use super::exposition::{Exposition, Kind};

/// One process's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Stats {
    pub(crate) cpu_seconds: f64,
    pub(crate) resident_bytes: f64,
    pub(crate) open_fds: f64,
    /// Since the Unix epoch.
    pub(crate) start_time: f64,
}

impl Stats {
    /// Process `pid`'s figures, or `None` once it is gone.
    pub(crate) fn of(pid: u32) -> Option<Self> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name, in parentheses, may hold spaces: the fields
        // are counted after its closing one (field 3 is the state).
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
        let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
        let system = system();
        let open_fds = fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) / system.ticks_per_second,
            resident_bytes: field(24)? * system.page_size,
            open_fds: open_fds as f64,
            start_time: system.boot_time + field(22)? / system.ticks_per_second,
        })
    }

    /// The CPU time of this process's children that were reaped: the
    /// workers that exited.
    pub(crate) fn reaped_children_cpu_seconds() -> f64 {
        getrusage(UsageWho::RUSAGE_CHILDREN).map_or(0.0, |usage| {
            let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            seconds(usage.user_time()) + seconds(usage.system_time())
        })
    }

    /// Adds the `process_*` families to `page`, for these figures summed
    /// over the server's processes, as started at `start_time`.
    pub(crate) fn add_to(&self, page: &mut Exposition) {
        page.set(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            &[],
            self.cpu_seconds,
        );
        page.set(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            &[],
            self.resident_bytes,
        );
        page.set(
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
            &[],
            self.open_fds,
        );
        page.set(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            &[],
            self.start_time,
        );
    }
}

struct System {
    ticks_per_second: f64,
    page_size: f64,
    boot_time: f64,
}

fn system() -> &'static System {
    static SYSTEM: OnceLock<System> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let conf = |var, default: f64| {
            sysconf(var)
                .ok()
                .flatten()
                .map_or(default, |value| value as f64)
        };
        let boot_time = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| {
                stat.lines()
                    .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
            })
            .unwrap_or(0.0);
        System {
            ticks_per_second: conf(SysconfVar::CLK_TCK, 100.0),
            page_size: conf(SysconfVar::PAGE_SIZE, 4096.0),
            boot_time,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    #[test]
    fn this_process_reads_back_sensibly() {
        let stats = Stats::of(std::process::id()).expect("this process is alive");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(stats.start_time > now - 3600.0 && stats.start_time <= now + 1.0);
        assert!(stats.resident_bytes > 1_000_000.0);
        assert!(stats.open_fds >= 3.0);
        assert!(stats.cpu_seconds >= 0.0);
        assert_eq!(Stats::of(u32::MAX), None);
    }
}
