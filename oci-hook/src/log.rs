//! The hook's JSON-lines log, in the upstream format (`time`, `level`, `msg`, then the fields),
//! with size-based rotation that is safe when many hooks append at once.
//!
//! Each line is one `write(2)` on an `O_APPEND` descriptor, made while holding an exclusive
//! `flock` on the log file. The lock is waited for at most [`LOCK_WAIT`] (any process that can
//! open the file can hold it): past that the line is written without the lock and without
//! rotating, a note says so once, and the process does not wait for the lock again. The log is
//! opened with `O_NOFOLLOW | O_NONBLOCK` and must be a regular file (a symlink or FIFO there is
//! refused); a new log is created 0600, and an existing one owned by the hook's effective user
//! with group or other permission bits (an older hook's 0644 log) is changed to 0600 when opened,
//! so that other users can no longer open it (and hold its lock). Rotation renames the file to
//! `<stem>-<UTC time>.<ext>` once it would pass [`MAX_SIZE`], keeps [`MAX_BACKUPS`] backups no
//! older than [`MAX_AGE`]; a writer that locked a file that was just renamed notices (inode
//! changed) and reopens. When the lock stays busy and the file is past the size limit, it is
//! rotated anyway (rename is atomic; the renamed file is checked to be the one that was too big,
//! and put back if not), so that a process holding the lock forever cannot stop rotation. When the log cannot
//! be written, the line goes to stderr instead: logging never fails the hook.
//!
//! [`Level`] and [`rfc3339`] are shared with the setup package (its `--log-level` and the NRI
//! plugin's log), so that the workspace has one of each.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

/// Log levels, lowest first: the hook's `--log-level`, the setup tool's `--log-level` and the
/// NRI plugin's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Level {
    /// Detail for debugging (the hook adds `req-annotations`; the NRI plugin logs every call).
    #[serde(rename = "debug")]
    Debug,
    /// Normal operation.
    #[serde(rename = "info")]
    Info,
    /// Something was ignored or retried, or the agent could not be reached.
    #[serde(rename = "warn")]
    Warn,
    /// A container is failed, or the configuration is broken.
    #[serde(rename = "error")]
    Error,
}

impl Level {
    /// The names a command line offers, lowest first (`trace` is [`Level::Debug`]).
    pub const NAMES: [&str; 5] = ["trace", "debug", "info", "warn", "error"];

    /// The upper-case name used in the `level` key of the hook's log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "DEBUG",
            Self::Info => "INFO",
            Self::Warn => "WARN",
            Self::Error => "ERROR",
        }
    }

    /// The lower-case name (the NRI plugin's log lines).
    pub fn name(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }

    /// Parses a level name (case-insensitive; `warning` and `trace` are accepted too).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "trace" | "debug" => Some(Self::Debug),
            "info" => Some(Self::Info),
            "warn" | "warning" => Some(Self::Warn),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// Rotate when the log would grow past this size (50 MiB, as upstream).
pub const MAX_SIZE: u64 = 50 * 1024 * 1024;
/// Backups kept after rotation.
pub const MAX_BACKUPS: usize = 3;
/// Backups older than this are removed.
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Longest wait for the log lock, once per process; then lines are written without it.
pub const LOCK_WAIT: Duration = Duration::from_millis(50);
/// Mode of a log file the hook creates.
pub const LOG_MODE: u32 = 0o600;
/// The line written (once per process) when the log lock stayed busy for [`LOCK_WAIT`].
pub const LOCK_BUSY_MSG: &str =
    "the log file is locked by another process; writing without the lock and without rotating";

/// A JSON-lines logger bound to one file and level, with fields added to every line.
#[derive(Debug)]
pub struct Logger {
    path: PathBuf,
    level: Level,
    fields: Vec<(String, Value)>,
    file: Option<File>,
    /// The lock stayed busy once: later lines do not wait for it.
    lock_busy: bool,
    /// Where a line goes when the file cannot be written.
    fallback: Fallback,
}

