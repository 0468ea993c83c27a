//! A plan of file changes: built in memory, shown as a unified diff, then applied atomically.
//!
//! Nothing here decides *what* to change; [`crate::patch`] and the commands do. A [`Plan`] only
//! holds the before and after of each file, renders the diff a user reviews, and writes each
//! file the safe way: a temporary file in the target's own directory, the old mode and owner,
//! `fsync`, then `rename` over the target, so that a reader sees either the old file or the new
//! one and never half of it. A symlinked target is written at the file it points to, keeping the
//! link.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Where a file write goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This path (created or replaced).
    Path(PathBuf),
    /// A new temporary file in `dir` whose name starts with `prefix` and ends with `suffix`,
    /// kept after the process exits (upstream's behaviour when no output is named).
    NewTempFile {
        /// The directory to create it in.
        dir: PathBuf,
        /// Start of the file name.
        prefix: String,
        /// End of the file name.
        suffix: String,
    },
}

/// One file to write.
#[derive(Debug, Clone)]
pub struct FileWrite {
    /// Name shown on the diff's `---` line (the file read).
    pub label_before: String,
    /// Name shown on the diff's `+++` line (the file written).
    pub label_after: String,
    /// Where to write.
    pub target: Target,
    /// The content now (what the diff starts from).
    pub before: String,
    /// The content to write.
    pub after: String,
    /// A file whose mode and owner a new file should copy (the config it was made from).
    pub template: Option<PathBuf>,
}

impl FileWrite {
    /// Whether writing would change anything.
    pub fn changes(&self) -> bool {
        self.before != self.after
    }
}

/// One step of a plan.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write a text file.
    Write(FileWrite),
}

/// What applying a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The file at this path was written.
    Wrote(PathBuf),
}

/// An ordered list of file changes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The steps, in the order they are applied.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Whether applying the plan would change nothing.
    pub fn is_noop(&self) -> bool {
        self.steps.iter().all(|s| match s {
            Step::Write(w) => !w.changes(),
        })
    }

    /// The unified diff of every step that changes something (`--- a/PATH`, `+++ b/PATH`).
    pub fn diff(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            match step {
                Step::Write(w) if w.changes() => out.push_str(&unified_diff(
                    &w.before,
                    &w.after,
                    &w.label_before,
                    &w.label_after,
                )),
                Step::Write(_) => {}
            }
        }
        out
    }

    /// Applies every step that changes something, in order, stopping at the first error.
    pub fn apply(&self) -> anyhow::Result<Vec<Applied>> {
        let mut done = Vec::new();
        for step in &self.steps {
            match step {
                Step::Write(w) if w.changes() => {
                    let path = match &w.target {
                        Target::Path(p) => {
                            write_atomic(p, w.after.as_bytes(), w.template.as_deref())?
                        }
                        Target::NewTempFile {
                            dir,
                            prefix,
                            suffix,
                        } => write_new_temp(
                            dir,
                            prefix,
                            suffix,
                            w.after.as_bytes(),
                            w.template.as_deref(),
                        )?,
                    };
                    done.push(Applied::Wrote(path));
                }
                Step::Write(_) => {}
            }
        }
        Ok(done)
    }
}

/// A path as shown after `a/` or `b/` in a diff header (without a leading `/`, as git does).
pub fn diff_label(path: &Path) -> String {
    let s = path.display().to_string();
    s.trim_start_matches('/').to_owned()
}

