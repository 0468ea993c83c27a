//! The careful file-system side of writing a file: unnamed temporary files, the final rename,
//! stale temporary files, and the edit lock.
//!
//! Every write goes through [`put`]: the content goes into an unnamed file (`O_TMPFILE`) in the
//! target's directory, which only gets a name ([`TMP_MARK`], one no runtime loads by its glob)
//! once it is complete, owned, moded and synced, and is then renamed over the target. Where the
//! file system has no `O_TMPFILE`, the file is created under that name from the start; a write
//! killed midway then leaves it behind, and the next write of the same target removes it
//! ([`remove_stale`]). All of it works on a descriptor of the directory, so the names are looked
//! up in the directory that was checked, and the rename replaces the directory entry: a symlink
//! planted at the target is replaced, never followed.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use super::*;
use crate::defaults::LOCK_DIR_NAME;
use crate::error::WithHelp;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// What the name of a temporary file of ours holds after the target's name: `.NAME` + this +
/// a random part. No runtime loads it: containerd's `imports` and the OCI hooks dirs match
/// `*.toml` / `*.json`, and the name ends with neither. (cri-o loads every file under
/// `crio.conf.d`; there the file only gets this name once it is complete, when `O_TMPFILE` is
/// available.)
pub(crate) const TMP_MARK: &str = ".tetragon-tmp-";

/// The largest config file read (64 MiB): real ones are a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 64 << 20;

/// How long an edit waits for another run editing the same file.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The mode and owner a written file gets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Perms {
    pub(crate) mode: u32,
    /// Owner and group to give the file (only root may; others keep their own).
    pub(crate) owner: Option<(u32, u32)>,
}

impl Perms {
    pub(crate) fn of_stat(st: &rustix::fs::Stat) -> Self {
        Self {
            mode: st.st_mode & 0o7777,
            owner: Some((st.st_uid, st.st_gid)),
        }
    }
}

/// What the target is: a kind of file, as `lstat` tells it.
pub(crate) fn describe_kind(ft: FileType) -> &'static str {
    match ft {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "not a regular file",
    }
}

/// `lstat` of `path`, `None` when nothing is there.
pub(crate) fn lstat(path: &Path) -> anyhow::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::lstat(path) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(std::io::Error::from(e))
            .with_context(|| format!("failed to read `{}`", path.display())),
    }
}

/// Opens `dir` (the user named it, so symlinks in it are followed) for `*at` calls.
pub(crate) fn open_dir(dir: &Path, target: &Path) -> anyhow::Result<OwnedFd> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)
    .with_context(|| {
        format!(
            "cannot write `{}`: cannot open directory `{}`",
            target.display(),
            dir.display()
        )
    })
}

/// What `check` saw at the target just before the switch, looked at again right before the
/// rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Whatever is there is replaced.
    Anything,
    /// Nothing was there.
    Absent,
    /// This regular file was there.
    File(Fingerprint),
}

/// A file's identity and what any write to it changes: device, inode, size, and the
/// modification and status-change times (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Fingerprint {
    pub(crate) fn of(st: &rustix::fs::Stat) -> Self {
        #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
        Self {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as i64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }
}

/// Whether `name` in `dir_fd` (not followed) is still what `seen` describes.
fn still(dir_fd: BorrowedFd<'_>, name: &OsStr, seen: Seen) -> bool {
    match (
        seen,
        rustix::fs::statat(dir_fd, name, AtFlags::SYMLINK_NOFOLLOW),
    ) {
        (Seen::Anything, _) => true,
        (Seen::Absent, Err(Errno::NOENT)) => true,
        (Seen::File(fp), Ok(st)) => {
            FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
                && Fingerprint::of(&st) == fp
        }
        _ => false,
    }
}

/// The error of an in-place edit whose file another program changed meanwhile.
pub(crate) fn changed_meanwhile(target: &Path) -> anyhow::Error {
    crate::error::help_error(
        format!(
            "`{}` changed while we were editing it; nothing written",
            target.display()
        ),
        "run again (another program wrote the file meanwhile)",
    )
}

