//! The one way the runtime runs the hook, built once and rendered by the hooks.d JSON
//! ([`crate::hook_json::tetragon_hook`]), the NRI adjustment
//! ([`crate::nri::plugin::Plugin`]) and `print-config`.

use crate::defaults::{HOOK_LOG_NAME, STAGE};

/// How the runtime runs `tetragon-oci-hook`: every path is the host's, since the runtime runs
/// on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookInvocation {
    /// Absolute path of the hook binary on the host (also `args[0]`).
    pub path: String,
    /// The hook's log file on the host (`--log-fname`), next to the binary.
    pub log_file: String,
    /// The OCI stage it runs at.
    pub stage: &'static str,
    /// Arguments after the fixed ones (`hook-args`), passed through untouched.
    pub extra_args: Vec<String>,
    /// Seconds the runtime gives the hook, if it should bound it.
    pub timeout: Option<i64>,
}

impl HookInvocation {
    /// The hook at `path` on the host, its log next to it, at [`STAGE`], no timeout.
    pub fn new(path: impl Into<String>, extra_args: Vec<String>) -> Self {
        let path = path.into();
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let log_file = format!("{}/{HOOK_LOG_NAME}", dir.trim_end_matches('/'));
        Self {
            path,
            log_file,
            stage: STAGE,
            extra_args,
            timeout: None,
        }
    }

    /// The hook binary `binary_name` in the install dir `host_dir` (as the host sees it).
    pub fn in_dir(host_dir: &str, binary_name: &str, extra_args: Vec<String>) -> Self {
        Self::new(
            format!("{}/{binary_name}", host_dir.trim_end_matches('/')),
            extra_args,
        )
    }

    /// The hook's argv: `[path, stage, --log-fname, log_file, extra_args...]`. `args[0]` is the
    /// full host path, what runc shows in `ps` and what upstream's hooks.d file holds.
    pub fn args(&self) -> Vec<String> {
        let mut args = Vec::with_capacity(4 + self.extra_args.len());
        args.extend([
            self.path.clone(),
            self.stage.to_owned(),
            "--log-fname".to_owned(),
            self.log_file.clone(),
        ]);
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_goes_next_to_the_binary_and_args_0_is_the_full_path() {
        let h = HookInvocation::in_dir("/opt/tetragon/", "tetragon-oci-hook", vec!["-x".into()]);
        assert_eq!(h.path, "/opt/tetragon/tetragon-oci-hook");
        assert_eq!(
            h.args(),
            [
                "/opt/tetragon/tetragon-oci-hook",
                "createRuntime",
                "--log-fname",
                "/opt/tetragon/tetragon-oci-hook.log",
                "-x"
            ]
        );
        assert_eq!(
            HookInvocation::new("/hook", vec![]).log_file,
            "/tetragon-oci-hook.log"
        );
        assert_eq!(
            HookInvocation::in_dir("/", "h", vec![]).log_file,
            "/tetragon-oci-hook.log"
        );
    }
}
