//! Which hooks dirs cri-o or podman reads, and whether the dir `install --interface oci-hooks`
//! writes into is one of them.
//!
//! cri-o reads hook files from `crio.runtime.hooks_dir` (`pkg/config/config.go`), podman from
//! `engine.hooks_dir` of `containers.conf` (containers/common `pkg/config`). Both default to
//! `["/usr/share/containers/oci/hooks.d"]` only (`hooks.DefaultDir`; `DefaultHooksDirs`): the
//! override dir `/etc/containers/oci/hooks.d` is read only when the config lists it, as
//! OpenShift's does (its `/usr` is read-only). A later dir's file wins over a same-named file in
//! an earlier one. The list comes from the last file that sets it (see [`crate::layers`]).
//!
//! Pure: the caller reads the files and states whether the local dir is read-only.

use std::path::{Component, Path, PathBuf};

use crate::edit::describe;
use crate::error::HelpError;
use crate::layers::{Layer, last_setting};

/// The default hooks dir of cri-o and podman (`hooks.DefaultDir`).
pub const DEFAULT_DIR: &str = "/usr/share/containers/oci/hooks.d";
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
/// ```
/// use rthooks::hooks_dirs::{HooksRuntime, hooks_dirs};
/// use rthooks::layers::Layer;
/// let l = Layer::parse("c.conf", "[engine]\nhooks_dir = [\"/h\"]\n".to_owned()).unwrap();
/// let d = hooks_dirs(HooksRuntime::Podman, &[l]).unwrap();
/// assert_eq!((d.dirs, d.set_at.as_deref()), (vec!["/h".to_owned()], Some("c.conf:2")));
/// ```
pub fn hooks_dirs(runtime: HooksRuntime, layers: &[Layer]) -> Result<HooksDirs, HelpError> {
    let Some(setting) = last_setting(layers, runtime.key()) else {
        return Ok(HooksDirs {
            runtime,
            dirs: vec![DEFAULT_DIR.to_owned()],
            set_at: None,
        });
    };
    let bad = || {
        HelpError::new(
            format!(
                "{setting}: `{}` is {}, expected an array of strings",
                runtime.key().join("."),
                describe(setting.item)
            ),
            format!(
                "write it as `hooks_dir = [\"{OVERRIDE_DIR}\"]` under `{}`",
                runtime.table()
            ),
        )
    };
    let array = setting.item.as_array().ok_or_else(bad)?;
    let dirs = array
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HooksDirs {
        runtime,
        dirs,
        set_at: Some(setting.to_string()),
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
