//! The NRI checks: containerd's effective config enables NRI (and its validator accepts OCI
//! hooks), the NRI socket accepts a connection, and our plugin is registered (its state file,
//! [`super::state`]).

use std::path::Path;
use std::time::Duration;

use super::state::{self, Liveness, NriState, Unusable};
use super::{Check, Verdict};
use crate::effective::{self, MergeRule, Release};

/// How to enable NRI in `config` (the main file) and restart containerd.
fn enable_nri_fix(config: &Path) -> String {
    format!(
        "tetragon-oci-hook-setup patch-containerd-conf enable-nri --config-file {} --in-place \
         && systemctl restart containerd",
        config.display()
    )
}

/// `runtime-config` for nri-hook: NRI effectively enabled in containerd's config `config`
/// (the main file and its imports), and its default validator not rejecting OCI hooks.
/// `release`: the containerd release reading it (`None`: guessed from the config's `version`:
/// 3 and more is 2.x, else 1.x).
pub fn runtime_config(config: &Path, release: Option<Release>) -> Check {
    const ID: &str = "runtime-config";
    let text = match crate::patch::read_config(config) {
        Ok(t) => t,
        Err(e) if std::fs::symlink_metadata(config).is_err() => {
            let _ = e;
            return Check::new(
                ID,
                Verdict::Skip,
                format!(
                    "containerd config `{}` not found here: NRI not checked",
                    config.display()
                ),
            )
            .help("pass containerd's config with --config-file (mount it read-only in the pod)");
        }
        Err(e) => {
            return Check::new(
                ID,
                Verdict::Fail,
                format!(
                    "cannot read containerd config: {}",
                    super::cut(&format!("{e:#}"), 300)
                ),
            )
            .evidence(config.display().to_string())
            .help(crate::error::help_of(&e).unwrap_or("fix the file, then restart containerd"));
        }
    };
    let eff = effective::load(config, Some(text)).and_then(|layers| {
        let rule = match release {
            Some(r) => r.merge_rule(),
            None => {
                let v = effective::merge(&layers, MergeRule::KeyByKey)?.version;
                if v >= 3 {
                    MergeRule::KeyByKey
                } else {
                    MergeRule::WholePluginSection
                }
            }
        };
        effective::merge(&layers, rule)
    });
    let eff = match eff {
        Ok(eff) => eff,
        Err(e) => {
            return Check::new(
                ID,
                Verdict::Fail,
                format!(
                    "cannot read containerd's effective config: {}",
                    super::cut(&format!("{e:#}"), 300)
                ),
            )
            .evidence(config.display().to_string())
            .help(crate::error::help_of(&e).unwrap_or("fix the file, then restart containerd"));
        }
    };
    let files = if eff.files.len() > 1 {
        format!(" (with {} imported file(s))", eff.files.len() - 1)
    } else {
        String::new()
    };
    let table = eff.nri_plugin();
    let disable = eff.nri_disable();
    if !eff.nri_enabled() {
        let (evidence, help) = match disable {
            Some(s) => {
                let help = if s.origin.path == config {
                    enable_nri_fix(config)
                } else {
                    format!(
                        "set `disable = false` in `[plugins.\"{table}\"]` at {}, or run `{}`",
                        s.origin,
                        enable_nri_fix(config)
                    )
                };
                (
                    format!("{}: plugins.\"{table}\".disable = {}", s.origin, s.value),
                    help,
                )
            }
            None => (
                format!(
                    "{}: no plugins.\"{table}\" table: NRI is off by default in containerd 1.x",
                    config.display()
                ),
                enable_nri_fix(config),
            ),
        };
        return Check::new(
            ID,
            Verdict::Fail,
            format!("NRI is disabled in containerd's config{files}"),
        )
        .evidence(evidence)
        .help(help);
    }
    match crate::nri_validator::containerd_rejection(&eff) {
        Ok(None) => {}
        Ok(Some(rejection)) => {
            return Check::new(ID, Verdict::Fail, rejection.message())
                .evidence(format!("{}: {} = true", rejection.at, rejection.key))
                .help(rejection.help());
        }
        Err(e) => {
            return Check::new(ID, Verdict::Fail, e.message.clone()).help(e.help.clone());
        }
    }
    let mut check = Check::new(ID, Verdict::Ok, format!("NRI is enabled{files}"));
    check = match disable {
        Some(s) => check.evidence(format!(
            "{}: plugins.\"{table}\".disable = {}",
            s.origin, s.value
        )),
        None => check.evidence(format!(
            "{}: NRI on by default (containerd 2.x, version {})",
            config.display(),
            eff.version
        )),
    };
    check
}

