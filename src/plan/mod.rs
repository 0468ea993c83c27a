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
//!
//! By job: this file holds the model ([`Plan`], [`Step`], [`Current`], ...) and its diff and
//! summary; `apply.rs` applies a plan and undoes it on failure; `read.rs` reads what a
//! destination holds ([`read_current`]); `safe_write.rs` does the atomic writes
//! ([`write_atomic`], [`write_in_place`], [`install_bytes`], ...) and the edit lock.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

mod apply;
mod blob;
mod read;
mod safe_write;

pub use self::blob::Blob;
pub use self::read::{read_current, read_current_binary};
pub use self::safe_write::install_blob;
use self::safe_write::*;
pub use self::safe_write::{
    EditLock, LOCK_WAIT, MAX_CONFIG_BYTES, check_target, foreign_owner, install_bytes, lock_edit,
    write_atomic, write_exact, write_in_place, write_new,
};
pub(crate) use self::safe_write::{open_regular, read_bounded};

/// Where a file write goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This path (created or replaced). A symlink there is followed (the file is edited where
    /// it lives), and the file must still hold the step's `before` just before it is replaced.
    Path(PathBuf),
    /// Exactly this path, never followed: a symlink, directory, device, FIFO or socket there is
    /// an error, and one planted after the check is replaced, not written through.
    Exact(PathBuf),
    /// Exactly this path, never followed, where nothing is yet (`--create`): the file is
    /// created and never replaces anything; a file or symlink that appears there meanwhile is
    /// an error, not followed or overwritten.
    New(PathBuf),
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
/// Largest binary copied into an install dir. Binaries are streamed (a few 256 KiB buffers
/// whatever their size), so this bounds only the disk and the time a mistaken `--local-binary`
/// costs; it is above the 200 MB payload `scripts/bench-install.sh` measures.
pub const MAX_BINARY_FILE: u64 = 512 << 20;

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
    /// A regular file where a binary goes ([`read_current_binary`]): held open, never read whole.
    Binary {
        /// The file (an undo copies it back from here); hashed when it differs from the source.
        held: Blob,
        /// Its permission bits.
        mode: u32,
        /// Whether it holds exactly the bytes being installed (or to be removed).
        same: bool,
    },
}

/// The bytes a [`FileInstall`] puts in place, or a [`FileRemove`] requires before removing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// In memory (a generated file, a hook file).
    Bytes(Vec<u8>),
    /// A regular file held open, hashed when planned and copied when applied (a binary: never
    /// read whole).
    Copy(Blob),
}

