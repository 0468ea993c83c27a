//! The configuration containerd actually runs with: the main file plus every file it
//! `imports`, merged the way the containerd release that reads them merges.
//!
//! What containerd does (`LoadConfig` in `services/server/config/config.go` of 1.7,
//! `cmd/containerd/server/config/config.go` of 2.1; same in both):
//!
//! - files are loaded breadth first: the main file, then its imports in order, then theirs
//!   (imports of imports are followed); a file already loaded is skipped;
//! - an import is `filepath.Clean`ed, joined to the importing file's directory when relative,
//!   and globbed (Go's `filepath.Glob`, sorted per directory) only when it contains `*`; a glob
//!   matching nothing is fine, a plain path that does not exist is an error;
//! - the merge: containerd 1.x replaces a whole `plugins.<id>` section with the imported one
//!   (`to.Plugins[k] = v`); 2.x merges plugin tables key by key (mergo with override);
//! - `version` is the last non-zero one; 2.x migrates a versionless (version 1) file's plugin
//!   names before merging it (`v1MigratePluginName`).
//!
//! A cycle through a plain entry (a file naming itself or one of the files that imported it)
//! is refused here, though containerd skips the repeat: such a layout is a mistake worth
//! fixing before editing. A glob matching such a file (e.g. `*.toml` in the main file's own
//! dir) is normal: the match is skipped, as containerd skips every file already loaded.
//!
//! [`load`] does the reading (bounded, through [`crate::patch::read_config`]); [`merge`] is
//! pure and keeps, for every leaf key, the value and the file:line that set it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use toml_edit::{Item, TableLike, Value};

use crate::containerd::NRI_PLUGIN_ID;
use crate::error::help_error;
use crate::text;

/// How many files one load may read (main file included).
pub const MAX_FILES: usize = 4096;

/// The longest `imports` entry accepted (containerd has no limit, but no real config comes near).
pub const MAX_IMPORT_LEN: usize = 4096;

/// How a containerd release merges an imported file into what it loaded before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeRule {
    /// containerd 1.x: an imported `plugins.<id>` table replaces the whole section.
    WholePluginSection,
    /// containerd 2.x: plugin tables are merged key by key.
    KeyByKey,
}

/// A containerd release as `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl Release {
    /// Parses `X.Y` (a leading `v` and a patch level are accepted: `v2.1.9`).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim().trim_start_matches('v');
        let mut parts = s.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor: String = parts
            .next()?
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        Some(Self {
            major,
            minor: minor.parse().ok()?,
        })
    }

    /// Finds the release in the output of `containerd --version`, e.g.
    /// `containerd github.com/containerd/containerd/v2 v2.1.9 ...` or
    /// `containerd containerd.io 1.7.24 ...`.
    pub fn from_version_output(out: &str) -> Option<Self> {
        out.split_whitespace().skip(1).find_map(|w| {
            let digits = w.trim_start_matches('v');
            (digits.starts_with(|c: char| c.is_ascii_digit()) && digits.contains('.'))
                .then(|| Self::parse(digits))
                .flatten()
        })
    }

    /// The merge rule of this release.
    pub fn merge_rule(self) -> MergeRule {
        if self.major >= 2 {
            MergeRule::KeyByKey
        } else {
            MergeRule::WholePluginSection
        }
    }

    /// The highest config `version` this release loads.
    pub fn max_config_version(self) -> i64 {
        match (self.major, self.minor) {
            (0 | 1, _) => 2,
            (2, 0..=2) => 3,
            _ => 4,
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One loaded file.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The file as containerd names it (joined to the importer's directory, not canonical).
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// The file that imported it (`None` for the main file).
    pub imported_by: Option<usize>,
    /// The 1-based line of the `imports` entry that named it.
    pub import_line: Option<usize>,
}

/// Where a value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub path: PathBuf,
    /// The 1-based line of the key.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// A leaf value of the effective config and where it was set.
#[derive(Debug, Clone)]
pub struct Setting {
    /// The value, as written (no decor).
    pub value: toml_edit::Value,
    /// The file and line that set it.
    pub origin: Origin,
}

impl Setting {
    /// The value as a bool, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        self.value.as_bool()
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        self.value.as_str()
    }
}

/// The merged config: every leaf key with its value and origin.
#[derive(Debug, Clone)]
pub struct Effective {
    /// The effective `version` (1 when no file sets one).
    pub version: i64,
    /// The file:line of the `version` in effect, when a file sets one.
    pub version_origin: Option<Origin>,
    /// Every leaf (by full key path).
    pub leaves: BTreeMap<Vec<String>, Setting>,
    /// The files read, in containerd's order (the main file first).
    pub files: Vec<PathBuf>,
    /// The merge rule used.
    pub rule: MergeRule,
    /// For every `plugins.<id>` table, the last file that has it (on 1.x rules, the file whose
    /// section is in effect).
    pub sections: BTreeMap<String, Origin>,
    /// The version containerd's loader ends with: on 2.x rules the last file's `version` of 2 or
    /// more (a version 0 or 1 file is migrated to the version loaded before it), else the
    /// default, 3; on 1.x rules [`Effective::version`].
    pub loaded_version: i64,
    /// The CRI plugin whose `containerd.runtimes` containerd uses, after 2.x's migration.
    cri_read: &'static str,
    /// The CRI plugin under which a file loaded last sets `containerd.runtimes` keys that
    /// containerd uses (2.x: the version 2 name while 2.x migrates version 2 runtimes).
    cri_write: &'static str,
    /// On 2.x rules, a version 2 `plugins."io.containerd.grpc.v1.cri".containerd.runtimes`
    /// setting that containerd does not migrate, so does not use, and why.
    pub cri_not_migrated: Option<(Origin, String)>,
}

impl Effective {
    /// The setting of a leaf key.
    pub fn get(&self, path: &[&str]) -> Option<&Setting> {
        let key: Vec<String> = path.iter().map(|s| (*s).to_owned()).collect();
        self.leaves.get(&key)
    }

    /// The NRI plugin's key under `plugins` for the effective version.
    pub fn nri_plugin(&self) -> &'static str {
        if self.version <= 1 && self.rule == MergeRule::WholePluginSection {
            "nri"
        } else {
            NRI_PLUGIN_ID
        }
    }

    /// The CRI plugin under which a file loaded last (the drop-in) sets `containerd.runtimes`
    /// keys so that containerd uses them: on 1.x rules the one for the version; on 2.x rules
    /// `io.containerd.cri.v1.runtime`, except while containerd migrates version 2 runtimes
    /// (`io.containerd.grpc.v1.cri`): a `cri.v1.runtime` runtimes table would stop that.
    pub fn cri_plugin(&self) -> &'static str {
        self.cri_write
    }

    /// The `version` a file loaded last (the drop-in) is written with, so that it changes
    /// neither the version containerd ends with nor, on 2.x, which keys it migrates (2.3+ also
    /// refuses an import with a higher version than the main file). `None`: no `version` line.
    pub fn dropin_version(&self) -> Option<i64> {
        match self.rule {
            MergeRule::WholePluginSection => (self.version >= 2).then_some(self.version),
            MergeRule::KeyByKey => Some(self.loaded_version),
        }
    }

    /// NRI `disable`, when a file sets it.
    pub fn nri_disable(&self) -> Option<&Setting> {
        self.get(&["plugins", self.nri_plugin(), "disable"])
    }

    /// NRI `socket_path`, when a file sets it.
    pub fn nri_socket_path(&self) -> Option<&Setting> {
        self.get(&["plugins", self.nri_plugin(), "socket_path"])
    }

    /// Whether NRI runs: `disable` as set, else the release's default (off in 1.x, on in 2.x).
    pub fn nri_enabled(&self) -> bool {
        match self.nri_disable().and_then(Setting::as_bool) {
            Some(disable) => !disable,
            None => self.rule == MergeRule::KeyByKey,
        }
    }

    /// The CRI runtimes by name: `(runtime_type, base_runtime_spec)` as set by the files.
    pub fn runtimes(&self) -> BTreeMap<String, (Option<&Setting>, Option<&Setting>)> {
        let cri = self.cri_read;
        let mut out: BTreeMap<String, (Option<&Setting>, Option<&Setting>)> = BTreeMap::new();
        for (key, setting) in &self.leaves {
            let [p, c, ctr, rts, name, leaf] = key.as_slice() else {
                continue;
            };
            if p != "plugins" || c != cri || ctr != "containerd" || rts != "runtimes" {
                continue;
            }
            let entry = out.entry(name.clone()).or_default();
            match leaf.as_str() {
                "runtime_type" => entry.0 = Some(setting),
                "base_runtime_spec" => entry.1 = Some(setting),
                _ => {}
            }
        }
        out
    }
}

