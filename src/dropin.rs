//! Our own containerd drop-in: one file that holds our change, and (only when no existing
//! import covers it) one `imports` entry in the main file, both removable.
//!
//! Pure: the caller reads the files ([`crate::effective::load`]) and plans the writes. What goes
//! into the drop-in depends on the merge rule of the containerd that reads it: on 2.x rules
//! (key by key) just the keys we set; on 1.x rules (an imported plugin section replaces the
//! whole section) the whole effective section, with our keys set in it.

use std::path::{Path, PathBuf};

use toml_edit::{Array, DocumentMut, Item, Table, Value};

use crate::edit::{Change, Edit, EditError, KeyPath};
use crate::effective::{self, Effective, Goal, MergeRule};

/// The file name `--drop-in auto` writes in the imported drop-in dir: late in lexical order, so
/// read after the drop-ins of other tools.
pub const DROP_IN_NAME: &str = "99-tetragon-oci-hook.toml";

/// The first line of every drop-in we write; `--undo` removes only a file that starts with it.
pub const HEADER: &str = "# Written by tetragon-oci-hook-setup (patch-containerd-conf --drop-in).";

/// The header line recording the `imports` entry we added to the main file.
const ADDED_IMPORT: &str = "# Added to the imports of ";

/// The header line saying the main file had no `imports` key before we added ours.
const CREATED_IMPORTS: &str = "# (The imports key itself was added too.)";

/// The drop-in dirs distributions import, by name (containerd 2.2 `conf.d`, EKS `config.d`,
/// k3s/rke2 `config.toml.d` and `config-v3.toml.d`).
pub const KNOWN_DIRS: [&str; 4] = ["conf.d", "config.d", "config.toml.d", "config-v3.toml.d"];

/// An `imports` entry resolved as containerd resolves it, relative to the main file.
fn resolve(main: &Path, entry: &str) -> PathBuf {
    let p = effective::clean(Path::new(entry));
    if p.is_absolute() {
        p
    } else {
        effective::clean(&main.parent().unwrap_or(Path::new("")).join(p))
    }
}

