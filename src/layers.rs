//! A runtime's configuration as an ordered list of TOML files (a main file and its drop-ins),
//! later files winning key by key, with the file and line that set each key.
//!
//! cri-o decodes `crio.conf`, then every file under `crio.conf.d` (recursively, in lexical
//! order: Go's `filepath.Walk`, all files whatever their suffix) on top of the same struct, so a
//! key a later file sets replaces the earlier value and an array is replaced whole
//! (`pkg/config/config.go`, `UpdateFromPath` / `UpdateFromDropInFile`). podman reads
//! `containers.conf` and then `containers.conf.d/*.conf` the same way (but its `hooks_dir` is
//! an attributed list that can append: [`crate::hooks_dirs`] folds it). containerd's imports are
//! merged by [`crate::effective`], not here.
//!
//! [`Layer::parse`] and [`last_setting`] do no I/O; [`read_layers`] reads the files, bounded,
//! through [`crate::patch::read_config`].

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use toml_edit::Item;

use crate::text;

/// Most drop-in files read from one directory tree (the main file not counted); more is an
/// error, not a silent cut.
pub const MAX_DROP_INS: usize = 512;
/// Deepest sub-directory of a drop-in directory that is walked; a deeper one is an error, not
/// a silent cut.
pub const MAX_DEPTH: usize = 8;

/// One parsed file of a layered configuration.
#[derive(Debug)]
pub struct Layer {
    path: PathBuf,
    doc: toml_edit::Document<String>,
    /// The text's line starts (the line of a span by binary search).
    lines: text::Lines,
}

/// Where a key is set: the file, the 1-based line, and the value.
#[derive(Debug, Clone, Copy)]
pub struct Setting<'a> {
    /// The file that sets it.
    pub path: &'a Path,
    /// The line of its key (or of its table header when the key has no span).
    pub line: usize,
    /// Its value.
    pub item: &'a Item,
}

impl fmt::Display for Setting<'_> {
    /// `path:line`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

impl Layer {
    /// Parses `text` (the content of `path`); a parse error names the file and line.
    pub fn parse(path: impl Into<PathBuf>, text: String) -> anyhow::Result<Self> {
        let path = path.into();
        let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
        // The document keeps the only copy of the text (`Document::raw`).
        match toml_edit::Document::parse(body.to_owned()) {
            Ok(doc) => {
                let lines = text::Lines::new(doc.raw());
                Ok(Self { path, doc, lines })
            }
            Err(e) => {
                let line = e.span().map_or(1, |s| text::line_of(body, s.start));
                Err(
                    anyhow::anyhow!("{}", text::parse_error_excerpt(body, &e)).context(
                        crate::error::HelpError::new(
                            format!("`{}`:{line}: is not valid TOML", path.display()),
                            crate::patch::syntax_help(body, &e),
                        ),
                    ),
                )
            }
        }
    }

    /// Reads and parses `path` (bounded, regular files only); `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> anyhow::Result<Option<Self>> {
        match path.symlink_metadata() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => Self::parse(path, crate::patch::read_config(path)?).map(Some),
        }
    }

    /// The file this layer was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value at `key` in this file, with its line, if this file sets it.
    pub fn get(&self, key: &[&str]) -> Option<Setting<'_>> {
        let mut item = self.doc.as_item();
        let mut line = 1;
        for segment in key {
            let (k, child) = item.as_table_like()?.get_key_value(segment)?;
            if let Some(span) = k.span().or_else(|| child.span()) {
                line = self.lines.line_of(span.start);
            }
            item = child;
        }
        Some(Setting {
            path: &self.path,
            line,
            item,
        })
    }

    /// The names of the sub-tables (or inline tables) at `key` in this file.
    pub fn table_keys(&self, key: &[&str]) -> Vec<String> {
        self.get(key)
            .and_then(|s| s.item.as_table_like())
            .map(|t| t.iter().map(|(k, _)| k.to_owned()).collect())
            .unwrap_or_default()
    }
}

/// The setting of `key` in effect: the one in the last layer that sets it.
pub fn last_setting<'a>(layers: &'a [Layer], key: &[&str]) -> Option<Setting<'a>> {
    layers.iter().rev().find_map(|l| l.get(key))
}

/// The main file and the drop-in dir of the configuration `path` belongs to: `X` gives (`X`,
/// `X.d`), as cri-o's `crio.conf` / `crio.conf.d` and podman's `containers.conf` /
/// `containers.conf.d`; a file inside `X.d/` gives the same pair.
pub fn main_and_drop_in_dir(path: &Path) -> (PathBuf, PathBuf) {
    for dir in path.ancestors().skip(1) {
        if let Some(name) = dir.file_name().and_then(|n| n.to_str())
            && let Some(main) = name.strip_suffix(".d")
            && !main.is_empty()
        {
            return (dir.with_file_name(main), dir.to_owned());
        }
    }
    let mut dir = path.as_os_str().to_owned();
    dir.push(".d");
    (path.to_owned(), PathBuf::from(dir))
}