/// Writes `contents` to `name` in the directory `dir_fd` (shown as `target`): an unnamed
/// temporary file, `perms`, `fsync`, a name no runtime loads, `check` (the last look before the
/// switch: what it saw is looked at again, by `stat`, right before the rename), then `rename`
/// over `name` and `fsync` of the directory.
pub(crate) fn put(
    dir: &Path,
    dir_fd: BorrowedFd<'_>,
    name: &OsStr,
    target: &Path,
    contents: &[u8],
    perms: Perms,
    check: impl FnOnce() -> anyhow::Result<Seen>,
) -> anyhow::Result<()> {
    put_with(
        dir,
        dir_fd,
        name,
        target,
        |file| Ok(file.write_all(contents)?),
        perms,
        check,
    )
}

/// [`put`], the temporary file filled by `fill` (a streamed copy) rather than from memory.
pub(crate) fn put_with(
    dir: &Path,
    dir_fd: BorrowedFd<'_>,
    name: &OsStr,
    target: &Path,
    fill: impl FnOnce(&mut File) -> anyhow::Result<()>,
    perms: Perms,
    check: impl FnOnce() -> anyhow::Result<Seen>,
) -> anyhow::Result<()> {
    let ctx = || format!("failed to write `{}`", target.display());
    let (fd, named) = match rustix::fs::openat(
        dir_fd,
        ".",
        OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => (fd, None),
        // No O_TMPFILE here: a named file, under a name no runtime loads.
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT) => {
            let (fd, tmp) = create_named(dir, dir_fd, name, target)?;
            (fd, Some(tmp))
        }
        Err(e) => {
            return Err(std::io::Error::from(e)).with_context(|| {
                format!(
                    "cannot write `{}`: failed to create a temporary file in `{}`",
                    target.display(),
                    dir.display()
                )
            });
        }
    };
    let written = (|| {
        let mut file = File::from(fd);
        fill(&mut file).with_context(ctx)?;
        set_perms(file.as_fd(), perms).with_context(ctx)?;
        file.sync_all().with_context(ctx)?;
        let tmp = match named {
            Some(ref tmp) => tmp.clone(),
            None => link_unnamed(file.as_fd(), dir_fd, name, target)?,
        };
        Ok::<_, anyhow::Error>(tmp)
    })();
    let tmp = match written {
        Ok(tmp) => tmp,
        Err(e) => {
            if let Some(tmp) = &named {
                let _ = rustix::fs::unlinkat(dir_fd, tmp.as_os_str(), AtFlags::empty());
            }
            return Err(e);
        }
    };
    let switched = check().and_then(|seen| {
        // `check` read the whole file; look once more, by `stat` alone, right before the
        // rename, so that a write landing while `check` read is seen too. The window left is
        // between this `statat` and the `renameat` (two system calls, no I/O of ours): a
        // program that does not take our edit lock and writes the file exactly then still
        // loses its write. Also unseen: a rewrite in place (same inode) to the same size within
        // one tick of the file system's timestamp clock (a few ms) after `check`'s `fstat`.
        // Nothing short of a lock every writer takes closes these (`renameat2(RENAME_EXCHANGE)`
        // then a check of what was swapped out could only undo a lost write by putting the old
        // file back, racing again).
        if !still(dir_fd, name, seen) {
            return Err(changed_meanwhile(target));
        }
        rename_over(dir_fd, tmp.as_os_str(), name, seen == Seen::Absent).map_err(|e| match e {
            // Nothing was there when looked at, and something is now: not replaced.
            Errno::EXIST => changed_meanwhile(target),
            e => anyhow::Error::new(std::io::Error::from(e))
                .context(format!("failed to replace `{}`", target.display())),
        })
    });
    if let Err(e) = switched {
        let _ = rustix::fs::unlinkat(dir_fd, tmp.as_os_str(), AtFlags::empty());
        return Err(e);
    }
    // Makes the rename durable. Best effort: some file systems refuse to fsync a directory.
    let _ = rustix::fs::fsync(dir_fd);
    Ok(())
}

/// Renames `tmp` to `name` in `dir_fd`; when `absent` (nothing was at `name`), without
/// replacing anything that appeared there since (`RENAME_NOREPLACE`, where the file system has
/// it: `EEXIST` then).
fn rename_over(
    dir_fd: BorrowedFd<'_>,
    tmp: &OsStr,
    name: &OsStr,
    absent: bool,
) -> Result<(), Errno> {
    if absent {
        match rustix::fs::renameat_with(
            dir_fd,
            tmp,
            dir_fd,
            name,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            // No RENAME_NOREPLACE here: the `still` check just made is what there is.
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {}
            other => return other,
        }
    }
    rustix::fs::renameat(dir_fd, tmp, dir_fd, name)
}

