//! The results table: the median of each figure over the repetitions, shown next to its
//! ratio to proxy-herd's.

use crate::herd::{Impl, ImplKind};
use crate::scenarios::{Metrics, Scenario, Settings};
use std::collections::HashMap;
use std::fmt::Write;
use std::time::Duration;

/// One line for the progress log.
pub fn summary(m: &Metrics) -> String {
    let get = |k: &str| m.get(k).copied();
    if let Some(rate) = get("rate") {
        format!(
            "{} replies/s, p99 {:.2} ms, errors {}",
            thousands(rate),
            get("p99_us").unwrap_or(0.0) / 1000.0,
            get("errors").unwrap_or(0.0)
        )
    } else if let Some(rss) = get("rss_kb") {
        format!("rss {:.1} MB", rss / 1024.0)
    } else if get("p50_us").is_none() {
        // The link-lines and scale scenarios: every figure as it is.
        let all: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:.3}")).collect();
        all.join(" ")
    } else {
        format!(
            "flood p50 {:.0} µs, p99 {:.0} µs, lost {}",
            get("p50_us").unwrap_or(0.0),
            get("p99_us").unwrap_or(0.0),
            get("lost").unwrap_or(0.0)
        )
    }
}

fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn format_value(v: f64, decimals: usize) -> String {
    if decimals == 0 {
        thousands(v)
    } else {
        format!("{v:.decimals$}")
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The median of figure `key` over the successful runs of (scenario, implementation).
pub fn median_of(
    results: &HashMap<(String, String), Vec<Result<Metrics, String>>>,
    sc: &str,
    imp: &str,
    key: &str,
) -> Option<f64> {
    let runs = results.get(&(sc.to_string(), imp.to_string()))?;
    median(
        runs.iter()
            .filter_map(|r| r.as_ref().ok())
            .filter_map(|m| m.get(key).copied())
            .collect(),
    )
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

fn today() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The whole table, with a header saying when, where and how it was measured.
pub fn markdown(
    scenarios: &[Scenario],
    impls: &[Impl],
    results: &HashMap<(String, String), Vec<Result<Metrics, String>>>,
    s: &Settings,
    took: Duration,
) -> String {
    let mut md = String::new();
    let cmd: Vec<String> = std::env::args().collect();
    let _ = writeln!(md, "### proxy-herd benchmark");
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "`{}` — {}; {}; {} s measured after {} s warm-up per run, median of {} repetitions; took {:.0} s.",
        cmd.join(" "),
        today(),
        machine(),
        s.duration,
        s.warmup,
        s.reps,
        took.as_secs_f64()
    );
    let _ = writeln!(md);
    let reference = impls
        .iter()
        .find(|i| i.kind == ImplKind::ProxyHerd)
        .map(|i| i.name.clone());
    let mut header = String::from("| scenario | figure |");
    let mut rule = String::from("|---|---|");
    for imp in impls {
        let label = if imp.kind == ImplKind::Echo {
            "echo (floor)".to_string()
        } else {
            imp.name.clone()
        };
        let _ = write!(header, " {label} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    for sc in scenarios {
        for (ri, row) in sc.rows.iter().enumerate() {
            let title = if ri == 0 {
                format!("**{}** `{}`", sc.title, sc.id)
            } else {
                String::new()
            };
            let _ = write!(md, "| {title} | {} |", row.label);
            let base = reference
                .as_ref()
                .and_then(|r| median_of(results, &sc.id, r, row.key));
            for imp in impls {
                let runs = results.get(&(sc.id.clone(), imp.name.clone()));
                let cell = match runs {
                    None => "n/a".to_string(),
                    Some(runs) => match median_of(results, &sc.id, &imp.name, row.key) {
                        None if runs.iter().all(|r| r.is_err()) => "failed".to_string(),
                        None => "—".to_string(),
                        Some(v) => {
                            let mut c = format_value(v * row.scale, row.decimals);
                            if row.ratio
                                && Some(&imp.name) != reference.as_ref()
                                && let Some(b) = base
                                && b != 0.0
                            {
                                let _ = write!(c, " ({:.2}×)", v / b);
                            }
                            let failed = runs.iter().filter(|r| r.is_err()).count();
                            if failed > 0 {
                                let _ = write!(c, " ({failed} failed)");
                            }
                            c
                        }
                    },
                };
                let _ = write!(md, " {cell} |");
            }
            let _ = writeln!(md);
        }
    }
    // What logging costs, from the two 64-connection IAMAT scenarios.
    if scenarios.iter().any(|s| s.id == "iamat-pipe-64-logoff") {
        let _ = write!(md, "| **cost of logging** (1 − on/off) | throughput |");
        for imp in impls {
            let on = median_of(results, "iamat-pipe-64", &imp.name, "rate");
            let off = median_of(results, "iamat-pipe-64-logoff", &imp.name, "rate");
            let cell = match (on, off) {
                (Some(on), Some(off)) if off > 0.0 => format!("{:.0}%", 100.0 * (1.0 - on / off)),
                _ => "n/a".to_string(),
            };
            let _ = write!(md, " {cell} |");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "Ratios are to proxy-herd (×1.00 = the same; for replies/s higher is better, for latency, CPU and memory lower is better). \
         `n/a`: the scenario does not apply (only proxy-herd has an offline provider; the echo floor only echoes lines)."
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(12.0), "12");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
