//! `patch-containerd-conf` on the node's real configuration: refuse a config that k3s or rke2
//! regenerate, and judge an edit of the main file on the effective config (main file plus
//! imports) of the containerd release that reads it.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rthooks::edit::{Edit, EditError};
use rthooks::effective::{self, Goal, MergeRule, Release, Verdict};
use rthooks::error::help_error;
use toml_edit::DocumentMut;

/// How long `containerd --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// What the check before the edit found.
#[derive(Debug, Default)]
pub(super) struct Pre {
    /// Set when nothing needs to change: where the goal comes from.
    pub(super) done: Option<String>,
    /// Notes to show with the diff.
    pub(super) notes: Vec<String>,
    /// Warnings, shown even with `--quiet`.
    pub(super) warnings: Vec<String>,
    /// The main file's patch the check judged, for the plan (the file is read and parsed once).
    pub(super) patched: Option<rthooks::patch::Patched>,
}

/// Everything the check needs from the command line.
pub(super) struct Judge<'a> {
    /// The config file.
    pub(super) config: &'a Path,
    /// `--containerd-version`.
    pub(super) release: Option<&'a str>,
    /// `--force`.
    pub(super) force: bool,
    /// The subcommand, for the fix shown in errors (`enable-nri`, `add-oci-hook ...`).
    pub(super) action: String,
    /// `--create` on a missing config: the text it starts from (nothing is read).
    pub(super) created: Option<String>,
    /// Set by [`Judge::check`]: the main file imports nothing (see
    /// [`effective::imports_nothing`]), so it alone is containerd's config.
    pub(super) imports_nothing: std::cell::Cell<bool>,
}