/// Go's `filepath.Clean`, lexically.
pub fn clean(path: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            _ => out.push(c),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

/// Go's `filepath.Match` (Unix): `*`, `?`, `[...]` (with `^` negation and ranges) and `\`
/// escapes; `*` and `?` do not match `/`. `None` for a malformed pattern (Go's `ErrBadPattern`),
/// found anywhere in the pattern as Go does, not only up to the first mismatch. Like Go, it
/// matches chunk by chunk (a chunk is the text between stars) and never backtracks across a
/// star, so it runs in O(pattern × name) time and constant stack.
pub fn match_element(pattern: &[char], name: &[char]) -> Option<bool> {
    let mut pattern = pattern;
    let mut name = name;
    'pattern: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing `*` matches the rest unless it holds a `/`.
            return Some(!name.contains(&'/'));
        }
        let (t, ok) = match_chunk(chunk, name)?;
        if ok && (t.is_empty() || !pattern.is_empty()) {
            name = t;
            continue;
        }
        if star {
            // Skip i+1 characters (never a `/`), leftmost match first, as Go does.
            let mut i = 0;
            while i < name.len() && name[i] != '/' {
                let (t, ok) = match_chunk(chunk, &name[i + 1..])?;
                if ok {
                    if pattern.is_empty() && !t.is_empty() {
                        i += 1;
                        continue;
                    }
                    name = t;
                    continue 'pattern;
                }
                i += 1;
            }
        }
        // No match: the rest of the pattern must still be well-formed.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, &[])?;
        }
        return Some(false);
    }
    Some(name.is_empty())
}

/// Go's `scanChunk`: the leading stars, the chunk up to the next star outside `[...]`, the rest.
fn scan_chunk(pattern: &[char]) -> (bool, &[char], &[char]) {
    let stars = pattern.iter().take_while(|&&c| c == '*').count();
    let pattern = &pattern[stars..];
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            '\\' if i + 1 < pattern.len() => i += 1,
            '[' => in_range = true,
            ']' => in_range = false,
            '*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (stars > 0, &pattern[..i], &pattern[i..])
}