fn set_perms(fd: BorrowedFd<'_>, perms: Perms) -> std::io::Result<()> {
    if let Some((uid, gid)) = perms.owner {
        let st = rustix::fs::fstat(fd)?;
        if st.st_uid != uid || st.st_gid != gid {
            let (u, g) = (
                rustix::fs::Uid::from_raw(uid),
                rustix::fs::Gid::from_raw(gid),
            );
            match rustix::fs::fchown(fd, Some(u), Some(g)) {
                // Only root may give a file away; for anyone else the new file is theirs.
                Ok(()) | Err(Errno::PERM) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    // After the chown, which clears set-id bits.
    rustix::fs::fchmod(fd, Mode::from_raw_mode(perms.mode))?;
    Ok(())
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name for target `name`: `.NAME.tetragon-tmp-RANDOM`.
fn temp_name(name: &OsStr) -> std::ffi::OsString {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = format!("{nanos}-{}-{n}", std::process::id());
    let random = &crate::plan::sha256_hex(seed.as_bytes())[..12];
    let mut out = std::ffi::OsString::from(".");
    out.push(name);
    out.push(TMP_MARK);
    out.push(random);
    out
}

fn create_named(
    dir: &Path,
    dir_fd: BorrowedFd<'_>,
    name: &OsStr,
    target: &Path,
) -> anyhow::Result<(OwnedFd, PathBuf)> {
    for _ in 0..100 {
        let tmp = temp_name(name);
        match rustix::fs::openat(
            dir_fd,
            tmp.as_os_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => return Ok((fd, PathBuf::from(tmp))),
            Err(Errno::EXIST) => continue,
            Err(e) => {
                return Err(std::io::Error::from(e)).with_context(|| {
                    format!(
                        "cannot write `{}`: failed to create a temporary file in `{}`",
                        target.display(),
                        dir.display()
                    )
                });
            }
        }
    }
    bail!(
        "cannot write `{}`: no free temporary file name in its directory",
        target.display()
    )
}

/// Gives the complete unnamed file `fd` a temporary name in `dir_fd`.
fn link_unnamed(
    fd: BorrowedFd<'_>,
    dir_fd: BorrowedFd<'_>,
    name: &OsStr,
    target: &Path,
) -> anyhow::Result<PathBuf> {
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    for _ in 0..100 {
        let tmp = temp_name(name);
        let linked = match rustix::fs::linkat(
            rustix::fs::CWD,
            proc_path.as_str(),
            dir_fd,
            tmp.as_os_str(),
            AtFlags::SYMLINK_FOLLOW,
        ) {
            // No /proc: AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH, which root has).
            Err(Errno::NOENT) => {
                rustix::fs::linkat(fd, "", dir_fd, tmp.as_os_str(), AtFlags::EMPTY_PATH)
            }
            other => other,
        };
        match linked {
            Ok(()) => return Ok(PathBuf::from(tmp)),
            Err(Errno::EXIST) => continue,
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("failed to write `{}`", target.display()));
            }
        }
    }
    bail!(
        "cannot write `{}`: no free temporary file name in its directory",
        target.display()
    )
}

/// Removes temporary files of ours for target `name` left in `dir_fd` by a write that was
/// killed: only names of the exact form `.NAME.tetragon-tmp-HEX`, only regular files (never
/// through a symlink) owned by this user, only those last modified at least `min_age` ago.
/// Returns the names removed. Best effort: a file that cannot be removed is left.
pub(crate) fn remove_stale(
    dir: &Path,
    dir_fd: BorrowedFd<'_>,
    name: &OsStr,
    min_age: Duration,
) -> Vec<PathBuf> {
    let mut prefix = b".".to_vec();
    prefix.extend_from_slice(name.as_bytes());
    prefix.extend_from_slice(TMP_MARK.as_bytes());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let me = crate::sys::euid();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let bytes = file_name.as_bytes();
        let Some(rest) = bytes.strip_prefix(prefix.as_slice()) else {
            continue;
        };
        if rest.len() != 12 || !rest.iter().all(u8::is_ascii_hexdigit) {
            continue;
        }
        let Ok(st) = rustix::fs::statat(dir_fd, file_name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW)
        else {
            continue;
        };
        let age = now.saturating_sub(u64::try_from(st.st_mtime).unwrap_or(0));
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
            || st.st_uid != me
            || age < min_age.as_secs()
        {
            continue;
        }
        if rustix::fs::unlinkat(dir_fd, file_name.as_os_str(), AtFlags::empty()).is_ok() {
            removed.push(dir.join(&file_name));
        }
    }
    removed
}

/// Opens `path` for reading and checks that it is a regular file of at most `max` bytes.
///
/// Anything but a regular file (or a directory, refused with its own message) is refused
/// before it is opened: opening a device can have side effects (a watchdog starts, a tape
/// rewinds). So `stat` first (`lstat` unless `follow`), then the `open`, without blocking (a
/// FIFO swapped in meanwhile opens at once), then `fstat` of the descriptor, as the path may
/// have changed between the two.
pub(crate) fn open_regular(
    path: &Path,
    max: u64,
    follow: bool,
) -> anyhow::Result<(File, rustix::fs::Stat)> {
    let mut flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let looked = if follow {
        rustix::fs::stat(path)
    } else {
        rustix::fs::lstat(path)
    };
    if let Ok(st) = looked {
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile && kind != FileType::Directory {
            not_regular(path, kind)?;
        }
    }
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            // A socket cannot be opened at all (ENXIO): say what it is rather than why not.
            if let Ok(st) = rustix::fs::stat(path) {
                let kind = FileType::from_raw_mode(st.st_mode);
                if kind != FileType::RegularFile && kind != FileType::Directory {
                    not_regular(path, kind)?;
                }
            }
            return Err(std::io::Error::from(e))
                .with_context(|| format!("failed to read `{}`", path.display()));
        }
    };
    let st = rustix::fs::fstat(&fd)
        .map_err(std::io::Error::from)
        .with_context(|| format!("failed to read `{}`", path.display()))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind == FileType::Directory {
        return Err(crate::error::help_error(
            format!(
                "`{}` is a directory, expected a config file",
                path.display()
            ),
            format!(
                "pass the file itself, e.g. `{}`",
                path.join("config.toml").display()
            ),
        ));
    }
    if kind != FileType::RegularFile {
        not_regular(path, kind)?;
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > max {
        return Err(crate::error::help_error(
            format!(
                "`{}` is {size} bytes, more than the {} MiB a config file may have",
                path.display(),
                max >> 20
            ),
            "check that this is the runtime's config file",
        ));
    }
    // Regular file: reads block no more, but keep a plain blocking descriptor anyway.
    let file = File::from(fd);
    Ok((file, st))
}

