//! The files overlapping `--daemonize` installers share: the guard lock that serializes them
//! and the lease each live installer holds, so that the last one out removes the hook.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::error::help_error;

/// How long an installer waits for the installers' guard lock (held only by another installer
/// while it installs or decides what to remove at exit, which takes milliseconds).
pub const GUARD_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The lock that serializes overlapping `--daemonize` installers of one binary name: held while
/// installing and taking a lease, and while deciding and removing at exit, so that two
/// installers exiting at once cannot both keep the files, and one starting cannot have its
/// fresh files removed by one exiting.
///
/// The file is `<install-dir>/.<name>.installers.lock`: opened `O_NOFOLLOW`, created 0600, and
/// refused unless it is a regular file owned by this user with no group or other permission
/// bits, so no unprivileged user can hold it. The last installer out removes it while holding
/// it; a waiter that then gets the lock on the removed file sees that and opens it again.
#[derive(Debug)]
pub struct InstallersGuard {
    path: PathBuf,
    _file: fs::File,
}

impl InstallersGuard {
    /// Takes the guard of `name`'s installers in `dir`, waiting at most `wait`.
    pub fn lock(dir: &Path, name: &str, wait: std::time::Duration) -> anyhow::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let path = dir.join(format!(".{name}.installers.lock"));
        let deadline = std::time::Instant::now() + wait;
        loop {
            let file = open_lock_file(&path, true)?
                .with_context(|| format!("lock file `{}` disappeared", path.display()))?;
            match crate::sys::lock_exclusive_until(&file, deadline) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(help_error(
                        format!(
                            "another installer has held `{}` for over {}s",
                            path.display(),
                            wait.as_secs()
                        ),
                        "look for a stuck `tetragon-oci-hook-setup install` on this node",
                    ));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("failed to lock `{}`", path.display()));
                }
            }
            let held = file
                .metadata()
                .with_context(|| format!("failed to stat `{}`", path.display()))?;
            match fs::symlink_metadata(&path) {
                Ok(m) if m.dev() == held.dev() && m.ino() == held.ino() => {
                    return Ok(Self { path, _file: file });
                }
                // Removed (or replaced) by the last installer out while we waited: lock the
                // file now at the path.
                _ if std::time::Instant::now() < deadline => continue,
                _ => {
                    return Err(help_error(
                        format!("`{}` kept changing for {}s", path.display(), wait.as_secs()),
                        "look for a stuck `tetragon-oci-hook-setup install` on this node",
                    ));
                }
            }
        }
    }

    /// Removes the lock file (the last installer out), then releases it.
    pub fn remove(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Opens a lock or lease file without following a symlink and without blocking, and checks it
/// is a regular file owned by this user, mode 0600 or stricter. `Ok(None)`: it does not exist
/// (only when `create` is false).
fn open_lock_file(path: &Path, create: bool) -> anyhow::Result<Option<fs::File>> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let help = "it is not one this tool made (a regular file owned by root, mode 0600); \
                remove it";
    // Not even opened unless a regular file (or nothing yet): opening a device can have side
    // effects. The `fstat` below checks again what was opened.
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.is_file() {
            return Err(help_error(
                format!("lock file `{}` is not a regular file", path.display()),
                help,
            ));
        }
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(help_error(
                format!("lock file `{}` is a symlink", path.display()),
                help,
            ));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("failed to open lock file `{}`", path.display()));
        }
    };
    let meta = file
        .metadata()
        .with_context(|| format!("failed to stat lock file `{}`", path.display()))?;
    let euid = crate::sys::euid();
    if !meta.is_file() || meta.uid() != euid || meta.mode() & 0o077 != 0 {
        return Err(help_error(
            format!(
                "lock file `{}` is not a regular file owned by this user with mode 0600 (mode \
             {:04o}, owner {})",
                path.display(),
                meta.mode() & 0o7777,
                meta.uid()
            ),
            help,
        ));
    }
    Ok(Some(file))
}

