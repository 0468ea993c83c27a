//! `install`, `uninstall` and `print-config` for the `oci-hooks` interface.
//!
//! [`plan_install`] checks everything it can before anything is written (the hook binary is
//! readable, the install dir is writable and not `noexec`, the hooks dir exists and is writable)
//! and returns a [`Plan`]: copy the binary to `<local-install-dir>/<basename>` (mode 0755), then
//! write `<hooks-dir>/<basename>.json` (mode 0644) whose paths are those the *host* sees
//! (`--host-install-dir`), since the runtime reading the hook file runs on the host. Applying the
//! plan is atomic per file and undone as a whole if a step fails.
//!
//! Files already in the hooks dir or install dir are read through [`crate::plan::read_current`]:
//! a symlink there is never followed (it is replaced or removed itself, and the diff never shows
//! what it points to), a FIFO, socket or device is never opened, and reads are bounded
//! ([`crate::plan::MAX_TEXT_FILE`] for the hook file, [`MAX_BINARY_FILE`] for the binary). The
//! source binary may be a symlink, but must be a regular file no larger than
//! [`MAX_BINARY_FILE`], checked with `fstat` on the descriptor opened `O_NONBLOCK`.
//!
//! [`plan_uninstall`] removes both files; [`Installation::undo_plan`] removes them only while
//! they still hold what was written (for `--daemonize`). Overlapping `--daemonize` installers
//! each hold an [`InstallerLease`]; the last one out removes the files, serialized by the
//! [`InstallersGuard`]. [`TerminationSignals`] is the wait for
//! SIGINT/SIGTERM that `--daemonize` needs. This module prints nothing and knows nothing about
//! argument parsing. For the `nri-hook` interface it only copies the binary
//! ([`plan_install_binary`]); the plugin itself is [`crate::nri`].

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::hook_json::{self, HookFile};
use crate::plan::{FileInstall, FileRemove, MAX_BINARY_FILE, Plan, Step};

/// Mode of the installed hook binary.
pub const BINARY_MODE: u32 = 0o755;
/// Mode of the hook file.
pub const HOOK_FILE_MODE: u32 = 0o644;
/// Default name of the hook binary.
pub const DEFAULT_BINARY_NAME: &str = "tetragon-oci-hook";

/// What `install --interface oci-hooks` needs.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The hook binary to copy (`--local-binary`).
    pub local_binary: PathBuf,
    /// The install dir as this process sees it (`--local-install-dir`).
    pub local_install_dir: PathBuf,
    /// The same dir as the host sees it (`--host-install-dir`); used for every path in the hook
    /// file.
    pub host_install_dir: PathBuf,
    /// The hooks dir as this process sees it (`--oci-hooks.local-dir`).
    pub hooks_dir: PathBuf,
    /// Extra arguments for the hook (after `hook-args`), passed through untouched.
    pub hook_args: Vec<String>,
}

/// A planned installation, and what it will write.
#[derive(Debug, Clone)]
pub struct Installation {
    /// Copy the binary, then write the hook file.
    pub plan: Plan,
    /// Where the binary goes (local path).
    pub binary_path: PathBuf,
    /// Where the hook file goes (local path).
    pub hook_path: PathBuf,
    /// Remarks about what is on disk now (an existing legacy or unreadable hook file).
    pub notes: Vec<String>,
    binary: Vec<u8>,
    hook_json: Vec<u8>,
}

impl Installation {
    /// The plan that removes what this installation wrote: the hook file first (so the runtime
    /// stops calling the hook), then the binary, each only while it still holds our bytes.
    pub fn undo_plan(&self) -> anyhow::Result<Plan> {
        Ok(Plan {
            steps: vec![
                Step::Remove(FileRemove::new(
                    self.hook_path.clone(),
                    Some(self.hook_json.clone()),
                    true,
                )?),
                Step::Remove(FileRemove::new(
                    self.binary_path.clone(),
                    Some(self.binary.clone()),
                    false,
                )?),
            ],
        })
    }
}