fn not_regular(path: &Path, kind: FileType) -> anyhow::Result<()> {
    Err(crate::error::help_error(
        format!(
            "`{}` is {}, expected a regular config file",
            path.display(),
            describe_kind(kind)
        ),
        "pass the config file itself (a FIFO, device or socket is not read)",
    ))
}

/// Reads at most `max` bytes from `file` (a file that grew past it is an error).
pub(crate) fn read_bounded(file: &mut File, path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("failed to read `{}`", path.display()))?;
    if bytes.len() as u64 > max {
        bail!(
            "`{}` grew past the {} MiB a config file may have while being read",
            path.display(),
            max >> 20
        );
    }
    Ok(bytes)
}

/// An exclusive lock on editing one file, released on drop.
///
/// On drop the lock file is removed while the lock is still held, then the lock is released; a
/// run waiting on it finds, once it gets the lock, that the name no longer leads to the file it
/// locked, and starts over on a fresh one (see [`lock_edit`]). So lock files do not accumulate.
#[derive(Debug)]
pub struct EditLock {
    file: File,
    dir_fd: OwnedFd,
    name: String,
    /// The lock file.
    pub path: PathBuf,
}

impl Drop for EditLock {
    fn drop(&mut self) {
        // Only our own file: the name is ours while we hold its lock (every run that opens it
        // checks, once locked, that the name still leads to what it locked).
        if names_fd(self.dir_fd.as_fd(), &self.name, self.file.as_fd()) {
            let _ = rustix::fs::unlinkat(&self.dir_fd, self.name.as_str(), AtFlags::empty());
        }
    }
}

