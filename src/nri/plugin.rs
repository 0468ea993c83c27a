//! The plugin's answers: what Tetragon's NRI plugin replies to each `Plugin` call, and the
//! pre-launched plugin's configuration file.
//!
//! [`Plugin::handle`] takes a decoded ttrpc request and returns the encoded reply or a status; it
//! does no I/O besides logging. The reply to `CreateContainer` is encoded once, when the hook is
//! known, so answering costs a copy. The connection handling is in [`crate::nri::session`].

use std::path::Path;

use prost::Message as _;

use crate::defaults::{BINARY_NAME, NRI_PLUGIN_LOG_NAME};
use crate::hook_invocation::HookInvocation;
use crate::nri::log::Log;
use crate::nri::proto::nri::{
    ConfigureRequest, ConfigureResponse, ContainerAdjustment, CreateContainerRequest,
    CreateContainerResponse, Empty, Event, Hook, Hooks, OptionalInt, SynchronizeRequest,
    SynchronizeResponse,
};
use crate::nri::ttrpc::code;

/// The NRI plugin service name.
pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
/// The NRI runtime service name.
pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";
/// The event mask sent in `Configure`: `CreateContainer` only.
pub const EVENT_MASK: i32 = 1 << (Event::CreateContainer as i32 - 1);

/// The hook every container gets, as NRI's `Hook` (for the adjustment's `createRuntime` list:
/// the invocation's stage).
pub fn nri_hook(invocation: &HookInvocation) -> Hook {
    Hook {
        path: invocation.path.clone(),
        args: invocation.args(),
        env: Vec::new(),
        timeout: invocation.timeout.map(|value| OptionalInt { value }),
    }
}

/// The encoded `CreateContainerResponse` that adds the hook.
pub fn encoded_response(invocation: &HookInvocation) -> Vec<u8> {
    CreateContainerResponse {
        adjust: Some(ContainerAdjustment {
            hooks: Some(Hooks {
                create_runtime: vec![nri_hook(invocation)],
                ..Hooks::default()
            }),
        }),
    }
    .encode_to_vec()
}

/// The `.conf` file of a pre-launched plugin (`plugin_config_path/NN-name.conf`), which the
/// runtime passes in `Configure`. TOML:
///
/// ```toml
/// host_install_dir = "/opt/tetragon"                     # required
/// hook_args = ["--grpc-address", "unix:///var/run/tetragon/tetragon.sock"]
/// log_file = "/var/log/tetragon-nri-hook.log"            # default: <host_install_dir>/tetragon-nri-hook.log
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrelaunchConfig {
    /// The hook to add.
    pub hook: HookInvocation,
    /// Where the plugin logs.
    pub log_file: String,
}

impl PrelaunchConfig {
    /// Parses the configuration text; errors name the key and end with a `help:` line.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let help = "the pre-launched plugin reads its `.conf` file from containerd's NRI \
                    `plugin_config_path` (`NN-name.conf`), TOML with `host_install_dir = \
                    \"/opt/tetragon\"` and optional `hook_args = [...]` and `log_file`";
        if text.trim().is_empty() {
            return Err(crate::error::help_error(
                "the plugin configuration is empty",
                help,
            ));
        }
        let doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
            crate::error::help_error(
                format!(
                    "the plugin configuration is not valid TOML: {}",
                    e.to_string().trim_end()
                ),
                help,
            )
        })?;
        for (key, _) in doc.iter() {
            if !["host_install_dir", "hook_args", "log_file"].contains(&key) {
                return Err(crate::error::help_error(
                    format!("the plugin configuration has an unknown key `{key}`"),
                    help,
                ));
            }
        }
        let string = |key: &str| -> anyhow::Result<Option<String>> {
            match doc.get(key) {
                None => Ok(None),
                Some(item) => item.as_str().map(|s| Some(s.to_owned())).ok_or_else(|| {
                    crate::error::help_error(
                        format!("`{key}` in the plugin configuration is not a string"),
                        help,
                    )
                }),
            }
        };
        let dir = string("host_install_dir")?.ok_or_else(|| {
            crate::error::help_error("the plugin configuration has no `host_install_dir`", help)
        })?;
        if !Path::new(&dir).is_absolute() {
            return Err(crate::error::help_error(
                format!("`host_install_dir` `{dir}` is not an absolute path"),
                help,
            ));
        }
        let args = match doc.get("hook_args") {
            None => Vec::new(),
            Some(item) => {
                let bad = || crate::error::help_error("`hook_args` is not a list of strings", help);
                let array = item.as_array().ok_or_else(bad)?;
                array
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned).ok_or_else(bad))
                    .collect::<anyhow::Result<Vec<_>>>()?
            }
        };
        let log_file = string("log_file")?
            .unwrap_or_else(|| format!("{}/{NRI_PLUGIN_LOG_NAME}", dir.trim_end_matches('/')));
        Ok(Self {
            hook: HookInvocation::in_dir(&dir, BINARY_NAME, args),
            log_file,
        })
    }
}