/// A unified diff with three lines of context and `a/`/`b/` headers; empty when equal.
pub fn unified_diff(before: &str, after: &str, label_before: &str, label_after: &str) -> String {
    if before == after {
        return String::new();
    }
    let diff = similar::TextDiff::from_lines(before, after);
    let mut out = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{label_before}"), &format!("b/{label_after}"))
        .missing_newline_hint(true)
        .to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Follows symlinks so that a linked config is edited where it lives, not replaced by a file.
fn resolve_target(path: &Path) -> anyhow::Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(path).with_context(|| {
            format!(
                "`{}` is a symlink whose target cannot be resolved",
                path.display()
            )
        }),
        Ok(meta) if meta.is_dir() => bail!(
            "`{}` is a directory, expected a file path to write",
            path.display()
        ),
        _ => Ok(path.to_owned()),
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Writes `contents` to `path` atomically and returns the path written (the symlink target when
/// `path` is a link).
///
/// The mode and owner come from the file being replaced, else from `template`, else the mode is
/// 0644. The owner is only kept where the process may set it (as root); elsewhere the new file
/// belongs to the caller, as any file it writes.
pub fn write_atomic(
    path: &Path,
    contents: &[u8],
    template: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let target = resolve_target(path)?;
    let dir = parent_dir(&target);
    let meta = fs::metadata(&target)
        .ok()
        .or_else(|| template.and_then(|t| fs::metadata(t).ok()));
    let mut tmp = temp_in(&dir, &target)?;
    fill(tmp.as_file_mut(), contents, meta.as_ref(), &target)?;
    tmp.persist(&target).map_err(|e| {
        anyhow::Error::new(e.error).context(format!("failed to replace `{}`", target.display()))
    })?;
    sync_dir(&dir);
    Ok(target)
}

fn write_new_temp(
    dir: &Path,
    prefix: &str,
    suffix: &str,
    contents: &[u8],
    template: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let mut tmp = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(suffix)
        .tempfile_in(dir)
        .with_context(|| format!("failed to create a file in `{}`", dir.display()))?;
    let meta = template.and_then(|t| fs::metadata(t).ok());
    let path = tmp.path().to_owned();
    fill(tmp.as_file_mut(), contents, meta.as_ref(), &path)?;
    let (_, path) = tmp
        .keep()
        .with_context(|| format!("failed to keep `{}`", path.display()))?;
    sync_dir(dir);
    Ok(path)
}

fn temp_in(dir: &Path, target: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    if !dir.is_dir() {
        bail!(
            "cannot write `{}`: directory `{}` does not exist\nhelp: create it first, or choose \
             another output path",
            target.display(),
            dir.display()
        );
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "cannot write `{}`: failed to create a temporary file in `{}`",
                target.display(),
                dir.display()
            )
        })
}

fn fill(
    file: &mut File,
    contents: &[u8],
    meta: Option<&fs::Metadata>,
    target: &Path,
) -> anyhow::Result<()> {
    let ctx = || format!("failed to write `{}`", target.display());
    file.write_all(contents).with_context(ctx)?;
    let mode = meta.map_or(0o644, |m| m.permissions().mode() & 0o7777);
    file.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(ctx)?;
    if let Some(m) = meta {
        let own = file.metadata().with_context(ctx)?;
        if own.uid() != m.uid() || own.gid() != m.gid() {
            // Only root may give a file away; for anyone else the new file is simply theirs.
            match std::os::unix::fs::fchown(&*file, Some(m.uid()), Some(m.gid())) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
                Err(e) => return Err(e).with_context(ctx),
            }
        }
    }
    file.sync_all().with_context(ctx)
}

/// Makes the rename durable. Best effort: some file systems refuse to fsync a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_keeps_mode_and_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        fs::write(&real, "a = 1\n").unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let wrote = write_atomic(&link, b"a = 2\n", None).unwrap();
        assert_eq!(wrote, fs::canonicalize(&real).unwrap());
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&real).unwrap(), "a = 2\n");
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 2, "no temporary file may be left behind");
    }

    #[test]
    fn write_atomic_new_file_copies_template_mode() {
        let dir = tempfile::tempdir().unwrap();
        let template = dir.path().join("in.toml");
        fs::write(&template, "").unwrap();
        fs::set_permissions(&template, fs::Permissions::from_mode(0o640)).unwrap();
        let out = dir.path().join("out.toml");
        write_atomic(&out, b"x", Some(&template)).unwrap();
        assert_eq!(
            fs::metadata(&out).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn write_atomic_reports_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nope/out.toml");
        let err = write_atomic(&out, b"x", None).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    }

    #[test]
    fn unified_diff_has_git_style_headers() {
        let d = unified_diff("a\nb\n", "a\nc\n", "etc/x", "etc/x");
        insta::assert_snapshot!(d, @r"
        --- a/etc/x
        +++ b/etc/x
        @@ -1,2 +1,2 @@
         a
        -b
        +c
        ");
    }
}