/// Whether `name` in `dir_fd` (not followed) is the file open as `fd`.
fn names_fd(dir_fd: BorrowedFd<'_>, name: &str, fd: BorrowedFd<'_>) -> bool {
    match (
        rustix::fs::statat(dir_fd, name, AtFlags::SYMLINK_NOFOLLOW),
        rustix::fs::fstat(fd),
    ) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

/// What identifies the file `target` names, whatever path reaches it (a bind mount, another
/// mount of the same file system): `(st_dev, st_ino)` of the file itself (not followed), or,
/// when there is none yet, `(st_dev, st_ino)` of its directory and the file name.
fn lock_key(target: &Path) -> anyhow::Result<Vec<u8>> {
    match rustix::fs::lstat(target) {
        Ok(st) => Ok(format!("file {} {}", st.st_dev, st.st_ino).into_bytes()),
        Err(Errno::NOENT) => {
            let dir = parent_dir(target);
            let mut key = match rustix::fs::stat(&dir) {
                Ok(st) => format!("new {} {} ", st.st_dev, st.st_ino).into_bytes(),
                // No directory: the write is refused later anyway; any stable key will do.
                Err(_) => b"path ".to_vec(),
            };
            match target.file_name() {
                Some(name) => key.extend_from_slice(name.as_bytes()),
                None => key.extend_from_slice(target.as_os_str().as_bytes()),
            }
            Ok(key)
        }
        Err(e) => Err(std::io::Error::from(e))
            .with_context(|| format!("failed to read `{}`", target.display())),
    }
}

/// The directory of the lock files: root-only, so no other user can hold a lock.
fn lock_dir() -> PathBuf {
    // /run is root's alone (unlike /run/lock or /tmp, where any user could create the
    // directory first: that is refused below, but would stop every edit).
    if crate::sys::is_root() && Path::new("/run").is_dir() {
        return Path::new("/run").join(LOCK_DIR_NAME);
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if Path::new(&d).is_absolute() => Path::new(&d).join(LOCK_DIR_NAME),
        _ => std::env::temp_dir().join(format!("{LOCK_DIR_NAME}-{}", crate::sys::euid())),
    }
}

/// Takes the exclusive lock on editing the file `target` names (its own name is not followed:
/// pass the config's canonical path for `--in-place`), waiting at most `wait`.
///
/// The lock is a `flock` on `/run/tetragon-oci-hook-setup/<sha256 of the file's identity>.lock`
/// (for root; another user's lock dir is their own), the identity being that of [`lock_key`]:
/// the same file reached through two paths (a bind mount, a DaemonSet's `/host/etc/...` and the
/// host's `/etc/...` when `/run` is shared) takes the same lock. The directory is created 0700
/// and must be ours and not a symlink, the file is opened without following a link, 0600 and
/// ours. Nothing is put beside the target, where a runtime might load it.
///
/// Every write renames a new file over the target, so its identity changes with each edit:
/// once locked, the target must still have the identity the lock was taken for, and the lock
/// file must still be linked under its name (the holder removes it on release); otherwise the
/// lock is dropped and taken again on what the target is now. So whoever holds the lock of the
/// target's current identity is the only run editing it.
pub fn lock_edit(target: &Path, wait: Duration) -> anyhow::Result<EditLock> {
    let dir = lock_dir();
    let help = |dir: &Path| {
        format!(
            "remove `{}` (this tool re-creates it, owned by the user running it, mode 0700)",
            dir.display()
        )
    };
    match rustix::fs::mkdir(&dir, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("cannot create lock directory `{}`", dir.display()));
        }
    }
    let dir_fd = rustix::fs::open(
        &dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)
    .with_help(
        || {
            format!(
                "cannot open lock directory `{}` (is it a symlink?)",
                dir.display()
            )
        },
        help(&dir),
    )?;
    let me = crate::sys::euid();
    let st = rustix::fs::fstat(&dir_fd)
        .map_err(std::io::Error::from)
        .with_context(|| format!("cannot read lock directory `{}`", dir.display()))?;
    if st.st_uid != me || st.st_mode & 0o077 != 0 {
        return Err(crate::error::help_error(
            format!(
                "lock directory `{}` is not private (owner uid {}, mode {:04o}; expected uid \
                 {me}, mode 0700)",
                dir.display(),
                st.st_uid,
                st.st_mode & 0o7777,
            ),
            help(&dir),
        ));
    }
    let start = Instant::now();
    loop {
        let key = lock_key(target)?;
        let name = format!("{}.lock", &crate::plan::sha256_hex(&key)[..32]);
        let lock_path = dir.join(&name);
        let fd = rustix::fs::openat(
            &dir_fd,
            name.as_str(),
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::from_raw_mode(0o600),
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("cannot open lock file `{}`", lock_path.display()))?;
        let st = rustix::fs::fstat(&fd)
            .map_err(std::io::Error::from)
            .with_context(|| format!("cannot read lock file `{}`", lock_path.display()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
            || st.st_uid != me
            || st.st_mode & 0o077 != 0
        {
            return Err(crate::error::help_error(
                format!(
                    "lock file `{}` is not a private regular file of ours",
                    lock_path.display()
                ),
                help(&dir),
            ));
        }
        match crate::sys::lock_exclusive_until(&fd, start + wait) {
            Ok(true) => {}
            Ok(false) => {
                return Err(crate::error::help_error(
                    format!(
                        "another run is still editing `{}` after {} s (lock `{}`); nothing \
                         written",
                        target.display(),
                        wait.as_secs_f64(),
                        lock_path.display()
                    ),
                    "wait for it to finish, then run again",
                ));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot lock `{}`", lock_path.display()));
            }
        }
        let lock = EditLock {
            file: File::from(fd),
            dir_fd: dir_fd
                .try_clone()
                .with_context(|| format!("cannot lock `{}`", lock_path.display()))?,
            name,
            path: lock_path,
        };
        // Locked: is it still the lock of what the target is now? If the lock file was
        // removed, its holder was done: start over on a fresh one (dropping `lock` leaves the
        // new file alone). If the target was replaced meanwhile (the previous holder's
        // rename), `lock` is stale: dropping it removes it, and the loop locks the new file.
        if names_fd(dir_fd.as_fd(), &lock.name, lock.file.as_fd()) && lock_key(target)? == key {
            return Ok(lock);
        }
        // Bounded too when the target keeps being replaced (by a program that takes no lock).
        if start.elapsed() >= wait {
            return Err(crate::error::help_error(
                format!(
                    "`{}` kept being replaced for {} s while we waited to edit it; nothing \
                     written",
                    target.display(),
                    wait.as_secs_f64(),
                ),
                "stop the program rewriting it, then run again",
            ));
        }
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
        || Ok(safe_write::Seen::Anything),
    )
}

/// [`install_bytes`] for a binary held open: the same unnamed temporary file, `fchmod`, `fsync`
/// and `rename`, filled by a streamed copy ([`Blob::copy_to`]: `copy_file_range`, never the
/// whole file in memory), which fails if the source changed since it was hashed.
pub fn install_blob(path: &Path, blob: &Blob, mode: u32) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    ensure_dir(&dir, path)?;
    let name = file_name_of(path)?;
    let dir_fd = safe_write::open_dir(&dir, path)?;
    safe_write::remove_stale(&dir, dir_fd.as_fd(), name, Duration::from_secs(60));
    safe_write::put_with(
        &dir,
        dir_fd.as_fd(),
        name,
        path,
        |file| blob.copy_to(file),
        safe_write::Perms { mode, owner: None },
        || Ok(safe_write::Seen::Anything),
    )
}

