//! `--output-format json` of the patch, install and uninstall commands: one JSON document on
//! stdout, for automation (Ansible, node bootstrap scripts) that should not parse prose.
//!
//! The commands run exactly as in text mode. While a document is being collected, the lines
//! they would print on stderr are taken into it instead (the `eprintln!` of [`super::out`]
//! hands each to [`capture`]: `warning: ...` and `note: ...` by their prefix, anything else
//! as a message), the diff goes into its `diff` field instead of stdout, and the plan and what
//! applying it did give the files and keys changed. [`finish`] prints the document (or the
//! error as one) and keeps the exit code's meaning; an `install --daemonize` prints it once
//! installed ([`emit`]), and what it says afterwards goes to stderr as text.
//!
//! Schema (`schema_version` 1; fields are only ever added within a version):
//! `command`, `ok`, `exit_code`, `dry_run`, `check`, `changes` (something is, or was, to
//! change), `written` (this run changed files), `files` (`path`, `action`
//! created/modified/removed, `before_sha256`, `after_sha256`, `written`), `keys` (`file`,
//! `key`, `path`, `change` added/changed/removed, `old`, `new`), `notes`, `warnings`,
//! `messages`, `diff`, `error` (`null`, or `message`, `causes`, `help`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, MutexGuard};

use rthooks::plan::{Applied, Contents, Current, MAX_CONFIG_BYTES, Plan, Step, Target, sha256_hex};
use serde::Serialize;
use serde_json::{Map, Value};
use toml_edit::{DocumentMut, Item};

/// The version of the document's schema.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// One file the plan changes.
#[derive(Debug)]
struct File {
    /// `None` for a new temporary file until it is written (its name is chosen then).
    path: Option<PathBuf>,
    action: &'static str,
    before: Option<String>,
    after: Option<String>,
    written: bool,
    /// The key changes of a TOML file (their `file` is filled in when the document is made).
    keys: Vec<KeyChange>,
}

/// One value that differs between a runtime config's text before and after.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct KeyChange {
    file: Option<String>,
    key: String,
    path: Vec<String>,
    change: &'static str,
    old: Value,
    new: Value,
}

/// The document, as printed (typed rather than built with `json!`: a third of the code).
#[derive(Serialize)]
struct Out {
    schema_version: u32,
    command: String,
    ok: bool,
    exit_code: u8,
    dry_run: bool,
    check: bool,
    changes: bool,
    written: bool,
    files: Vec<FileOut>,
    keys: Vec<KeyChange>,
    notes: Vec<String>,
    warnings: Vec<String>,
    messages: Vec<String>,
    diff: String,
    error: Option<ErrorOut>,
}

#[derive(Serialize)]
struct FileOut {
    path: Option<String>,
    action: &'static str,
    before_sha256: Option<String>,
    after_sha256: Option<String>,
    written: bool,
}

#[derive(Serialize)]
struct ErrorOut {
    message: String,
    causes: Vec<String>,
    help: Option<String>,
}

/// The document being collected.
#[derive(Debug, Default)]
struct Doc {
    command: String,
    dry_run: bool,
    check: bool,
    files: Vec<File>,
    notes: Vec<String>,
    warnings: Vec<String>,
    messages: Vec<String>,
    diff: String,
}

#[derive(Debug)]
enum State {
    /// Text output (or the document was printed): nothing is collected.
    Off,
    Collecting(Doc),
}

static STATE: Mutex<State> = Mutex::new(State::Off);

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts collecting the document of `command`.
pub(crate) fn start(command: String, dry_run: bool, check: bool) {
    *state() = State::Collecting(Doc {
        command,
        dry_run,
        check,
        ..Doc::default()
    });
}

/// Whether a document is being collected (then nothing else goes to stdout).
pub(crate) fn active() -> bool {
    matches!(*state(), State::Collecting(_))
}

/// Takes a line meant for stderr into the document; `false` when none is being collected
/// (the caller prints it).
pub(crate) fn capture(line: &str) -> bool {
    let mut state = state();
    let State::Collecting(doc) = &mut *state else {
        return false;
    };
    if let Some(w) = line.strip_prefix("warning: ") {
        doc.warnings.push(w.to_owned());
    } else if let Some(n) = line.strip_prefix("note: ") {
        doc.notes.push(n.to_owned());
    } else {
        doc.messages.push(line.to_owned());
    }
    true
}

