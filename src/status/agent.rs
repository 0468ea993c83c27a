//! The agent check, and the bounded probes the checks use: a unix-socket connect with a
//! deadline, and a child process with a deadline and capped output.
//!
//! The agent is asked by the installed hook itself (`tetragon-oci-hook server-version`), so the
//! setup tool links no gRPC client, and a hook that cannot run shows here too.

use std::io::Read as _;
use std::os::fd::AsFd as _;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{Check, Verdict};

/// The most of a child's stdout or stderr kept.
pub const OUTPUT_MAX: usize = 16 * 1024;

/// Connects to the unix socket `path` without blocking past `timeout`, then closes it.
pub fn connect_unix(path: &Path, timeout: Duration) -> std::io::Result<()> {
    use rustix::event::{PollFd, PollFlags};
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    match rustix::net::connect(&fd, &SocketAddrUnix::new(path)?) {
        Ok(()) => Ok(()),
        // Unix sockets do not complete later: EAGAIN is a full backlog.
        Err(rustix::io::Errno::AGAIN) => Err(std::io::Error::other(
            "nothing accepts connections on it (listen backlog full)",
        )),
        Err(rustix::io::Errno::INPROGRESS) => {
            let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
            let ts = rustix::event::Timespec::try_from(timeout).unwrap_or_default();
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(1) => Ok(()),
                Ok(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                )),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// What a bounded child did.
#[derive(Debug)]
pub struct ChildOutput {
    /// Its exit status; `None` when it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// The first [`OUTPUT_MAX`] bytes of its stdout.
    pub stdout: Vec<u8>,
    /// The first [`OUTPUT_MAX`] bytes of its stderr.
    pub stderr: Vec<u8>,
}

/// Runs `cmd` (stdin `/dev/null`) until it exits or `deadline`, when it is killed and reaped.
/// Its output is drained as it comes (past [`OUTPUT_MAX`], discarded), so a chatty child never
/// blocks on a full pipe.
pub fn run_until(cmd: &mut Command, deadline: Instant) -> std::io::Result<ChildOutput> {
    use rustix::event::{PollFd, PollFlags};
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // One type for both pipes, so one loop drains them.
    let as_file = |fd: std::os::fd::OwnedFd| std::fs::File::from(fd);
    let mut out = child.stdout.take().map(|p| as_file(p.into()));
    let mut err = child.stderr.take().map(|p| as_file(p.into()));
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 8192];
    let mut killed = false;
    while out.is_some() || err.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            killed = true;
            break;
        }
        let ts = rustix::event::Timespec::try_from(left).unwrap_or_default();
        let (o, e) = (
            out.as_ref().map(|p| p.as_fd()),
            err.as_ref().map(|p| p.as_fd()),
        );
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(2);
        if let Some(fd) = &o {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        if let Some(fd) = &e {
            fds.push(PollFd::new(fd, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        let mut i = 0;
        for (pipe, keep) in [(&mut out, &mut stdout), (&mut err, &mut stderr)] {
            let Some(p) = pipe.as_mut() else { continue };
            let is_ready = ready[i];
            i += 1;
            if !is_ready {
                continue;
            }
            match p.read(&mut buf) {
                Ok(0) => *pipe = None,
                Ok(n) => {
                    let room = OUTPUT_MAX.saturating_sub(keep.len());
                    keep.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => *pipe = None,
            }
        }
    }
    let status = loop {
        if killed {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() >= deadline {
            killed = true;
            continue;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    Ok(ChildOutput {
        status,
        stdout,
        stderr,
    })
}

/// What the agent check found.
#[derive(Debug)]
pub struct AgentFound {
    /// The check.
    pub check: Check,
    /// Whether the agent answered.
    pub reachable: bool,
}

/// `agent` when the hook binary is not safe to run ([`super::binary::safe_to_run`]: `why`).
pub fn not_run(hook: &Path, why: &str) -> AgentFound {
    AgentFound {
        check: Check::new(
            "agent",
            Verdict::Fail,
            "not asked: the hook binary cannot be run safely",
        )
        .evidence(format!("{}: {}", hook.display(), super::cut(why, 300)))
        .help("see the `binary` check"),
        reachable: false,
    }
}

/// `agent`: runs `<hook> server-version --grpc-address <address>` until `deadline`: the agent
/// answers with its version. The hook logs to stderr (`--log-fname /dev/null` is not a regular
/// file), never to its log file: `status` writes nothing.
pub fn check(hook: &Path, address: &str, deadline: Instant) -> AgentFound {
    const ID: &str = "agent";
    let left = deadline.saturating_duration_since(Instant::now());
    // The hook's own bound a little inside ours, so that its error says what happened.
    let grpc = left.mul_f64(0.8).max(Duration::from_millis(1));
    let mut cmd = Command::new(hook);
    cmd.args(["--log-fname", "/dev/null", "--log-level", "error"])
        .arg("--grpc-address")
        .arg(address)
        .arg("--grpc-timeout")
        .arg(format!("{}ms", grpc.as_millis().max(1)))
        .arg("server-version");
    let fix = format!(
        "start the Tetragon agent, or pass its address: `--grpc-address` (here `{address}`) \
         must be what the hook's `hook-args` use; check its pods: `kubectl -n kube-system get \
         pods -l app.kubernetes.io/name=tetragon`"
    );
    let unreachable = |summary: String, evidence: String| AgentFound {
        check: Check::new(ID, Verdict::Fail, summary)
            .evidence(format!("address {address}"))
            .evidence(evidence)
            .help(fix.clone()),
        reachable: false,
    };
    match run_until(&mut cmd, deadline) {
        Err(e) => AgentFound {
            check: Check::new(ID, Verdict::Fail, "cannot run the hook to ask the agent")
                .evidence(format!("{}: {e}", hook.display()))
                .help("see the `binary` check"),
            reachable: false,
        },
        Ok(ChildOutput { status: None, .. }) => unreachable(
            format!("the agent did not answer within {} ms", left.as_millis()),
            format!("`{} server-version` killed at the deadline", hook.display()),
        ),
        Ok(out) if out.status.is_some_and(|s| s.success()) => {
            let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            AgentFound {
                check: Check::new(
                    ID,
                    Verdict::Ok,
                    format!("the agent answers, version {}", super::cut(&version, 100)),
                )
                .evidence(format!("address {address}")),
                reachable: true,
            }
        }
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
                .unwrap_or("no error text");
            unreachable("the agent is unreachable".to_owned(), super::cut(why, 300))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_past_its_deadline_is_killed_and_its_output_capped() {
        let start = Instant::now();
        let out = run_until(
            Command::new("sh").args(["-c", "head -c 100000 /dev/zero; sleep 5"]),
            Instant::now() + Duration::from_millis(300),
        )
        .unwrap();
        assert!(out.status.is_none());
        assert_eq!(out.stdout.len(), OUTPUT_MAX);
        assert!(start.elapsed() < Duration::from_secs(2));
        let out = run_until(
            Command::new("sh").args(["-c", "echo hi; echo err >&2; exit 3"]),
            Instant::now() + Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out.status.unwrap().code(), Some(3));
        assert_eq!(
            (&out.stdout[..], &out.stderr[..]),
            (&b"hi\n"[..], &b"err\n"[..])
        );
    }

    #[test]
    fn a_missing_hook_binary_fails_the_agent_check() {
        let f = check(
            Path::new("/nonexistent/tetragon-oci-hook"),
            "unix:///nonexistent.sock",
            Instant::now() + Duration::from_secs(1),
        );
        assert_eq!((f.check.result, f.reachable), (Verdict::Fail, false));
    }
}
