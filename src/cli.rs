//! The command line: clap types only, and the split of `install ... hook-args` that clap cannot
//! do. What each command does is in [`crate::ops`].

use std::ffi::OsString;
use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use oci_hook::log::Level;
use rthooks::defaults;

/// Set up Tetragon's runtime hooks on a node.
#[derive(Debug, Parser)]
#[command(name = "tetragon-oci-hook-setup", version, about, max_term_width = 100)]
pub(crate) struct Cli {
    /// Log level (accepted for compatibility with the upstream tool; `error` hides notes).
    #[arg(long, global = true, default_value = "info", value_parser = log_level_parser())]
    pub(crate) log_level: Level,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `--log-level`: one of [`Level::NAMES`] (`trace` is `debug`), shown in `--help` as a value
/// enum would be.
fn log_level_parser() -> impl clap::builder::TypedValueParser<Value = Level> {
    PossibleValuesParser::new(Level::NAMES).map(|name| Level::parse(&name).unwrap_or(Level::Info))
}

// Parsed once per run: the size of the install variant costs nothing worth a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Patch containerd's config.toml.
    #[command(after_help = CONTAINERD_OUTPUT_HELP)]
    PatchContainerdConf(ContainerdArgs),
    /// Patch cri-o's configuration.
    #[command(after_help = CRIO_OUTPUT_HELP)]
    PatchCrioConf(CrioArgs),
    /// Install the hook binary and its hook file.
    #[command(
        disable_help_subcommand = true,
        subcommand_value_name = "hook-args <HOOK-FLAGS>...",
        subcommand_help_heading = "Hook arguments (last on the line)"
    )]
    Install(InstallArgs),
    /// Remove the hook file and the hook binary.
    Uninstall(UninstallArgs),
    /// Print the hook file (hooks.d JSON) for a hook binary.
    PrintConfig(PrintConfigArgs),
    /// Check whether the hook is set up and working on this node, and say why not (exit 0 all
    /// ok, 1 warnings only, 2 a failure). Writes nothing.
    Status(StatusArgs),
}

