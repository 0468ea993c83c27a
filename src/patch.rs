//! From a config file's text to its patched text, checked before anyone writes it.
//!
//! [`patch_text`] parses, runs one pure edit, puts the result back onto the original text (so
//! line endings and a byte-order mark survive), then re-parses the output and compares it with
//! the input value by value: if anything other than the keys the edit reports has changed, or
//! the output does not parse, it refuses. A node's runtime config is not the place to find out
//! about a bug in this tool.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use toml_edit::{DocumentMut, Item, TableLike, Value};

use crate::edit::{Edit, EditError, KeyPath};
use crate::text;

mod fingerprint;

/// The result of patching one file's text.
#[derive(Debug, Clone)]
pub struct Patched {
    /// The text as read.
    pub before: String,
    /// The text to write (equal to `before` when the edit changed nothing).
    pub after: String,
    /// What the edit did.
    pub edit: Edit,
}

/// An edit refused because of the file's content, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line of the offending key, when it could be found.
    pub line: Option<usize>,
    /// What is wrong.
    pub error: EditError,
}

impl ConfigError {
    /// `path[:line]: ` and the edit's message, without the fix (which `Display` appends as
    /// `\nhelp: ...` and [`crate::error::render`] prints last).
    pub fn message_without_help(&self) -> String {
        let mut out = self.path.display().to_string();
        if let Some(line) = self.line {
            out.push_str(&format!(":{line}"));
        }
        out.push_str(": ");
        out.push_str(&self.error.message_without_help());
        out
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message_without_help())?;
        if let Some(help) = &self.error.help {
            write!(f, "\nhelp: {help}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

const BOM: char = '\u{feff}';

/// Reads a config file as UTF-8 text, with errors that say which file and why.
///
/// The file (after its own symlink) must be a regular file of at most
/// [`MAX_CONFIG_BYTES`](crate::plan::MAX_CONFIG_BYTES): it is opened without blocking (a FIFO
/// does not hang), checked with `fstat` on the open descriptor, and read with a bounded reader.
pub fn read_config(path: &Path) -> anyhow::Result<String> {
    let max = crate::plan::MAX_CONFIG_BYTES;
    let (mut file, _) = crate::plan::open_regular(path, max, true)?;
    let bytes = crate::plan::read_bounded(&mut file, path, max)?;
    String::from_utf8(bytes).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        let line = text::line_of(&String::from_utf8_lossy(e.as_bytes()), offset);
        anyhow::anyhow!(
            "`{}`:{line}: is not valid UTF-8 (byte offset {offset}), so it is not a TOML file",
            path.display()
        )
    })
}

/// A TOML parse error as shown (see [`text::parse_error_excerpt`]).
#[derive(Debug)]
struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// The fix of every "nested too deeply" error of the TOML parser.
fn recursion_help(line: usize) -> String {
    format!(
        "a runtime config nests a few levels deep; fix or remove line {line} (it looks \
         generated or corrupted)"
    )
}

/// Where `--config-file` takes a runtime's TOML config, for the fixes of a wrong file.
const WHICH_CONFIG: &str = "`--config-file` takes the runtime's TOML config (containerd: \
     `/etc/containerd/config.toml`, cri-o: `/etc/crio/crio.conf` or a file in \
     `/etc/crio/crio.conf.d/`)";

/// The error for a JSON file given as a config (TOML never starts with `{`): an OCI hook file,
/// an OCI runtime spec, or other JSON, each with the command it belongs to.
fn json_instead_of_toml(path: &Path, body: &str) -> Option<anyhow::Error> {
    if !body.trim_start().starts_with('{') {
        return None;
    }
    let keys = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(body).ok();
    let has = |k: &str| keys.as_ref().is_some_and(|m| m.contains_key(k));
    let path = path.display();
    Some(if has("hook") && (has("stages") || has("when")) {
        crate::error::help_error(
            format!("`{path}` is an OCI hook file (hooks.d JSON), not a runtime's TOML config"),
            format!(
                "{WHICH_CONFIG}; hook files are written by `install --interface oci-hooks` into \
                 the hooks dir that cri-o and podman read"
            ),
        )
    } else if has("ociVersion") {
        crate::error::help_error(
            format!(
                "`{path}` is an OCI runtime spec (JSON with `ociVersion`), not a runtime's TOML \
                 config"
            ),
            format!(
                "a base runtime spec goes to `--runtime-spec`: `tetragon-oci-hook-setup \
                 patch-containerd-conf add-oci-hook --config-file /etc/containerd/config.toml \
                 --runtime-spec {path}`"
            ),
        )
    } else {
        crate::error::help_error(format!("`{path}` is JSON, not TOML"), WHICH_CONFIG)
    })
}

/// What is usually wrong where the TOML parser stopped, judged from its message and the line:
/// the `help:` of a syntax error.
pub(crate) fn syntax_help(body: &str, e: &toml_edit::TomlError) -> String {
    let at = e.span().map_or(0, |s| s.start.min(body.len()));
    let (n, line) = match (body.get(..at), body.get(at..)) {
        (Some(head), Some(tail)) => {
            let start = head.rfind('\n').map_or(0, |i| i + 1);
            let end = tail.find('\n').map_or(body.len(), |i| at + i);
            (text::line_of(body, at), body.get(start..end).unwrap_or(""))
        }
        _ => (1, ""),
    };
    let line = line.trim();
    let msg = e.message();
    if msg.contains("duplicate key") {
        if line.starts_with('[') {
            let header = line.split_once(']').map_or(line, |(h, _)| h);
            let header = format!("{}]", header.trim_end_matches(']'));
            return format!(
                "line {n}: `{header}` is defined twice, or a key in it was already set earlier (as a dotted \
                 key or a sub-table): merge the two into one section"
            );
        }
        let key = line.split_once('=').map_or(line, |(k, _)| k).trim();
        return format!(
            "line {n}: `{key}` is already set in this table (an earlier line, or a `[...]` section of that \
             name): keep one of the two; TOML does not let a later line override an earlier one"
        );
    }
    let unclosed_quote = line.matches('"').count() % 2 == 1;
    // `key =` and nothing after it (but a comment): the value is missing, not unquoted.
    let no_value = line.split_once('=').is_some_and(|(_, v)| {
        let v = v.trim_start();
        v.is_empty() || v.starts_with('#')
    });
    let help = if msg.contains("unclosed array table") {
        "close the header with `]]` (an array \
         of tables is opened `[[` and closed `]]`)"
    } else if msg.contains("unclosed table") && unclosed_quote {
        "a quoted key on this line is not closed: add the missing `\"` before `]`"
    } else if msg.contains("unclosed table") {
        "close the table header with `]`, e.g. `[section.name]`"
    } else if msg.contains("multi-line basic string") {
        "close the multi-line string with `\"\"\"`"
    } else if msg.contains("multi-line literal string") {
        "close the multi-line string with `'''`"
    } else if msg.contains("basic string") {
        "close the string with `\"` on the same line (a string over several lines is written \
         `\"\"\"...\"\"\"`)"
    } else if msg.contains("literal string") && !msg.contains("must be quoted") {
        "close the string with `'` on the same line"
    } else if msg.contains("must be quoted") && no_value {
        "the key has no value: put one after `=` (e.g. `\"\"` for an empty string), or remove \
         the line"
    } else if msg.contains("must be quoted") {
        "quote the value, e.g. `root = \"/var/lib/containerd\"`"
    } else if msg.contains("key with no value") || msg.contains("expected `=`") {
        "put `=` between the key and its value, e.g. `disable = false`"
    } else if msg.contains("extra `=`") {
        "write one `=` between the key and its value"
    } else if msg.contains("boolean") {
        "booleans are `true` or `false`: lower case, without quotes"
    } else if msg.contains("escape") {
        "a `\\` in a \"...\" string starts an escape: double it (`\\\\`) or use a '...' string"
    } else if msg.contains("unicode") {
        "a `\\u` escape takes 4 hex digits, `\\U` 8, `\\x` 2; a `\\` meant literally is \
         doubled (`\\\\`) or the value is a '...' string"
    } else if msg.contains("extra comma") {
        "remove the extra `,`"
    } else if msg.contains("keys cannot be empty") {
        "a key is missing before `=`: name it, or remove the line"
    } else if [
        "date", "time", "fraction", "exponent", "integer", "float", "digit",
    ]
    .iter()
    .any(|w| msg.contains(w))
    {
        "this value is not a valid number, date or time: fix it, or quote it if it is text"
    } else if msg.contains("unclosed array") {
        "close the array with `]`; its items are separated by `,`"
    } else if msg.contains("inline table") {
        "close the inline table with `}`; its keys are separated by `,`"
    } else if msg.contains("expected newline") {
        "one `key = value` per line: remove what follows the value (a trailing `,`?), or start \
         a comment with `#`"
    } else if msg.contains("invalid key") || msg.contains("invalid unquoted key") {
        "a key is bare (letters, digits, `_`, `-`) or quoted: quote it, e.g. \
         `\"io.containerd.nri.v1.nri\"`"
    } else {
        "a missing quote, `=`, `]` or `,` just before the caret is the usual cause"
    };
    format!("line {n}: {help}")
}

/// Parses `original` (the content of `path`), applies `edit_fn`, and returns the checked result.
pub fn patch_text(
    path: &Path,
    original: &str,
    edit_fn: impl FnOnce(&mut DocumentMut) -> Result<Edit, EditError>,
) -> anyhow::Result<Patched> {
    patch_string(path, original.to_owned(), edit_fn)
}

/// As [`patch_text`], keeping `original` itself as [`Patched::before`] (no copy of the text).
pub fn patch_string(
    path: &Path,
    original: String,
    edit_fn: impl FnOnce(&mut DocumentMut) -> Result<Edit, EditError>,
) -> anyhow::Result<Patched> {
    let after = patch_body(path, &original, edit_fn)?;
    Ok(match after {
        (None, edit) => Patched {
            after: original.clone(),
            before: original,
            edit,
        },
        (Some(after), edit) => Patched {
            before: original,
            after,
            edit,
        },
    })
}

/// The checked patched text of `original` (`None`: unchanged) and what the edit did.
fn patch_body(
    path: &Path,
    original: &str,
    edit_fn: impl FnOnce(&mut DocumentMut) -> Result<Edit, EditError>,
) -> anyhow::Result<(Option<String>, Edit)> {
    // toml_edit accepts a byte-order mark but does not render it; keep it ourselves.
    let (bom, body) = match original.strip_prefix(BOM) {
        Some(rest) => (true, rest),
        None => (false, original),
    };
    let mut doc: DocumentMut = body.parse().map_err(|e: toml_edit::TomlError| {
        // The parser reports a key with too many parts with neither a line nor a hint.
        if e.span().is_none() && e.message().contains("recursion limit") {
            let line = text::deepest_key_line(body);
            return crate::error::help_error(
                format!(
                    "failed to parse `{}` as TOML\n`{}`:{line}: a key has too many dotted parts \
                 (nested too deeply for the TOML parser)",
                    path.display(),
                    path.display()
                ),
                recursion_help(line),
            );
        }
        if let Some(json) = json_instead_of_toml(path, body) {
            return json;
        }
        let message = format!("failed to parse `{}` as TOML", path.display());
        let shown = ParseError(text::parse_error_excerpt(body, &e));
        if e.message().contains("recurs") {
            // Arrays or inline tables nested too deeply: located, but says nothing of a fix.
            let line = e.span().map_or(1, |s| text::line_of(body, s.start));
            return anyhow::Error::new(shown)
                .context(crate::error::HelpError::new(message, recursion_help(line)));
        }
        anyhow::Error::new(shown)
            .context(crate::error::HelpError::new(message, syntax_help(body, &e)))
    })?;
    // toml_edit renders an unedited document byte for byte, except that line endings become
    // `\n` and a missing final newline is added; only then is the unedited rendering needed to
    // map the edit back onto the original lines.
    let needs_line_patch = body.contains('\r') || !(body.is_empty() || body.ends_with('\n'));
    let rendered_before = if needs_line_patch {
        doc.to_string()
    } else {
        String::new()
    };
    // What the verification needs of the unedited document, instead of a clone of it.
    let before = fingerprint::Before::of(doc.as_table());
    let edit = edit_fn(&mut doc).map_err(|error| ConfigError {
        path: path.to_owned(),
        line: text::locate(body, &error.key),
        error,
    })?;
    if edit.is_unchanged() {
        return Ok((None, edit));
    }
    let rendered_after = doc.to_string();
    // Not needed past the rendering: the verification below holds the fingerprints of the
    // unedited document and the re-parsed output, never two documents at once.
    drop(doc);
    // Its pages go back to the kernel before the output is parsed: the parser's large token
    // buffer does not fit in the small holes it leaves, so they would stay resident for nothing
    // (a 1 MB config: about 3 MiB of the peak).
    crate::sys::release_free_memory();
    let mut after = if needs_line_patch {
        text::reapply_edit(body, &rendered_before, &rendered_after)
    } else {
        rendered_after
    };
    // A file without a final newline keeps it that way, whatever line the edit touched.
    if !body.is_empty() && !body.ends_with('\n') {
        if let Some(rest) = after.strip_suffix('\n') {
            after = rest.strip_suffix('\r').unwrap_or(rest).to_owned();
        }
    }
    if bom {
        after.insert(0, BOM);
    }
    verify(path, before, body, &after, &edit)?;
    Ok((Some(after), edit))
}

/// Re-parses the output and checks that it differs from the input (`before`, from `original`)
/// only under the keys the edit says it changed.
fn verify(
    path: &Path,
    before: fingerprint::Before,
    original: &str,
    after: &str,
    edit: &Edit,
) -> anyhow::Result<()> {
    let body = after.strip_prefix(BOM).unwrap_or(after);
    // A span-keeping parse: the same grammar as `DocumentMut`'s, without the cost of dropping
    // the spans afterwards.
    let reparsed = toml_edit::Document::parse(body).with_context(|| {
        format!(
            "internal error: the patched `{}` would not parse; nothing was written (please report \
             this with the input file)",
            path.display()
        )
    })?;
    // A changed leaf is accounted for when one of its prefixes is a key the edit reports.
    let stray = before.stray(reparsed.as_table(), &edit.touched_keys(), original);
    if !stray.is_empty() {
        let list: Vec<String> = stray.iter().map(|k| format!("`{k}`")).collect();
        bail!(
            "internal error: patching `{}` would also change {}; nothing was written (please \
             report this with the input file)",
            path.display(),
            list.join(", ")
        );
    }
    Ok(())
}

/// Lists the leaf keys whose values differ between two documents (added, removed or changed),
/// comparing values, not formatting.
pub fn changed_keys(before: &Item, after: &Item) -> Vec<KeyPath> {
    let mut out = Vec::new();
    diff_items(before, after, &mut Vec::new(), &mut out);
    out
}

fn found(path: &[&str], out: &mut Vec<KeyPath>) {
    out.push(KeyPath::new(path.iter().copied()));
}

fn diff_items<'a>(a: &'a Item, b: &'a Item, path: &mut Vec<&'a str>, out: &mut Vec<KeyPath>) {
    match (a.as_table_like(), b.as_table_like()) {
        (Some(ta), Some(tb)) => diff_tables(Some(ta), Some(tb), path, out),
        (None, None) => {
            if !items_equal(a, b) {
                found(path, out);
            }
        }
        _ => found(path, out),
    }
}

