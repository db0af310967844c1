//! Hosts instead of ports (tests/hosts.rs): one Linux network namespace per host, each with
//! one interface (`eth0`) cabled by a veth pair to a bridge in a *hub* namespace. The hub
//! has two bridges, `left` and `right`, joined by one more veth pair, the *cut*: taking it
//! down splits the network in two while each half keeps working.
//!
//! ```text
//!   alford ─┐                              ┌─ bolden
//!           ├─ [left] ══ cut ══ [right] ───┼─ hamilton
//!   powell ─┘          (hub namespace)     └─ parker
//! ```
//!
//! Everything is created inside namespaces made here (nothing is added to the test's own),
//! under names unique to the process and the run, and removed on drop, also when the test
//! fails. The addresses (10.131.0.0/24 and fd31:131::/64) exist only inside them, so the test
//! reaches a server by entering its host's namespace ([`inside`]). Needs root and `ip`
//! (iproute2): [`why_not`] says which is missing.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why these tests cannot run here, if they cannot: not root, or no `ip` command.
pub fn why_not() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root (network namespaces need it)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("no `ip` command (install iproute2)".into()),
    }
}

/// Runs `ip ARGS`, panicking with its error output if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("cannot run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `ip ARGS` where failure is expected and harmless (removing what may not exist).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

/// Runs `f` on a thread that has entered network namespace `netns`: sockets it opens live
/// there (and keep working when handed back), and threads it starts are born there too.
pub fn inside<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let file = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: the descriptor is open for the call; setns changes only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        });
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// One host of the LAN.
#[derive(Debug, Clone)]
pub struct Host {
    /// The server's name (Alford, …).
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// Its IPv4 address.
    pub v4: Ipv4Addr,
    /// Its IPv6 address.
    pub v6: Ipv6Addr,
    /// The MAC address of its `eth0`, the same again after a reboot (same card).
    pub mac: String,
    /// The hub end of its cable (an interface in the hub namespace).
    cable: String,
    /// The bridge its cable is plugged into.
    bridge: &'static str,
}

impl Host {
    /// Its address of one family.
    pub fn ip(&self, v6: bool) -> IpAddr {
        if v6 { self.v6.into() } else { self.v4.into() }
    }
}

/// The namespaces, bridges and cables of one test; all removed on drop.
pub struct Lan {
    hub: String,
    /// Every host, in the order given.
    pub hosts: Vec<Host>,
}

impl Lan {
    /// Builds the hub, its two bridges joined by the cut, and one host per name: `left` on
    /// the left bridge, `right` on the right.
    pub fn new(left: &[&str], right: &[&str]) -> Lan {
        static RUN: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "ph{}x{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::SeqCst)
        );
        let hub = format!("{prefix}-hub");
        let sides = left.iter().map(|n| (n, "left"));
        let sides = sides.chain(right.iter().map(|n| (n, "right")));
        let hosts = sides
            .enumerate()
            .map(|(i, (name, bridge))| {
                let n = i as u8 + 1;
                Host {
                    name: name.to_string(),
                    netns: format!("{prefix}-{}", name.to_lowercase()),
                    v4: Ipv4Addr::new(10, 131, 0, n),
                    v6: Ipv6Addr::new(0xfd31, 0x131, 0, 0, 0, 0, 0, n.into()),
                    mac: format!("02:31:00:00:00:{n:02x}"),
                    // Interface names are at most 15 bytes; these live only in the hub.
                    cable: name.to_lowercase().chars().take(15).collect(),
                    bridge,
                }
            })
            .collect();
        // The guard exists before anything is created, so a failure half-way still removes
        // what was made.
        let lan = Lan { hub, hosts };
        let hub = lan.hub.as_str();
        ip_quiet(&["netns", "del", hub]); // a leftover of a killed run with our pid
        ip(&["netns", "add", hub]);
        for bridge in ["left", "right"] {
            // No multicast snooping: IPv6 neighbour discovery must be flooded, not filtered.
            let add = ["-n", hub, "link", "add", bridge, "type", "bridge"];
            ip(&[&add[..], &["mcast_snooping", "0"]].concat());
            ip(&["-n", hub, "link", "set", bridge, "up"]);
        }
        let cut = ["-n", hub, "link", "add", "cut-l", "type", "veth"];
        ip(&[&cut[..], &["peer", "name", "cut-r"]].concat());
        for (end, bridge) in [("cut-l", "left"), ("cut-r", "right")] {
            ip(&["-n", hub, "link", "set", end, "master", bridge, "up"]);
        }
        for host in &lan.hosts {
            lan.add_host(&host.name);
        }
        lan
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Creates host `name`'s namespace and cables it to its bridge, addresses and all (also
    /// what brings a host back after [`remove_host`](Self::remove_host)).
    pub fn add_host(&self, name: &str) {
        let host = self.host(name);
        let (ns, hub) = (host.netns.as_str(), self.hub.as_str());
        ip_quiet(&["netns", "del", ns]);
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        let cable = [
            "-n",
            hub,
            "link",
            "add",
            &host.cable,
            "type",
            "veth",
            "peer",
        ];
        let card = ["name", "eth0", "address", &host.mac, "netns", ns];
        ip(&[&cable[..], &card[..]].concat());
        ip(&[
            "-n",
            hub,
            "link",
            "set",
            &host.cable,
            "master",
            host.bridge,
            "up",
        ]);
        let v4 = format!("{}/24", host.v4);
        let v6 = format!("{}/64", host.v6);
        ip(&["-n", ns, "addr", "add", &v4, "dev", "eth0"]);
        // nodad: usable at once, not after a second of duplicate address detection.
        ip(&["-n", ns, "addr", "add", &v6, "dev", "eth0", "nodad"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
    }

    /// Deletes host `name`'s cable: from now on nothing it sends leaves (no FIN, no reset).
    pub fn pull_cable(&self, name: &str) {
        ip(&["-n", &self.hub, "link", "del", &self.host(name).cable]);
    }

    /// Deletes host `name`'s namespace (its processes must be gone for it to really go).
    pub fn remove_host(&self, name: &str) {
        ip(&["netns", "del", &self.host(name).netns]);
    }

    /// Takes host `name`'s cable down at the hub (or back up): frames to it go nowhere.
    pub fn set_cable(&self, name: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&[
            "-n",
            &self.hub,
            "link",
            "set",
            &self.host(name).cable,
            state,
        ]);
    }

    /// Takes the cut between the two bridges down (`true`) or back up.
    pub fn partition(&self, split: bool) {
        let state = if split { "down" } else { "up" };
        ip(&["-n", &self.hub, "link", "set", "cut-l", state]);
    }

    /// Fixes `on`'s ARP entry for `of`, so that no failed ARP lookup ends a connect to `of`
    /// early: with `of`'s cable down, its packets then simply go nowhere.
    pub fn pin_neighbour(&self, on: &str, of: &str) {
        let of = self.host(of);
        let (addr, mac) = (of.v4.to_string(), of.mac.as_str());
        let entry = ["neigh", "replace", &addr, "lladdr", mac, "dev", "eth0"];
        ip(&[
            &["-n", &self.host(on).netns][..],
            &entry[..],
            &["nud", "permanent"],
        ]
        .concat());
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting the hub deletes the bridges and every cable (a veth goes with its peer).
        // A namespace whose server is still running lives until that process exits.
        for host in &self.hosts {
            ip_quiet(&["netns", "del", &host.netns]);
        }
        ip_quiet(&["netns", "del", &self.hub]);
    }
}
