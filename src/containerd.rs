//! Pure edits of containerd's `config.toml`: enable NRI, point runc at a base runtime spec.
//!
//! Each edit takes a parsed [`DocumentMut`], changes exactly the keys it is about, and reports
//! them in an [`Edit`]. It does no I/O and never re-serialises the document through serde, so
//! every comment, blank line and key order survives. What it does not do: read imported files
//! (`imports = [...]`), restart containerd, or validate keys it does not edit.
//!
//! Plugin names depend on the config `version` (see containerd's `docs/PLUGINS.md` and
//! `RELEASES.md`): version 1 files use short names (`plugins.nri`, `plugins.cri`), version 2
//! files the full IDs of containerd 1.x (`plugins."io.containerd.nri.v1.nri"`,
//! `plugins."io.containerd.grpc.v1.cri"`), and versions 3 and 4 (containerd 2.x) split the CRI
//! plugin, so runtimes live under `plugins."io.containerd.cri.v1.runtime"`.

use std::sync::Arc;

use toml_edit::{DocumentMut, Item, Table, Value};

use crate::edit::{Change, Edit, EditError, KeyPath, describe};
use crate::style::{self, Quote};

/// The `version` of a containerd config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConfigVersion {
    /// No `version` key, or `version = 1` (containerd 1.x's first format).
    V1,
    /// `version = 2` (containerd 1.x).
    V2,
    /// `version = 3` (containerd 2.0 and later).
    V3,
    /// `version = 4` (containerd 2.3 and later).
    V4,
}

impl ConfigVersion {
    /// The number written in the file.
    pub fn number(self) -> i64 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
            Self::V3 => 3,
            Self::V4 => 4,
        }
    }

    /// The plugin key of NRI under `plugins` in files of this version.
    pub fn nri_plugin(self) -> &'static str {
        match self {
            // containerd 1.7 reads only the short name in a version-1 file (checked with
            // `containerd config dump`).
            Self::V1 => "nri",
            Self::V2 | Self::V3 | Self::V4 => NRI_PLUGIN_ID,
        }
    }

    /// Whether containerd runs NRI when its table is absent: on by default in containerd 2.x,
    /// which is what reads version 3 and 4 files.
    pub fn nri_enabled_by_default(self) -> bool {
        matches!(self, Self::V3 | Self::V4)
    }
}

/// NRI's plugin ID in version 2 and later files.
pub const NRI_PLUGIN_ID: &str = "io.containerd.nri.v1.nri";

/// The keys and values of a new NRI table: upstream's seven, in upstream's order.
const NRI_DEFAULTS: [(&str, NriDefault); 7] = [
    ("disable", NriDefault::Bool(false)),
    ("disable_connections", NriDefault::Bool(false)),
    ("plugin_config_path", NriDefault::Str("/etc/nri/conf.d")),
    ("plugin_path", NriDefault::Str("/opt/nri/plugins")),
    ("plugin_registration_timeout", NriDefault::Str("5s")),
    ("plugin_request_timeout", NriDefault::Str("2s")),
    ("socket_path", NriDefault::Str(crate::defaults::NRI_SOCKET)),
];

