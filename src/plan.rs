//! A plan of file changes: built in memory, shown as a unified diff, then applied atomically.
//!
//! Nothing here decides *what* to change; [`crate::patch`] and the commands do. A [`Plan`] only
//! holds the before and after of each file, renders the diff a user reviews, and writes each
//! file the safe way: a temporary file in the target's own directory, the old mode and owner,
//! `fsync`, then `rename` over the target, so that a reader sees either the old file or the new
//! one and never half of it. A symlinked target is written at the file it points to, keeping the
//! link.
//!
//! Besides text edits a plan installs files byte for byte with a fixed mode ([`FileInstall`]: a
//! binary, a generated hook file), skipping the write when the file already holds those bytes,
//! and removes files ([`FileRemove`]), optionally only when they still hold what we wrote. If a
//! step fails, the install and remove steps already applied are undone, so a failed run leaves
//! the files as they were.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use std::os::fd::AsFd;
use std::time::Duration;

mod safe_write;
pub use safe_write::{EditLock, LOCK_WAIT, MAX_CONFIG_BYTES, lock_edit};
pub(crate) use safe_write::{open_regular, read_bounded};

/// Where a file write goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This path (created or replaced). A symlink there is followed (the file is edited where
    /// it lives), and the file must still hold the step's `before` just before it is replaced.
    Path(PathBuf),
    /// Exactly this path, never followed: a symlink, directory, device, FIFO or socket there is
    /// an error, and one planted after the check is replaced, not written through.
    Exact(PathBuf),
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

/// A file put in place byte for byte, with a fixed mode (a binary, a generated file).
///
/// Unlike [`FileWrite`] the destination is not followed when it is a symlink: the link itself
/// is replaced, since an installed file must be exactly where the caller said.
#[derive(Debug, Clone)]
pub struct FileInstall {
    /// Where the bytes come from, shown in the summary (`None` for generated content).
    pub source: Option<PathBuf>,
    /// Where to write.
    pub path: PathBuf,
    /// What the destination holds now (`None` when it does not exist).
    pub before: Option<Vec<u8>>,
    /// The permission bits of the destination now.
    pub before_mode: Option<u32>,
    /// The bytes to write.
    pub contents: Vec<u8>,
    /// The permission bits the destination gets.
    pub mode: u32,
    /// Show a unified diff of the change (text files) rather than a one-line summary.
    pub text: bool,
}

impl FileInstall {
    /// Describes installing `contents` at `path` with `mode`, reading what `path` holds now.
    pub fn new(
        source: Option<PathBuf>,
        path: PathBuf,
        contents: Vec<u8>,
        mode: u32,
        text: bool,
    ) -> anyhow::Result<Self> {
        let (before, before_mode) = read_current(&path)?;
        Ok(Self {
            source,
            path,
            before,
            before_mode,
            contents,
            mode,
            text,
        })
    }

    /// Whether installing would change anything (content or mode).
    pub fn changes(&self) -> bool {
        self.before.as_deref() != Some(self.contents.as_slice())
            || self.before_mode != Some(self.mode)
    }
}

/// A file to remove.
#[derive(Debug, Clone)]
pub struct FileRemove {
    /// The file.
    pub path: PathBuf,
    /// What it holds now (`None` when it does not exist).
    pub before: Option<Vec<u8>>,
    /// Remove it only while it holds exactly these bytes (what this tool wrote); `None` removes
    /// it whatever it holds.
    pub only_if: Option<Vec<u8>>,
    /// Show a unified diff of the removal (text files) rather than a one-line summary.
    pub text: bool,
}

impl FileRemove {
    /// Describes removing `path`, reading what it holds now.
    pub fn new(path: PathBuf, only_if: Option<Vec<u8>>, text: bool) -> anyhow::Result<Self> {
        let (before, _) = read_current(&path)?;
        Ok(Self {
            path,
            before,
            only_if,
            text,
        })
    }

    /// Whether removing would change anything (the file exists and may be removed).
    pub fn changes(&self) -> bool {
        match (&self.before, &self.only_if) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(now), Some(ours)) => now == ours,
        }
    }
}

/// One step of a plan.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write a text file.
    Write(FileWrite),
    /// Put a file in place byte for byte with a fixed mode.
    Install(FileInstall),
    /// Remove a file.
    Remove(FileRemove),
}

