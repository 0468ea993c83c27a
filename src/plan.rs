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
//! and removes files ([`FileRemove`]), optionally only when they still hold what we wrote. What
//! such a destination holds now is read by [`read_current`] without following a symlink or
//! opening anything but a regular file, up to a bound. If a
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

/// Largest text file (a hook file) read back from an install or hooks dir.
pub const MAX_TEXT_FILE: u64 = 1 << 20;
/// Largest binary read back from an install dir (or copied into one).
pub const MAX_BINARY_FILE: u64 = 128 << 20;

/// What a path holds now, found without following a symlink there and without opening anything
/// but a regular file (never a FIFO or a device), read up to a bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    /// Nothing is there.
    Absent,
    /// A regular file, read whole.
    File {
        /// Its content.
        bytes: Vec<u8>,
        /// Its permission bits.
        mode: u32,
    },
    /// A regular file over the read bound: not read.
    Large {
        /// Its size in bytes.
        size: u64,
    },
    /// A symlink, never followed: only the link is shown, replaced or removed.
    Symlink {
        /// What the link says (`readlink`), not what stands behind it.
        target: PathBuf,
    },
    /// A FIFO, socket or device: never opened.
    Special {
        /// What it is, e.g. `a FIFO`.
        kind: &'static str,
    },
}

impl Current {
    /// The content of a regular file that was read.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Current::File { bytes, .. } => Some(bytes),
            _ => None,
        }
    }
}

/// A file put in place byte for byte, with a fixed mode (a binary, a generated file).
///
/// Unlike [`FileWrite`] the destination is not followed when it is a symlink: the link itself
/// is replaced, since an installed file must be exactly where the caller said, and what the
/// link points to is never read or shown.
#[derive(Debug, Clone)]
pub struct FileInstall {
    /// Where the bytes come from, shown in the summary (`None` for generated content).
    pub source: Option<PathBuf>,
    /// Where to write.
    pub path: PathBuf,
    /// What the destination holds now: absent, a regular file or a symlink.
    pub before: Current,
    /// The bytes to write.
    pub contents: Vec<u8>,
    /// The permission bits the destination gets.
    pub mode: u32,
    /// Show a unified diff of the change (text files) rather than a one-line summary.
    pub text: bool,
}

impl FileInstall {
    /// Describes installing `contents` at `path` with `mode`, reading what `path` holds now
    /// (at most [`MAX_TEXT_FILE`] for text, [`MAX_BINARY_FILE`] otherwise). A FIFO, socket,
    /// device or oversized file there is an error: nothing is written.
    pub fn new(
        source: Option<PathBuf>,
        path: PathBuf,
        contents: Vec<u8>,
        mode: u32,
        text: bool,
    ) -> anyhow::Result<Self> {
        let limit = if text { MAX_TEXT_FILE } else { MAX_BINARY_FILE };
        let before = read_current(&path, limit)?;
        match &before {
            Current::Special { kind } => {
                return Err(crate::error::help_error(
                    format!("`{}` is {kind}, not a regular file", path.display()),
                    "remove it (this tool writes a \
                 regular file there); nothing was written",
                ));
            }
            Current::Large { size } => {
                return Err(crate::error::help_error(
                    format!(
                        "`{}` is a {size}-byte file, over the {limit}-byte bound this tool reads \
                         back",
                        path.display()
                    ),
                    "remove it (this tool writes a regular file there); nothing was written",
                ));
            }
            Current::Absent | Current::File { .. } | Current::Symlink { .. } => {}
        }
        Ok(Self {
            source,
            path,
            before,
            contents,
            mode,
            text,
        })
    }

    /// Whether installing would change anything (content or mode).
    pub fn changes(&self) -> bool {
        match &self.before {
            Current::File { bytes, mode } => *bytes != self.contents || *mode != self.mode,
            _ => true,
        }
    }
}

/// A file to remove.
#[derive(Debug, Clone)]
pub struct FileRemove {
    /// The file.
    pub path: PathBuf,
    /// What is there now (read as for [`FileInstall`]; a symlink is removed, never followed).
    pub before: Current,
    /// Remove it only while it holds exactly these bytes (what this tool wrote); `None` removes
    /// it whatever it is.
    pub only_if: Option<Vec<u8>>,
    /// Show a unified diff of the removal (text files) rather than a one-line summary.
    pub text: bool,
}