fn diff_tables<'a>(
    a: Option<&'a dyn TableLike>,
    b: Option<&'a dyn TableLike>,
    path: &mut Vec<&'a str>,
    out: &mut Vec<KeyPath>,
) {
    // Keys of `a` (changed or removed), then keys only in `b` (added).
    if let Some(ta) = a {
        for (k, ia) in ta.iter() {
            path.push(k);
            match b.and_then(|tb| tb.get(k)) {
                Some(ib) => diff_items(ia, ib, path, out),
                None => one_sided(ia, true, path, out),
            }
            path.pop();
        }
    }
    if let Some(tb) = b {
        for (k, ib) in tb.iter() {
            if a.is_some_and(|ta| ta.contains_key(k)) {
                continue;
            }
            path.push(k);
            one_sided(ib, false, path, out);
            path.pop();
        }
    }
}

/// An item present on one side only: report its leaves, so that an added table is judged by the
/// keys inside it.
fn one_sided<'a>(item: &'a Item, before: bool, path: &mut Vec<&'a str>, out: &mut Vec<KeyPath>) {
    match item.as_table_like() {
        Some(t) if !t.is_empty() => {
            if before {
                diff_tables(Some(t), None, path, out);
            } else {
                diff_tables(None, Some(t), path, out);
            }
        }
        _ => found(path, out),
    }
}