/// Go's `matchChunk`: `(rest of name, matched)`, `None` for a malformed chunk. After a
/// mismatch it keeps reading the chunk (not the name) to check its syntax.
fn match_chunk<'a>(chunk: &[char], name: &'a [char]) -> Option<(&'a [char], bool)> {
    let mut chunk = chunk;
    let mut s = name;
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            '[' => {
                let mut r = '\0';
                if !failed {
                    r = s[0];
                    s = &s[1..];
                }
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut hit = false;
                let mut nrange = 0;
                loop {
                    if chunk.first() == Some(&']') && nrange > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_esc(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&'-') {
                        let (h, rest) = get_esc(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if lo <= r && r <= hi {
                        hit = true;
                    }
                    nrange += 1;
                }
                if hit == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed {
                    if s[0] == '/' {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                if c == '\\' {
                    chunk = &chunk[1..];
                    if chunk.is_empty() {
                        return None;
                    }
                }
                if !failed {
                    if chunk[0] != s[0] {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    if failed {
        Some((&[], false))
    } else {
        Some((s, true))
    }
}

/// Go's `getEsc`: one (possibly escaped) character of a class; `None` when malformed,
/// including a class that never closes.
fn get_esc(chunk: &[char]) -> Option<(char, &[char])> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some('-' | ']') => return None,
        Some('\\') => {
            chunk = &chunk[1..];
            chunk.first()?;
        }
        Some(_) => {}
    }
    let rest = &chunk[1..];
    if rest.is_empty() {
        return None;
    }
    Some((chunk[0], rest))
}

/// Whether an import, resolved (and globbed when it holds `*`), loads `path`.
pub fn covers(import: &Path, path: &Path) -> bool {
    if !import.to_string_lossy().contains('*') {
        return import == path;
    }
    let ic: Vec<Component<'_>> = import.components().collect();
    let pc: Vec<Component<'_>> = path.components().collect();
    ic.len() == pc.len()
        && ic.iter().zip(&pc).all(|(i, p)| {
            let i: Vec<char> = i.as_os_str().to_string_lossy().chars().collect();
            let p: Vec<char> = p.as_os_str().to_string_lossy().chars().collect();
            match_element(&i, &p) == Some(true)
        })
}

fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', '\\'])
}

/// Directory entries one import glob may read (and paths it may hold at any step): a pattern
/// such as `/*/*/*/*/*/*.toml` would otherwise walk the whole disk.
pub const MAX_GLOB_ENTRIES: usize = 10_000;

/// Go's `filepath.Glob`: matches in each directory in sorted order; a missing directory or an
/// unreadable one matches nothing.
pub fn glob(pattern: &Path) -> anyhow::Result<Vec<PathBuf>> {
    glob_capped(pattern, MAX_GLOB_ENTRIES)
}

/// [`glob`], reading at most `cap` directory entries in all and holding at most `cap` paths.
pub fn glob_capped(pattern: &Path, cap: usize) -> anyhow::Result<Vec<PathBuf>> {
    let too_many = || {
        anyhow::anyhow!(
            "the pattern reads more than {cap} directory entries (or paths); a runaway glob"
        )
    };
    let mut read_entries = 0usize;
    // Go checks the whole pattern first (`Match(pattern, "")`): a bad class anywhere fails.
    let whole: Vec<char> = pattern.to_string_lossy().chars().collect();
    if whole.len() > MAX_IMPORT_LEN {
        anyhow::bail!("pattern longer than {MAX_IMPORT_LEN} characters");
    }
    if match_element(&whole, &[]).is_none() {
        anyhow::bail!("syntax error in pattern");
    }
    let mut current = vec![PathBuf::new()];
    let comps: Vec<Component<'_>> = pattern.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let Component::Normal(name) = c else {
            for p in &mut current {
                p.push(c.as_os_str());
            }
            continue;
        };
        let name = name.to_string_lossy();
        if !has_meta(&name) {
            current = current
                .into_iter()
                .map(|p| p.join(name.as_ref()))
                .filter(|p| !last || std::fs::symlink_metadata(p).is_ok())
                .collect();
            continue;
        }
        let pat: Vec<char> = name.chars().collect();
        if match_element(&pat, &[]).is_none() {
            anyhow::bail!("syntax error in pattern");
        }
        let mut next = Vec::new();
        for dir in current {
            let read = if dir.as_os_str().is_empty() {
                std::fs::read_dir(".")
            } else {
                std::fs::read_dir(&dir)
            };
            let Ok(entries) = read else { continue };
            let mut names = Vec::new();
            for e in entries.filter_map(Result::ok) {
                read_entries += 1;
                if read_entries > cap {
                    return Err(too_many());
                }
                names.push(e.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            for n in names {
                let chars: Vec<char> = n.chars().collect();
                if match_element(&pat, &chars) == Some(true) {
                    next.push(dir.join(&n));
                    if next.len() > cap {
                        return Err(too_many());
                    }
                }
            }
        }
        current = next;
    }
    Ok(current)
}

/// Whether a parsed file imports nothing: no `imports` key, or an empty array (anything else is
/// for [`load`] to read or to refuse).
pub fn imports_nothing(doc: &toml_edit::Table) -> bool {
    doc.get("imports")
        .is_none_or(|i| i.as_array().is_some_and(toml_edit::Array::is_empty))
}

/// Reads the main file and every file it imports, in containerd's order. `main_text` is the
/// main file's text when the caller already read it.
pub fn load(main: &Path, main_text: Option<String>) -> anyhow::Result<Vec<Layer>> {
    load_with(main, main_text, &BTreeMap::new())
}

/// Like [`load`], as if the files in `overlay` existed with that text (or held it): what
/// containerd would load once a plan is applied. Nothing in `overlay` is read from disk.
pub fn load_with(
    main: &Path,
    main_text: Option<String>,
    overlay: &BTreeMap<PathBuf, String>,
) -> anyhow::Result<Vec<Layer>> {
    let main_text = match main_text {
        Some(t) => t,
        None => crate::patch::read_config(main)?,
    };
    let mut layers = vec![Layer {
        path: main.to_owned(),
        text: main_text,
        imported_by: None,
        import_line: None,
    }];
    let mut next = 0;
    while next < layers.len() {
        let at = next;
        next += 1;
        let imports = imports_of(&layers[at].path, &layers[at].text)?;
        for (entry, line) in imports {
            if entry.len() > MAX_IMPORT_LEN {
                return Err(help_error(
                    format!(
                        "{}:{line}: import entry is {} bytes long, more than {MAX_IMPORT_LEN}",
                        layers[at].path.display(),
                        entry.len()
                    ),
                    "an `imports` entry that long is not a real config; fix that line",
                ));
            }
            let mut resolved = clean(Path::new(&entry));
            if !resolved.is_absolute() {
                let dir = layers[at].path.parent().unwrap_or(Path::new(""));
                resolved = clean(&dir.join(resolved));
            }
            let is_glob = resolved.to_string_lossy().contains('*');
            let matches = if is_glob {
                let mut found = glob(&resolved).map_err(|e| {
                    help_error(
                        format!(
                            "{}:{line}: import `{entry}`: {e}",
                            layers[at].path.display()
                        ),
                        "fix or narrow the pattern (Go's filepath.Match syntax: `*`, `?`, \
                         `[a-z]`)",
                    )
                })?;
                for extra in overlay.keys() {
                    if covers(&resolved, extra) && !found.contains(extra) {
                        found.push(extra.clone());
                    }
                }
                // Go's Glob: directories in order, names in order within each.
                found.sort();
                found
            } else {
                vec![resolved]
            };
            for path in matches {
                // The chain of importers: a plain entry naming one of them is a cycle. A glob
                // match of one (even of the importing file) is skipped below, as containerd
                // skips every file already loaded.
                let mut chain = if is_glob { None } else { Some(at) };
                while let Some(i) = chain {
                    if layers[i].path == path {
                        return Err(help_error(
                            format!(
                                "{}:{line}: import `{entry}` makes a cycle: `{}` is already \
                                 being loaded",
                                layers[at].path.display(),
                                path.display()
                            ),
                            "remove that entry: containerd skips a file already loaded, so \
                             this one has no effect",
                        ));
                    }
                    chain = layers[i].imported_by;
                }
                if layers.iter().any(|l| l.path == path) {
                    // Loaded already through another import: containerd skips it.
                    continue;
                }
                if layers.len() >= MAX_FILES {
                    return Err(help_error(
                        format!(
                            "`{}` imports more than {MAX_FILES} files",
                            layers[0].path.display()
                        ),
                        "this looks like a runaway glob; narrow the `imports` patterns",
                    ));
                }
                let text = match overlay.get(&path) {
                    Some(text) => Ok(text.clone()),
                    None => crate::patch::read_config(&path),
                }
                .map_err(|e| {
                    e.context(format!(
                        "{}:{line}: failed to read imported file `{}`",
                        layers[at].path.display(),
                        path.display()
                    ))
                })?;
                layers.push(Layer {
                    path,
                    text,
                    imported_by: Some(at),
                    import_line: Some(line),
                });
            }
        }
    }
    Ok(layers)
}

/// Parses one file, with an error that names it and the line.
fn parse(path: &Path, text: &str) -> anyhow::Result<toml_edit::Document<String>> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text).to_owned();
    toml_edit::Document::parse(body.clone()).map_err(|e| {
        let line = e.span().map_or(1, |s| text::line_of(&body, s.start));
        anyhow::anyhow!("{}", text::parse_error_excerpt(&body, &e)).context(
            crate::error::HelpError::new(
                format!(
                    "{}:{line}: failed to parse `{}` as TOML",
                    path.display(),
                    path.display()
                ),
                crate::patch::syntax_help(&body, &e),
            ),
        )
    })
}

/// The `imports` entries of a file, with their lines.
fn imports_of(path: &Path, text: &str) -> anyhow::Result<Vec<(String, usize)>> {
    let doc = parse(path, text)?;
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let line_of =
        |span: Option<std::ops::Range<usize>>| span.map_or(1, |s| text::line_of(body, s.start));
    let Some(item) = doc.get("imports") else {
        return Ok(Vec::new());
    };
    let Some(array) = item.as_array() else {
        return Err(help_error(
            format!(
                "{}:{}: `imports` is not an array",
                path.display(),
                line_of(item.span())
            ),
            "write `imports = [\"/etc/containerd/conf.d/*.toml\"]`",
        ));
    };
    array
        .iter()
        .map(|v| match v.as_str() {
            Some(s) => Ok((s.to_owned(), line_of(v.span()))),
            None => Err(help_error(
                format!(
                    "{}:{}: an `imports` entry is not a string",
                    path.display(),
                    line_of(v.span())
                ),
                "each entry is a path or a glob in quotes",
            )),
        })
        .collect()
}

/// The short plugin names containerd 2.x renames in a version 1 file (`v1MigratePluginName`,
/// as of 2.1.9).
fn v1_plugin_name(name: &str) -> String {
    if name.contains('.') {
        return name.to_owned();
    }
    let core = [
        ("cri", "io.containerd.grpc.v1.cri"),
        ("cgroups", "io.containerd.monitor.v1.cgroups"),
        ("linux", "io.containerd.runtime.v1.linux"),
        ("scheduler", "io.containerd.gc.v1.scheduler"),
        ("bolt", "io.containerd.metadata.v1.bolt"),
        ("task", "io.containerd.runtime.v2.task"),
        ("opt", "io.containerd.internal.v1.opt"),
        ("restart", "io.containerd.internal.v1.restart"),
        ("tracing", "io.containerd.internal.v1.tracing"),
        ("otlp", "io.containerd.tracing.processor.v1.otlp"),
        ("aufs", "io.containerd.snapshotter.v1.aufs"),
        ("btrfs", "io.containerd.snapshotter.v1.btrfs"),
        ("devmapper", "io.containerd.snapshotter.v1.devmapper"),
        ("native", "io.containerd.snapshotter.v1.native"),
        ("overlayfs", "io.containerd.snapshotter.v1.overlayfs"),
        ("zfs", "io.containerd.snapshotter.v1.zfs"),
    ];
    if let Some((_, full)) = core.iter().find(|(short, _)| *short == name) {
        return (*full).to_owned();
    }
    if name.ends_with("-service") {
        return format!("io.containerd.service.v1.{name}");
    }
    if name == "windows" || name == "windows-lcow" {
        return format!("io.containerd.snapshotter.v1.{name}");
    }
    format!("io.containerd.grpc.v1.{name}")
}

fn flatten(
    item: &Item,
    body: &text::Lines,
    key_line: usize,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Setting)>,
    file: &Path,
) {
    if let Some(table) = item.as_table_like() {
        flatten_table(table, body, path, out, file);
        return;
    }
    // An array of tables is kept as the equivalent array of inline tables: one leaf.
    let value = match item {
        Item::Value(v) => Some(v.clone()),
        Item::ArrayOfTables(a) => Some(Value::Array(a.clone().into_array())),
        Item::None | Item::Table(_) => None,
    };
    if let Some(mut value) = value {
        value.decor_mut().clear();
        out.push((
            path.clone(),
            Setting {
                value,
                origin: Origin {
                    path: file.to_owned(),
                    line: key_line,
                },
            },
        ));
    }
}

fn flatten_table(
    table: &dyn TableLike,
    body: &text::Lines,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Setting)>,
    file: &Path,
) {
    for (k, item) in table.iter() {
        let line = table
            .get_key_value(k)
            .and_then(|(key, _)| key.span())
            .or_else(|| item.span())
            .map_or(1, |s| body.line_of(s.start));
        path.push(k.to_owned());
        flatten(item, body, line, path, out, file);
        path.pop();
    }
}

