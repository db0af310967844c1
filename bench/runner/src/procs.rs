//! Every process the runner starts, and how each one is stopped — on success, on error and on
//! Ctrl-C alike.
//!
//! Children run in their own process group (so a signal reaches a shell's children too) with
//! `PR_SET_PDEATHSIG`, so even a runner killed with SIGKILL takes its children with it. Their
//! process-group ids sit in a fixed table of atomics, which the signal handler can read
//! without locking: on SIGINT/SIGTERM/SIGHUP it kills every group and exits.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

const SLOTS: usize = 256;
static GROUPS: [AtomicI32; SLOTS] = [const { AtomicI32::new(0) }; SLOTS];

extern "C" fn on_signal(_sig: libc::c_int) {
    for g in &GROUPS {
        let pgid = g.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: kill is async-signal-safe.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
    // SAFETY: _exit is async-signal-safe; 130 is the shell's code for "killed by SIGINT".
    unsafe { libc::_exit(130) }
}

/// Installs the handler that stops every child on SIGINT, SIGTERM and SIGHUP.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

fn remember(pgid: i32) {
    for g in &GROUPS {
        if g.compare_exchange(0, pgid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
    }
}

fn forget(pgid: i32) {
    for g in &GROUPS {
        let _ = g.compare_exchange(pgid, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// A child process that is stopped (its whole group) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `sh -c "exec CMD"` (so the pid is the program's own, for `/proc` figures),
    /// with stdout and stderr to `log` and `extra_env` added to the environment.
    pub fn spawn(
        name: &str,
        cmd: &str,
        log: &Path,
        extra_env: &[(&str, &str)],
    ) -> Result<Proc, String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("exec {cmd}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        for (k, v) in extra_env {
            command.env(k, v);
        }
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| format!("start {name}: {e}"))?;
        remember(child.id() as i32);
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has ended already.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits at most `limit` for the child to end by itself; kills it past that.
    pub fn wait_for(&mut self, limit: Duration) -> Result<std::process::ExitStatus, String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                self.stop();
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop();
        Err(format!(
            "{} did not finish within {limit:?}: killed",
            self.name
        ))
    }

    /// SIGKILL to the group at once (a crash, not a stop); reaps the child.
    pub fn kill(&mut self) {
        let pgid = self.child.id() as i32;
        if self.exited().is_none() {
            // SAFETY: signalling our own child's process group, not reaped yet.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
        forget(pgid);
    }

    /// SIGTERM to the group without waiting, so several children can wind down at once
    /// before `stop` waits for each.
    pub fn terminate(&mut self) {
        if self.exited().is_none() {
            // SAFETY: signalling our own child's process group, not reaped yet.
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGTERM);
            }
        }
    }

    /// SIGTERM to the group, up to two seconds' grace, then SIGKILL; reaps the child.
    /// Signals go only to a group whose leader is not reaped yet, so never to a stranger
    /// that happens to get the same id later.
    pub fn stop(&mut self) {
        let pgid = self.child.id() as i32;
        if self.exited().is_none() {
            // SAFETY: signalling our own child's process group.
            unsafe {
                libc::kill(-pgid, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline && self.exited().is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.exited().is_none() {
                // SAFETY: as above.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
                let _ = self.child.wait();
            }
        }
        forget(pgid);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}