impl Step {
    /// Whether applying this step would change anything.
    pub fn changes(&self) -> bool {
        match self {
            Step::Write(w) => w.changes(),
            Step::Install(i) => i.changes(),
            Step::Remove(r) => r.changes(),
        }
    }
}

/// What applying a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The file at this path was written.
    Wrote(PathBuf),
    /// The file at this path already held the content and mode: nothing written.
    Unchanged(PathBuf),
    /// The file at this path was removed.
    Removed(PathBuf),
    /// The file to remove did not exist.
    Absent(PathBuf),
    /// The file to remove no longer holds what was written, so it was left in place.
    Kept(PathBuf),
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
        self.steps.iter().all(|s| !s.changes())
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
                Step::Install(i) if i.text && i.changes() => {
                    let label = diff_label(&i.path);
                    out.push_str(&unified_diff(
                        &String::from_utf8_lossy(i.before.as_deref().unwrap_or_default()),
                        &String::from_utf8_lossy(&i.contents),
                        &label,
                        &label,
                    ));
                }
                Step::Remove(r) if r.text && r.changes() => {
                    let label = diff_label(&r.path);
                    out.push_str(&unified_diff(
                        &String::from_utf8_lossy(r.before.as_deref().unwrap_or_default()),
                        "",
                        &label,
                        &label,
                    ));
                }
                Step::Write(_) | Step::Install(_) | Step::Remove(_) => {}
            }
        }
        out
    }

    /// One line per install or remove step saying what applying it would do (for binaries the
    /// source, destination, sha256 and whether the copy is skipped); text steps that change
    /// nothing are included, since their diff is empty.
    pub fn summary(&self) -> Vec<String> {
        let mut out = Vec::new();
        for step in &self.steps {
            match step {
                Step::Write(_) => {}
                Step::Install(i) => out.push(install_summary(i)),
                Step::Remove(r) => out.push(remove_summary(r)),
            }
        }
        out
    }

    /// Applies every step that changes something, in order, stopping at the first error.
    ///
    /// On an error, the install and remove steps already applied are undone (best effort, in
    /// reverse order) before the error is returned; text writes are not undone.
    pub fn apply(&self) -> anyhow::Result<Vec<Applied>> {
        let mut done = Vec::new();
        let mut undo = Vec::new();
        match self.apply_steps(&mut done, &mut undo) {
            Ok(()) => Ok(done),
            Err(err) => {
                let mut err = err;
                for u in undo.iter().rev() {
                    if let Err(e) = u.run() {
                        err = err.context(format!(
                            "and undoing the change to `{}` failed too: {e:#}",
                            u.path.display()
                        ));
                    }
                }
                Err(err)
            }
        }
    }

    fn apply_steps(&self, done: &mut Vec<Applied>, undo: &mut Vec<Undo>) -> anyhow::Result<()> {
        for step in &self.steps {
            match step {
                Step::Write(w) if w.changes() => {
                    let path = match &w.target {
                        Target::Path(p) => write_in_place(
                            p,
                            Some(w.before.as_bytes()),
                            w.after.as_bytes(),
                            w.template.as_deref(),
                        )?,
                        Target::Exact(p) => {
                            write_exact(p, w.after.as_bytes(), w.template.as_deref())?
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
                Step::Install(i) => {
                    if !i.changes() {
                        done.push(Applied::Unchanged(i.path.clone()));
                        continue;
                    }
                    install_bytes(&i.path, &i.contents, i.mode)?;
                    undo.push(Undo {
                        path: i.path.clone(),
                        restore: i.before.clone().zip(i.before_mode),
                    });
                    done.push(Applied::Wrote(i.path.clone()));
                }
                Step::Remove(r) => {
                    // Read again: the file may have changed since the plan was made (a
                    // daemonized install waits a long time before it removes).
                    let (now, mode) = read_current(&r.path)?;
                    let Some(now) = now else {
                        done.push(Applied::Absent(r.path.clone()));
                        continue;
                    };
                    if r.only_if.as_ref().is_some_and(|ours| *ours != now) {
                        done.push(Applied::Kept(r.path.clone()));
                        continue;
                    }
                    fs::remove_file(&r.path)
                        .with_context(|| format!("failed to remove `{}`", r.path.display()))?;
                    sync_dir(&parent_dir(&r.path));
                    undo.push(Undo {
                        path: r.path.clone(),
                        restore: Some(now).zip(mode),
                    });
                    done.push(Applied::Removed(r.path.clone()));
                }
            }
        }
        Ok(())
    }
}

/// How to put a file back as it was before a step.
struct Undo {
    path: PathBuf,
    /// The old content and mode; `None`: the file did not exist.
    restore: Option<(Vec<u8>, u32)>,
}

impl Undo {
    fn run(&self) -> anyhow::Result<()> {
        match &self.restore {
            Some((bytes, mode)) => install_bytes(&self.path, bytes, *mode),
            None => match fs::remove_file(&self.path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => {
                    Err(e).with_context(|| format!("failed to remove `{}`", self.path.display()))
                }
            },
        }
    }
}

/// The content and permission bits of `path`, `None` when it does not exist.
fn read_current(path: &Path) -> anyhow::Result<(Option<Vec<u8>>, Option<u32>)> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, None)),
        Err(e) => Err(e).with_context(|| format!("failed to read `{}`", path.display())),
        Ok(meta) if meta.is_dir() => bail!(
            "`{}` is a directory, expected a file path to write",
            path.display()
        ),
        Ok(meta) => {
            let bytes =
                fs::read(path).with_context(|| format!("failed to read `{}`", path.display()))?;
            let mode = if meta.file_type().is_symlink() {
                // A link is replaced by a file: report a mode that never matches.
                None
            } else {
                Some(meta.permissions().mode() & 0o7777)
            };
            Ok((Some(bytes), mode))
        }
    }
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    use std::fmt::Write as _;
    let digest = sha2::Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn install_summary(i: &FileInstall) -> String {
    let Some(src) = &i.source else {
        return match (&i.before, i.changes()) {
            (Some(_), false) => format!("`{}` unchanged", i.path.display()),
            (Some(_), true) => format!(
                "replace `{}` ({} bytes, mode {:04o})",
                i.path.display(),
                i.contents.len(),
                i.mode
            ),
            (None, _) => format!(
                "write `{}` ({} bytes, mode {:04o})",
                i.path.display(),
                i.contents.len(),
                i.mode
            ),
        };
    };
    let what = format!("`{}`", src.display());
    let new = format!(
        "sha256 {}, {} bytes, mode {:04o}",
        sha256_hex(&i.contents),
        i.contents.len(),
        i.mode
    );
    match (&i.before, i.changes()) {
        (Some(_), false) => format!(
            "`{}` already holds {what} ({new}): copy skipped",
            i.path.display()
        ),
        (Some(old), true) if *old == i.contents => format!(
            "`{}` already holds {what}: set its mode from {:04o} to {:04o}",
            i.path.display(),
            i.before_mode.unwrap_or(0),
            i.mode
        ),
        (Some(old), true) => format!(
            "copy {what} to `{}` ({new}), replacing sha256 {}",
            i.path.display(),
            sha256_hex(old)
        ),
        (None, _) => format!("copy {what} to `{}` ({new})", i.path.display()),
    }
}

