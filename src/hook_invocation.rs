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
    /// Seconds the runtime gives the hook before it kills it (OCI `timeout`): see
    /// [`runtime_timeout`].
    pub timeout: Option<i64>,
}

/// The longest `--grpc-timeout` the hook accepts (`install` refuses more; the hook clamps).
pub use oci_hook::args::MAX_GRPC_TIMEOUT;

/// What the runtime gives the hook beyond its `--grpc-timeout`: the hook ends itself within
/// `--grpc-timeout` + 1 s, so this backstop only fires on a hook that is stuck outside its own
/// control (stopped, or blocked in the kernel).
pub const RUNTIME_TIMEOUT_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// The OCI hook `timeout` (whole seconds) for these hook arguments: `--grpc-timeout` from the
/// arguments (rounded up) plus [`RUNTIME_TIMEOUT_SLACK`]. Without the flag the hook's default
/// applies, unless its defaults file (`tetragon-oci-hook.json`, not visible here) sets another
/// value, so the backstop is then the largest value the hook accepts plus the slack. An invalid
/// value (which `install` refuses anyway) gets the same largest backstop.
pub fn runtime_timeout(extra_args: &[String]) -> i64 {
    // The hook's own parser, so every spelling it accepts (`--grpc_timeout`, `-grpc-timeout`,
    // `=value`) counts and the last one wins, as in the hook. The leading maximum is what stays
    // when the arguments do not set a valid value.
    let mut args = vec![
        "--grpc-timeout".to_owned(),
        oci_hook::args::format_duration(MAX_GRPC_TIMEOUT),
    ];
    args.extend(extra_args.iter().cloned());
    let grpc = oci_hook::args::parse(&args, std::path::Path::new("/"), None)
        .config
        .grpc_timeout
        .min(MAX_GRPC_TIMEOUT);
    let total = grpc + RUNTIME_TIMEOUT_SLACK;
    let secs = total.as_secs() + u64::from(total.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

impl HookInvocation {
    /// The hook at `path` on the host, its log next to it, at [`STAGE`], with the runtime's
    /// timeout for these arguments ([`runtime_timeout`]).
    pub fn new(path: impl Into<String>, extra_args: Vec<String>) -> Self {
        let path = path.into();
        let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let log_file = format!("{}/{HOOK_LOG_NAME}", dir.trim_end_matches('/'));
        Self {
            path,
            log_file,
            stage: STAGE,
            timeout: Some(runtime_timeout(&extra_args)),
            extra_args,
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

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn runtime_timeout_is_the_grpc_timeout_rounded_up_plus_slack() {
        assert_eq!(runtime_timeout(&args("--grpc-timeout 10s")), 12);
        assert_eq!(runtime_timeout(&args("--grpc-timeout=1500ms")), 4);
        assert_eq!(runtime_timeout(&args("-grpc-timeout 3s --x")), 5);
        // The last one wins, as in the hook.
        assert_eq!(
            runtime_timeout(&args("--grpc-timeout 1s --grpc-timeout 2s")),
            4
        );
    }

    #[test]
    fn runtime_timeout_without_a_valid_flag_covers_the_largest_the_hook_accepts() {
        let largest = i64::try_from((MAX_GRPC_TIMEOUT + RUNTIME_TIMEOUT_SLACK).as_secs()).unwrap();
        for line in [
            "",
            "--fail-allow-namespaces a",
            "--grpc-timeout soon",
            "--grpc-timeout 100000h",
        ] {
            assert_eq!(runtime_timeout(&args(line)), largest, "{line}");
        }
        // A value that only looks like the flag (the value of another flag) is not it.
        assert_eq!(
            runtime_timeout(&args("--fail-cel-expr grpc-timeout=1s")),
            largest
        );
    }

    #[test]
    fn runtime_timeout_follows_every_spelling_the_hook_accepts_last_one_wins() {
        assert_eq!(
            runtime_timeout(&args("--grpc-timeout=1s --grpc_timeout=30s")),
            32
        );
        assert_eq!(
            runtime_timeout(&args("--grpc_timeout 30s -grpc-timeout=1s")),
            3
        );
        assert_eq!(runtime_timeout(&args("-grpc_timeout=4s")), 6);
        // After `--` nothing is a flag, for the hook either.
        let largest = i64::try_from((MAX_GRPC_TIMEOUT + RUNTIME_TIMEOUT_SLACK).as_secs()).unwrap();
        assert_eq!(runtime_timeout(&args("-- --grpc-timeout=1s")), largest);
    }

    #[test]
    fn every_invocation_carries_the_runtime_timeout() {
        let h = HookInvocation::in_dir("/opt/t", "h", args("--grpc-timeout 5s"));
        assert_eq!(h.timeout, Some(7));
    }
}