/// The `imports` entries of a document.
fn imports(doc: &DocumentMut) -> Vec<String> {
    doc.get("imports")
        .and_then(Item::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `--drop-in auto`: our file in the known drop-in dir that the main file imports with a glob
/// of `*.toml` files; otherwise an error listing the choices.
pub fn auto_path(main: &Path, doc: &DocumentMut) -> Result<PathBuf, String> {
    for entry in imports(doc) {
        let resolved = resolve(main, &entry);
        let (Some(dir), Some(name)) = (resolved.parent(), resolved.file_name()) else {
            continue;
        };
        let known = dir
            .file_name()
            .is_some_and(|d| KNOWN_DIRS.iter().any(|k| d == *k));
        if known
            && effective::covers(&resolved, &dir.join(DROP_IN_NAME))
            && name.to_string_lossy().contains('*')
        {
            return Ok(dir.join(DROP_IN_NAME));
        }
    }
    let dir = main.parent().unwrap_or(Path::new("."));
    Err(format!(
        "pass a path: `--drop-in {}` (containerd 2.2's default import), `--drop-in {}` (EKS) \
         or any `.toml` path; the main file gets an `imports` entry for it",
        dir.join("conf.d").join(DROP_IN_NAME).display(),
        dir.join("config.d").join(DROP_IN_NAME).display()
    ))
}

/// The entry to add to the main file's `imports` for `drop_in`, or `None` when an import covers
/// it already.
pub fn import_entry(main: &Path, doc: &DocumentMut, drop_in: &Path) -> Option<String> {
    if imports(doc)
        .iter()
        .any(|e| effective::covers(&resolve(main, e), drop_in))
    {
        return None;
    }
    // Relative to the main file when it is beside or below it, so the pair can move together.
    let rel = main
        .parent()
        .and_then(|d| drop_in.strip_prefix(d).ok())
        .filter(|r| !r.as_os_str().is_empty());
    Some(rel.unwrap_or(drop_in).to_string_lossy().into_owned())
}

/// Whether `a` and `b` name the same file: the same cleaned path, or the same (dev, inode)
/// where both exist (a symlinked directory on the way).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if effective::clean(a) == effective::clean(b) {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The plain (non-glob) `imports` entries of `importer` (with text `text`) that resolve, as
/// containerd resolves them, to `target`: once `target` is gone, containerd 1.x fails to start
/// and 2.x silently stops loading the imports after it.
pub fn plain_imports_naming(importer: &Path, text: &str, target: &Path) -> Vec<String> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let Ok(doc) = body.parse::<DocumentMut>() else {
        return Vec::new();
    };
    imports(&doc)
        .into_iter()
        .filter(|e| !e.contains('*') && same_file(&resolve(importer, e), target))
        .collect()
}

/// Our drop-in parsed; an error with `path:line` when it does not parse (a hand edit gone
/// wrong), so that a rerun never throws the file's content away.
pub fn parse_ours(path: &Path, text: &str) -> Result<DocumentMut, String> {
    text.parse::<DocumentMut>().map_err(|e| {
        let line = e.span().map_or(1, |s| {
            text[..s.start.min(text.len())].matches('\n').count() + 1
        });
        format!(
            "{}:{line}: our drop-in does not parse: {}",
            path.display(),
            e.message()
        )
    })
}

/// The plugin sections an action writes in our drop-in, under every name a containerd
/// version reads them by.
fn action_sections(goal: Goal<'_>) -> &'static [&'static str] {
    match goal {
        Goal::NriEnabled => &["nri", crate::containerd::NRI_PLUGIN_ID],
        Goal::BaseRuntimeSpec(_) => &[
            "cri",
            "io.containerd.grpc.v1.cri",
            "io.containerd.cri.v1.runtime",
        ],
    }
}

/// `--undo` of one action: our drop-in without that action's plugin sections, and what is
/// left in it (`plugins.X` sections, other tables); `None` when nothing but `version` is left
/// (then the file and its import go).
pub fn without_action(text: &str, goal: Goal<'_>) -> Result<Option<(String, Vec<String>)>, String> {
    // The header (leading comment lines) is kept as is.
    let split = text
        .split_inclusive('\n')
        .take_while(|l| l.starts_with('#'))
        .map(str::len)
        .sum::<usize>();
    let (header, rest) = text.split_at(split);
    let mut doc = rest
        .parse::<DocumentMut>()
        .map_err(|e| e.message().to_owned())?;
    let mut left = Vec::new();
    if let Some(plugins) = doc.get_mut("plugins").and_then(Item::as_table_like_mut) {
        for s in action_sections(goal) {
            plugins.remove(s);
        }
        left.extend(plugins.iter().map(|(k, _)| format!("plugins.{k}")));
        if plugins.is_empty() {
            doc.remove("plugins");
        }
    }
    left.extend(
        doc.iter()
            .map(|(k, _)| k.to_owned())
            .filter(|k| k != "version" && k != "plugins"),
    );
    if left.is_empty() {
        return Ok(None);
    }
    Ok(Some((format!("{header}{doc}"), left)))
}

/// The keys our drop-in holds in the section `goal` writes that a rerun on containerd 1.x
/// rules drops (the section is written again from the effective config without it): keys
/// added by hand.
pub fn dropped_keys(eff: &Effective, goal: Goal<'_>, existing: &DocumentMut) -> Vec<String> {
    if eff.rule != MergeRule::WholePluginSection {
        return Vec::new();
    }
    let section = match goal {
        Goal::NriEnabled => eff.nri_plugin(),
        Goal::BaseRuntimeSpec(_) => eff.cri_plugin(),
    };
    let mut old = Vec::new();
    leaves_of(existing.as_table(), &mut Vec::new(), &mut old);
    old.into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.len() > 2 && k[0] == "plugins" && k[1] == section)
        .filter(|k| !eff.leaves.contains_key(k))
        .filter(|k| !(matches!(goal, Goal::NriEnabled) && k.len() == 3 && k[2] == "disable"))
        .map(|k| k.join("."))
        .collect()
}

/// Adds `entry` to the main file's `imports` (creating the array), keeping the array's
/// comments and layout.
pub fn add_import(doc: &mut DocumentMut, entry: &str) -> Result<Edit, EditError> {
    let key = KeyPath::new(["imports"]);
    let mut edit = Edit::default();
    match doc.get_mut("imports") {
        None => {
            let mut array = Array::new();
            array.push(entry);
            doc.insert("imports", Item::Value(Value::Array(array)));
            edit.changes.push(Change::Inserted { key });
        }
        Some(item) => {
            let Some(array) = item.as_array_mut() else {
                return Err(EditError::new(key, "is not an array")
                    .with_help("write `imports = [\"conf.d/*.toml\"]`"));
            };
            if array.iter().any(|v| v.as_str() == Some(entry)) {
                return Ok(edit);
            }
            let multiline = array.trailing().as_str().is_some_and(|t| t.contains('\n'))
                || array.iter().any(|v| {
                    v.decor()
                        .prefix()
                        .and_then(|p| p.as_str())
                        .is_some_and(|p| p.contains('\n'))
                });
            let mut v = Value::from(entry);
            if multiline {
                let indent = array
                    .iter()
                    .last()
                    .and_then(|v| v.decor().prefix().and_then(|p| p.as_str()))
                    .and_then(|p| p.rsplit('\n').next())
                    .map_or("\n  ".to_owned(), |indent| format!("\n{indent}"));
                v.decor_mut().set_prefix(indent);
            } else if !array.is_empty() {
                v.decor_mut().set_prefix(" ");
            }
            array.push_formatted(v);
            edit.changes.push(Change::Inserted { key });
        }
    }
    Ok(edit)
}

/// Removes `entry` from the main file's `imports`; the key too when it is left empty and
/// `created` (we added it).
pub fn remove_import(doc: &mut DocumentMut, entry: &str, created: bool) -> Result<Edit, EditError> {
    let key = KeyPath::new(["imports"]);
    let mut edit = Edit::default();
    let only_ours = doc
        .get("imports")
        .and_then(Item::as_array)
        .is_some_and(|a| a.len() == 1 && a.get(0).and_then(Value::as_str) == Some(entry));
    if created && only_ours {
        doc.remove("imports");
        edit.changes.push(Change::Inserted { key });
        return Ok(edit);
    }
    if let Some(array) = doc.get_mut("imports").and_then(Item::as_array_mut) {
        let at = array.iter().position(|v| v.as_str() == Some(entry));
        if let Some(i) = at {
            let removed = array.remove(i);
            // The first element keeps no leading space.
            if i == 0 {
                if let Some(first) = array.get_mut(0) {
                    let prefix = removed
                        .decor()
                        .prefix()
                        .and_then(|p| p.as_str())
                        .unwrap_or("")
                        .to_owned();
                    first.decor_mut().set_prefix(prefix);
                }
            }
            edit.changes.push(Change::Inserted { key });
        }
    }
    Ok(edit)
}

/// The `imports` entry a drop-in of ours says it added, to which file, and whether it added
/// the `imports` key itself.
pub fn added_import(text: &str) -> Option<(PathBuf, String, bool)> {
    if !text.starts_with(HEADER) {
        return None;
    }
    let created = text.lines().any(|l| l == CREATED_IMPORTS);
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(ADDED_IMPORT)?;
        let (main, entry) = rest.split_once(": ")?;
        let main = main.trim_matches('`');
        let entry = parse_str(entry)?;
        Some((PathBuf::from(main), entry, created))
    })
}