/// A reply to one request: the encoded message, or a gRPC status.
pub type Reply = Result<Vec<u8>, (i32, String)>;

/// The plugin's state across one connection.
#[derive(Debug)]
pub struct Plugin {
    /// The plugin's name (`--nri-hook.name`).
    pub name: String,
    /// The plugin's two-digit index (`--nri-hook.index`).
    pub index: String,
    /// `<index>-<name>`, for log lines.
    pub full_name: String,
    /// The encoded `CreateContainerResponse`; `None` until a pre-launched plugin is configured.
    adjustment: Option<Vec<u8>>,
    /// Pre-launched: the hook comes from `Configure`'s configuration.
    from_config: bool,
    /// Where log lines go.
    pub log: Log,
    /// The state file `status` reads (`None`: none kept).
    pub state: Option<crate::status::state::Recorder>,
}

impl Plugin {
    /// A plugin that adds `hook` to every container.
    pub fn new(name: &str, index: &str, hook: &HookInvocation, log: Log) -> Self {
        Self {
            name: name.to_owned(),
            index: index.to_owned(),
            full_name: format!("{index}-{name}"),
            adjustment: Some(encoded_response(hook)),
            from_config: false,
            log,
            state: None,
        }
    }

    /// A pre-launched plugin: the hook (and log file) come from `Configure`.
    pub fn from_config(name: &str, index: &str, log: Log) -> Self {
        Self {
            name: name.to_owned(),
            index: index.to_owned(),
            full_name: format!("{index}-{name}"),
            adjustment: None,
            from_config: true,
            log,
            state: None,
        }
    }

    /// Writes the state file if a write is due (called after replies are sent); a failure is
    /// logged, once per kind of error, and never stops the plugin.
    pub fn state_tick(&mut self) {
        if let Some(state) = &mut self.state {
            if let Err(e) = state.tick() {
                self.log.warn(format_args!(
                    "{}: cannot write the state file: {e:#}",
                    self.full_name
                ));
            }
        }
    }

    /// Records a state change (`f` on the recorder, which writes at once), logging a failure.
    pub fn state_now(
        &mut self,
        f: impl FnOnce(&mut crate::status::state::Recorder) -> anyhow::Result<()>,
    ) {
        if let Some(state) = &mut self.state {
            if let Err(e) = f(state) {
                self.log.warn(format_args!(
                    "{}: cannot write the state file: {e:#}",
                    self.full_name
                ));
            }
        }
    }

    /// Answers one `Plugin` call.
    pub fn handle(&mut self, service: &str, method: &str, payload: &[u8]) -> Reply {
        if service != PLUGIN_SERVICE {
            return Err((code::UNIMPLEMENTED, format!("service {service}")));
        }
        match method {
            "CreateContainer" => Ok(self.create_container(payload)),
            "Configure" => self.configure(payload),
            "Synchronize" => {
                let req = SynchronizeRequest::decode(payload).map_err(|e| {
                    (
                        code::INVALID_ARGUMENT,
                        format!("cannot decode SynchronizeRequest: {e}"),
                    )
                })?;
                // Newer runtimes split a large state into several calls and drop a plugin
                // that does not echo `more`.
                Ok(SynchronizeResponse { more: req.more }.encode_to_vec())
            }
            "Shutdown" => {
                self.log
                    .info(format_args!("{}: runtime shutting down", self.full_name));
                Ok(Empty {}.encode_to_vec())
            }
            _ => Err((code::UNIMPLEMENTED, format!("method {method}"))),
        }
    }