impl FileRemove {
    /// Describes removing `path`, reading what it holds now.
    pub fn new(path: PathBuf, only_if: Option<Vec<u8>>, text: bool) -> anyhow::Result<Self> {
        let limit = if text { MAX_TEXT_FILE } else { MAX_BINARY_FILE };
        let before = read_current(&path, limit)?;
        Ok(Self {
            path,
            before,
            only_if,
            text,
        })
    }

    /// Whether removing would change anything (something is there and may be removed).
    pub fn changes(&self) -> bool {
        removable(&self.before, self.only_if.as_deref())
    }
}

/// Whether `now` may be removed: something is there, and it holds `only_if` when given.
fn removable(now: &Current, only_if: Option<&[u8]>) -> bool {
    match (now, only_if) {
        (Current::Absent, _) => false,
        (_, None) => true,
        (now, Some(ours)) => now.bytes() == Some(ours),
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
                    // A symlink there is replaced, not followed: the diff starts from nothing
                    // (the summary names the link), never from what the link points to.
                    let label = diff_label(&i.path);
                    out.push_str(&unified_diff(
                        &String::from_utf8_lossy(i.before.bytes().unwrap_or_default()),
                        &String::from_utf8_lossy(&i.contents),
                        &label,
                        &label,
                    ));
                }
                Step::Remove(r) if r.text && r.changes() && r.before.bytes().is_some() => {
                    let label = diff_label(&r.path);
                    out.push_str(&unified_diff(
                        &String::from_utf8_lossy(r.before.bytes().unwrap_or_default()),
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
                        restore: i.before.clone(),
                    });
                    done.push(Applied::Wrote(i.path.clone()));
                }
                Step::Remove(r) => {
                    // Read again: the file may have changed since the plan was made (a
                    // daemonized install waits a long time before it removes).
                    let limit = if r.text {
                        MAX_TEXT_FILE
                    } else {
                        MAX_BINARY_FILE
                    };
                    let now = read_current(&r.path, limit)?;
                    if now == Current::Absent {
                        done.push(Applied::Absent(r.path.clone()));
                        continue;
                    }
                    if !removable(&now, r.only_if.as_deref()) {
                        done.push(Applied::Kept(r.path.clone()));
                        continue;
                    }
                    // `unlink` removes a symlink itself, never what it points to.
                    fs::remove_file(&r.path)
                        .with_context(|| format!("failed to remove `{}`", r.path.display()))?;
                    sync_dir(&parent_dir(&r.path));
                    undo.push(Undo {
                        path: r.path.clone(),
                        restore: now,
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
    /// What was there.
    restore: Current,
}

impl Undo {
    fn run(&self) -> anyhow::Result<()> {
        match &self.restore {
            Current::File { bytes, mode } => install_bytes(&self.path, bytes, *mode),
            Current::Symlink { target } => restore_symlink(&self.path, target),
            Current::Absent => match fs::remove_file(&self.path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => {
                    Err(e).with_context(|| format!("failed to remove `{}`", self.path.display()))
                }
            },
            Current::Large { size } => bail!(
                "`{}` (a {size}-byte file, over the bound read back) cannot be restored",
                self.path.display()
            ),
            Current::Special { kind } => {
                bail!("`{}` ({kind}) cannot be restored", self.path.display())
            }
        }
    }
}

/// Puts a symlink `path` -> `target` back: made under a temporary name, renamed over `path`.
fn restore_symlink(path: &Path, target: &Path) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let tmp = dir.join(format!(".{name}.{}.link.tmp", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .and_then(|()| fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .with_context(|| format!("failed to restore the symlink `{}`", path.display()))?;
    sync_dir(&dir);
    Ok(())
}

/// What `path` holds now (see [`Current`]), reading a regular file up to `limit` bytes.
///
/// A symlink is never followed, and nothing but a regular file is opened: the file is opened
/// `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` to be the regular file `lstat` saw, so a
/// FIFO, a device or a link swapped in meanwhile neither hangs nor is read.
pub fn read_current(path: &Path, limit: u64) -> anyhow::Result<Current> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let ctx = || format!("failed to read `{}`", path.display());
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Current::Absent),
        Err(e) => return Err(e).with_context(ctx),
        Ok(meta) => meta,
    };
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(crate::error::help_error(
            format!(
                "`{}` is a directory, expected a file path to write",
                path.display()
            ),
            "remove or move the \
             directory; nothing was written",
        ));
    }
    if ft.is_symlink() {
        let target = fs::read_link(path).with_context(ctx)?;
        return Ok(Current::Symlink { target });
    }
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else {
            "not a regular file"
        };
        return Ok(Current::Special { kind });
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(f) => f,
        // Replaced by a symlink or removed since `lstat`: look again (once).
        Err(e)
            if e.raw_os_error() == Some(libc::ELOOP)
                || e.kind() == std::io::ErrorKind::NotFound =>
        {
            return match fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => Ok(Current::Symlink {
                    target: fs::read_link(path).with_context(ctx)?,
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Current::Absent),
                _ => Err(e).with_context(ctx),
            };
        }
        Err(e) => return Err(e).with_context(ctx),
    };
    let fmeta = file.metadata().with_context(ctx)?;
    if !fmeta.is_file() {
        return Err(crate::error::help_error(
            format!(
                "`{}` changed while it was read (it is no longer a regular file)",
                path.display()
            ),
            "run again",
        ));
    }
    if fmeta.len() > limit {
        return Ok(Current::Large { size: fmeta.len() });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(fmeta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(ctx)?;
    if bytes.len() as u64 > limit {
        return Ok(Current::Large {
            size: bytes.len() as u64,
        });
    }
    Ok(Current::File {
        bytes,
        mode: fmeta.permissions().mode() & 0o7777,
    })
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
    let new = match &i.source {
        Some(_) => format!(
            "sha256 {}, {} bytes, mode {:04o}",
            sha256_hex(&i.contents),
            i.contents.len(),
            i.mode
        ),
        None => format!("{} bytes, mode {:04o}", i.contents.len(), i.mode),
    };
    let path = i.path.display();
    if let Current::Symlink { target } = &i.before {
        let what = match &i.source {
            Some(src) => format!("a copy of `{}`", src.display()),
            None => "a file".to_owned(),
        };
        return format!(
            "replace the symlink `{path}` (-> `{}`, not followed) with {what} ({new})",
            target.display()
        );
    }
    let Some(src) = &i.source else {
        return match (&i.before, i.changes()) {
            (Current::File { .. }, false) => format!("`{path}` unchanged"),
            (Current::File { .. }, true) => format!("replace `{path}` ({new})"),
            _ => format!("write `{path}` ({new})"),
        };
    };
    let what = format!("`{}`", src.display());
    match (&i.before, i.changes()) {
        (Current::File { .. }, false) => {
            format!("`{path}` already holds {what} ({new}): copy skipped")
        }
        (Current::File { bytes, mode }, true) if *bytes == i.contents => format!(
            "`{path}` already holds {what}: set its mode from {mode:04o} to {:04o}",
            i.mode
        ),
        (Current::File { bytes, .. }, true) => format!(
            "copy {what} to `{path}` ({new}), replacing sha256 {}",
            sha256_hex(bytes)
        ),
        _ => format!("copy {what} to `{path}` ({new})"),
    }
}

fn remove_summary(r: &FileRemove) -> String {
    let path = r.path.display();
    match (&r.before, r.changes()) {
        (Current::Absent, _) => format!("`{path}` does not exist: nothing to remove"),
        (Current::Symlink { target }, true) => format!(
            "remove the symlink `{path}` (-> `{}`; what it points to is kept)",
            target.display()
        ),
        (Current::Special { kind }, true) => format!("remove `{path}` ({kind})"),
        (_, true) => format!("remove `{path}`"),
        (_, false) => format!("`{path}` no longer holds what was installed: left in place"),
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
            FileType::Directory => {
                return Err(crate::error::help_error(
                    format!(
                        "`{}` is a directory, expected a file path to write",
                        path.display()
                    ),
                    format!(
                        "name the file, e.g. \
                 `{}`",
                        path.join("config.toml").display()
                    ),
                ));
            }
            FileType::Symlink => {
                let to = fs::read_link(path)
                    .map(|t| format!(" (to `{}`)", t.display()))
                    .unwrap_or_default();
                return Err(crate::error::help_error(
                    format!(
                        "`{}` is a symlink{to}; an output path is never followed",
                        path.display()
                    ),
                    "remove the \
                     link, or name a regular file (only `--in-place` edits a symlinked config \
                     where it lives)",
                ));
            }
            kind => {
                return Err(crate::error::help_error(
                    format!(
                        "`{}` is {}, not a file to write",
                        path.display(),
                        safe_write::describe_kind(kind)
                    ),
                    "name a regular file (or a new one) as \
                 the output",
                ));
            }
        },
    }
    ensure_dir(&parent_dir(path), path)
}

fn ensure_dir(dir: &Path, target: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(crate::error::help_error(
            format!(
                "cannot write `{}`: directory `{}` does not exist",
                target.display(),
                dir.display()
            ),
            "create it first, or choose \
             another output path",
        ));
    }
    Ok(())
}