/// Where a patch command's result goes, at the end of its `--help` (`-h` too).
const CONTAINERD_OUTPUT_HELP: &str = "\
Where the result goes: without --in-place or --output, the patched config is written to a new
temporary file (its path is printed, as upstream's tool does) and the config file itself is left
unchanged. Pass --in-place to change the config itself; --dry-run or --check only show the diff.";

/// [`CONTAINERD_OUTPUT_HELP`] for `patch-crio-conf` (its flag is `--output-file`).
const CRIO_OUTPUT_HELP: &str = "\
Where the result goes: without --in-place or --output-file, the patched config is written to a
new temporary file (its path is printed, as upstream's tool does) and the config file itself is
left unchanged. Pass --in-place to change the config itself; --dry-run or --check only show the
diff.";

/// How the runtime is told about the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Interface {
    /// A hooks.d JSON file (cri-o, podman).
    OciHooks,
    /// An NRI plugin (containerd): stays up and adds the hook to every new container.
    NriHook,
}

/// What `status` and the patch, install and uninstall commands print: text for a person, or
/// one JSON document on stdout for automation (each command's schema is in the README,
/// `schema_version` 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum OutputFormat {
    /// For a person: status, one line per check, worst first; the others, the diff on stdout
    /// and notes on stderr.
    #[default]
    Text,
    /// One JSON document on stdout, nothing else there (`schema_version` 1).
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// How the runtime is told about the hook.
    #[arg(long, value_enum, default_value_t = Interface::OciHooks)]
    pub(crate) interface: Interface,

    /// The hook binary to install.
    #[arg(
        long,
        value_name = "PATH",
        default_value = defaults::LOCAL_BINARY
    )]
    pub(crate) local_binary: PathBuf,

    /// The install dir as mounted here (the binary is copied into it).
    #[arg(long, value_name = "DIR", required = true)]
    pub(crate) local_install_dir: PathBuf,

    /// The same dir as the host sees it (used for every path written into the hook file).
    #[arg(long, value_name = "DIR", required = true)]
    pub(crate) host_install_dir: PathBuf,

    /// The runtime's hooks dir as mounted here (oci-hooks interface).
    #[arg(
        long = "oci-hooks.local-dir",
        value_name = "DIR",
        default_value = defaults::HOOKS_LOCAL_DIR
    )]
    pub(crate) oci_hooks_local_dir: PathBuf,

    /// The runtime's hooks dir as the host sees it, checked against `--crio-config` or
    /// `--containers-conf` (oci-hooks interface). Default: `--oci-hooks.local-dir` when it is
    /// not the chart's `/hostHooks`, else the chart's default hooks path
    /// `/usr/share/containers/oci/hooks.d`.
    #[arg(long = "oci-hooks.host-dir", value_name = "DIR")]
    pub(crate) oci_hooks_host_dir: Option<PathBuf>,

    /// cri-o's config file (its `<file>.d/` drop-ins are read too), or `auto` for
    /// `/etc/crio/crio.conf`: oci-hooks checks that cri-o reads the hooks dir, nri-hook that
    /// cri-o's NRI validator accepts OCI hooks.
    #[arg(long, value_name = "PATH|auto")]
    pub(crate) crio_config: Option<PathBuf>,

    /// podman's config: a `containers.conf` read alone (as podman reads `CONTAINERS_CONF`), or
    /// `auto` for root's podman 4/5 file chain (`/usr/share/containers/containers.conf`,
    /// `/etc/containers/containers.conf` and its `.d/*.conf`, root's
    /// `~/.config/containers/containers.conf` and its `.d/*.conf`, then `$CONTAINERS_CONF_OVERRIDE`
    /// when set here): check that podman reads the hooks dir (oci-hooks interface).
    #[arg(long, value_name = "PATH|auto")]
    pub(crate) containers_conf: Option<PathBuf>,

    /// containerd's config: nri-hook refuses to start when containerd's NRI validator rejects
    /// OCI hooks (a missing file: nothing to check).
    #[arg(
        long,
        value_name = "PATH",
        default_value = defaults::CONTAINERD_CONFIG
    )]
    pub(crate) containerd_config: PathBuf,

    /// Index of the NRI plugin (nri-hook interface).
    #[arg(long = "nri-hook.index", value_name = "NN", default_value = defaults::NRI_PLUGIN_INDEX)]
    pub(crate) nri_hook_index: String,

    /// Name of the NRI plugin (nri-hook interface).
    #[arg(
        long = "nri-hook.name",
        value_name = "NAME",
        default_value = defaults::NRI_PLUGIN_NAME
    )]
    pub(crate) nri_hook_name: String,

    /// The runtime's NRI socket (nri-hook interface).
    #[arg(
        long = "nri-hook.socket",
        value_name = "PATH",
        default_value = defaults::NRI_SOCKET
    )]
    pub(crate) nri_hook_socket: PathBuf,

    /// Exit with an error after this many seconds without a registration (nri-hook interface).
    #[arg(
        long = "nri-hook.give-up-after",
        value_name = "SECONDS",
        default_value_t = 60.0
    )]
    pub(crate) nri_hook_give_up_after: f64,

    /// After installing, wait for SIGINT or SIGTERM, then uninstall what was installed.
    #[arg(long)]
    pub(crate) daemonize: bool,

    /// Show the hook file diff and the binary copy; write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// `json`: print the result as one JSON document on stdout (with --daemonize, once
    /// installed).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = OutputFormat::Text)]
    pub(crate) output_format: OutputFormat,

    #[command(subcommand)]
    pub(crate) hook_args: Option<InstallTail>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum InstallTail {
    /// The rest of the line is the hook's own flags, written into the hook file as they are
    /// (`install hook-args --help` lists them).
    #[command(disable_help_flag = true, long_about = HOOK_ARGS_ABOUT)]
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

/// What `install hook-args --help` says before the hook's own flags.
const HOOK_ARGS_ABOUT: &str = "\
Everything after `hook-args` is the hook's own command line: it is not read as flags of
`install`, and goes as it is into the hook file (after `createRuntime --log-fname PATH`).
`install` checks it with the hook's rules first and refuses a typo. Put `hook-args` last.

Example:
  tetragon-oci-hook-setup install --local-install-dir /hostInstall --host-install-dir /opt/tetragon \\
    hook-args --grpc-address unix:///var/run/tetragon/tetragon.sock --fail-allow-namespaces kube-system";

/// Which setup `status` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StatusInterface {
    /// A hooks.d JSON file (cri-o, podman).
    OciHooks,
    /// Our NRI plugin (containerd).
    NriHook,
    /// nri-hook when the plugin's state file or the NRI socket is there, else oci-hooks.
    Auto,
}

