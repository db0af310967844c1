//! Only the herd may speak for the herd (issue 15): `--herd-key` signs every AT line a
//! server sends and refuses unsigned ones; `--max-future` refuses reports from the future.
//! Real herds of the built binary, over real sockets.

mod common;

use common::*;
use proxy_herd::auth::HerdKey;

/// A secret no log, reply or error may ever show.
const SECRET: &str = "correct-horse-battery-staple-7f3a";

/// A key file with `secret` in a fresh directory; returns its path as a string.
fn key_file(tag: &str, secret: &str) -> String {
    let path = scratch_dir(tag).join("herd.key");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path.to_str().unwrap().to_string()
}

/// An AT line for `client` far in the future: newest wins, so it would freeze the client.
fn forged(client: &str) -> String {
    format!("AT Alford +0.000000001 {client} +0+0 99999999999")
}

/// `line` with a tag made with `secret` (the six fields as given).
fn signed(line: &str, secret: &str) -> String {
    let mut out = line.as_bytes().to_vec();
    HerdKey::new(secret.as_bytes()).put_tag(line.as_bytes(), &mut out);
    String::from_utf8(out).unwrap()
}

fn knows(herd: &Herd, server: &str, client: &str) -> String {
    first_line(&herd.ask(server, &format!("WHATSAT {client} 1 1\n"))).to_string()
}

#[test]
fn a_forged_at_is_refused_with_a_key_and_taken_without() {
    let key = key_file("authkey", SECRET);
    let keyed = Herd::start("auth-keyed", &[("Alford", &[])], &["--herd-key", &key]);
    let open = Herd::start("auth-open", &[("Alford", &[])], &[]);

    // Without a tag, with another key's tag, and a right tag over changed fields.
    let other = signed(&forged("victim"), "another-secret");
    let moved = signed(&forged("victim"), SECRET).replace(" +0+0 ", " +1+1 ");
    for line in [forged("victim"), other, moved] {
        let reply = keyed.ask("Alford", &format!("{line}\n"));
        assert_eq!(reply, format!("? {line}\n"), "keyed server took {line}");
    }
    assert!(knows(&keyed, "Alford", "victim").starts_with("? "));
    assert!(keyed.log("Alford").contains("rejected: no valid herd tag"));

    // A line signed with the herd's key is taken (and gets no reply, like any AT).
    let good = signed(&forged("friend"), SECRET);
    assert_eq!(keyed.ask("Alford", &format!("{good}\n")), "");
    assert_eq!(knows(&keyed, "Alford", "friend"), forged("friend"));

    // Without a key, the same forgery is taken: that is what the key is for.
    assert_eq!(open.ask("Alford", &format!("{}\n", forged("victim"))), "");
    assert_eq!(knows(&open, "Alford", "victim"), forged("victim"));
}

#[test]
fn a_keyed_herd_floods_and_catches_up_in_both_link_modes() {
    let key = key_file("authherd", SECRET);
    for mode in ["persistent", "per-update"] {
        let mut herd = Herd::default_herd(
            &format!("auth-{mode}"),
            &["--herd-key", &key, "--links", mode],
        );
        let reply = herd.ask(
            "Hamilton",
            "IAMAT kiwi +34.068930-118.445127 1621464827.5\n",
        );
        let at = first_line(&reply).to_string();
        for name in ["Alford", "Bolden", "Parker", "Powell"] {
            eventually(&format!("{mode}: {name} knows kiwi"), || {
                knows(&herd, name, "kiwi") == at
            });
        }
        // Powell restarts empty and learns kiwi (and a location reported while it was
        // down, which per-update links need to notice it) from its neighbours' signed
        // catch-up.
        herd.kill("Powell");
        let reply = herd.ask(
            "Hamilton",
            "IAMAT apple +34.068930-118.445127 1621464828.5\n",
        );
        let apple = first_line(&reply).to_string();
        // Per-update links learn that Powell was gone only when a connect to it fails; a
        // restart before that would look like nothing happened.
        eventually(
            &format!("{mode}: Powell's neighbours found it gone"),
            || {
                ["Alford", "Bolden"]
                    .iter()
                    .all(|n| herd.log(n).contains("link to Powell down"))
            },
        );
        herd.start_server("Powell");
        eventually(&format!("{mode}: restarted Powell caught up"), || {
            knows(&herd, "Powell", "kiwi") == at && knows(&herd, "Powell", "apple") == apple
        });
        for name in ["Alford", "Bolden", "Hamilton", "Parker", "Powell"] {
            let log = herd.log(name);
            assert!(
                !log.contains("rejected"),
                "{mode}: {name} refused a herd line"
            );
            assert!(!log.contains(SECRET), "{mode}: the key is in {name}'s log");
        }
        let stderr = herd.terminate("Hamilton");
        assert!(!stderr.contains(SECRET));
    }
}

