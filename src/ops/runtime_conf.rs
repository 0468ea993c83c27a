//! What the runtime's whole configuration says, beyond the file a command edits or the dir it
//! writes into: NRI's default validator (containerd, cri-o) for `install --interface nri-hook`
//! and `enable-nri`, the hooks dirs cri-o or podman reads for `install --interface oci-hooks`,
//! and which cri-o file sets each runtime's `allowed_annotations`. The reading is here; the
//! judging is in [`rthooks::nri_validator`], [`rthooks::hooks_dirs`] and [`rthooks::layers`].

use std::path::{Path, PathBuf};

use rthooks::defaults;
use rthooks::effective::{self, MergeRule};
use rthooks::error::help_error;
use rthooks::hooks_dirs::{self, HooksRuntime};
use rthooks::layers::{DropIns, Layer, main_and_drop_in_dir, read_layers};
use rthooks::nri_validator::{HookRejection, Runtime, containerd_rejection, oci_hook_rejection};

use crate::cli::InstallArgs;

/// `--crio-config`: `auto` is cri-o's default config file.
fn crio_config_path(arg: &Path) -> PathBuf {
    if arg == Path::new("auto") {
        PathBuf::from(defaults::CRIO_CONFIG)
    } else {
        arg.to_owned()
    }
}

/// Reads a config and its drop-in dir; neither existing is an error naming both.
fn read_runtime_config(main: &Path, drop_ins: DropIns, flag: &str) -> anyhow::Result<Vec<Layer>> {
    let (main, dir) = main_and_drop_in_dir(main);
    read_layers(&main, &dir, drop_ins)?.ok_or_else(|| {
        help_error(
            format!(
                "{flag}: neither `{}` nor `{}` exists",
                main.display(),
                dir.display()
            ),
            format!("pass the runtime's config file as mounted here, or leave out {flag}"),
        )
    })
}

/// The validator's verdict on containerd's config (a missing file: nothing to check, with a
/// note) and on cri-o's, when given.
pub(super) fn nri_validator_rejections(
    containerd_config: &Path,
    crio_config: Option<&Path>,
    notes: &mut Vec<String>,
) -> anyhow::Result<Vec<HookRejection>> {
    let mut found = Vec::new();
    // The main file and its imports, merged as containerd 2.x merges them (the validator
    // exists only in 2.2+): a validator enabled in an imported drop-in counts.
    match containerd_config.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => notes.push(format!(
            "`{}` does not exist: containerd's NRI validator not checked (--containerd-config)",
            containerd_config.display()
        )),
        _ => {
            let layers = effective::load(containerd_config, None)?;
            let eff = effective::merge(&layers, MergeRule::KeyByKey)?;
            found.extend(containerd_rejection(&eff)?);
        }
    }
    if let Some(crio) = crio_config {
        let layers = read_runtime_config(
            &crio_config_path(crio),
            DropIns::AllFilesRecursive,
            "--crio-config",
        )?;
        found.extend(oci_hook_rejection(Runtime::Crio, &layers)?);
    }
    Ok(found)
}

/// `install --interface nri-hook`: refuses to start when a runtime's NRI validator rejects the
/// OCI hook the plugin adds. Returns notes to print.
pub(super) fn check_nri_validators(args: &InstallArgs) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    let rejections = nri_validator_rejections(
        &args.containerd_config,
        args.crio_config.as_deref(),
        &mut notes,
    )?;
    if let Some(r) = rejections.first() {
        return Err(help_error(
            format!("refusing to start the NRI plugin: {}", r.message()),
            r.help(),
        ));
    }
    Ok(notes)
}

/// `enable-nri`: a warning (with its fix) when containerd's validator would reject our hook.
///
/// `imports_nothing`: the edit found that `config` imports no file (and, having parsed it and
/// checked its `version`, that merging it cannot fail): then a text that cannot spell
/// `default_validator` (no such word, no `\u` escape to spell it in a quoted key) has no
/// validator, and is not parsed again to show it.
pub(super) fn nri_validator_warning(config: &Path, imports_nothing: bool) -> Option<String> {
    if imports_nothing {
        if let Ok(text) = rthooks::patch::read_config(config) {
            let may_set_validator =
                text.contains("default_validator") || text.contains("\\u") || text.contains("\\U");
            if !may_set_validator {
                return None;
            }
        }
    }
    let mut notes = Vec::new();
    match nri_validator_rejections(config, None, &mut notes) {
        Ok(found) => found
            .first()
            .map(|r| format!("{}\nhelp: {}", r.message(), r.help())),
        // The edit itself already read this file; what is left is a key of the wrong type (or
        // an import that cannot be read): say so, with its file:line, rather than nothing.
        Err(e) => Some(format!(
            "cannot tell whether containerd's default NRI validator rejects OCI hooks: {}",
            rthooks::error::Report(&e)
        )),
    }
}