/// `status`: the flags of `install` (same names and defaults), so the DaemonSet can run it with
/// the flags it has.
#[derive(Debug, Clone, Args)]
pub(crate) struct StatusArgs {
    /// Which setup to check.
    #[arg(long, value_enum, default_value_t = StatusInterface::Auto)]
    pub(crate) interface: StatusInterface,

    /// containerd's config (nri-hook: NRI must be enabled in it, with its imports).
    #[arg(
        long,
        visible_alias = "containerd-config",
        value_name = "PATH",
        default_value = defaults::CONTAINERD_CONFIG
    )]
    pub(crate) config_file: PathBuf,

    /// The containerd release reading the config (`X.Y`), which decides how imports merge
    /// [default: from the config's `version`: 3 and more is 2.x].
    #[arg(long, value_name = "X.Y")]
    pub(crate) containerd_version: Option<String>,

    /// The image's copy of the hook binary, compared with the installed one.
    #[arg(long, value_name = "PATH", default_value = defaults::LOCAL_BINARY)]
    pub(crate) local_binary: PathBuf,

    /// The install dir as mounted here.
    #[arg(long, value_name = "DIR", required = true)]
    pub(crate) local_install_dir: PathBuf,

    /// The same dir as the host sees it (the paths in the hook file) [default: --local-install-dir].
    #[arg(long, value_name = "DIR")]
    pub(crate) host_install_dir: Option<PathBuf>,

    /// The runtime's hooks dir as mounted here (oci-hooks interface).
    #[arg(
        long = "oci-hooks.local-dir",
        value_name = "DIR",
        default_value = defaults::HOOKS_LOCAL_DIR
    )]
    pub(crate) oci_hooks_local_dir: PathBuf,

    /// The runtime's hooks dir as the host sees it, checked against `--crio-config` or
    /// `--containers-conf` (as for `install`).
    #[arg(long = "oci-hooks.host-dir", value_name = "DIR")]
    pub(crate) oci_hooks_host_dir: Option<PathBuf>,

    /// cri-o's config (or `auto`): check that cri-o reads the hooks dir (oci-hooks).
    #[arg(long, value_name = "PATH|auto")]
    pub(crate) crio_config: Option<PathBuf>,

    /// podman's containers.conf (or `auto`): check that podman reads the hooks dir (oci-hooks).
    #[arg(long, value_name = "PATH|auto")]
    pub(crate) containers_conf: Option<PathBuf>,

    /// Index of the NRI plugin (nri-hook interface).
    #[arg(long = "nri-hook.index", value_name = "NN", default_value = defaults::NRI_PLUGIN_INDEX)]
    pub(crate) nri_hook_index: String,

    /// Name of the NRI plugin (nri-hook interface).
    #[arg(
        long = "nri-hook.name",
        value_name = "NAME",
        default_value = defaults::NRI_PLUGIN_NAME
    )]
    pub(crate) nri_hook_name: String,

    /// The runtime's NRI socket (nri-hook interface).
    #[arg(
        long = "nri-hook.socket",
        value_name = "PATH",
        default_value = defaults::NRI_SOCKET
    )]
    pub(crate) nri_hook_socket: PathBuf,

    /// The agent's address [default: the installed hook's `--grpc-address`, else
    /// `unix:///var/run/tetragon/tetragon.sock`].
    #[arg(long, value_name = "ADDR")]
    pub(crate) grpc_address: Option<String>,

    /// The longest the whole run may take (`2s`, `500ms`); every probe is cut to fit.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_timeout)]
    pub(crate) timeout: std::time::Duration,

    /// Output format.
    #[arg(long, visible_alias = "output-format", value_enum, default_value_t = OutputFormat::Text)]
    pub(crate) output: OutputFormat,

    /// Exit 0 when the worst result is a warning (for a readiness probe: a refused container
    /// in the log should not take the pod out of service).
    #[arg(long)]
    pub(crate) ignore_warnings: bool,

    /// Checks to leave out, by id (comma-separated, repeatable): `runtime-config`,
    /// `nri-socket`, `nri-plugin`, `hook-file`, `binary`, `agent`, `hook-log`, `danger`.
    /// `agent` also leaves out `danger` (which needs it); the agent is then not contacted.
    #[arg(
        long,
        value_name = "ID,...",
        value_delimiter = ',',
        value_parser = clap::builder::PossibleValuesParser::new(rthooks::status::CHECK_IDS)
    )]
    pub(crate) skip: Vec<String>,

    /// The DaemonSet's readiness probe: does this pod do its job (hook or plugin in place,
    /// binary sound, runtime config right)? Same as `--skip agent,danger,hook-log
    /// --ignore-warnings`: an agent down at rollout, or a refused container in the log, does
    /// not make the pod unready.
    #[arg(long)]
    pub(crate) probe: bool,
}