impl Contents {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Contents::Bytes(b) => b.len() as u64,
            Contents::Copy(b) => b.len(),
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, when in memory.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Contents::Bytes(b) => Some(b),
            Contents::Copy(_) => None,
        }
    }

    /// Lowercase hex sha256.
    pub fn sha256(&self) -> String {
        match self {
            Contents::Bytes(b) => sha256_hex(b),
            Contents::Copy(b) => b.sha256().unwrap_or_default().to_owned(),
        }
    }
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
    pub contents: Contents,
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
                    "remove it (this tool writes a regular file there); nothing was written",
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
            Current::Absent
            | Current::File { .. }
            | Current::Symlink { .. }
            | Current::Binary { .. } => {}
        }
        Ok(Self {
            source,
            path,
            before,
            contents: Contents::Bytes(contents),
            mode,
            text,
        })
    }

    /// Describes copying `blob` (the open file `source`, a binary) to `path` with `mode`: what
    /// `path` holds now is compared with it chunk by chunk ([`read_current_binary`]), never read
    /// whole, and the copy is streamed when applied. A FIFO, socket or device there is an error.
    pub fn copy_of(source: PathBuf, blob: Blob, path: PathBuf, mode: u32) -> anyhow::Result<Self> {
        let before = read_current_binary(&path, Some(&blob))?;
        Self::copy_from(source, blob, before, path, mode)
    }

    /// [`FileInstall::copy_of`] from the opened (and checked) `file` at `source`: hashed and
    /// compared with what `path` holds in one pass (the source is read once, not twice, over an
    /// identical copy).
    pub fn copy_of_file(
        source: PathBuf,
        file: fs::File,
        path: PathBuf,
        mode: u32,
    ) -> anyhow::Result<Self> {
        let (blob, before) = self::read::hash_source_and_current(&source, file, &path)?;
        Self::copy_from(source, blob, before, path, mode)
    }

    fn copy_from(
        source: PathBuf,
        blob: Blob,
        before: Current,
        path: PathBuf,
        mode: u32,
    ) -> anyhow::Result<Self> {
        if let Current::Special { kind } = &before {
            return Err(crate::error::help_error(
                format!("`{}` is {kind}, not a regular file", path.display()),
                "remove it (this tool writes a regular file there); nothing was written",
            ));
        }
        Ok(Self {
            source: Some(source),
            path,
            before,
            contents: Contents::Copy(blob),
            mode,
            text: false,
        })
    }

    /// Whether installing would change anything (content or mode).
    pub fn changes(&self) -> bool {
        match (&self.before, &self.contents) {
            (Current::File { bytes, mode }, Contents::Bytes(c)) => bytes != c || *mode != self.mode,
            (Current::Binary { same, mode, .. }, Contents::Copy(_)) => !same || *mode != self.mode,
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
    pub only_if: Option<Contents>,
    /// Show a unified diff of the removal (text files) rather than a one-line summary.
    pub text: bool,
}

impl FileRemove {
    /// Describes removing `path`, reading what it holds now.
    pub fn new(path: PathBuf, only_if: Option<Vec<u8>>, text: bool) -> anyhow::Result<Self> {
        let mut remove = Self {
            path,
            before: Current::Absent,
            only_if: only_if.map(Contents::Bytes),
            text,
        };
        remove.before = remove.read_now()?;
        Ok(remove)
    }

    /// Describes removing the binary `path`, only while it holds the same bytes as `only_if`
    /// when given: compared chunk by chunk, never read whole.
    pub fn binary(path: PathBuf, only_if: Option<Blob>) -> anyhow::Result<Self> {
        let mut remove = Self {
            path,
            before: Current::Absent,
            only_if: only_if.map(Contents::Copy),
            text: false,
        };
        remove.before = remove.read_now()?;
        Ok(remove)
    }

    /// What the path holds now: a binary (not text, no in-memory `only_if`) is held open and
    /// compared, never read whole; anything else is read up to its bound.
    pub(crate) fn read_now(&self) -> anyhow::Result<Current> {
        match (&self.only_if, self.text) {
            (Some(Contents::Copy(blob)), _) => read_current_binary(&self.path, Some(blob)),
            (None, false) => read_current_binary(&self.path, None),
            (_, text) => read_current(
                &self.path,
                if text { MAX_TEXT_FILE } else { MAX_BINARY_FILE },
            ),
        }
    }

    /// Whether removing would change anything (something is there and may be removed).
    pub fn changes(&self) -> bool {
        removable(&self.before, self.only_if.as_ref())
    }
}

/// Whether `now` may be removed: something is there, and it holds `only_if` when given.
fn removable(now: &Current, only_if: Option<&Contents>) -> bool {
    match (now, only_if) {
        (Current::Absent, _) => false,
        (_, None) => true,
        (Current::Binary { same, .. }, Some(Contents::Copy(_))) => *same,
        (now, Some(Contents::Bytes(ours))) => now.bytes() == Some(ours),
        (_, Some(Contents::Copy(_))) => false,
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
                        &String::from_utf8_lossy(i.contents.bytes().unwrap_or_default()),
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
            i.contents.sha256(),
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
        (Current::File { .. } | Current::Binary { .. }, false) => {
            format!("`{path}` already holds {what} ({new}): copy skipped")
        }
        (Current::File { bytes, mode }, true) if i.contents.bytes() == Some(bytes.as_slice()) => {
            format!(
                "`{path}` already holds {what}: set its mode from {mode:04o} to {:04o}",
                i.mode
            )
        }
        (
            Current::Binary {
                same: true, mode, ..
            },
            true,
        ) => format!(
            "`{path}` already holds {what}: set its mode from {mode:04o} to {:04o}",
            i.mode
        ),
        (Current::File { bytes, .. }, true) => format!(
            "copy {what} to `{path}` ({new}), replacing sha256 {}",
            sha256_hex(bytes)
        ),
        (Current::Binary { held, .. }, true) => format!(
            "copy {what} to `{path}` ({new}), replacing sha256 {}",
            held.sha256().unwrap_or_default()
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
    let diff = similar::TextDiff::configure()
        .algorithm(crate::text::line_diff_algorithm(before, after))
        .diff_lines(before, after);
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

    /// Bytes that differ everywhere and span several [`blob::CHUNK`]s plus a ragged tail.
    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8)
            .collect()
    }

    /// The install's path: hashed and compared with the destination in one pass.
    fn copy_step(src: &Path, dst: &Path) -> Step {
        let file = fs::File::open(src).unwrap();
        Step::Install(
            FileInstall::copy_of_file(src.to_owned(), file, dst.to_owned(), 0o755).unwrap(),
        )
    }

    /// Hashed first, compared after: both ways agree on what is the same.
    fn copy_step_in_two_passes(src: &Path, dst: &Path) -> Step {
        let blob = Blob::hash(fs::File::open(src).unwrap()).unwrap();
        Step::Install(FileInstall::copy_of(src.to_owned(), blob, dst.to_owned(), 0o755).unwrap())
    }

    #[test]
    fn binary_copy_is_byte_identical_and_its_summary_names_the_source_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        let bytes = payload(3 * blob::CHUNK + 17, 1);
        fs::write(&src, &bytes).unwrap();
        let plan = Plan {
            steps: vec![copy_step(&src, &dst)],
        };
        let summary = plan.summary().join("\n");
        assert!(summary.contains(&sha256_hex(&bytes)), "{summary}");
        assert!(
            summary.contains(&format!("{} bytes", bytes.len())),
            "{summary}"
        );
        assert_eq!(plan.apply().unwrap(), [Applied::Wrote(dst.clone())]);
        assert_eq!(fs::read(&dst).unwrap(), bytes);
        assert_eq!(
            fs::metadata(&dst).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        assert_eq!(names_in(dir.path()), ["dst", "src"]);
    }

    #[test]
    fn binary_copy_over_an_identical_file_is_skipped_and_a_last_chunk_difference_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        let bytes = payload(2 * blob::CHUNK + 5, 2);
        fs::write(&src, &bytes).unwrap();
        copy_step(&src, &dst);
        Plan {
            steps: vec![copy_step(&src, &dst)],
        }
        .apply()
        .unwrap();
        let inode = fs::metadata(&dst).unwrap().ino();
        let again = Plan {
            steps: vec![copy_step(&src, &dst)],
        };
        assert!(again.is_noop());
        assert!(
            Plan {
                steps: vec![copy_step_in_two_passes(&src, &dst)]
            }
            .is_noop()
        );
        assert!(
            again.summary()[0].contains("copy skipped"),
            "{:?}",
            again.summary()
        );
        assert_eq!(again.apply().unwrap(), [Applied::Unchanged(dst.clone())]);
        assert_eq!(fs::metadata(&dst).unwrap().ino(), inode);
        // Same size, one byte off in the last chunk: copied, and the summary names what it
        // replaces.
        let mut off = bytes.clone();
        *off.last_mut().unwrap() ^= 0xff;
        fs::write(&dst, &off).unwrap();
        let fix = Plan {
            steps: vec![copy_step(&src, &dst)],
        };
        assert!(!fix.is_noop());
        assert!(
            !Plan {
                steps: vec![copy_step_in_two_passes(&src, &dst)]
            }
            .is_noop()
        );
        let summary = fix.summary().join("\n");
        assert!(
            summary.contains(&format!("replacing sha256 {}", sha256_hex(&off))),
            "{summary}"
        );
        assert_eq!(fix.apply().unwrap(), [Applied::Wrote(dst.clone())]);
        assert_eq!(fs::read(&dst).unwrap(), bytes);
    }

    #[test]
    fn binary_source_changed_after_the_plan_fails_the_copy_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        fs::write(&src, payload(blob::CHUNK + 1, 3)).unwrap();
        fs::write(&dst, b"installed").unwrap();
        let plan = Plan {
            steps: vec![copy_step(&src, &dst)],
        };
        // Rewritten in place, same size: only its stat tells.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&src, payload(blob::CHUNK + 1, 4)).unwrap();
        let err = plan.apply().unwrap_err();
        assert!(
            format!("{err:#}").contains("changed while it was read"),
            "{err:#}"
        );
        assert_eq!(fs::read(&dst).unwrap(), b"installed");
        assert_eq!(
            names_in(dir.path()),
            ["dst", "src"],
            "no temporary file left"
        );
    }

    #[test]
    fn failed_step_puts_a_replaced_binary_back_from_the_held_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        let old = payload(2 * blob::CHUNK + 9, 5);
        fs::write(&src, payload(blob::CHUNK * 3, 6)).unwrap();
        fs::write(&dst, &old).unwrap();
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o700)).unwrap();
        let plan = Plan {
            steps: vec![
                copy_step(&src, &dst),
                Step::Remove(FileRemove::binary(dst.clone(), None).unwrap()),
                // Its directory does not exist: this step fails.
                install(&dir.path().join("missing/x"), b"x", 0o644),
            ],
        };
        plan.apply().unwrap_err();
        assert_eq!(fs::read(&dst).unwrap(), old);
        assert_eq!(
            fs::metadata(&dst).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        assert_eq!(names_in(dir.path()), ["dst", "src"]);
    }

    #[test]
    fn binary_remove_only_if_compares_with_the_installed_source() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let dst = dir.path().join("dst");
        fs::write(&src, payload(blob::CHUNK + 3, 7)).unwrap();
        let blob = Blob::hash(fs::File::open(&src).unwrap()).unwrap();
        fs::write(&dst, payload(blob::CHUNK + 3, 8)).unwrap();
        let theirs = Plan {
            steps: vec![Step::Remove(
                FileRemove::binary(dst.clone(), Some(blob.clone())).unwrap(),
            )],
        };
        assert_eq!(theirs.apply().unwrap(), [Applied::Kept(dst.clone())]);
        fs::copy(&src, &dst).unwrap();
        let ours = Plan {
            steps: vec![Step::Remove(
                FileRemove::binary(dst.clone(), Some(blob)).unwrap(),
            )],
        };
        assert_eq!(ours.apply().unwrap(), [Applied::Removed(dst.clone())]);
        assert!(!dst.exists());
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
        assert_eq!(
            names_in(dir.path()),
            ["removed", "replaced"],
            "no temporary file may be left behind"
        );
    }

    /// The sorted file names in `dir` (to see that no temporary file was left behind).
    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
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
        assert_eq!(
            names_in(dir.path()),
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

    #[test]
    fn in_place_write_does_not_replace_a_file_replaced_after_the_content_check() {
        use std::os::fd::AsFd;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("config.toml");
        fs::write(&target, "a = 1\n").unwrap();
        let dir_fd = safe_write::open_dir(dir.path(), &target).unwrap();
        let name = target.file_name().unwrap();
        let perms = safe_write::Perms {
            mode: 0o644,
            owner: None,
        };
        // Another program's atomic write lands right after the content check.
        let err = safe_write::put(
            dir.path(),
            dir_fd.as_fd(),
            name,
            &target,
            b"ours\n",
            perms,
            || {
                let seen = check_unchanged(dir_fd.as_fd(), name, &target, b"a = 1\n")?;
                let theirs = dir.path().join("theirs");
                fs::write(&theirs, "b = 2\n").unwrap();
                fs::rename(&theirs, &target).unwrap();
                Ok(seen)
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("changed while we were editing it"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "b = 2\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.toml"]);
        // And one created where there was none.
        let new = dir.path().join("new.toml");
        let err = safe_write::put(
            dir.path(),
            dir_fd.as_fd(),
            new.file_name().unwrap(),
            &new,
            b"ours\n",
            perms,
            || {
                let seen = check_unchanged(dir_fd.as_fd(), new.file_name().unwrap(), &new, b"")?;
                fs::write(&new, "theirs\n").unwrap();
                Ok(seen)
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("changed while"), "{err}");
        assert_eq!(fs::read_to_string(&new).unwrap(), "theirs\n");
    }

    #[test]
    fn edit_lock_file_is_removed_on_release_and_a_waiter_starts_over() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        fs::write(&config, "a = 1\n").unwrap();
        let held = lock_edit(&config, Duration::from_secs(1)).unwrap();
        let path = held.path.clone();
        assert!(path.exists());
        // A waiter: gets the lock once `held` is released, on a fresh lock file.
        let config2 = config.clone();
        let waiter = std::thread::spawn(move || {
            let lock = lock_edit(&config2, Duration::from_secs(10)).unwrap();
            assert!(lock.path.exists(), "a held lock file is linked");
            lock.path.clone()
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(held);
        let waited = waiter.join().unwrap();
        assert_eq!(waited, path, "same file, same lock name");
        assert!(!path.exists(), "a released lock file must be removed");
        // The target replaced (as each write does): a new identity, a new lock, removed too.
        let held = lock_edit(&config, Duration::from_secs(1)).unwrap();
        write_in_place(&config, Some(b"a = 1\n"), b"a = 2\n", None).unwrap();
        let next = lock_edit(&config, Duration::from_millis(200)).unwrap();
        assert_ne!(next.path, held.path);
        drop((held, next));
    }

    #[test]
    fn config_that_is_not_a_regular_file_is_refused_without_being_opened() {
        use rustix::fs::inotify;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.toml");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let ino =
            inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC).unwrap();
        inotify::add_watch(&ino, &fifo, inotify::WatchFlags::OPEN).unwrap();
        let opened = || {
            let mut buf = [0u8; 1024];
            // Non-blocking: no event is `EAGAIN`.
            rustix::io::read(&ino, &mut buf).is_ok_and(|n| n > 0)
        };
        for path in [&fifo, &link] {
            let err = open_regular(path, 1024, true).unwrap_err();
            let shown = crate::error::Report(&err).to_string();
            assert!(
                shown.contains("is a FIFO, expected a regular config file"),
                "{shown}"
            );
            assert!(!opened(), "`{}` was opened", path.display());
        }
        // The watch does see an open.
        let _fd = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        assert!(opened());
    }

    /// `src/sys.rs` holds the setup package's only `unsafe` code, tests included.
    #[test]
    fn no_unsafe_code_in_src_outside_sys_rs() {
        fn walk(dir: &Path, found: &mut Vec<String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("src/sys.rs")
                {
                    let text = fs::read_to_string(&path).unwrap();
                    let word = ["un", "safe"].concat();
                    for (i, line) in text.lines().enumerate() {
                        let code = line.split("//").next().unwrap_or("");
                        if code
                            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                            .any(|w| w == word)
                        {
                            found.push(format!("{}:{}", path.display(), i + 1));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert!(found.is_empty(), "{found:#?}");
    }
}