/// A TOML basic or literal string's value.
fn parse_str(s: &str) -> Option<String> {
    s.trim().parse::<Value>().ok()?.as_str().map(str::to_owned)
}

/// Every leaf value of a table, by full key.
fn leaves_of(
    table: &dyn toml_edit::TableLike,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Value)>,
) {
    for (k, item) in table.iter() {
        path.push(k.to_owned());
        match item {
            Item::Value(v) if !v.is_inline_table() => {
                let mut v = v.clone();
                v.decor_mut().clear();
                out.push((path.clone(), v));
            }
            _ => {
                if let Some(t) = item.as_table_like() {
                    leaves_of(t, path, out);
                }
            }
        }
        path.pop();
    }
}

/// Sets `value` at `path` in `doc`, creating implicit parent tables.
fn set(doc: &mut DocumentMut, path: &[String], value: Value) -> Result<(), EditError> {
    let (last, parents) = path
        .split_last()
        .ok_or_else(|| EditError::new(KeyPath::default(), "empty key"))?;
    let mut table: &mut Table = doc.as_table_mut();
    for (i, p) in parents.iter().enumerate() {
        let entry = table.entry(p).or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(i + 1 < parents.len());
            Item::Table(t)
        });
        table = entry.as_table_mut().ok_or_else(|| {
            EditError::new(
                KeyPath::new(parents[..=i].iter().cloned()),
                "is not a table",
            )
        })?;
    }
    table.insert(last, Item::Value(value));
    Ok(())
}

