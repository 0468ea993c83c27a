//! The NRI plugin's state file, `<install-dir>/tetragon-nri-hook.state`: what the running
//! plugin says about itself, and what `status` reads back.
//!
//! The plugin ([`Recorder`]) rewrites it atomically (an unnamed temporary file in the same
//! directory, `fsync`, `rename`: [`crate::plan::install_bytes`], mode 0644, never through a
//! link) when it registers, after it adjusted containers (at most once per
//! [`MIN_WRITE_INTERVAL`], after the reply went out, so a container start never waits for it),
//! every [`HEARTBEAT`] while registered, and when a session ends or fails. It removes the file
//! when it exits on SIGINT/SIGTERM. `status` reads it bounded ([`read`]): a file that is not a
//! regular file of root's (or of the user running `status`), larger than [`MAX_SIZE`], or not
//! this JSON is reported, never trusted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// File name of the state file, in the install dir.
pub const FILE_NAME: &str = "tetragon-nri-hook.state";
/// The plugin rewrites its state at least this often while registered; `status` warns when the
/// state is older than twice this.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// The state is written at most this often for container adjustments.
pub const MIN_WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// The largest state file `status` reads.
pub const MAX_SIZE: u64 = 64 * 1024;
/// The longest `last_error` kept.
pub const MAX_ERROR: usize = 1024;
/// The schema of the file.
pub const SCHEMA_VERSION: u32 = 1;

/// What the plugin writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NriState {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The plugin's pid.
    pub pid: u32,
    /// The plugin's start time (`/proc/<pid>/stat` field 22, clock ticks since boot): with the
    /// pid, it names one process, so a pid reused by another is not taken for the plugin.
    pub start_ticks: u64,
    /// `/proc/self/exe` of the plugin when it wrote the file.
    pub exe: String,
    /// `--nri-hook.name`.
    pub plugin_name: String,
    /// `--nri-hook.index`.
    pub plugin_index: String,
    /// The NRI socket (or the inherited descriptor of a pre-launched plugin).
    pub socket: String,
    /// The hook added to containers: its path on the host.
    pub hook_path: String,
    /// Its full argv.
    pub hook_args: Vec<String>,
    /// Whether the plugin is registered with the runtime now.
    pub registered: bool,
    /// When the current registration completed (RFC 3339, UTC).
    pub registered_since: Option<String>,
    /// The runtime's name from `Configure`.
    pub runtime_name: Option<String>,
    /// The runtime's version from `Configure`.
    pub runtime_version: Option<String>,
    /// Containers the plugin added the hook to since it started.
    pub containers_adjusted: u64,
    /// When it last did (RFC 3339, UTC).
    pub last_adjusted: Option<String>,
    /// The last error (a session that broke, a refused registration), cut at [`MAX_ERROR`].
    pub last_error: Option<String>,
    /// When that error happened.
    pub last_error_at: Option<String>,
    /// When the file was written (RFC 3339, UTC).
    pub updated_at: String,
    /// The same, in seconds since the epoch.
    pub updated_unix: u64,
}