/// `nri-socket`: `socket` is a unix socket that accepts a connection within `timeout` (the
/// connection is closed at once). `connected_plugin`: the pid of our plugin when its state says
/// it is registered through this socket: that live connection is the proof, and no probe is
/// made (containerd logs every connection that does not register as an error, which a
/// readiness probe would repeat every few seconds).
pub fn socket(socket: &Path, timeout: Duration, connected_plugin: Option<u32>) -> Check {
    const ID: &str = "nri-socket";
    let restart = "check that containerd runs with NRI enabled (`systemctl status containerd`), \
                   then `systemctl restart containerd`; in a pod, mount the socket's directory \
                   (not the socket file: a file mount keeps a stale socket after a restart)";
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::symlink_metadata(socket) {
        Err(e) => {
            return Check::new(ID, Verdict::Fail, "no NRI socket: NRI is not running")
                .evidence(format!("{}: {e}", socket.display()))
                .help(restart);
        }
        Ok(m) if !m.file_type().is_socket() => {
            return Check::new(ID, Verdict::Fail, "the NRI socket path is not a socket")
                .evidence(socket.display().to_string())
                .help("pass the runtime's NRI socket with --nri-hook.socket");
        }
        Ok(_) => {}
    }
    if let Some(pid) = connected_plugin {
        return Check::new(
            ID,
            Verdict::Ok,
            format!("our plugin (pid {pid}) is connected through the NRI socket"),
        )
        .evidence(format!(
            "{}: not probed (a probe connection makes containerd log a failed registration)",
            socket.display()
        ));
    }
    match super::agent::connect_unix(socket, timeout) {
        Ok(()) => Check::new(ID, Verdict::Ok, "the NRI socket accepts connections")
            .evidence(socket.display().to_string()),
        Err(e) => Check::new(ID, Verdict::Fail, "the NRI socket accepts no connection")
            .evidence(format!("{}: {e}", socket.display()))
            .help(restart),
    }
}

/// What the plugin check found, for the other checks: the state, when it is usable.
#[derive(Debug)]
pub struct PluginFound {
    /// The check.
    pub check: Check,
    /// The state file's content, when it could be read and trusted.
    pub state: Option<NriState>,
    /// Whether the plugin is registered and alive now.
    pub registered: bool,
}

