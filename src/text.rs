//! Text-level helpers around `toml_edit`: line endings and line numbers.
//!
//! `toml_edit` keeps comments and spacing, but it renders every line ending as `\n`, so a CRLF
//! file would come back converted. [`reapply_edit`] puts the edit back onto the original text
//! as a line patch: every line the edit did not touch is copied from the original byte for byte,
//! and new lines take the file's own line ending.

use crate::edit::KeyPath;

/// The line ending a file mostly uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnding {
    /// `\n`
    Lf,
    /// `\r\n`
    CrLf,
}

impl LineEnding {
    /// The ending most lines of `text` use (`\n` when there is a tie or no line break).
    pub fn dominant(text: &str) -> Self {
        let lf = text.matches('\n').count();
        let crlf = text.matches("\r\n").count();
        if crlf * 2 > lf { Self::CrLf } else { Self::Lf }
    }

    /// The ending as text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lf => "\n",
            Self::CrLf => "\r\n",
        }
    }
}

/// Strips one trailing `\n` or `\r\n` from a line.
fn body(line: &str) -> &str {
    line.strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(line)
}

/// Replaces the `\n` that ends `line` (if any) by `ending`.
fn with_ending(line: &str, ending: LineEnding) -> String {
    if line.ends_with('\n') {
        format!("{}{}", body(line), ending.as_str())
    } else {
        line.to_owned()
    }
}

/// Lines (of the longer text) from which the printed diff anchors on lines that occur once on
/// each side before running Myers between the anchors (patience diff). Myers alone costs the
/// number of lines times the number of differences: an edit touching every runtime table of a
/// large config (add-oci-hook, 25,000 tables, 10 MB) took 17 s to diff; with the anchors 0.4 s,
/// and the same diff there (`tests::patience_gives_the_minimal_diff_on_large_edits`). Patience
/// is not minimal in general: where the edit moves a line's text elsewhere, the printed diff can
/// be longer than Myers' (still a correct diff). Only the printed diff uses it: [`reapply_edit`]
/// needs a minimal diff. Below it, Myers as always.
pub const PATIENCE_FROM_LINES: usize = 10_000;

/// The line-diff algorithm for texts of `a` and `b`: see [`PATIENCE_FROM_LINES`].
pub fn line_diff_algorithm(a: &str, b: &str) -> similar::Algorithm {
    let lines = |t: &str| t.bytes().filter(|&c| c == b'\n').count();
    if lines(a).max(lines(b)) >= PATIENCE_FROM_LINES {
        similar::Algorithm::Patience
    } else {
        similar::Algorithm::Myers
    }
}

