//! `patch-containerd-conf ... --drop-in PATH|auto [--undo]`: the change goes into our own
//! drop-in file; the main file gets an `imports` entry only when no import covers the drop-in.
//! The result is checked on the effective config as containerd will load it (the planned files
//! overlaid on the disk) before anything is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rthooks::dropin;
use rthooks::edit::Edit;
use rthooks::effective::{self, Goal};
use rthooks::error::help_error;
use rthooks::plan::{Current, FileInstall, FileRemove, FileWrite, Plan, Step, Target, diff_label};
use toml_edit::DocumentMut;

use super::effective::Judge;
use super::out::write_stdout;
use crate::cli::ModeArgs;

/// Runs the drop-in mode of one `patch-containerd-conf` action.
pub(super) fn run(
    judge: &Judge<'_>,
    drop_in: &Path,
    undo: bool,
    goal: Goal<'_>,
    mode: &ModeArgs,
    verbose: bool,
) -> anyhow::Result<ExitCode> {
    let talk = verbose && !mode.quiet;
    // Absolute from here on: imports resolve against its directory, the header records it,
    // and a relative `--config-file` names the same files either way.
    let config_abs = effective::clean(&std::env::current_dir()?.join(judge.config));
    let config = config_abs.as_path();
    let _lock = if mode.check || mode.dry_run {
        None
    } else {
        rthooks::patch::lock_for(
            config,
            &rthooks::patch::Output::InPlace,
            rthooks::plan::LOCK_WAIT,
        )?
    };
    let text = rthooks::patch::read_config(config)?;
    // The main file's own errors, as without --drop-in (a cri-o file included).
    rthooks::patch::patch_text(config, &text, |doc| {
        rthooks::containerd::refuse_other_config(doc).map(|()| Edit::default())
    })?;
    let doc: DocumentMut = text
        .strip_prefix('\u{feff}')
        .unwrap_or(&text)
        .parse()
        .map_err(|e| anyhow::anyhow!("failed to parse `{}`: {e}", config.display()))?;
    let drop_in = resolve_drop_in(config, &doc, drop_in)?;
    let current = rthooks::plan::read_current(&drop_in, rthooks::plan::MAX_CONFIG_BYTES)?;
    let existing = match &current {
        Current::Absent => None,
        Current::File { bytes, .. } => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => {
            return Err(help_error(
                format!("`{}` is not a regular file", drop_in.display()),
                "remove it or pass another --drop-in path; nothing was written",
            ));
        }
    };
    if let Some(text) = &existing {
        if !text.starts_with(dropin::HEADER) {
            return Err(help_error(
                format!(
                    "`{}` exists and is not a drop-in of this tool (its first line is not `{}`)",
                    drop_in.display(),
                    dropin::HEADER
                ),
                "pass another --drop-in path; this tool only writes and removes its own files",
            ));
        }
    }
    // A hand edit gone wrong in our drop-in: stop rather than rewrite (or delete) it unread.
    let existing_doc = match &existing {
        Some(t) => Some(dropin::parse_ours(&drop_in, t).map_err(|e| {
            help_error(
                e,
                "fix that line and rerun the command; nothing was written",
            )
        })?),
        None => None,
    };
    let recorded = existing
        .as_deref()
        .and_then(dropin::added_import)
        .filter(|(main, ..)| dropin::same_file(main, &config_abs));
    let mut notes = Vec::new();
    let mut warnings = Vec::new();

    let plan = if undo {
        let Some(existing) = existing else {
            // Deleted by hand: an `imports` entry still naming it stops containerd 1.x from
            // starting (2.x silently drops the imports after it), so it goes all the same.
            let plan = undo_all(config, &text, &drop_in, None, None, mode.quiet)?;
            if plan.steps.is_empty() {
                if talk {
                    eprintln!("`{}` does not exist: nothing to undo", drop_in.display());
                }
                return Ok(ExitCode::SUCCESS);
            }
            return finish(&plan, &drop_in, &[], &[], mode, talk);
        };
        let rest = dropin::without_action(&existing, goal).map_err(|e| {
            help_error(
                format!("{}: {e}", drop_in.display()),
                "fix or delete the file; nothing was written",
            )
        })?;
        if let Some((rest, left)) = rest {
            // The other action's keys stay, and so do the file and its import.
            if !mode.quiet {
                eprintln!(
                    "note: `{}` keeps {}: only this action's settings are removed (the file \
                     and its import go once nothing else is left)",
                    drop_in.display(),
                    left.iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Plan {
                steps: vec![Step::Install(FileInstall::new(
                    None,
                    drop_in.clone(),
                    rest.into_bytes(),
                    0o644,
                    true,
                )?)],
            }
        } else {
            undo_all(
                config,
                &text,
                &drop_in,
                Some(existing),
                recorded.as_ref(),
                mode.quiet,
            )?
        }
    } else {
        let rendered = super::effective::rendered(config, &text);
        // Without our drop-in: what everything else gives.
        let without: BTreeMap<PathBuf, String> = [(drop_in.clone(), String::new())].into();
        let layers = effective::load_with(config, Some(text.clone()), &without)?;
        let (rule, note) = judge.merge_rule(&layers)?;
        notes.extend(note);
        let eff = effective::merge(&layers, rule)?;
        // In effect without our drop-in: nothing to add (what the drop-in holds stays).
        if let Ok(source) = goal.check(&eff) {
            if talk {
                eprintln!(
                    "`{}` needs no drop-in: already in effect: {source}",
                    config.display()
                );
            }
            return Ok(ExitCode::SUCCESS);
        }
        let added = dropin::import_entry(config, &doc, &drop_in)
            .map(|e| (e, doc.get("imports").is_none()))
            .or_else(|| recorded.as_ref().map(|(_, e, c)| (e.clone(), *c)));
        let needs_import = dropin::import_entry(config, &doc, &drop_in);
        if let (Some(r), Some(_)) = (&rendered, &needs_import) {
            if judge.force {
                warnings.push(format!(
                    "--force: `{}` is rendered by {} and the `imports` entry is lost at its next \
                     restart",
                    config.display(),
                    r.program
                ));
            } else {
                return Err(help_error(
                    format!(
                        "`{}` is generated by {}, which rewrites it at every restart: the \
                         `imports` entry for `{}` would be silently undone",
                        config.display(),
                        r.program,
                        drop_in.display()
                    ),
                    match &r.drop_in_dir {
                        _ if !super::effective::is_k3s(r) => format!(
                            "make the change where {} takes its settings from, or --force",
                            r.program
                        ),
                        Some(dir) => format!("use `--drop-in auto` (a file matching `{dir}`)"),
                        None => format!(
                            "put the import in `{}` (starting with `{{{{ template \"base\" . }}}}`)",
                            r.template.display()
                        ),
                    },
                ));
            }
        }
        if let Some(old) = &existing_doc {
            let dropped = dropin::dropped_keys(&eff, goal, old);
            if !dropped.is_empty() {
                warnings.push(format!(
                    "`{}` holds {} that this rerun drops: on containerd 1.x rules the section is \
                     written again from the effective config; put them in the main file (or \
                     another drop-in) to keep them",
                    drop_in.display(),
                    dropped
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        let new_main = match &needs_import {
            Some(entry) => {
                rthooks::patch::patch_text(config, &text, |d| dropin::add_import(d, entry))?.after
            }
            None => text.clone(),
        };
        let named = !dropin::plain_imports_naming(config, &new_main, &drop_in).is_empty();
        let body = dropin::render(
            &eff,
            goal,
            config,
            added.as_ref().map(|(e, c)| (e.as_str(), *c)),
            named,
            existing.as_deref(),
        )
        .map_err(|e| help_error(e, "nothing was written"))?;
        // What containerd will load once the plan is applied.
        let overlay: BTreeMap<PathBuf, String> = [(drop_in.clone(), body.clone())].into();
        let after = effective::merge(
            &effective::load_with(config, Some(new_main.clone()), &overlay)?,
            rule,
        )?;
        if let Err((by, what)) = goal.check(&after) {
            let by = by.map_or_else(|| config.display().to_string(), |o| o.to_string());
            return Err(help_error(
                format!(
                    "{by}: this file, read after `{}`, {what}; nothing written",
                    drop_in.display()
                ),
                format!(
                    "pass a --drop-in path read after it (a later name in the same dir), or run \
                     the command on that file: `tetragon-oci-hook-setup patch-containerd-conf {} \
                     --config-file {} --in-place`",
                    judge.action,
                    by.rsplit_once(':').map_or(by.as_str(), |(p, _)| p)
                ),
            ));
        }
        let mut steps = vec![Step::Install(FileInstall::new(
            None,
            drop_in.clone(),
            body.into_bytes(),
            0o644,
            true,
        )?)];
        if new_main != text {
            steps.push(Step::Write(main_write(config, text.clone(), new_main)));
        }
        Plan { steps }
    };

    finish(&plan, &drop_in, &warnings, &notes, mode, talk)
}

/// Shows, checks or applies `plan` as `mode` asks.
fn finish(
    plan: &Plan,
    drop_in: &Path,
    warnings: &[String],
    notes: &[String],
    mode: &ModeArgs,
    talk: bool,
) -> anyhow::Result<ExitCode> {
    for w in warnings {
        eprintln!("warning: {w}");
    }
    super::json::plan(plan);
    if talk {
        write_stdout(&plan.diff())?;
        for n in notes {
            eprintln!("note: {n}");
        }
    }
    if plan.is_noop() {
        if talk {
            eprintln!("`{}` needs no change; nothing written", drop_in.display());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if mode.check {
        if talk {
            eprintln!("changes are pending (--check: nothing written)");
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
    super::report(&applied, talk);
    Ok(ExitCode::SUCCESS)
}

/// `--undo` when nothing of ours is left in the drop-in: removes it (if still there) and every
/// plain `imports` entry of the main file that names it (by resolved path or same file), after
/// checking that no other file still imports it by name (containerd 1.x would not start, 2.x
/// would silently stop loading the imports after it).
fn undo_all(
    config: &Path,
    text: &str,
    drop_in: &Path,
    existing: Option<String>,
    recorded: Option<&(PathBuf, String, bool)>,
    quiet: bool,
) -> anyhow::Result<Plan> {
    let named = dropin::plain_imports_naming(config, text, drop_in);
    let created = recorded.is_some_and(|(_, _, c)| *c);
    let new_main = if named.is_empty() {
        text.to_owned()
    } else {
        rthooks::patch::patch_text(config, text, |d| {
            let mut edit = Edit::default();
            for entry in &named {
                edit.changes
                    .extend(dropin::remove_import(d, entry, created)?.changes);
            }
            Ok(edit)
        })?
        .after
    };
    let recorded_entry = recorded.map(|(_, e, _)| e.as_str());
    if !quiet && (named.len() > 1 || named.iter().any(|e| Some(e.as_str()) != recorded_entry)) {
        eprintln!(
            "note: removing the `imports` entr{} {} of `{}`: {} `{}`",
            if named.len() == 1 { "y" } else { "ies" },
            named
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", "),
            config.display(),
            if named.len() == 1 {
                "it names"
            } else {
                "they name"
            },
            drop_in.display()
        );
    }
    // What containerd loads once the drop-in is gone: no file may still name it.
    let layers = effective::load_with(config, Some(new_main.clone()), &BTreeMap::new())?;
    let left: Vec<String> = layers
        .iter()
        .flat_map(|l| {
            dropin::plain_imports_naming(&l.path, &l.text, drop_in)
                .into_iter()
                .map(|e| format!("`{}` imports `{e}`", l.path.display()))
        })
        .collect();
    if !left.is_empty() {
        return Err(help_error(
            format!(
                "{}: without `{}` containerd 1.x would fail to start and 2.x would silently \
                 stop loading the imports after it; nothing was written",
                left.join(", "),
                drop_in.display()
            ),
            "remove that entry first (or use a glob such as `conf.d/*.toml`), then rerun --undo",
        ));
    }
    let mut steps = Vec::new();
    if let Some(existing) = existing {
        steps.push(Step::Remove(FileRemove::new(
            drop_in.to_owned(),
            Some(existing.into_bytes()),
            true,
        )?));
    }
    if new_main != text {
        steps.push(Step::Write(main_write(config, text.to_owned(), new_main)));
    }
    Ok(Plan { steps })
}

/// An in-place write of the main file.
fn main_write(config: &Path, before: String, after: String) -> FileWrite {
    FileWrite {
        label_before: diff_label(config),
        label_after: diff_label(config),
        target: Target::Path(config.to_owned()),
        before,
        after,
        template: Some(config.to_owned()),
    }
}

/// `auto` or a path (made absolute); its directory must exist.
fn resolve_drop_in(config: &Path, doc: &DocumentMut, arg: &Path) -> anyhow::Result<PathBuf> {
    let path = if arg == Path::new("auto") {
        dropin::auto_path(config, doc).map_err(|help| {
            help_error(
                format!(
                    "--drop-in auto: `{}` imports none of the drop-in dirs {}",
                    config.display(),
                    dropin::KNOWN_DIRS
                        .iter()
                        .map(|d| format!("`{d}/*.toml`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                help,
            )
        })?
    } else if arg.is_absolute() {
        effective::clean(arg)
    } else {
        effective::clean(&std::env::current_dir()?.join(arg))
    };
    if path == effective::clean(config) {
        return Err(help_error(
            "--drop-in names the config file itself",
            "pass a path of its own, e.g. `--drop-in auto`",
        ));
    }
    match path.parent() {
        Some(dir) if dir.is_dir() => Ok(path),
        _ => Err(help_error(
            format!(
                "the directory of --drop-in `{}` does not exist",
                path.display()
            ),
            "create it first (`mkdir -p`, mode 0755, owned by root); nothing was written",
        )),
    }
}
