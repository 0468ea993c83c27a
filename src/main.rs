//! `tetragon-oci-hook-setup`: patches container-runtime configuration for Tetragon's runtime
//! hooks and installs the hook. This file only parses arguments and prints; the work is in the
//! `rthooks` library.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use oci_hook::log::Level;
use rthooks::edit::{Edit, EditError};
use rthooks::install::{self, InstallOptions, TerminationSignals, UninstallOptions};
use rthooks::nri::{self, ExternalOptions, Prelaunched, plugin::HookSpec};
use rthooks::patch::{self, Output};
use rthooks::plan::{Applied, Plan};
use toml_edit::DocumentMut;

// Printing must never panic (a panic in the release build aborts with 134): a closed or broken
// stderr or stdout is ignored by these, which shadow the standard macros in this file. Where
// losing the output matters (the diff before an edit is applied), `write_stdout` says so.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
macro_rules! print {
    ($($arg:tt)*) => {{
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// Set up Tetragon's runtime hooks on a node.
#[derive(Debug, Parser)]
#[command(name = "tetragon-oci-hook-setup", version, about, max_term_width = 100)]
struct Cli {
    /// Log level (accepted for compatibility with the upstream tool; `error` hides notes).
    #[arg(long, global = true, default_value = "info", value_parser = log_level_parser())]
    log_level: Level,

    #[command(subcommand)]
    command: Command,
}

/// `--log-level`: one of [`Level::NAMES`] (`trace` is `debug`), shown in `--help` as a value
/// enum would be.
fn log_level_parser() -> impl clap::builder::TypedValueParser<Value = Level> {
    PossibleValuesParser::new(Level::NAMES).map(|name| Level::parse(&name).unwrap_or(Level::Info))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Patch containerd's config.toml.
    PatchContainerdConf(ContainerdArgs),
    /// Patch cri-o's configuration.
    PatchCrioConf(CrioArgs),
    /// Install the hook binary and its hook file.
    #[command(disable_help_subcommand = true)]
    Install(InstallArgs),
    /// Remove the hook file and the hook binary.
    Uninstall(UninstallArgs),
    /// Print the hook file (hooks.d JSON) for a hook binary.
    PrintConfig(PrintConfigArgs),
}

/// How the runtime is told about the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Interface {
    /// A hooks.d JSON file (cri-o, podman).
    OciHooks,
    /// An NRI plugin (containerd): stays up and adds the hook to every new container.
    NriHook,
}

#[derive(Debug, Args)]
struct InstallArgs {
    /// How the runtime is told about the hook.
    #[arg(long, value_enum, default_value_t = Interface::OciHooks)]
    interface: Interface,

    /// The hook binary to install.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/usr/bin/tetragon-oci-hook"
    )]
    local_binary: PathBuf,

    /// The install dir as mounted here (the binary is copied into it).
    #[arg(long, value_name = "DIR", required = true)]
    local_install_dir: PathBuf,

    /// The same dir as the host sees it (used for every path written into the hook file).
    #[arg(long, value_name = "DIR", required = true)]
    host_install_dir: PathBuf,

    /// The runtime's hooks dir as mounted here (oci-hooks interface).
    #[arg(
        long = "oci-hooks.local-dir",
        value_name = "DIR",
        default_value = "/hostHooks"
    )]
    oci_hooks_local_dir: PathBuf,

    /// Index of the NRI plugin (nri-hook interface).
    #[arg(long = "nri-hook.index", value_name = "NN", default_value = "01")]
    nri_hook_index: String,

    /// Name of the NRI plugin (nri-hook interface).
    #[arg(
        long = "nri-hook.name",
        value_name = "NAME",
        default_value = "tetragon"
    )]
    nri_hook_name: String,

    /// The runtime's NRI socket (nri-hook interface).
    #[arg(
        long = "nri-hook.socket",
        value_name = "PATH",
        default_value = rthooks::nri::DEFAULT_SOCKET
    )]
    nri_hook_socket: PathBuf,

    /// Exit with an error after this many seconds without a registration (nri-hook interface).
    #[arg(
        long = "nri-hook.give-up-after",
        value_name = "SECONDS",
        default_value_t = 60.0
    )]
    nri_hook_give_up_after: f64,

    /// After installing, wait for SIGINT or SIGTERM, then uninstall what was installed.
    #[arg(long)]
    daemonize: bool,

    /// Show the hook file diff and the binary copy; write nothing.
    #[arg(long)]
    dry_run: bool,

    #[command(subcommand)]
    hook_args: Option<InstallTail>,
}

