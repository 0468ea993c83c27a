//! The NRI plugin's log: one line per event, `<UTC time> <level> <message>`, to stderr (external
//! mode: the pod's log) or to a file (pre-launched mode, whose stderr is `/dev/null`).
//!
//! Until a pre-launched plugin learns its log file from `Configure`, lines are kept in memory
//! (at most [`MAX_PENDING`] lines and [`MAX_PENDING_BYTES`] bytes) and written to the file once it
//! is opened. A line is cut at [`MAX_LINE`] bytes while it is formatted, so a huge value from the
//! runtime (a method name, a 16 MiB message) costs neither memory nor log space. Logging never
//! fails the caller: a line that cannot be written is dropped.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lines kept before a log file is known.
pub const MAX_PENDING: usize = 256;
/// Bytes kept before a log file is known (lines past it are dropped, and counted).
pub const MAX_PENDING_BYTES: usize = 64 << 10;
/// The longest message written (timestamp and level not counted); the rest is replaced by
/// [`CUT_MARK`].
pub const MAX_LINE: usize = 1024;
/// Ends a line cut at [`MAX_LINE`].
pub const CUT_MARK: &str = " [...cut]";

/// Where lines go.
#[derive(Debug)]
enum Sink {
    Stderr,
    File(File),
    Pending {
        lines: Vec<String>,
        bytes: usize,
        dropped: usize,
    },
}

/// The least severe level written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Every call.
    Debug,
    /// Connections, registrations, adjusted containers.
    Info,
    /// Retries, ignored messages.
    Warn,
    /// Errors only.
    Error,
}

/// The plugin's log.
#[derive(Debug)]
pub struct Log {
    sink: Sink,
    min: Level,
}

impl Log {
    /// Lines to stderr.
    pub fn stderr(min: Level) -> Self {
        Self {
            sink: Sink::Stderr,
            min,
        }
    }

    /// Lines kept in memory until [`Log::open_file`].
    pub fn pending() -> Self {
        Self {
            sink: Sink::Pending {
                lines: Vec::new(),
                bytes: 0,
                dropped: 0,
            },
            min: Level::Info,
        }
    }

    /// Appends to `path` from now on, after the lines kept so far. If it cannot be opened, the
    /// log goes to stderr (with a line saying why). The file is created 0600; a symlink, FIFO or
    /// anything else than a regular file there is refused (opened without following or blocking).
    pub fn open_file(&mut self, path: &Path) {
        let opened = open_regular(path);
        let (pending, dropped) = match std::mem::replace(&mut self.sink, Sink::Stderr) {
            Sink::Pending { lines, dropped, .. } => (lines, dropped),
            _ => (Vec::new(), 0),
        };
        match opened {
            Ok(f) => self.sink = Sink::File(f),
            Err(e) => self.error(format_args!(
                "failed to open log file `{}`: {e}",
                path.display()
            )),
        }
        for line in pending {
            self.write_line(line);
        }
        if dropped > 0 {
            self.warn(format_args!(
                "{dropped} earlier log lines were dropped (more than {MAX_PENDING} lines or \
                 {MAX_PENDING_BYTES} bytes before the log file was known)"
            ));
        }
    }

    /// Bytes of the lines kept until [`Log::open_file`].
    pub fn pending_bytes(&self) -> usize {
        match &self.sink {
            Sink::Pending { bytes, .. } => *bytes,
            _ => 0,
        }
    }

    /// An informational line.
    pub fn info(&mut self, args: std::fmt::Arguments<'_>) {
        self.line(Level::Info, "info", args);
    }

    /// A warning.
    pub fn warn(&mut self, args: std::fmt::Arguments<'_>) {
        self.line(Level::Warn, "warn", args);
    }

    /// An error.
    pub fn error(&mut self, args: std::fmt::Arguments<'_>) {
        self.line(Level::Error, "error", args);
    }

    /// A debug line (every call).
    pub fn debug(&mut self, args: std::fmt::Arguments<'_>) {
        self.line(Level::Debug, "debug", args);
    }