/// Puts an edit made through `toml_edit` back onto the original text.
///
/// `original` is the file as read; `rendered_original` is `toml_edit`'s rendering of it before
/// the edit and `rendered_edited` after. Lines that the edit left alone are copied from
/// `original` (keeping their exact line endings); added or changed lines get the file's dominant
/// line ending. When `toml_edit`'s rendering of the unedited document is not the original line
/// for line (which its round-trip guarantee rules out, but a tool that writes node configs does
/// not bet on it), the edited rendering is used with its line endings converted.
pub fn reapply_edit(original: &str, rendered_original: &str, rendered_edited: &str) -> String {
    let ending = LineEnding::dominant(original);
    let orig_lines: Vec<&str> = original.split_inclusive('\n').collect();
    let before: Vec<&str> = rendered_original.split_inclusive('\n').collect();
    // `toml_edit` adds a final newline where the file had none; that is the one difference
    // allowed on the last line.
    let last = orig_lines.len().saturating_sub(1);
    let round_trips = orig_lines.len() == before.len()
        && orig_lines
            .iter()
            .zip(&before)
            .enumerate()
            .all(|(i, (o, b))| {
                body(o) == body(b) && (i == last || o.ends_with('\n') == b.ends_with('\n'))
            });
    if !round_trips {
        let mut out = String::with_capacity(rendered_edited.len());
        for line in rendered_edited.split_inclusive('\n') {
            out.push_str(&with_ending(line, ending));
        }
        return out;
    }
    if original == rendered_original && !original.contains('\r') {
        // Nothing to restore: the common case costs no diff.
        return rendered_edited.to_owned();
    }
    let after: Vec<&str> = rendered_edited.split_inclusive('\n').collect();
    // Myers whatever the size: lines equal on both sides are copied from the original with their
    // own endings, so the diff must be minimal (patience can mark untouched lines as deleted and
    // re-inserted, which would give them the dominant ending).
    let diff = similar::capture_diff_slices(similar::Algorithm::Myers, &before, &after);
    let mut out = String::with_capacity(rendered_edited.len() + orig_lines.len());
    let push = |out: &mut String, line: &str| {
        // A line copied from the original may lack its newline (the file's last line); if more
        // follows, it needs one.
        if !out.is_empty() && !out.ends_with('\n') {
            out.push_str(ending.as_str());
        }
        out.push_str(line);
    };
    for op in diff {
        match op {
            similar::DiffOp::Equal { old_index, len, .. } => {
                for line in &orig_lines[old_index..old_index + len] {
                    push(&mut out, line);
                }
            }
            similar::DiffOp::Delete { .. } => {}
            similar::DiffOp::Insert {
                new_index, new_len, ..
            }
            | similar::DiffOp::Replace {
                new_index, new_len, ..
            } => {
                for line in &after[new_index..new_index + new_len] {
                    push(&mut out, &with_ending(line, ending));
                }
            }
        }
    }
    out
}

/// Line starts of a text, for the lines of many offsets: [`Lines::line_of`] agrees with
/// [`line_of`] by binary search, where counting from the start for every key of a big config
/// made the checks quadratic (a 1 MB config with 3,000 runtimes took seconds).
#[derive(Debug, Clone, Default)]
pub struct Lines {
    /// Byte offsets of the `\n`s. Texts are at most 64 MiB here, so they fit a `u32`; past
    /// 4 GiB, which no caller passes, the last offsets are not indexed.
    newlines: Vec<u32>,
}

impl Lines {
    /// Indexes `text`.
    pub fn new(text: &str) -> Self {
        Self {
            newlines: text
                .bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map_while(|(i, _)| u32::try_from(i).ok())
                .collect(),
        }
    }

    /// The 1-based line of byte `offset`, as [`line_of`] counts it.
    pub fn line_of(&self, offset: usize) -> usize {
        self.newlines
            .partition_point(|&n| (n as usize) < offset)
            .saturating_add(1)
    }
}

/// The 1-based line number of byte offset `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// How many columns of the offending line a parse error shows, around the error.
pub const EXCERPT_COLUMNS: usize = 200;

/// A TOML parse error of `input` as `toml_edit` shows it (position, the offending line, a caret
/// under the error, the message), except that a line longer than [`EXCERPT_COLUMNS`] is cut to
/// that many columns around the error, each cut marked with `…`, the caret kept under the
/// error: a 20 MB one-line value does not come back as 40 MB of error message.
pub fn parse_error_excerpt(input: &str, err: &toml_edit::TomlError) -> String {
    let Some(span) = err.span() else {
        return err.to_string();
    };
    let index = span.start.min(input.len());
    let line_start = input[..index].rfind('\n').map_or(0, |i| i + 1);
    let line_end = input[index..].find('\n').map_or(input.len(), |i| index + i);
    let content = &input[line_start..line_end];
    let total = content.chars().count();
    let highlight = span.end.saturating_sub(span.start);
    if total <= EXCERPT_COLUMNS && highlight <= EXCERPT_COLUMNS {
        // As toml_edit shows it.
        return err.to_string();
    }
    let column = input[line_start..index].chars().count() + (span.start - index);
    let first = column
        .saturating_sub(EXCERPT_COLUMNS / 2)
        .min(total.saturating_sub(EXCERPT_COLUMNS));
    let last = (first + EXCERPT_COLUMNS).min(total);
    let mut shown = String::new();
    if first > 0 {
        shown.push('…');
    }
    shown.extend(content.chars().skip(first).take(last - first));
    if last < total {
        shown.push('…');
    }
    let caret_at = column - first + usize::from(first > 0);
    let carets = highlight.clamp(1, (last.saturating_sub(column)).max(1));
    let line_num = line_of(input, index);
    let gutter = " ".repeat(line_num.to_string().len() + 1);
    format!(
        "TOML parse error at line {line_num}, column {}\n{gutter}|\n{line_num} | {shown}\n{gutter}|{}{}\n{}\n",
        column + 1,
        " ".repeat(caret_at + 1),
        "^".repeat(carets),
        err.message()
    )
}

