//! `install`, `uninstall` and `print-config` for the `oci-hooks` interface.
//!
//! [`plan_install`] checks everything it can before anything is written (the hook binary is
//! readable, the install dir is writable and not `noexec`, the hooks dir exists and is writable)
//! and returns a [`Plan`]: copy the binary to `<local-install-dir>/<basename>` (mode 0755), then
//! write `<hooks-dir>/<basename>.json` (mode 0644) whose paths are those the *host* sees
//! (`--host-install-dir`), since the runtime reading the hook file runs on the host. Applying the
//! plan is atomic per file and undone as a whole if a step fails.
//!
//! Files already in the hooks dir or install dir are looked at through
//! [`crate::plan::read_current`] (the hook file, read up to [`crate::plan::MAX_TEXT_FILE`]) and
//! [`crate::plan::read_current_binary`] (the binary, held open and compared chunk by chunk, never
//! read whole): a symlink there is never followed (it is replaced or removed itself, and the diff
//! never shows what it points to), a FIFO, socket or device is never opened. The source binary
//! may be a symlink, but must be a regular file no larger than [`MAX_BINARY_FILE`], checked with
//! `stat` before it is opened and with `fstat` on the descriptor opened `O_NONBLOCK`; it is kept
//! open, hashed in chunks and copied with `copy_file_range` (memory stays at a few 256 KiB
//! buffers whatever its size), and a change to it between the hash and the copy fails the copy.
//!
//! [`plan_uninstall`] removes both files; [`Installation::undo_plan`] removes them only while
//! they still hold what was written (for `--daemonize`). Overlapping `--daemonize` installers
//! each hold an [`InstallerLease`]; the last one out removes the files, serialized by the
//! [`InstallersGuard`]. This module prints nothing and knows nothing about
//! argument parsing. For the `nri-hook` interface it only copies the binary
//! ([`plan_install_binary`]); the plugin itself is [`crate::nri`].

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::error::{WithHelp, help_error};

use crate::defaults::BINARY_NAME;
use crate::hook_invocation::HookInvocation;
use crate::hook_json::{self, HookFile};
use crate::plan::{Blob, Contents, FileInstall, FileRemove, MAX_BINARY_FILE, Plan, Step};

mod leases;
pub use self::leases::{
    GUARD_WAIT, InstallerLease, InstallersGuard, Release, clean_up_installer_files, scan_leases,
};

