//! Errors that say how to fix them.
//!
//! An error with a fix carries it as a field ([`HelpError`], as [`crate::edit::EditError`],
//! [`crate::patch::ConfigError`] and the hook crate's [`oci_hook::args::ArgError`] do), not
//! inside its message, so that [`render`] prints it last: `error: ...`, the
//! `Caused by:` chain, then `help: ...`. Build one with [`help_error`] (no cause) or
//! [`WithHelp::with_help`] (wrapping a cause), and print one-line forms (a log line, an NRI
//! status) with [`Report`].

use std::fmt;

use oci_hook::args::ArgError;

use crate::edit::EditError;
use crate::patch::ConfigError;

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

/// The fix one error carries as a field: a [`HelpError`], an [`EditError`] or a
/// [`ConfigError`] (whose `Display` also shows it, for the edit reports), or the hook crate's
/// [`ArgError`].
fn own_help<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a str> {
    if let Some(h) = e.downcast_ref::<HelpError>() {
        Some(&h.help)
    } else if let Some(e) = e.downcast_ref::<EditError>() {
        e.help.as_deref()
    } else if let Some(e) = e.downcast_ref::<ConfigError>() {
        e.error.help.as_deref()
    } else if let Some(e) = e.downcast_ref::<ArgError>() {
        e.help.as_deref()
    } else {
        None
    }
}

/// One error's message without its fix (which [`render`] and [`Report`] print last).
fn message_of(e: &(dyn std::error::Error + 'static)) -> String {
    if let Some(e) = e.downcast_ref::<EditError>() {
        e.message_without_help()
    } else if let Some(e) = e.downcast_ref::<ConfigError>() {
        e.message_without_help()
    } else {
        e.to_string()
    }
}

/// The fix of the outermost error in `err`'s chain that has one ([`HelpError`], [`EditError`],
/// [`ConfigError`], [`ArgError`]), if any: a `.context()` around it does not bury it. Without
/// one, an OS error with an obvious fix (permission denied, read-only or full file system) gets
/// that fix, wherever it happened.
pub fn help_of(err: &anyhow::Error) -> Option<&str> {
    if let Some(h) = err.downcast_ref::<HelpError>() {
        return Some(&h.help);
    }
    err.chain()
        .find_map(own_help)
        .or_else(|| err.chain().find_map(os_error_help))
}

/// The fix of an OS error that has one whatever the command was (patch, install, uninstall):
/// said so that it is right in each.
pub fn os_error_help(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    match e.downcast_ref::<std::io::Error>()?.raw_os_error()? {
        // Root refused: telling root to run as root would be no fix.
        libc::EACCES | libc::EPERM if crate::sys::is_root() => Some(
            "root itself was refused: the file is immutable (`lsattr` shows `i`; `chattr -i` \
             clears it) or a security module (SELinux, AppArmor: see the audit log) denies it",
        ),
        libc::EACCES | libc::EPERM => Some(
            "run it as root (runtime configs, hooks dirs and the install dir belong to root), or \
             give it paths you may write",
        ),
        libc::EROFS => Some(
            "that file system is mounted read-only (an immutable OS, or a read-only mount into \
             the pod): mount it read-write for this change; a patch command can also write its \
             result where it is not (`--output`, or containerd's `--drop-in`)",
        ),
        libc::ENOSPC | libc::EDQUOT => {
            Some("the file system is full: free some space, then re-run")
        }
        _ => None,
    }
}

/// Each message of `err`'s chain, outermost first, without the fixes.
pub fn messages(err: &anyhow::Error) -> Vec<String> {
    err.chain().map(message_of).collect()
}

/// `error: ...`, then one `Caused by:` block per source, then `help: ...` last; as anyhow's
/// `{:?}` but without the backtrace it appends when `RUST_BACKTRACE` is set in the caller's
/// shell.
pub fn render(err: &anyhow::Error) -> String {
    let messages = messages(err);
    let mut out = format!("error: {}", messages[0]);
    let causes = &messages[1..];
    if !causes.is_empty() {
        out.push_str("\n\nCaused by:");
        for cause in causes {
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
        f.write_str(&messages(self.0).join(": "))?;
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
    fn the_help_of_an_edit_config_or_hook_args_error_is_found_under_a_context_and_printed_once_last()
     {
        let key = crate::edit::KeyPath::new(["a", "b"]);
        let edit = EditError::new(key, "is a string").with_help("write `b = true`");
        let config = ConfigError {
            path: "/c.toml".into(),
            line: Some(3),
            error: edit.clone(),
        };
        // The edit reports still show the fix in the error's own text.
        assert_eq!(
            config.to_string(),
            "/c.toml:3: `a.b` is a string\nhelp: write `b = true`"
        );
        let outer = anyhow::Error::new(config).context("cannot patch");
        assert_eq!(help_of(&outer), Some("write `b = true`"));
        assert_eq!(
            render(&outer),
            "error: cannot patch\n\nCaused by:\n  - /c.toml:3: `a.b` is a string\n\nhelp: write `b = true`"
        );
        assert_eq!(
            Report(&outer).to_string(),
            "cannot patch: /c.toml:3: `a.b` is a string\nhelp: write `b = true`"
        );
        let outer = anyhow::Error::new(edit).context("cannot patch");
        assert_eq!(help_of(&outer), Some("write `b = true`"));
        // Without a context the rendering is what it always was.
        let bare: anyhow::Error = ConfigError {
            path: "/c.toml".into(),
            line: None,
            error: EditError::new(crate::edit::KeyPath::new(["k"]), "is bad").with_help("fix"),
        }
        .into();
        assert_eq!(render(&bare), "error: /c.toml: `k` is bad\nhelp: fix");
        let hook = oci_hook::args::validate_args_but_cel(&["--log-level=bad".to_owned()])
            .unwrap_err()
            .context("cannot install");
        assert_eq!(
            render(&hook),
            "error: cannot install\n\nCaused by:\n  - invalid hook arguments:\n    \
             invalid `--log-level` `bad`\n\nhelp: use one of trace, debug, info, warn, error"
        );
    }

    #[test]
    fn none_gets_a_message_and_a_help() {
        let err = None::<u8>.with_help(|| "no name", "name it").unwrap_err();
        assert_eq!(render(&err), "error: no name\nhelp: name it");
    }
}
