//! The guided tour (`src/tour.rs`) quotes a real `--trace` of one IAMAT and one WHATSAT.
//! This test produces a fresh trace the same way and checks that every step the tour quotes
//! still happens, in the same order, so the tour and the code cannot drift apart.

mod common;

use common::*;

/// The quoted trace blocks of the tour: `(server, lines)`, from "# Name.log" to the fence.
fn quoted_traces() -> Vec<(String, Vec<String>)> {
    let tour = include_str!("../src/tour.rs");
    let mut blocks = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in tour.lines() {
        let text = line
            .strip_prefix("//! ")
            .unwrap_or(line.strip_prefix("//!").unwrap_or(line));
        if let Some(name) = text.strip_prefix("# ").and_then(|t| t.strip_suffix(".log")) {
            current = Some((name.to_string(), Vec::new()));
        } else if text.starts_with("```") {
            blocks.extend(current.take());
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(text.to_string());
        }
    }
    blocks
}

/// A trace line reduced to the step it records: timestamps, numbers and addresses vary
/// from run to run; how many turns, events and reads it takes depends on how the kernel
/// batches the bytes. `None` for such lines.
fn step(line: &str) -> Option<String> {
    let text = match line.find("] ") {
        Some(i) if line.starts_with(|c: char| c.is_ascii_digit()) => &line[i + 2..],
        _ => line,
    };
    let rest = text.strip_prefix("trace: ").unwrap_or(text);
    if rest.starts_with("turn ") || rest.starts_with("event ") || rest.contains(": read ") {
        return None;
    }
    let mut out = String::new();
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    Some(out)
}

#[test]
fn the_tour_trace_matches_what_the_binary_does() {
    let herd = Herd::default_herd("tour", &["--trace"]);
    let all = ["Alford", "Bolden", "Hamilton", "Parker", "Powell"];
    // A first flood, so every link has carried its first line and its via= probe.
    herd.ask(
        "Alford",
        "IAMAT warmup.cs.ucla.edu +34.068930-118.445127 1621464800.5",
    );
    // Every link has carried a via= line (the probe, or a line forwarded with the field),
    // so every server knows where each line comes from: nothing will be echoed.
    for (a, b) in [
        ("Alford", "Parker"),
        ("Alford", "Powell"),
        ("Bolden", "Parker"),
        ("Bolden", "Powell"),
        ("Hamilton", "Parker"),
    ] {
        for (from, to) in [(a, b), (b, a)] {
            eventually(&format!("{to} got a via={from} line"), || {
                herd.log(to).contains(&format!(" via={from} "))
            });
        }
    }
    herd.ask(
        "Alford",
        "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503",
    );
    eventually("the flood ends on the cycle, twice as not newer", || {
        let dropped = |n: &&str| {
            let log = herd.log(n);
            log.lines()
                .filter(|l| l.contains("kiwi") && l.contains("not newer"))
                .count()
        };
        all.iter().map(dropped).sum::<usize>() >= 2
    });
    eventually("Hamilton has it", || {
        herd.log("Hamilton").contains("< AT Alford")
    });
    herd.ask("Hamilton", "WHATSAT kiwi.cs.ucla.edu 10 1");
    let blocks = quoted_traces();
    assert_eq!(
        blocks.len(),
        3,
        "the tour quotes Alford's, Parker's and Hamilton's traces"
    );
    for (name, quoted) in blocks {
        let wanted: Vec<String> = quoted.iter().filter_map(|l| step(l)).collect();
        assert!(!wanted.is_empty(), "{name}: the tour quotes real steps");
        // The log is flushed at the end of each loop turn, so the last lines may land a
        // moment after the reply: look until every step is there, or time runs out.
        let mut missing = String::new();
        let deadline = std::time::Instant::now() + PATIENCE;
        while std::time::Instant::now() < deadline {
            match first_missing(&wanted, &herd.log(&name)) {
                None => break,
                Some(report) => missing = report,
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if let Some(report) = first_missing(&wanted, &herd.log(&name)) {
            panic!("{name}: {report}\n(earlier: {missing})");
        }
        // And the loop-level lines the tour explains are there too.
        let log = herd.log(&name);
        if name == "Parker" {
            // Quoted for its flood record only; nothing comes back to Alford.
            assert!(
                !(herd.log("Alford").lines())
                    .any(|l| l.contains("< AT Alford") && l.contains("kiwi")),
                "a line came back to Alford"
            );
            continue;
        }
        for kind in [
            "trace: turn ",
            "trace: event listener: readable",
            "trace: event conn ",
        ] {
            assert!(log.contains(kind), "{name}: no {kind:?} line");
        }
    }
}

/// Every quoted step must appear in the log, in order (other lines may come between: the
/// log also has start-up and link lines). Says which step is missing, if one is.
fn first_missing(wanted: &[String], log: &str) -> Option<String> {
    let fresh: Vec<String> = log.lines().filter_map(step).collect();
    let mut from = 0;
    for want in wanted {
        match fresh[from..].iter().position(|l| l == want) {
            Some(i) => from += i + 1,
            None => {
                return Some(format!(
                    "the tour quotes {want:?}, which a fresh trace no longer shows (after line {from}):\n{}",
                    fresh.join("\n")
                ));
            }
        }
    }
    None
}