/// Mode of the installed hook binary.
pub const BINARY_MODE: u32 = 0o755;
/// Mode of the hook file.
pub const HOOK_FILE_MODE: u32 = 0o644;

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
    /// How the runtime runs the hook (what the hook file says).
    pub invocation: HookInvocation,
    binary: Blob,
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
                Step::Remove(FileRemove::binary(
                    self.binary_path.clone(),
                    Some(self.binary.clone()),
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

    let invocation = HookInvocation::in_dir(host_dir, name, opts.hook_args.clone());
    let hook_json = hook_json::render(&hook_json::tetragon_hook(&invocation)).into_bytes();

    let binary_path = opts.local_install_dir.join(name);
    let hook_path = opts.hooks_dir.join(format!("{name}.json"));
    let copy = FileInstall::copy_of_file(
        opts.local_binary.clone(),
        binary,
        binary_path.clone(),
        BINARY_MODE,
    )?;
    let Contents::Copy(binary) = &copy.contents else {
        bail!("internal error: the binary copy holds no file (please report this)");
    };
    let binary = binary.clone();
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
        invocation,
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
    /// How the runtime runs the installed hook (what the NRI plugin adds to containers).
    pub invocation: HookInvocation,
}

/// Plans copying `local_binary` into `local_install_dir`; errors before anything is written.
pub fn plan_install_binary(
    local_binary: &Path,
    local_install_dir: &Path,
    host_install_dir: &Path,
    hook_args: Vec<String>,
) -> anyhow::Result<BinaryInstall> {
    let name = binary_name(local_binary)?;
    let host_dir = host_dir_str(host_install_dir)?;
    let binary = read_binary(local_binary)?;
    check_install_dir(local_install_dir, host_install_dir)?;
    let binary_path = local_install_dir.join(name);
    let copy = FileInstall::copy_of_file(
        local_binary.to_owned(),
        binary,
        binary_path.clone(),
        BINARY_MODE,
    )?;
    Ok(BinaryInstall {
        plan: Plan {
            steps: vec![Step::Install(copy)],
        },
        binary_path,
        invocation: HookInvocation::in_dir(host_dir, name, hook_args),
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
        return Err(help_error(
            format!("--binary-name `{name}` is not a file name"),
            format!("pass the name of the installed binary, e.g. `--binary-name {BINARY_NAME}`"),
        ));
    }
    Ok(Plan {
        steps: vec![
            Step::Remove(FileRemove::new(
                opts.hooks_dir.join(format!("{name}.json")),
                None,
                true,
            )?),
            Step::Remove(FileRemove::binary(opts.local_install_dir.join(name), None)?),
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
        return Err(help_error(
            format!("--binary `{path}` is not an absolute path"),
            format!(
                "the runtime runs the hook by this \
             path on the host, e.g. `/opt/tetragon/{BINARY_NAME}`"
            ),
        ));
    }
    Ok(hook_json::render(&hook_json::tetragon_hook(
        &HookInvocation::new(path, args.to_vec()),
    )))
}

/// Validates the hook's arguments strictly, as `install` does before writing anything: a typo in
/// the hook's flags fails the install (one pod) now, rather than every container on the node
/// later. A `--fail-cel-expr` and each `--fail-allow-namespaces-regex` are compiled by `binary`,
/// the hook about to be installed (its hidden `check-cel` command), so this tool carries no CEL
/// or regex engine. Only the hook's answer line on stdout counts ([`oci_hook::CHECK_CEL_VALID`]
/// with exit 0, [`oci_hook::CHECK_CEL_INVALID`] with exit 2): a binary that cannot be run here,
/// does not answer in time, or is not our hook (or an older one without `check-cel`, which exits
/// 0 for any unknown hook name) leaves them unchecked, and the returned warning says so. (A hook
/// that answers but predates the regex check would pass a bad regex; the hook itself then logs
/// it at every start and keeps its default.)
pub fn validate_hook_args(binary: &Path, args: &[String]) -> anyhow::Result<Option<String>> {
    let expr = oci_hook::args::validate_args_but_cel(args)?;
    let regexes = oci_hook::args::parse(args, Path::new("/"), None)
        .config
        .fail_allow_namespaces_regex;
    if expr.is_none() && regexes.is_empty() {
        return Ok(None);
    }
    let what = match (&expr, regexes.is_empty()) {
        (Some(_), true) => "`--fail-cel-expr`",
        (None, _) => "`--fail-allow-namespaces-regex`",
        (Some(_), false) => "`--fail-cel-expr` and `--fail-allow-namespaces-regex`",
    };
    let unchecked = |why: String| {
        Ok(Some(format!(
            "could not check the CEL expression with `{}`: {why}; {what} is not checked",
            binary.display()
        )))
    };
    match run_check_cel(binary, expr.as_deref(), &regexes) {
        // The hook names a bad regex's flag itself, one line each; a CEL reason comes alone.
        Ok(CheckCel::Invalid(reason)) if reason.starts_with(REGEX_PROBLEM) => Err(help_error(
            format!("invalid hook arguments:\n{reason}"),
            "the value is a regex (RE2 syntax, as upstream's): put `\\` before `(`, `[`, `{`, \
             `.` or `*` meant literally, or list plain names with `--fail-allow-namespaces`",
        )),
        Ok(CheckCel::Invalid(reason)) => Err(help_error(
            format!("invalid hook arguments:\ninvalid `--fail-cel-expr`: {reason}"),
            "fix the expression at the column shown: it is CEL and must give a bool (true fails \
             the container); it sees `annotations` (a map of string to string) and \
             `annotations_namespace_keys` (a list of strings), e.g. \
             `annotations[\"io.kubernetes.pod.namespace\"] != \"kube-system\"`",
        )),
        Ok(CheckCel::Valid) => Ok(None),
        Ok(CheckCel::NoAnswer) => unchecked(format!(
            "it did not answer within {}s",
            CHECK_CEL_TIMEOUT.as_secs()
        )),
        Ok(CheckCel::NotUnderstood(status)) => unchecked(format!(
            "it exited with {status} without `check-cel`'s answer (not this version's \
             `{BINARY_NAME}`, or an older one without `check-cel`)"
        )),
        Err(e) => unchecked(format!("it could not be run ({e})")),
    }
}

/// How the hook's `check-cel` starts the line of an invalid regex.
const REGEX_PROBLEM: &str = "invalid `--fail-allow-namespaces-regex`";

/// How long the hook binary may take to compile a CEL expression for [`validate_hook_args`]
/// (it answers in milliseconds; a binary that hangs must not stall an install or `Configure`).
pub const CHECK_CEL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

enum CheckCel {
    Valid,
    Invalid(String),
    NoAnswer,
    /// Exited without one of `check-cel`'s answer lines (or with the wrong code for it).
    NotUnderstood(std::process::ExitStatus),
}

/// Runs `binary [--fail-cel-expr EXPR] [--fail-allow-namespaces-regex RE]... check-cel`,
/// bounded by [`CHECK_CEL_TIMEOUT`].
fn run_check_cel(
    binary: &Path,
    expr: Option<&str>,
    regexes: &[String],
) -> std::io::Result<CheckCel> {
    let mut command = std::process::Command::new(binary);
    command.args(["--log-fname", "/dev/null"]);
    if let Some(expr) = expr {
        command.args(["--fail-cel-expr", expr]);
    }
    for re in regexes {
        // `=`: a regex starting with `-` stays a value.
        command.arg(format!("--fail-allow-namespaces-regex={re}"));
    }
    command.arg(oci_hook::CHECK_CEL);
    let Some((status, stdout, stderr)) =
        crate::sys::run_bounded_with_stdout(&mut command, CHECK_CEL_TIMEOUT)?
    else {
        return Ok(CheckCel::NoAnswer);
    };
    let answered = |marker: &str| {
        stdout
            .split(|b| *b == b'\n')
            .any(|l| l == marker.as_bytes())
    };
    Ok(match status.code() {
        Some(0) if answered(oci_hook::CHECK_CEL_VALID) => CheckCel::Valid,
        Some(2) if answered(oci_hook::CHECK_CEL_INVALID) => {
            CheckCel::Invalid(String::from_utf8_lossy(&stderr).trim().to_owned())
        }
        _ => CheckCel::NotUnderstood(status),
    })
}

fn binary_name(local_binary: &Path) -> anyhow::Result<&str> {
    let name = local_binary.file_name().with_help(
        || {
            format!(
                "--local-binary `{}` has no file name",
                local_binary.display()
            )
        },
        format!("name the hook binary itself, e.g. `/usr/bin/{BINARY_NAME}`"),
    )?;
    name.to_str().with_help(
        || {
            format!(
                "--local-binary `{}`: the file name is not valid UTF-8 and cannot go into the \
                 hook file",
                local_binary.display()
            )
        },
        "rename the binary",
    )
}

fn path_str<'a>(path: &'a Path, flag: &str) -> anyhow::Result<&'a str> {
    path.to_str().with_help(
        || {
            format!(
                "{flag} `{}` is not valid UTF-8 and cannot go into the hook file",
                path.display()
            )
        },
        "choose another directory",
    )
}

fn host_dir_str(host_dir: &Path) -> anyhow::Result<&str> {
    let s = path_str(host_dir, "--host-install-dir")?;
    if !host_dir.is_absolute() {
        return Err(help_error(
            format!("--host-install-dir `{s}` is not an absolute path"),
            "the runtime runs the hook by \
             this path on the host, e.g. `--host-install-dir=/opt/tetragon`",
        ));
    }
    Ok(s)
}

/// Reads the hook binary to install: a regular file after its own symlink (the image's
/// `/usr/bin/tetragon-oci-hook` may be a link), checked with `stat` before it is opened (a
/// device is never opened), opened `O_NONBLOCK` so a FIFO swapped in never hangs, checked
/// again with `fstat` on the opened descriptor, at most [`MAX_BINARY_FILE`] bytes. It is kept
/// open and hashed in chunks, never read whole: the copy is streamed from it when applied.
fn read_binary(path: &Path) -> anyhow::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let help = format!(
        "--local-binary names the hook binary to install (default \
         `/usr/bin/{BINARY_NAME}`); nothing was written"
    );
    let ctx = || format!("failed to read the hook binary `{}`", path.display());
    // Not even opened unless a regular file (opening a device can have side effects); the
    // `fstat` below checks again what was opened.
    if fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(help_error(
            format!("the hook binary `{}` is not a regular file", path.display()),
            help,
        ));
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_help(ctx, &help)?;
    let meta = file.metadata().with_help(ctx, &help)?;
    if !meta.is_file() {
        return Err(help_error(
            format!("the hook binary `{}` is not a regular file", path.display()),
            help,
        ));
    }
    if meta.len() > MAX_BINARY_FILE {
        return Err(help_error(
            format!(
                "the hook binary `{}` is {} bytes, over the {MAX_BINARY_FILE}-byte bound",
                path.display(),
                meta.len()
            ),
            help,
        ));
    }
    if meta.len() == 0 {
        return Err(help_error(
            format!("the hook binary `{}` is empty", path.display()),
            help,
        ));
    }
    // Any write to it from now on (its size, mtime or ctime) fails the hash or the copy.
    Ok(file)
}

fn dir_state(dir: &Path) -> anyhow::Result<crate::sys::DirState> {
    crate::sys::dir_state(dir).with_context(|| format!("failed to statvfs `{}`", dir.display()))
}

fn require_dir(dir: &Path, what: &str, help: &str) -> anyhow::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(help_error(
            format!("{what} `{}` is not a directory", dir.display()),
            help,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(help_error(
            format!("{what} `{}` does not exist", dir.display()),
            help,
        )),
        Err(e) => Err(e).with_help(
            || format!("failed to read {what} `{}`", dir.display()),
            help,
        ),
    }
}

fn check_install_dir(local: &Path, host: &Path) -> anyhow::Result<()> {
    let help = "choose another host directory, e.g. `--host-install-dir=/run/tetragon` \
                (Helm: `rthooks.installDir`); note that /run is a tmpfs, so the hook binary and \
                its log are gone after a reboot until this installer runs again";
    let where_ = if local == host {
        format!("`{}`", local.display())
    } else {
        format!("`{}` (`{}` on the host)", local.display(), host.display())
    };
    match fs::metadata(local) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(help_error(
                format!("install dir {where_} is not a directory"),
                help,
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(help_error(
                format!("install dir {where_} does not exist"),
                "`--local-install-dir` is the host's \
             install dir as mounted here; mount it (the Helm chart does), or create it",
            ));
        }
        Err(e) => {
            return Err(e).with_help(|| format!("failed to read install dir {where_}"), help);
        }
    }
    let state = dir_state(local)?;
    if state.read_only {
        return Err(help_error(
            format!("cannot install into {where_}: read-only file system"),
            help,
        ));
    }
    if state.noexec {
        return Err(help_error(
            format!(
                "cannot install into {where_}: it is mounted `noexec`, so the runtime could never \
             run the hook from there"
            ),
            help,
        ));
    }
    if let Some(e) = state.not_writable {
        // Refused to this user: the fix is who runs it (as for every command), not another dir.
        let help = match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => crate::error::os_error_help(&e).unwrap_or(help),
            _ => help,
        };
        return Err(help_error(
            format!("cannot install into {where_}: {e}"),
            help,
        ));
    }
    Ok(())
}

fn check_hooks_dir(dir: &Path) -> anyhow::Result<()> {
    let help = "pass the directory the runtime reads hook files from with \
                `--oci-hooks.local-dir` (as mounted here); for cri-o it is the `hooks_dir` \
                setting in crio.conf. `/etc/containers/oci/hooks.d` is read by cri-o and podman \
                (`/usr/share/containers/oci/hooks.d` is read-only on RHCOS)";
    require_dir(dir, "hooks dir", help)?;
    let state = dir_state(dir)?;
    if state.read_only {
        return Err(help_error(
            format!(
                "cannot write to hooks dir `{}`: read-only file system",
                dir.display()
            ),
            help,
        ));
    }
    if let Some(e) = state.not_writable {
        return Err(help_error(
            format!("cannot write to hooks dir `{}`: {e}", dir.display()),
            help,
        ));
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