/// Where a line goes when the log file cannot be written: stderr, or (in unit tests) a buffer,
/// since the test harness captures only `print!`-style output and a line written to the real
/// stderr would show up in `cargo test`'s output.
#[derive(Debug)]
enum Fallback {
    Stderr,
    #[cfg(test)]
    Captured(Vec<u8>),
}

impl Fallback {
    fn write(&mut self, line: &[u8]) {
        match self {
            // Last resort; there is nowhere else to report the failure.
            Self::Stderr => {
                let _ = std::io::stderr().write_all(line);
            }
            #[cfg(test)]
            Self::Captured(buf) => buf.extend_from_slice(line),
        }
    }
}

impl Logger {
    /// A logger writing to `path` lines at `level` or above. Nothing is opened yet.
    pub fn new(path: PathBuf, level: Level) -> Self {
        Self {
            path,
            level,
            fields: Vec::new(),
            file: None,
            lock_busy: false,
            fallback: Fallback::Stderr,
        }
    }

    /// The log file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when lines at `level` are written.
    pub fn enabled(&self, level: Level) -> bool {
        level >= self.level
    }

    /// Adds a field to every following line.
    pub fn with(&mut self, key: &str, value: impl Into<Value>) {
        self.fields.push((key.to_owned(), value.into()));
    }

    /// Writes one line: `time`, `level`, `msg`, the logger's fields, then `extra`.
    pub fn log(&mut self, level: Level, msg: &str, extra: &[(&str, Value)]) {
        if !self.enabled(level) {
            return;
        }
        let line = self.format_line(level, msg, extra, true);
        if self.append(line.as_bytes()).is_err() {
            self.fallback.write(line.as_bytes());
        }
    }

    /// One JSON line: `time`, `level`, `msg`, the logger's fields (if `own`), then `extra`.
    fn format_line(&self, level: Level, msg: &str, extra: &[(&str, Value)], own: bool) -> String {
        let mut line = String::with_capacity(256);
        line.push_str("{\"time\":\"");
        line.push_str(&rfc3339(SystemTime::now(), 9));
        line.push_str("\",\"level\":\"");
        line.push_str(level.as_str());
        line.push_str("\",\"msg\":");
        push_json(&mut line, &Value::from(msg));
        let n = if own { self.fields.len() } else { 0 };
        let own = self.fields[..n].iter().map(|(k, v)| (k.as_str(), v));
        for (k, v) in own.chain(extra.iter().map(|(k, v)| (*k, v))) {
            line.push(',');
            push_json(&mut line, &Value::from(k));
            line.push(':');
            push_json(&mut line, v);
        }
        line.push_str("}\n");
        line
    }

    /// Logs at debug level.
    pub fn debug(&mut self, msg: &str, extra: &[(&str, Value)]) {
        self.log(Level::Debug, msg, extra);
    }
    /// Logs at info level.
    pub fn info(&mut self, msg: &str, extra: &[(&str, Value)]) {
        self.log(Level::Info, msg, extra);
    }
    /// Logs at warn level.
    pub fn warn(&mut self, msg: &str, extra: &[(&str, Value)]) {
        self.log(Level::Warn, msg, extra);
    }
    /// Logs at error level.
    pub fn error(&mut self, msg: &str, extra: &[(&str, Value)]) {
        self.log(Level::Error, msg, extra);
    }

