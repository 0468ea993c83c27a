//! The one way the tests stop a child process: SIGTERM, a bounded wait, SIGKILL when the bound
//! passes. [`ChildGuard`] does it on drop, so a failed assertion never leaves a daemon behind.
//!
//! ```ignore
//! let mut plugin = ChildGuard::new(Command::new(BIN).args([...]).spawn().unwrap());
//! plugin.signal(libc::SIGTERM);
//! let status = plugin.wait_for(Duration::from_secs(5)).expect("exits on SIGTERM");
//! ```

use std::ops::{Deref, DerefMut};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// How long a child may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends signal `sig` (e.g. `libc::SIGTERM`) to the process `pid`.
pub fn signal_pid(pid: i32, sig: i32) -> std::io::Result<()> {
    let pid = Pid::from_raw(pid).ok_or_else(|| std::io::Error::other("pid 0"))?;
    let sig = Signal::from_named_raw(sig).ok_or_else(|| std::io::Error::other("bad signal"))?;
    kill_process(pid, sig).map_err(Into::into)
}

/// Sends signal `sig` to our child `child`.
pub fn signal(child: &Child, sig: i32) -> std::io::Result<()> {
    kill_process(
        Pid::from_child(child),
        Signal::from_named_raw(sig).ok_or_else(|| std::io::Error::other("bad signal"))?,
    )
    .map_err(Into::into)
}

/// Waits at most `limit` for `child` to exit; `None` if it still runs then (it is left running).
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// Waits at most `limit`, then kills `child` (SIGKILL) and reaps it. Returns its status and
/// whether it had to be killed.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> (Option<ExitStatus>, bool) {
    if let Some(status) = wait_timeout(child, limit) {
        return (Some(status), false);
    }
    let _ = child.kill();
    (child.wait().ok(), true)
}

/// SIGTERM, wait at most `grace`, then SIGKILL; always reaps `child`. Returns its status.
pub fn stop(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = signal(child, libc::SIGTERM);
    wait_or_kill(child, grace).0
}

/// A child process that is stopped ([`stop`]) when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    grace: Duration,
}

impl ChildGuard {
    /// Guards `child`, with [`STOP_TIMEOUT`] between SIGTERM and SIGKILL.
    pub fn new(child: Child) -> Self {
        Self::with_grace(child, STOP_TIMEOUT)
    }

    /// Guards `child`, with `grace` between SIGTERM and SIGKILL.
    pub fn with_grace(child: Child, grace: Duration) -> Self {
        Self { child, grace }
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`); panics if the child cannot be signalled.
    pub fn signal(&self, sig: i32) {
        signal(&self.child, sig).expect("kill(2) on our own child");
    }

    /// Waits at most `limit` for the child to exit; `None` if it still runs.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_timeout(&mut self.child, limit)
    }

    /// SIGTERM, bounded wait, SIGKILL; returns the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        stop(&mut self.child, self.grace)
    }
}

impl Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}