/// Merges loaded files as containerd does under `rule` (pure: parses the texts, reads nothing).
pub fn merge(layers: &[Layer], rule: MergeRule) -> anyhow::Result<Effective> {
    let mut leaves: BTreeMap<Vec<String>, Setting> = BTreeMap::new();
    let mut sections: BTreeMap<String, Origin> = BTreeMap::new();
    let mut version = 0;
    let mut version_origin = None;
    // 2.x: the last `version` of 2 or more (a version 0/1 file is migrated to the one before it).
    let mut loaded: Option<(i64, Option<Origin>)> = None;
    // 2.x: the `plugins."io.containerd.cri.v1.runtime".containerd.<key>` any file has, with
    // where: version 2 `containerd.<key>` is not migrated over them.
    let mut cri_v3_keys: BTreeMap<String, Origin> = BTreeMap::new();
    for layer in layers {
        let doc = parse(&layer.path, &layer.text)?;
        let body = layer.text.strip_prefix('\u{feff}').unwrap_or(&layer.text);
        let body = &text::Lines::new(body);
        let file_version = match doc.get("version") {
            None => 0,
            Some(item) => item.as_integer().ok_or_else(|| {
                help_error(
                    format!(
                        "{}:{}: `version` is not an integer",
                        layer.path.display(),
                        item.span().map_or(1, |s| body.line_of(s.start))
                    ),
                    "containerd config versions are written `version = 2` (or 3)",
                )
            })?,
        };
        if let Some(plugins) = doc.get("plugins").and_then(Item::as_table_like) {
            for (id, item) in plugins.iter() {
                let line = plugins
                    .get_key_value(id)
                    .and_then(|(key, _)| key.span())
                    .or_else(|| item.span())
                    .map_or(1, |s| body.line_of(s.start));
                let id = if rule == MergeRule::KeyByKey && file_version <= 1 {
                    v1_plugin_name(id)
                } else {
                    id.to_owned()
                };
                sections.insert(
                    id,
                    Origin {
                        path: layer.path.clone(),
                        line,
                    },
                );
            }
        }
        let mut flat = Vec::new();
        flatten_table(
            doc.as_table(),
            body,
            &mut Vec::new(),
            &mut flat,
            &layer.path,
        );
        if rule == MergeRule::KeyByKey && file_version <= 1 {
            for (key, _) in &mut flat {
                if key.len() > 1 && key[0] == "plugins" {
                    key[1] = v1_plugin_name(&key[1]);
                }
            }
        }
        if rule == MergeRule::WholePluginSection {
            let sections: Vec<String> = doc
                .get("plugins")
                .and_then(Item::as_table_like)
                .map(|p| p.iter().map(|(k, _)| k.to_owned()).collect())
                .unwrap_or_default();
            for id in sections {
                leaves.retain(|key, _| !(key.len() > 1 && key[0] == "plugins" && key[1] == id));
            }
        }
        for (key, setting) in flat {
            if key.first().is_some_and(|k| k == "imports") {
                continue;
            }
            leaves.insert(key, setting);
        }
        if let Some(containerd) = doc
            .get("plugins")
            .and_then(Item::as_table_like)
            .and_then(|p| p.get(CRI_RUNTIME_PLUGIN))
            .and_then(Item::as_table_like)
            .and_then(|c| c.get("containerd"))
            .and_then(Item::as_table_like)
        {
            for (k, item) in containerd.iter() {
                let line = containerd
                    .get_key_value(k)
                    .and_then(|(key, _)| key.span())
                    .or_else(|| item.span())
                    .map_or(1, |s| body.line_of(s.start));
                // The first file that sets it: the one that stops the migration.
                cri_v3_keys.entry(k.to_owned()).or_insert(Origin {
                    path: layer.path.clone(),
                    line,
                });
            }
        }
        if file_version != 0 {
            let origin = doc
                .get_key_value("version")
                .and_then(|(k, _)| k.span())
                .map(|sp| Origin {
                    path: layer.path.clone(),
                    line: body.line_of(sp.start),
                });
            if file_version >= 2 {
                loaded = Some((file_version, origin.clone()));
            }
            version = file_version;
            version_origin = origin;
        }
    }
    let mut eff = Effective {
        version: version.max(1),
        version_origin,
        leaves,
        files: layers.iter().map(|l| l.path.clone()).collect(),
        rule,
        sections,
        loaded_version: version.max(1),
        cri_read: "",
        cri_write: "",
        cri_not_migrated: None,
    };
    match rule {
        MergeRule::WholePluginSection => {
            let cri = match eff.version {
                ..=1 => "cri",
                2 => CRI_V2_PLUGIN,
                _ => CRI_RUNTIME_PLUGIN,
            };
            eff.cri_read = cri;
            eff.cri_write = cri;
        }
        MergeRule::KeyByKey => {
            if let Some((v, origin)) = &loaded {
                eff.version = *v;
                eff.version_origin.clone_from(origin);
            }
            eff.loaded_version = loaded.as_ref().map_or(CONFIG_VERSION_2X, |(v, _)| *v);
            migrate_cri_2x(&mut eff, &cri_v3_keys);
        }
    }
    Ok(eff)
}