#[derive(Debug, Subcommand)]
enum InstallTail {
    /// Arguments for the hook: everything after `hook-args` is passed through untouched.
    #[command(disable_help_flag = true)]
    HookArgs {
        /// Arguments for the hook.
        #[arg(
            value_name = "ARGS",
            num_args = 0..,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        args: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct UninstallArgs {
    /// How the runtime was told about the hook.
    #[arg(long, value_enum, default_value_t = Interface::OciHooks)]
    interface: Interface,

    /// The install dir as mounted here.
    #[arg(long, value_name = "DIR", required = true)]
    local_install_dir: PathBuf,

    /// File name of the installed hook binary.
    #[arg(long, value_name = "NAME", default_value = install::DEFAULT_BINARY_NAME)]
    binary_name: String,

    /// The runtime's hooks dir as mounted here.
    #[arg(
        long = "oci-hooks.local-dir",
        value_name = "DIR",
        default_value = "/hostHooks"
    )]
    oci_hooks_local_dir: PathBuf,

    /// Show what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct PrintConfigArgs {
    /// The hook binary's path on the host.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/usr/bin/tetragon-oci-hook"
    )]
    binary: PathBuf,

    /// Arguments for the hook (takes every argument after it, flags included).
    #[arg(long, value_name = "ARGS", num_args = 1.., allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Debug, Args)]
struct ContainerdArgs {
    #[command(subcommand)]
    action: ContainerdAction,

    /// containerd configuration file to read.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "/etc/containerd/config.toml"
    )]
    config_file: PathBuf,

    /// Write the patched config here (the config file itself means --in-place).
    #[arg(long, global = true, value_name = "PATH")]
    output: Option<PathBuf>,

    #[command(flatten)]
    mode: ModeArgs,
}

#[derive(Debug, Subcommand)]
enum ContainerdAction {
    /// Enable NRI (needed by `install --interface nri-hook` on containerd 1.7).
    EnableNri,
    /// Point runc runtimes at a base runtime spec that holds the hook (without NRI).
    AddOciHook {
        /// Base runtime spec to set as `base_runtime_spec`.
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/etc/containerd/base-spec.json"
        )]
        runtime_spec: PathBuf,
    },
}

#[derive(Debug, Args)]
struct CrioArgs {
    #[command(subcommand)]
    action: CrioAction,

    /// cri-o configuration file to read (crio.conf or a crio.conf.d drop-in).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "/etc/crio/crio.conf"
    )]
    config_file: PathBuf,

    /// Write the patched config here (the config file itself means --in-place).
    #[arg(long, global = true, value_name = "PATH")]
    output_file: Option<PathBuf>,

    #[command(flatten)]
    mode: ModeArgs,
}

#[derive(Debug, Subcommand)]
enum CrioAction {
    /// Add annotations to `allowed_annotations` of every runtime.
    EnableAnnotations {
        /// Annotations to allow, comma-separated or repeated.
        #[arg(long, value_name = "A[,B...]", value_delimiter = ',', required = true)]
        annotations: Vec<String>,
    },
}

#[derive(Debug, Args)]
struct ModeArgs {
    /// Print the diff and write nothing.
    #[arg(long, global = true)]
    dry_run: bool,

    /// Write nothing; exit 0 when nothing needs changing, 1 when changes are pending.
    #[arg(long, global = true)]
    check: bool,

