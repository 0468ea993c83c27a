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