/// Which files of a drop-in directory a runtime reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropIns {
    /// Every file, sub-directories included, in lexical order (cri-o's `crio.conf.d`).
    AllFilesRecursive,
    /// Files ending in `.conf` directly in the directory, in lexical order
    /// (containers/common's `containers.conf.d`).
    ConfSuffix,
}

/// Reads `main` (when it exists) and then the drop-ins of `dir` (when it exists), in the order
/// the runtime applies them. `Ok(None)` when neither exists.
///
/// Every file is read through [`crate::patch::read_config`] (regular files only, bounded); a
/// file that does not parse is an error naming it and its line. An entry of the drop-in dir
/// (at any depth) that is a symlink is refused, whatever it points at: the runtime on the host
/// would follow it (a symlinked file is read; a symlinked sub-directory is not walked by Go's
/// `filepath.Walk` but read as a file, which fails), while from inside a pod an absolute link
/// resolves to the pod's own files, not the host's. More than [`MAX_DROP_INS`] drop-ins, or a
/// sub-directory deeper than [`MAX_DEPTH`], is an error naming the dir.
pub fn read_layers(
    main: &Path,
    dir: &Path,
    drop_ins: DropIns,
) -> anyhow::Result<Option<Vec<Layer>>> {
    let mut files = Vec::new();
    let main_exists = main.symlink_metadata().is_ok();
    if main_exists {
        files.push(main.to_owned());
    }
    let dir_exists = dir.is_dir();
    if dir_exists {
        let mut drop_in_files = Vec::new();
        collect_drop_ins(dir, drop_ins, 0, &mut drop_in_files)?;
        files.extend(drop_in_files);
    }
    if !main_exists && !dir_exists {
        return Ok(None);
    }
    let layers = files
        .into_iter()
        .map(|path| {
            let text = crate::patch::read_config(&path)?;
            Layer::parse(path, text)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(layers))
}

fn collect_drop_ins(
    dir: &Path,
    drop_ins: DropIns,
    depth: usize,
    files: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    // Bounded while listing, not after: a directory of a million entries is refused early.
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("failed to read directory `{}`", dir.display()))?
    {
        let entry =
            entry.with_context(|| format!("failed to read directory `{}`", dir.display()))?;
        if entries.len() >= 4 * MAX_DROP_INS {
            anyhow::bail!(
                "`{}` holds more than {} entries; refusing to read them all",
                dir.display(),
                4 * MAX_DROP_INS
            );
        }
        entries.push(entry.path());
    }
    entries.sort();
    for path in entries {
        let meta = path
            .symlink_metadata()
            .with_context(|| format!("failed to stat `{}`", path.display()))?;
        if meta.is_dir() {
            if drop_ins == DropIns::AllFilesRecursive {
                if depth >= MAX_DEPTH {
                    return Err(crate::error::help_error(
                        format!(
                            "`{}` is nested more than {MAX_DEPTH} directories deep in the \
                             drop-in dir; refusing to read it",
                            path.display()
                        ),
                        "flatten the drop-in dir (the runtime reads every file below it, in \
                         lexical order of the paths)",
                    ));
                }
                collect_drop_ins(&path, drop_ins, depth + 1, files)?;
            }
            continue;
        }
        if drop_ins == DropIns::ConfSuffix && path.extension().is_none_or(|e| e != "conf") {
            continue;
        }
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)
                .map(|t| format!(" (-> `{}`)", t.display()))
                .unwrap_or_default();
            return Err(crate::error::help_error(
                format!(
                    "drop-in `{}` is a symlink{target}: from inside this pod it does not resolve \
                     to the host's file the runtime reads",
                    path.display()
                ),
                format!(
                    "replace the symlink `{}` by a copy of the file it points at (or remove it), \
                     then run again",
                    path.display()
                ),
            ));
        }
        if files.len() >= MAX_DROP_INS {
            anyhow::bail!(
                "`{}` holds more than {MAX_DROP_INS} drop-in files; refusing to read them all",
                dir.display()
            );
        }
        files.push(path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, text: &str) -> Layer {
        Layer::parse(name, text.to_owned()).unwrap()
    }

    #[test]
    fn last_setting_takes_the_later_file_and_its_line() {
        let layers = [
            layer("a.conf", "[crio.runtime]\nhooks_dir = [\"/a\"]\n"),
            layer("b.conf", "[crio.api]\nx = 1\n"),
            layer("c.conf", "# c\n\n[crio.runtime]\nhooks_dir = [\"/c\"]\n"),
        ];
        let s = last_setting(&layers, &["crio", "runtime", "hooks_dir"]).unwrap();
        assert_eq!(s.to_string(), "c.conf:4");
        assert!(last_setting(&layers[..2], &["crio", "runtime", "x"]).is_none());
    }

    #[test]
    fn drop_in_dir_is_found_from_either_side() {
        let pair = |a: &str, b: &str| (PathBuf::from(a), PathBuf::from(b));
        assert_eq!(
            main_and_drop_in_dir(Path::new("/etc/crio/crio.conf")),
            pair("/etc/crio/crio.conf", "/etc/crio/crio.conf.d")
        );
        assert_eq!(
            main_and_drop_in_dir(Path::new("/etc/crio/crio.conf.d/10-crio.conf")),
            pair("/etc/crio/crio.conf", "/etc/crio/crio.conf.d")
        );
    }

    #[test]
    fn drop_in_dir_with_too_many_files_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("crio.conf.d");
        std::fs::create_dir(&dir).unwrap();
        for i in 0..=MAX_DROP_INS {
            std::fs::write(dir.join(format!("{i:04}.conf")), "").unwrap();
        }
        let main = tmp.path().join("crio.conf");
        let err = read_layers(&main, &dir, DropIns::AllFilesRecursive).unwrap_err();
        assert!(
            format!("{err}").contains("more than 512 drop-in files"),
            "{err}"
        );
        std::fs::remove_file(dir.join("0000.conf")).unwrap();
        assert_eq!(
            read_layers(&main, &dir, DropIns::AllFilesRecursive)
                .unwrap()
                .unwrap()
                .len(),
            MAX_DROP_INS
        );
    }

    #[test]
    fn main_file_does_not_count_as_a_drop_in() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("crio.conf.d");
        std::fs::create_dir(&dir).unwrap();
        for i in 0..MAX_DROP_INS {
            std::fs::write(dir.join(format!("{i:04}.conf")), "").unwrap();
        }
        let main = tmp.path().join("crio.conf");
        std::fs::write(&main, "").unwrap();
        let layers = read_layers(&main, &dir, DropIns::AllFilesRecursive)
            .unwrap()
            .unwrap();
        assert_eq!(layers.len(), MAX_DROP_INS + 1);
    }

    #[test]
    fn sub_directory_past_max_depth_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("crio.conf.d");
        let mut deep = dir.clone();
        for i in 0..=MAX_DEPTH {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("x.conf"), "").unwrap();
        let main = tmp.path().join("crio.conf");
        let err = read_layers(&main, &dir, DropIns::AllFilesRecursive).unwrap_err();
        let shown = format!("{err:#}");
        assert!(
            shown.contains(&format!("`{}` is nested more than 8", deep.display())),
            "{shown}"
        );
        // One level less is read.
        std::fs::rename(deep.join("x.conf"), deep.with_file_name("x.conf")).unwrap();
        std::fs::remove_dir(&deep).unwrap();
        assert_eq!(
            read_layers(&main, &dir, DropIns::AllFilesRecursive)
                .unwrap()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn symlinked_drop_in_is_refused_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("crio.conf.d");
        std::fs::create_dir(&dir).unwrap();
        let real = tmp.path().join("real.conf");
        std::fs::write(&real, "[crio.runtime]\n").unwrap();
        std::fs::write(dir.join("00.conf"), "").unwrap();
        let link = dir.join("10-link.conf");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let main = tmp.path().join("crio.conf");
        for mode in [DropIns::AllFilesRecursive, DropIns::ConfSuffix] {
            let err = read_layers(&main, &dir, mode).unwrap_err();
            assert!(
                format!("{err}").starts_with(&format!("drop-in `{}` is a symlink", link.display())),
                "{err}"
            );
            assert!(
                crate::error::help_of(&err).is_some_and(|h| h.contains("10-link.conf")),
                "{err:?}"
            );
        }
        // A symlinked sub-directory is refused too (it is not walked as a directory).
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(tmp.path(), dir.join("20-dir")).unwrap();
        let err = read_layers(&main, &dir, DropIns::AllFilesRecursive).unwrap_err();
        assert!(format!("{err}").contains("20-dir` is a symlink"), "{err}");
    }

    #[test]
    fn parse_error_names_the_file_and_line() {
        let err = Layer::parse("bad.conf", "[crio]\nx = \n".to_owned()).unwrap_err();
        assert!(
            format!("{err:#}").starts_with("`bad.conf`:2: is not valid TOML"),
            "{err:#}"
        );
    }

    #[test]
    fn lines_agree_with_counting_newlines_from_the_start() {
        let text = "a = 1\n\n[t]\nb = 2\nc = 3\n";
        let lines = text::Lines::new(text);
        for offset in 0..=text.len() + 2 {
            assert_eq!(
                lines.line_of(offset),
                text::line_of(text, offset),
                "offset {offset}"
            );
        }
    }
}