    fn open(&self) -> std::io::Result<File> {
        use rustix::fs::{Mode, OFlags};
        // `O_NOFOLLOW`: a symlink planted at the log path is not followed; `O_NONBLOCK`: a FIFO
        // there does not block the open (nor the write); either is refused below.
        let flags = OFlags::WRONLY
            | OFlags::APPEND
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::CLOEXEC;
        let open = || rustix::fs::open(&self.path, flags, Mode::from_raw_mode(LOG_MODE));
        let fd = match open() {
            // Like upstream, create the log's directory on first use.
            Err(rustix::io::Errno::NOENT) => {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                open()?
            }
            other => other?,
        };
        let st = rustix::fs::fstat(&fd)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(std::io::Error::other(format!(
                "`{}` is not a regular file",
                self.path.display()
            )));
        }
        // An older log (0644): close it to other users. Descriptors they already hold stay
        // valid, but rotation below does not depend on them.
        if st.st_mode & 0o077 != 0 && st.st_uid == rustix::process::geteuid().as_raw() {
            let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(LOG_MODE));
        }
        Ok(File::from(fd))
    }

    /// Takes the exclusive lock on `file` without blocking, retrying until `deadline`.
    /// Returns false when another process still holds it then.
    fn try_lock(file: &File, deadline: Instant) -> std::io::Result<bool> {
        let mut pause = Duration::from_millis(1);
        loop {
            match rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(true),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::WOULDBLOCK) => {}
                Err(e) => return Err(e.into()),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(Duration::from_millis(8));
        }
    }

    /// True when `file` is still the file at `path` (another hook may have rotated it).
    fn is_current(&self, file: &File) -> std::io::Result<bool> {
        Ok(match std::fs::symlink_metadata(&self.path) {
            Ok(m) => {
                let fm = file.metadata()?;
                m.ino() == fm.ino() && m.dev() == fm.dev()
            }
            Err(_) => false,
        })
    }

    /// Opens (or reuses) the log file and locks it, making sure the locked file is still the
    /// one at `path`. Waits for the lock until `deadline` at most; `Ok(false)` means the lock
    /// stayed busy (the file is open, unlocked).
    fn lock_current(&mut self, deadline: Instant) -> std::io::Result<bool> {
        for _ in 0..8 {
            let file = match self.file.take() {
                Some(f) => f,
                None => self.open()?,
            };
            if !Self::try_lock(&file, deadline)? {
                self.file = Some(file);
                return Ok(false);
            }
            if self.is_current(&file)? {
                self.file = Some(file);
                return Ok(true);
            }
            // Dropping the file releases its lock; reopen the new one.
            drop(file);
        }
        Err(std::io::Error::other("log file keeps changing"))
    }

    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.lock_busy {
            // The lock was busy once already: do not wait for it again in this process.
            if self.rotate_unlocked(line.len() as u64)? {
                self.lock_busy = false;
                return self.append(line);
            }
            return self.append_unlocked(line);
        }
        let mut locked = self.lock_current(Instant::now() + LOCK_WAIT)?;
        if !locked && self.rotate_unlocked(line.len() as u64)? {
            // The lock holder kept an oversized file: it is a backup now; lock the fresh one.
            locked = self.lock_current(Instant::now() + LOCK_WAIT)?;
        }
        if !locked {
            self.lock_busy = true;
            let mut both = self.format_line(
                Level::Warn,
                LOCK_BUSY_MSG,
                &[("lock-wait", format!("{}ms", LOCK_WAIT.as_millis()).into())],
                false,
            );
            both.push_str(&String::from_utf8_lossy(line));
            return self.append_unlocked(both.as_bytes());
        }
        let size = match self.file.as_ref() {
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        let result = if size > 0 && size + line.len() as u64 > MAX_SIZE {
            self.rotate()
        } else {
            Ok(())
        }
        .and_then(|()| match self.file.as_ref() {
            Some(f) => (&*f).write_all(line),
            None => Err(std::io::Error::other("log file not open")),
        });
        // Unlock on every path, so that other hooks never wait on a failed writer.
        if let Some(f) = &self.file {
            let _ = rustix::fs::flock(f, rustix::fs::FlockOperation::Unlock);
        }
        result
    }

    /// Appends `line` without the lock, in one `O_APPEND` write (whole lines stay whole), and
    /// without rotating.
    fn append_unlocked(&mut self, line: &[u8]) -> std::io::Result<()> {
        let file = match self.file.take() {
            Some(f) if self.is_current(&f)? => f,
            _ => self.open()?,
        };
        let result = (&file).write_all(line);
        self.file = Some(file);
        result
    }

    /// Rotates the open (unlocked: its lock is busy) file if it is past [`MAX_SIZE`] with
    /// `extra` more bytes. Returns true when the file at the path changed (rotated here or by
    /// another writer): the caller reopens it. Concurrent rotators: the backup name is taken
    /// with `RENAME_NOREPLACE` (no backup is overwritten), and a rotator that renamed a file
    /// other than the oversized one it looked at (another rotator was faster) renames it back
    /// unless a newer log is already there (then that file stays as a small backup: no line is
    /// lost).
    fn rotate_unlocked(&mut self, extra: u64) -> std::io::Result<bool> {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        let Some(file) = self.file.as_ref() else {
            return Ok(false);
        };
        let fm = file.metadata()?;
        if fm.len() == 0 || fm.len() + extra <= MAX_SIZE {
            return Ok(false);
        }
        if !self.is_current(file)? {
            self.file = None;
            return Ok(true);
        }
        let backup = backup_path(&self.path, SystemTime::now());
        match renameat_with(CWD, &self.path, CWD, &backup, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOENT) => {
                self.file = None;
                return Ok(true);
            }
            // The same backup name a moment ago: another writer rotated it just now.
            Err(rustix::io::Errno::EXIST) => {
                self.file = None;
                return Ok(true);
            }
            Err(e) => return Err(e.into()),
        }
        let moved = std::fs::symlink_metadata(&backup)?;
        if (moved.ino(), moved.dev()) != (fm.ino(), fm.dev()) {
            let _ = renameat_with(CWD, &backup, CWD, &self.path, RenameFlags::NOREPLACE);
        }
        self.file = None;
        prune_backups(&self.path, SystemTime::now());
        Ok(true)
    }

    /// Renames the locked file to a timestamped backup, opens a fresh one (locked if it can be
    /// at once) and prunes old backups. Called with the lock held.
    fn rotate(&mut self) -> std::io::Result<()> {
        let backup = backup_path(&self.path, SystemTime::now());
        std::fs::rename(&self.path, &backup)?;
        let fresh = self.open()?;
        // Nobody else can have a fresh file's lock but a hook that just opened it.
        let _ = Self::try_lock(&fresh, Instant::now() + LOCK_WAIT)?;
        // Dropping the old descriptor releases the old lock, so waiting writers recheck.
        self.file = Some(fresh);
        prune_backups(&self.path, SystemTime::now());
        Ok(())
    }
}

