//! Errors that say how to fix them.
//!
//! An error with a fix carries it as a field ([`HelpError`], as [`crate::edit::EditError`]
//! does), not inside its message, so that [`render`] prints it last: `error: ...`, the
//! `Caused by:` chain, then `help: ...`. Build one with [`help_error`] (no cause) or
//! [`WithHelp::with_help`] (wrapping a cause), and print one-line forms (a log line, an NRI
//! status) with [`Report`].

use std::fmt;

/// An error message and the fix for it. `Display` shows the message only: [`render`] and
/// [`Report`] add the `help:` line after the causes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelpError {
    /// What went wrong.
    pub message: String,
    /// How to fix it (without the `help: ` prefix).
    pub help: String,
}

impl HelpError {
    /// An error with its fix.
    pub fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            help: help.into(),
        }
    }
}

impl fmt::Display for HelpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HelpError {}

/// An [`anyhow::Error`] with no cause and a fix: `return Err(help_error(message, help))`.
pub fn help_error(message: impl Into<String>, help: impl Into<String>) -> anyhow::Error {
    HelpError::new(message, help).into()
}

/// Wraps a failure (an `Err` or a `None`) in a message and a fix, as
/// [`anyhow::Context::with_context`] does with a message alone.
pub trait WithHelp<T, E> {
    /// The cause stays in the chain; `message` is built only on failure.
    fn with_help<M: Into<String>>(
        self,
        message: impl FnOnce() -> M,
        help: impl Into<String>,
    ) -> anyhow::Result<T>;
}

impl<T, E, R> WithHelp<T, E> for R
where
    R: anyhow::Context<T, E>,
{
    fn with_help<M: Into<String>>(
        self,
        message: impl FnOnce() -> M,
        help: impl Into<String>,
    ) -> anyhow::Result<T> {
        let help = help.into();
        self.with_context(|| HelpError::new(message(), help))
    }
}

/// The fix of the outermost [`HelpError`] in `err`'s chain, if any.
pub fn help_of(err: &anyhow::Error) -> Option<&str> {
    if let Some(h) = err.downcast_ref::<HelpError>() {
        return Some(&h.help);
    }
    err.chain()
        .find_map(|e| e.downcast_ref::<HelpError>())
        .map(|h| h.help.as_str())
}

/// `error: ...`, then one `Caused by:` block per source, then `help: ...` last; as anyhow's
/// `{:?}` but without the backtrace it appends when `RUST_BACKTRACE` is set in the caller's
/// shell.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = format!("error: {err}");
    let causes: Vec<String> = err.chain().skip(1).map(ToString::to_string).collect();
    if !causes.is_empty() {
        out.push_str("\n\nCaused by:");
        for cause in &causes {
            for (i, line) in cause.lines().enumerate() {
                let lead = if i == 0 { "\n  - " } else { "\n    " };
                out.push_str(lead);
                out.push_str(line);
            }
        }
    }
    if let Some(help) = help_of(err) {
        if !causes.is_empty() {
            out.push('\n');
        }
        out.push_str("\nhelp: ");
        out.push_str(help);
    }
    out
}

/// The one-line form of an error for a log line or a status message: anyhow's `{:#}` (message
/// and causes joined by `: `), then `\nhelp: ...` if it has a fix.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a>(pub &'a anyhow::Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)?;
        if let Some(help) = help_of(self.0) {
            write!(f, "\nhelp: {help}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_is_printed_after_the_causes() {
        let err: anyhow::Result<()> = Err(std::io::Error::from(std::io::ErrorKind::NotFound))
            .with_help(|| "failed to read `x`", "pass another file");
        let err = err.unwrap_err();
        assert_eq!(
            render(&err),
            "error: failed to read `x`\n\nCaused by:\n  - entity not found\n\nhelp: pass another file"
        );
        assert_eq!(
            Report(&err).to_string(),
            "failed to read `x`: entity not found\nhelp: pass another file"
        );
    }

    #[test]
    fn help_without_a_cause_follows_the_message() {
        let err = help_error("`x` is not absolute", "e.g. `/x`");
        assert_eq!(render(&err), "error: `x` is not absolute\nhelp: e.g. `/x`");
        let outer = err.context("cannot install");
        assert_eq!(
            render(&outer),
            "error: cannot install\n\nCaused by:\n  - `x` is not absolute\n\nhelp: e.g. `/x`"
        );
    }

    #[test]
    fn none_gets_a_message_and_a_help() {
        let err = None::<u8>.with_help(|| "no name", "name it").unwrap_err();
        assert_eq!(render(&err), "error: no name\nhelp: name it");
    }
}