impl Judge<'_> {
    /// Refuses a rendered k3s/rke2 config (unless `--force`) and judges the edit on the
    /// effective config when the main file imports others. Reads the files (bounded), writes
    /// nothing.
    pub(super) fn check(
        &self,
        goal: Goal<'_>,
        edit_fn: impl FnOnce(&mut DocumentMut) -> Result<Edit, EditError>,
    ) -> anyhow::Result<Pre> {
        let text = match &self.created {
            Some(text) => text.clone(),
            None => rthooks::patch::read_config(self.config)?,
        };
        let mut pre = Pre::default();
        if let Some(r) = rendered(self.config, &text) {
            if !self.force {
                return Err(self.rendered_error(&r));
            }
            pre.warnings.push(format!(
                "--force: `{}` is rendered by {} and this edit is lost at its next restart",
                self.config.display(),
                r.program
            ));
        }
        // The main file's own errors first, as without imports (parse errors, bad shapes).
        // Whether it imports anything is read from the document the edit parses (before the
        // edit), not from a second parse.
        let mut imports_nothing = false;
        let patched = rthooks::patch::patch_string(self.config, text, |doc| {
            imports_nothing = effective::imports_nothing(doc.as_table());
            edit_fn(doc)
        })?;
        self.imports_nothing.set(imports_nothing);
        if imports_nothing {
            // The file alone is the config, judged as always.
            pre.patched = Some(patched);
            return Ok(pre);
        }
        let layers = effective::load(self.config, Some(patched.before.clone()))?;
        if layers.len() < 2 {
            // No file imported: the file alone is the config, judged as always.
            pre.patched = Some(patched);
            return Ok(pre);
        }
        let (rule, note) = self.merge_rule(&layers)?;
        let guessed = note
            .as_ref()
            .filter(|n| n.starts_with("no --containerd-version"))
            .cloned();
        pre.notes.extend(note);
        match effective::judge(&layers, rule, &patched.after, goal)? {
            Verdict::AlreadyInEffect(source) => {
                pre.done = Some(format!(
                    "already in effect with the {} imported file(s): {source}",
                    layers.len() - 1
                ));
                Ok(pre)
            }
            Verdict::EditTakesEffect => {
                pre.patched = Some(patched);
                Ok(pre)
            }
            // The main file itself, or a file whose runtimes containerd ignores for its version
            // (the judge says so with `MIXED_VERSIONS`): editing the file read last cannot help.
            Verdict::Undone { by, what }
                if same_path(&by.path, self.config) || what.contains(effective::MIXED_VERSIONS) =>
            {
                Err(help_error(
                    format!(
                        "{by}: {what}; editing `{}` alone would change nothing containerd runs \
                     with; nothing written",
                        self.config.display()
                    ),
                    "give every file of the config the same `version` (containerd 2.x ignores the \
                 CRI runtimes of files whose version it does not migrate), or remove that setting"
                        .to_owned(),
                ))
            }
            Verdict::Undone { by, what } => Err(help_error(
                format!(
                    "{by}: this imported file {what}, after `{}`: editing `{}` would change \
                     nothing containerd runs with; nothing written",
                    self.config.display(),
                    self.config.display()
                ),
                format!(
                    "edit the file that is read last instead: `tetragon-oci-hook-setup \
                     patch-containerd-conf {} --config-file {} --in-place`, or put the change \
                     in a drop-in read after it (--drop-in), or remove that setting{}",
                    self.action,
                    by.path.display(),
                    guessed.map_or(String::new(), |g| format!(
                        " ({g}; pass --containerd-version X.Y if another release reads it)"
                    ))
                ),
            )),
        }
    }

    fn rendered_error(&self, r: &effective::Rendered) -> anyhow::Error {
        if !is_k3s(r) {
            return help_error(
                format!(
                    "`{}` is generated by {}, which can regenerate it: an edit here may be \
                     silently undone",
                    self.config.display(),
                    r.program
                ),
                format!(
                    "make the change where {} takes its settings from; --force edits the \
                     generated file anyway",
                    r.program
                ),
            );
        }
        let template = r.template.display();
        let mut help = format!(
            "put the change in `{template}` (k3s/rke2 render it instead): start it with \
             `{{{{ template \"base\" . }}}}` and add the setting below it; "
        );
        if let Some(dir) = &r.drop_in_dir {
            help.push_str(&format!(
                "or run this command with `--drop-in auto` (a file of ours matching the \
                 rendered config's import `{dir}`); "
            ));
        }
        help.push_str("--force edits the rendered file anyway");
        help_error(
            format!(
                "`{}` is generated by {}, which rewrites it at every restart: an edit here is \
                 silently undone",
                self.config.display(),
                r.program
            ),
            help,
        )
    }

    /// The release that will read a config `--create` starts: from `--containerd-version`,
    /// else `containerd --version`; with where it came from, for the note.
    pub(super) fn release_for_new_file(&self) -> anyhow::Result<(Release, &'static str)> {
        if let Some(v) = self.release {
            let release = Release::parse(v).ok_or_else(|| {
                help_error(
                    format!("--containerd-version `{v}` is not a release"),
                    "write it as `X.Y`, e.g. `--containerd-version 2.1`",
                )
            })?;
            return Ok((release, "--containerd-version"));
        }
        installed_release()
            .map(|r| (r, "`containerd --version`"))
            .ok_or_else(|| {
                help_error(
                    format!(
                        "--create: which `version` to write in the new `{}` depends on the \
                         containerd release, and there is no `containerd` on PATH",
                        self.config.display()
                    ),
                    "pass the release that reads it, e.g. `--containerd-version 2.1` (version 3) \
                     or `--containerd-version 1.7` (version 2)",
                )
            })
    }

    /// The merge rule: from `--containerd-version`, else `containerd --version`, else the
    /// config `version` (with a note).
    pub(super) fn merge_rule(
        &self,
        layers: &[effective::Layer],
    ) -> anyhow::Result<(MergeRule, Option<String>)> {
        if let Some(v) = self.release {
            let release = Release::parse(v).ok_or_else(|| {
                help_error(
                    format!("--containerd-version `{v}` is not a release"),
                    "write it as `X.Y`, e.g. `--containerd-version 2.1`",
                )
            })?;
            check_version(layers, release)?;
            return Ok((release.merge_rule(), None));
        }
        if let Some(release) = installed_release() {
            check_version(layers, release)?;
            return Ok((
                release.merge_rule(),
                Some(format!(
                    "merging imports as containerd {release} does (`containerd --version`)"
                )),
            ));
        }
        // The widest view: whichever release, a 1.x section replace or a 2.x key merge.
        let version = effective::merge(layers, MergeRule::KeyByKey)?.version;
        let rule = if version >= 3 {
            MergeRule::KeyByKey
        } else {
            MergeRule::WholePluginSection
        };
        Ok((
            rule,
            Some(format!(
                "no --containerd-version and no `containerd` on PATH: merging imports as \
                 containerd {} does, from `version = {version}`",
                if version >= 3 { "2.x" } else { "1.x" }
            )),
        ))
    }
}