/// Records what `plan` changes: its files (with their sha256 now and after), the keys of its
/// TOML files, and its diff.
pub(crate) fn plan(plan: &Plan) {
    let mut state = state();
    let State::Collecting(doc) = &mut *state else {
        return;
    };
    doc.diff.push_str(&plan.diff());
    for step in plan.steps.iter().filter(|s| s.changes()) {
        doc.files.push(file_of(step));
    }
}

/// Records what applying a plan did: which files were written or removed, and the name of a
/// new temporary file.
pub(crate) fn applied(applied: &[Applied]) {
    let mut state = state();
    let State::Collecting(doc) = &mut *state else {
        return;
    };
    for a in applied {
        let (Applied::Wrote(p) | Applied::Removed(p)) = a else {
            continue;
        };
        let known = doc
            .files
            .iter_mut()
            .find(|f| !f.written && f.path.as_deref() == Some(p.as_path()));
        if let Some(f) = known {
            f.written = true;
        } else if let Some(f) = doc
            .files
            .iter_mut()
            .find(|f| !f.written && f.path.is_none())
        {
            f.path = Some(p.clone());
            f.written = true;
        }
    }
}

/// Prints the document now, with exit code `code` (0 or 1), if one is being collected; what
/// follows is printed as text.
pub(crate) fn emit(code: u8) {
    let doc = match std::mem::replace(&mut *state(), State::Off) {
        State::Collecting(doc) => doc,
        State::Off => return,
    };
    print_doc(&render(doc, code, None));
}

/// Ends the run: prints the document (the error as one, exit code 2) if one is being collected
/// and turns an error into its exit code; otherwise returns `result` as it is.
pub(crate) fn finish(result: anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    let doc = match std::mem::replace(&mut *state(), State::Off) {
        State::Collecting(doc) => doc,
        State::Off => return result,
    };
    let (code, error) = match &result {
        Ok(c) if *c == ExitCode::SUCCESS => (0, None),
        Ok(_) => (1, None),
        Err(e) => (2, Some(e)),
    };
    print_doc(&render(doc, code, error));
    Ok(ExitCode::from(code))
}

/// Prints the document; if stdout is gone (a closed pipe, a full disk), says so on stderr with
/// what the document would have said in short. The exit code is kept: the document comes after
/// the files are written, so a 2 here would wrongly say that nothing was.
fn print_doc(doc: &Out) {
    use std::io::Write as _;
    let mut text = serde_json::to_string_pretty(doc).unwrap_or_default();
    text.push('\n');
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        let written: Vec<&str> = doc
            .files
            .iter()
            .filter(|f| f.written)
            .filter_map(|f| f.path.as_deref())
            .collect();
        let _ = writeln!(
            std::io::stderr(),
            "error: cannot print the JSON document to stdout ({e}); exit code {}, {} file(s) \
             written{}{}",
            doc.exit_code,
            written.len(),
            if written.is_empty() { "" } else { ": " },
            written.join(", ")
        );
    }
}

fn render(doc: Doc, code: u8, error: Option<&anyhow::Error>) -> Out {
    let written = doc.files.iter().any(|f| f.written);
    let mut keys = Vec::new();
    let mut files = Vec::new();
    for f in doc.files {
        let path = f.path.as_deref().map(|p| p.display().to_string());
        for mut k in f.keys {
            k.file.clone_from(&path);
            keys.push(k);
        }
        files.push(FileOut {
            path,
            action: f.action,
            before_sha256: f.before,
            after_sha256: f.after,
            written: f.written,
        });
    }
    let error = error.map(|e| {
        let mut causes = rthooks::error::messages(e);
        let message = if causes.is_empty() {
            e.to_string()
        } else {
            causes.remove(0)
        };
        ErrorOut {
            message,
            causes,
            help: rthooks::error::help_of(e).map(str::to_owned),
        }
    });
    Out {
        schema_version: SCHEMA_VERSION,
        command: doc.command,
        ok: error.is_none(),
        exit_code: code,
        dry_run: doc.dry_run,
        check: doc.check,
        changes: !files.is_empty(),
        written,
        files,
        keys,
        notes: doc.notes,
        warnings: doc.warnings,
        messages: doc.messages,
        diff: doc.diff,
        error,
    }
}

