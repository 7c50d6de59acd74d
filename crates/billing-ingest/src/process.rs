//! The standard `process_*` Prometheus metrics of the ingester's own process, read at scrape
//! time from `/proc/self` (Linux only; elsewhere, or when `/proc` cannot be read, the metrics
//! are simply absent, never a scrape error).
//!
//! Why by hand: the five numbers are a few lines of `/proc` parsing; a crate for them would
//! bring its own dependency tree. Names and units follow the Prometheus client convention, so
//! dashboards and alerts written for other services apply:
//!
//! | metric | type | source |
//! |---|---|---|
//! | `process_cpu_seconds_total` | counter | `/proc/self/stat` utime + stime, in clock ticks |
//! | `process_resident_memory_bytes` | gauge | `/proc/self/statm` resident pages × page size |
//! | `process_virtual_memory_bytes` | gauge | `/proc/self/statm` size pages × page size |
//! | `process_open_fds` | gauge | entries of `/proc/self/fd` |
//! | `process_max_fds` | gauge | the soft `RLIMIT_NOFILE` |
//! | `process_start_time_seconds` | gauge | `/proc/self/stat` starttime + `btime` of `/proc/stat` |
//!
//! Invariant: a collector never fails the scrape; each number it cannot read is left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Encodes the `process_*` metrics at each scrape.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

/// What one reading of `/proc` found.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<i64>,
    pub virtual_bytes: Option<i64>,
    pub open_fds: Option<i64>,
    pub max_fds: Option<i64>,
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads the current process's numbers; the ones that cannot be read are `None`.
    pub(crate) fn read() -> Self {
        #[cfg(target_os = "linux")]
        {
            linux::read()
        }
        #[cfg(not(target_os = "linux"))]
        {
            Self::default()
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::ProcessStats;

    /// The fields of `/proc/self/stat` after the command name (which may hold spaces and
    /// parentheses, so the split is at the last `)`); index 0 is field 3 (`state`).
    fn stat_fields(text: &str) -> Option<Vec<&str>> {
        let rest = &text[text.rfind(')')? + 1..];
        Some(rest.split_whitespace().collect())
    }

    fn sysconf(name: libc::c_int) -> Option<i64> {
        // SAFETY: sysconf has no preconditions; -1 means unknown.
        let v = unsafe { libc::sysconf(name) };
        // c_long is 32 bits on some targets, 64 here.
        #[allow(clippy::useless_conversion)]
        (v > 0).then(|| i64::from(v))
    }

    fn boot_time() -> Option<i64> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse().ok())
    }

    pub(super) fn read() -> ProcessStats {
        let mut s = ProcessStats::default();
        let ticks = sysconf(libc::_SC_CLK_TCK);
        if let Some(fields) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(stat_fields)
            .map(|f| f.into_iter().map(str::to_string).collect::<Vec<_>>())
        {
            // utime is field 14, stime 15, starttime 22 (1-based): indexes 11, 12, 19 here.
            let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
            if let (Some(t), Some(u), Some(k)) = (ticks, field(11), field(12)) {
                s.cpu_seconds = Some((u + k) as f64 / t as f64);
            }
            if let (Some(t), Some(start), Some(boot)) = (ticks, field(19), boot_time()) {
                s.start_time_seconds = Some(boot as f64 + start as f64 / t as f64);
            }
        }
        if let (Some(text), Some(page)) = (
            std::fs::read_to_string("/proc/self/statm").ok(),
            sysconf(libc::_SC_PAGESIZE),
        ) {
            let mut it = text.split_whitespace().map(|v| v.parse::<i64>().ok());
            s.virtual_bytes = it.next().flatten().map(|p| p.saturating_mul(page));
            s.resident_bytes = it.next().flatten().map(|p| p.saturating_mul(page));
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory handle itself is one of the entries: not counted.
            s.open_fds = Some((dir.count() as i64 - 1).max(0));
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            s.max_fds = Some(i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX));
        }
        s
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = ProcessStats::read();
        if let Some(v) = s.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?)?;
        }
        let gauges_i = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                s.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                s.max_fds,
            ),
        ];
        for (name, help, value) in gauges_i {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        if let Some(v) = s.start_time_seconds {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let s = ProcessStats::read();
        assert!(s.resident_bytes.unwrap() > 0, "{s:?}");
        assert!(
            s.virtual_bytes.unwrap() >= s.resident_bytes.unwrap(),
            "{s:?}"
        );
        assert!(s.open_fds.unwrap() >= 3, "{s:?}");
        assert!(s.max_fds.unwrap() >= s.open_fds.unwrap(), "{s:?}");
        assert!(s.cpu_seconds.unwrap() >= 0.0, "{s:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = s.start_time_seconds.unwrap();
        assert!(start > 1.0e9 && start <= now + 1.0, "{start} vs {now}");
    }
}
