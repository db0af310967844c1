//! One binary is the whole product: a copy of the built binary, alone in an empty directory
//! (no source tree, no `data/`, no `topology.txt`), runs a herd that answers WHATSAT from the
//! places built into it, and `--ask` talks to it. Also: `--ask`'s exit code, `--version`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::{
    BIN, DEFAULT_HERD, PATIENCE, eventually, free_ports, run_exe, scratch_dir, unsafe_sigterm,
};

/// The ports of the built-in default herd (the repository's `topology.txt`).
const DEFAULT_PORTS: [u16; 5] = [12000, 12001, 12002, 12003, 12004];

/// A fresh directory holding nothing but a copy of the binary; returns (directory, copy).
fn lone_binary(tag: &str) -> (PathBuf, PathBuf) {
    let dir = scratch_dir(tag);
    let exe = dir.join("proxy-herd");
    std::fs::copy(BIN, &exe).unwrap();
    (dir, exe)
}

/// Runs the copy to the end (bounded by `PATIENCE`) in `cwd`.
fn run(exe: &Path, args: &[&str], cwd: &Path) -> Output {
    run_exe(exe, args, cwd)
}

/// `proxy-herd --ask` from the copy: (exit code, stdout, stderr).
fn ask(exe: &Path, cwd: &Path, addr: SocketAddr, lines: &[&str]) -> (Option<i32>, String, String) {
    let addr = addr.to_string();
    let mut args = vec!["--ask", addr.as_str()];
    args.extend_from_slice(lines);
    let out = run(exe, &args, cwd);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `--herd`, stopped on drop: SIGTERM to the parent (which stops its servers),
/// and then, in case the test failed half-way, a kill to every server it said it started.
struct RunningHerd {
    parent: Child,
    stdout: PathBuf,
}

impl RunningHerd {
    /// The pids of the servers, from the parent's `started NAME on ADDR (pid N)` lines.
    fn server_pids(&self) -> Vec<u32> {
        let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        text.lines()
            .filter_map(|line| line.strip_prefix("started "))
            .filter_map(|line| line.rsplit_once("(pid "))
            .filter_map(|(_, pid)| pid.trim_end_matches(')').parse().ok())
            .collect()
    }

    /// Stops the herd with SIGTERM and returns whether the parent exited in time.
    fn stop(&mut self) -> bool {
        unsafe_sigterm(self.parent.id());
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.parent.try_wait() {
                return true;
            }
            sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for RunningHerd {
    fn drop(&mut self) {
        let stopped = matches!(self.parent.try_wait(), Ok(Some(_))) || self.stop();
        if stopped {
            return; // the parent stopped its servers itself
        }
        let _ = self.parent.kill();
        let _ = self.parent.wait();
        // Only processes that still run a proxy-herd: a pid may have been reused since.
        for pid in self.server_pids() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("proxy-herd") {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }
}

#[test]
fn a_copied_binary_runs_a_herd_in_an_empty_directory() {
    let (dir, exe) = lone_binary("standalone");
    // The built-in herd listens on 12000–12004. If something else on this machine holds one
    // of them, the herd gets a topology file on free ports instead, kept outside `dir`: the
    // places data still has to come from inside the binary.
    let default_free = DEFAULT_PORTS
        .iter()
        .all(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok());
    let elsewhere = scratch_dir("standalone-topology");
    let ports: Vec<u16> = if default_free {
        DEFAULT_PORTS.to_vec()
    } else {
        eprintln!("ports 12000-12004 are in use: running the herd from a topology file");
        free_ports(5)
    };
    let addr = |name: &str| {
        let i = DEFAULT_HERD.iter().position(|(n, _)| *n == name).unwrap();
        SocketAddr::from(([127, 0, 0, 1], ports[i]))
    };
    let mut args = vec!["--herd".to_string()];
    if !default_free {
        let mut text = String::new();
        for ((name, neighbours), port) in DEFAULT_HERD.iter().zip(&ports) {
            text.push_str(&format!(
                "{name} 127.0.0.1:{port} {}\n",
                neighbours.join(" ")
            ));
        }
        let topology = elsewhere.join("topology.txt");
        std::fs::write(&topology, text).unwrap();
        args.push("--topology".into());
        args.push(topology.display().to_string());
    }
    let stdout = elsewhere.join("herd.out");
    let mut herd = RunningHerd {
        parent: common::spawn(
            Command::new(&exe)
                .args(&args)
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&stdout).unwrap())
                .stderr(Stdio::null()),
        ),
        stdout,
    };

    // A location at Alford; the herd floods it to Hamilton, two hops away (Alford–Parker–
    // Hamilton). `now` is filled in by --ask.
    let started = common::now_text().parse::<f64>().unwrap();
    let mut reply = String::new();
    eventually("Alford answers --ask", || {
        let (code, out, _) = ask(
            &exe,
            &dir,
            addr("Alford"),
            &["IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 now"],
        );
        reply = out;
        code == Some(0)
    });
    let fields: Vec<&str> = reply.trim_end().split(' ').collect();
    assert_eq!(
        fields[..5],
        [
            "AT",
            "Alford",
            fields[2],
            "kiwi.cs.ucla.edu",
            "+34.068930-118.445127"
        ]
    );
    let (secs, nanos) = fields[5].split_once('.').unwrap();
    assert_eq!(nanos.len(), 9, "{reply}");
    let sent: f64 = fields[5].parse().unwrap();
    assert!(
        sent >= started.floor() && sent < started + 60.0,
        "{secs}: {reply}"
    );

    // WHATSAT at Hamilton: the flood arrived, and the places come from the built-in data.
    let mut answer = String::new();
    eventually("Hamilton knows kiwi", || {
        let (code, out, _) = ask(
            &exe,
            &dir,
            addr("Hamilton"),
            &["WHATSAT kiwi.cs.ucla.edu 10 2"],
        );
        answer = out;
        code == Some(0) && answer.starts_with("AT ")
    });
    assert_eq!(common::first_line(&answer), reply.trim_end());
    assert!(answer.contains("\"status\" : \"OK\""), "{answer}");
    assert_eq!(answer.matches("\"place_id\" : ").count(), 2, "{answer}");
    assert!(answer.ends_with("}\n\n"), "{answer}");

    // Pipelined on one connection: an IAMAT in the sea by Anacapa Island, a WHATSAT about it
    // (only the airports layer has places within 10 km), and an invalid line.
    let (code, out, err) = ask(
        &exe,
        &dir,
        addr("Powell"),
        &[
            "IAMAT anacapa +34.068940-119.445127 now",
            "WHATSAT anacapa 10 20",
            "hello there",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("AT Powell "), "{out}");
    assert!(out.contains("\"status\" : \"OK\""), "{out}");
    assert!(out.contains("\"place_id\" : \"ourairports:"), "{out}");
    assert!(out.ends_with("\n\n? hello there\n"), "{out}");

    if default_free {
        let log = std::fs::read_to_string(dir.join("logs/Alford.log")).unwrap();
        assert!(log.contains("using the built-in default herd"), "{log}");
        let said = std::fs::read_to_string(&herd.stdout).unwrap();
        assert!(said.contains("running the built-in default herd"), "{said}");
    }
    // Nothing but the binary and the logs it wrote: it needed no other file.
    let mut entries: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["logs", "proxy-herd"]);

    assert!(herd.stop(), "the herd did not stop on SIGTERM");
    drop(herd);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&elsewhere);
}

#[test]
fn ask_fails_when_a_line_goes_unanswered() {
    let (dir, exe) = lone_binary("ask");
    // A "server" that reads everything and closes without a word.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        got
    });
    let (code, _, err) = ask(
        &exe,
        &dir,
        silent,
        &["IAMAT a +1+1 now", "", "WHATSAT a 1 1"],
    );
    let got = String::from_utf8(reader.join().unwrap()).unwrap();
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("after 0 of 2 replies"), "{err}");
    // The lines arrived pipelined on one connection, `now` filled in, then end of input.
    let lines: Vec<&str> = got.split('\n').collect();
    assert_eq!(lines.len(), 4, "{got:?}");
    let time = lines[0].strip_prefix("IAMAT a +1+1 ").unwrap_or("");
    assert_eq!(
        time.split_once('.').map(|(_, nanos)| nanos.len()),
        Some(9),
        "{got:?}"
    );
    assert_eq!(lines[1..], ["", "WHATSAT a 1 1", ""]);

    // A server that answers only the first of two lines.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let half = listener.local_addr().unwrap();
    let answerer = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        let _ = stream.write_all(b"? one\n");
    });
    // One argument holding two lines: two replies are owed.
    let (code, out, err) = ask(&exe, &dir, half, &["one\ntwo"]);
    answerer.join().unwrap();
    assert_eq!((code, out.as_str()), (Some(1), "? one\n"), "{err}");
    assert!(err.contains("after 1 of 2 replies"), "{err}");

    // Nobody listening: one line saying so.
    let closed = SocketAddr::from(([127, 0, 0, 1], free_ports(1)[0]));
    let (code, _, err) = ask(&exe, &dir, closed, &["hello"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot connect") && err.lines().count() == 1,
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_topology_file_the_built_in_herd_is_used() {
    let (dir, exe) = lone_binary("builtin");
    // An unknown server name is reported against the built-in herd, listing its servers:
    // no topology file was needed to know them (and no port was bound).
    let out = run(&exe, &["Welsh"], &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "built-in default herd: no server named Welsh \
             (servers: Alford, Bolden, Hamilton, Parker, Powell)"
        ),
        "{err}"
    );
    // A ./topology.txt, when there is one, wins.
    std::fs::write(dir.join("topology.txt"), "Only 127.0.0.1:1\n").unwrap();
    let out = run(&exe, &["Welsh"], &dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("topology.txt: no server named Welsh (servers: Only)"),
        "{err}"
    );

    let out = run(&exe, &["--version"], &dir);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("proxy-herd {}\n", env!("CARGO_PKG_VERSION"))
    );
    let _ = std::fs::remove_dir_all(&dir);
}