fn push_json(out: &mut String, v: &Value) {
    // Serializing a `Value` to a string cannot fail.
    out.push_str(&serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned()));
}

fn split_name(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem.to_owned(), format!(".{ext}")),
        _ => (name, String::new()),
    }
}

/// `dir/stem.ext` → `dir/stem-2024-07-01T10-57-21.435.ext` (the lumberjack naming).
pub fn backup_path(path: &Path, now: SystemTime) -> PathBuf {
    let (stem, ext) = split_name(path);
    let t = rfc3339(now, 9);
    // 2024-07-01T10:57:21.435689144Z → 2024-07-01T10-57-21.435
    let stamp = t[..23].replace(':', "-");
    path.with_file_name(format!("{stem}-{stamp}{ext}"))
}

/// Removes backups beyond [`MAX_BACKUPS`] (oldest first) and those older than [`MAX_AGE`].
fn prune_backups(path: &Path, now: SystemTime) {
    let (stem, ext) = split_name(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let prefix = format!("{stem}-");
    let mut backups: Vec<(String, PathBuf, SystemTime)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let mid = name.strip_prefix(&prefix)?.strip_suffix(ext.as_str())?;
            // Only names that carry our timestamp (`YYYY-MM-DDTHH-MM-SS.mmm`).
            if mid.len() != 23 || mid.as_bytes()[10] != b'T' {
                return None;
            }
            let mtime = e.metadata().ok()?.modified().ok()?;
            Some((name, e.path(), mtime))
        })
        .collect();
    // Names sort by time; newest first.
    backups.sort_by(|a, b| b.0.cmp(&a.0));
    for (i, (_, p, mtime)) in backups.iter().enumerate() {
        let too_old = now.duration_since(*mtime).is_ok_and(|age| age > MAX_AGE);
        if i >= MAX_BACKUPS || too_old {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Formats a time as RFC 3339 in UTC with `digits` (at most 9) digits of second fraction,
/// truncated: `2024-07-01T10:57:21.435689144Z` (9, the hook's log), `2026-11-30T03:36:01.123456Z`
/// (6, the NRI plugin's log).
pub fn rfc3339(t: SystemTime, digits: usize) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    let nanos = format!("{:09}", d.subsec_nanos());
    let frac = &nanos[..digits.min(9)];
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}{}{frac}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        if frac.is_empty() { "" } else { "." },
    )
}