fn file_name_of(path: &Path) -> anyhow::Result<&std::ffi::OsStr> {
    path.file_name().ok_or_else(|| {
        crate::error::help_error(
            format!("cannot write `{}`: it names no file", path.display()),
            format!(
                "name the file, e.g. `{}`",
                path.join("config.toml").display()
            ),
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
        crate::error::help_error(
            format!(
                "`{}` changed while we were editing it; nothing written",
                target.display()
            ),
            "run again (another \
             program wrote the file meanwhile)",
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
    fn read_current_never_follows_a_link_nor_opens_a_special_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert_eq!(
            read_current(&fifo, 10).unwrap(),
            Current::Special { kind: "a FIFO" }
        );
        assert_eq!(
            read_current(Path::new("/dev/zero"), 10).unwrap(),
            Current::Special {
                kind: "a character device"
            }
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert_eq!(
            read_current(&link, 10).unwrap(),
            Current::Symlink {
                target: "/dev/zero".into()
            }
        );
        let big = dir.path().join("big");
        fs::write(&big, "0123456789a").unwrap();
        assert_eq!(read_current(&big, 10).unwrap(), Current::Large { size: 11 });
        fs::set_permissions(&big, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            read_current(&big, 11).unwrap(),
            Current::File {
                bytes: b"0123456789a".to_vec(),
                mode: 0o640
            }
        );
        assert_eq!(
            read_current(&dir.path().join("none"), 10).unwrap(),
            Current::Absent
        );
    }

    #[test]
    fn diff_and_summary_never_show_what_a_symlink_points_to() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, "SECRET\n").unwrap();
        let hook = dir.path().join("hook.json");
        std::os::unix::fs::symlink(&secret, &hook).unwrap();
        let plan = Plan {
            steps: vec![Step::Install(
                FileInstall::new(None, hook.clone(), b"{}\n".to_vec(), 0o644, true).unwrap(),
            )],
        };
        let shown = format!("{}{}", plan.diff(), plan.summary().join("\n"));
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("replace the symlink"), "{shown}");
        let remove = Plan {
            steps: vec![Step::Remove(
                FileRemove::new(hook.clone(), None, true).unwrap(),
            )],
        };
        let shown = format!("{}{}", remove.diff(), remove.summary().join("\n"));
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("remove the symlink"), "{shown}");
    }

    #[test]
    fn failed_step_restores_a_replaced_symlink_and_keeps_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "theirs").unwrap();
        let bin = dir.path().join("bin");
        std::os::unix::fs::symlink(&target, &bin).unwrap();
        let plan = Plan {
            steps: vec![
                install(&bin, b"elf", 0o755),
                install(&dir.path().join("missing/x"), b"x", 0o644),
            ],
        };
        plan.apply().unwrap_err();
        assert_eq!(fs::read_link(&bin).unwrap(), target);
        assert_eq!(fs::read(&target).unwrap(), b"theirs");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["bin", "target"],
            "no temporary file may be left behind"
        );
    }

    #[test]
    fn remove_only_if_keeps_a_symlink_even_to_our_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, "ours").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let plan = Plan {
            steps: vec![Step::Remove(
                FileRemove::new(link.clone(), Some(b"ours".to_vec()), false).unwrap(),
            )],
        };
        assert_eq!(plan.apply().unwrap(), [Applied::Kept(link.clone())]);
        assert!(fs::symlink_metadata(&link).is_ok());
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