/// `install --interface oci-hooks` with `--crio-config` or `--containers-conf`: the host path
/// of the hooks dir must be one the runtime reads, and writable. Returns notes to print.
pub(super) fn check_hooks_dir(args: &InstallArgs) -> anyhow::Result<Vec<String>> {
    check_hooks_dir_of(
        &args.oci_hooks_local_dir,
        args.oci_hooks_host_dir.as_deref(),
        args.crio_config.as_deref(),
        args.containers_conf.as_deref(),
    )
}

/// [`check_hooks_dir`] from the flags themselves (shared with `status`).
pub(super) fn check_hooks_dir_of(
    local: &Path,
    host_dir: Option<&Path>,
    crio_config: Option<&Path>,
    containers_conf: Option<&Path>,
) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    if crio_config.is_none() && containers_conf.is_none() {
        return Ok(notes);
    }
    let host = match host_dir {
        Some(h) => h.to_owned(),
        None if local == Path::new(defaults::HOOKS_LOCAL_DIR) => {
            notes.push(format!(
                "assuming `{}` is the host's `{}` (the Helm chart's default hooks path; pass \
                 --oci-hooks.host-dir otherwise)",
                local.display(),
                defaults::CHART_HOOKS_HOST_DIR
            ));
            PathBuf::from(defaults::CHART_HOOKS_HOST_DIR)
        }
        None => local.to_owned(),
    };
    if !host.is_absolute() {
        return Err(help_error(
            format!(
                "--oci-hooks.host-dir `{}` is not an absolute path",
                host.display()
            ),
            format!(
                "pass the hooks dir as the host sees it, e.g. `--oci-hooks.host-dir={}`",
                hooks_dirs::OVERRIDE_DIR
            ),
        ));
    }
    // Every file is read and judged before anything is written.
    let mut configs = Vec::new();
    if let Some(p) = crio_config {
        let path = crio_config_path(p);
        let layers = read_runtime_config(&path, DropIns::AllFilesRecursive, "--crio-config")?;
        configs.push((
            HooksRuntime::Crio,
            path.display().to_string(),
            layers,
            "--crio-config",
        ));
    }
    if let Some(p) = containers_conf {
        let (what, layers) = podman_layers(p)?;
        configs.push((HooksRuntime::Podman, what, layers, "--containers-conf"));
    }
    // A missing local dir is the install's own check (with its own fix).
    let read_only = rthooks::sys::dir_state(local).is_ok_and(|s| s.read_only);
    for (runtime, what, layers, flag) in configs {
        let dirs = hooks_dirs::hooks_dirs(runtime, &layers)?;
        hooks_dirs::check_host_dir(&dirs, &host, read_only)?;
        notes.push(format!(
            "`{}` is one of the hooks dirs {flag} `{what}` reads: {}",
            host.display(),
            dirs.dirs.join(", ")
        ));
    }
    Ok(notes)
}