/// Plans installing the hook; errors (with a `help:` line) before anything is written.
pub fn plan_install(opts: &InstallOptions) -> anyhow::Result<Installation> {
    let name = binary_name(&opts.local_binary)?;
    let host_dir = host_dir_str(&opts.host_install_dir)?;

    // Read the binary first: an unreadable or empty source must never replace a good binary.
    let binary = read_binary(&opts.local_binary)?;
    check_install_dir(&opts.local_install_dir, &opts.host_install_dir)?;
    check_hooks_dir(&opts.hooks_dir)?;

    let host_binary = format!("{}/{name}", host_dir.trim_end_matches('/'));
    let hook = hook_json::tetragon_hook(&host_binary, host_dir, &opts.hook_args);
    let hook_json = hook_json::render(&hook).into_bytes();

    let binary_path = opts.local_install_dir.join(name);
    let hook_path = opts.hooks_dir.join(format!("{name}.json"));
    let copy = FileInstall::new(
        Some(opts.local_binary.clone()),
        binary_path.clone(),
        binary.clone(),
        BINARY_MODE,
        false,
    )?;
    let write = FileInstall::new(
        None,
        hook_path.clone(),
        hook_json.clone(),
        HOOK_FILE_MODE,
        true,
    )?;
    let notes = existing_hook_notes(&hook_path, write.before.bytes());
    Ok(Installation {
        // The binary first: the runtime must never see a hook file whose binary is missing.
        plan: Plan {
            steps: vec![Step::Install(copy), Step::Install(write)],
        },
        binary_path,
        hook_path,
        notes,
        binary,
        hook_json,
    })
}

/// The binary copy of `install --interface nri-hook`: the same checks and the same atomic copy
/// as [`plan_install`], without a hook file (the NRI plugin hands the hook to the runtime).
#[derive(Debug, Clone)]
pub struct BinaryInstall {
    /// Copy the binary.
    pub plan: Plan,
    /// Where the binary goes (local path).
    pub binary_path: PathBuf,
    /// Its file name.
    pub binary_name: String,
    /// The install dir as the host sees it.
    pub host_install_dir: String,
}

/// Plans copying `local_binary` into `local_install_dir`; errors before anything is written.
pub fn plan_install_binary(
    local_binary: &Path,
    local_install_dir: &Path,
    host_install_dir: &Path,
) -> anyhow::Result<BinaryInstall> {
    let name = binary_name(local_binary)?;
    let host_dir = host_dir_str(host_install_dir)?;
    let binary = read_binary(local_binary)?;
    check_install_dir(local_install_dir, host_install_dir)?;
    let binary_path = local_install_dir.join(name);
    let copy = FileInstall::new(
        Some(local_binary.to_owned()),
        binary_path.clone(),
        binary,
        BINARY_MODE,
        false,
    )?;
    Ok(BinaryInstall {
        plan: Plan {
            steps: vec![Step::Install(copy)],
        },
        binary_path,
        binary_name: name.to_owned(),
        host_install_dir: host_dir.to_owned(),
    })
}

/// What `uninstall --interface oci-hooks` needs.
#[derive(Debug, Clone)]
pub struct UninstallOptions {
    /// The install dir as this process sees it.
    pub local_install_dir: PathBuf,
    /// File name of the installed binary.
    pub binary_name: String,
    /// The hooks dir as this process sees it.
    pub hooks_dir: PathBuf,
}

/// Plans removing the hook file, then the binary, whatever they hold. Absent files are not an
/// error: the plan reports them ([`crate::plan::Applied::Absent`]).
pub fn plan_uninstall(opts: &UninstallOptions) -> anyhow::Result<Plan> {
    let name = opts.binary_name.as_str();
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        bail!(
            "--binary-name `{name}` is not a file name\nhelp: pass the name of the installed \
             binary, e.g. `--binary-name {DEFAULT_BINARY_NAME}`"
        );
    }
    Ok(Plan {
        steps: vec![
            Step::Remove(FileRemove::new(
                opts.hooks_dir.join(format!("{name}.json")),
                None,
                true,
            )?),
            Step::Remove(FileRemove::new(
                opts.local_install_dir.join(name),
                None,
                false,
            )?),
        ],
    })
}

/// Plans removing only the binary (`uninstall --interface nri-hook`: there is no hook file).
pub fn plan_uninstall_binary(local_install_dir: &Path, binary_name: &str) -> anyhow::Result<Plan> {
    let mut plan = plan_uninstall(&UninstallOptions {
        local_install_dir: local_install_dir.to_owned(),
        binary_name: binary_name.to_owned(),
        hooks_dir: PathBuf::new(),
    })?;
    plan.steps.remove(0);
    Ok(plan)
}