/// `--timeout`: a Go-style duration or plain seconds, above zero and at most 60 s.
fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = match s.parse::<f64>() {
        Ok(secs) => std::time::Duration::try_from_secs_f64(secs).map_err(|e| e.to_string())?,
        Err(_) => oci_hook::args::parse_duration(s).map_err(|e| format!("{e:#}"))?,
    };
    if d.is_zero() || d > std::time::Duration::from_secs(60) {
        return Err(format!("`{s}` is not between 0 and 60 s (e.g. `2s`)"));
    }
    Ok(d)
}

#[derive(Debug, Args)]
pub(crate) struct UninstallArgs {
    /// How the runtime was told about the hook.
    #[arg(long, value_enum, default_value_t = Interface::OciHooks)]
    pub(crate) interface: Interface,

    /// The install dir as mounted here.
    #[arg(long, value_name = "DIR", required = true)]
    pub(crate) local_install_dir: PathBuf,

    /// File name of the installed hook binary.
    #[arg(long, value_name = "NAME", default_value = defaults::BINARY_NAME)]
    pub(crate) binary_name: String,

    /// The runtime's hooks dir as mounted here.
    #[arg(
        long = "oci-hooks.local-dir",
        value_name = "DIR",
        default_value = defaults::HOOKS_LOCAL_DIR
    )]
    pub(crate) oci_hooks_local_dir: PathBuf,

    /// Show what would be removed; remove nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// `json`: print the result as one JSON document on stdout.
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = OutputFormat::Text)]
    pub(crate) output_format: OutputFormat,
}

#[derive(Debug, Args)]
pub(crate) struct PrintConfigArgs {
    /// The hook binary's path on the host.
    #[arg(
        long,
        value_name = "PATH",
        default_value = defaults::LOCAL_BINARY
    )]
    pub(crate) binary: PathBuf,

    /// The hook's own flags, as after `install ... hook-args` (takes every argument after it,
    /// flags included; checked as `install` checks them).
    #[arg(long, value_name = "HOOK-FLAGS", num_args = 1.., allow_hyphen_values = true)]
    pub(crate) args: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ContainerdArgs {
    #[command(subcommand)]
    pub(crate) action: ContainerdAction,

    /// containerd configuration file to read.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = defaults::CONTAINERD_CONFIG
    )]
    pub(crate) config_file: PathBuf,

    /// Write the patched config here (the config file itself means --in-place) [default: a new
    /// temporary file; the config itself is left unchanged].
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) output: Option<PathBuf>,

    /// The containerd release that reads the config (`X.Y`), which decides how imported files
    /// merge [default: from `containerd --version`, else from the config's `version`].
    #[arg(long, global = true, value_name = "X.Y")]
    pub(crate) containerd_version: Option<String>,

    /// Edit a config that k3s or rke2 regenerate at every start (the edit is lost then).
    #[arg(long, global = true)]
    pub(crate) force: bool,

    /// Put the change in our own drop-in file instead of the config (`auto`: in the drop-in dir
    /// the config imports: conf.d, config.d, config.toml.d or config-v3.toml.d).
    #[arg(long, global = true, value_name = "PATH|auto")]
    pub(crate) drop_in: Option<PathBuf>,

    /// With --drop-in: remove our drop-in and the `imports` entry we added for it.
    #[arg(long, global = true, requires = "drop_in")]
    pub(crate) undo: bool,

    /// When the config file does not exist (containerd 2.x runs without one), start from an
    /// empty file with the `version` the containerd release reads (3 for 2.x, 2 for 1.x: from
    /// --containerd-version, else `containerd --version`). The file is created only if the edit
    /// changes something (enable-nri on 1.x; add-oci-hook needs containerd's default config).
    #[arg(long, global = true, conflicts_with = "drop_in")]
    pub(crate) create: bool,

    #[command(flatten)]
    pub(crate) mode: ModeArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ContainerdAction {
    /// Enable NRI (needed by `install --interface nri-hook` on containerd 1.7).
    #[command(after_help = CONTAINERD_OUTPUT_HELP)]
    EnableNri,
    /// Point runc runtimes at a base runtime spec that holds the hook (without NRI).
    #[command(after_help = CONTAINERD_OUTPUT_HELP)]
    AddOciHook {
        /// Base runtime spec to set as `base_runtime_spec`.
        #[arg(
            long,
            value_name = "PATH",
            default_value = defaults::CONTAINERD_BASE_SPEC
        )]
        runtime_spec: PathBuf,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CrioArgs {
    #[command(subcommand)]
    pub(crate) action: CrioAction,

    /// cri-o configuration file to read (crio.conf or a crio.conf.d drop-in).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = defaults::CRIO_CONFIG
    )]
    pub(crate) config_file: PathBuf,

    /// Write the patched config here (the config file itself means --in-place) [default: a new
    /// temporary file; the config itself is left unchanged].
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) output_file: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) mode: ModeArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CrioAction {
    /// Add annotations to `allowed_annotations` of every runtime.
    #[command(after_help = CRIO_OUTPUT_HELP)]
    EnableAnnotations {
        /// Annotations to allow, comma-separated or repeated.
        #[arg(long, value_name = "A[,B...]", value_delimiter = ',', required = true)]
        annotations: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ModeArgs {
    /// Print the diff and write nothing.
    #[arg(long, global = true)]
    pub(crate) dry_run: bool,

    /// Write nothing; exit 0 when nothing needs changing, 1 when changes are pending.
    #[arg(long, global = true)]
    pub(crate) check: bool,

    /// Write the patched config back to the config file, atomically (without it, the config
    /// file is left unchanged).
    #[arg(long, global = true)]
    pub(crate) in_place: bool,

    /// Print only warnings and errors (no diff, no status).
    #[arg(long, global = true)]
    pub(crate) quiet: bool,

    /// `json`: print the result as one JSON document on stdout (the diff is a field of it).
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value_t = OutputFormat::Text
    )]
    pub(crate) output_format: OutputFormat,
}