/// The drop-in's text for `goal`, given the effective config of every file but the drop-in.
/// `added` is the `imports` entry added to `main` for it (and whether the `imports` key was
/// added with it), recorded in the header for `--undo`.
/// `existing` is our drop-in as it is now: what it holds for the other action is kept.
pub fn render(
    eff: &Effective,
    goal: Goal<'_>,
    main: &Path,
    added: Option<(&str, bool)>,
    named: bool,
    existing: Option<&str>,
) -> Result<String, String> {
    let mut doc = DocumentMut::new();
    if let Some(version) = eff.dropin_version() {
        doc.insert("version", Item::Value(Value::from(version)));
    }
    // Every leaf, in key order: the file reads the same whichever action ran first.
    let mut all: std::collections::BTreeMap<Vec<String>, Value> = Default::default();
    let section = match goal {
        Goal::NriEnabled => eff.nri_plugin(),
        Goal::BaseRuntimeSpec(_) => eff.cri_plugin(),
    };
    if let Some(old) = existing.and_then(|t| t.parse::<DocumentMut>().ok()) {
        let mut kept = Vec::new();
        leaves_of(old.as_table(), &mut Vec::new(), &mut kept);
        for (key, value) in kept {
            let ours = key.len() > 2 && key[0] == "plugins" && key[1] == section;
            // 1.x: this section is written whole again below; 2.x: our keys are set on top.
            if key[0] == "version" || (ours && eff.rule == MergeRule::WholePluginSection) {
                continue;
            }
            all.insert(key, value);
        }
    }
    if eff.rule == MergeRule::WholePluginSection {
        // containerd 1.x: our section replaces the whole effective one, so it carries it all.
        for (key, setting) in &eff.leaves {
            if key.len() > 2 && key[0] == "plugins" && key[1] == section {
                all.insert(key.clone(), setting.value.clone());
            }
        }
    }
    let p = |rest: &[&str]| -> Vec<String> {
        ["plugins", section]
            .iter()
            .chain(rest)
            .map(|s| (*s).to_owned())
            .collect()
    };
    match goal {
        Goal::NriEnabled => {
            all.insert(p(&["disable"]), Value::from(false));
        }
        Goal::BaseRuntimeSpec(spec) => {
            let runc: Vec<String> = eff
                .runtimes()
                .into_iter()
                .filter(|(_, (ty, base))| {
                    ty.and_then(|t| t.as_str()) == Some(crate::containerd::RUNC_RUNTIME_TYPE)
                        && base.and_then(|b| b.as_str()).is_none_or(str::is_empty)
                })
                .map(|(name, _)| name)
                .collect();
            if runc.is_empty() {
                return Err(format!(
                    "no runc runtime (`runtime_type = \"{}\"`) without a base_runtime_spec is \
                     configured in `{}` or its imports",
                    crate::containerd::RUNC_RUNTIME_TYPE,
                    main.display()
                ));
            }
            for name in runc {
                all.insert(
                    p(&["containerd", "runtimes", &name, "base_runtime_spec"]),
                    Value::from(spec),
                );
            }
        }
    }
    for (key, value) in all {
        set(&mut doc, &key, value).map_err(|e| e.to_string())?;
    }
    let mut header = format!(
        "{HEADER}\n# Remove it with the same command and --undo, or delete this file{}.\n",
        if added.is_some() {
            " and its entry in the imports below".to_owned()
        } else if named {
            // An entry added by hand: left behind, containerd 1.x fails to start and 2.x
            // silently stops loading the imports after it.
            format!(" and its entry in `imports` of {}", main.display())
        } else {
            String::new()
        }
    );
    if let Some((entry, created)) = added {
        header.push_str(&format!(
            "{ADDED_IMPORT}`{}`: {}\n",
            main.display(),
            Value::from(entry)
        ));
        if created {
            header.push_str(CREATED_IMPORTS);
            header.push('\n');
        }
    }
    if eff.rule == MergeRule::WholePluginSection {
        header.push_str(
            "# containerd 1.x replaces a whole plugin section with an imported one, so this\n\
             # file carries the whole section as it was in effect when written.\n",
        );
    }
    Ok(format!("{header}\n{doc}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_import_keeps_comments_and_style() {
        let mut doc: DocumentMut =
            "version = 2\nimports = [\n  \"a.toml\", # first\n  \"b/*.toml\",\n]\n"
                .parse()
                .unwrap();
        let edit = add_import(&mut doc, "conf.d/99.toml").unwrap();
        assert!(!edit.is_unchanged());
        insta::assert_snapshot!(doc.to_string(), @r#"
        version = 2
        imports = [
          "a.toml", # first
          "b/*.toml",
          "conf.d/99.toml",
        ]
        "#);
        assert!(
            add_import(&mut doc, "conf.d/99.toml")
                .unwrap()
                .is_unchanged()
        );
        let _ = remove_import(&mut doc, "conf.d/99.toml", false).unwrap();
        assert_eq!(
            doc.to_string(),
            "version = 2\nimports = [\n  \"a.toml\", # first\n  \"b/*.toml\",\n]\n"
        );
        let mut doc: DocumentMut = "version = 2\nimports = [\"x.toml\"]\n".parse().unwrap();
        let _ = add_import(&mut doc, "y.toml").unwrap();
        assert_eq!(
            doc.to_string(),
            "version = 2\nimports = [\"x.toml\", \"y.toml\"]\n"
        );
    }

    #[test]
    fn import_entry_is_none_when_a_glob_covers_the_drop_in() {
        let main = Path::new("/etc/containerd/config.toml");
        let doc: DocumentMut = "imports = [\"conf.d/*.toml\"]\n".parse().unwrap();
        assert_eq!(
            import_entry(main, &doc, Path::new("/etc/containerd/conf.d/99.toml")),
            None
        );
        assert_eq!(
            import_entry(main, &doc, Path::new("/etc/containerd/other/99.toml")).as_deref(),
            Some("other/99.toml")
        );
        assert_eq!(
            auto_path(main, &doc).unwrap(),
            Path::new("/etc/containerd/conf.d").join(DROP_IN_NAME)
        );
        let doc: DocumentMut = "imports = [\"/srv/x/*.toml\"]\n".parse().unwrap();
        assert!(auto_path(main, &doc).is_err());
    }

    #[test]
    fn undo_of_one_action_keeps_what_else_is_in_the_drop_in() {
        let text = format!(
            "{HEADER}\n# x\nversion = 2\n\n[plugins.\"io.containerd.nri.v1.nri\"]\ndisable = false\n\n[grpc]\naddress = \"/x\"\n"
        );
        let (rest, left) = without_action(&text, Goal::NriEnabled).unwrap().unwrap();
        assert_eq!(left, ["grpc"]);
        assert_eq!(
            rest,
            format!("{HEADER}\n# x\nversion = 2\n\n[grpc]\naddress = \"/x\"\n")
        );
        let text = format!(
            "{HEADER}\nversion = 2\n\n[plugins.\"io.containerd.nri.v1.nri\"]\ndisable = false\n"
        );
        assert_eq!(without_action(&text, Goal::NriEnabled).unwrap(), None);
    }
}