/// The hook file `print-config` shows: `binary` is the hook's path on the host, its log goes
/// next to it.
pub fn print_config(binary: &Path, args: &[String]) -> anyhow::Result<String> {
    let path = path_str(binary, "--binary")?;
    if !binary.is_absolute() {
        bail!(
            "--binary `{path}` is not an absolute path\nhelp: the runtime runs the hook by this \
             path on the host, e.g. `/opt/tetragon/{DEFAULT_BINARY_NAME}`"
        );
    }
    // The binary is absolute and valid UTF-8, so its parent is too (`/` for `/hook`).
    let dir = binary.parent().and_then(Path::to_str).unwrap_or("/");
    Ok(hook_json::render(&hook_json::tetragon_hook(
        path, dir, args,
    )))
}

/// Validates the hook's arguments strictly, as `install` does before writing anything: a typo in
/// the hook's flags fails the install (one pod) now, rather than every container on the node
/// later. A `--fail-cel-expr` is compiled by `binary`, the hook about to be installed (its hidden
/// `check-cel` command; exit 2 means invalid), so this tool carries no CEL engine. A binary that
/// cannot be run here (or an older hook, which ignores the command) leaves the expression
/// unchecked: then the returned warning says so.
pub fn validate_hook_args(binary: &Path, args: &[String]) -> anyhow::Result<Option<String>> {
    let Some(expr) = oci_hook::args::validate_args_but_cel(args)? else {
        return Ok(None);
    };
    match run_check_cel(binary, &expr) {
        Ok(CheckCel::Invalid(reason)) => {
            bail!("invalid hook arguments:\ninvalid `--fail-cel-expr`: {reason}")
        }
        Ok(CheckCel::Valid) => Ok(None),
        Ok(CheckCel::NoAnswer) => Ok(Some(format!(
            "`{}` did not answer within {}s when asked to check `--fail-cel-expr`; it is not \
             checked",
            binary.display(),
            CHECK_CEL_TIMEOUT.as_secs()
        ))),
        Err(e) => Ok(Some(format!(
            "could not run `{}` to check `--fail-cel-expr` ({e}); it is not checked",
            binary.display()
        ))),
    }
}

/// How long the hook binary may take to compile a CEL expression for [`validate_hook_args`]
/// (it answers in milliseconds; a binary that hangs must not stall an install or `Configure`).
pub const CHECK_CEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

enum CheckCel {
    Valid,
    Invalid(String),
    NoAnswer,
}

/// Runs `binary --fail-cel-expr EXPR check-cel` with a bounded wait: its stderr goes to an
/// unnamed file (a pipe nobody drains could block it), read back bounded once it has exited.
fn run_check_cel(binary: &Path, expr: &str) -> std::io::Result<CheckCel> {
    use std::io::{Read, Seek};
    let mut err_file = tempfile::tempfile()?;
    let mut child = std::process::Command::new(binary)
        .args(["--log-fname", "/dev/null", "--fail-cel-expr", expr])
        .arg(oci_hook::CHECK_CEL)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err_file.try_clone()?)
        .spawn()?;
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() >= CHECK_CEL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(CheckCel::NoAnswer);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    if status.code() != Some(2) {
        return Ok(CheckCel::Valid);
    }
    let mut stderr = Vec::new();
    err_file.rewind()?;
    err_file.take(16 * 1024).read_to_end(&mut stderr)?;
    Ok(CheckCel::Invalid(
        String::from_utf8_lossy(&stderr).trim().to_owned(),
    ))
}

fn binary_name(local_binary: &Path) -> anyhow::Result<&str> {
    let name = local_binary.file_name().with_context(|| {
        format!(
            "--local-binary `{}` has no file name\nhelp: name the hook binary itself, e.g. \
             `/usr/bin/{DEFAULT_BINARY_NAME}`",
            local_binary.display()
        )
    })?;
    name.to_str().with_context(|| {
        format!(
            "--local-binary `{}`: the file name is not valid UTF-8 and cannot go into the hook \
             file\nhelp: rename the binary",
            local_binary.display()
        )
    })
}

fn path_str<'a>(path: &'a Path, flag: &str) -> anyhow::Result<&'a str> {
    path.to_str().with_context(|| {
        format!(
            "{flag} `{}` is not valid UTF-8 and cannot go into the hook file\nhelp: choose \
             another directory",
            path.display()
        )
    })
}