fn remove_summary(r: &FileRemove) -> String {
    match (&r.before, r.changes()) {
        (None, _) => format!("`{}` does not exist: nothing to remove", r.path.display()),
        (Some(_), true) => format!("remove `{}`", r.path.display()),
        (Some(_), false) => format!(
            "`{}` no longer holds what was installed: left in place",
            r.path.display()
        ),
    }
}

/// Puts `contents` at `path` with permission bits `mode`: an unnamed temporary file in the
/// same directory, `fchmod`, `fsync`, then `rename` over `path` (a symlink there is replaced,
/// not followed). A process running the old file keeps its inode, so replacing a running binary
/// never fails with "text file busy". Temporary files of ours for `path` at least a minute old
/// (left by a killed run) are removed first.
pub fn install_bytes(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    ensure_dir(&dir, path)?;
    let name = file_name_of(path)?;
    let dir_fd = safe_write::open_dir(&dir, path)?;
    safe_write::remove_stale(&dir, dir_fd.as_fd(), name, Duration::from_secs(60));
    safe_write::put(
        &dir,
        dir_fd.as_fd(),
        name,
        path,
        contents,
        safe_write::Perms { mode, owner: None },
        || Ok(()),
    )
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
        _ => Ok(path.to_owned()),
    }
}

/// Refuses a path that cannot be written as a file without following or clobbering something:
/// a symlink, a directory, a device, FIFO or socket, or a path whose directory does not exist.
/// The path itself is looked at with `lstat`, never followed. Cheap enough to run before
/// anything is shown, so that a doomed write is refused before its diff is printed.
pub fn check_target(path: &Path) -> anyhow::Result<()> {
    use rustix::fs::FileType;
    match safe_write::lstat(path)? {
        None => {}
        Some(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => bail!(
                "`{}` is a directory, expected a file path to write\nhelp: name the file, e.g. \
                 `{}`",
                path.display(),
                path.join("config.toml").display()
            ),
            FileType::Symlink => {
                let to = fs::read_link(path)
                    .map(|t| format!(" (to `{}`)", t.display()))
                    .unwrap_or_default();
                bail!(
                    "`{}` is a symlink{to}; an output path is never followed\nhelp: remove the \
                     link, or name a regular file (only `--in-place` edits a symlinked config \
                     where it lives)",
                    path.display()
                )
            }
            kind => bail!(
                "`{}` is {}, not a file to write\nhelp: name a regular file (or a new one) as \
                 the output",
                path.display(),
                safe_write::describe_kind(kind)
            ),
        },
    }
    ensure_dir(&parent_dir(path), path)
}