/// `nri-plugin`: the state file at `path` names a live plugin of ours, registered, with a fresh
/// state. `name`/`index`: the expected plugin.
pub fn plugin(path: &Path, name: &str, index: &str) -> PluginFound {
    const ID: &str = "nri-plugin";
    let run = "the DaemonSet runs it: `tetragon-oci-hook-setup install --interface nri-hook \
               --daemonize --local-install-dir ... --host-install-dir ...`; see the pod's log \
               (`kubectl -n kube-system logs <tetragon-rthooks pod>`)";
    let st = match state::read(path) {
        Ok(s) => s,
        Err(Unusable::Absent) => {
            return PluginFound {
                check: Check::new(
                    ID,
                    Verdict::Fail,
                    "our NRI plugin is not running (no state file)",
                )
                .evidence(format!("{}: absent", path.display()))
                .help(run),
                state: None,
                registered: false,
            };
        }
        Err(why) => {
            return PluginFound {
                check: Check::new(ID, Verdict::Fail, format!("state file not trusted: {why}"))
                    .evidence(path.display().to_string())
                    .help(format!(
                        "remove `{}`: the running plugin writes it again (as root, 0644, a \
                         regular file)",
                        path.display()
                    )),
                state: None,
                registered: false,
            };
        }
    };
    let who = format!(
        "{}: pid {}, plugin {}-{}, socket {}",
        path.display(),
        st.pid,
        st.plugin_index,
        st.plugin_name,
        st.socket
    );
    let mut evidence = vec![who];
    if let (Some(n), Some(v)) = (&st.runtime_name, &st.runtime_version) {
        evidence.push(format!("runtime {n} {v}"));
    }
    evidence.push(format!(
        "{} container(s) adjusted, last at {}",
        st.containers_adjusted,
        st.last_adjusted.as_deref().unwrap_or("-")
    ));
    if let Some(e) = &st.last_error {
        evidence.push(format!(
            "last error at {}: {}",
            st.last_error_at.as_deref().unwrap_or("?"),
            super::cut(e, 300)
        ));
    }
    let with = |mut c: Check| {
        c.evidence.extend(evidence.iter().cloned());
        c
    };
    match state::liveness(&st) {
        Liveness::Alive => {}
        Liveness::Gone => {
            return PluginFound {
                check: with(Check::new(
                    ID,
                    Verdict::Fail,
                    format!("our NRI plugin is not running (pid {} is gone)", st.pid),
                ))
                .help(run),
                state: Some(st),
                registered: false,
            };
        }
        Liveness::Reused(why) => {
            return PluginFound {
                check: with(Check::new(
                    ID,
                    Verdict::Fail,
                    format!("our NRI plugin is not running ({why})"),
                ))
                .help(run),
                state: Some(st),
                registered: false,
            };
        }
    }
    if !st.registered {
        return PluginFound {
            check: with(Check::new(
                ID,
                Verdict::Fail,
                format!(
                    "our NRI plugin (pid {}) is running but not registered with the runtime",
                    st.pid
                ),
            ))
            .help(
                "check that containerd runs with NRI enabled and that --nri-hook.socket is its \
                 socket; the plugin's log says why",
            ),
            state: Some(st),
            registered: false,
        };
    }
    let mut check = if st.plugin_name != name || st.plugin_index != index {
        with(Check::new(
            ID,
            Verdict::Warn,
            format!(
                "a plugin {}-{} is registered, not {index}-{name}",
                st.plugin_index, st.plugin_name
            ),
        ))
        .help("pass the plugin's --nri-hook.name and --nri-hook.index")
    } else {
        with(Check::new(
            ID,
            Verdict::Ok,
            format!(
                "registered since {} (pid {})",
                st.registered_since.as_deref().unwrap_or("?"),
                st.pid
            ),
        ))
    };
    let age = state::age(&st);
    if age > 2 * state::HEARTBEAT.as_secs() {
        check.result = check.result.max(Verdict::Warn);
        check.summary = format!(
            "state not refreshed for {age} s (the plugin rewrites it every {} s): the plugin \
             may be stuck",
            state::HEARTBEAT.as_secs()
        );
        check.help = Some(format!(
            "look at the plugin's log; restart its pod if it is stuck (pid {})",
            st.pid
        ));
    }
    PluginFound {
        check,
        state: Some(st),
        registered: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nri_off_in_a_1_7_config_names_the_file_line_and_enable_nri() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.nri.v1.nri\"]\n    disable = true\n",
        )
        .unwrap();
        let c = runtime_config(&path, None);
        assert_eq!(c.result, Verdict::Fail, "{c:?}");
        assert_eq!(
            c.evidence,
            [format!(
                "{}:5: plugins.\"io.containerd.nri.v1.nri\".disable = true",
                path.display()
            )]
        );
        assert!(c.help.unwrap().contains("enable-nri"));
        std::fs::write(&path, "version = 3\n").unwrap();
        assert_eq!(runtime_config(&path, None).result, Verdict::Ok);
        assert_eq!(
            runtime_config(&dir.path().join("none.toml"), None).result,
            Verdict::Skip
        );
        std::fs::write(&path, "version = [\n").unwrap();
        assert_eq!(runtime_config(&path, None).result, Verdict::Fail);
    }

    #[test]
    fn a_socket_path_that_is_a_file_or_missing_fails() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nri.sock");
        assert_eq!(
            socket(&file, Duration::from_millis(100), None).result,
            Verdict::Fail
        );
        std::fs::write(&file, "").unwrap();
        let c = socket(&file, Duration::from_millis(100), None);
        assert!(c.summary.contains("not a socket"), "{c:?}");
        std::fs::remove_file(&file).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(&file).unwrap();
        assert_eq!(
            socket(&file, Duration::from_millis(100), None).result,
            Verdict::Ok
        );
        assert!(
            socket(&file, Duration::from_millis(100), Some(7))
                .summary
                .contains("pid 7")
        );
        drop(listener);
        // A socket file nobody listens on.
        assert_eq!(
            socket(&file, Duration::from_millis(100), None).result,
            Verdict::Fail
        );
    }

    #[test]
    fn plugin_check_trusts_only_a_live_registered_fresh_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(state::FILE_NAME);
        assert_eq!(plugin(&path, "tetragon", "01").check.result, Verdict::Fail);
        let hook = crate::hook_invocation::HookInvocation::in_dir("/opt/t", "h", vec![]);
        let mut r = state::Recorder::new(path.clone(), "tetragon", "01", "/s", &hook);
        r.write().unwrap();
        r.flush(Duration::from_secs(5)).unwrap();
        let f = plugin(&path, "tetragon", "01");
        assert!(f.check.summary.contains("not registered"), "{f:?}");
        r.registered().unwrap();
        r.flush(Duration::from_secs(5)).unwrap();
        let f = plugin(&path, "tetragon", "01");
        assert_eq!((f.check.result, f.registered), (Verdict::Ok, true), "{f:?}");
        // Stale: written long ago.
        let mut s = f.state.unwrap();
        s.updated_unix -= 3 * state::HEARTBEAT.as_secs();
        std::fs::write(&path, serde_json::to_string(&s).unwrap()).unwrap();
        let f = plugin(&path, "tetragon", "01");
        assert_eq!(f.check.result, Verdict::Warn, "{f:?}");
        // Another pid: gone.
        s.pid = u32::MAX - 1;
        std::fs::write(&path, serde_json::to_string(&s).unwrap()).unwrap();
        let f = plugin(&path, "tetragon", "01");
        assert!(f.check.summary.contains("is gone"), "{f:?}");
        std::fs::write(&path, "not json").unwrap();
        let f = plugin(&path, "tetragon", "01");
        assert!(f.check.summary.contains("not trusted"), "{f:?}");
    }
}
