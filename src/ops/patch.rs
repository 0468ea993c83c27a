//! `patch-containerd-conf` and `patch-crio-conf`: check the arguments, lock the file, plan the
//! edit ([`rthooks::patch::plan_file`]), print the diff, then apply it unless `--check` or
//! `--dry-run` stops there.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rthooks::edit::{Edit, EditError};
use rthooks::error::{WithHelp, help_error};
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
    let path = args.config_file.display();
    let mut judge = Judge {
        config: &args.config_file,
        release: args.containerd_version.as_deref(),
        force: args.force,
        action: "enable-nri".to_owned(),
        created: None,
        imports_nothing: std::cell::Cell::new(false),
    };
    if args.create && is_absent(&args.config_file) {
        let (release, source) = judge.release_for_new_file()?;
        // containerd 2.x reads version 3 (2.3 also 4), 1.x version 2.
        let version = if release.major >= 2 { 3 } else { 2 };
        if verbose && !args.mode.quiet {
            eprintln!(
                "note: `{path}` does not exist: starting from an empty `version = {version}` \
                 config (containerd {release}, from {source}); it is created only if the edit \
                 changes something"
            );
        }
        judge.created = Some(format!("version = {version}\n"));
    }
    if judge.created.is_none() {
        require_config(
            &args.config_file,
            missing_containerd_help(&args.action, &path),
        )?;
    }
    let created = judge.created.clone();
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
                created.as_deref(),
                (&output, "--output"),
                &args.mode,
                verbose,
                || judge.check(Goal::NriEnabled, rthooks::containerd::enable_nri),
                rthooks::containerd::enable_nri,
            )?;
            if let Some(warning) = super::runtime_conf::nri_validator_warning(
                &args.config_file,
                judge.imports_nothing.get(),
            ) {
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
            if created.is_some() {
                // An empty config defines no runc runtime: nothing to point at the spec, and a
                // success that wrote nothing would leave containers without the hook.
                return Err(help_error(
                    format!(
                        "--create: an empty `{path}` has no runc runtime for `add-oci-hook` to \
                         point at `{spec}`"
                    ),
                    format!(
                        "start from containerd's default config, which lists it: `containerd \
                         config default > {path}`, then re-run without --create; or use the NRI \
                         interface (`install --interface nri-hook`; containerd 2.x has NRI on \
                         without a config)"
                    ),
                ));
            }
            let edit = |doc: &mut DocumentMut| rthooks::containerd::add_oci_hook(doc, &spec);
            run_patch(
                &args.config_file,
                created.as_deref(),
                (&output, "--output"),
                &args.mode,
                verbose,
                || judge.check(Goal::BaseRuntimeSpec(&spec), edit),
                edit,
            )
        }
    }
}

/// The fix of a missing containerd config, for each action.
fn missing_containerd_help(action: &ContainerdAction, path: &impl std::fmt::Display) -> String {
    match action {
        ContainerdAction::EnableNri => format!(
            "containerd 2.x runs without a config file, with NRI enabled: nothing to enable \
                 then. containerd 1.7 needs one: re-run with --create to start from an empty \
                 `version = 2` file, or create the whole default with `containerd config default \
                 > {path}`; or pass the file containerd is started with (`--config-file`)"
        ),
        ContainerdAction::AddOciHook { .. } => format!(
            "create it with `containerd config default > {path}` (containerd 2.x may run \
                 without a config file; the default one lists the runc runtime this edit \
                 changes) and re-run, or pass the file containerd is started with \
                 (`--config-file`)"
        ),
    }
}

/// `patch-crio-conf`.
pub(super) fn crio(args: CrioArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let output = output_of(&args.mode, args.output_file, "--output-file")?;
    require_config(
        &args.config_file,
        format!(
            "cri-o reads `{}`, then every file in `{}.d/`: pass the file that defines \
             `[crio.runtime.runtimes.NAME]` (`crio config` prints the config cri-o runs with)",
            rthooks::defaults::CRIO_CONFIG,
            rthooks::defaults::CRIO_CONFIG
        ),
    )?;
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
                None,
                (&output, "--output-file"),
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

/// Whether nothing at all is at `path` (not even a dangling symlink): what `--create` creates.
fn is_absent(path: &Path) -> bool {
    matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// A config file that does not exist is an error whose fix (`help`) says what the runtime does
/// without one. Anything else wrong with the file is for the bounded read to report.
/// A symlink whose target does not exist is said to be one: creating the config (`--create`)
/// never goes through a link, so the fix is the link's target.
fn require_config(config: &Path, help: String) -> anyhow::Result<()> {
    match std::fs::metadata(config) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !is_absent(config) => {
            let to = std::fs::read_link(config)
                .map(|t| format!(" to `{}`", t.display()))
                .unwrap_or_default();
            Err(e).with_help(
                || {
                    format!(
                        "failed to read `{}`: it is a symlink{to}, which does not exist",
                        config.display()
                    )
                },
                "create the file the link points to, or pass the real config with                  `--config-file` (`--create` never creates a file through a link)",
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(e).with_help(|| format!("failed to read `{}`", config.display()), help)
        }
        _ => Ok(()),
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
/// changes are pending; `--dry-run`) or apply. `output` comes with the name of its flag, for
/// the note that says where the result went.
fn run_patch(
    config: &Path,
    start: Option<&str>,
    (output, out_flag): (&Output, &str),
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
    let (plan, edit) = match (pre.patched, start) {
        // The check read and patched the file already: planned from that.
        (Some(patched), start) => patch::plan_patched(config, patched, start.is_some(), output)?,
        (None, Some(start)) => patch::plan_new_file(config, start, output, edit_fn)?,
        (None, None) => patch::plan_file(config, output, edit_fn)?,
    };
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
            if matches!(output, Output::NewTempFile) {
                eprintln!(
                    "note: without --dry-run this writes the result to a new temporary file and \
                     leaves `{}` unchanged; add --in-place to change it",
                    config.display()
                );
            }
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
                    if talk {
                        eprintln!(
                            "note: `{}` itself is unchanged; to change it, re-run with \
                             --in-place (or {out_flag} {})",
                            config.display(),
                            config.display()
                        );
                    }
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
