//! What each command does, one module per command: the orchestration around the core
//! (`rthooks`): signals, plan, diff, apply, wait, undo, the check/dry-run policy, and every
//! line printed. The core modules know no command line and print nothing.
//!
//! The flow is one way: arguments ([`crate::cli`]) -> ops -> (read, edit, verify) -> plan ->
//! diff -> apply.

#[macro_use]
mod out;
mod dropin;
mod effective;
mod install;
mod json;
mod nri;
mod patch;
mod print_config;
mod runtime_conf;
mod status;
mod uninstall;

use std::process::ExitCode;

use rthooks::plan::{Applied, Plan};

use crate::cli::{Cli, Command, ContainerdAction, CrioAction, Interface, OutputFormat};
use oci_hook::log::Level;

pub(crate) use self::nri::run_prelaunched_from_config;

/// Runs the parsed command line; `Ok` holds the exit code (1: `--check` found changes). With
/// `--output-format json` the result, or the error, is printed as one JSON document
/// ([`json`]) and an error becomes exit code 2 here.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some((command, dry_run, check)) = json_request(&cli) {
        json::start(command, dry_run, check);
    }
    json::finish(dispatch(cli))
}

/// A command line that did not parse: as a JSON error document for `command` when
/// `--output-format json` was asked for, else returned for `main` to print.
pub(crate) fn parse_failed(err: anyhow::Error, json: Option<String>) -> anyhow::Result<ExitCode> {
    let Some(command) = json else {
        return Err(err);
    };
    json::start(command, false, false);
    json::finish(Err(err))
}

/// The command's name, `--dry-run` and `--check`, when `--output-format json` was given.
fn json_request(cli: &Cli) -> Option<(String, bool, bool)> {
    let (format, command, dry_run, check) = match &cli.command {
        Command::PatchContainerdConf(a) => {
            let action = match a.action {
                ContainerdAction::EnableNri => "enable-nri",
                ContainerdAction::AddOciHook { .. } => "add-oci-hook",
            };
            let command = format!("patch-containerd-conf {action}");
            (a.mode.output_format, command, a.mode.dry_run, a.mode.check)
        }
        Command::PatchCrioConf(a) => {
            let CrioAction::EnableAnnotations { .. } = a.action;
            let command = "patch-crio-conf enable-annotations".to_owned();
            (a.mode.output_format, command, a.mode.dry_run, a.mode.check)
        }
        Command::Install(a) => (a.output_format, "install".to_owned(), a.dry_run, false),
        Command::Uninstall(a) => (a.output_format, "uninstall".to_owned(), a.dry_run, false),
        // `print-config` prints the hook file; `status` its own document.
        Command::PrintConfig(_) | Command::Status(_) => return None,
    };
    (format == OutputFormat::Json).then_some((command, dry_run, check))
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let verbose = !matches!(cli.log_level, Level::Warn | Level::Error);
    match cli.command {
        Command::Install(args) if args.interface == Interface::NriHook => {
            nri::install(args, cli.log_level)
        }
        Command::Install(args) => install::install(args, verbose),
        Command::Uninstall(args) => uninstall::uninstall(args, verbose),
        Command::PrintConfig(args) => print_config::print_config(&args),
        Command::Status(args) => status::status(&args),
        Command::PatchContainerdConf(args) => patch::containerd(args, verbose),
        Command::PatchCrioConf(args) => patch::crio(args, verbose),
    }
}

/// Prints `err` on stderr (after what is already on stdout): `error: ...`, the causes, then
/// `help: ...`.
pub(crate) fn print_error(err: &anyhow::Error) {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    eprintln!("{}", rthooks::error::render(err));
}

/// The diff on stdout, one line per binary copy or removal on stderr.
fn show_plan(plan: &Plan, talk: bool) {
    use std::io::Write as _;
    json::plan(plan);
    if json::active() {
        return;
    }
    if !talk {
        return;
    }
    print!("{}", plan.diff());
    let _ = std::io::stdout().flush();
    for line in plan.summary() {
        eprintln!("{line}");
    }
}

/// One line per applied step that needs saying: always the surprises (a file absent or no
/// longer ours), the writes and removals only when `verbose`.
fn report(applied: &[Applied], verbose: bool) {
    json::applied(applied);
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