/// The file entry of a step that changes something.
fn file_of(step: &Step) -> File {
    match step {
        Step::Write(w) => {
            let path = match &w.target {
                Target::Path(p) | Target::Exact(p) | Target::New(p) => Some(p.clone()),
                Target::NewTempFile { .. } => None,
            };
            // What is at the destination now: the text read when it is the file edited
            // (through its link, if it is one), else whatever is there.
            let now = path
                .as_deref()
                .map(|p| rthooks::plan::read_current(p, MAX_CONFIG_BYTES))
                .and_then(Result::ok)
                .unwrap_or(Current::Absent);
            let (action, before) = match &now {
                Current::Absent => ("created", None),
                Current::File { bytes, .. } => ("modified", Some(sha256_hex(bytes))),
                _ => ("modified", Some(sha256_hex(w.before.as_bytes()))),
            };
            File {
                path,
                action,
                before,
                after: Some(sha256_hex(w.after.as_bytes())),
                written: false,
                keys: key_changes(&w.before, &w.after),
            }
        }
        Step::Install(i) => {
            let before_text = i.before.bytes().map(String::from_utf8_lossy);
            File {
                path: Some(i.path.clone()),
                action: if matches!(i.before, Current::Absent) {
                    "created"
                } else {
                    "modified"
                },
                before: match &i.before {
                    // A binary held open: hashed only when it differs from the source.
                    Current::Binary { same: true, .. } => Some(i.contents.sha256()),
                    Current::Binary { held, .. } => held.sha256().map(str::to_owned),
                    other => other.bytes().map(sha256_hex),
                },
                after: Some(i.contents.sha256()),
                written: false,
                keys: match &i.contents {
                    Contents::Bytes(after) if i.text && is_toml(&i.path) => key_changes(
                        before_text.as_deref().unwrap_or_default(),
                        &String::from_utf8_lossy(after),
                    ),
                    _ => Vec::new(),
                },
            }
        }
        Step::Remove(r) => File {
            path: Some(r.path.clone()),
            action: "removed",
            before: r.before.bytes().map(sha256_hex),
            after: None,
            written: false,
            keys: match r.before.bytes() {
                Some(b) if r.text && is_toml(&r.path) => {
                    key_changes(&String::from_utf8_lossy(b), "")
                }
                _ => Vec::new(),
            },
        },
    }
}

/// A runtime config (containerd's `.toml`, cri-o's `.conf`), whose keys are reported.
fn is_toml(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "toml" || e == "conf")
}

/// Every value that differs between two TOML texts (`added`, `changed`, `removed`), tables
/// walked key by key (a new or removed table gives one entry per value in it), other values
/// (arrays included) compared whole, in document order.
/// Text that does not parse gives no keys (the files still say what changed).
pub(crate) fn key_changes(before: &str, after: &str) -> Vec<KeyChange> {
    let parse = |t: &str| {
        t.strip_prefix('\u{feff}')
            .unwrap_or(t)
            .parse::<DocumentMut>()
            .ok()
    };
    let (Some(a), Some(b)) = (parse(before), parse(after)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(
        &mut Vec::new(),
        Some(a.as_item()),
        Some(b.as_item()),
        &mut out,
    );
    out
}

fn walk(path: &mut Vec<String>, a: Option<&Item>, b: Option<&Item>, out: &mut Vec<KeyChange>) {
    fn table(i: Option<&Item>) -> Option<&dyn toml_edit::TableLike> {
        i.and_then(Item::as_table_like)
    }
    // A table on one side and a table or nothing on the other: compared key by key, so a new
    // table gives one `added` entry per value in it.
    let tables = (a.is_none() || table(a).is_some()) && (b.is_none() || table(b).is_some());
    match (a, b) {
        _ if tables && (a.is_some() || b.is_some()) => {
            let (tx, ty) = (table(a), table(b));
            // `a`'s keys, then those only `b` has; looked up in `a`'s table (an index map), not
            // in this list: a table of 100k runtimes stays linear.
            let mut names: Vec<&str> = tx
                .map(|t| t.iter().map(|(k, _)| k).collect())
                .unwrap_or_default();
            for (k, _) in ty.into_iter().flat_map(|t| t.iter()) {
                if tx.is_none_or(|t| !t.contains_key(k)) {
                    names.push(k);
                }
            }
            for name in names {
                path.push(name.to_owned());
                walk(
                    path,
                    tx.and_then(|t| t.get(name)),
                    ty.and_then(|t| t.get(name)),
                    out,
                );
                path.pop();
            }
        }
        _ => {
            let (old, new) = (a.map(item_json), b.map(item_json));
            let change = match (&old, &new) {
                (None, None) => return,
                (None, Some(_)) => "added",
                (Some(_), None) => "removed",
                (Some(o), Some(n)) if o == n => return,
                (Some(_), Some(_)) => "changed",
            };
            out.push(KeyChange {
                file: None,
                key: rthooks::edit::KeyPath::new(path.iter().cloned()).to_string(),
                path: path.clone(),
                change,
                old: old.unwrap_or(Value::Null),
                new: new.unwrap_or(Value::Null),
            });
        }
    }
}

/// A TOML item as JSON: tables as objects, datetimes as their text.
fn item_json(item: &Item) -> Value {
    match item {
        Item::None => Value::Null,
        Item::Value(v) => value_json(v),
        Item::Table(t) => table_json(t.iter().map(|(k, v)| (k, item_json(v)))),
        Item::ArrayOfTables(a) => Value::Array(
            a.iter()
                .map(|t| table_json(t.iter().map(|(k, v)| (k, item_json(v)))))
                .collect(),
        ),
    }
}

fn table_json<'a>(entries: impl Iterator<Item = (&'a str, Value)>) -> Value {
    let mut map = Map::new();
    for (k, v) in entries {
        map.insert(k.to_owned(), v);
    }
    Value::Object(map)
}