fn items_equal(a: &Item, b: &Item) -> bool {
    match (a, b) {
        (Item::Value(x), Item::Value(y)) => values_equal(x, y),
        (Item::ArrayOfTables(x), Item::ArrayOfTables(y)) => {
            x.len() == y.len()
                && x.iter().zip(y.iter()).all(|(p, q)| {
                    let mut out = Vec::new();
                    diff_tables(Some(p), Some(q), &mut Vec::new(), &mut out);
                    out.is_empty()
                })
        }
        (Item::None, Item::None) => true,
        _ => false,
    }
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.value() == y.value(),
        (Value::Integer(x), Value::Integer(y)) => x.value() == y.value(),
        (Value::Float(x), Value::Float(y)) => {
            x.value() == y.value() || (x.value().is_nan() && y.value().is_nan())
        }
        (Value::Boolean(x), Value::Boolean(y)) => x.value() == y.value(),
        (Value::Datetime(x), Value::Datetime(y)) => x.value() == y.value(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| values_equal(p, q))
        }
        (Value::InlineTable(x), Value::InlineTable(y)) => {
            let mut out = Vec::new();
            diff_tables(Some(x), Some(y), &mut Vec::new(), &mut out);
            out.is_empty()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd;

    #[test]
    fn patch_text_keeps_crlf_and_bom() {
        let original =
            "\u{feff}version = 2\r\n[plugins.\"io.containerd.nri.v1.nri\"]\r\n  disable = true\r\n";
        let p = patch_text(Path::new("c.toml"), original, containerd::enable_nri).unwrap();
        assert_eq!(
            p.after,
            "\u{feff}version = 2\r\n[plugins.\"io.containerd.nri.v1.nri\"]\r\n  disable = false\r\n"
        );
    }

    #[test]
    fn patch_text_locates_errors() {
        let original = "version = 2\n\n[plugins]\n  \"io.containerd.nri.v1.nri\" = 'on'\n";
        let err = patch_text(Path::new("c.toml"), original, containerd::enable_nri).unwrap_err();
        insta::assert_snapshot!(err.to_string(), @r#"
        c.toml:4: `plugins."io.containerd.nri.v1.nri"` is a string, expected a table
        help: `plugins."io.containerd.nri.v1.nri"` must be a table such as `[plugins."io.containerd.nri.v1.nri"]`; fix or remove that line, then re-run
        "#);
    }

    #[test]
    fn parse_error_shows_a_long_line_cut_around_the_error_with_the_caret_on_it() {
        // A 2 MB value, then a syntax error on the same line.
        let long = "x".repeat(2 << 20);
        let original = format!("version = 2\na = \"{long}\" ] = 1\n");
        let err = patch_text(Path::new("c.toml"), &original, containerd::enable_nri).unwrap_err();
        let shown = crate::error::render(&err);
        assert!(shown.len() < 1000, "{} bytes shown", shown.len());
        let lines: Vec<&str> = shown.lines().collect();
        // (`render` indents a cause's lines; the excerpt and the caret line alike.)
        let at = lines
            .iter()
            .position(|l| l.trim_start().starts_with("2 | "))
            .unwrap();
        let indent = lines[at].len() - lines[at].trim_start().len();
        let excerpt: Vec<char> = lines[at].chars().collect();
        let caret = lines[at + 1].find('^').unwrap();
        assert_eq!(excerpt[caret], ']', "{shown}");
        assert_eq!(excerpt[indent + 4], '…', "{shown}");
        assert_eq!(excerpt.last(), Some(&'1'), "{shown}");
        assert!(
            excerpt.len() <= indent + 4 + 2 + text::EXCERPT_COLUMNS,
            "{shown}"
        );
        assert!(
            shown.contains(&format!("at line 2, column {}", 4 + 1 + long.len() + 3)),
            "{shown}"
        );
        // A short line is shown as toml_edit shows it.
        let err = patch_text(Path::new("c.toml"), "a = [\n", containerd::enable_nri).unwrap_err();
        let toml_err = "a = [\n".parse::<DocumentMut>().unwrap_err();
        assert_eq!(
            err.chain().nth(1).unwrap().to_string(),
            toml_err.to_string()
        );
    }

    #[test]
    fn every_recursion_limit_error_has_a_help_printed_last() {
        let arrays = format!("version = 2\na = {}{}\n", "[".repeat(200), "]".repeat(200));
        let inline = format!(
            "version = 2\n\na = {}{}\n",
            "{ b = ".repeat(200),
            "}".repeat(200)
        );
        let dotted = format!("version = 2\n\n\n{} = 1\n", vec!["k"; 200].join("."));
        for (text, line) in [(arrays, 2), (inline, 3), (dotted, 4)] {
            let err = patch_text(Path::new("c.toml"), &text, containerd::enable_nri).unwrap_err();
            let shown = crate::error::render(&err);
            let last = shown.lines().last().unwrap();
            assert!(
                last.starts_with("help: ") && last.contains(&format!("line {line}")),
                "{shown}"
            );
            assert!(
                shown.contains("failed to parse `c.toml` as TOML"),
                "{shown}"
            );
        }
    }

    #[test]
    fn verify_rejects_stray_changes() {
        let before: DocumentMut = "a = 1\nb = 2\n".parse().unwrap();
        let edit = Edit {
            changes: vec![crate::edit::Change::Inserted {
                key: KeyPath::new(["a"]),
            }],
            ..Edit::default()
        };
        let check = |after: &str| {
            let before = fingerprint::Before::of(before.as_table());
            verify(Path::new("x"), before, "a = 1\nb = 2\n", after, &edit)
        };
        assert!(check("a = 3\nb = 2\n").is_ok());
        let err = check("a = 3\nb = 4\n").unwrap_err();
        assert!(err.to_string().contains("would also change `b`"), "{err}");
        assert!(check("a = [\n").is_err());
    }

    /// The fingerprint verification refuses exactly what comparing the two documents key by key
    /// ([`changed_keys`], filtered by the edit's keys) refuses, and names the same keys.
    #[test]
    fn fingerprint_verification_refuses_what_the_document_comparison_refuses() {
        let cases: &[(&str, &str, &[&str], bool)] = &[
            // (input, output, keys the edit reports, refused)
            ("a = 1\nb = 2\n", "a = 3\nb = 2\n", &["a"], false),
            ("a = 1\nb = 2\n", "a = 3\nb = 4\n", &["a"], true),
            ("a = 1\nb = 2\n", "a = 3\n", &["a"], true),
            ("a = 1\n", "a = 1\n[e]\n", &[], true),
            ("a = 1\n[e]\n", "a = 1\n", &[], true),
            ("a = 1\n[e]\n", "a = 1\n[e]\n", &[], false),
            (
                "[t]\nx = 'a'\ny = [1, 2]\n",
                "t = { y = [1,2], x = \"a\" }\n",
                &[],
                false,
            ),
            (
                "p = [{ a = 1, b = 2 }]\n",
                "p = [{ b = 2, a = 1 }]\n",
                &[],
                false,
            ),
            ("p = [1, 2]\n", "p = [2, 1]\n", &[], true),
            ("f = -0.0\ng = nan\n", "f = 0.0\ng = -nan\n", &[], false),
            ("f = 1.0\n", "f = 1\n", &[], true),
            ("d = 1979-05-27\n", "d = 1979-05-27\n", &[], false),
            ("d = 1979-05-27\n", "d = 1979-05-28\n", &[], true),
            ("s = 'x'\n", "s = \"\\u0078\"\n", &[], false),
            (
                "v = 2\n",
                "v = 2\n[p.n]\nd = false\n",
                &["p", "n", "d"],
                false,
            ),
            (
                "v = 2\n",
                "v = 2\n[p.n]\nd = false\ne = 1\n",
                &["p", "n", "d"],
                true,
            ),
            (
                "[p.n]\nd = true\nk = 1\n",
                "p = 'x'\n",
                &["p", "n", "d"],
                true,
            ),
            ("[p.n]\nd = true\nk = 1\n", "p = 'x'\n", &["p"], false),
            (
                "[p.n]\nd = true\n",
                "[p]\nn = { d = false }\n",
                &["p", "n", "d"],
                false,
            ),
            (
                "[[r]]\na = 1\n[[r]]\na = 2\n",
                "[[r]]\na = 1\n[[r]]\na = 3\n",
                &[],
                true,
            ),
            ("[[r]]\na = 1\n", "r = [{ a = 1 }]\n", &[], true),
            ("[a.b]\n[a.c]\nx = 1\n", "[a.c]\nx = 1\n", &["a", "c"], true),
            (
                "[a.b]\nx = 1\n",
                "[a.b]\nx = 1\ny = 2\n",
                &["a", "b", "y"],
                false,
            ),
        ];
        for (before, after, key, refused) in cases {
            let doc: DocumentMut = before.parse().unwrap();
            let edit = Edit {
                changes: vec![crate::edit::Change::Inserted {
                    key: KeyPath::new(key.iter().copied()),
                }],
                ..Edit::default()
            };
            let touched = edit.touched_keys();
            let by_documents: Vec<KeyPath> = {
                let out: DocumentMut = after.parse().unwrap();
                changed_keys(doc.as_item(), out.as_item())
                    .into_iter()
                    .filter(|k| {
                        (1..=k.0.len()).all(|n| !touched.iter().any(|t| t.0[..] == k.0[..n]))
                    })
                    .collect()
            };
            let out = toml_edit::Document::parse(*after).unwrap();
            let mut by_fingerprints =
                fingerprint::Before::of(doc.as_table()).stray(out.as_table(), &touched, before);
            assert_eq!(
                !by_fingerprints.is_empty(),
                *refused,
                "{before:?} -> {after:?}"
            );
            assert_eq!(
                by_documents.is_empty(),
                by_fingerprints.is_empty(),
                "{before:?}"
            );
            // The same keys, but where a table became a value (or the reverse): the comparison
            // of documents names that key only, this one also the keys that were under it.
            by_fingerprints.retain(|k| {
                !by_documents
                    .iter()
                    .any(|d| k.0.len() > d.0.len() && k.0.starts_with(&d.0))
            });
            by_fingerprints.sort_by(|a, b| a.0.cmp(&b.0));
            let mut by_documents = by_documents;
            by_documents.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(by_fingerprints, by_documents, "{before:?} -> {after:?}");
        }
    }

    /// An edit that also changes a key it does not report is refused end to end: nothing is
    /// returned to write, and the error names the key.
    #[test]
    fn patch_text_refuses_an_edit_that_changes_an_unreported_key() {
        let original = "version = 2\n[plugins.x]\n  keep = 1\n  gone = 'a'\n";
        let sneaky = |doc: &mut DocumentMut| {
            doc["plugins"]["x"]["keep"] = toml_edit::value(2);
            doc["plugins"]["x"].as_table_mut().map(|t| t.remove("gone"));
            Ok(Edit {
                changes: vec![crate::edit::Change::Inserted {
                    key: KeyPath::new(["plugins", "x", "keep"]),
                }],
                ..Edit::default()
            })
        };
        let err = patch_text(Path::new("c.toml"), original, sneaky).unwrap_err();
        assert!(
            err.to_string()
                .contains("would also change `plugins.x.gone`"),
            "{err}"
        );
    }

    #[test]
    fn changed_keys_ignores_formatting() {
        let a: DocumentMut = "[t]\nx = 'a' # c\ny = [1, 2]\n".parse().unwrap();
        let b: DocumentMut = "t = { x = \"a\", y = [ 1,2 ] }\n".parse().unwrap();
        assert!(changed_keys(a.as_item(), b.as_item()).is_empty());
        let c: DocumentMut = "[t]\nx = 'a'\ny = [1, 3]\n[u.v]\nw = 1\n".parse().unwrap();
        assert_eq!(
            changed_keys(a.as_item(), c.as_item()),
            vec![KeyPath::new(["t", "y"]), KeyPath::new(["u", "v", "w"])]
        );
    }
}

/// Where a patched config goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Back to the config file itself.
    InPlace,
    /// To this file (which may be the config itself, which then means [`Output::InPlace`]).
    Path(PathBuf),
    /// To a new temporary file whose path is reported (upstream's default).
    NewTempFile,
}