fn ensure_dir(dir: &Path, target: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!(
            "cannot write `{}`: directory `{}` does not exist\nhelp: create it first, or choose \
             another output path",
            target.display(),
            dir.display()
        );
    }
    Ok(())
}

fn file_name_of(path: &Path) -> anyhow::Result<&std::ffi::OsStr> {
    path.file_name().ok_or_else(|| {
        anyhow::anyhow!(
            "cannot write `{}`: it names no file\nhelp: name the file, e.g. `{}`",
            path.display(),
            path.join("config.toml").display()
        )
    })
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
    write_in_place(path, None, contents, template)
}

/// As [`write_atomic`], and when `expect` is given, the file is checked to still hold exactly
/// those bytes (or, for empty `expect`, not to exist) just before the rename; if it does not,
/// nothing is written: someone else changed it while it was being edited.
pub fn write_in_place(
    path: &Path,
    expect: Option<&[u8]>,
    contents: &[u8],
    template: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let target = resolve_target(path)?;
    check_target(&target)?;
    let dir = parent_dir(&target);
    let name = file_name_of(&target)?;
    let dir_fd = safe_write::open_dir(&dir, &target)?;
    safe_write::remove_stale(&dir, dir_fd.as_fd(), name, Duration::ZERO);
    let perms = perms_for(dir_fd.as_fd(), name, template);
    safe_write::put(
        &dir,
        dir_fd.as_fd(),
        name,
        &target,
        contents,
        perms,
        || match expect {
            Some(bytes) => check_unchanged(dir_fd.as_fd(), name, &target, bytes),
            None => Ok(()),
        },
    )?;
    Ok(target)
}

/// Writes `contents` at exactly `path`, never following it: the rename replaces the directory
/// entry, so a symlink, device, FIFO or socket there is replaced, never written through or
/// into. (The plan refuses such a path up front with [`check_target`]; one planted after that
/// check is simply replaced.)
pub fn write_exact(
    path: &Path,
    contents: &[u8],
    template: Option<&Path>,
) -> anyhow::Result<PathBuf> {
    let dir = parent_dir(path);
    ensure_dir(&dir, path)?;
    let name = file_name_of(path)?;
    let dir_fd = safe_write::open_dir(&dir, path)?;
    safe_write::remove_stale(&dir, dir_fd.as_fd(), name, Duration::ZERO);
    let perms = perms_for(dir_fd.as_fd(), name, template);
    safe_write::put(&dir, dir_fd.as_fd(), name, path, contents, perms, || Ok(()))?;
    Ok(path.to_owned())
}

/// The mode and owner of the regular file `name` in `dir_fd`, else of `template`, else 0644.
fn perms_for(
    dir_fd: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    template: Option<&Path>,
) -> safe_write::Perms {
    use rustix::fs::{AtFlags, FileType};
    if let Ok(st) = rustix::fs::statat(dir_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
            return safe_write::Perms::of_stat(&st);
        }
    }
    match template.and_then(|t| fs::metadata(t).ok()) {
        Some(m) => safe_write::Perms {
            mode: m.permissions().mode() & 0o7777,
            owner: Some((m.uid(), m.gid())),
        },
        None => safe_write::Perms {
            mode: 0o644,
            owner: None,
        },
    }
}