/// The CRI plugin of version 2 configs.
const CRI_V2_PLUGIN: &str = "io.containerd.grpc.v1.cri";
/// The CRI runtime plugin of version 3 configs.
const CRI_RUNTIME_PLUGIN: &str = "io.containerd.cri.v1.runtime";
/// The version containerd 2.x's loader starts from (`version.ConfigVersion`).
const CONFIG_VERSION_2X: i64 = 3;

/// containerd 2.0-2.2: after merging every file, when the version it ends with is below 3, the
/// CRI runtime plugin's `ConfigMigration` copies each
/// `plugins."io.containerd.grpc.v1.cri".containerd.<key>` (but the snapshotter keys, which
/// go to the image plugin) to `plugins."io.containerd.cri.v1.runtime".containerd.<key>`, whole,
/// where that key is not set already (`plugins/cri/runtime/plugin.go`, `migrateConfig`). At 3,
/// nothing is migrated and the version 2 keys are ignored.
fn migrate_cri_2x(eff: &mut Effective, cri_v3_keys: &BTreeMap<String, Origin>) {
    const TO_IMAGE_PLUGIN: [&str; 3] = [
        "snapshotter",
        "disable_snapshot_annotations",
        "discard_unpacked_layers",
    ];
    eff.cri_read = CRI_RUNTIME_PLUGIN;
    eff.cri_write = CRI_RUNTIME_PLUGIN;
    let src_runtimes = eff
        .leaves
        .iter()
        .find(|(k, _)| {
            k.len() > 3
                && k[0] == "plugins"
                && k[1] == CRI_V2_PLUGIN
                && k[2] == "containerd"
                && k[3] == "runtimes"
        })
        .map(|(_, s)| s.origin.clone());
    if eff.loaded_version >= CONFIG_VERSION_2X {
        if let Some(at) = src_runtimes {
            let why = match &eff.version_origin {
                Some(o) => format!("`version = {}` at {o}", eff.loaded_version),
                None => format!(
                    "no file sets `version` 2 or more (containerd 2.x then loads it as {})",
                    eff.loaded_version
                ),
            };
            eff.cri_not_migrated = Some((
                at,
                format!(
                    "containerd 2.x migrates (and so uses) version 2 \
                     `plugins.\"{CRI_V2_PLUGIN}\".containerd` keys only when the version it \
                     loads is 2, and {why} makes it {}",
                    eff.loaded_version
                ),
            ));
        }
        return;
    }
    let moved: Vec<(Vec<String>, Setting)> = eff
        .leaves
        .iter()
        .filter(|(k, _)| {
            k.len() > 3
                && k[0] == "plugins"
                && k[1] == CRI_V2_PLUGIN
                && k[2] == "containerd"
                && !TO_IMAGE_PLUGIN.contains(&k[3].as_str())
                && !cri_v3_keys.contains_key(&k[3])
        })
        .map(|(k, s)| {
            let mut k = k.clone();
            CRI_RUNTIME_PLUGIN.clone_into(&mut k[1]);
            (k, s.clone())
        })
        .collect();
    eff.leaves.extend(moved);
    match cri_v3_keys.get("runtimes") {
        None => eff.cri_write = CRI_V2_PLUGIN,
        Some(dst) => {
            if let Some(at) = src_runtimes {
                eff.cri_not_migrated = Some((
                    at,
                    format!(
                        "containerd 2.x migrates version 2 `plugins.\"{CRI_V2_PLUGIN}\".\
                         containerd.runtimes` only when no file sets \
                         `plugins.\"{CRI_RUNTIME_PLUGIN}\".containerd.runtimes`, and {dst} does"
                    ),
                ));
            }
        }
    }
}