/// Reads `config`, applies `edit_fn`, and returns the plan that writes the result to `output`,
/// with what the edit did. Nothing is written here.
pub fn plan_file(
    config: &Path,
    output: &Output,
    edit_fn: impl FnOnce(&mut DocumentMut) -> Result<Edit, EditError>,
) -> anyhow::Result<(crate::plan::Plan, Edit)> {
    let original = read_config(config)?;
    plan_text(config, original, false, output, edit_fn)
}

/// As [`plan_file`] for a config that does not exist yet (`--create`): the edit starts from
/// `start` (an empty versioned file), and the plan creates the file with the result, or plans
/// nothing when the edit changes nothing. Nothing is read or written here.
pub fn plan_new_file(
    config: &Path,
    start: &str,
    output: &Output,
    edit_fn: impl FnOnce(&mut DocumentMut) -> Result<Edit, EditError>,
) -> anyhow::Result<(crate::plan::Plan, Edit)> {
    plan_text(config, start.to_owned(), true, output, edit_fn)
}

/// The plan of [`plan_file`] from the config's text (`new`: the config does not exist, and
/// `original` is where the edit starts).
fn plan_text(
    config: &Path,
    original: String,
    new: bool,
    output: &Output,
    edit_fn: impl FnOnce(&mut DocumentMut) -> Result<Edit, EditError>,
) -> anyhow::Result<(crate::plan::Plan, Edit)> {
    let output = check_output(config, new, output)?;
    let patched = patch_string(config, original, edit_fn)?;
    plan_checked(config, patched, new, output)
}