/// Checks that `name` in `dir_fd` still holds `expect` (absent when `expect` is empty).
fn check_unchanged(
    dir_fd: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    target: &Path,
    expect: &[u8],
) -> anyhow::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let changed = || {
        anyhow::anyhow!(
            "`{}` changed while we were editing it; nothing written\nhelp: run again (another \
             program wrote the file meanwhile)",
            target.display()
        )
    };
    let fd = match rustix::fs::openat(
        dir_fd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) if expect.is_empty() => return Ok(()),
        Err(_) => return Err(changed()),
    };
    let st = rustix::fs::fstat(&fd)
        .map_err(std::io::Error::from)
        .with_context(|| format!("failed to read `{}`", target.display()))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
        || u64::try_from(st.st_size).ok() != Some(expect.len() as u64)
    {
        return Err(changed());
    }
    let mut file = File::from(fd);
    let now =
        safe_write::read_bounded(&mut file, target, expect.len() as u64).map_err(|_| changed())?;
    if now != expect {
        return Err(changed());
    }
    Ok(())
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

fn fill(
    file: &mut File,
    contents: &[u8],
    meta: Option<&fs::Metadata>,
    target: &Path,
) -> anyhow::Result<()> {
    let ctx = || format!("failed to write `{}`", target.display());
    file.write_all(contents).with_context(ctx)?;
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
    // After the chown, which clears set-id bits.
    let mode = meta.map_or(0o644, |m| m.permissions().mode() & 0o7777);
    file.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(ctx)?;
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

    fn install(path: &Path, contents: &[u8], mode: u32) -> Step {
        Step::Install(
            FileInstall::new(None, path.to_owned(), contents.to_vec(), mode, false).unwrap(),
        )
    }

    #[test]
    fn install_sets_mode_and_skips_identical_content() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let plan = Plan {
            steps: vec![install(&bin, b"elf", 0o755)],
        };
        assert!(!plan.is_noop());
        assert_eq!(plan.apply().unwrap(), [Applied::Wrote(bin.clone())]);
        assert_eq!(
            fs::metadata(&bin).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        let inode = fs::metadata(&bin).unwrap().ino();
        let again = Plan {
            steps: vec![install(&bin, b"elf", 0o755)],
        };
        assert!(again.is_noop());
        assert_eq!(again.apply().unwrap(), [Applied::Unchanged(bin.clone())]);
        assert_eq!(fs::metadata(&bin).unwrap().ino(), inode);
    }

    #[test]
    fn failed_step_undoes_earlier_installs_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join("fresh");
        let replaced = dir.path().join("replaced");
        let removed = dir.path().join("removed");
        fs::write(&replaced, "old").unwrap();
        fs::set_permissions(&replaced, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&removed, "keep me").unwrap();
        let plan = Plan {
            steps: vec![
                install(&fresh, b"new", 0o755),
                install(&replaced, b"new", 0o644),
                Step::Remove(FileRemove::new(removed.clone(), None, false).unwrap()),
                // Its directory does not exist: this step fails.
                install(&dir.path().join("missing/x"), b"x", 0o644),
            ],
        };
        let err = plan.apply().unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
        assert!(!fresh.exists());
        assert_eq!(fs::read_to_string(&replaced).unwrap(), "old");
        assert_eq!(
            fs::metadata(&replaced).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert_eq!(fs::read_to_string(&removed).unwrap(), "keep me");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["removed", "replaced"],
            "no temporary file may be left behind"
        );
    }

    #[test]
    fn remove_only_if_checks_content_at_apply_time() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("ours");
        let theirs = dir.path().join("theirs");
        let gone = dir.path().join("gone");
        fs::write(&ours, "ours").unwrap();
        fs::write(&theirs, "ours").unwrap();
        let plan = Plan {
            steps: vec![
                Step::Remove(FileRemove::new(ours.clone(), Some(b"ours".to_vec()), false).unwrap()),
                Step::Remove(
                    FileRemove::new(theirs.clone(), Some(b"ours".to_vec()), false).unwrap(),
                ),
                Step::Remove(FileRemove::new(gone.clone(), None, false).unwrap()),
            ],
        };
        // Changed after the plan was made: must be kept.
        fs::write(&theirs, "changed").unwrap();
        assert_eq!(
            plan.apply().unwrap(),
            [
                Applied::Removed(ours.clone()),
                Applied::Kept(theirs.clone()),
                Applied::Absent(gone)
            ]
        );
        assert!(!ours.exists());
        assert_eq!(fs::read_to_string(&theirs).unwrap(), "changed");
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