/// Follows symlinks so that a linked config is edited where it lives, not replaced by a file.
pub(super) fn resolve_target(path: &Path) -> anyhow::Result<PathBuf> {
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
                        "name the file, e.g. `{}`",
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
                    "name a regular file (or a new one) as the output",
                ));
            }
        },
    }
    ensure_dir(&parent_dir(path), path)
}

pub(super) fn ensure_dir(dir: &Path, target: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(crate::error::help_error(
            format!(
                "cannot write `{}`: directory `{}` does not exist",
                target.display(),
                dir.display()
            ),
            "create it first, or choose another output path",
        ));
    }
    Ok(())
}

pub(super) fn file_name_of(path: &Path) -> anyhow::Result<&std::ffi::OsStr> {
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

pub(super) fn parent_dir(path: &Path) -> PathBuf {
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
            None => Ok(safe_write::Seen::Anything),
        },
    )?;
    Ok(target)
}

/// Writes `contents` at exactly `path`, never following it: the rename replaces the directory
/// entry, so a symlink, device, FIFO or socket there is replaced, never written through or
/// into. (The plan refuses such a path up front with [`check_target`]; one planted after that
/// check is simply replaced.)
///
/// The owner and mode of a regular file there are kept only when it belongs to the effective
/// user: a file another user planted (in a world-writable directory such as `/tmp`, say) is
/// replaced by one of ours (effective uid and gid) with mode 0644, so that user cannot rewrite
/// what we wrote ([`foreign_owner`] tells the plan, which notes it). ([`write_in_place`], editing the config itself,
/// keeps its owner and mode: the config is what the operator chose.)
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
    let perms = match exact_owner_foreign(dir_fd.as_fd(), name) {
        // (The plan says so: `foreign_owner`.)
        Some(_) => safe_write::Perms {
            mode: 0o644,
            owner: Some((crate::sys::euid(), rustix::process::getegid().as_raw())),
        },
        None => perms_for(dir_fd.as_fd(), name, template),
    };
    safe_write::put(&dir, dir_fd.as_fd(), name, path, contents, perms, || {
        Ok(safe_write::Seen::Anything)
    })?;
    Ok(path.to_owned())
}

