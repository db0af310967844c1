//! `--timeline` (issue 13): the default herd, run by `--herd --timeline`, is sent one IAMAT
//! at Hamilton and one WHATSAT at Powell, then stopped; `herd.trace.json` must be valid
//! trace-event JSON that shows the five servers, the flood crossing the herd as a chain of
//! arrows from turn to turn, and the lookup on a worker with its arrow back to the loop.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

/// The `--herd` parent, stopped with SIGTERM (so it stops its servers) if the test fails.
struct Parent(Child);

impl Drop for Parent {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            unsafe_sigterm(self.0.id());
            let deadline = std::time::Instant::now() + PATIENCE;
            while matches!(self.0.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A number field of an event, as microseconds.
fn micros(event: &Value, key: &str) -> f64 {
    event[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number: {event}"))
}

/// Checks the fields the trace-event format requires of each kind of event.
fn check_fields(event: &Value) {
    let text = |key: &str| event[key].as_str().map(str::to_string);
    let ph = text("ph").unwrap_or_else(|| panic!("no ph: {event}"));
    assert!(text("name").is_some(), "no name: {event}");
    for key in ["pid", "tid"] {
        assert!(event[key].is_u64(), "no {key}: {event}");
    }
    match ph.as_str() {
        "M" => assert!(event["args"].is_object(), "metadata without args: {event}"),
        "X" => {
            micros(event, "ts");
            assert!(micros(event, "dur") >= 0.0, "{event}");
        }
        "i" => {
            micros(event, "ts");
            let scope = text("s").unwrap_or_default();
            assert!(["t", "p", "g"].contains(&scope.as_str()), "{event}");
        }
        "s" | "f" => {
            micros(event, "ts");
            assert!(text("cat").is_some() && text("id").is_some(), "{event}");
            if ph == "f" {
                assert_eq!(text("bp").as_deref(), Some("e"), "{event}");
            }
        }
        other => panic!("unexpected phase {other}: {event}"),
    }
}

/// The events of the merged file, and each process's and thread's name.
struct Timeline {
    events: Vec<Value>,
    process: HashMap<u64, String>,
    thread: HashMap<(u64, u64), String>,
}

impl Timeline {
    fn pid(&self, name: &str) -> u64 {
        *(self.process.iter())
            .find(|(_, n)| *n == name)
            .unwrap_or_else(|| panic!("no process named {name}"))
            .0
    }

    fn thread_name(&self, event: &Value) -> &str {
        let key = (
            event["pid"].as_u64().unwrap(),
            event["tid"].as_u64().unwrap(),
        );
        self.thread.get(&key).map_or("?", String::as_str)
    }

    /// The slice named `name` on the same thread as `event` that encloses its time: its
    /// index in `events`.
    fn enclosing(&self, event: &Value, name: &str) -> Option<usize> {
        let ts = micros(event, "ts");
        self.events.iter().position(|e| {
            e["ph"] == "X"
                && e["name"] == name
                && e["pid"] == event["pid"]
                && e["tid"] == event["tid"]
                && micros(e, "ts") <= ts
                && ts <= micros(e, "ts") + micros(e, "dur")
        })
    }

    /// The arrows named `name`, as the viewers draw them: events in time order, an `s`
    /// waits under its id, and the next `f` with that id ends it. (Ids repeat: a line that
    /// comes back to a server before its links carried a `via=` has the id it came with.)
    fn arrows(&self, name: &str) -> Vec<(&Value, &Value)> {
        let mut flow: Vec<&Value> = (self.events.iter())
            .filter(|e| (e["ph"] == "s" || e["ph"] == "f") && e["name"] == name)
            .collect();
        flow.sort_by(|a, b| micros(a, "ts").total_cmp(&micros(b, "ts")));
        let mut waiting: HashMap<&str, &Value> = HashMap::new();
        let mut pairs = Vec::new();
        for event in flow {
            let id = event["id"].as_str().unwrap();
            if event["ph"] == "s" {
                waiting.insert(id, event);
            } else if let Some(start) = waiting.remove(id) {
                pairs.push((start, event));
            }
        }
        pairs
    }
}

#[test]
fn herd_timeline_shows_the_flood_crossing_and_the_lookup() {
    let herd = Herd::plan("timeline", DEFAULT_HERD, &[]);
    let logs = herd.dir.join("logs");
    let parent = Command::new(BIN)
        .args(["--herd", "--timeline", "--topology"])
        .arg(&herd.topology)
        .arg("--log-dir")
        .arg(&logs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("cannot start proxy-herd --herd");
    let mut parent = Parent(parent);
    herd.wait_linked(DEFAULT_HERD);

    let iamat = format!("IAMAT timeline.test +34.068930-118.445127 {}", now_text());
    let reply = herd.ask("Hamilton", &iamat);
    assert!(reply.starts_with("AT Hamilton "), "{reply}");
    eventually("the flood reaches Powell", || {
        herd.log("Powell").contains("timeline.test")
    });
    let reply = herd.ask("Powell", "WHATSAT timeline.test 10 1");
    assert!(reply.contains("\"results\""), "{reply}");

    unsafe_sigterm(parent.0.id());
    let mut status = None;
    eventually("the herd parent exits", || {
        status = parent.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success());
    let text = std::fs::read_to_string(logs.join("herd.trace.json")).expect("no herd.trace.json");
    let events: Vec<Value> = serde_json::from_str(&text).expect("herd.trace.json is not JSON");

    // Every event has what the format requires.
    for event in &events {
        check_fields(event);
    }
    let names = |meta: &'static str| {
        let meta = events
            .iter()
            .filter(move |e| e["ph"] == "M" && e["name"] == meta);
        meta.map(|e| {
            let key = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
            (key, e["args"]["name"].as_str().unwrap().to_string())
        })
    };
    let timeline = Timeline {
        process: names("process_name")
            .map(|((pid, _), n)| (pid, n))
            .collect(),
        thread: names("thread_name").collect(),
        events: events.clone(),
    };

    // Five processes, named after the servers.
    let mut servers: Vec<&str> = timeline.process.values().map(String::as_str).collect();
    servers.sort();
    assert_eq!(
        servers,
        ["Alford", "Bolden", "Hamilton", "Parker", "Powell"]
    );
    for pid in timeline.process.keys() {
        let threads = (timeline.thread.iter()).filter(|((p, _), _)| p == pid);
        let threads: HashSet<&str> = threads.map(|(_, n)| n.as_str()).collect();
        assert!(
            threads.contains("loop") && threads.contains("places-0"),
            "{threads:?}"
        );
    }

    // The flood as arrows between turns: from the turn that queued the line to the turn of
    // the neighbour that handled it. Follow them from Hamilton to Powell.
    let mut next: HashMap<usize, Vec<usize>> = HashMap::new();
    for (start, end) in timeline.arrows("AT") {
        let (Some(from), Some(to)) = (
            timeline.enclosing(start, "turn"),
            timeline.enclosing(end, "turn"),
        ) else {
            panic!("an AT arrow outside a turn: {start} -> {end}");
        };
        assert!(
            micros(end, "ts") > micros(start, "ts"),
            "an arrow back in time: {start} -> {end}"
        );
        next.entry(from).or_default().push(to);
    }
    let process_of = |i: usize| timeline.process[&events[i]["pid"].as_u64().unwrap()].clone();
    let mut queue: VecDeque<(usize, Vec<String>)> = next
        .keys()
        .filter(|&&i| process_of(i) == "Hamilton")
        .map(|&i| (i, vec!["Hamilton".to_string()]))
        .collect();
    let mut chain = None;
    let mut seen = HashSet::new();
    while let Some((turn, path)) = queue.pop_front() {
        if process_of(turn) == "Powell" {
            chain = Some(path);
            break;
        }
        for &to in next.get(&turn).into_iter().flatten() {
            if seen.insert(to) {
                let mut path = path.clone();
                path.push(process_of(to));
                queue.push_back((to, path));
            }
        }
    }
    let chain = chain.expect("no chain of AT arrows from a Hamilton turn to a Powell turn");
    assert_eq!(
        chain.len(),
        4,
        "Hamilton, Parker, Alford or Bolden, Powell: {chain:?}"
    );
    assert_eq!(chain[1], "Parker", "{chain:?}");

    // The lookup: a slice on one of Powell's workers, an arrow into it from a Powell turn,
    // and one out of it to the turn that delivers the result.
    let powell = timeline.pid("Powell");
    let lookup = (events.iter())
        .find(|e| e["ph"] == "X" && e["name"] == "lookup" && e["pid"] == powell)
        .expect("no lookup slice at Powell");
    assert!(
        timeline.thread_name(lookup).starts_with("places-"),
        "the lookup ran on {}",
        timeline.thread_name(lookup)
    );
    let inside = |e: &Value| {
        timeline
            .enclosing(e, "lookup")
            .is_some_and(|i| events[i] == *lookup)
    };
    let asked = timeline.arrows("lookup");
    let asked = (asked.iter()).find(|(_, end)| inside(end));
    let (ask, _) = asked.expect("no arrow from the loop into the lookup");
    assert_eq!(timeline.thread_name(ask), "loop");
    assert!(
        timeline.enclosing(ask, "turn").is_some(),
        "asked outside a turn"
    );
    let back = timeline.arrows("result");
    let back = (back.iter()).find(|(start, _)| inside(start));
    let (_, delivered) = back.expect("no arrow from the lookup back to the loop");
    assert_eq!(timeline.thread_name(delivered), "loop");
    assert_eq!(delivered["pid"], powell);
    assert!(
        timeline.enclosing(delivered, "turn").is_some(),
        "result delivered outside a turn"
    );
    assert!(micros(delivered, "ts") >= micros(lookup, "ts") + micros(lookup, "dur"));

    // Each turn's sleep is shown apart from its work: poll and turn slices on the loop.
    for name in ["poll", "turn"] {
        assert!(
            (events.iter()).any(|e| e["name"] == name && timeline.thread_name(e) == "loop"),
            "no {name} slices"
        );
    }
}