    fn configure(&mut self, payload: &[u8]) -> Reply {
        let req = ConfigureRequest::decode(payload).map_err(|e| {
            (
                code::INVALID_ARGUMENT,
                format!("cannot decode ConfigureRequest: {e}"),
            )
        })?;
        self.log.info(format_args!(
            "{}: configured by {} {} (registration timeout {} ms, request timeout {} ms)",
            self.full_name,
            req.runtime_name,
            req.runtime_version,
            req.registration_timeout / 1_000_000,
            req.request_timeout / 1_000_000
        ));
        if let Some(state) = &mut self.state {
            state.configured(&req.runtime_name, &req.runtime_version);
        }
        if self.from_config {
            let config = PrelaunchConfig::parse(&req.config).map_err(|e| {
                let msg = format!("{}: {}", self.full_name, crate::error::Report(&e));
                self.log.error(format_args!("{msg}"));
                (code::INVALID_ARGUMENT, msg)
            })?;
            self.log.open_file(Path::new(&config.log_file));
            let hook = &config.hook;
            // As `install` checks its `hook-args`: a typo here would reach every container.
            // The plugin runs on the host, so the hook binary is at its host path.
            match crate::install::validate_hook_args(Path::new(&hook.path), &config.hook.extra_args)
            {
                Ok(None) => {}
                Ok(Some(warning)) => self.log.warn(format_args!("{}: {warning}", self.full_name)),
                Err(e) => {
                    // A status text for containerd's log: one line, the fix at its end.
                    let mut help = "fix `hook_args` in the plugin's `.conf` file (containerd's \
                                    NRI `plugin_config_path`); the plugin adds no hook until it \
                                    is valid"
                        .to_owned();
                    if let Some(fix) = crate::error::help_of(&e) {
                        help.push_str("; ");
                        help.push_str(fix);
                    }
                    let msg = format!(
                        "{}: `hook_args` in the plugin configuration: {}; help: {help}",
                        self.full_name,
                        format!("{e:#}").replace(":\n", ": ").replace('\n', "; "),
                    );
                    self.log.error(format_args!("{msg}"));
                    return Err((code::INVALID_ARGUMENT, msg));
                }
            }
            self.log
                .info(format_args!("{}: hook `{}`", self.full_name, hook.path));
            self.adjustment = Some(encoded_response(&config.hook));
            // The plugin runs on the host: its state goes beside the hook binary.
            let dir = Path::new(&hook.path).parent().unwrap_or(Path::new("/"));
            let state = self.state.get_or_insert_with(|| {
                crate::status::state::Recorder::new(
                    dir.join(crate::status::state::FILE_NAME),
                    &self.name,
                    &self.index,
                    "(pre-launched)",
                    hook,
                )
            });
            state.set_hook(hook);
            state.configured(&req.runtime_name, &req.runtime_version);
        }
        Ok(ConfigureResponse { events: EVENT_MASK }.encode_to_vec())
    }

    /// Never an error status: that would fail the container's creation. The adjustment does not
    /// depend on the request, so an undecodable request still gets the hook (and an error line).
    fn create_container(&mut self, payload: &[u8]) -> Vec<u8> {
        match CreateContainerRequest::decode(payload) {
            Ok(req) => {
                let pod = req.pod.unwrap_or_default();
                let ctr = req.container.unwrap_or_default();
                self.log.info(format_args!(
                    "{}: adding hook to container {}/{}/{} ({})",
                    self.full_name, pod.namespace, pod.name, ctr.name, ctr.id
                ));
            }
            Err(e) => self.log.error(format_args!(
                "{}: cannot decode CreateContainerRequest ({e}); adding the hook anyway",
                self.full_name
            )),
        }
        match &self.adjustment {
            Some(adj) => {
                if let Some(state) = &mut self.state {
                    state.adjusted();
                }
                adj.clone()
            }
            None => {
                self.log.error(format_args!(
                    "{}: CreateContainer before Configure: no hook to add",
                    self.full_name
                ));
                Vec::new()
            }
        }
    }
}

/// Checks `--nri-hook.index`: exactly two ASCII digits, as the runtime orders plugins by it.
pub fn check_index(index: &str) -> anyhow::Result<()> {
    if index.len() == 2 && index.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(crate::error::help_error(
            format!("--nri-hook.index `{index}` is not two digits"),
            "NRI orders plugins by a two-digit index, e.g. `--nri-hook.index 01`",
        ))
    }
}