/// What an edit of the main file is for, judged on the effective config.
#[derive(Debug, Clone, Copy)]
pub enum Goal<'a> {
    /// NRI runs (`enable-nri`).
    NriEnabled,
    /// Every runc runtime has a base runtime spec, and one of them this one (`add-oci-hook`).
    BaseRuntimeSpec(&'a str),
}

/// How [`Verdict::Undone`] starts its `what` when files of mixed versions set CRI runtimes that
/// containerd 2.x ignores (aligning the versions is the fix, not editing another file).
pub const MIXED_VERSIONS: &str = "sets CRI runtimes that containerd does not use";

/// The verdict on an edit of the main file, given everything it imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The goal holds already; nothing needs to change. Says where it comes from.
    AlreadyInEffect(String),
    /// The edit of the main file makes the goal hold.
    EditTakesEffect,
    /// An imported file undoes the edit: where, and what it does.
    Undone {
        /// The file:line in the way.
        by: Origin,
        /// What it does, as a sentence fragment.
        what: String,
    },
}

impl Goal<'_> {
    /// Whether the goal holds (`Ok`: where it comes from), or the setting in the way (the
    /// file:line when known, and what it does).
    pub fn check(self, eff: &Effective) -> Result<String, (Option<Origin>, String)> {
        match self {
            Goal::NriEnabled => {
                let key = format!("plugins.\"{}\"", eff.nri_plugin());
                match eff.nri_disable() {
                    Some(s) if s.as_bool() == Some(false) => {
                        Ok(format!("`disable = false` at {}", s.origin))
                    }
                    Some(s) => Err((
                        Some(s.origin.clone()),
                        format!("sets `{key}.disable = {}`", s.value),
                    )),
                    None if eff.rule == MergeRule::KeyByKey => {
                        Ok("containerd 2.x's default (no file sets `disable`)".to_owned())
                    }
                    None => Err((
                        eff.sections.get(eff.nri_plugin()).cloned(),
                        format!(
                            "has the `{key}` section that containerd 1.x uses whole (an \
                             imported section replaces the main file's), without \
                             `disable = false`, so NRI stays off (1.x's default)"
                        ),
                    )),
                }
            }
            Goal::BaseRuntimeSpec(spec) => {
                // Runtimes a file sets that containerd 2.x drops: which runtimes (and which
                // runc options) pods get is not what the files say; fixing that is the admin's.
                if let Some((at, why)) = &eff.cri_not_migrated {
                    return Err((
                        Some(at.clone()),
                        format!(
                            "{MIXED_VERSIONS}: {why} (write every file with the same `version`)"
                        ),
                    ));
                }
                let runc: Vec<_> = eff
                    .runtimes()
                    .into_iter()
                    .filter(|(_, (ty, _))| {
                        ty.and_then(Setting::as_str) == Some(crate::containerd::RUNC_RUNTIME_TYPE)
                    })
                    .collect();
                let mut ours = Vec::new();
                for (name, (ty, base)) in &runc {
                    match base.and_then(|b| b.as_str().map(|v| (v, b))) {
                        Some((v, b)) if v == spec => ours.push(format!("`{name}` ({})", b.origin)),
                        Some((v, _)) if !v.is_empty() => {}
                        Some((_, b)) => {
                            return Err((
                                Some(b.origin.clone()),
                                format!("sets runtime `{name}`'s `base_runtime_spec` to \"\""),
                            ));
                        }
                        None => {
                            return Err((
                                ty.map(|t| t.origin.clone()),
                                format!(
                                    "defines runc runtime `{name}` without a base_runtime_spec"
                                ),
                            ));
                        }
                    }
                }
                if ours.is_empty() {
                    return Err((
                        eff.sections.get(eff.cri_plugin()).cloned(),
                        format!("leaves no runc runtime with `base_runtime_spec = \"{spec}\"`"),
                    ));
                }
                Ok(format!(
                    "`base_runtime_spec = \"{spec}\"` on {}",
                    ours.join(", ")
                ))
            }
        }
    }
}

/// Judges an edit of the main file (`layers[0]`, whose edited text is `edited_main`) against
/// the effective config before and after it (pure).
pub fn judge(
    layers: &[Layer],
    rule: MergeRule,
    edited_main: &str,
    goal: Goal<'_>,
) -> anyhow::Result<Verdict> {
    let before = merge(layers, rule)?;
    if let Ok(source) = goal.check(&before) {
        return Ok(Verdict::AlreadyInEffect(source));
    }
    let mut edited = layers.to_vec();
    if let Some(main) = edited.first_mut() {
        edited_main.clone_into(&mut main.text);
    }
    let after = merge(&edited, rule)?;
    match goal.check(&after) {
        Ok(_) => Ok(Verdict::EditTakesEffect),
        Err((by, what)) => Ok(Verdict::Undone {
            by: by.unwrap_or_else(|| Origin {
                path: layers.first().map(|l| l.path.clone()).unwrap_or_default(),
                line: 1,
            }),
            what,
        }),
    }
}

