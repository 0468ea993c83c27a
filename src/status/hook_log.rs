//! The `hook-log` check: the hook's JSON-lines log (`tetragon-oci-hook.log`) can be written,
//! and what its last [`TAIL`] bytes say about the last hour: containers allowed, containers
//! refused by the fail policy, the last error lines.
//!
//! The messages counted are the hook's own (`oci-hook/src/lib.rs`): `hook request to agent
//! succeeded` and `failCheck determined that we should not fail this container, ...` (allowed),
//! `failing container` (refused).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{Check, Verdict};

/// How much of the end of the log is read.
pub const TAIL: u64 = 1 << 20;
/// How many error lines are shown.
pub const ERRORS_SHOWN: usize = 3;
/// The longest error line shown.
pub const ERROR_LINE_MAX: usize = 300;
/// The window counted.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// What the tail of the log says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Containers the hook let start (agent told, or allowed by the fail policy).
    pub allowed: u64,
    /// Containers the fail policy refused.
    pub refused: u64,
    /// The last error lines (at most [`ERRORS_SHOWN`], each cut at [`ERROR_LINE_MAX`]).
    pub errors: Vec<String>,
    /// Lines that were not JSON (counted, not shown).
    pub garbage: u64,
}

/// Counts the lines of `tail` whose `time` is at or after `since` (RFC 3339 UTC, compared to
/// the second). Lines that are not JSON objects are counted as garbage and skipped.
pub fn summarize(tail: &[u8], since: &str) -> Summary {
    let since = &since[..since.len().min(19)];
    let mut s = Summary::default();
    for line in tail.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            s.garbage += 1;
            continue;
        };
        let time = v["time"].as_str().unwrap_or("");
        if time.len() < 19 || &time[..19] < since {
            continue;
        }
        let msg = v["msg"].as_str().unwrap_or("");
        if msg == "hook request to agent succeeded"
            || msg.starts_with("failCheck determined that we should not fail")
        {
            s.allowed += 1;
        } else if msg == "failing container" {
            s.refused += 1;
        }
        if v["level"]
            .as_str()
            .is_some_and(|l| l.eq_ignore_ascii_case("error"))
        {
            if s.errors.len() == ERRORS_SHOWN {
                s.errors.remove(0);
            }
            s.errors
                .push(super::cut(&String::from_utf8_lossy(line), ERROR_LINE_MAX));
        }
    }
    s
}

/// Reads the last [`TAIL`] bytes of the regular file at `path` (not through a link, not a
/// FIFO), starting at a line boundary.
fn read_tail(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let start = meta.len().saturating_sub(TAIL);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(TAIL).read_to_end(&mut bytes)?;
    if start > 0 {
        // The first line is cut: drop it.
        let first = bytes
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| i + 1);
        bytes.drain(..first);
    }
    Ok(bytes)
}