/// Checks `--nri-hook.name`: non-empty, no `/` or whitespace.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.chars().any(|c| c == '/' || c.is_whitespace()) {
        return Err(crate::error::help_error(
            format!("--nri-hook.name `{name}` is not a plugin name"),
            "use letters, digits and `-`, e.g. `--nri-hook.name tetragon`",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> HookInvocation {
        HookInvocation::in_dir(
            "/opt/tetragon/",
            "tetragon-oci-hook",
            vec!["--fail-allow-namespaces".into(), "kube-system".into()],
        )
    }

    #[test]
    fn hook_has_path_stage_log_and_args() {
        let h = nri_hook(&spec());
        assert_eq!(h.path, "/opt/tetragon/tetragon-oci-hook");
        assert_eq!(
            h.args,
            [
                "/opt/tetragon/tetragon-oci-hook",
                "createRuntime",
                "--log-fname",
                "/opt/tetragon/tetragon-oci-hook.log",
                "--fail-allow-namespaces",
                "kube-system"
            ]
        );
    }

    #[test]
    fn nri_hook_and_hooks_d_file_run_the_hook_alike() {
        let file = crate::hook_json::tetragon_hook(&spec());
        let nri = nri_hook(&spec());
        assert_eq!((nri.path, nri.args), (file.hook.path, file.hook.args));
        assert_eq!(file.stages, [crate::defaults::STAGE]);
    }

    #[test]
    fn event_mask_is_create_container_only() {
        assert_eq!(EVENT_MASK, 8);
    }

    #[test]
    fn index_must_be_two_digits() {
        for ok in ["00", "01", "99"] {
            check_index(ok).unwrap();
        }
        for bad in ["1", "001", "a1", "", "٠١", "-1"] {
            assert!(check_index(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prelaunch_config_parses_and_explains_errors() {
        let c =
            PrelaunchConfig::parse("host_install_dir = \"/opt/t\"\nhook_args = [\"-a\", \"b\"]\n")
                .unwrap();
        assert_eq!(c.log_file, "/opt/t/tetragon-nri-hook.log");
        assert_eq!(c.hook.extra_args, ["-a", "b"]);
        let err = |t: &str| format!("{:#}", PrelaunchConfig::parse(t).unwrap_err());
        assert!(err("").contains("is empty"));
        assert!(err("hook_args = []").contains("no `host_install_dir`"));
        assert!(err("host_install_dir = \"rel\"").contains("not an absolute path"));
        assert!(err("host_install_dir = \"/x\"\nhook_args = [1]").contains("list of strings"));
        assert!(err("host_install_dir = \"/x\"\nfoo = 1").contains("unknown key `foo`"));
        assert!(err("host_install_dir = ").contains("not valid TOML"));
    }

    #[test]
    fn a_refused_hook_args_status_is_one_line_ending_with_every_fix() {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "host_install_dir = \"{}\"\nhook_args = [\"--log-level=bad\", \"poststop\"]\n\
             log_file = \"{}\"\n",
            dir.path().display(),
            dir.path().join("plugin.log").display()
        );
        let req = ConfigureRequest {
            config,
            runtime_name: "fake".into(),
            runtime_version: "0".into(),
            registration_timeout: 0,
            request_timeout: 0,
        };
        let mut plugin = Plugin::from_config("tetragon", "01", Log::pending());
        let (status, msg) = plugin
            .handle(PLUGIN_SERVICE, "Configure", &req.encode_to_vec())
            .unwrap_err();
        assert_eq!(status, code::INVALID_ARGUMENT);
        assert!(!msg.contains('\n'), "{msg}");
        assert_eq!(msg.matches("help:").count(), 1, "{msg}");
        assert!(
            msg.contains(
                "invalid hook arguments: invalid `--log-level` `bad`; unexpected argument \
                 `poststop`; help: fix `hook_args`"
            ),
            "{msg}"
        );
        assert!(
            msg.ends_with(
                "; use one of trace, debug, info, warn, error; hook arguments are flags only; the \
                 runtime passes the hook name (createRuntime) itself"
            ),
            "{msg}"
        );
    }
}
