//! Printing for the commands: the shadowed `eprintln!`/`print!` of every `ops` module, and
//! [`write_stdout`] for output whose loss must fail the command. Both step aside while a JSON
//! document is collected ([`super::json`]).

use std::io::Write;

use rthooks::error::help_error;

// Printing must never panic (a panic in the release build aborts with 134): a closed or broken
// stderr or stdout is ignored by these, which shadow the standard macros in every `ops`
// module (declared before them, with `#[macro_use]`). Where
// losing the output matters (the diff before an edit is applied), `write_stdout` says so.
// With `--output-format json` the line goes into the JSON document instead
// (`super::json::capture`).
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!($($arg)*);
        if !$crate::ops::json::capture(&line) {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }};
}
macro_rules! print {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// Writes `text` to stdout and flushes it; an error (a closed pipe) names what was lost.
pub(crate) fn write_stdout(text: &str) -> anyhow::Result<()> {
    // The JSON document holds the diff (`super::json::plan`); stdout is for it alone.
    if super::json::active() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            help_error(
                format!("cannot print the diff to stdout ({e}); nothing written"),
                "let the diff be read to the end, or pass `--quiet` to print none",
            )
        })
}