/// Parses the command line. Everything after `install ... hook-args` is taken verbatim: clap
/// would otherwise read a hook argument such as `--log-level` or `--help` as its own flag.
pub(crate) fn parse_cli(argv: Vec<OsString>) -> anyhow::Result<Cli> {
    let (head, tail) = split_hook_args(argv);
    // `install hook-args --help` (or `-h`) alone asks what `hook-args` is: the help is shown on
    // every line. A line that is no install yet (required flags missing) then exits 0, as clap's
    // `--help`. On a complete install line (a chart's values) it also fails, nothing installed:
    // `--help` never goes into a hook file (the hook would print and exit, a no-op), and an
    // install that quietly did nothing would leave the node without the hook.
    if let Some([only]) = tail.as_deref() {
        // Any other mistake on the line (an unknown flag, a bad value) is clap's to report.
        let head_ok = match Cli::try_parse_from(&head) {
            Ok(_) => Some(true),
            Err(e) if e.kind() == clap::error::ErrorKind::MissingRequiredArgument => Some(false),
            Err(_) => None,
        };
        if let (true, Some(complete)) = (only == "--help" || only == "-h", head_ok) {
            use std::io::Write as _;
            // As clap's own `--help`: on stdout (a closed stdout is no error here).
            let _ = std::io::stdout().write_all(hook_args_help().as_bytes());
            if !complete {
                std::process::exit(0);
            }
            return Err(rthooks::error::help_error(
                format!(
                    "invalid hook arguments:\n`{}` after `hook-args` on a complete install \
                     line: its help is shown above, nothing was installed",
                    only.to_string_lossy()
                ),
                "`--help` is never written into the hook file (the hook would print its usage \
                 and exit, a no-op); remove it to install",
            ));
        }
    }
    let json = json_command(&head);
    let mut cli = match Cli::try_parse_from(head) {
        Ok(cli) => cli,
        // A usage error with `--output-format json` is a JSON error like any other (`--help`
        // and `--version` still print their text).
        Err(e) if e.use_stderr() && json.is_some() => {
            return Err(usage_error(&e, json.as_deref().unwrap_or_default()));
        }
        Err(e) => e.exit(),
    };
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

/// The command whose result `argv` asks to have as this tool's JSON document
/// (`--output-format json` on a patch, install or uninstall command line); `status` prints its
/// own.
pub(crate) fn json_command(argv: &[OsString]) -> Option<String> {
    wants_json(argv)
        .then(|| command_path(argv))
        .filter(|c| c.split(' ').next() != Some("status"))
}

/// Whether `argv` (before any `hook-args`) asks for `--output-format json`.
fn wants_json(argv: &[OsString]) -> bool {
    argv.iter().enumerate().any(|(i, a)| {
        a == "--output-format=json"
            || (a == "--output-format" && argv.get(i + 1).is_some_and(|v| v == "json"))
    })
}

/// The subcommands named in `argv` (`patch-containerd-conf enable-nri`), as far as they are
/// known: for a result or error document made before the command line is parsed.
fn command_path(argv: &[OsString]) -> String {
    let root = Cli::command();
    let mut cmd = &root;
    let mut path = Vec::new();
    for a in argv.iter().skip(1).filter_map(|a| a.to_str()) {
        if let Some(sub) = cmd.find_subcommand(a) {
            path.push(a);
            cmd = sub;
        }
    }
    path.join(" ")
}

/// A clap usage error as ours: its first line as the message, its tip (or `--help`) as the fix.
fn usage_error(e: &clap::Error, command: &str) -> anyhow::Error {
    let text = e.render().to_string();
    let message = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    let mut details = text
        .lines()
        .skip(1)
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"));
    let listed: Vec<&str> = details.by_ref().collect();
    let message = if listed.is_empty() {
        message
    } else {
        format!("{message} {}", listed.join(", "))
    };
    let help = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("tip: "))
        .map_or_else(
            || format!("see `tetragon-oci-hook-setup {command} --help`"),
            str::to_owned,
        );
    rthooks::error::help_error(message, help)
}

