//! `tetragon-oci-hook-setup`: patches container-runtime configuration for Tetragon's runtime
//! hooks. This file only parses arguments and prints; the work is in the `rthooks` library.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rthooks::edit::{Edit, EditError};
use rthooks::patch::{self, Output};
use rthooks::plan::Applied;
use toml_edit::DocumentMut;

/// Set up Tetragon's runtime hooks on a node.
#[derive(Debug, Parser)]
#[command(name = "tetragon-oci-hook-setup", version, about, max_term_width = 100)]
struct Cli {
    /// Log level (accepted for compatibility with the upstream tool; `error` hides notes).
    #[arg(long, global = true, value_enum, default_value_t = LogLevel::Info)]
    log_level: LogLevel,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Patch containerd's config.toml.
    PatchContainerdConf(ContainerdArgs),
    /// Patch cri-o's configuration.
    PatchCrioConf(CrioArgs),
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
    let cli = Cli::parse();
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let verbose = !matches!(cli.log_level, LogLevel::Warn | LogLevel::Error);
    match cli.command {
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

fn run_patch(
    config: &std::path::Path,
    output: &Output,
    mode: &ModeArgs,
    verbose: bool,
    edit_fn: impl FnOnce(&mut DocumentMut) -> Result<Edit, EditError>,
) -> anyhow::Result<ExitCode> {
    let talk = verbose && !mode.quiet;
    let (plan, edit) = patch::plan_file(config, output, edit_fn)?;
    if talk {
        print!("{}", plan.diff());
        let _ = std::io::stdout().flush();
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
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