fn host_dir_str(host_dir: &Path) -> anyhow::Result<&str> {
    let s = path_str(host_dir, "--host-install-dir")?;
    if !host_dir.is_absolute() {
        bail!(
            "--host-install-dir `{s}` is not an absolute path\nhelp: the runtime runs the hook by \
             this path on the host, e.g. `--host-install-dir=/opt/tetragon`"
        );
    }
    Ok(s)
}

/// Reads the hook binary to install: a regular file after its own symlink (the image's
/// `/usr/bin/tetragon-oci-hook` may be a link), opened `O_NONBLOCK` so a FIFO never hangs,
/// checked with `fstat` on the opened descriptor, at most [`MAX_BINARY_FILE`] bytes.
fn read_binary(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let help = format!(
        "help: --local-binary names the hook binary to install (default \
         `/usr/bin/{DEFAULT_BINARY_NAME}`); nothing was written"
    );
    let ctx = || {
        format!(
            "failed to read the hook binary `{}`\n{help}",
            path.display()
        )
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(ctx)?;
    let meta = file.metadata().with_context(ctx)?;
    if !meta.is_file() {
        bail!(
            "the hook binary `{}` is not a regular file\n{help}",
            path.display()
        );
    }
    if meta.len() > MAX_BINARY_FILE {
        bail!(
            "the hook binary `{}` is {} bytes, over the {MAX_BINARY_FILE}-byte bound\n{help}",
            path.display(),
            meta.len()
        );
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_BINARY_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(ctx)?;
    if bytes.len() as u64 > MAX_BINARY_FILE {
        bail!(
            "the hook binary `{}` grew over the {MAX_BINARY_FILE}-byte bound while it was \
             read\n{help}",
            path.display()
        );
    }
    if bytes.is_empty() {
        bail!("the hook binary `{}` is empty\n{help}", path.display());
    }
    Ok(bytes)
}

/// What the file system says about a directory.
struct DirState {
    read_only: bool,
    noexec: bool,
    /// `access(W_OK)` failed with this error.
    not_writable: Option<std::io::Error>,
}

fn dir_state(dir: &Path) -> anyhow::Result<DirState> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .with_context(|| format!("`{}` contains a NUL byte", dir.display()))?;
    // SAFETY: `c` is a valid NUL-terminated string and `buf` a properly sized out-parameter.
    let mut buf: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut buf) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("failed to statvfs `{}`", dir.display()));
    }
    // SAFETY: `c` is a valid NUL-terminated string.
    let not_writable = if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        Some(std::io::Error::last_os_error())
    } else {
        None
    };
    Ok(DirState {
        read_only: buf.f_flag & libc::ST_RDONLY != 0,
        noexec: buf.f_flag & libc::ST_NOEXEC != 0,
        not_writable,
    })
}

fn require_dir(dir: &Path, what: &str, help: &str) -> anyhow::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => bail!("{what} `{}` is not a directory\n{help}", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{what} `{}` does not exist\n{help}", dir.display())
        }
        Err(e) => {
            Err(e).with_context(|| format!("failed to read {what} `{}`\n{help}", dir.display()))
        }
    }
}

fn check_install_dir(local: &Path, host: &Path) -> anyhow::Result<()> {
    let help = "help: choose another host directory, e.g. `--host-install-dir=/run/tetragon` \
                (Helm: `rthooks.installDir`); note that /run is a tmpfs, so the hook binary and \
                its log are gone after a reboot until this installer runs again";
    let where_ = if local == host {
        format!("`{}`", local.display())
    } else {
        format!("`{}` (`{}` on the host)", local.display(), host.display())
    };
    match fs::metadata(local) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("install dir {where_} is not a directory\n{help}"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "install dir {where_} does not exist\nhelp: `--local-install-dir` is the host's \
             install dir as mounted here; mount it (the Helm chart does), or create it"
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("failed to read install dir {where_}\n{help}"));
        }
    }
    let state = dir_state(local)?;
    if state.read_only {
        bail!("cannot install into {where_}: read-only file system\n{help}");
    }
    if state.noexec {
        bail!(
            "cannot install into {where_}: it is mounted `noexec`, so the runtime could never \
             run the hook from there\n{help}"
        );
    }
    if let Some(e) = state.not_writable {
        bail!("cannot install into {where_}: {e}\n{help}");
    }
    Ok(())
}

