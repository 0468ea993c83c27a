//! Every default name and path of the tool, defined once: the CLI's defaults, the hook's
//! invocation ([`crate::hook_invocation`]) and the NRI plugin read them from here. What the hook
//! itself defines (its log file name) is taken from the hook crate, so the two cannot drift.

/// File name of the hook binary.
pub const BINARY_NAME: &str = "tetragon-oci-hook";
/// Where the image holds the hook binary (`install --local-binary`, `print-config --binary`).
pub const LOCAL_BINARY: &str = "/usr/bin/tetragon-oci-hook";
/// File name of the hook's log, next to the installed binary.
pub const HOOK_LOG_NAME: &str = oci_hook::args::DEFAULT_LOG_FILE;
/// File name of the NRI plugin's own log in pre-launched mode, under the install dir.
pub const NRI_PLUGIN_LOG_NAME: &str = "tetragon-nri-hook.log";
/// The OCI stage the hook runs at (hooks.d `stages`, the NRI adjustment's hook list): the hook
/// crate's own definition.
pub use oci_hook::args::CREATE_RUNTIME as STAGE;
/// The hooks dir as the installer's pod mounts it (`--oci-hooks.local-dir`).
pub const HOOKS_LOCAL_DIR: &str = "/hostHooks";
/// containerd's NRI socket (`--nri-hook.socket`, and the `socket_path` `enable-nri` writes).
pub const NRI_SOCKET: &str = "/var/run/nri/nri.sock";
/// Name of the NRI plugin (`--nri-hook.name`; also of a pre-launched plugin).
pub const NRI_PLUGIN_NAME: &str = "tetragon";
/// Index of the NRI plugin (`--nri-hook.index`; also of a pre-launched plugin).
pub const NRI_PLUGIN_INDEX: &str = "01";
/// containerd's configuration file.
pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// The base runtime spec `add-oci-hook` points runc runtimes at.
pub const CONTAINERD_BASE_SPEC: &str = "/etc/containerd/base-spec.json";
/// cri-o's configuration file.
pub const CRIO_CONFIG: &str = "/etc/crio/crio.conf";
/// Name of the edit locks' directory (under `/run` for root).
pub const LOCK_DIR_NAME: &str = "tetragon-oci-hook-setup";
/// The default hooks dir of cri-o and podman (`hooks.DefaultDir`).
pub const RUNTIME_HOOKS_DIR: &str = "/usr/share/containers/oci/hooks.d";
/// The Helm chart's default host hooks dir (`rthooks.ociHooks.hooksPath`), mounted at
/// [`HOOKS_LOCAL_DIR`]: the runtimes' default one.
pub const CHART_HOOKS_HOST_DIR: &str = RUNTIME_HOOKS_DIR;
/// podman 4/5's vendor `containers.conf` (containers/common <= 0.67), read first.
pub const PODMAN_USR_CONF: &str = "/usr/share/containers/containers.conf";
/// podman's system `containers.conf`, read next, then its `.d/*.conf`.
pub const PODMAN_ETC_CONF: &str = "/etc/containers/containers.conf";
/// root's user `containers.conf` (`$HOME/.config/containers/containers.conf`, HOME being
/// `/root`), read after the system files, then its `.d/*.conf`.
pub const PODMAN_ROOT_USER_CONF: &str = "/root/.config/containers/containers.conf";
/// The environment variable naming a `containers.conf` podman reads last, over every other.
pub const CONTAINERS_CONF_OVERRIDE_ENV: &str = "CONTAINERS_CONF_OVERRIDE";