/// `install hook-args --help`: what `hook-args` is, then the hook's flags.
pub(crate) fn hook_args_help() -> String {
    let mut cmd = Cli::command();
    // Built, so that the usage line names the binary.
    cmd.build();
    let usage = cmd
        .find_subcommand_mut("install")
        .map(|install| install.render_usage().to_string())
        .unwrap_or_default();
    let hook = oci_hook::args::usage();
    // The hook's flag list, without its own usage line and hook names, and without the flags
    // `install` refuses in hook-args (they make the hook print and exit, a no-op).
    let flags = match hook.find("\nFlags") {
        Some(at) => format!("Hook flags{}", &hook[at + "\nFlags".len()..]),
        None => hook.clone(),
    };
    let flags: Vec<&str> = flags
        .trim_end()
        .lines()
        .filter(|l| !l.trim_start().starts_with("--just-print-config"))
        .collect();
    format!(
        "{HOOK_ARGS_ABOUT}\n\n{usage}\n\n{}\n\n(`--just-print-config`, `--help` and \
         `--version` are refused here: they make the hook print and exit, a no-op.)\n",
        flags.join("\n")
    )
}

/// Splits `argv` after the `hook-args` of an `install` command line, if there is one.
pub(crate) fn split_hook_args(argv: Vec<OsString>) -> (Vec<OsString>, Option<Vec<OsString>>) {
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
    fn runtime_config_flags_take_their_values_before_hook_args() {
        let cli = parse_cli(argv(
            "x install --local-install-dir /i --host-install-dir /h --crio-config auto \
             --containers-conf hook-args --oci-hooks.host-dir /etc/containers/oci/hooks.d \
             hook-args --crio-config",
        ))
        .unwrap();
        let Command::Install(args) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(args.crio_config, Some(PathBuf::from("auto")));
        assert_eq!(args.containers_conf, Some(PathBuf::from("hook-args")));
        assert_eq!(
            args.containerd_config,
            PathBuf::from(defaults::CONTAINERD_CONFIG)
        );
        let Some(InstallTail::HookArgs { args }) = args.hook_args else {
            panic!("no hook args")
        };
        assert_eq!(args, ["--crio-config"]);
    }

    #[test]
    fn status_takes_the_charts_install_flags_and_both_output_spellings() {
        let cli = parse_cli(argv(
            "x status --interface=nri-hook --local-install-dir=/hostInstall \
             --host-install-dir=/opt/tetragon --oci-hooks.local-dir=/hostHooks \
             --nri-hook.socket=/var/run/nri/nri.sock --timeout 500ms --output-format json",
        ))
        .unwrap();
        let Command::Status(args) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(args.interface, StatusInterface::NriHook);
        assert_eq!(args.timeout, std::time::Duration::from_millis(500));
        assert_eq!(args.output, OutputFormat::Json);
        assert_eq!(
            parse_timeout("1.5"),
            Ok(std::time::Duration::from_millis(1500))
        );
        assert!(parse_timeout("0s").is_err() && parse_timeout("2m").is_err());
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