/// Days since 1970-01-01 to (year, month, day), after H. Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        let t = UNIX_EPOCH + Duration::new(1_719_831_441, 435_689_144);
        assert_eq!(rfc3339(t, 9), "2024-07-01T10:57:21.435689144Z");
        assert_eq!(rfc3339(UNIX_EPOCH, 9), "1970-01-01T00:00:00.000000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&rfc3339(leap, 9)[..10], "2000-02-29");
        // The NRI plugin's precision: microseconds, truncated.
        let t = UNIX_EPOCH + Duration::from_nanos(1_796_009_761_123_456_789);
        assert_eq!(rfc3339(t, 6), "2026-11-30T03:36:01.123456Z");
        assert_eq!(rfc3339(UNIX_EPOCH, 6), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(leap, 6), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339(t, 0), "2026-11-30T03:36:01Z");
        assert_eq!(rfc3339(t, 12), rfc3339(t, 9));
    }

    #[test]
    fn level_names() {
        for (name, level) in Level::NAMES.iter().zip([
            Level::Debug,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error,
        ]) {
            assert_eq!(Level::parse(name), Some(level));
            assert_eq!(Level::parse(&name.to_uppercase()), Some(level));
        }
        assert_eq!(Level::parse("warning"), Some(Level::Warn));
        assert_eq!(Level::parse("verbose"), None);
        assert!(Level::Debug < Level::Info && Level::Warn < Level::Error);
        assert_eq!((Level::Warn.name(), Level::Warn.as_str()), ("warn", "WARN"));
    }

    #[test]
    fn backup_naming() {
        let t = UNIX_EPOCH + Duration::new(1_719_831_441, 435_689_144);
        assert_eq!(
            backup_path(Path::new("/opt/tetragon/tetragon-oci-hook.log"), t),
            PathBuf::from("/opt/tetragon/tetragon-oci-hook-2024-07-01T10-57-21.435.log")
        );
    }

    #[test]
    fn lines_keep_field_order_and_level_filter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.log");
        let mut log = Logger::new(path.clone(), Level::Info);
        log.with("hook", "createRuntime");
        log.debug("hidden", &[]);
        log.info("shown", &[("err", Value::from("x \"y\""))]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        let line = text.lines().next().unwrap();
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["msg"], "shown");
        assert_eq!(v["err"], "x \"y\"");
        let keys: Vec<&str> = ["\"time\"", "\"level\"", "\"msg\"", "\"hook\"", "\"err\""]
            .into_iter()
            .filter(|k| line.contains(k))
            .collect();
        assert_eq!(keys.len(), 5);
        let pos: Vec<usize> = keys.iter().map(|k| line.find(k).unwrap()).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{line}");
    }

    #[test]
    fn rotates_past_max_size_and_keeps_three_backups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tetragon-oci-hook.log");
        for i in 0..5 {
            // A sparse file at the limit makes the next line rotate it.
            let f = File::create(&path).unwrap();
            f.set_len(MAX_SIZE).unwrap();
            drop(f);
            let mut log = Logger::new(path.clone(), Level::Info);
            log.info(&format!("line {i}"), &[]);
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("line 4") && text.lines().count() == 1,
            "{text}"
        );
        let backups = std::fs::read_dir(dir.path()).unwrap().count() - 1;
        assert_eq!(backups, MAX_BACKUPS);
    }

    #[test]
    fn busy_lock_is_waited_for_once_then_lines_go_unlocked_without_rotating() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.log");
        // Under the size limit, with room for the lines: nothing to rotate.
        let size = MAX_SIZE - 4096;
        let holder = File::create(&path).unwrap();
        holder.set_len(size).unwrap();
        rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut log = Logger::new(p, Level::Info);
            for msg in ["a", "b", "c"] {
                log.info(msg, &[]);
            }
            let _ = tx.send(start.elapsed());
        });
        let elapsed = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the logger kept waiting for the lock");
        // One wait of LOCK_WAIT for the whole process, not one per line.
        assert!(elapsed < LOCK_WAIT * 2, "{elapsed:?}");
        let bytes = std::fs::read(&path).unwrap();
        let tail = String::from_utf8(bytes[size as usize..].to_vec()).unwrap();
        let msgs: Vec<String> = tail
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["msg"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(msgs, [LOCK_BUSY_MSG, "a", "b", "c"]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "rotated");
    }

    #[test]
    fn busy_lock_does_not_stop_rotation_past_the_size_limit() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.log");
        // At the size limit, 0644 as an older hook left it, its lock held for good.
        let holder = File::create(&path).unwrap();
        holder.set_len(MAX_SIZE).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let old_ino = holder.metadata().unwrap().ino();
        rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let start = Instant::now();
        let mut log = Logger::new(path.clone(), Level::Info);
        for msg in ["a", "b", "c"] {
            log.info(msg, &[]);
        }
        assert!(start.elapsed() < LOCK_WAIT * 2, "{:?}", start.elapsed());
        let msgs: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["msg"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(msgs, ["a", "b", "c"]);
        let fresh = std::fs::metadata(&path).unwrap();
        assert_ne!(fresh.ino(), old_ino);
        assert_eq!(fresh.permissions().mode() & 0o777, 0o600);
        let backups: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap())
            .filter(|m| m.ino() == old_ino)
            .collect();
        assert_eq!(backups.len(), 1);
        assert_eq!(backups[0].len(), MAX_SIZE);
        assert_eq!(backups[0].permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn missing_log_dir_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/h.log");
        Logger::new(path.clone(), Level::Info).info("x", &[]);
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    }

    #[test]
    fn unwritable_log_does_not_panic() {
        // Under /proc nothing can be created: every write of the file fails.
        let path = PathBuf::from("/proc/nonexistent/dir/h.log");
        let mut log = Logger::new(path.clone(), Level::Debug);
        // Captured here rather than written to the test's real stderr (what reaches stderr is
        // checked on the binary: `unwritable_log_goes_to_stderr` in tests/hook.rs).
        log.fallback = Fallback::Captured(Vec::new());
        let logged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            log.with("hook", "createRuntime");
            for level in [Level::Debug, Level::Info, Level::Warn, Level::Error] {
                log.log(level, "goes to stderr", &[("n", 1.into())]);
            }
            log.log(Level::Error, "again", &[]);
        }));
        assert!(logged.is_ok(), "logging to an unwritable file panicked");
        // The file really was unwritable, so every line took the fallback path.
        assert!(log.append(b"x\n").is_err());
        assert!(!path.exists());
        let Fallback::Captured(lines) = &log.fallback else {
            panic!("the fallback is no longer the captured one")
        };
        let lines = String::from_utf8_lossy(lines);
        let msgs: Vec<&str> = lines
            .lines()
            .map(|l| {
                if l.contains("goes to stderr") {
                    "goes"
                } else {
                    "other"
                }
            })
            .collect();
        assert_eq!(msgs, ["goes", "goes", "goes", "goes", "other"], "{lines}");
        assert!(
            lines
                .lines()
                .all(|l| l.contains(r#""hook":"createRuntime""#)),
            "{lines}"
        );
    }
}