/// Seconds since the epoch, now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_text() -> String {
    oci_hook::log::rfc3339(SystemTime::now(), 3)
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`), if it exists.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `comm` (field 2) may hold spaces and parentheses: count from the last `)`.
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The hand-off between the plugin's thread and the writer thread: the latest snapshot to
/// write (an older one not yet written is replaced), and the last write error.
#[derive(Debug, Default)]
struct Slot {
    latest: Option<Vec<u8>>,
    busy: bool,
    closed: bool,
    error: Option<String>,
}

type Shared = std::sync::Arc<(std::sync::Mutex<Slot>, std::sync::Condvar)>;

/// Keeps the plugin's state and has it written when due, by a thread of its own: the thread
/// answering the runtime never waits for the file system (`fsync`, `rename`). Write errors are
/// handed back by [`Recorder::tick`] for the plugin to log; they never stop it.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    state: NriState,
    /// When a container last got the hook: formatted into the state only when it is written,
    /// so [`Recorder::adjusted`] (on every `CreateContainer`) neither allocates nor locks.
    last_adjusted_at: Option<SystemTime>,
    /// Set by the writer thread when a write failed: [`Recorder::tick`] takes the lock only
    /// then.
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    last_write: Option<Instant>,
    dirty: bool,
    shared: Shared,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// The writer thread: writes the latest snapshot until closed.
fn write_loop(
    path: PathBuf,
    shared: Shared,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    let (lock, cvar) = &*shared;
    loop {
        let bytes = {
            let mut slot = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                if let Some(b) = slot.latest.take() {
                    slot.busy = true;
                    break b;
                }
                if slot.closed {
                    return;
                }
                slot = cvar
                    .wait(slot)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        let result = crate::plan::install_bytes(&path, &bytes, 0o644);
        let mut slot = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.busy = false;
        if let Err(e) = result {
            slot.error = Some(format!("{e:#}"));
            failed.store(true, std::sync::atomic::Ordering::Release);
        }
        cvar.notify_all();
    }
}

impl Recorder {
    /// A recorder writing `path` for this process.
    pub fn new(
        path: PathBuf,
        plugin_name: &str,
        plugin_index: &str,
        socket: &str,
        hook: &crate::hook_invocation::HookInvocation,
    ) -> Self {
        let pid = std::process::id();
        Self {
            path,
            state: NriState {
                schema_version: SCHEMA_VERSION,
                pid,
                start_ticks: start_ticks(pid).unwrap_or(0),
                exe: std::fs::read_link("/proc/self/exe")
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                plugin_name: plugin_name.to_owned(),
                plugin_index: plugin_index.to_owned(),
                socket: socket.to_owned(),
                hook_path: hook.path.clone(),
                hook_args: hook.args(),
                registered: false,
                registered_since: None,
                runtime_name: None,
                runtime_version: None,
                containers_adjusted: 0,
                last_adjusted: None,
                last_error: None,
                last_error_at: None,
                updated_at: String::new(),
                updated_unix: 0,
            },
            last_adjusted_at: None,
            failed: std::sync::Arc::default(),
            last_write: None,
            dirty: true,
            shared: Shared::default(),
            writer: None,
        }
    }

    /// The state as it stands.
    pub fn state(&self) -> &NriState {
        &self.state
    }

    /// The path written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hook changed (a pre-launched plugin learns it in `Configure`).
    pub fn set_hook(&mut self, hook: &crate::hook_invocation::HookInvocation) {
        self.state.hook_path = hook.path.clone();
        self.state.hook_args = hook.args();
        self.dirty = true;
    }

    /// `Configure` named the runtime.
    pub fn configured(&mut self, runtime_name: &str, runtime_version: &str) {
        self.state.runtime_name = Some(runtime_name.to_owned());
        self.state.runtime_version = Some(runtime_version.to_owned());
        self.dirty = true;
    }

    /// Registration completed: written at once.
    pub fn registered(&mut self) -> anyhow::Result<()> {
        self.state.registered = true;
        self.state.registered_since = Some(now_text());
        self.write()
    }

    /// A container got the hook: counted, written by [`Recorder::tick`] when due.
    pub fn adjusted(&mut self) {
        self.state.containers_adjusted += 1;
        self.last_adjusted_at = Some(SystemTime::now());
        self.dirty = true;
    }

    /// The session ended (`error`: why, if it failed): written at once.
    pub fn unregistered(&mut self, error: Option<&str>) -> anyhow::Result<()> {
        self.state.registered = false;
        self.state.registered_since = None;
        if let Some(e) = error {
            let mut e = e.replace('\n', "; ");
            if e.len() > MAX_ERROR {
                let mut end = MAX_ERROR;
                while !e.is_char_boundary(end) {
                    end -= 1;
                }
                e.truncate(end);
                e.push_str(" [...cut]");
            }
            self.state.last_error = Some(e);
            self.state.last_error_at = Some(now_text());
        }
        self.write()
    }

    /// How long until a write is due (`None`: none is, nothing changed and not registered).
    pub fn due_in(&self) -> Option<Duration> {
        let since = self.last_write.map_or(Duration::MAX, |t| t.elapsed());
        let dirty = self.dirty.then(|| MIN_WRITE_INTERVAL.saturating_sub(since));
        let beat = self
            .state
            .registered
            .then(|| HEARTBEAT.saturating_sub(since));
        match (dirty, beat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Has the state written if a write is due (`Ok(false)` when none was); returns the error
    /// of an earlier write that failed since the last call.
    pub fn tick(&mut self) -> anyhow::Result<bool> {
        let due = self.due_in().is_some_and(|d| d.is_zero());
        if due {
            self.write()?;
        } else {
            self.take_error()?;
        }
        Ok(due)
    }

    fn take_error(&self) -> anyhow::Result<()> {
        if !self
            .failed
            .swap(false, std::sync::atomic::Ordering::Acquire)
        {
            return Ok(());
        }
        let (lock, _) = &*self.shared;
        let error = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .error
            .take();
        match error {
            Some(e) => Err(anyhow::anyhow!("`{}`: {e}", self.path.display())),
            None => Ok(()),
        }
    }

    /// Hands the state to the writer thread now (started on first use); returns the error of an
    /// earlier write that failed.
    pub fn write(&mut self) -> anyhow::Result<()> {
        self.state.updated_at = now_text();
        if let Some(t) = self.last_adjusted_at {
            self.state.last_adjusted = Some(oci_hook::log::rfc3339(t, 3));
        }
        self.state.updated_unix = unix_now();
        self.last_write = Some(Instant::now());
        self.dirty = false;
        let mut text = serde_json::to_string_pretty(&self.state)?;
        text.push('\n');
        if self.writer.is_none() {
            let (path, shared, failed) =
                (self.path.clone(), self.shared.clone(), self.failed.clone());
            self.writer = Some(
                std::thread::Builder::new()
                    .name("nri-state".to_owned())
                    .spawn(move || write_loop(path, shared, failed))?,
            );
        }
        let (lock, cvar) = &*self.shared;
        lock.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .latest = Some(text.into_bytes());
        cvar.notify_all();
        self.take_error()
    }

    /// Waits until every state handed over is written (or `limit` passes); returns the error
    /// of a write that failed.
    pub fn flush(&self, limit: Duration) -> anyhow::Result<()> {
        let (lock, cvar) = &*self.shared;
        let deadline = Instant::now() + limit;
        let mut slot = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while slot.latest.is_some() || slot.busy {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            slot = cvar
                .wait_timeout(slot, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        drop(slot);
        self.take_error()
    }

    /// Removes the file (the plugin exits cleanly), after the writer thread has stopped (at
    /// most 1 s is waited for a write in progress). A link there is removed, not followed.
    pub fn remove(&mut self) -> std::io::Result<()> {
        {
            let (lock, cvar) = &*self.shared;
            let mut slot = lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            slot.latest = None;
            slot.closed = true;
            cvar.notify_all();
        }
        let _ = self.flush(Duration::from_secs(1));
        if let Some(w) = self.writer.take() {
            if w.is_finished() {
                let _ = w.join();
            }
        }
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Why a state file is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// No file.
    Absent,
    /// A symlink, FIFO, device, socket or directory.
    NotRegular(String),
    /// Owned by another user than root or the user running `status`.
    ForeignOwner(u32),
    /// Larger than [`MAX_SIZE`].
    TooLarge(u64),
    /// Not our JSON.
    Garbage(String),
    /// Could not be read.
    Unreadable(String),
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Absent => write!(f, "no state file"),
            Self::NotRegular(kind) => write!(f, "the state file is {kind}, not a regular file"),
            Self::ForeignOwner(uid) => {
                write!(f, "the state file belongs to uid {uid}, not to root")
            }
            Self::TooLarge(size) => write!(
                f,
                "the state file is {size} bytes, more than the {MAX_SIZE} a state file has"
            ),
            Self::Garbage(e) => write!(f, "the state file is not the plugin's JSON: {e}"),
            Self::Unreadable(e) => write!(f, "the state file cannot be read: {e}"),
        }
    }
}

/// Reads the state file at `path`: never through a link, nothing but a regular file of root
/// (or of the effective user), at most [`MAX_SIZE`] bytes, and it must parse.
pub fn read(path: &Path) -> Result<NriState, Unusable> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Unusable::Absent),
        Err(e) => return Err(Unusable::Unreadable(e.to_string())),
        Ok(m) => m,
    };
    let kind = |ft: std::fs::FileType| {
        use std::os::unix::fs::FileTypeExt as _;
        if ft.is_symlink() {
            "a symlink"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        }
    };
    if !meta.is_file() {
        let mut what = kind(meta.file_type()).to_owned();
        if meta.file_type().is_symlink() {
            if let Ok(to) = std::fs::read_link(path) {
                what = format!("a symlink (to `{}`)", to.display());
            }
        }
        return Err(Unusable::NotRegular(what));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Unusable::Unreadable(e.to_string()))?;
    let fmeta = file
        .metadata()
        .map_err(|e| Unusable::Unreadable(e.to_string()))?;
    if !fmeta.is_file() {
        return Err(Unusable::NotRegular(kind(fmeta.file_type()).to_owned()));
    }
    if fmeta.uid() != 0 && fmeta.uid() != crate::sys::euid() {
        return Err(Unusable::ForeignOwner(fmeta.uid()));
    }
    if fmeta.len() > MAX_SIZE {
        return Err(Unusable::TooLarge(fmeta.len()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Unusable::Unreadable(e.to_string()))?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(Unusable::TooLarge(bytes.len() as u64));
    }
    let state: NriState = serde_json::from_slice(&bytes).map_err(|e| {
        let mut msg = e.to_string();
        msg.truncate(200);
        Unusable::Garbage(msg)
    })?;
    if state.schema_version != SCHEMA_VERSION {
        return Err(Unusable::Garbage(format!(
            "schema_version {}, expected {SCHEMA_VERSION}",
            state.schema_version
        )));
    }
    Ok(state)
}

/// Whether the process the state names is alive and is the plugin that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Same pid, same start time.
    Alive,
    /// No process with that pid.
    Gone,
    /// The pid is another process now (start time or executable differ).
    Reused(String),
}

/// Checks `state.pid` against `/proc`.
pub fn liveness(state: &NriState) -> Liveness {
    let Some(ticks) = start_ticks(state.pid) else {
        return Liveness::Gone;
    };
    if ticks != state.start_ticks {
        return Liveness::Reused(format!(
            "pid {} started at tick {ticks}, the plugin at tick {}",
            state.pid, state.start_ticks
        ));
    }
    match std::fs::read_link(format!("/proc/{}/exe", state.pid)) {
        Ok(exe) => {
            let exe = exe.display().to_string();
            // A binary replaced on disk since it started reads as `... (deleted)`.
            if exe == state.exe || exe.strip_suffix(" (deleted)") == Some(state.exe.as_str()) {
                Liveness::Alive
            } else {
                Liveness::Reused(format!(
                    "pid {} runs `{exe}`, not `{}`",
                    state.pid, state.exe
                ))
            }
        }
        // Not ours to read (another user's process in a hardened /proc): trust the start time.
        Err(_) => Liveness::Alive,
    }
}

/// Seconds since the state was written (0 when its clock is ahead of ours).
pub fn age(state: &NriState) -> u64 {
    unix_now().saturating_sub(state.updated_unix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hook_invocation::HookInvocation;

    fn recorder(dir: &Path) -> Recorder {
        Recorder::new(
            dir.join(FILE_NAME),
            "tetragon",
            "01",
            "/var/run/nri/nri.sock",
            &HookInvocation::in_dir("/opt/tetragon", "tetragon-oci-hook", vec![]),
        )
    }

    #[test]
    fn written_state_reads_back_and_names_this_live_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        r.configured("containerd", "v2.1.9");
        r.registered().unwrap();
        r.flush(Duration::from_secs(5)).unwrap();
        let s = read(r.path()).unwrap();
        assert_eq!(&s, r.state());
        assert!(s.registered && s.registered_since.is_some());
        assert_eq!(s.runtime_version.as_deref(), Some("v2.1.9"));
        assert_eq!(liveness(&s), Liveness::Alive);
        assert!(age(&s) <= 1);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(r.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        r.remove().unwrap();
        assert_eq!(read(r.path()), Err(Unusable::Absent));
    }

    #[test]
    fn a_container_adjustment_takes_no_lock_and_its_time_is_written_later() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        r.registered().unwrap();
        r.flush(Duration::from_secs(5)).unwrap();
        // The writer's lock held elsewhere: adjusting and ticking (nothing due) still return.
        let shared = r.shared.clone();
        let guard = shared.0.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..1000 {
                    r.adjusted();
                    assert!(!r.tick().unwrap());
                }
                tx.send(()).unwrap();
            });
            let done = rx.recv_timeout(Duration::from_secs(5));
            drop(guard);
            assert!(
                done.is_ok(),
                "adjusted() or tick() waited for the writer's lock"
            );
        });
        assert_eq!(r.state().last_adjusted, None);
        r.last_write = Some(Instant::now() - MIN_WRITE_INTERVAL);
        assert!(r.tick().unwrap());
        r.flush(Duration::from_secs(5)).unwrap();
        let st = read(r.path()).unwrap();
        assert_eq!(st.containers_adjusted, 1000);
        assert!(
            st.last_adjusted.as_ref().is_some_and(|t| t.len() >= 20),
            "{st:?}"
        );
    }

    #[test]
    fn the_plugin_replaces_a_link_at_the_state_path_and_never_writes_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep me\n").unwrap();
        let mut r = recorder(dir.path());
        std::os::unix::fs::symlink(&victim, r.path()).unwrap();
        r.registered().unwrap();
        r.flush(Duration::from_secs(5)).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
        let meta = std::fs::symlink_metadata(r.path()).unwrap();
        assert!(meta.is_file(), "{meta:?}");
        assert!(read(r.path()).unwrap().registered);
        // Removed on exit: the file, never what a link there points at.
        std::fs::remove_file(r.path()).unwrap();
        std::os::unix::fs::symlink(&victim, r.path()).unwrap();
        r.remove().unwrap();
        assert!(std::fs::symlink_metadata(r.path()).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me\n");
    }

    #[test]
    fn adjustments_are_written_at_most_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        r.registered().unwrap();
        r.adjusted();
        r.flush(Duration::from_secs(5)).unwrap();
        // Just written: the next write is due in about a second, not now.
        assert!(!r.tick().unwrap());
        assert!(r.due_in().unwrap() > Duration::from_millis(500));
        assert_eq!(read(r.path()).unwrap().containers_adjusted, 0);
        r.last_write = Some(Instant::now() - MIN_WRITE_INTERVAL);
        assert!(r.tick().unwrap());
        r.flush(Duration::from_secs(5)).unwrap();
        assert_eq!(read(r.path()).unwrap().containers_adjusted, 1);
        // Clean and registered: only the heartbeat is due.
        assert!(r.due_in().unwrap() > HEARTBEAT - Duration::from_secs(1));
    }

    #[test]
    fn a_pid_with_another_start_time_is_not_the_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = recorder(dir.path());
        r.write().unwrap();
        r.flush(Duration::from_secs(5)).unwrap();
        let mut s = read(r.path()).unwrap();
        s.start_ticks += 1;
        assert!(matches!(liveness(&s), Liveness::Reused(_)));
        s.pid = u32::MAX - 1;
        assert_eq!(liveness(&s), Liveness::Gone);
    }

    #[test]
    fn hostile_state_files_are_refused_with_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let target = dir.path().join("elsewhere");
        let mut r = recorder(dir.path());
        r.write().unwrap();
        r.flush(Duration::from_secs(5)).unwrap();
        std::fs::rename(r.path(), &target).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(matches!(read(&path), Err(Unusable::NotRegular(k)) if k.contains("symlink")));
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "{\"pid\": 1, garbage").unwrap();
        assert!(matches!(read(&path), Err(Unusable::Garbage(_))));
        std::fs::write(&path, vec![b' '; MAX_SIZE as usize + 1]).unwrap();
        assert_eq!(read(&path), Err(Unusable::TooLarge(MAX_SIZE + 1)));
        std::fs::remove_file(&path).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &path,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        assert!(matches!(read(&path), Err(Unusable::NotRegular(k)) if k == "a FIFO"));
        std::fs::remove_file(&path).unwrap();
        std::fs::copy(&target, &path).unwrap();
        if crate::sys::is_root() {
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            assert_eq!(read(&path), Err(Unusable::ForeignOwner(65534)));
        }
    }
}