/// Who renders a config that is regenerated at every restart (k3s, rke2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `k3s` or `rke2`.
    pub program: String,
    /// The template to write instead (`config.toml.tmpl` or `config-v3.toml.tmpl`), beside it.
    pub template: PathBuf,
    /// The drop-in directory the rendered config imports, if it does.
    pub drop_in_dir: Option<String>,
}

/// Recognises a config that k3s or rke2 renders from a template at every start: its generated
/// header (`# File generated by k3s. DO NOT EDIT. Use config.toml.tmpl instead.`, the first
/// non-blank line) or its place (`.../rancher/{k3s,rke2}/agent/etc/containerd/`).
pub fn rendered_by(path: &Path, text: &str) -> Option<Rendered> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let header = first
        .strip_prefix("# File generated by ")
        .filter(|rest| rest.contains("DO NOT EDIT"))
        .and_then(|rest| rest.split('.').next())
        .map(str::to_owned);
    let shown = path.to_string_lossy();
    let by_place = ["k3s", "rke2"]
        .into_iter()
        .find(|p| shown.contains(&format!("/rancher/{p}/agent/etc/containerd/")))
        .map(str::to_owned);
    let program = header.or(by_place)?;
    let v3 = first.contains("config-v3.toml.tmpl")
        || toml_edit::Document::parse(body.to_owned())
            .ok()
            .and_then(|d| d.get("version").and_then(Item::as_integer))
            .is_some_and(|v| v >= 3);
    let name = if v3 {
        "config-v3.toml.tmpl"
    } else {
        "config.toml.tmpl"
    };
    let dir_name = if v3 {
        "config-v3.toml.d"
    } else {
        "config.toml.d"
    };
    let drop_in_dir = toml_edit::Document::parse(body.to_owned())
        .ok()
        .and_then(|d| {
            d.get("imports")?
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str())
                .find(|i| {
                    i.contains(&format!("/{dir_name}/")) || i.starts_with(&format!("{dir_name}/"))
                })
                .map(str::to_owned)
        });
    Some(Rendered {
        program,
        template: path.with_file_name(name),
        drop_in_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(path: &str, text: &str) -> Layer {
        Layer {
            path: PathBuf::from(path),
            text: text.to_owned(),
            imported_by: None,
            import_line: None,
        }
    }

    const MAIN: &str = "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = false\n  socket_path = \"/run/custom/nri.sock\"\n";
    const DROP: &str = "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n";

    #[test]
    fn whole_section_rule_drops_keys_the_import_does_not_repeat() {
        let eff = merge(
            &[layer("/m.toml", MAIN), layer("/d.toml", DROP)],
            MergeRule::WholePluginSection,
        )
        .unwrap();
        assert_eq!(eff.nri_disable().unwrap().as_bool(), Some(true));
        assert_eq!(eff.nri_disable().unwrap().origin.to_string(), "/d.toml:3");
        assert!(eff.nri_socket_path().is_none());
    }

    #[test]
    fn key_by_key_rule_keeps_keys_the_import_does_not_repeat() {
        let eff = merge(
            &[layer("/m.toml", MAIN), layer("/d.toml", DROP)],
            MergeRule::KeyByKey,
        )
        .unwrap();
        assert!(!eff.nri_enabled());
        assert_eq!(
            eff.nri_socket_path().unwrap().origin.to_string(),
            "/m.toml:4"
        );
    }

    #[test]
    fn array_of_tables_is_one_leaf_with_its_origin() {
        let text =
            "version = 2\n[[plugins.\"x\".rules]]\n  a = 1\n[[plugins.\"x\".rules]]\n  a = 2\n";
        let eff = merge(&[layer("/m.toml", text)], MergeRule::KeyByKey).unwrap();
        let rules = eff.get(&["plugins", "x", "rules"]).unwrap();
        assert_eq!(rules.value.as_array().map(toml_edit::Array::len), Some(2));
    }

    #[test]
    fn release_parses_containerd_version_output() {
        let r = Release::from_version_output(
            "containerd github.com/containerd/containerd/v2 v2.1.9 abc\n",
        )
        .unwrap();
        assert_eq!((r.major, r.minor), (2, 1));
        let r = Release::from_version_output("containerd containerd.io 1.7.24 61f9fd88\n").unwrap();
        assert_eq!(r.merge_rule(), MergeRule::WholePluginSection);
        assert_eq!(Release::parse("2.2"), Some(Release { major: 2, minor: 2 }));
        assert_eq!(Release::parse("two"), None);
    }

    #[test]
    fn clean_matches_go_filepath_clean() {
        assert_eq!(
            clean(Path::new("/a/./b/../c//d.toml")),
            Path::new("/a/c/d.toml")
        );
        assert_eq!(clean(Path::new("/../x")), Path::new("/x"));
        assert_eq!(clean(Path::new("../x")), Path::new("../x"));
    }

    #[test]
    fn match_element_follows_go_filepath_match() {
        let m = |p: &str, n: &str| {
            match_element(
                &p.chars().collect::<Vec<_>>(),
                &n.chars().collect::<Vec<_>>(),
            )
        };
        assert_eq!(m("*.toml", "a.toml"), Some(true));
        assert_eq!(m("*.toml", ".hidden.toml"), Some(true));
        assert_eq!(m("*.toml", "a.toml.bak"), Some(false));
        assert_eq!(m("[0-9]?-*.toml", "1a-x.toml"), Some(true));
        assert_eq!(m("[^0-9]*", "1"), Some(false));
        assert_eq!(m("[abc", "a"), None);
    }

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    #[test]
    fn glob_matcher_does_not_backtrack_exponentially() {
        // Took > 20 s with the recursive matcher; Go's chunk matcher is polynomial.
        let pat = chars(&format!("{}b.toml", "*a".repeat(14)));
        let name = chars(&format!("{}.toml", "a".repeat(60)));
        assert_eq!(match_element(&pat, &name), Some(false));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(
            dir.path()
                .join("conf.d")
                .join(format!("{}.toml", "a".repeat(60))),
            "",
        )
        .unwrap();
        let main = dir.path().join("config.toml");
        let text = format!(
            "version = 2\nimports = [\"conf.d/{}b.toml\"]\n",
            "*a".repeat(14)
        );
        let layers = load(&main, Some(text)).unwrap();
        assert_eq!(layers.len(), 1);
    }

    #[test]
    fn glob_matcher_uses_bounded_stack_and_caps_import_length() {
        // 300000 stars overflowed the stack of the recursive matcher.
        let pat = chars(&"*".repeat(300_000));
        assert_eq!(match_element(&pat, &chars("x.toml")), Some(true));
        let mut pat = chars(&"*x".repeat(150_000));
        pat.push('y');
        assert_eq!(match_element(&pat, &chars("xxxx")), Some(false));
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        let text = format!(
            "version = 2\n\nimports = [\"conf.d/{}\"]\n",
            "*".repeat(300_000)
        );
        let err = format!("{:#}", load(&main, Some(text)).unwrap_err());
        assert!(err.contains(&format!("{}:3:", main.display())), "{err}");
        assert!(err.contains("4096"), "{err}");
    }

    #[test]
    fn glob_reads_a_bounded_number_of_directory_entries_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        // 8 x 8 x 8 dirs: `*/*/*/*.nomatch` reads 8 + 64 + 512 entries.
        for a in 0..8 {
            for b in 0..8 {
                for c in 0..8 {
                    std::fs::create_dir_all(dir.path().join(format!("{a}/{b}/{c}"))).unwrap();
                }
            }
        }
        let pattern = dir.path().join("*/*/*/*.nomatch");
        assert!(glob_capped(&pattern, 600).unwrap().is_empty());
        let err = glob_capped(&pattern, 500).unwrap_err().to_string();
        assert!(err.contains("more than 500 directory entries"), "{err}");
        // `*/*` reads 8 + 64 entries: the cap is exact.
        assert_eq!(glob_capped(&dir.path().join("*/*"), 72).unwrap().len(), 64);
        assert!(glob_capped(&dir.path().join("*/*"), 71).is_err());
        // The real cap, through `load`: the error names the import's file:line.
        let many = dir.path().join("many");
        std::fs::create_dir(&many).unwrap();
        for i in 0..=MAX_GLOB_ENTRIES {
            std::fs::File::create(many.join(i.to_string())).unwrap();
        }
        let main = dir.path().join("config.toml");
        let text = "version = 2\n\nimports = [\"many/*.nomatch\"]\n".to_owned();
        let err = format!("{:#}", load(&main, Some(text)).unwrap_err());
        assert!(err.contains(&format!("{}:3:", main.display())), "{err}");
        assert!(err.contains("more than 10000 directory entries"), "{err}");
    }

    #[test]
    fn malformed_glob_is_refused_wherever_the_error_is() {
        // The check used to stop at the first mismatch (`a` vs the empty name).
        assert_eq!(match_element(&chars("a[*.toml"), &[]), None);
        assert_eq!(match_element(&chars("a[*.toml"), &chars("b.toml")), None);
        assert_eq!(match_element(&chars("x*[]"), &chars("x")), None);
        assert_eq!(match_element(&chars("*.toml\\"), &chars("a.conf")), None);
        assert_eq!(match_element(&chars("[a-]"), &chars("a")), None);
        assert_eq!(match_element(&chars("[]a]"), &chars("]")), None);
        assert_eq!(match_element(&chars("[\\]a]"), &chars("]")), Some(true));
        assert_eq!(
            match_element(&chars("a*b*c"), &chars("axxbyyc")),
            Some(true)
        );
        assert_eq!(match_element(&chars("a*b"), &chars("a/b")), Some(false));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        let main = dir.path().join("config.toml");
        let text = "version = 2\nimports = [\"conf.d/a[*.toml\"]\n".to_owned();
        let err = format!("{:#}", load(&main, Some(text)).unwrap_err());
        assert!(err.contains(&format!("{}:2:", main.display())), "{err}");
        assert!(err.contains("syntax error in pattern"), "{err}");
    }

    #[test]
    fn v2_runtimes_migrate_on_2x_only_at_loaded_version_2_where_v3_lacks_them() {
        let v2_runc = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\nruntime_type = \"io.containerd.runc.v2\"\n";
        let v3_gpu = "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.gpu]\nruntime_type = \"io.containerd.runc.v2\"\n";
        let v2_nri = "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\ndisable = false\n";
        let names = |eff: &Effective| eff.runtimes().into_keys().collect::<Vec<_>>();
        // All version 2: migrated; a drop-in writes version 2 names.
        let eff = merge(
            &[layer("/m", v2_runc), layer("/i", v2_nri)],
            MergeRule::KeyByKey,
        )
        .unwrap();
        assert_eq!(names(&eff), ["runc"]);
        assert_eq!(eff.cri_plugin(), "io.containerd.grpc.v1.cri");
        assert_eq!(eff.dropin_version(), Some(2));
        assert!(eff.cri_not_migrated.is_none());
        // A version 3 file read last: nothing migrated, the version 2 runtimes are unused.
        let eff = merge(
            &[layer("/m", v2_runc), layer("/i", v3_gpu)],
            MergeRule::KeyByKey,
        )
        .unwrap();
        assert_eq!(names(&eff), ["gpu"]);
        assert_eq!(eff.loaded_version, 3);
        assert_eq!(eff.dropin_version(), Some(3));
        assert_eq!(
            eff.cri_not_migrated.as_ref().unwrap().0.path,
            Path::new("/m")
        );
        assert!(Goal::BaseRuntimeSpec("/s").check(&eff).is_err());
        // Version 3 runtimes read first: version 2 runtimes are not copied over them.
        let eff = merge(
            &[layer("/m", v3_gpu), layer("/i", v2_runc)],
            MergeRule::KeyByKey,
        )
        .unwrap();
        assert_eq!(names(&eff), ["gpu"]);
        assert_eq!(eff.loaded_version, 2);
        assert_eq!(eff.cri_plugin(), "io.containerd.cri.v1.runtime");
        assert_eq!(
            eff.cri_not_migrated.as_ref().unwrap().0.path,
            Path::new("/i")
        );
        // No file with version 2 or more: 2.x loads it as 3 and ignores version 2 names.
        let eff = merge(
            &[layer("/m", &v2_runc.replace("version = 2\n", ""))],
            MergeRule::KeyByKey,
        )
        .unwrap();
        assert!(names(&eff).is_empty());
        assert_eq!(eff.dropin_version(), Some(3));
        // 1.x rules: unchanged.
        let eff = merge(
            &[layer("/m", v2_runc), layer("/i", v2_nri)],
            MergeRule::WholePluginSection,
        )
        .unwrap();
        assert_eq!(names(&eff), ["runc"]);
        assert_eq!(eff.dropin_version(), Some(2));
    }
}