/// The lease a live `--daemonize` installer holds on the files it installed: an exclusive
/// `flock` on its own file `<install-dir>/.<name>.installer.<pid>-<random>.lease` (0600), held
/// until the process ends. The kernel drops the lock when the holder dies, even by SIGKILL, so a
/// lease that can be locked is stale.
#[derive(Debug)]
pub struct InstallerLease {
    dir: PathBuf,
    name: String,
    path: PathBuf,
    file: fs::File,
}

/// What [`InstallerLease::release`] found.
#[derive(Debug, Default)]
pub struct Release {
    /// Leases still held by live installers: the files must stay.
    pub live: Vec<PathBuf>,
    /// Leases of dead installers, removed.
    pub stale: Vec<PathBuf>,
}

impl InstallerLease {
    /// Creates and locks a new lease; call it while holding the guard.
    pub fn take(dir: &Path, name: &str, _guard: &InstallersGuard) -> anyhow::Result<Self> {
        let (file, path) = tempfile::Builder::new()
            .prefix(&format!(".{name}.installer.{}-", std::process::id()))
            .suffix(".lease")
            .rand_bytes(8)
            .tempfile_in(dir)
            .and_then(|t| t.keep().map_err(|e| e.error))
            .with_context(|| format!("failed to create a lease file in `{}`", dir.display()))?;
        if !crate::sys::try_lock_exclusive(&file)
            .with_context(|| format!("failed to lock `{}`", path.display()))?
        {
            bail!("failed to lock `{}`: it is locked already", path.display());
        }
        Ok(Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
            path,
            file,
        })
    }

    /// The lease file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Drops this lease and looks at the others (call it while holding the guard): a lease
    /// whose lock is held belongs to a live installer; one that can be locked is stale and
    /// removed. A lease file that is not ours to trust (a symlink, wrong owner or mode) is
    /// ignored.
    pub fn release(self, guard: Option<&InstallersGuard>) -> anyhow::Result<Release> {
        let _ = fs::remove_file(&self.path);
        drop(self.file);
        scan_leases(&self.dir, &self.name, guard)
    }
}

/// Looks at the leases of `name`'s installers in `dir` (call it while holding the guard): a
/// lease whose lock is held belongs to a live installer; one that can be locked is stale and
/// removed. A lease file that is not ours to trust (a symlink, wrong owner or mode) is ignored.
pub fn scan_leases(
    dir: &Path,
    name: &str,
    _guard: Option<&InstallersGuard>,
) -> anyhow::Result<Release> {
    let prefix = format!(".{name}.installer.");
    let mut out = Release::default();
    let entries =
        fs::read_dir(dir).with_context(|| format!("failed to list `{}`", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list `{}`", dir.display()))?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if !file_name.starts_with(&prefix) || !file_name.ends_with(".lease") {
            continue;
        }
        let path = entry.path();
        let Ok(Some(file)) = open_lock_file(&path, false) else {
            continue;
        };
        match crate::sys::try_lock_exclusive(&file) {
            Ok(true) => {
                let _ = fs::remove_file(&path);
                out.stale.push(path);
            }
            Ok(false) | Err(_) => out.live.push(path),
        }
    }
    out.live.sort();
    out.stale.sort();
    Ok(out)
}

/// After an explicit `uninstall`: removes the stale leases of installers that are gone, and
/// the guard file when no installer is left. Files of live installers are not touched.
pub fn clean_up_installer_files(dir: &Path, name: &str) -> anyhow::Result<Release> {
    let ours = format!(".{name}.installer");
    let any = fs::read_dir(dir)
        .with_context(|| format!("failed to list `{}`", dir.display()))?
        .flatten()
        .any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&ours)));
    if !any {
        return Ok(Release::default());
    }
    let guard = InstallersGuard::lock(dir, name, GUARD_WAIT)?;
    let release = scan_leases(dir, name, Some(&guard))?;
    if release.live.is_empty() {
        guard.remove();
    }
    Ok(release)
}