/// Finds the line on which `key` is written in `text`, by walking a span-keeping parse.
///
/// Returns the line of the deepest segment of `key` that exists, so that an error about a
/// missing child still points at its parent. `None` when the text does not parse or not even
/// the first segment exists.
pub fn locate(text: &str, key: &KeyPath) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut item: &toml_edit::Item = doc.as_item();
    let mut found: Option<usize> = None;
    for segment in key.segments() {
        let Some(table) = item.as_table_like() else {
            break;
        };
        let Some((k, child)) = table.get_key_value(segment) else {
            break;
        };
        let span = k.span().or_else(|| child.span());
        if let Some(span) = span {
            found = Some(line_of(text, span.start));
        }
        item = child;
    }
    found
}

/// The 1-based line whose key has the most dotted parts (outside quotes), counting a table
/// header's key too: where a "nested too deeply" parse error is.
pub fn deepest_key_line(text: &str) -> usize {
    let mut best = (0, 1);
    for (i, line) in text.lines().enumerate() {
        let mut parts = 0usize;
        let mut quote: Option<char> = None;
        for c in line.trim_start().trim_start_matches('[').chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '.') => parts += 1,
                (None, '=' | ']' | '#') => break,
                (None, _) => {}
            }
        }
        if parts > best.0 {
            best = (parts, i + 1);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config of `n` runtime tables, and the same with every `base_runtime_spec` set and a key
    /// added to every third table: an edit all over the file, as add-oci-hook makes.
    fn scattered_edit(n: usize, newline: &str) -> (String, String) {
        let (mut before, mut after) = (String::new(), String::new());
        for i in 0..n {
            let head = format!(
                "# runtime handler {i}{newline}[plugins.\"cri\".runtimes.h-{i}]{newline}  \
                 runtime_type = \"io.containerd.runc.v2\"{newline}"
            );
            before.push_str(&head);
            after.push_str(&head);
            before.push_str(&format!("  base_runtime_spec = \"\"{newline}"));
            after.push_str(&format!(
                "  base_runtime_spec = \"/etc/spec.json\"{newline}"
            ));
            if i % 3 == 0 {
                after.push_str(&format!("  added = true{newline}"));
            }
            let tail = format!("  SystemdCgroup = true{newline}{newline}");
            before.push_str(&tail);
            after.push_str(&tail);
        }
        (before, after)
    }

    #[test]
    fn patience_gives_the_minimal_diff_on_large_edits() {
        let (before, after) = scattered_edit(2_500, "\n");
        assert!(before.lines().count() >= PATIENCE_FROM_LINES);
        assert_eq!(
            line_diff_algorithm(&before, &after),
            similar::Algorithm::Patience
        );
        let ops = |alg| similar::capture_diff_slices(alg, &lines(&before), &lines(&after));
        assert_eq!(
            ops(similar::Algorithm::Patience),
            ops(similar::Algorithm::Myers)
        );
        // Small texts keep Myers.
        let (small, small_after) = scattered_edit(10, "\n");
        assert_eq!(
            line_diff_algorithm(&small, &small_after),
            similar::Algorithm::Myers
        );
    }

    fn lines(t: &str) -> Vec<&str> {
        t.split_inclusive('\n').collect()
    }

    /// A large CRLF file with some untouched LF lines, where the edit gives one key the value
    /// another key had: the old text of that line is then unique on both sides but at different
    /// places. Patience (what the printed diff uses at this size) anchors on it and marks every
    /// line in between as deleted and re-inserted; the line mapping must not, since those lines
    /// were not touched by the edit and must keep their own endings.
    #[test]
    fn a_large_edit_keeps_the_endings_of_untouched_lines_between_moved_values() {
        let n = PATIENCE_FROM_LINES + 10;
        let mut original = String::from("[a]\r\nx = 0\r\n");
        let mut edited_expected = String::from("[a]\r\nv = 1\r\n");
        for i in 0..n {
            // Lines that occur many times; every seventh ends with LF only.
            let nl = if i % 7 == 0 { "\n" } else { "\r\n" };
            let line = format!("  SystemdCgroup = true{nl}");
            original.push_str(&line);
            edited_expected.push_str(&line);
        }
        original.push_str("v = 1\r\n[end]\r\n");
        edited_expected.push_str("v = 2\r\n[end]\r\n");
        let rendered = original.replace("\r\n", "\n");
        let edited = edited_expected.replace("\r\n", "\n");
        assert_eq!(
            line_diff_algorithm(&rendered, &edited),
            similar::Algorithm::Patience
        );
        let out = reapply_edit(&original, &rendered, &edited);
        assert!(
            out == edited_expected,
            "untouched lines changed their endings"
        );
    }

    #[test]
    fn reapply_edit_keeps_crlf_on_untouched_and_new_lines() {
        let original = "a = 1\r\n[t]\r\nb = true # keep\r\n";
        let rendered = "a = 1\n[t]\nb = true # keep\n";
        let edited = "a = 1\n[t]\nb = false # keep\nc = 2\n";
        assert_eq!(
            reapply_edit(original, rendered, edited),
            "a = 1\r\n[t]\r\nb = false # keep\r\nc = 2\r\n"
        );
    }

    #[test]
    fn reapply_edit_keeps_a_minority_ending_on_untouched_lines() {
        let original = "a = 1\r\nb = 2\nc = 3\n";
        let rendered = "a = 1\nb = 2\nc = 3\n";
        let edited = "a = 1\nb = 2\nc = 3\nd = 4\n";
        assert_eq!(
            reapply_edit(original, rendered, edited),
            "a = 1\r\nb = 2\nc = 3\nd = 4\n"
        );
    }

    #[test]
    fn reapply_edit_keeps_a_missing_final_newline_unless_lines_follow() {
        let original = "a = 1\n[t]\nb = true";
        let rendered = "a = 1\n[t]\nb = true\n";
        assert_eq!(
            reapply_edit(original, rendered, "a = 1\n[t]\nb = true\n"),
            original
        );
        assert_eq!(
            reapply_edit(original, rendered, "a = 2\n[t]\nb = true\n"),
            "a = 2\n[t]\nb = true"
        );
        assert_eq!(
            reapply_edit(original, rendered, "a = 1\n[t]\nb = true\n[u]\nc = 1\n"),
            "a = 1\n[t]\nb = true\n[u]\nc = 1\n"
        );
    }

    #[test]
    fn locate_finds_header_and_value_lines() {
        let text = "version = 2\n\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = \"yes\"\n";
        let key = KeyPath::new(["plugins", "io.containerd.nri.v1.nri", "disable"]);
        assert_eq!(locate(text, &key), Some(4));
        let table = KeyPath::new(["plugins", "io.containerd.nri.v1.nri"]);
        assert_eq!(locate(text, &table), Some(3));
        assert_eq!(locate(text, &KeyPath::new(["nope"])), None);
    }
}
