//! The NRI plugin's log: one line per event, `<UTC time> <level> <message>`, to stderr (external
//! mode: the pod's log) or to a file (pre-launched mode, whose stderr is `/dev/null`).
//!
//! Until a pre-launched plugin learns its log file from `Configure`, lines are kept in memory
//! (at most [`MAX_PENDING`] lines and [`MAX_PENDING_BYTES`] bytes) and written to the file once it
//! is opened. A line is cut at [`MAX_LINE`] bytes while it is formatted, so a huge value from the
//! runtime (a method name, a 16 MiB message) costs neither memory nor log space. Logging never
//! fails the caller: a line that cannot be written is dropped.
//!
//! Levels and timestamps are the hook crate's ([`Level`], `oci_hook::log::rfc3339`), shared by
//! the whole workspace.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::time::SystemTime;

pub use oci_hook::log::Level;
use oci_hook::log::rfc3339;

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

/// The plugin's log.
#[derive(Debug)]
pub struct Log {
    sink: Sink,
    min: Level,
    /// In unit tests, what would go to stderr: libtest captures only `print!`-style output, and
    /// a line written to the real stderr would show up in `cargo test`'s output.
    #[cfg(test)]
    captured: Option<Vec<u8>>,
}

impl Log {
    /// Lines to stderr.
    pub fn stderr(min: Level) -> Self {
        Self {
            sink: Sink::Stderr,
            min,
            #[cfg(test)]
            captured: None,
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
            #[cfg(test)]
            captured: None,
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
        self.line(Level::Info, args);
    }

    /// A warning.
    pub fn warn(&mut self, args: std::fmt::Arguments<'_>) {
        self.line(Level::Warn, args);
    }

    /// An error.
    pub fn error(&mut self, args: std::fmt::Arguments<'_>) {
        self.line(Level::Error, args);
    }

    /// A debug line (every call).
    pub fn debug(&mut self, args: std::fmt::Arguments<'_>) {
        self.line(Level::Debug, args);
    }

    fn line(&mut self, level: Level, args: std::fmt::Arguments<'_>) {
        if level >= self.min {
            let mut line = format!("{} {} ", rfc3339(SystemTime::now(), 6), level.name());
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
            #[cfg(test)]
            Sink::Stderr if self.captured.is_some() => {
                if let Some(buf) = &mut self.captured {
                    buf.extend_from_slice(line.as_bytes());
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
        log.captured = Some(Vec::new());
        log.open_file(&link);
        log.info(format_args!("to stderr"));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        // Refused, the log went to stderr instead, saying why first.
        let stderr = String::from_utf8(log.captured.take().unwrap()).unwrap();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{stderr}");
        assert!(
            lines[0].contains(" error failed to open log file `"),
            "{stderr}"
        );
        assert!(lines[1].ends_with(" info to stderr"), "{stderr}");
    }
}