/// podman's config files, in the order it reads them (containers/common `pkg/config/new.go`,
/// <= 0.67: podman 4/5): `auto` is root's chain (see [`podman_auto_layers`]); a path is read
/// alone, as podman reads `CONTAINERS_CONF` (which replaces the whole chain).
fn podman_layers(arg: &Path) -> anyhow::Result<(String, Vec<Layer>)> {
    if arg == Path::new("auto") {
        let over = std::env::var_os(defaults::CONTAINERS_CONF_OVERRIDE_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let layers = podman_auto_layers(Path::new("/"), over.as_deref())?;
        let mut what = format!(
            "{}, {}[.d], {}[.d]",
            defaults::PODMAN_USR_CONF,
            defaults::PODMAN_ETC_CONF,
            defaults::PODMAN_ROOT_USER_CONF
        );
        if let Some(o) = &over {
            what.push_str(&format!(
                ", {} {}",
                defaults::CONTAINERS_CONF_OVERRIDE_ENV,
                o.display()
            ));
        }
        return Ok((what, layers));
    }
    match Layer::read(arg)? {
        Some(layer) => Ok((arg.display().to_string(), vec![layer])),
        None => Err(help_error(
            format!("--containers-conf: `{}` does not exist", arg.display()),
            "pass podman's containers.conf as mounted here, `auto` for the system files, or \
             leave out --containers-conf",
        )),
    }
}

/// root's podman 4/5 chain under `root` (`/` but in tests), each file only when it exists:
/// the vendor file, the system file and its `.d/*.conf`, root's user file
/// (`$HOME/.config/containers/containers.conf`, HOME `/root`) and its `.d/*.conf`, then
/// `override_conf` (`CONTAINERS_CONF_OVERRIDE`, read last, over every other; not under `root`).
fn podman_auto_layers(root: &Path, override_conf: Option<&Path>) -> anyhow::Result<Vec<Layer>> {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let mut layers: Vec<Layer> = Layer::read(&at(defaults::PODMAN_USR_CONF))?
        .into_iter()
        .collect();
    for conf in [defaults::PODMAN_ETC_CONF, defaults::PODMAN_ROOT_USER_CONF] {
        let (main, dir) = main_and_drop_in_dir(&at(conf));
        layers.extend(read_layers(&main, &dir, DropIns::ConfSuffix)?.unwrap_or_default());
    }
    if let Some(o) = override_conf {
        layers.extend(Layer::read(o)?);
    }
    Ok(layers)
}

/// `patch-crio-conf enable-annotations`: which file sets each runtime's effective
/// `allowed_annotations`, counting `edited` as setting it for every runtime table it has.
///
/// cri-o decodes each drop-in onto the same config, and a runtime table in a later file
/// replaces the whole runtime (BurntSushi/toml makes a new map value per key): the runtime's
/// `allowed_annotations` is the one of the last file with a `[crio.runtime.runtimes.NAME]`
/// table, or none if that table has no such key. Returns (notes, warnings).
pub(super) fn annotation_sources(edited: &Path) -> (Vec<String>, Vec<String>) {
    let (mut notes, mut warnings) = (Vec::new(), Vec::new());
    let (main, dir) = main_and_drop_in_dir(edited);
    let layers = match read_layers(&main, &dir, DropIns::AllFilesRecursive) {
        Ok(Some(l)) => l,
        Ok(None) => return (notes, warnings),
        Err(e) => {
            warnings.push(format!(
                "cannot tell which cri-o file sets `allowed_annotations`: {e:#}"
            ));
            return (notes, warnings);
        }
    };
    const RUNTIMES: [&str; 3] = ["crio", "runtime", "runtimes"];
    let mut names: Vec<String> = layers
        .iter()
        .flat_map(|l| l.table_keys(&RUNTIMES))
        .collect();
    names.sort();
    names.dedup();
    let same = |a: &Path, b: &Path| a == b || a.canonicalize().ok() == b.canonicalize().ok();
    // The runtimes the edited file defines, gathered once (a name is looked up per runtime).
    let is_edited: Vec<bool> = layers.iter().map(|l| same(l.path(), edited)).collect();
    let edited_names: std::collections::HashSet<String> = layers
        .iter()
        .zip(&is_edited)
        .filter(|(_, e)| **e)
        .flat_map(|(l, _)| l.table_keys(&RUNTIMES))
        .collect();
    let edited_has = |name: &str| edited_names.contains(name);
    for name in names {
        let table = [RUNTIMES[0], RUNTIMES[1], RUNTIMES[2], name.as_str()];
        let Some((at_layer, last)) = layers
            .iter()
            .enumerate()
            .rev()
            .find(|(_, l)| l.get(&table).is_some())
        else {
            continue;
        };
        let mut key = table.to_vec();
        key.push("allowed_annotations");
        let is_edited = is_edited[at_layer];
        let at = match (last.get(&key), last.get(&table)) {
            (Some(s), _) => s.to_string(),
            (None, Some(t)) if is_edited => t.to_string(),
            (None, Some(t)) => {
                notes.push(format!(
                    "runtime `{name}`: no `allowed_annotations` in effect (the last table for it, \
                     {t}, has none)"
                ));
                if edited_has(&name) {
                    warnings.push(overridden(&name, &t.to_string(), edited));
                }
                continue;
            }
            (None, None) => continue,
        };
        notes.push(format!(
            "runtime `{name}`: cri-o takes `allowed_annotations` from {at}"
        ));
        if !is_edited && edited_has(&name) {
            warnings.push(overridden(&name, &at, edited));
        }
    }
    (notes, warnings)
}

fn overridden(name: &str, at: &str, edited: &Path) -> String {
    format!(
        "runtime `{name}`: {at} comes after `{}` and replaces that runtime's table, so the \
         annotations added here have no effect on it (patch that file instead: --config-file)",
        edited.display()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn podman_auto_chain_reads_roots_user_files_and_the_override_last() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let write = |rel: &str, dir: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("[engine]\nhooks_dir = [\"{dir}\"]\n")).unwrap();
        };
        write("usr/share/containers/containers.conf", "/usr");
        write("etc/containers/containers.conf", "/etc");
        write("etc/containers/containers.conf.d/10.conf", "/etc.d");
        write("root/.config/containers/containers.conf", "/user");
        write(
            "root/.config/containers/containers.conf.d/10.conf",
            "/user.d",
        );
        write("override.conf", "/override");
        let layers = podman_auto_layers(root, Some(&root.join("override.conf"))).unwrap();
        let names: Vec<String> = layers
            .iter()
            .map(|l| l.path().strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "usr/share/containers/containers.conf",
                "etc/containers/containers.conf",
                "etc/containers/containers.conf.d/10.conf",
                "root/.config/containers/containers.conf",
                "root/.config/containers/containers.conf.d/10.conf",
                "override.conf",
            ]
        );
        let dirs = hooks_dirs::hooks_dirs(HooksRuntime::Podman, &layers).unwrap();
        assert_eq!(dirs.dirs, ["/override"]);
        // A missing override file is skipped, as podman skips it.
        let layers = podman_auto_layers(root, Some(&root.join("nope.conf"))).unwrap();
        let dirs = hooks_dirs::hooks_dirs(HooksRuntime::Podman, &layers).unwrap();
        assert_eq!(dirs.dirs, ["/user.d"]);
    }
}