#[derive(Clone, Copy)]
enum NriDefault {
    Bool(bool),
    Str(&'static str),
}

/// The runtime type whose runtimes get a base runtime spec.
pub const RUNC_RUNTIME_TYPE: &str = "io.containerd.runc.v2";

/// Where the CRI plugin's runtimes live, per naming scheme: version 1, version 2, versions 3/4.
const CRI_PLUGINS: [&str; 3] = [
    "cri",
    "io.containerd.grpc.v1.cri",
    "io.containerd.cri.v1.runtime",
];

/// Reads the config `version`.
///
/// ```
/// use rthooks::containerd::{config_version, ConfigVersion};
/// let doc: toml_edit::DocumentMut = "version = 3\n".parse().unwrap();
/// assert_eq!(config_version(&doc).unwrap(), ConfigVersion::V3);
/// let doc: toml_edit::DocumentMut = "root = '/var/lib/containerd'\n".parse().unwrap();
/// assert_eq!(config_version(&doc).unwrap(), ConfigVersion::V1);
/// ```
pub fn config_version(doc: &DocumentMut) -> Result<ConfigVersion, EditError> {
    let key = KeyPath::new(["version"]);
    match doc.get("version") {
        None => Ok(ConfigVersion::V1),
        Some(item) => match item.as_integer() {
            Some(1) => Ok(ConfigVersion::V1),
            Some(2) => Ok(ConfigVersion::V2),
            Some(3) => Ok(ConfigVersion::V3),
            Some(4) => Ok(ConfigVersion::V4),
            Some(n) => Err(EditError::new(
                key,
                format!("is {n}, a config version this tool does not know (it knows 1 to 4)"),
            )
            .with_help(
                "check the file with `containerd config dump`; if your containerd writes a newer \
                 version, this tool needs an update",
            )),
            None => Err(
                EditError::new(key, format!("is {}, expected an integer", describe(item)))
                    .with_help("containerd config versions are written `version = 2` (or 1, 3, 4)"),
            ),
        },
    }
}

/// Enables NRI in a containerd config.
///
/// - An NRI table with `disable = true` gets `disable = false`, in whatever form the table is
///   written (a `[section]`, dotted keys or an inline table), keeping the line's comment.
/// - No NRI table: on versions 3 and 4 NRI is on by default and nothing changes; otherwise a
///   table with upstream's seven keys is added after the last `plugins` table, indented and
///   quoted like its neighbours.
///
/// ```
/// use rthooks::containerd::enable_nri;
/// let mut doc: toml_edit::DocumentMut =
///     "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true # off\n"
///         .parse()
///         .unwrap();
/// let edit = enable_nri(&mut doc).unwrap();
/// assert_eq!(edit.changes.len(), 1);
/// assert!(doc.to_string().contains("disable = false # off"));
/// assert!(enable_nri(&mut doc).unwrap().is_unchanged());
/// ```
pub fn enable_nri(doc: &mut DocumentMut) -> Result<Edit, EditError> {
    refuse_other_config(doc)?;
    let version = config_version(doc)?;
    let nri_name = version.nri_plugin();
    let plugins_key = KeyPath::new(["plugins"]);
    let nri_key = plugins_key.join(nri_name);
    let mut edit = Edit::default();

    let on_by_default = |edit: &mut Edit, what: &str| {
        edit.notes.push(format!(
            "{what}: a version {} config is read by containerd 2.x, where NRI is enabled by \
             default",
            version.number()
        ));
    };

    if let Some(item) = doc.get("plugins") {
        if !item.is_table_like() {
            return Err(not_a_table(&plugins_key, item));
        }
    }
    warn_about_other_nri_name(doc, version, &mut edit);

    let has_nri = doc
        .get("plugins")
        .and_then(Item::as_table_like)
        .and_then(|p| p.get(nri_name))
        .is_some();

    if !has_nri {
        if version.nri_enabled_by_default() {
            on_by_default(&mut edit, &format!("no `{nri_key}` table"));
            return Ok(edit);
        }
        insert_nri_table(doc, nri_name)?;
        edit.changes.push(Change::Inserted { key: nri_key });
        return Ok(edit);
    }

    let nri = doc
        .get_mut("plugins")
        .and_then(Item::as_table_like_mut)
        .and_then(|p| p.get_mut(nri_name))
        .ok_or_else(|| EditError::new(nri_key.clone(), "vanished while editing"))?;
    if !nri.is_table_like() {
        return Err(not_a_table(&nri_key, nri));
    }
    let disable_key = nri_key.join("disable");
    let current = nri.as_table_like().and_then(|t| t.get("disable"));
    match current {
        None if version.nri_enabled_by_default() => {
            on_by_default(&mut edit, &format!("`{nri_key}` has no `disable` key"));
        }
        None => {
            // containerd 1.7 defaults `disable` to true, so a table without it is still off.
            style::insert_aligned(nri, "disable", Value::from(false));
            edit.changes.push(Change::Inserted { key: disable_key });
        }
        Some(item) => match item.as_bool() {
            Some(false) => edit
                .notes
                .push(format!("NRI is already enabled (`{disable_key} = false`)")),
            Some(true) => {
                let slot = nri
                    .as_table_like_mut()
                    .and_then(|t| t.get_mut("disable"))
                    .ok_or_else(|| EditError::new(disable_key.clone(), "vanished while editing"))?;
                style::replace_value(slot, Value::from(false));
                edit.changes.push(Change::Updated {
                    key: disable_key,
                    old: "true".into(),
                    new: "false".into(),
                });
            }
            None => {
                let shown = item
                    .as_value()
                    .map(|v| format!(" ({})", v.to_string().trim()))
                    .unwrap_or_default();
                return Err(EditError::new(
                    disable_key,
                    format!("is {}{shown}, expected a boolean", describe(item)),
                )
                .with_help("write `disable = false` to enable NRI (or `true` to keep it off)"));
            }
        },
    }
    Ok(edit)
}

/// A version-1 file configures NRI as `plugins.nri`, later ones as the full ID; a table under
/// the other name is ignored by containerd, which users should hear about.
fn warn_about_other_nri_name(doc: &DocumentMut, version: ConfigVersion, edit: &mut Edit) {
    let other = match version {
        ConfigVersion::V1 => NRI_PLUGIN_ID,
        _ => "nri",
    };
    let exists = doc
        .get("plugins")
        .and_then(Item::as_table_like)
        .is_some_and(|p| p.contains_key(other));
    if exists {
        edit.warnings.push(format!(
            "`{}` is ignored by containerd in a version {} config; NRI is configured under `{}`",
            KeyPath::new(["plugins", other]),
            version.number(),
            KeyPath::new(["plugins", version.nri_plugin()]),
        ));
    }
}

fn not_a_table(key: &KeyPath, item: &Item) -> EditError {
    EditError::new(
        key.clone(),
        format!("is {}, expected a table", describe(item)),
    )
    .with_help(format!(
        "`{key}` must be a table such as `[{key}]`; fix or remove that line, then re-run"
    ))
}

/// How a new plugin table should look, read from the `plugins` tables already there.
struct TableStyle {
    header_indent: String,
    key_indent: String,
    blank_line_before: bool,
    quotes: style::Quotes,
}

fn plugin_table_style(doc: &DocumentMut, plugins: Option<&Table>) -> TableStyle {
    let quotes = match plugins {
        Some(p) => style::quotes_in(p),
        None => style::quotes_in(doc.as_table()),
    };
    // The tables written with a header under `plugins`, in file order. Direct children are the
    // new table's siblings; when every direct child is implicit (only deeper headers such as
    // `[plugins."io.containerd.grpc.v1.cri".containerd]` are written), the deeper ones still
    // show how the file indents keys.
    let mut explicit: Vec<(bool, &Table)> = Vec::new();
    if let Some(p) = plugins {
        collect_explicit(p, true, &mut explicit);
    }
    explicit.sort_by_key(|(_, t)| t.position());
    let siblings: Vec<&Table> = explicit
        .iter()
        .filter(|(direct, _)| *direct)
        .map(|(_, t)| *t)
        .collect();
    let Some(last) = siblings.last().or_else(|| explicit.last().map(|(_, t)| t)) else {
        // No plugin sections to copy from: follow the first top-level table with keys.
        let key_indent = doc
            .iter()
            .filter_map(|(_, item)| item.as_table())
            .find_map(|t| style::key_indent(t))
            .unwrap_or_default();
        return TableStyle {
            header_indent: String::new(),
            key_indent,
            blank_line_before: true,
            quotes,
        };
    };
    let prefix = last.decor().prefix().and_then(|p| p.as_str());
    let header_indent = if siblings.is_empty() {
        String::new()
    } else {
        style::indent_of(prefix).to_owned()
    };
    let key_indent = siblings
        .iter()
        .rev()
        .find_map(|t| style::key_indent(*t))
        .or_else(|| {
            explicit
                .iter()
                .rev()
                .find_map(|(_, t)| style::key_indent(*t))
        })
        .unwrap_or_else(|| format!("{header_indent}  "));
    // A blank line before the header when the table we follow has one before its own.
    let blank_line_before = prefix.is_some_and(|p| {
        let p = p.replace('\r', "");
        p.starts_with('\n') || p.contains("\n\n")
    });
    TableStyle {
        header_indent,
        key_indent,
        blank_line_before,
        quotes,
    }
}

/// Collects the tables under `table` that have a header of their own (not implicit, not dotted),
/// marking the direct children.
fn collect_explicit<'a>(table: &'a Table, top: bool, out: &mut Vec<(bool, &'a Table)>) {
    for (_, item) in table.iter() {
        if let Some(t) = item.as_table() {
            if !t.is_implicit() && !t.is_dotted() {
                out.push((top, t));
            }
            collect_explicit(t, false, out);
        }
    }
}

/// Adds the NRI table with upstream's defaults after the last `plugins` table.
fn insert_nri_table(doc: &mut DocumentMut, nri_name: &str) -> Result<(), EditError> {
    let plugins_key = KeyPath::new(["plugins"]);
    let style = plugin_table_style(doc, doc.get("plugins").and_then(Item::as_table));
    let strings = style.quotes.strings;

    // `plugins = { ... }` written inline: the NRI entry has to go inside it, inline too.
    if let Some(Item::Value(Value::InlineTable(plugins))) = doc.get_mut("plugins") {
        let mut nri = toml_edit::InlineTable::new();
        for (k, v) in NRI_DEFAULTS {
            nri.insert(k, default_value(v, strings));
        }
        nri.fmt();
        plugins.insert(nri_name, Value::InlineTable(nri));
        return Ok(());
    }

    // Build the table from text so that its key and strings carry the file's quote style.
    let key_text = if nri_name.contains('.') {
        style.quotes.keys.quote(nri_name)
    } else {
        nri_name.to_owned()
    };
    let mut snippet = format!("[plugins.{key_text}]\n");
    for (k, v) in NRI_DEFAULTS {
        let value = match v {
            NriDefault::Bool(b) => b.to_string(),
            NriDefault::Str(s) => strings.quote(s),
        };
        snippet.push_str(&format!("{}{k} = {value}\n", style.key_indent));
    }
    let mut parsed: DocumentMut = snippet
        .parse()
        .map_err(|e| EditError::new(plugins_key.clone(), format!("internal error: {e}")))?;
    let (key, mut table) = parsed
        .get_mut("plugins")
        .and_then(Item::as_table_mut)
        .and_then(|p| p.remove_entry(nri_name))
        .and_then(|(k, item)| item.into_table().ok().map(|t| (k, t)))
        .ok_or_else(|| EditError::new(plugins_key.clone(), "internal error: bad NRI snippet"))?;
    // No blank line at the top of an otherwise empty file.
    let empty =
        doc.as_table().is_empty() && doc.trailing().as_str().is_none_or(|t| t.trim().is_empty());
    let blank = if style.blank_line_before && !empty {
        "\n"
    } else {
        ""
    };
    table
        .decor_mut()
        .set_prefix(format!("{blank}{}", style.header_indent));

    // Place it after every table already under `plugins` (or last in the file when there is
    // none), never between a table and its children elsewhere.
    let plugins_max = doc
        .get("plugins")
        .and_then(Item::as_table)
        .and_then(style::max_position);
    let position = match plugins_max {
        Some(p) => p,
        None => style::max_position(doc.as_table()).map_or(0, |p| p + 1),
    };
    table.set_position(Some(position));

    let root = doc.as_table_mut();
    if !root.contains_key("plugins") {
        let mut plugins = Table::new();
        // Implicit: no empty `[plugins]` header, just `[plugins.nri]` (as cargo does).
        plugins.set_implicit(true);
        root.insert("plugins", Item::Table(plugins));
    }
    let plugins = root
        .get_mut("plugins")
        .and_then(Item::as_table_mut)
        .ok_or_else(|| EditError::new(plugins_key, "is not a table"))?;
    plugins.insert_formatted(&key, Item::Table(table));
    Ok(())
}

fn default_value(v: NriDefault, quote: Quote) -> Value {
    match v {
        NriDefault::Bool(b) => Value::from(b),
        NriDefault::Str(s) => {
            style::value_from_raw(&quote.quote(s)).unwrap_or_else(|| Value::from(s))
        }
    }
}

/// Points every runc runtime of the CRI plugin at `spec` as its `base_runtime_spec`.
///
/// Runtimes are the tables under `containerd.runtimes` (and the deprecated
/// `containerd.default_runtime`) of whichever CRI plugin tables the file has: `cri` (version 1),
/// `"io.containerd.grpc.v1.cri"` (version 2) or `"io.containerd.cri.v1.runtime"` (versions 3
/// and 4). A runtime qualifies when its `runtime_type` is `io.containerd.runc.v2`. An empty
/// `base_runtime_spec` (what `containerd config default` writes) counts as unset; a different
/// non-empty one is left alone with a warning.
pub fn add_oci_hook(doc: &mut DocumentMut, spec: &str) -> Result<Edit, EditError> {
    refuse_other_config(doc)?;
    config_version(doc)?;
    let mut edit = Edit::default();
    let plugins_key = KeyPath::new(["plugins"]);
    let Some(plugins) = doc.get_mut("plugins") else {
        edit.warnings.push(no_runc_runtime());
        return Ok(edit);
    };
    if !plugins.is_table_like() {
        return Err(not_a_table(&plugins_key, plugins));
    }
    let quote = plugins
        .as_table_like()
        .map(|p| style::quotes_in(p).strings)
        .unwrap_or_default();
    // What every runtime's change reports, shared by all of them.
    let shown = Shown {
        old: Arc::from("\"\""),
        new: Arc::from(Quote::Double.quote(spec)),
    };
    let mut found = 0usize;
    for cri_name in CRI_PLUGINS {
        let cri_key = plugins_key.join(cri_name);
        let Some(cri) = plugins
            .as_table_like_mut()
            .and_then(|p| p.get_mut(cri_name))
        else {
            continue;
        };
        let Some(cri) = cri.as_table_like_mut() else {
            return Err(not_a_table(&cri_key, cri));
        };
        let containerd_key = cri_key.join("containerd");
        let Some(containerd) = cri.get_mut("containerd") else {
            continue;
        };
        let Some(containerd) = containerd.as_table_like_mut() else {
            return Err(not_a_table(&containerd_key, containerd));
        };
        if let Some(default) = containerd.get_mut("default_runtime") {
            let key = containerd_key.join("default_runtime");
            found += patch_runtime(default, &key, spec, quote, &shown, &mut edit)?;
        }
        let runtimes_key = containerd_key.join("runtimes");
        let Some(runtimes) = containerd.get_mut("runtimes") else {
            continue;
        };
        let Some(runtimes) = runtimes.as_table_like_mut() else {
            return Err(not_a_table(&runtimes_key, runtimes));
        };
        for (name, runtime) in runtimes.iter_mut() {
            let key = runtimes_key.join(name.get());
            found += patch_runtime(runtime, &key, spec, quote, &shown, &mut edit)?;
        }
    }
    if found == 0 {
        edit.warnings.push(no_runc_runtime());
    }
    Ok(edit)
}

/// Refuses a file that is plainly another program's config: cri-o's (`[crio...]` tables) or
/// podman's `containers.conf` (`[engine]`, `[containers]`), with neither a `version` nor
/// `plugins`. containerd has none of these top-level tables, so such a file would otherwise be
/// "patched" as a version 1 config, changing nothing a runtime reads.
pub fn refuse_other_config(doc: &DocumentMut) -> Result<(), EditError> {
    if doc.contains_key("version") || doc.contains_key("plugins") {
        return Ok(());
    }
    if doc.contains_key("crio") {
        return Err(EditError::new(
            KeyPath::new(["crio"]),
            "is cri-o's table: this is a cri-o config, not containerd's",
        )
        .with_help(
            "this command edits containerd's config (usually `/etc/containerd/config.toml`); for \
             cri-o run `tetragon-oci-hook-setup patch-crio-conf enable-annotations --config-file \
             PATH --annotations NAMES`, and install the hook with `install --interface \
             oci-hooks` (cri-o runs the hooks in its hooks dir)",
        ));
    }
    if let Some(key) = ["engine", "containers"]
        .into_iter()
        .find(|k| doc.contains_key(k))
    {
        return Err(EditError::new(
            KeyPath::new([key]),
            "is a table of podman's `containers.conf`, not of containerd's config",
        )
        .with_help(
            "pass containerd's config (usually `/etc/containerd/config.toml`); podman needs no \
             patch: it runs the hooks in its hooks dir (`install --interface oci-hooks \
             --containers-conf PATH` checks that it reads ours)",
        ));
    }
    Ok(())
}

fn no_runc_runtime() -> String {
    format!(
        "no runtime with `runtime_type = \"{RUNC_RUNTIME_TYPE}\"` under the CRI plugin's \
         `containerd.runtimes`; nothing to point at a base runtime spec"
    )
}

/// The old and new `base_runtime_spec` values an update reports, as shown.
struct Shown {
    old: Arc<str>,
    new: Arc<str>,
}

/// Sets `base_runtime_spec` on one runtime table if it is a runc one. Returns 1 when it is.
fn patch_runtime(
    runtime: &mut Item,
    key: &KeyPath,
    spec: &str,
    quote: Quote,
    shown: &Shown,
    edit: &mut Edit,
) -> Result<usize, EditError> {
    let Some(table) = runtime.as_table_like() else {
        return Err(not_a_table(key, runtime));
    };
    let type_key = key.join("runtime_type");
    match table.get("runtime_type") {
        None => return Ok(0),
        Some(item) => match item.as_str() {
            Some(RUNC_RUNTIME_TYPE) => {}
            Some(_) => return Ok(0),
            None => {
                return Err(EditError::new(
                    type_key,
                    format!("is {}, expected a string", describe(item)),
                ));
            }
        },
    }
    let spec_key = key.join("base_runtime_spec");
    let new_value =
        || style::value_from_raw(&quote.quote(spec)).unwrap_or_else(|| Value::from(spec));
    match table.get("base_runtime_spec") {
        None => {
            style::insert_aligned(runtime, "base_runtime_spec", new_value());
            edit.changes.push(Change::Inserted { key: spec_key });
        }
        Some(item) => match item.as_str() {
            Some("") => {
                // Keep the quote style the file used for the empty value.
                let raw = item
                    .as_value()
                    .and_then(|v| match v {
                        Value::String(s) => s.as_repr().and_then(|r| r.as_raw().as_str()),
                        _ => None,
                    })
                    .and_then(|r| r.chars().next());
                let value = match raw {
                    Some('\'') => Quote::Single.quote(spec),
                    _ => Quote::Double.quote(spec),
                };
                let value = style::value_from_raw(&value).unwrap_or_else(new_value);
                let slot = runtime
                    .as_table_like_mut()
                    .and_then(|t| t.get_mut("base_runtime_spec"))
                    .ok_or_else(|| EditError::new(spec_key.clone(), "vanished while editing"))?;
                style::replace_value(slot, value);
                edit.changes.push(Change::Updated {
                    key: spec_key,
                    old: Arc::clone(&shown.old),
                    new: Arc::clone(&shown.new),
                });
            }
            Some(current) if current == spec => {
                edit.notes.push(format!("`{spec_key}` is already `{spec}`"));
            }
            Some(current) => edit.warnings.push(format!(
                "`{spec_key}` is already set to `{current}`; left alone (make that spec hold \
                 the hook, or clear the key and re-run)"
            )),
            None => {
                return Err(EditError::new(
                    spec_key,
                    format!("is {}, expected a string (a path)", describe(item)),
                ));
            }
        },
    }
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, f: impl FnOnce(&mut DocumentMut) -> Result<Edit, EditError>) -> String {
        let mut doc: DocumentMut = text.parse().unwrap();
        let _ = f(&mut doc).unwrap();
        doc.to_string()
    }

