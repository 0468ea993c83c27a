//! Which hooks dirs cri-o or podman reads, and whether the dir `install --interface oci-hooks`
//! writes into is one of them.
//!
//! cri-o reads hook files from `crio.runtime.hooks_dir` (`pkg/config/config.go`), podman from
//! `engine.hooks_dir` of `containers.conf` (containers/common `pkg/config`). Both default to
//! `["/usr/share/containers/oci/hooks.d"]` only (`hooks.DefaultDir`; `DefaultHooksDirs`): the
//! override dir `/etc/containers/oci/hooks.d` is read only when the config lists it, as
//! OpenShift's does (its `/usr` is read-only). A later dir's file wins over a same-named file in
//! an earlier one. cri-o's list comes from the last file that sets it (see [`crate::layers`]);
//! podman's is folded over every file that sets it (`{append=true}`, see [`hooks_dirs`]), and
//! an empty one means both dirs above for root.
//!
//! Pure: the caller reads the files and states whether the local dir is read-only.

use std::path::{Component, Path, PathBuf};

use crate::edit::describe;
use crate::error::HelpError;
use crate::layers::{Layer, last_setting};
use toml_edit::Item;

/// The default hooks dir of cri-o and podman (`hooks.DefaultDir`).
pub const DEFAULT_DIR: &str = crate::defaults::RUNTIME_HOOKS_DIR;
/// The hooks dir for local overrides (`hooks.OverrideDir`): where to install on OpenShift.
pub const OVERRIDE_DIR: &str = "/etc/containers/oci/hooks.d";

/// The runtime reading the hooks dirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HooksRuntime {
    /// cri-o (`crio.conf` + `crio.conf.d`).
    Crio,
    /// podman (`containers.conf` + `containers.conf.d`).
    Podman,
}

impl HooksRuntime {
    fn key(self) -> &'static [&'static str] {
        match self {
            Self::Crio => &["crio", "runtime", "hooks_dir"],
            Self::Podman => &["engine", "hooks_dir"],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Crio => "cri-o",
            Self::Podman => "podman",
        }
    }

    fn table(self) -> &'static str {
        match self {
            Self::Crio => "[crio.runtime]",
            Self::Podman => "[engine]",
        }
    }
}

/// The hooks dirs a runtime reads, and where that list was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HooksDirs {
    /// The runtime.
    pub runtime: HooksRuntime,
    /// The dirs, in the runtime's order (later wins).
    pub dirs: Vec<String>,
    /// `file:line` of the `hooks_dir` in effect; `None`: the runtime's default.
    pub set_at: Option<String>,
}

impl HooksDirs {
    fn source(&self) -> String {
        match &self.set_at {
            Some(at) => format!("`hooks_dir` at {at}"),
            None => format!(
                "{}'s default `hooks_dir` (no config file sets it)",
                self.runtime.name()
            ),
        }
    }
}

/// The effective `hooks_dir` of `layers` (in the order the runtime applies them).
///
/// cri-o's is a plain list of strings: the last file that sets it wins. podman's is
/// containers/common's attributed string list (`internal/attributedstring`): every file that
/// sets it is folded in order onto the default, a `{append=true}` item switching appending on
/// (and `{append=false}` off) for that file and the later ones (the attribute is kept on the
/// decoded value), the file's strings then replacing the list, or appended to it when on. An
/// empty list makes a root podman read both [`DEFAULT_DIR`] and [`OVERRIDE_DIR`] (libpod
/// `setupOCIHooks`, `len(HooksDir.Get()) == 0`).
///
/// ```
/// use rthooks::hooks_dirs::{HooksRuntime, hooks_dirs};
/// use rthooks::layers::Layer;
/// let l = Layer::parse("c.conf", "[engine]\nhooks_dir = [\"/h\"]\n".to_owned()).unwrap();
/// let d = hooks_dirs(HooksRuntime::Podman, &[l]).unwrap();
/// assert_eq!((d.dirs, d.set_at.as_deref()), (vec!["/h".to_owned()], Some("c.conf:2")));
/// ```
pub fn hooks_dirs(runtime: HooksRuntime, layers: &[Layer]) -> Result<HooksDirs, HelpError> {
    match runtime {
        HooksRuntime::Crio => crio_hooks_dirs(layers),
        HooksRuntime::Podman => podman_hooks_dirs(layers),
    }
}