    /// Write the patched config back to the config file, atomically.
    #[arg(long, global = true)]
    in_place: bool,

    /// Print only warnings and errors (no diff, no status).
    #[arg(long, global = true)]
    quiet: bool,
}

fn main() -> ExitCode {
    // Started by containerd from its NRI `plugin_path`: no arguments, a socket in the environment.
    if std::env::args_os().len() == 1 {
        if let Some(fd) = std::env::var_os(rthooks::nri::SOCKET_ENV) {
            return match run_prelaunched_from_config(&fd.to_string_lossy()) {
                Ok(code) => code,
                Err(err) => {
                    eprintln!("{}", render_error(&err));
                    ExitCode::from(2)
                }
            };
        }
    }
    let cli = match parse_cli(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(err) => {
            eprintln!("{}", render_error(&err));
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            let _ = std::io::stdout().flush();
            eprintln!("{}", render_error(&err));
            ExitCode::from(2)
        }
    }
}

/// `error: ...` then one `Caused by:` block per source, as anyhow's `{:?}` but without the
/// backtrace it appends when `RUST_BACKTRACE` is set in the caller's shell.
fn render_error(err: &anyhow::Error) -> String {
    let mut out = format!("error: {err}");
    let causes: Vec<String> = err.chain().skip(1).map(ToString::to_string).collect();
    if !causes.is_empty() {
        out.push_str("\n\nCaused by:");
        for cause in causes {
            for (i, line) in cause.lines().enumerate() {
                let lead = if i == 0 { "\n  - " } else { "\n    " };
                out.push_str(lead);
                out.push_str(line);
            }
        }
    }
    out
}

