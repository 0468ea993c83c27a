//! The NRI plugin's log: one line per event, `<UTC time> <level> <message>`, to stderr (external
//! mode: the pod's log) or to a file (pre-launched mode, whose stderr is `/dev/null`).
//!
//! Until a pre-launched plugin learns its log file from `Configure`, lines are kept in memory
//! (at most [`MAX_PENDING`]) and written to the file once it is opened. Logging never fails the
//! caller: a line that cannot be written is dropped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Lines kept before a log file is known.
pub const MAX_PENDING: usize = 256;

/// Where lines go.
#[derive(Debug)]
enum Sink {
    Stderr,
    File(File),
    Pending(Vec<String>),
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
            sink: Sink::Pending(Vec::new()),
            min: Level::Info,
        }
    }

    /// Appends to `path` from now on, after the lines kept so far. If it cannot be opened, the
    /// log goes to stderr (with a line saying why).
    pub fn open_file(&mut self, path: &Path) {
        let opened = OpenOptions::new().create(true).append(true).open(path);
        let pending = match std::mem::replace(&mut self.sink, Sink::Stderr) {
            Sink::Pending(lines) => lines,
            _ => Vec::new(),
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
            self.write_line(format!("{} {name} {args}\n", timestamp(SystemTime::now())));
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
            Sink::Pending(lines) => {
                if lines.len() < MAX_PENDING {
                    lines.push(line);
                }
            }
        }
    }
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
}