fn value_json(v: &toml_edit::Value) -> Value {
    use toml_edit::Value as V;
    match v {
        V::String(s) => Value::from(s.value().as_str()),
        V::Integer(i) => Value::from(*i.value()),
        V::Float(f) => Value::from(*f.value()),
        V::Boolean(b) => Value::Bool(*b.value()),
        V::Datetime(d) => Value::from(d.value().to_string()),
        V::Array(a) => Value::Array(a.iter().map(value_json).collect()),
        V::InlineTable(t) => table_json(t.iter().map(|(k, v)| (k, value_json(v)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_changes_walk_tables_and_compare_other_values_whole() {
        let before = "version = 2\n[plugins.a]\nx = 1\nlist = [\"a\"]\ngone = true\n";
        let after = "version = 2\n[plugins.a]\nx = 2\nlist = [\"a\", \"b\"]\n\
                     [plugins.\"io.containerd.nri.v1.nri\"]\ndisable = false\n";
        let changes = serde_json::to_value(key_changes(before, after)).unwrap();
        assert_eq!(
            changes,
            json!([
                {"file": null, "key": "plugins.a.x", "path": ["plugins", "a", "x"], "change": "changed",
                 "old": 1, "new": 2},
                {"file": null, "key": "plugins.a.list", "path": ["plugins", "a", "list"], "change": "changed",
                 "old": ["a"], "new": ["a", "b"]},
                {"file": null, "key": "plugins.a.gone", "path": ["plugins", "a", "gone"], "change": "removed",
                 "old": true, "new": null},
                {"file": null, "key": "plugins.\"io.containerd.nri.v1.nri\".disable",
                 "path": ["plugins", "io.containerd.nri.v1.nri", "disable"], "change": "added",
                 "old": null, "new": false},
            ])
        );
        assert!(key_changes("a = 1", "a = 1 # same value").is_empty());
        // Inline tables are walked like tables (one entry per value); arrays of tables and a
        // value that changes type are compared whole, old and new as JSON.
        let before = "t = { x = 1, y = [1, 2] }\n[[h]]\nn = \"a\"\n[s]\nv = 1\n";
        let after = "s = \"now a string\"\nt = { x = 1, y = [1, 3], z = { k = true } }\n\
                     [[h]]\nn = \"a\"\n[[h]]\nn = \"b\"\n";
        assert_eq!(
            serde_json::to_value(key_changes(before, after)).unwrap(),
            json!([
                {"file": null, "key": "t.y", "path": ["t", "y"], "change": "changed",
                 "old": [1, 2], "new": [1, 3]},
                {"file": null, "key": "t.z.k", "path": ["t", "z", "k"], "change": "added",
                 "old": null, "new": true},
                {"file": null, "key": "h", "path": ["h"], "change": "changed",
                 "old": [{"n": "a"}], "new": [{"n": "a"}, {"n": "b"}]},
                {"file": null, "key": "s", "path": ["s"], "change": "changed",
                 "old": {"v": 1}, "new": "now a string"},
            ])
        );
        assert!(key_changes("a = [", "a = 1").is_empty());
    }
}
