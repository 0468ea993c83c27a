//! The `hook-file` check (oci-hooks interface): our hooks.d JSON is present, valid, at stage
//! `createRuntime`, and points at an executable that exists.

use std::path::{Path, PathBuf};

use super::{Check, Verdict};
use crate::hook_json::{self, HookFile};
use crate::plan::Current;

/// The largest hook file read (as `install`).
pub const MAX_HOOK_FILE: u64 = 1 << 20;

/// What the hook-file check found.
#[derive(Debug)]
pub struct HookFound {
    /// The check.
    pub check: Check,
    /// The hook's argv from the file, when it is valid.
    pub args: Option<Vec<String>>,
}

/// Where a host path is here: under `host_dir` it is under `local_dir`, else it is itself.
pub fn local_path(host_path: &Path, host_dir: &Path, local_dir: &Path) -> PathBuf {
    match host_path.strip_prefix(host_dir) {
        Ok(rest) => local_dir.join(rest),
        Err(_) => host_path.to_owned(),
    }
}

/// `hook-file` for the hooks.d file at `path`; `host_dir`/`local_dir`: the install dir as the
/// host and as this process see it (to find the binary the file points at).
pub fn check(path: &Path, host_dir: &Path, local_dir: &Path) -> HookFound {
    const ID: &str = "hook-file";
    let install = "run the installer: `tetragon-oci-hook-setup install --interface oci-hooks \
                   --local-install-dir ... --host-install-dir ... --oci-hooks.local-dir ...` \
                   (the tetragon-rthooks DaemonSet does)";
    let fail = |summary: String, evidence: String, help: String| HookFound {
        check: Check::new(ID, Verdict::Fail, summary)
            .evidence(evidence)
            .help(help),
        args: None,
    };
    let p = path.display();
    let bytes = match crate::plan::read_current(path, MAX_HOOK_FILE) {
        Ok(Current::File { bytes, .. }) => bytes,
        Ok(Current::Absent) => {
            return fail(
                "no hook file: the runtime does not run the hook".to_owned(),
                format!("{p}: absent"),
                install.to_owned(),
            );
        }
        Ok(Current::Symlink { target }) => {
            return fail(
                "the hook file is a symlink (not followed)".to_owned(),
                format!("{p} -> {}", target.display()),
                format!("remove `{p}`, then {install}"),
            );
        }
        // `read_current` never holds a file open as a binary; were it to, it is not a hook file.
        Ok(Current::Binary { .. }) => {
            return fail(
                "the hook file could not be read as a file".to_owned(),
                p.to_string(),
                format!("remove `{p}`, then {install}"),
            );
        }
        Ok(Current::Special { kind }) => {
            return fail(
                format!("the hook file is {kind}"),
                p.to_string(),
                format!("remove `{p}`, then {install}"),
            );
        }
        Ok(Current::Large { size }) => {
            return fail(
                format!("the hook file is {size} bytes, more than {MAX_HOOK_FILE}"),
                p.to_string(),
                format!("remove `{p}`, then {install}"),
            );
        }
        Err(e) => {
            return fail(
                "cannot read the hook file".to_owned(),
                format!("{p}: {}", super::cut(&format!("{e:#}"), 300)),
                format!("remove `{p}`, then {install}"),
            );
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let hook = match hook_json::parse(&text) {
        Ok(HookFile::Current(h)) => h,
        Ok(HookFile::Legacy(_)) => {
            return fail(
                "the hook file is in the legacy format, not ours".to_owned(),
                p.to_string(),
                install.to_owned(),
            );
        }
        Err(e) => {
            return fail(
                "the hook file is not valid hooks.d JSON".to_owned(),
                format!(
                    "{p}:{}:{}: {}",
                    e.line,
                    e.column,
                    super::cut(&e.message, 200)
                ),
                install.to_owned(),
            );
        }
    };
    if !hook.stages.iter().any(|s| s == crate::defaults::STAGE) {
        return fail(
            format!("the hook is not at stage `{}`", crate::defaults::STAGE),
            format!("{p}: stages = {:?}", hook.stages),
            install.to_owned(),
        );
    }
    let local = local_path(Path::new(&hook.hook.path), host_dir, local_dir);
    let here = if local == Path::new(&hook.hook.path) {
        String::new()
    } else {
        format!(" (here `{}`)", local.display())
    };
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(&local) {
        Err(e) => {
            return fail(
                "the hook file points at a missing binary: every hooked container fails to start"
                    .to_owned(),
                format!("{p}: hook.path = {}{here}: {e}", hook.hook.path),
                format!("{install}; or remove `{p}` to stop the runtime running it"),
            );
        }
        Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => {
            return fail(
                "the hook file points at a file that is not an executable".to_owned(),
                format!("{p}: hook.path = {}{here}", hook.hook.path),
                format!("{install}; or remove `{p}`"),
            );
        }
        Ok(_) => {}
    }
    HookFound {
        check: Check::new(
            ID,
            Verdict::Ok,
            format!(
                "at `{}`, running `{}`",
                crate::defaults::STAGE,
                hook.hook.path
            ),
        )
        .evidence(p.to_string()),
        args: Some(hook.hook.args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hook_invocation::HookInvocation;

    #[test]
    fn hook_file_must_be_valid_and_point_at_an_executable() {
        let dir = tempfile::tempdir().unwrap();
        let (hooks, install) = (dir.path().join("hooks"), dir.path().join("install"));
        std::fs::create_dir_all(&hooks).unwrap();
        std::fs::create_dir_all(&install).unwrap();
        let file = hooks.join("tetragon-oci-hook.json");
        let host = Path::new("/opt/tetragon");
        assert!(
            check(&file, host, &install)
                .check
                .summary
                .contains("no hook file")
        );
        let inv = HookInvocation::in_dir("/opt/tetragon", "tetragon-oci-hook", vec![]);
        std::fs::write(&file, hook_json::render(&hook_json::tetragon_hook(&inv))).unwrap();
        let f = check(&file, host, &install);
        assert_eq!(f.check.result, Verdict::Fail);
        assert!(f.check.summary.contains("missing binary"), "{f:?}");
        assert!(f.check.help.unwrap().contains("install"));
        let bin = install.join("tetragon-oci-hook");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = check(&file, host, &install);
        assert_eq!(f.check.result, Verdict::Ok, "{f:?}");
        assert_eq!(f.args.unwrap()[1], "createRuntime");
        std::fs::write(&file, "{\"version\": \"1.0.0\", \"hook\": ").unwrap();
        let f = check(&file, host, &install);
        assert!(f.check.summary.contains("not valid"), "{f:?}");
        assert!(f.check.evidence[0].contains(":1:"), "{f:?}");
    }
}

/// The largest base runtime spec read.
pub const MAX_SPEC: u64 = 16 << 20;

/// `runtime-config` for containerd without NRI (`add-oci-hook`): every runc runtime's
/// effective `base_runtime_spec` names a spec whose `hooks.createRuntime` runs `hook_path`.
/// `None` when the config is not here or no runtime has a base spec (not an add-oci-hook
/// setup). With the check, the hook's argv from a spec that holds it.
pub fn containerd_base_spec(
    config: &Path,
    release: Option<crate::effective::Release>,
    hook_path: &str,
) -> Option<(Check, Option<Vec<String>>)> {
    use crate::effective::{self, MergeRule};
    const ID: &str = "runtime-config";
    let text = crate::patch::read_config(config).ok()?;
    let eff = effective::load(config, Some(text)).and_then(|layers| {
        let rule = match release {
            Some(r) => r.merge_rule(),
            None if effective::merge(&layers, MergeRule::KeyByKey)?.version >= 3 => {
                MergeRule::KeyByKey
            }
            None => MergeRule::WholePluginSection,
        };
        effective::merge(&layers, rule)
    });
    let eff = match eff {
        Ok(e) => e,
        Err(e) => {
            return Some((
                Check::new(
                    ID,
                    Verdict::Fail,
                    "cannot read containerd's effective config",
                )
                .evidence(super::cut(&format!("{e:#}"), 300))
                .help("fix the file, then restart containerd"),
                None,
            ));
        }
    };
    let runc: Vec<_> = eff
        .runtimes()
        .into_iter()
        .filter(|(_, (ty, _))| ty.and_then(|t| t.as_str()) == Some("io.containerd.runc.v2"))
        .collect();
    if runc
        .iter()
        .all(|(_, (_, spec))| spec.and_then(|s| s.as_str()).is_none_or(str::is_empty))
    {
        return None;
    }
    let fix = format!(
        "tetragon-oci-hook-setup patch-containerd-conf add-oci-hook --config-file {} \
         --runtime-spec <spec holding the hook> --in-place && systemctl restart containerd",
        config.display()
    );
    let mut evidence = Vec::new();
    let mut bad = None;
    let mut hook_args = None;
    for (name, (_, spec)) in &runc {
        let Some(setting) = spec.filter(|s| s.as_str().is_some_and(|v| !v.is_empty())) else {
            evidence.push(format!("runtime `{name}`: no base_runtime_spec"));
            bad.get_or_insert(format!("runc runtime `{name}` has no base_runtime_spec"));
            continue;
        };
        let path = setting.as_str().unwrap_or_default();
        let at = format!(
            "{}: runtime `{name}` base_runtime_spec = \"{path}\"",
            setting.origin
        );
        let holds = match crate::plan::read_current(Path::new(path), MAX_SPEC) {
            Ok(Current::File { bytes, .. }) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| format!("not JSON: {e}"))
                .map(|v| {
                    let ours = v["hooks"]["createRuntime"]
                        .as_array()
                        .and_then(|a| a.iter().find(|h| h["path"] == hook_path).cloned());
                    if let Some(h) = &ours {
                        hook_args.get_or_insert_with(|| {
                            h["args"]
                                .as_array()
                                .map(|a| {
                                    a.iter()
                                        .filter_map(|x| x.as_str().map(str::to_owned))
                                        .collect::<Vec<_>>()
                                })
                                .unwrap_or_default()
                        });
                    }
                    ours.is_some()
                }),
            Ok(Current::Absent) => Err("absent".to_owned()),
            Ok(other) => Err(format!("not a regular file ({other:?})")),
            Err(e) => Err(format!("{e:#}")),
        };
        match holds {
            Ok(true) => evidence.push(format!("{at}: runs `{hook_path}` at createRuntime")),
            Ok(false) => {
                evidence.push(format!("{at}: no createRuntime hook `{hook_path}`"));
                bad.get_or_insert(format!(
                    "the base spec of runtime `{name}` does not hold the hook"
                ));
            }
            Err(e) => {
                evidence.push(format!("{at}: {}", super::cut(&e, 200)));
                bad.get_or_insert(format!("the base spec of runtime `{name}` cannot be used"));
            }
        }
    }
    let check = match bad {
        Some(summary) => {
            let mut c = Check::new(ID, Verdict::Fail, summary).help(fix);
            c.evidence = evidence;
            c
        }
        None => {
            let mut c = Check::new(
                ID,
                Verdict::Ok,
                "containerd's runc runtimes run the hook from their base runtime spec",
            );
            c.evidence = evidence;
            c
        }
    };
    Some((check, hook_args))
}

#[cfg(test)]
mod base_spec_tests {
    use super::*;

    #[test]
    fn base_runtime_spec_must_hold_the_hook_on_every_runc_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let spec = dir.path().join("base-spec.json");
        let write_config = |spec_line: &str| {
            std::fs::write(
                &config,
                format!(
                    "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
                     runtime_type = \"io.containerd.runc.v2\"\n{spec_line}\n"
                ),
            )
            .unwrap();
        };
        write_config("base_runtime_spec = \"\"");
        assert!(containerd_base_spec(&config, None, "/opt/t/hook").is_none());
        write_config(&format!("base_runtime_spec = \"{}\"", spec.display()));
        let (c, args) = containerd_base_spec(&config, None, "/opt/t/hook").unwrap();
        assert_eq!((c.result, args), (Verdict::Fail, None), "{c:?}");
        assert!(c.evidence[0].contains(":4: runtime `runc`"), "{c:?}");
        std::fs::write(
            &spec,
            r#"{"hooks": {"createRuntime": [{"path": "/opt/t/hook", "args": ["hook", "createRuntime"]}]}}"#,
        )
        .unwrap();
        let (c, args) = containerd_base_spec(&config, None, "/opt/t/hook").unwrap();
        assert_eq!(c.result, Verdict::Ok, "{c:?}");
        assert_eq!(args.unwrap(), ["hook", "createRuntime"]);
        assert!(containerd_base_spec(&dir.path().join("none"), None, "/x").is_none());
    }
}