/// containerd refuses a merged config whose `version` is newer than it knows (1.7: 2, 2.0-2.2:
/// 3); the last file setting `version` decides.
fn check_version(layers: &[effective::Layer], release: Release) -> anyhow::Result<()> {
    let eff = effective::merge(layers, release.merge_rule())?;
    if eff.version <= release.max_config_version() {
        return Ok(());
    }
    let at = eff
        .version_origin
        .map_or_else(|| "`version`".to_owned(), |o| o.to_string());
    Err(help_error(
        format!(
            "{at}: `version = {}` is newer than containerd {release} loads (at most {}); it \
             refuses this configuration",
            eff.version,
            release.max_config_version()
        ),
        "write the version this containerd reads in that file, or pass the \
         --containerd-version of the containerd that reads it",
    ))
}

/// `containerd --version` of the first `containerd` on `PATH`, bounded in time and output.
fn installed_release() -> Option<Release> {
    installed_release_within(VERSION_TIMEOUT)
}

/// [`installed_release`], waiting at most `limit` for it (`status` cuts it to its `--timeout`).
pub(super) fn installed_release_within(limit: Duration) -> Option<Release> {
    let path = std::env::var_os("PATH")?;
    let bin: PathBuf = std::env::split_paths(&path)
        .map(|d| d.join("containerd"))
        .find(|p| p.is_file())?;
    let mut child = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut out = String::new();
    child
        .stdout
        .take()?
        .take(4096)
        .read_to_string(&mut out)
        .ok()?;
    Release::from_version_output(&out)
}

/// Whether `r` is k3s or rke2 rendering from a template (the template advice applies).
pub(super) fn is_k3s(r: &effective::Rendered) -> bool {
    r.program == "k3s" || r.program == "rke2" || r.program == "k3s/rke2"
}

/// Who regenerates `config`, if anyone: [`effective::rendered_by`] on the absolute path (a
/// relative `--config-file` inside `.../rancher/k3s/agent/etc/containerd/` counts), or a
/// `config.toml.tmpl` / `config-v3.toml.tmpl` beside it (k3s/rke2 with a custom
/// `--data-dir`, header or not).
pub(super) fn rendered(config: &Path, text: &str) -> Option<effective::Rendered> {
    let abs = std::env::current_dir()
        .map(|d| effective::clean(&d.join(config)))
        .unwrap_or_else(|_| config.to_owned());
    if let Some(r) = effective::rendered_by(&abs, text) {
        return Some(r);
    }
    let template = ["config-v3.toml.tmpl", "config.toml.tmpl"]
        .into_iter()
        .map(|n| abs.with_file_name(n))
        .find(|t| t.is_file())?;
    // The drop-in dir it imports, as rendered_by finds it (its k3s/rke2 header pretended).
    let drop_in_dir = effective::rendered_by(
        Path::new("/rancher/k3s/agent/etc/containerd/config.toml"),
        text,
    )
    .and_then(|r| r.drop_in_dir);
    Some(effective::Rendered {
        program: "k3s/rke2".to_owned(),
        template,
        drop_in_dir,
    })
}

/// Whether two paths name the same file (by identity when both exist, else by text).
fn same_path(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}