/// Parses the command line. Everything after `install ... hook-args` is taken verbatim: clap
/// would otherwise read a hook argument such as `--log-level` or `--help` as its own flag.
fn parse_cli(argv: Vec<OsString>) -> anyhow::Result<Cli> {
    let (head, tail) = split_hook_args(argv);
    let mut cli = Cli::parse_from(head);
    if let (Some(tail), Command::Install(args)) = (tail, &mut cli.command) {
        let tail = tail
            .into_iter()
            .map(|a| {
                a.into_string().map_err(|a| {
                    anyhow::anyhow!(
                        "hook argument `{}` is not valid UTF-8 and cannot go into the hook file",
                        a.to_string_lossy()
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        args.hook_args = Some(InstallTail::HookArgs { args: tail });
    }
    Ok(cli)
}

/// Splits `argv` after the `hook-args` of an `install` command line, if there is one.
fn split_hook_args(argv: Vec<OsString>) -> (Vec<OsString>, Option<Vec<OsString>>) {
    let cmd = Cli::command();
    let takes_value = |c: &clap::Command, flag: &str| {
        c.get_arguments()
            .any(|a| a.get_long() == Some(flag) && a.get_action().takes_values())
    };
    let Some(install) = cmd.find_subcommand("install") else {
        return (argv, None);
    };
    let mut in_install = false;
    let mut i = 1;
    while i < argv.len() {
        let Some(tok) = argv[i].to_str() else {
            i += 1;
            continue;
        };
        if tok == "--" {
            break;
        }
        if let Some(flag) = tok.strip_prefix("--") {
            let scope = if in_install { install } else { &cmd };
            if !flag.contains('=') && (takes_value(scope, flag) || takes_value(&cmd, flag)) {
                i += 1;
            }
        } else if tok.starts_with('-') {
            // No short flag takes a value.
        } else if !in_install {
            if tok != "install" {
                break;
            }
            in_install = true;
        } else if tok == "hook-args" {
            let mut head = argv;
            let tail = head.split_off(i + 1);
            return (head, Some(tail));
        } else {
            break;
        }
        i += 1;
    }
    (argv, None)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let verbose = !matches!(cli.log_level, Level::Warn | Level::Error);
    match cli.command {
        Command::Install(args) if args.interface == Interface::NriHook => {
            run_install_nri(args, cli.log_level)
        }
        Command::Install(args) => run_install(args, verbose),
        Command::Uninstall(args) => run_uninstall(args, verbose),
        Command::PrintConfig(args) => {
            print!("{}", install::print_config(&args.binary, &args.args)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::PatchContainerdConf(args) => {
            let output = output_of(&args.mode, args.output, "--output")?;
            match args.action {
                ContainerdAction::EnableNri => run_patch(
                    &args.config_file,
                    &output,
                    &args.mode,
                    verbose,
                    rthooks::containerd::enable_nri,
                ),
                ContainerdAction::AddOciHook { runtime_spec } => {
                    let spec = runtime_spec.to_string_lossy().into_owned();
                    if !runtime_spec.is_absolute() {
                        anyhow::bail!(
                            "--runtime-spec `{spec}` is not an absolute path\nhelp: containerd \
                             resolves it on the node, e.g. `/etc/containerd/base-spec.json`"
                        );
                    }
                    run_patch(&args.config_file, &output, &args.mode, verbose, |doc| {
                        rthooks::containerd::add_oci_hook(doc, &spec)
                    })
                }
            }
        }
        Command::PatchCrioConf(args) => {
            let output = output_of(&args.mode, args.output_file, "--output-file")?;
            match args.action {
                CrioAction::EnableAnnotations { annotations } => {
                    let annotations: Vec<String> =
                        annotations.iter().map(|a| a.trim().to_owned()).collect();
                    if annotations.iter().any(String::is_empty) {
                        anyhow::bail!(
                            "--annotations has an empty name\nhelp: pass names separated by \
                             commas, e.g. `--annotations io.kubernetes.cri-o.Devices,foo`"
                        );
                    }
                    run_patch(&args.config_file, &output, &args.mode, verbose, |doc| {
                        rthooks::crio::enable_annotations(doc, &annotations)
                    })
                }
            }
        }
    }
}

fn run_prelaunched_from_config(fd: &str) -> anyhow::Result<ExitCode> {
    let signals = TerminationSignals::block()?;
    let sfd = signals.signalfd()?;
    rthooks::nri::run_prelaunched(
        fd,
        "tetragon",
        "01",
        Prelaunched::FromConfig,
        &sfd,
        nri::log::Level::Info,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `install --interface nri-hook`: copy the binary, then run as an NRI plugin until a signal.
fn run_install_nri(args: InstallArgs, log_level: nri::log::Level) -> anyhow::Result<ExitCode> {
    nri::plugin::check_index(&args.nri_hook_index)?;
    nri::plugin::check_name(&args.nri_hook_name)?;
    if !args.daemonize && !args.dry_run {
        anyhow::bail!(
            "`install --interface nri-hook` needs `--daemonize`: the NRI plugin must stay up to \
             add the hook to new containers\nhelp: add `--daemonize` (the Helm chart does)"
        );
    }
    let give_up_after = Duration::try_from_secs_f64(args.nri_hook_give_up_after)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "--nri-hook.give-up-after `{}` is not a positive number of seconds\nhelp: e.g. \
                 `--nri-hook.give-up-after 60`",
                args.nri_hook_give_up_after
            )
        })?;
    // Validated exactly as for oci-hooks, before anything is written: a typo in the hook's flags
    // fails this install (one pod) now, rather than every container on the node later.
    let hook_args = match args.hook_args {
        Some(InstallTail::HookArgs { args }) => args,
        None => Vec::new(),
    };
    if let Some(warning) = install::validate_hook_args(&args.local_binary, &hook_args)? {
        eprintln!("warning: {warning}");
    }
    // Block the signals before anything else: one that arrives meanwhile is handled by the
    // plugin's loop instead of killing the process in the middle of the copy.
    let signals = if args.dry_run {
        None
    } else {
        Some(TerminationSignals::block()?)
    };
    let install = install::plan_install_binary(
        &args.local_binary,
        &args.local_install_dir,
        &args.host_install_dir,
    )?;
    show_plan(&install.plan, true);
    let Some(signals) = signals else {
        eprintln!("dry run: nothing written");
        return Ok(ExitCode::SUCCESS);
    };
    report(&install.plan.apply()?, true);
    let hook = HookSpec {
        host_install_dir: install.host_install_dir,
        binary_name: install.binary_name,
        args: hook_args,
    };
    let sfd = signals.signalfd()?;
    // The binary stays installed on exit: a container whose creation got the hook may still run
    // it (containerd starts the task later), and a missing hook binary would fail that start.
    if let Some(fd) = std::env::var_os(nri::SOCKET_ENV) {
        nri::run_prelaunched(
            &fd.to_string_lossy(),
            &args.nri_hook_name,
            &args.nri_hook_index,
            Prelaunched::Fixed(hook),
            &sfd,
            log_level,
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    nri::run_external(
        &ExternalOptions {
            socket: args.nri_hook_socket,
            name: args.nri_hook_name,
            index: args.nri_hook_index,
            hook,
            give_up_after,
            log_level,
        },
        &sfd,
    )?;
    Ok(ExitCode::SUCCESS)
}

fn run_install(args: InstallArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    // Block the signals before installing: one that arrives meanwhile waits until we can
    // uninstall, instead of killing the process between the two files.
    let signals = if args.daemonize && !args.dry_run {
        Some(TerminationSignals::block()?)
    } else {
        None
    };
    let hook_args = match args.hook_args {
        Some(InstallTail::HookArgs { args }) => args,
        None => Vec::new(),
    };
    // A typo in the hook's flags fails this install (one pod) now, rather than every container
    // on the node later. The CEL expression is compiled by the hook being installed.
    if let Some(warning) = install::validate_hook_args(&args.local_binary, &hook_args)? {
        eprintln!("warning: {warning}");
    }
    let opts = InstallOptions {
        local_binary: args.local_binary,
        local_install_dir: args.local_install_dir,
        host_install_dir: args.host_install_dir,
        hooks_dir: args.oci_hooks_local_dir,
        hook_args,
    };
    let mut installation = install::plan_install(&opts)?;
    // Overlapping `--daemonize` installers (a DaemonSet update with maxSurge, a manual run
    // beside the pod) share the files: each holds a lease, and the guard serializes installing
    // and removing. Plan again under the guard: one exiting meanwhile may have removed files.
    let guard = match &signals {
        Some(_) => {
            let guard = install::InstallersGuard::lock(
                &opts.local_install_dir,
                binary_name(&installation),
                install::GUARD_WAIT,
            )?;
            installation = install::plan_install(&opts)?;
            Some(guard)
        }
        None => None,
    };
    for note in &installation.notes {
        eprintln!("note: {note}");
    }
    show_plan(&installation.plan, verbose || args.dry_run);
    if args.dry_run {
        eprintln!("dry run: nothing written");
        return Ok(ExitCode::SUCCESS);
    }
    report(&installation.plan.apply()?, verbose);
    if verbose {
        eprintln!(
            "installed hook `{}` for binary `{}`",
            installation.hook_path.display(),
            installation.binary_path.display()
        );
    }
    let (Some(signals), Some(guard)) = (signals, guard) else {
        return Ok(ExitCode::SUCCESS);
    };
    let name = binary_name(&installation);
    let lease = install::InstallerLease::take(&opts.local_install_dir, name, &guard)?;
    drop(guard);
    eprintln!("waiting for SIGINT or SIGTERM to uninstall");
    let signal = signals.wait()?;
    eprintln!("received {signal}: uninstalling");
    // Bounded: past the wait, decide without the guard rather than leave a hook with no agent.
    let guard =
        match install::InstallersGuard::lock(&opts.local_install_dir, name, install::GUARD_WAIT) {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("warning: {e:#}; deciding without it");
                None
            }
        };
    // If the leases cannot be read, remove: a hook left behind with no agent fails containers.
    let release = lease.release(guard.as_ref()).unwrap_or_else(|e| {
        eprintln!("warning: {e:#}; removing as if no other installer were running");
        install::Release::default()
    });
    for stale in &release.stale {
        eprintln!(
            "removed the stale lease `{}` of an installer that is gone",
            stale.display()
        );
    }
    if let Some(live) = release.live.first() {
        eprintln!(
            "another installer still holds the hook (lease `{}`): `{}` and `{}` are left in place",
            live.display(),
            installation.hook_path.display(),
            installation.binary_path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    report(&installation.undo_plan()?.apply()?, true);
    if let Some(guard) = guard {
        guard.remove();
    }
    Ok(ExitCode::SUCCESS)
}

/// The installed binary's file name (the lease and guard files are named after it).
fn binary_name(installation: &install::Installation) -> &str {
    installation
        .binary_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(install::DEFAULT_BINARY_NAME)
}

fn run_uninstall(args: UninstallArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let plan = if args.interface == Interface::NriHook {
        install::plan_uninstall_binary(&args.local_install_dir, &args.binary_name)?
    } else {
        install::plan_uninstall(&UninstallOptions {
            local_install_dir: args.local_install_dir.clone(),
            binary_name: args.binary_name.clone(),
            hooks_dir: args.oci_hooks_local_dir.clone(),
        })?
    };
    show_plan(&plan, verbose || args.dry_run);
    if args.dry_run {
        eprintln!("dry run: nothing removed");
        return Ok(ExitCode::SUCCESS);
    }
    report(&plan.apply()?, verbose);
    // Lock and lease files of `--daemonize` installers that are gone (killed) go too; those of
    // live installers stay (they are in use), as does nothing when the dir is missing.
    if args.local_install_dir.is_dir() {
        match install::clean_up_installer_files(&args.local_install_dir, &args.binary_name) {
            Ok(r) if verbose => {
                for stale in &r.stale {
                    eprintln!("removed the stale lease `{}`", stale.display());
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("warning: {e:#}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The diff on stdout, one line per binary copy or removal on stderr.
fn show_plan(plan: &Plan, talk: bool) {
    if !talk {
        return;
    }
    print!("{}", plan.diff());
    let _ = std::io::stdout().flush();
    for line in plan.summary() {
        eprintln!("{line}");
    }
}

fn report(applied: &[Applied], verbose: bool) {
    for a in applied {
        match a {
            Applied::Absent(p) => {
                eprintln!(
                    "warning: `{}` does not exist: nothing to remove",
                    p.display()
                )
            }
            Applied::Kept(p) => eprintln!(
                "warning: `{}` no longer holds what was installed: left in place",
                p.display()
            ),
            Applied::Wrote(p) if verbose => eprintln!("wrote `{}`", p.display()),
            Applied::Removed(p) if verbose => eprintln!("removed `{}`", p.display()),
            // The plan's summary already said so.
            Applied::Wrote(_) | Applied::Removed(_) | Applied::Unchanged(_) => {}
        }
    }
}

fn output_of(mode: &ModeArgs, output: Option<PathBuf>, flag: &str) -> anyhow::Result<Output> {
    match (mode.in_place, output) {
        (true, Some(p)) => anyhow::bail!(
            "--in-place and {flag} `{}` both name where to write\nhelp: use one of them",
            p.display()
        ),
        (true, None) => Ok(Output::InPlace),
        (false, Some(p)) => Ok(Output::Path(p)),
        (false, None) => Ok(Output::NewTempFile),
    }
}

/// Writes `text` to stdout and flushes it; an error (a closed pipe) names what was lost.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot print the diff to stdout ({e}); nothing written\nhelp: let the diff be \
                 read to the end, or pass `--quiet` to print none"
            )
        })
}

fn run_patch(
    config: &std::path::Path,
    output: &Output,
    mode: &ModeArgs,
    verbose: bool,
    edit_fn: impl FnOnce(&mut DocumentMut) -> Result<Edit, EditError>,
) -> anyhow::Result<ExitCode> {
    let talk = verbose && !mode.quiet;
    // Held from the read to the write: a concurrent run on the same file waits, then edits what
    // this one wrote. --check and --dry-run write nothing, so they need no lock.
    let _lock = if mode.check || mode.dry_run {
        None
    } else {
        patch::lock_for(config, output, rthooks::plan::LOCK_WAIT)?
    };
    let (plan, edit) = patch::plan_file(config, output, edit_fn)?;
    if talk {
        // Shown before anything is applied; if it cannot be shown, nothing is applied.
        write_stdout(&plan.diff())?;
    }
    for warning in &edit.warnings {
        eprintln!("warning: {warning}");
    }
    if talk {
        for note in &edit.notes {
            eprintln!("note: {note}");
        }
        for change in &edit.changes {
            eprintln!("{change}");
        }
    }
    if plan.is_noop() {
        if talk {
            eprintln!("`{}` needs no change; nothing written", config.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if mode.check {
        if talk {
            eprintln!(
                "`{}` needs changes (--check: nothing written)",
                config.display()
            );
        }
        return Ok(ExitCode::from(1));
    }
    if mode.dry_run {
        if talk {
            eprintln!("dry run: nothing written");
        }
        return Ok(ExitCode::SUCCESS);
    }
    for applied in plan.apply()? {
        match applied {
            Applied::Wrote(path) => {
                if matches!(output, Output::NewTempFile) {
                    // Upstream prints the path of the file it made; scripts may read it.
                    eprintln!("wrote patched config to `{}`", path.display());
                } else if talk {
                    eprintln!("wrote `{}`", path.display());
                }
            }
            Applied::Unchanged(_) | Applied::Removed(_) | Applied::Absent(_) | Applied::Kept(_) => {
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    fn argv(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn helm_command_line_parses_unchanged() {
        let cli = parse_cli(argv(
            "tetragon-oci-hook-setup install --interface=oci-hooks \
             --local-install-dir=/hostInstall --host-install-dir=/opt/tetragon \
             --oci-hooks.local-dir=/hostHooks --daemonize \
             hook-args --grpc-address=unix:///var/run/tetragon/tetragon.sock \
             --fail-allow-namespaces kube-system,ns1",
        ))
        .unwrap();
        let Command::Install(args) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(args.interface, Interface::OciHooks);
        assert_eq!(
            args.local_binary,
            PathBuf::from("/usr/bin/tetragon-oci-hook")
        );
        assert_eq!(args.local_install_dir, PathBuf::from("/hostInstall"));
        assert_eq!(args.host_install_dir, PathBuf::from("/opt/tetragon"));
        assert_eq!(args.oci_hooks_local_dir, PathBuf::from("/hostHooks"));
        assert!(args.daemonize && !args.dry_run);
        let Some(InstallTail::HookArgs { args }) = args.hook_args else {
            panic!("no hook args")
        };
        assert_eq!(
            args,
            [
                "--grpc-address=unix:///var/run/tetragon/tetragon.sock",
                "--fail-allow-namespaces",
                "kube-system,ns1"
            ]
        );
    }

    #[test]
    fn hook_args_split_skips_flag_values_named_hook_args() {
        // `hook-args` as the value of a flag is that value, not the start of the hook's args.
        let (head, tail) = split_hook_args(argv(
            "x --log-level info install --local-install-dir hook-args --host-install-dir /h \
             hook-args --log-level=debug hook-args",
        ));
        assert_eq!(head.len(), 9);
        assert_eq!(tail.unwrap(), argv("--log-level=debug hook-args"));
        let (head, tail) = split_hook_args(argv("x patch-crio-conf hook-args"));
        assert_eq!((head.len(), tail), (3, None));
    }
}
