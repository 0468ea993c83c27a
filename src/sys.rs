//! The OS calls of the setup package: termination signals (block, signalfd, wait), file system
//! state (`statvfs`, `access`), `flock`, the effective user, a socket inherited by number, and
//! a child process run with a bounded wait.
//!
//! Everything goes through `rustix` where it has the call; the rest (signal masks and
//! `signalfd`, which `rustix` only offers through its unsafe `runtime` API, taking an
//! inherited descriptor, and `malloc_trim`) is the only `unsafe` code of the setup package, each block with the
//! reason it is sound. Errors are plain [`std::io::Error`]s: callers add what they were doing.

use std::io;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use rustix::fs::{Access, FileType, FlockOperation, StatVfsMountFlags};
use rustix::io::Errno;

/// SIGINT and SIGTERM, blocked so that they can be waited for.
///
/// Create it before doing the work the signals should not interrupt (a signal arriving meanwhile
/// stays pending), and before any thread is started: threads inherit the mask.
#[derive(Debug)]
pub struct TerminationSignals {
    set: libc::sigset_t,
}

impl TerminationSignals {
    /// Blocks SIGINT and SIGTERM for this thread.
    pub fn block() -> io::Result<Self> {
        // SAFETY: `set` is a sigset_t owned here, initialised by `sigemptyset` before it is
        // read; `pthread_sigmask` reads it and accepts a null old-set pointer.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(Self { set })
        }
    }

    /// A signalfd that becomes readable when SIGINT or SIGTERM is pending, for `poll`.
    pub fn signalfd(&self) -> io::Result<OwnedFd> {
        // SAFETY: `self.set` is an initialised sigset_t; -1 asks for a new descriptor.
        let fd = unsafe { libc::signalfd(-1, &self.set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Waits for SIGINT or SIGTERM and returns its name.
    pub fn wait(&self) -> io::Result<&'static str> {
        let mut sig: libc::c_int = 0;
        // SAFETY: `self.set` is an initialised sigset_t and `sig` a valid out-parameter.
        let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        })
    }
}

/// What the file system says about a directory.
#[derive(Debug)]
pub struct DirState {
    /// Mounted read-only.
    pub read_only: bool,
    /// Mounted `noexec`.
    pub noexec: bool,
    /// `access(W_OK)` failed with this error.
    pub not_writable: Option<io::Error>,
}

/// `statvfs` and `access(W_OK)` of `dir`.
pub fn dir_state(dir: &Path) -> io::Result<DirState> {
    let st = rustix::fs::statvfs(dir)?;
    let not_writable = rustix::fs::access(dir, Access::WRITE_OK)
        .err()
        .map(io::Error::from);
    Ok(DirState {
        read_only: st.f_flag.contains(StatVfsMountFlags::RDONLY),
        noexec: st.f_flag.contains(StatVfsMountFlags::NOEXEC),
        not_writable,
    })
}

/// The effective user id.
pub fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// One non-blocking try at an exclusive `flock`: `Ok(false)` when another holder has it (or a
/// signal interrupted the call), so the caller may wait and try again.
pub fn try_lock_exclusive(fd: impl AsFd) -> io::Result<bool> {
    match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(Errno::WOULDBLOCK | Errno::INTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// An exclusive `flock`, tried every 10 ms until `deadline`: `Ok(false)` when another holder
/// still has it then. (A blocking `flock` cannot be bounded, and a lock must never be waited
/// for without a bound.)
pub fn lock_exclusive_until(fd: impl AsFd, deadline: std::time::Instant) -> io::Result<bool> {
    loop {
        if try_lock_exclusive(&fd)? {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// What [`inherited_socket`] found behind a descriptor number.
#[derive(Debug)]
pub enum Inherited {
    /// An open socket, now owned (and close-on-exec).
    Socket(OwnedFd),
    /// Open, but not a socket (left alone).
    NotSocket,
    /// Not an open descriptor.
    NotOpen(io::Error),
}

/// Takes ownership of descriptor `fd`, inherited from the parent (containerd's
/// `NRI_PLUGIN_SOCKET`), if it is an open socket. Call it at most once per number, with a
/// number above 2 that nothing else in the process owns.
pub fn inherited_socket(fd: RawFd) -> Inherited {
    // SAFETY: `libc::stat` is plain data (all zeroes is a valid value), `fstat` accepts any
    // integer (a closed one fails with EBADF) and `st` is a valid out-parameter.
    let (rc, st) = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(fd, &mut st), st)
    };
    if rc != 0 {
        return Inherited::NotOpen(io::Error::last_os_error());
    }
    if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
        return Inherited::NotSocket;
    }
    // SAFETY: the fd is open, was inherited for this purpose, and nothing else owns it (the
    // caller's contract).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC);
    Inherited::Socket(owned)
}

/// How much of a bounded child's stderr [`run_bounded`] keeps.
pub const CHILD_STDERR_MAX: u64 = 16 * 1024;

/// Runs `command` (stdin and stdout to `/dev/null`) and waits at most `timeout` for it:
/// `Ok(None)` when it did not exit in time (it is killed and reaped), else its exit status and
/// the first [`CHILD_STDERR_MAX`] bytes of its stderr. The stderr goes to an unnamed file, not a
/// pipe, so a child writing much to it cannot block on a reader that only reads at the end.
pub fn run_bounded(
    command: &mut std::process::Command,
    timeout: std::time::Duration,
) -> io::Result<Option<(std::process::ExitStatus, Vec<u8>)>> {
    command.stdout(std::process::Stdio::null());
    run_bounded_inner(command, timeout)
}

/// A bounded child's exit status, stdout and stderr (each cut at [`CHILD_STDERR_MAX`] bytes).
pub type ChildOutput = (std::process::ExitStatus, Vec<u8>, Vec<u8>);

/// [`run_bounded`], also keeping the first [`CHILD_STDERR_MAX`] bytes of the child's stdout
/// (also an unnamed file).
pub fn run_bounded_with_stdout(
    command: &mut std::process::Command,
    timeout: std::time::Duration,
) -> io::Result<Option<ChildOutput>> {
    use std::io::{Read, Seek};
    let mut out_file = tempfile::tempfile()?;
    command.stdout(out_file.try_clone()?);
    let Some((status, stderr)) = run_bounded_inner(command, timeout)? else {
        return Ok(None);
    };
    let mut stdout = Vec::new();
    out_file.rewind()?;
    out_file.take(CHILD_STDERR_MAX).read_to_end(&mut stdout)?;
    Ok(Some((status, stdout, stderr)))
}

fn run_bounded_inner(
    command: &mut std::process::Command,
    timeout: std::time::Duration,
) -> io::Result<Option<(std::process::ExitStatus, Vec<u8>)>> {
    use std::io::{Read, Seek};
    use std::process::Stdio;
    let mut err_file = tempfile::tempfile()?;
    let mut child = command
        .stdin(Stdio::null())
        .stderr(err_file.try_clone()?)
        .spawn()?;
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let mut stderr = Vec::new();
    err_file.rewind()?;
    err_file.take(CHILD_STDERR_MAX).read_to_end(&mut stderr)?;
    Ok(Some((status, stderr)))
}

/// Gives the C allocator's free memory back to the kernel (`malloc_trim(0)`: free pages inside
/// the heap too, not only at its top), so that a large structure just dropped does not stay
/// resident while the next one is built.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: `malloc_trim` only walks the allocator's own free lists; it takes no pointer and
    // frees nothing still in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
