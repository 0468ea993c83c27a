//! The one skip policy of every test (and bench) that needs something outside the repository:
//! a fetched containerd, podman, runc, root, `busybox-static`, `../shared/fixtures`, ...
//!
//! - `E2E_REQUIRED=1` (exactly `1`, as `.ci/run` sets it): the test fails with the reason.
//! - Otherwise the test returns, and ONE line `skipped: <reason> [<test name>]` goes to the
//!   process's real stderr when the test binary exits, so every skip of a test binary is listed
//!   together right under its `test result:` line.
//!
//! The lines are written to file descriptor 2 itself, not through `eprintln!`: libtest captures
//! what the print macros write (and only shows it for a failed test), so a skipped test used to
//! read `... ok` with nothing else in plain `cargo test`. A direct write is not captured. They
//! are written at exit rather than at once because libtest writes `test name ... ` and `ok` in
//! two writes, between which another test's line would land (`test a ... skipped: ... [b]`).
//! `skip_line_reaches_the_real_stderr` in `tests/harness.rs` checks all this.
//!
//! ```ignore
//! mod support;
//!
//! #[test]
//! fn needs_podman() {
//!     let podman = require!(support::podman::Podman::get(), "podman not found");
//!     if !support::skip::is_root() {
//!         skip!("not root");
//!     }
//! }
//! ```

use std::fmt::Display;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::{Mutex, Once};

/// Environment variable turning skips into failures (`E2E_REQUIRED=1`).
pub const REQUIRED_ENV: &str = "E2E_REQUIRED";

/// Whether a missing component must fail the test: `E2E_REQUIRED` is exactly `1`.
pub fn required() -> bool {
    std::env::var_os(REQUIRED_ENV).is_some_and(|v| v == "1")
}

/// Applies the policy for a missing component: panics under `E2E_REQUIRED=1`, else writes one
/// `skipped: <reason>` line past libtest's capture. The caller then returns (see [`skip!`]).
#[track_caller]
pub fn skip(reason: impl Display) {
    if required() {
        panic!("{REQUIRED_ENV}=1 but {reason}");
    }
    report_at_exit(skip_line(&reason.to_string()));
}

/// Returns `found`; when it is `None`, applies [`skip`] with `reason` first.
#[track_caller]
pub fn require<T>(found: Option<T>, reason: impl Display) -> Option<T> {
    if found.is_none() {
        skip(reason);
    }
    found
}

/// `skipped: <reason> [<test>]`, with the test's name when running under libtest (which names
/// each test's thread after the test).
pub fn skip_line(reason: &str) -> String {
    match std::thread::current().name() {
        Some(test) if test != "main" => format!("skipped: {reason} [{test}]\n"),
        _ => format!("skipped: {reason}\n"),
    }
}

/// The skip lines not written yet.
static AT_EXIT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Queues `line` for [`write_at_exit`], registering that with `atexit(3)` on the first call.
fn report_at_exit(line: String) {
    static REGISTER: Once = Once::new();
    AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    REGISTER.call_once(|| {
        // SAFETY: `write_at_exit` is an `extern "C" fn()` that does not unwind (it only locks a
        // mutex without blocking and writes to fd 2, ignoring errors).
        if unsafe { libc::atexit(write_at_exit) } != 0 {
            write_at_exit();
        }
    });
}

/// Writes the queued skip lines, sorted (at exit, after libtest's summary).
extern "C" fn write_at_exit() {
    // `try_lock`: a thread still running at exit could hold the lock; never block here.
    if let Ok(mut lines) = AT_EXIT.try_lock() {
        lines.sort();
        to_real_stderr(&lines.concat());
        lines.clear();
    }
}

/// Writes `text` to file descriptor 2 through a duplicate of it, bypassing libtest's capture of
/// the print macros. Errors are ignored, as `eprint!` would not ignore them but a lost skip line
/// must not fail a test.
pub fn to_real_stderr(text: &str) {
    if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
        let _ = std::fs::File::from(fd).write_all(text.as_bytes());
    }
}

/// Whether the tests run as root (effective uid 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether `program --version` runs and succeeds (a tool on `PATH`).
pub fn has_program(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `let bin = require!(runtimes::containerd(release), runtimes::missing(release));`
///
/// Evaluates to the `Some` value, or applies [`skip`] and `return`s from the enclosing function.
/// For a function returning a value, give it as third argument: `require!(opt, "reason", Ok(()))`.
/// The reason may be any `Display` value (`&str`, `String`, `format!(..)`).
#[macro_export]
macro_rules! require {
    ($found:expr, $reason:expr $(,)?) => {
        $crate::require!($found, $reason, ())
    };
    ($found:expr, $reason:expr, $ret:expr $(,)?) => {
        match $crate::support::skip::require($found, $reason) {
            ::std::option::Option::Some(v) => v,
            ::std::option::Option::None => return $ret,
        }
    };
}

/// `skip!("not root")`: applies [`skip`] and `return`s (with the optional second argument).
#[macro_export]
macro_rules! skip {
    ($reason:expr $(,)?) => {
        $crate::skip!($reason, ())
    };
    ($reason:expr, $ret:expr $(,)?) => {{
        $crate::support::skip::skip($reason);
        return $ret;
    }};
}