/// `hook-log` for the log at `path` (as mounted here).
pub fn check(path: &Path) -> Check {
    const ID: &str = "hook-log";
    use std::os::unix::fs::FileTypeExt as _;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let meta = match std::fs::symlink_metadata(path) {
        Err(_) => {
            let writable = rustix::fs::access(dir, rustix::fs::Access::WRITE_OK);
            return match writable {
                Ok(()) => {
                    Check::new(ID, Verdict::Ok, "no hook log yet (no container hooked)").evidence(
                        format!("{}: absent; its directory is writable", path.display()),
                    )
                }
                Err(e) => Check::new(
                    ID,
                    Verdict::Warn,
                    "the hook cannot create its log: its lines go to the runtime's log",
                )
                .evidence(format!("{}: {}", dir.display(), std::io::Error::from(e)))
                .help("install into a writable dir (`--host-install-dir`)"),
            };
        }
        Ok(m) => m,
    };
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_symlink() {
            "a symlink"
        } else if ft.is_fifo() {
            "a FIFO"
        } else {
            "not a regular file"
        };
        return Check::new(
            ID,
            Verdict::Warn,
            format!("the hook log is {what}: the hook refuses it and logs to the runtime's log"),
        )
        .evidence(path.display().to_string())
        .help(format!(
            "remove `{}`; the hook creates it again",
            path.display()
        ));
    }
    let mut check = Check::new(ID, Verdict::Ok, String::new());
    if let Err(e) = rustix::fs::access(path, rustix::fs::Access::WRITE_OK) {
        check.result = Verdict::Warn;
        check.help = Some(format!(
            "make `{}` writable by root (the hook's lines go to the runtime's log meanwhile)",
            path.display()
        ));
        check = check.evidence(format!(
            "{}: not writable: {}",
            path.display(),
            std::io::Error::from(e)
        ));
    }
    let tail = match read_tail(path) {
        Ok(t) => t,
        Err(e) => {
            return Check::new(ID, Verdict::Warn, "cannot read the hook log")
                .evidence(format!("{}: {e}", path.display()))
                .help("check the file's permissions");
        }
    };
    let since = oci_hook::log::rfc3339(SystemTime::now() - WINDOW, 0);
    let s = summarize(&tail, &since);
    check.summary = format!(
        "last hour: {} container(s) allowed, {} refused by the fail policy, {} error line(s)",
        s.allowed,
        s.refused,
        s.errors.len()
    );
    check = check.evidence(format!(
        "{} (last {} KiB read)",
        path.display(),
        tail.len().div_ceil(1024)
    ));
    if s.refused > 0 || !s.errors.is_empty() {
        check.result = check.result.max(Verdict::Warn);
        check.help.get_or_insert_with(|| {
            format!(
                "read the lines above in `{}`: a refused container means the agent was \
                 unreachable when it started (see the `agent` check)",
                path.display()
            )
        });
    }
    check.evidence.extend(s.errors);
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINCE: &str = "2026-01-01T10:00:00Z";

    #[test]
    fn counts_allowed_and_refused_in_the_window_and_keeps_the_last_errors() {
        let log = [
            r#"{"time":"2026-01-01T09:59:59.9Z","level":"error","msg":"failing container"}"#,
            r#"{"time":"2026-01-01T10:00:00.1Z","level":"info","msg":"hook request to agent succeeded"}"#,
            r#"{"time":"2026-01-01T10:00:01Z","level":"info","msg":"failCheck determined that we should not fail this container, even if there was an error"}"#,
            "garbage {{{",
            r#"{"time":"2026-01-01T10:00:02Z","level":"error","msg":"failing container","reason":"x"}"#,
            r#"{"time":"2026-01-01T10:00:03Z","level":"error","msg":"e1"}"#,
            r#"{"time":"2026-01-01T10:00:04Z","level":"error","msg":"e2"}"#,
            r#"{"time":"2026-01-01T10:00:05Z","level":"error","msg":"e3"}"#,
        ]
        .join("\n");
        let s = summarize(log.as_bytes(), SINCE);
        assert_eq!((s.allowed, s.refused, s.garbage), (2, 1, 1));
        assert_eq!(s.errors.len(), 3);
        assert!(s.errors[0].contains("e1") && s.errors[2].contains("e3"));
    }

    #[test]
    fn long_error_lines_are_cut() {
        let long = format!(
            r#"{{"time":"2026-01-01T10:00:00Z","level":"error","msg":"{}"}}"#,
            "x".repeat(10_000)
        );
        let s = summarize(long.as_bytes(), SINCE);
        assert!(s.errors[0].len() <= ERROR_LINE_MAX + 3);
    }

    #[test]
    fn a_huge_log_is_read_only_at_its_end_and_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tetragon-oci-hook.log");
        let now = oci_hook::log::rfc3339(SystemTime::now(), 3);
        let mut text = "x".repeat(5 << 20);
        text.push('\n');
        text.push_str(&format!(
            "{{\"time\":\"{now}\",\"level\":\"error\",\"msg\":\"failing container\"}}\n"
        ));
        std::fs::write(&path, &text).unwrap();
        let c = check(&path);
        assert_eq!(c.result, Verdict::Warn, "{c:?}");
        assert!(c.summary.contains("1 refused"), "{c:?}");
        assert!(c.evidence[0].contains("last 1024 KiB") || c.evidence[0].contains("KiB"));
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(check(&link).summary.contains("symlink"));
        assert_eq!(check(&dir.path().join("none.log")).result, Verdict::Ok);
    }

    #[test]
    fn a_fifo_a_device_or_a_link_to_a_secret_at_the_log_path_is_never_opened_or_shown() {
        let dir = tempfile::tempdir().unwrap();
        let start = std::time::Instant::now();
        // A FIFO nobody writes to: opening it for reading would block forever.
        let fifo = dir.path().join("fifo.log");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o666),
            0,
        )
        .unwrap();
        let c = check(&fifo);
        assert!(c.summary.contains("a FIFO"), "{c:?}");
        // A secret holding a JSON error line, reached through a link: not read, not shown.
        let secret = dir.path().join("secret");
        std::fs::write(
            &secret,
            format!(
                "{{\"time\":\"{}\",\"level\":\"error\",\"msg\":\"SECRET-TOKEN\"}}\n",
                oci_hook::log::rfc3339(SystemTime::now(), 3)
            ),
        )
        .unwrap();
        for target in [
            secret.as_path(),
            Path::new("/dev/zero"),
            Path::new("/etc/shadow"),
        ] {
            let link = dir.path().join("tetragon-oci-hook.log");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(target, &link).unwrap();
            let c = check(&link);
            assert_eq!(c.result, Verdict::Warn, "{c:?}");
            assert!(c.summary.contains("symlink"), "{c:?}");
            assert!(!format!("{c:?}").contains("SECRET-TOKEN"), "{c:?}");
        }
        let c = check(Path::new("/dev/zero"));
        assert!(c.summary.contains("not a regular file"), "{c:?}");
        // Invalid UTF-8 and a 2 MiB line without an end: counted, never a panic, not shown.
        let junk = dir.path().join("junk.log");
        let mut bytes = vec![0xff, 0xfe, b'\n'];
        bytes.extend(std::iter::repeat_n(b'{', 2 << 20));
        std::fs::write(&junk, bytes).unwrap();
        let c = check(&junk);
        assert_eq!(c.result, Verdict::Ok, "{c:?}");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