/// The plan of [`plan_file`] from a patch already made ([`patch_string`] of the config's text,
/// e.g. by the check that judged the edit: the file is read and parsed once). `new`: the config
/// does not exist, and `patched.before` is where the edit started (see [`plan_new_file`]).
pub fn plan_patched(
    config: &Path,
    patched: Patched,
    new: bool,
    output: &Output,
) -> anyhow::Result<(crate::plan::Plan, Edit)> {
    let output = check_output(config, new, output)?;
    plan_checked(config, patched, new, output)
}

/// Where the plan writes: `output`, a path naming the config itself taken as in place, checked
/// before anything is planned.
fn check_output<'a>(config: &Path, new: bool, output: &'a Output) -> anyhow::Result<&'a Output> {
    let output = match output {
        Output::Path(p) if same_file(p, config) => &Output::InPlace,
        other => other,
    };
    if let Output::Path(out) = output {
        crate::plan::check_target(out)?;
    }
    if new && matches!(output, Output::InPlace) {
        // Created where nothing is: its directory must exist, and a link put there since the
        // command looked is refused here (and at the write, never followed).
        crate::plan::check_target(config)?;
    }
    Ok(output)
}

/// The plan once the targets are checked (`output` is no longer a path naming the config).
fn plan_checked(
    config: &Path,
    mut patched: Patched,
    new: bool,
    output: &Output,
) -> anyhow::Result<(crate::plan::Plan, Edit)> {
    use crate::plan::{FileWrite, Plan, Step, Target, diff_label};

    if new {
        // Nothing on disk: the diff starts from nothing, and an edit that changes nothing
        // creates no file.
        patched.before = String::new();
        if patched.edit.is_unchanged() {
            patched.after = String::new();
        }
    }
    if let Output::Path(out) = output {
        if let Some((uid, mode)) = crate::plan::foreign_owner(out) {
            patched.edit.notes.push(format!(
                "`{}` belongs to uid {uid}, not to uid {} writing it: the new file is ours, mode \
                 0644 (its owner and mode {mode:04o} are not kept)",
                out.display(),
                crate::sys::euid()
            ));
        }
    }
    let (target, label_after, before) = match output {
        Output::InPlace if new => (
            Target::New(config.to_owned()),
            diff_label(config),
            patched.before.clone(),
        ),
        Output::InPlace => (
            Target::Path(config.to_owned()),
            diff_label(config),
            std::mem::take(&mut patched.before),
        ),
        Output::Path(p) => (
            Target::Exact(p.clone()),
            diff_label(p),
            std::mem::take(&mut patched.before),
        ),
        Output::NewTempFile => {
            let name = config
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "config.toml".into());
            let (stem, ext) = match name.rsplit_once('.') {
                Some((s, e)) if !s.is_empty() => (s.to_owned(), format!(".{e}")),
                _ => (name.clone(), String::new()),
            };
            (
                Target::NewTempFile {
                    dir: std::env::temp_dir(),
                    prefix: format!("{stem}-"),
                    suffix: ext,
                },
                diff_label(config),
                std::mem::take(&mut patched.before),
            )
        }
    };
    let write = FileWrite {
        label_before: diff_label(config),
        label_after,
        target,
        before,
        after: patched.after,
        template: Some(config.to_owned()),
    };
    Ok((
        Plan {
            steps: vec![Step::Write(write)],
        },
        patched.edit,
    ))
}