#[test]
fn a_missing_or_empty_key_file_stops_start_up_without_showing_the_key() {
    let empty = key_file("authempty", "");
    let dir = scratch_dir("authstart");
    let topology = dir.join("topology.txt");
    std::fs::write(&topology, "Alford 127.0.0.1:1\n").unwrap();
    let topology = topology.to_str().unwrap();
    for (key, says) in [
        (empty.as_str(), "is empty"),
        ("/nonexistent/herd.key", "cannot read"),
    ] {
        let (code, stderr) =
            run_to_exit(&["Alford", "--topology", topology, "--herd-key", key], &dir);
        assert_eq!(code, Some(1), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(key) && stderr.contains(says), "{stderr}");
    }
    // A key that is there is never printed, even when something else goes wrong.
    let good = key_file("authgood", SECRET);
    let (code, stderr) = run_to_exit(
        &["Nobody", "--topology", topology, "--herd-key", &good],
        &dir,
    );
    assert_eq!(code, Some(1));
    assert!(!stderr.contains(SECRET), "{stderr}");
}

#[test]
fn a_far_future_iamat_is_refused_with_max_future_and_taken_without() {
    let limited = Herd::start("future", &[("Alford", &[])], &["--max-future", "60"]);
    let open = Herd::start("future-open", &[("Alford", &[])], &[]);
    let far = "IAMAT kiwi +34.068930-118.445127 99999999999";
    assert_eq!(
        limited.ask("Alford", &format!("{far}\n")),
        format!("? {far}\n")
    );
    assert!(
        open.ask("Alford", &format!("{far}\n"))
            .starts_with("AT Alford ")
    );
    // Now (and a little ahead, within the limit) is fine.
    let soon = format!("IAMAT kiwi +34.068930-118.445127 {}", now_text());
    assert!(
        limited
            .ask("Alford", &format!("{soon}\n"))
            .starts_with("AT Alford ")
    );
    // An AT from the future is dropped, with no answer, and logged.
    assert_eq!(limited.ask("Alford", &format!("{}\n", forged("ghost"))), "");
    assert!(knows(&limited, "Alford", "ghost").starts_with("? "));
    assert!(limited.log("Alford").contains("too far in the future"));
}

/// A `BUSY` notice (see `pressure`) holds a server's clients, so with a key only a signed
/// one counts; without a key any does, as any AT line does.
#[test]
fn a_busy_notice_counts_only_signed_with_a_key() {
    let key = key_file("authbusy", SECRET);
    let keyed = Herd::start("auth-busy", &[("Alford", &[])], &["--herd-key", &key]);
    let open = Herd::start("auth-busy-open", &[("Alford", &[])], &[]);

    keyed.ask("Alford", "BUSY Parker 5 1\n");
    eventually("the unsigned notice is ignored", || {
        keyed
            .log("Alford")
            .contains("BUSY notice without the herd's tag ignored")
    });
    assert!(!keyed.log("Alford").contains("clients held"));
    keyed.ask(
        "Alford",
        &format!("{}\n", signed("BUSY Parker 6 1", SECRET)),
    );
    eventually("the signed notice holds the clients", || {
        keyed
            .log("Alford")
            .contains("clients held: Parker is behind")
    });
    // It lapses by itself: nobody repeats it. And a lapsed notice gives the loop nothing
    // more to wake for (it once woke for it without end, spinning a core).
    eventually("the notice lapses", || {
        keyed.log("Alford").contains("clients read again")
    });
    let pid = keyed.pid("Alford");
    let before = cpu_ticks(pid);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let ticks = cpu_ticks(pid) - before;
    assert!(
        ticks < 20,
        "an idle server used {ticks} CPU ticks in a second"
    );

    open.ask("Alford", "BUSY Parker 5 1\n");
    eventually("without a key, any notice counts", || {
        open.log("Alford")
            .contains("clients held: Parker is behind")
    });
}