/// Creates the file `path` (never followed) with `contents`, mode 0644, owned by the effective
/// user: atomically, as [`write_exact`], but only where nothing is. A file, symlink or anything
/// else there (also one planted after the plan looked) is an error and is left as it is.
pub fn write_new(path: &Path, contents: &[u8]) -> anyhow::Result<PathBuf> {
    let dir = parent_dir(path);
    ensure_dir(&dir, path)?;
    let name = file_name_of(path)?;
    let dir_fd = safe_write::open_dir(&dir, path)?;
    safe_write::remove_stale(&dir, dir_fd.as_fd(), name, Duration::ZERO);
    let perms = safe_write::Perms {
        mode: 0o644,
        owner: None,
    };
    safe_write::put(
        &dir,
        dir_fd.as_fd(),
        name,
        path,
        contents,
        perms,
        || match rustix::fs::statat(dir_fd.as_fd(), name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => Ok(safe_write::Seen::Absent),
            _ => Err(safe_write::changed_meanwhile(path)),
        },
    )?;
    Ok(path.to_owned())
}

/// The owner and mode of the regular file at `path` (not followed) when another user than the
/// effective one owns it: [`write_exact`] does not keep them.
pub fn foreign_owner(path: &Path) -> Option<(u32, u32)> {
    let st = rustix::fs::lstat(path).ok()?;
    (rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
        && st.st_uid != crate::sys::euid())
    .then_some((st.st_uid, st.st_mode & 0o7777))
}

/// The `lstat` of the regular file `name` in `dir_fd` when another user than the effective
/// one owns it.
fn exact_owner_foreign(
    dir_fd: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
) -> Option<rustix::fs::Stat> {
    use rustix::fs::{AtFlags, FileType};
    let st = rustix::fs::statat(dir_fd, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    (FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
        && st.st_uid != crate::sys::euid())
    .then_some(st)
}

/// The mode and owner of the regular file `name` in `dir_fd`, else of `template`, else 0644.
pub(super) fn perms_for(
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

/// Checks that `name` in `dir_fd` still holds `expect` (absent when `expect` is empty), and
/// returns what it saw. Nothing but a regular file is opened: `statat` first (a device is never
/// opened), then `fstat` of what was opened.
pub(super) fn check_unchanged(
    dir_fd: std::os::fd::BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    target: &Path,
    expect: &[u8],
) -> anyhow::Result<safe_write::Seen> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    let changed = || safe_write::changed_meanwhile(target);
    match rustix::fs::statat(dir_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {}
        Err(rustix::io::Errno::NOENT) if expect.is_empty() => return Ok(safe_write::Seen::Absent),
        _ => return Err(changed()),
    }
    let fd = match rustix::fs::openat(
        dir_fd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
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
    Ok(safe_write::Seen::File(safe_write::Fingerprint::of(&st)))
}

pub(super) fn write_new_temp(
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

pub(super) fn fill(
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
pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}
