//! `patch-containerd-conf` and `patch-crio-conf`: check the arguments, lock the file, plan the
//! edit ([`rthooks::patch::plan_file`]), print the diff, then apply it unless `--check` or
//! `--dry-run` stops there.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rthooks::edit::{Edit, EditError};
use rthooks::error::help_error;
use rthooks::patch::{self, Output};
use rthooks::plan::Applied;
use toml_edit::DocumentMut;

use super::effective::{Judge, Pre};
use super::out::write_stdout;
use crate::cli::{ContainerdAction, ContainerdArgs, CrioAction, CrioArgs, ModeArgs};
use rthooks::effective::Goal;

/// `patch-containerd-conf`.
pub(super) fn containerd(args: ContainerdArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    if let (Some(_), Some(out)) = (&args.drop_in, &args.output) {
        return Err(help_error(
            format!(
                "--drop-in and --output `{}` both name where to write",
                out.display()
            ),
            "--drop-in writes the drop-in (and the config's `imports`) in place; drop --output",
        ));
    }
    let output = output_of(&args.mode, args.output, "--output")?;
    let mut judge = Judge {
        config: &args.config_file,
        release: args.containerd_version.as_deref(),
        force: args.force,
        action: "enable-nri".to_owned(),
    };
    let drop_in = args.drop_in.as_deref();
    match args.action {
        ContainerdAction::EnableNri if drop_in.is_some() => super::dropin::run(
            &judge,
            drop_in.unwrap_or(Path::new("auto")),
            args.undo,
            Goal::NriEnabled,
            &args.mode,
            verbose,
        ),
        ContainerdAction::EnableNri => {
            let code = run_patch(
                &args.config_file,
                &output,
                &args.mode,
                verbose,
                || judge.check(Goal::NriEnabled, rthooks::containerd::enable_nri),
                rthooks::containerd::enable_nri,
            )?;
            if let Some(warning) = super::runtime_conf::nri_validator_warning(&args.config_file) {
                eprintln!("warning: {warning}");
            }
            Ok(code)
        }
        ContainerdAction::AddOciHook { runtime_spec } => {
            let spec = runtime_spec.to_string_lossy().into_owned();
            if !runtime_spec.is_absolute() {
                return Err(help_error(
                    format!("--runtime-spec `{spec}` is not an absolute path"),
                    "containerd resolves it on the node, e.g. `/etc/containerd/base-spec.json`",
                ));
            }
            judge.action = format!("add-oci-hook --runtime-spec {spec}");
            if let Some(d) = drop_in {
                return super::dropin::run(
                    &judge,
                    d,
                    args.undo,
                    Goal::BaseRuntimeSpec(&spec),
                    &args.mode,
                    verbose,
                );
            }
            let edit = |doc: &mut DocumentMut| rthooks::containerd::add_oci_hook(doc, &spec);
            run_patch(
                &args.config_file,
                &output,
                &args.mode,
                verbose,
                || judge.check(Goal::BaseRuntimeSpec(&spec), edit),
                edit,
            )
        }
    }
}

/// `patch-crio-conf`.
pub(super) fn crio(args: CrioArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let output = output_of(&args.mode, args.output_file, "--output-file")?;
    match args.action {
        CrioAction::EnableAnnotations { annotations } => {
            let annotations: Vec<String> =
                annotations.iter().map(|a| a.trim().to_owned()).collect();
            if annotations.iter().any(String::is_empty) {
                return Err(help_error(
                    "--annotations has an empty name",
                    "pass names separated by commas, e.g. \
                     `--annotations io.kubernetes.cri-o.Devices,foo`",
                ));
            }
            let code = run_patch(
                &args.config_file,
                &output,
                &args.mode,
                verbose,
                || Ok(Pre::default()),
                |doc| rthooks::crio::enable_annotations(doc, &annotations),
            )?;
            let (notes, warnings) = super::runtime_conf::annotation_sources(&args.config_file);
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            if verbose && !args.mode.quiet {
                for note in notes {
                    eprintln!("note: {note}");
                }
            }
            Ok(code)
        }
    }
}

/// Where the patched config goes: `--in-place`, `--output`/`--output-file`, or a new temporary
/// file (upstream's default); both flags at once is an error.
fn output_of(mode: &ModeArgs, output: Option<PathBuf>, flag: &str) -> anyhow::Result<Output> {
    match (mode.in_place, output) {
        (true, Some(p)) => Err(help_error(
            format!(
                "--in-place and {flag} `{}` both name where to write",
                p.display()
            ),
            "use one of them",
        )),
        (true, None) => Ok(Output::InPlace),
        (false, Some(p)) => Ok(Output::Path(p)),
        (false, None) => Ok(Output::NewTempFile),
    }
}

/// The check/dry-run policy of both patch commands: lock (unless nothing is written), plan the
/// edit, print the diff (failing if it cannot be printed), then stop (`--check`: exit 1 when
/// changes are pending; `--dry-run`) or apply.
fn run_patch(
    config: &Path,
    output: &Output,
    mode: &ModeArgs,
    verbose: bool,
    pre: impl FnOnce() -> anyhow::Result<Pre>,
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
    // Judged under the lock, on the files as they are when the edit is planned.
    let pre = pre()?;
    for warning in &pre.warnings {
        eprintln!("warning: {warning}");
    }
    if talk {
        for note in &pre.notes {
            eprintln!("note: {note}");
        }
    }
    if let Some(done) = pre.done {
        if talk {
            eprintln!("`{}` needs no change: {done}", config.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (plan, edit) = patch::plan_file(config, output, edit_fn)?;
    super::json::plan(&plan);
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
    let applied = plan.apply()?;
    super::json::applied(&applied);
    for applied in applied {
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