    #[test]
    fn enable_nri_flips_disable_keeping_comment_and_spacing() {
        let out = run(
            "version = 2\n[plugins]\n  [plugins.\"io.containerd.nri.v1.nri\"]\n    disable   =   true   # why\n",
            enable_nri,
        );
        insta::assert_snapshot!(out, @r#"
        version = 2
        [plugins]
          [plugins."io.containerd.nri.v1.nri"]
            disable   =   false   # why
        "#);
    }

    #[test]
    fn enable_nri_edits_dotted_keys_in_their_own_style() {
        let out = run(
            "version = 2\nplugins.\"io.containerd.nri.v1.nri\".disable = true\n",
            enable_nri,
        );
        insta::assert_snapshot!(out, @r#"
        version = 2
        plugins."io.containerd.nri.v1.nri".disable = false
        "#);
    }

    #[test]
    fn enable_nri_edits_inline_tables_in_their_own_style() {
        let out = run(
            "version = 2\n[plugins]\n\"io.containerd.nri.v1.nri\" = { disable = true, socket_path = \"/x\" }\n",
            enable_nri,
        );
        insta::assert_snapshot!(out, @r#"
        version = 2
        [plugins]
        "io.containerd.nri.v1.nri" = { disable = false, socket_path = "/x" }
        "#);
    }

    #[test]
    fn enable_nri_adds_disable_to_a_table_without_it() {
        let out = run(
            "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n  socket_path = \"/x\"\n",
            enable_nri,
        );
        insta::assert_snapshot!(out, @r#"
        version = 2
        [plugins."io.containerd.nri.v1.nri"]
          socket_path = "/x"
          disable = false
        "#);
    }

    #[test]
    fn enable_nri_uses_short_name_in_version_1() {
        let out = run("[plugins.cri]\nsandbox_image = 'pause'\n", enable_nri);
        insta::assert_snapshot!(out, @r"
        [plugins.cri]
        sandbox_image = 'pause'
        [plugins.nri]
        disable = false
        disable_connections = false
        plugin_config_path = '/etc/nri/conf.d'
        plugin_path = '/opt/nri/plugins'
        plugin_registration_timeout = '5s'
        plugin_request_timeout = '2s'
        socket_path = '/var/run/nri/nri.sock'
        ");
    }

    #[test]
    fn enable_nri_creates_plugins_without_an_empty_header() {
        let out = run(
            "version = 2\n[grpc]\n  address = \"/run/c.sock\"\n",
            enable_nri,
        );
        insta::assert_snapshot!(out, @r#"
        version = 2
        [grpc]
          address = "/run/c.sock"

        [plugins."io.containerd.nri.v1.nri"]
          disable = false
          disable_connections = false
          plugin_config_path = "/etc/nri/conf.d"
          plugin_path = "/opt/nri/plugins"
          plugin_registration_timeout = "5s"
          plugin_request_timeout = "2s"
          socket_path = "/var/run/nri/nri.sock"
        "#);
    }

    #[test]
    fn enable_nri_is_a_no_op_on_version_3_without_table() {
        let mut doc: DocumentMut = "version = 3\n".parse().unwrap();
        let edit = enable_nri(&mut doc).unwrap();
        assert!(edit.is_unchanged());
        assert!(
            edit.notes[0].contains("enabled by default"),
            "{:?}",
            edit.notes
        );
    }

    #[test]
    fn enable_nri_rejects_non_boolean_disable() {
        let mut doc: DocumentMut =
            "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\ndisable = \"yes\"\n"
                .parse()
                .unwrap();
        let err = enable_nri(&mut doc).unwrap_err();
        insta::assert_snapshot!(err, @r#"
        `plugins."io.containerd.nri.v1.nri".disable` is a string ("yes"), expected a boolean
        help: write `disable = false` to enable NRI (or `true` to keep it off)
        "#);
    }

    #[test]
    fn enable_nri_rejects_unknown_versions_and_non_tables() {
        for (text, want) in [
            ("version = 5\n", "`version` is 5"),
            ("version = \"2\"\n", "`version` is a string"),
            (
                "version = 2\nplugins = 3\n",
                "`plugins` is an integer, expected a table",
            ),
            (
                "version = 2\n[plugins]\n\"io.containerd.nri.v1.nri\" = []\n",
                "is an array, expected a table",
            ),
        ] {
            let mut doc: DocumentMut = text.parse().unwrap();
            let err = enable_nri(&mut doc).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn add_oci_hook_fills_empty_and_missing_specs_and_warns_on_others() {
        let text = r#"version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
  base_runtime_spec = ""
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
  runtime_type = "io.containerd.kata.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.custom]
  runtime_type = "io.containerd.runc.v2"
  base_runtime_spec = "/etc/other.json"
"#;
        let mut doc: DocumentMut = text.parse().unwrap();
        let edit = add_oci_hook(&mut doc, "/etc/containerd/base-spec.json").unwrap();
        assert_eq!(edit.changes.len(), 2, "{edit:?}");
        assert_eq!(edit.warnings.len(), 1, "{edit:?}");
        insta::assert_snapshot!(doc.to_string(), @r#"
        version = 2
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          base_runtime_spec = "/etc/containerd/base-spec.json"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
          runtime_type = "io.containerd.runc.v2"
          base_runtime_spec = "/etc/containerd/base-spec.json"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
          runtime_type = "io.containerd.kata.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.custom]
          runtime_type = "io.containerd.runc.v2"
          base_runtime_spec = "/etc/other.json"
        "#);
        let again = add_oci_hook(&mut doc, "/etc/containerd/base-spec.json").unwrap();
        assert!(again.is_unchanged());
    }

    #[test]
    fn add_oci_hook_says_so_without_runc() {
        let mut doc: DocumentMut = "version = 3\n".parse().unwrap();
        let edit = add_oci_hook(&mut doc, "/x.json").unwrap();
        assert!(edit.is_unchanged());
        assert!(edit.warnings[0].contains("no runtime"), "{edit:?}");
    }
}
