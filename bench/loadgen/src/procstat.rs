//! CPU time and memory of the server processes, read from `/proc` (Linux), so a figure of
//! replies per second comes with what it cost.

use std::fs;

/// Clock ticks per second, the unit of `utime` and `stime` in `/proc/<pid>/stat`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// User plus system CPU seconds used so far by `pid` (all its threads), if it exists.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')', field 3 (state) is index 0, so utime (14) is index 11 and stime (15) index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_second())
}

/// A `kB` field of `/proc/<pid>/status`, such as `VmRSS` or `VmHWM` (peak RSS).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Sum of CPU seconds over `pids` (processes that are gone count as 0).
pub fn total_cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_seconds(p)).sum()
}

/// The largest value of a status field over `pids`, in kB.
pub fn max_kb(pids: &[u32], field: &str) -> u64 {
    pids.iter()
        .filter_map(|&p| status_kb(p, field))
        .max()
        .unwrap_or(0)
}

/// The sum of a status field over `pids`, in kB.
pub fn sum_kb(pids: &[u32], field: &str) -> u64 {
    pids.iter().filter_map(|&p| status_kb(p, field)).sum()
}

/// Raises this process's open-file limit to its hard limit: thousands of connections need
/// thousands of descriptors, and the default soft limit is often 1024.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}