    fn line(&mut self, level: Level, name: &str, args: std::fmt::Arguments<'_>) {
        if level >= self.min {
            let mut line = format!("{} {name} ", timestamp(SystemTime::now()));
            let start = line.len();
            let mut w = Bounded {
                out: &mut line,
                room: MAX_LINE,
            };
            if w.write_fmt(args).is_err() {
                // Formatting stopped at the first piece that did not fit.
                debug_assert!(line.len() - start <= MAX_LINE);
                line.push_str(CUT_MARK);
            }
            line.push('\n');
            self.write_line(line);
        }
    }

    fn write_line(&mut self, line: String) {
        match &mut self.sink {
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            Sink::File(f) => {
                let _ = f.write_all(line.as_bytes());
            }
            Sink::Pending {
                lines,
                bytes,
                dropped,
            } => {
                if lines.len() < MAX_PENDING && *bytes + line.len() <= MAX_PENDING_BYTES {
                    *bytes += line.len();
                    lines.push(line);
                } else {
                    *dropped += 1;
                }
            }
        }
    }
}

/// A `fmt::Write` that takes at most `room` bytes, then fails (which stops the formatting).
struct Bounded<'a> {
    out: &'a mut String,
    room: usize,
}

impl std::fmt::Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if s.len() <= self.room {
            self.out.push_str(s);
            self.room -= s.len();
            Ok(())
        } else {
            // Keep what fits (the caller trims to a char boundary).
            let mut end = self.room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.out.push_str(&s[..end]);
            self.room = 0;
            Err(std::fmt::Error)
        }
    }
}

/// Opens `path` for appending: created 0600 if missing, never through a symlink, never blocking
/// (a FIFO without a reader is an error), and only if it is a regular file.
fn open_regular(path: &Path) -> std::io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let kind = f.metadata()?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::other(format!(
            "it is {what}; the log must be a regular file"
        )));
    }
    Ok(f)
}

/// `2026-11-30T03:36:01.123456Z`
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_micros(1_796_009_761_123_456);
        assert_eq!(timestamp(t), "2026-11-30T03:36:01.123456Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn pending_lines_go_to_the_file_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let mut log = Log::pending();
        log.info(format_args!("early"));
        log.open_file(&path);
        log.error(format_args!("late"));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" info early"), "{text}");
        assert!(lines[1].ends_with(" error late"), "{text}");
    }

    #[test]
    fn a_huge_message_is_cut_to_max_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        let mut log = Log::pending();
        log.open_file(&path);
        let huge = "é".repeat(8 << 20);
        log.info(format_args!("method {huge} end"));
        log.info(format_args!("{:?}", vec![0u8; 16 << 20]));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for line in lines {
            assert!(line.len() < MAX_LINE + 64, "{} bytes", line.len());
            assert!(line.ends_with(CUT_MARK), "{line}");
        }
    }

    #[test]
    fn the_pending_buffer_is_bounded_in_bytes() {
        let mut log = Log::pending();
        let big = "x".repeat(1 << 20);
        for _ in 0..1000 {
            log.info(format_args!("{big}"));
        }
        assert!(
            log.pending_bytes() <= MAX_PENDING_BYTES,
            "{}",
            log.pending_bytes()
        );
        assert!(log.pending_bytes() > MAX_PENDING_BYTES / 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        log.open_file(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() <= MAX_PENDING_BYTES + 512, "{}", text.len());
        assert!(text.contains("earlier log lines were dropped"), "{text}");
    }

    #[test]
    fn the_log_file_is_created_0600_and_never_through_a_symlink_or_fifo() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.log");
        open_regular(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_regular(&link).is_err());
        let fifo = dir.path().join("fifo.log");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // No reader: an error at once, not a hang.
        assert!(open_regular(&fifo).is_err());
        let mut log = Log::pending();
        log.open_file(&link);
        log.info(format_args!("to stderr"));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