/// Takes the edit lock on the file that writing `config`'s patch to `output` replaces (see
/// [`crate::plan::lock_edit`]), waiting at most `wait`; `None` for a new temporary file, which
/// no other run writes. Hold it from before [`plan_file`] reads the config until the plan is
/// applied, so that two runs on one file never lose an edit.
pub fn lock_for(
    config: &Path,
    output: &Output,
    wait: std::time::Duration,
) -> anyhow::Result<Option<crate::plan::EditLock>> {
    // A name that is not followed: its directory's canonical path, then it.
    let unfollowed = |p: &Path| {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        match (std::fs::canonicalize(dir), p.file_name()) {
            (Ok(dir), Some(name)) => dir.join(name),
            // A missing directory or no file name: the write is refused later anyway.
            _ => p.to_owned(),
        }
    };
    let in_place = |config: &Path| match std::fs::canonicalize(config) {
        // A config that does not exist yet (`--create`; not a dangling link): locked by name.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && std::fs::symlink_metadata(config).is_err() =>
        {
            Ok(unfollowed(config))
        }
        r => r.with_context(|| format!("failed to read `{}`", config.display())),
    };
    let key = match output {
        Output::NewTempFile => return Ok(None),
        Output::InPlace => in_place(config)?,
        Output::Path(p) if same_file(p, config) => in_place(config)?,
        Output::Path(p) => unfollowed(p),
    };
    crate::plan::lock_edit(&key, wait).map(Some)
}

/// Whether the output path names the config itself (the same directory entry: same device and
/// inode by `lstat`, so a symlink at the output that points to the config is not the config; or
/// the same path when the output does not exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}