fn check_hooks_dir(dir: &Path) -> anyhow::Result<()> {
    let help = "help: pass the directory the runtime reads hook files from with \
                `--oci-hooks.local-dir` (as mounted here); for cri-o it is the `hooks_dir` \
                setting in crio.conf. `/etc/containers/oci/hooks.d` is read by cri-o and podman \
                (`/usr/share/containers/oci/hooks.d` is read-only on RHCOS)";
    require_dir(dir, "hooks dir", help)?;
    let state = dir_state(dir)?;
    if state.read_only {
        bail!(
            "cannot write to hooks dir `{}`: read-only file system\n{help}",
            dir.display()
        );
    }
    if let Some(e) = state.not_writable {
        bail!("cannot write to hooks dir `{}`: {e}\n{help}", dir.display());
    }
    Ok(())
}

fn existing_hook_notes(path: &Path, before: Option<&[u8]>) -> Vec<String> {
    let Some(before) = before else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(before);
    match hook_json::parse(&text) {
        Ok(HookFile::Legacy(old)) => vec![format!(
            "`{}` uses the legacy 0.1.0 hook schema (hook `{}`); it is replaced by a 1.0.0 file",
            path.display(),
            old.hook
        )],
        Ok(HookFile::Current(_)) => Vec::new(),
        Err(e) => vec![format!(
            "`{}` is not a valid hook file ({e}); it is replaced",
            path.display()
        )],
    }
}

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
            loop {
                match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                {
                    Ok(()) => break,
                    Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR)
                        if std::time::Instant::now() < deadline =>
                    {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Err(rustix::io::Errno::WOULDBLOCK) => bail!(
                        "another installer has held `{}` for over {}s\nhelp: look for a stuck \
                         `tetragon-oci-hook-setup install` on this node",
                        path.display(),
                        wait.as_secs()
                    ),
                    Err(e) => {
                        return Err(std::io::Error::from(e))
                            .with_context(|| format!("failed to lock `{}`", path.display()));
                    }
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
                _ => bail!(
                    "`{}` kept changing for {}s\nhelp: look for a stuck \
                     `tetragon-oci-hook-setup install` on this node",
                    path.display(),
                    wait.as_secs()
                ),
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
    let help = "help: it is not one this tool made (a regular file owned by root, mode 0600); \
                remove it";
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
            bail!("lock file `{}` is a symlink\n{help}", path.display())
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("failed to open lock file `{}`", path.display()));
        }
    };
    let meta = file
        .metadata()
        .with_context(|| format!("failed to stat lock file `{}`", path.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != euid || meta.mode() & 0o077 != 0 {
        bail!(
            "lock file `{}` is not a regular file owned by this user with mode 0600 (mode \
             {:04o}, owner {})\n{help}",
            path.display(),
            meta.mode() & 0o7777,
            meta.uid()
        );
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
        rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .map_err(std::io::Error::from)
            .with_context(|| format!("failed to lock `{}`", path.display()))?;
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
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let _ = fs::remove_file(&path);
                out.stale.push(path);
            }
            Err(_) => out.live.push(path),
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

/// SIGINT and SIGTERM, blocked so that they can be waited for.
///
/// Create it before doing the work the signals should not interrupt (a signal arriving meanwhile
/// stays pending), and before any thread is started: threads inherit the mask.
#[derive(Debug)]
pub struct TerminationSignals {
    set: libc::sigset_t,
}

impl TerminationSignals {
    /// Blocks SIGINT and SIGTERM for this thread.
    pub fn block() -> anyhow::Result<Self> {
        // SAFETY: plain libc calls on a sigset_t owned here.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc))
                    .context("failed to block SIGINT and SIGTERM");
            }
            Ok(Self { set })
        }
    }

    /// A signalfd that becomes readable when SIGINT or SIGTERM is pending, for `poll`.
    pub fn signalfd(&self) -> anyhow::Result<std::os::fd::OwnedFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: `self.set` is an initialised sigset_t.
        let fd = unsafe { libc::signalfd(-1, &self.set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("failed to create a signalfd");
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }

    /// Waits for SIGINT or SIGTERM and returns its name.
    pub fn wait(&self) -> anyhow::Result<&'static str> {
        let mut sig: libc::c_int = 0;
        // SAFETY: `self.set` is an initialised sigset_t and `sig` a valid out-parameter.
        let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc))
                .context("failed to wait for SIGINT or SIGTERM");
        }
        Ok(if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        })
    }
}