fn crio_hooks_dirs(layers: &[Layer]) -> Result<HooksDirs, HelpError> {
    let runtime = HooksRuntime::Crio;
    let Some(setting) = last_setting(layers, runtime.key()) else {
        return Ok(HooksDirs {
            runtime,
            dirs: vec![DEFAULT_DIR.to_owned()],
            set_at: None,
        });
    };
    let bad = |what: String| {
        HelpError::new(
            format!(
                "{setting}: `{}` is {what}, expected an array of strings",
                runtime.key().join(".")
            ),
            format!(
                "write it as `hooks_dir = [\"{OVERRIDE_DIR}\"]` under `{}` (cri-o's `hooks_dir` \
                 is a plain list of paths: no `{{append=true}}`, which is podman's syntax)",
                runtime.table()
            ),
        )
    };
    let array = setting
        .item
        .as_array()
        .ok_or_else(|| bad(describe(setting.item).to_owned()))?;
    let dirs = array
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                bad(format!(
                    "an array whose item {} is {}",
                    i + 1,
                    describe(&Item::Value(v.clone()))
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HooksDirs {
        runtime,
        dirs,
        set_at: Some(setting.to_string()),
    })
}

fn podman_hooks_dirs(layers: &[Layer]) -> Result<HooksDirs, HelpError> {
    let runtime = HooksRuntime::Podman;
    let mut dirs = vec![DEFAULT_DIR.to_owned()];
    let mut set_at: Option<String> = None;
    let mut append = false;
    for setting in layers.iter().filter_map(|l| l.get(runtime.key())) {
        let bad = |what: String| {
            HelpError::new(
                format!(
                    "{setting}: `{}` {what}, expected strings and `{{append=true}}` or \
                     `{{append=false}}`",
                    runtime.key().join(".")
                ),
                format!(
                    "write it as `hooks_dir = [\"{OVERRIDE_DIR}\"]` under `{}` (add \
                     `{{append=true}}` as an item to add to the earlier files' dirs)",
                    runtime.table()
                ),
            )
        };
        let array = setting
            .item
            .as_array()
            .ok_or_else(|| bad(format!("is {}", describe(setting.item))))?;
        let mut values = Vec::new();
        for (i, v) in array.iter().enumerate() {
            if let Some(s) = v.as_str() {
                values.push(s.to_owned());
                continue;
            }
            let Some(attrs) = v.as_inline_table() else {
                return Err(bad(format!(
                    "holds {} (item {})",
                    describe(&Item::Value(v.clone())),
                    i + 1
                )));
            };
            for (k, a) in attrs.iter() {
                match (k, a.as_bool()) {
                    ("append", Some(on)) => append = on,
                    ("append", None) => {
                        return Err(bad(format!(
                            "has `append = {}` (item {}), not a boolean",
                            a.to_string().trim(),
                            i + 1
                        )));
                    }
                    _ => {
                        return Err(bad(format!(
                            "has the unsupported attribute `{k}` (item {})",
                            i + 1
                        )));
                    }
                }
            }
        }
        if append {
            dirs.extend(values);
            let prev = set_at
                .take()
                .unwrap_or_else(|| "podman's default".to_owned());
            set_at = Some(format!("{prev} + {setting} (appended)"));
        } else {
            dirs = values;
            set_at = Some(setting.to_string());
        }
    }
    if set_at.is_some() && dirs.is_empty() {
        dirs = vec![DEFAULT_DIR.to_owned(), OVERRIDE_DIR.to_owned()];
        set_at = set_at.map(|at| format!("{at}: an empty list, so podman's implicit dirs"));
    }
    Ok(HooksDirs {
        runtime,
        dirs,
        set_at,
    })
}

/// `path` without `.`, `//` and trailing slashes (lexically: the host's symlinks are not ours
/// to resolve from inside a pod).
fn normalized(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Checks that `host_dir` (the hooks dir as the host sees it) is one the runtime reads, and
/// that it is writable (`local_read_only`: the dir as mounted here is on a read-only file
/// system). The error names the dir to use.
pub fn check_host_dir(
    dirs: &HooksDirs,
    host_dir: &Path,
    local_read_only: bool,
) -> Result<(), HelpError> {
    let host = normalized(host_dir);
    let read = dirs.dirs.iter().any(|d| normalized(Path::new(d)) == host);
    let listed = dirs
        .dirs
        .iter()
        .map(|d| format!("`{d}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if read && !local_read_only {
        return Ok(());
    }
    // The dir to use: the override dir when listed (OpenShift lists it beside the read-only
    // `/usr` one and a tmpfs `/run` one), else the last listed that is not the one refused and
    // not under the read-only `/usr`.
    let usable = |d: &&String| normalized(Path::new(d.as_str())) != host && !d.starts_with("/usr/");
    let other = dirs
        .dirs
        .iter()
        .find(|d| normalized(Path::new(d.as_str())) == Path::new(OVERRIDE_DIR) && usable(d))
        .or_else(|| dirs.dirs.iter().rev().find(usable));
    let use_dir = |d: &str| {
        format!(
            "install into `{d}`: `--oci-hooks.host-dir={d}` with that host dir mounted at \
             `--oci-hooks.local-dir` (Helm: `rthooks.ociHooks.hooksPath={d}`)"
        )
    };
    let add_dir = |d: &str| {
        let mut all: Vec<String> = dirs.dirs.iter().map(|d| format!("\"{d}\"")).collect();
        all.push(format!("\"{d}\""));
        let file = match dirs.runtime {
            HooksRuntime::Crio => {
                "a crio.conf.d drop-in (e.g. `/etc/crio/crio.conf.d/99-hooks.conf`)"
            }
            HooksRuntime::Podman => "containers.conf",
        };
        format!(
            "add `{d}` to the runtime's hooks dirs in {file}: `{}` `hooks_dir = [{}]`, restart \
             {}, then install into it (`--oci-hooks.host-dir={d}`, Helm: \
             `rthooks.ociHooks.hooksPath={d}`)",
            dirs.runtime.table(),
            all.join(", "),
            dirs.runtime.name()
        )
    };
    if !read {
        let help = match other.or(dirs.dirs.last()) {
            Some(d) => use_dir(d),
            None => add_dir(OVERRIDE_DIR),
        };
        return Err(HelpError::new(
            format!(
                "{} does not read hook files from `{}`: it reads {} ({})",
                dirs.runtime.name(),
                host_dir.display(),
                if listed.is_empty() {
                    "no hooks dir".to_owned()
                } else {
                    listed
                },
                dirs.source()
            ),
            help,
        ));
    }
    let help = match other {
        Some(d) => use_dir(d),
        None => add_dir(OVERRIDE_DIR),
    };
    Err(HelpError::new(
        format!(
            "hooks dir `{}` is on a read-only file system (as `/usr` is on OpenShift/RHCOS); \
             {} reads {} ({})",
            host_dir.display(),
            dirs.runtime.name(),
            listed,
            dirs.source()
        ),
        help,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(list: &[&str]) -> HooksDirs {
        HooksDirs {
            runtime: HooksRuntime::Crio,
            dirs: list.iter().map(|s| (*s).to_owned()).collect(),
            set_at: Some("crio.conf:3".to_owned()),
        }
    }

    fn layers(files: &[(&str, &str)]) -> Vec<Layer> {
        files
            .iter()
            .map(|(p, t)| Layer::parse(*p, format!("[engine]\nhooks_dir = {t}\n")).unwrap())
            .collect()
    }

    #[test]
    fn podman_append_attribute_folds_files_in_order() {
        let d = hooks_dirs(
            HooksRuntime::Podman,
            &layers(&[
                ("a.conf", "[\"/a\"]"),
                ("b.conf", "[\"/b\", {append=true}]"),
                // The attribute stays on: a later file without it appends too.
                ("c.conf", "[\"/c\"]"),
            ]),
        )
        .unwrap();
        assert_eq!(d.dirs, ["/a", "/b", "/c"]);
        assert_eq!(
            d.set_at.as_deref(),
            Some("a.conf:2 + b.conf:2 (appended) + c.conf:2 (appended)")
        );
        // `{append=false}` switches it off: the file replaces the list.
        let d = hooks_dirs(
            HooksRuntime::Podman,
            &layers(&[
                ("a.conf", "[{append=true}, \"/a\"]"),
                ("b.conf", "[\"/b\", {append=false}]"),
            ]),
        )
        .unwrap();
        assert_eq!(d.dirs, ["/b"]);
    }

    #[test]
    fn podman_empty_hooks_dir_reads_both_implicit_dirs() {
        let d = hooks_dirs(HooksRuntime::Podman, &layers(&[("a.conf", "[]")])).unwrap();
        assert_eq!(d.dirs, [DEFAULT_DIR, OVERRIDE_DIR]);
    }

    #[test]
    fn crio_attribute_item_is_an_error_naming_the_item() {
        let text = "[crio.runtime]\nhooks_dir = [\"/a\", {append=true}]\n";
        let l = [Layer::parse("crio.conf", text.to_owned()).unwrap()];
        let err = hooks_dirs(HooksRuntime::Crio, &l).unwrap_err();
        assert_eq!(
            err.message,
            "crio.conf:2: `crio.runtime.hooks_dir` is an array whose item 2 is an inline table, \
             expected an array of strings"
        );
        let bad =
            hooks_dirs(HooksRuntime::Podman, &layers(&[("a.conf", "[{append=1}]")])).unwrap_err();
        assert!(
            bad.message.contains("`append = 1` (item 1)"),
            "{}",
            bad.message
        );
    }

    #[test]
    fn listed_dir_is_accepted_with_trailing_slash() {
        let d = dirs(&[DEFAULT_DIR, OVERRIDE_DIR]);
        check_host_dir(&d, Path::new("/etc/containers/oci/hooks.d/"), false).unwrap();
    }

    #[test]
    fn unlisted_dir_is_refused_naming_the_dir_to_use() {
        let d = dirs(&[DEFAULT_DIR, OVERRIDE_DIR]);
        let err = check_host_dir(&d, Path::new("/opt/hooks"), false).unwrap_err();
        assert_eq!(
            err.message,
            "cri-o does not read hook files from `/opt/hooks`: it reads \
             `/usr/share/containers/oci/hooks.d`, `/etc/containers/oci/hooks.d` (`hooks_dir` at \
             crio.conf:3)"
        );
        assert!(
            err.help
                .starts_with("install into `/etc/containers/oci/hooks.d`"),
            "{}",
            err.help
        );
    }

    #[test]
    fn read_only_default_dir_points_at_the_override_dir() {
        let d = HooksDirs {
            set_at: None,
            ..dirs(&[DEFAULT_DIR])
        };
        let err = check_host_dir(&d, Path::new(DEFAULT_DIR), true).unwrap_err();
        assert!(err.message.contains("read-only"), "{}", err.message);
        assert!(
            err.help
                .starts_with("add `/etc/containers/oci/hooks.d` to the runtime's hooks dirs"),
            "{}",
            err.help
        );
    }
}
