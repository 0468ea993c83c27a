//! `status` against the real runtimes: containerd 1.7 and 2.1 with our NRI plugin and the
//! stand-in agent, podman running the hook from a hooks dir; plus what it must never do (write,
//! trust a planted state file, outlive `--timeout`). Every run's JSON output is parsed and
//! checked. `E2E_REQUIRED=1` turns a missing runtime into a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::child::ChildGuard;
use support::containerd::{Containerd, Setup};
use support::podman::Podman;
use support::runtimes::Release;
use support::skip::is_root;
use test_agent::{Agent, Behavior};

const WAIT: Duration = Duration::from_secs(20);
const ALLOWED_NS: &str = "tetragon-allowed";

/// One node's install dir, agent socket and plugin, in a temporary dir.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("status").tempdir().unwrap();
        fs::create_dir(dir.path().join("install")).unwrap();
        fs::create_dir(dir.path().join("hooks.d")).unwrap();
        Self { dir }
    }

    fn install(&self) -> PathBuf {
        self.dir.path().join("install")
    }

    fn hooks(&self) -> PathBuf {
        self.dir.path().join("hooks.d")
    }

    fn agent_socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    fn agent_address(&self) -> String {
        format!("unix://{}", self.agent_socket().display())
    }

    /// `install --interface nri-hook --daemonize`, as the DaemonSet runs it.
    fn plugin(&self, nri_socket: &Path) -> ChildGuard {
        let log = self.dir.path().join("plugin.log");
        let child = support::cmd::nri_plugin(
            Path::new(support::hook_bin()),
            &self.install(),
            &self.install(),
            nri_socket,
        )
        .args(["hook-args", "--grpc-address", &self.agent_address()])
        .args([
            "--fail-allow-namespaces",
            &format!("kube-system,{ALLOWED_NS}"),
        ])
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
        ChildGuard::new(child)
    }

    /// Waits until the plugin's state file says it is registered, with the runtime's name.
    fn wait_registered(&self) {
        let path = self.install().join("tetragon-nri-hook.state");
        let deadline = Instant::now() + WAIT;
        loop {
            let st: Option<Value> = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            // `Configure` (the runtime's name) may come after the registration's reply: its
            // write follows within a second.
            if st
                .as_ref()
                .is_some_and(|s| s["registered"] == true && s["runtime_name"].is_string())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not registered: {st:?}\n{}",
                fs::read_to_string(self.dir.path().join("plugin.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `status --output json` with the chart's flags and `extra`: exit code and parsed JSON,
    /// whose `exit_code` must be the process's.
    fn status(&self, extra: &[&str]) -> (i32, Value) {
        let (code, json) = self.status_code(extra);
        assert_eq!(json["exit_code"], code, "{json:#}");
        (code, json)
    }

    /// As [`Node::status`], without comparing the exit codes.
    fn status_code(&self, extra: &[&str]) -> (i32, Value) {
        let out = support::cmd::bin()
            .arg("status")
            .arg("--local-install-dir")
            .arg(self.install())
            .arg("--oci-hooks.local-dir")
            .arg(self.hooks())
            .arg("--local-binary")
            .arg(support::hook_bin())
            .args(["--timeout", "10s", "--output", "json"])
            .args(extra)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {text}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(json["schema_version"], 1, "{json:#}");
        (out.status.code().unwrap(), json)
    }
}

impl Node {
    /// `install --interface=oci-hooks` of the built hook into this node.
    fn install_oci_hooks(&self) {
        let out = support::cmd::run(&[
            "install",
            "--interface=oci-hooks",
            "--local-binary",
            support::hook_bin(),
            "--local-install-dir",
            &self.install().display().to_string(),
            "--host-install-dir",
            &self.install().display().to_string(),
            "--oci-hooks.local-dir",
            &self.hooks().display().to_string(),
        ]);
        assert!(out.status.success(), "{out:?}");
    }

    /// [`Node::status_code`] as a readiness probe in the deploy/ pods runs it: uid 0 with no
    /// capabilities at all (`setpriv`: empty inheritable and bounding sets, so the exec leaves
    /// none), in a mount namespace where every mount is read-only (`/`, `/tmp`, `/run`).
    fn status_confined(&self, extra: &[&str]) -> (i32, Value) {
        let mut argv = vec![
            support::cmd::bin()
                .get_program()
                .to_string_lossy()
                .into_owned(),
            "status".to_owned(),
            "--local-install-dir".to_owned(),
            self.install().display().to_string(),
            "--oci-hooks.local-dir".to_owned(),
            self.hooks().display().to_string(),
            "--local-binary".to_owned(),
            support::hook_bin().to_owned(),
            "--timeout".to_owned(),
            "10s".to_owned(),
            "--output".to_owned(),
            "json".to_owned(),
        ];
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        // Every mount read-only (submounts included), then prove it, then drop every capability.
        let script = r#"set -e
mount --make-rprivate /
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
for d in / /tmp /run; do
  if touch "$d/.status-rw-probe" 2>/dev/null; then echo "$d is writable" >&2; exit 99; fi
done
exec setpriv --inh-caps=-all --bounding-set=-all -- sh -c 'grep -q "^CapEff:[[:space:]]*0000000000000000$" /proc/self/status || { echo caps left >&2; exit 98; }; exec "$@"' sh "$@"
"#;
        let out = std::process::Command::new("unshare")
            .args(["--mount", "--", "sh", "-c", script, "sh"])
            .args(&argv)
            .output()
            .unwrap();
        let code = out.status.code().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(code != 98 && code != 99, "not confined: {stderr}");
        let text = String::from_utf8_lossy(&out.stdout);
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {text}\nstderr: {stderr}"));
        assert_eq!(json["exit_code"], code, "{json:#}");
        (code, json)
    }
}

/// The pid in the plugin's state file.
fn plugin_pid(node: &Node) -> u64 {
    let st: Value =
        serde_json::from_slice(&fs::read(node.install().join("tetragon-nri-hook.state")).unwrap())
            .unwrap();
    st["pid"].as_u64().unwrap()
}

/// The ids of a JSON report's checks.
fn ids(json: &Value) -> Vec<String> {
    json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Whether `unshare` and `setpriv` are here to confine a run (and we are root to use them).
fn can_confine() -> Option<()> {
    (is_root() && support::skip::has_program("unshare") && support::skip::has_program("setpriv"))
        .then_some(())
}

/// The check `id` of a JSON report.
fn check<'a>(json: &'a Value, id: &str) -> &'a Value {
    json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check `{id}`: {json:#}"))
}

fn text_of(v: &Value) -> String {
    v.to_string()
}

fn nri_flags(c: &Containerd) -> Vec<String> {
    vec![
        "--interface".into(),
        "nri-hook".into(),
        "--config-file".into(),
        c.paths.config.display().to_string(),
        "--nri-hook.socket".into(),
        c.nri_socket().display().to_string(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn status_on_containerd_1_7_follows_enable_nri_and_the_plugin_dying() {
    let release = Release::V1_7;
    require!(
        support::runtimes::containerd(release),
        support::runtimes::missing(release)
    );
    let mut containerd = Containerd::start(release, Setup::default_config()).unwrap();
    let node = Node::new();
    let _agent = Agent::start_at(&node.agent_socket(), Behavior::Accept);
    let mut flags = nri_flags(&containerd);
    flags.extend(["--grpc-address".into(), node.agent_address()]);

    // 1. NRI off: exit 2, the NRI check names the file and `enable-nri`.
    let (code, json) = node.status(&strs(&flags));
    assert_eq!(code, 2, "{json:#}");
    let rc = check(&json, "runtime-config");
    assert_eq!(rc["result"], "fail", "{json:#}");
    let config = containerd.paths.config.display().to_string();
    assert!(
        text_of(&rc["evidence"]).contains(&format!("{config}:")),
        "{rc:#}"
    );
    assert!(
        rc["help"].as_str().unwrap().contains("enable-nri"),
        "{rc:#}"
    );
    assert_eq!(check(&json, "nri-socket")["result"], "fail", "{json:#}");

    // 2. Our `enable-nri`, a restart, our plugin: exit 0.
    let out = support::cmd::run(&[
        "patch-containerd-conf",
        "enable-nri",
        "--quiet",
        "--in-place",
        "--config-file",
        &config,
    ]);
    assert!(out.status.success(), "{out:?}");
    containerd.restart();
    let mut plugin = node.plugin(containerd.nri_socket());
    node.wait_registered();
    let (code, json) = node.status(&strs(&flags));
    assert_eq!(code, 0, "{json:#}");
    let p = check(&json, "nri-plugin");
    assert_eq!(p["result"], "ok", "{json:#}");
    assert!(
        text_of(&p["evidence"]).contains("runtime containerd"),
        "{p:#}"
    );
    assert_eq!(check(&json, "agent")["result"], "ok", "{json:#}");
    assert!(
        text_of(&check(&json, "agent")["summary"]).contains(test_agent::VERSION),
        "{json:#}"
    );

    // 3. Plugin killed (no clean exit, its state file stays): exit 2, not registered.
    plugin.signal(libc::SIGKILL);
    plugin.wait_for(WAIT).expect("killed plugin reaped");
    let (code, json) = node.status(&strs(&flags));
    assert_eq!(code, 2, "{json:#}");
    let p = check(&json, "nri-plugin");
    assert_eq!(p["result"], "fail", "{json:#}");
    assert!(
        p["summary"].as_str().unwrap().contains("not running"),
        "{p:#}"
    );
    // The plugin adds no hook now: nothing is in danger from the agent.
    assert!(
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != "danger")
    );
}

#[test]
fn status_on_containerd_2_1_names_the_refused_namespaces_when_the_agent_stops() {
    let release = Release::V2_1;
    require!(
        support::runtimes::containerd(release),
        support::runtimes::missing(release)
    );
    let containerd = Containerd::start(release, Setup::default_config()).unwrap();
    let node = Node::new();
    let agent = Agent::start_at(&node.agent_socket(), Behavior::Accept);
    let mut plugin = node.plugin(containerd.nri_socket());
    node.wait_registered();
    // No --grpc-address: the address comes from the hook's args in the plugin's state.
    let flags = nri_flags(&containerd);
    let from = containerd.log_len();
    let (code, json) = node.status(&strs(&flags));
    assert_eq!(code, 0, "{json:#}");
    // Our plugin's connection is the proof: no probe connection for containerd to log as a
    // failed registration at every readiness probe.
    let socket = check(&json, "nri-socket");
    assert!(
        socket["summary"].as_str().unwrap().contains("connected"),
        "{socket:#}"
    );
    let logged = containerd.log_since(from);
    assert!(!logged.contains("failed to register plugin"), "{logged}");
    assert_eq!(json["interface"], "nri-hook");
    assert!(
        text_of(&check(&json, "agent")["evidence"]).contains(&node.agent_address()),
        "{json:#}"
    );

    // `auto` finds the plugin's state.
    let (code, json) = node.status(&[
        "--config-file",
        &containerd.paths.config.display().to_string(),
        "--nri-hook.socket",
        &containerd.nri_socket().display().to_string(),
    ]);
    assert_eq!(
        (code, &json["interface"]),
        (0, &Value::from("nri-hook")),
        "{json:#}"
    );

    drop(agent);
    let (code, json) = node.status(&strs(&flags));
    assert_eq!(code, 2, "{json:#}");
    let first = &json["checks"][0];
    assert_eq!(first["id"], "danger", "{json:#}");
    let summary = first["summary"].as_str().unwrap();
    assert!(
        summary.starts_with(&format!(
            "containers outside kube-system, {ALLOWED_NS} will fail to start"
        )),
        "{summary}"
    );
    assert_eq!(check(&json, "agent")["result"], "fail", "{json:#}");

    // The readiness probe, as the pod runs it (no capabilities, read-only mounts): the plugin
    // does its job, so the pod is ready though the agent is down. Its pid is checked without
    // CAP_SYS_PTRACE (`/proc/<pid>/stat`: start time; `exe` is not readable then).
    require!(can_confine(), "unshare/setpriv not found or not root");
    let mut probe = strs(&flags);
    probe.push("--probe");
    let (code, json) = node.status_confined(&probe);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(check(&json, "nri-plugin")["result"], "ok", "{json:#}");
    assert_eq!(check(&json, "runtime-config")["result"], "ok", "{json:#}");
    assert_eq!(check(&json, "binary")["result"], "ok", "{json:#}");
    for absent in ["agent", "danger", "hook-log"] {
        assert!(!ids(&json).iter().any(|i| i == absent), "{json:#}");
    }
    // Killed (no clean exit): the probe fails, even confined.
    let pid = plugin_pid(&node);
    let state = fs::read(node.install().join("tetragon-nri-hook.state")).unwrap();
    plugin.signal(libc::SIGKILL);
    assert!(plugin.wait_for(WAIT).is_some());
    assert_eq!(plugin_pid(&node), pid);
    let (code, json) = node.status_confined(&probe);
    assert_eq!(code, 2, "{json:#}");
    assert!(
        check(&json, "nri-plugin")["summary"]
            .as_str()
            .unwrap()
            .contains("not running"),
        "{json:#}"
    );
    // A clean exit removes the state file: no plugin, no danger.
    let mut plugin = node.plugin(containerd.nri_socket());
    let again = wait_state(&node.install().join("tetragon-nri-hook.state"), |v| {
        v["pid"] != pid && v["registered"] == true
    });
    assert_ne!(serde_json::to_vec(&again).unwrap(), state);
    plugin.signal(libc::SIGTERM);
    assert!(plugin.wait_for(WAIT).is_some());
    assert!(!node.install().join("tetragon-nri-hook.state").exists());
}

#[test]
fn status_on_podman_counts_hooked_containers_and_fails_on_a_missing_binary() {
    if !is_root() {
        skip!("not root");
    }
    // `get` applies the skip policy itself.
    let Some(podman) = Podman::get() else {
        return;
    };
    let node = Node::new();
    let agent = Agent::start_at(&node.agent_socket(), Behavior::Accept);
    let dir = node.install().display().to_string();
    let hooks = node.hooks().display().to_string();
    // podman reads the hooks dir named in this containers.conf (checked by status).
    let conf = node.dir.path().join("containers.conf");
    fs::write(&conf, format!("[engine]\nhooks_dir = [\"{hooks}\"]\n")).unwrap();
    let out = support::cmd::run(&[
        "install",
        "--interface=oci-hooks",
        "--local-binary",
        support::hook_bin(),
        "--local-install-dir",
        &dir,
        "--host-install-dir",
        &dir,
        "--oci-hooks.local-dir",
        &hooks,
        "hook-args",
        "--grpc-address",
        &node.agent_address(),
        "--fail-allow-namespaces",
        ALLOWED_NS,
    ]);
    assert!(out.status.success(), "{out:?}");
    // No `--hooks-dir`: podman finds the hook through the containers.conf status checks.
    let run = || podman.run_true_with_containers_conf(&conf);
    let conf_s = conf.display().to_string();
    let flags = ["--containers-conf", conf_s.as_str()];

    // Agent up: a container starts through the hook; everything ok.
    let started = run();
    assert!(started.status.success(), "{started:?}");
    let (code, json) = node.status(&flags);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(json["interface"], "oci-hooks", "{json:#}");
    assert_eq!(check(&json, "runtime-config")["result"], "ok", "{json:#}");
    assert_eq!(check(&json, "hook-file")["result"], "ok", "{json:#}");
    let log = check(&json, "hook-log");
    assert!(
        log["summary"]
            .as_str()
            .unwrap()
            .contains("1 container(s) allowed, 0 refused"),
        "{log:#}"
    );

    // Agent down: podman's container is refused; danger first, the refusal counted.
    drop(agent);
    assert!(
        !run().status.success(),
        "a container outside {ALLOWED_NS} must be refused"
    );
    let (code, json) = node.status(&flags);
    assert_eq!(code, 2, "{json:#}");
    assert_eq!(json["checks"][0]["id"], "danger", "{json:#}");
    assert!(
        text_of(&json["checks"][0]["summary"]).contains(&format!("outside {ALLOWED_NS} will")),
        "{json:#}"
    );
    assert!(text_of(&check(&json, "hook-log")["summary"]).contains("1 refused"));

    // A refusal in the last hour is a warning: exit 1, and 0 with --ignore-warnings (probes).
    let agent = Agent::start_at(&node.agent_socket(), Behavior::Accept);
    let (code, json) = node.status(&flags);
    assert_eq!(code, 1, "{json:#}");
    assert_eq!(check(&json, "hook-log")["result"], "warn", "{json:#}");
    let mut probe = flags.to_vec();
    probe.push("--ignore-warnings");
    // The JSON's `exit_code` is the process's; `result` still says `warn`.
    let (code, json) = node.status(&probe);
    assert_eq!(
        (code, &json["result"]),
        (0, &Value::from("warn")),
        "{json:#}"
    );
    drop(agent);

    // The hook file points at a missing binary: fail, with the fix.
    fs::remove_file(node.install().join("tetragon-oci-hook")).unwrap();
    let (code, json) = node.status(&flags);
    assert_eq!(code, 2, "{json:#}");
    let hf = check(&json, "hook-file");
    assert_eq!(hf["result"], "fail", "{json:#}");
    assert!(
        hf["summary"].as_str().unwrap().contains("missing binary"),
        "{hf:#}"
    );
    assert!(hf["help"].as_str().unwrap().contains("install"), "{hf:#}");

    // A containers.conf that reads another dir: the runtime-config check fails.
    fs::write(
        &conf,
        "[engine]\nhooks_dir = [\"/etc/containers/oci/hooks.d\"]\n",
    )
    .unwrap();
    let (_, json) = node.status(&flags);
    assert_eq!(check(&json, "runtime-config")["result"], "fail", "{json:#}");
}

/// Every file under `dir` with its size, mode and mtime.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, u32, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = fs::symlink_metadata(e.path()).unwrap();
        out.push((e.path(), m.len(), m.mode(), m.modified().unwrap()));
        if m.is_dir() {
            out.extend(snapshot(&e.path()));
        }
    }
    out.sort();
    out
}

#[test]
fn status_writes_nothing_and_does_not_trust_a_planted_state_file() {
    let node = Node::new();
    // An installed hook and its log, and a state file that is a symlink to a valid-looking one.
    let out = support::cmd::run(&[
        "install",
        "--interface=oci-hooks",
        "--local-binary",
        support::hook_bin(),
        "--local-install-dir",
        &node.install().display().to_string(),
        "--host-install-dir",
        &node.install().display().to_string(),
        "--oci-hooks.local-dir",
        &node.hooks().display().to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let elsewhere = node.dir.path().join("elsewhere.json");
    fs::write(&elsewhere, "{}").unwrap();
    std::os::unix::fs::symlink(&elsewhere, node.install().join("tetragon-nri-hook.state")).unwrap();
    let before = snapshot(node.dir.path());
    let (code, json) = node.status(&[
        "--interface",
        "nri-hook",
        "--nri-hook.socket",
        "/nonexistent/nri.sock",
    ]);
    assert_eq!(code, 2, "{json:#}");
    let p = check(&json, "nri-plugin");
    assert!(p["summary"].as_str().unwrap().contains("symlink"), "{p:#}");
    assert_eq!(snapshot(node.dir.path()), before);
    // Garbage where the state should be; `auto` still picks nri-hook from it, and refuses it.
    let state = node.install().join("tetragon-nri-hook.state");
    fs::remove_file(&state).unwrap();
    fs::write(&state, "{\"pid\": 1, \"registered\": tru").unwrap();
    let before = snapshot(node.dir.path());
    let (code, json) = node.status(&["--nri-hook.socket", "/nonexistent/nri.sock"]);
    assert_eq!(
        (code, &json["interface"]),
        (2, &Value::from("nri-hook")),
        "{json:#}"
    );
    let p = check(&json, "nri-plugin");
    assert!(
        p["summary"]
            .as_str()
            .unwrap()
            .contains("not the plugin's JSON"),
        "{p:#}"
    );
    assert_eq!(snapshot(node.dir.path()), before);
}

#[test]
fn status_ends_within_its_timeout_when_the_agent_never_answers() {
    let node = Node::new();
    let out = support::cmd::run(&[
        "install",
        "--interface=oci-hooks",
        "--local-binary",
        support::hook_bin(),
        "--local-install-dir",
        &node.install().display().to_string(),
        "--host-install-dir",
        &node.install().display().to_string(),
        "--oci-hooks.local-dir",
        &node.hooks().display().to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
    // Accepts connections and never says a word.
    let _silent = std::os::unix::net::UnixListener::bind(node.agent_socket()).unwrap();
    let start = Instant::now();
    let out = support::cmd::bin()
        .arg("status")
        .arg("--local-install-dir")
        .arg(node.install())
        .arg("--oci-hooks.local-dir")
        .arg(node.hooks())
        .args([
            "--grpc-address",
            &node.agent_address(),
            "--timeout",
            "700ms",
        ])
        .output()
        .unwrap();
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.starts_with("FAIL danger"), "{text}");
    assert!(text.contains("help: "), "{text}");
    // The bound, with room for a loaded machine to start the process.
    assert!(
        took < Duration::from_millis(700) + Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn status_rejects_bad_flags_with_exit_2() {
    for args in [
        &["status"][..],
        &["status", "--local-install-dir", "/x", "--timeout", "0s"],
        &["status", "--local-install-dir", "/x", "--output", "yaml"],
        &["status", "--local-install-dir", "/x", "--interface", "crio"],
    ] {
        let out = support::cmd::run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// containerd without NRI (`add-oci-hook`): runc runtimes get the hook from a base runtime spec
/// (set through our drop-in); a CRI container starts through the hook; `status` follows the
/// spec through the imports, reads the hook's args from it, counts the container, exit 0. A
/// spec without our hook: fail, naming the runtime and the fix.
fn status_follows_the_base_runtime_spec(release: Release) {
    let bin_dir = require!(
        support::runtimes::bin_dir(release),
        support::runtimes::missing(release)
    );
    let node = Node::new();
    let _agent = Agent::start_at(&node.agent_socket(), Behavior::Accept);
    // Our install copies the binary; its hooks.d file (in a dir nobody reads) gives the argv.
    let scratch = node.dir.path().join("scratch-hooks");
    fs::create_dir(&scratch).unwrap();
    let install = node.install().display().to_string();
    let out = support::cmd::run(&[
        "install",
        "--interface=oci-hooks",
        "--local-binary",
        support::hook_bin(),
        "--local-install-dir",
        &install,
        "--host-install-dir",
        &install,
        "--oci-hooks.local-dir",
        &scratch.display().to_string(),
        "hook-args",
        "--grpc-address",
        &node.agent_address(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let hook: Value =
        serde_json::from_slice(&fs::read(scratch.join("tetragon-oci-hook.json")).unwrap()).unwrap();
    let out = std::process::Command::new(bin_dir.join("ctr"))
        .args(["oci", "spec"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut spec: Value = serde_json::from_slice(&out.stdout).unwrap();
    spec["hooks"] = serde_json::json!({ "createRuntime": [hook["hook"].clone()] });
    let spec_path = node.dir.path().join("base-spec.json");
    fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    // NRI on as the pods' config has it; the hook comes from the base spec alone (no plugin).
    let setup = support::cri::containerd_setup(release).edit(|doc, _| {
        let mut a = toml_edit::Array::new();
        a.push("conf.d/*.toml");
        doc.insert("imports", toml_edit::value(a));
    });
    let ctrd = Containerd::configure(release, setup).unwrap();
    fs::create_dir_all(ctrd.paths.base.join("conf.d")).unwrap();
    let config = ctrd.paths.config.display().to_string();
    let out = support::cmd::run(&[
        "patch-containerd-conf",
        "add-oci-hook",
        "--runtime-spec",
        &spec_path.display().to_string(),
        "--drop-in",
        "auto",
        "--containerd-version",
        release.as_str(),
        "--config-file",
        &config,
    ]);
    assert!(out.status.success(), "{out:?}");
    let ctrd = ctrd.started();
    support::cri::import_image(&bin_dir.join("ctr"), ctrd.grpc_socket(), node.dir.path()).unwrap();
    let logs = node.dir.path().join("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    let mut cri = support::cri::Cri::connect(ctrd.grpc_socket()).unwrap();
    let pod = support::cri::PodSpec {
        name: "basespec".into(),
        namespace: "default".into(),
        uid: format!("uid-basespec-{}", std::process::id()),
    };
    let (pod_id, sandbox) = cri.run_pod(&pod, &logs).unwrap();
    let started = (|| {
        let cid = cri
            .create_container(&pod_id, &sandbox, "app", &["/bin/sleep", "600"])
            .map_err(|e| format!("create: {e}"))?;
        cri.start_container(&cid).map_err(|e| format!("start: {e}"))
    })();
    if let Err(e) = cri.remove_pod(&pod_id) {
        eprintln!("teardown: removing pod {pod_id}: {e}");
    }
    started.unwrap_or_else(|e| panic!("{release}: {e}\n{}", ctrd.log()));

    let flags = [
        "--interface",
        "oci-hooks",
        "--config-file",
        &config,
        "--containerd-version",
        release.as_str(),
    ];
    let (code, json) = node.status(&flags);
    assert_eq!(code, 0, "{release}: {json:#}");
    let rc = check(&json, "runtime-config");
    assert_eq!(rc["result"], "ok", "{json:#}");
    assert!(
        text_of(&rc["evidence"]).contains("conf.d/99-tetragon-oci-hook.toml:"),
        "{rc:#}"
    );
    assert_eq!(check(&json, "hook-file")["result"], "skip", "{json:#}");
    assert!(
        text_of(&check(&json, "agent")["evidence"]).contains("base runtime spec"),
        "{json:#}"
    );
    let log = check(&json, "hook-log");
    assert!(
        text_of(&log["summary"]).contains("1 container(s) allowed"),
        "{release}: {log:#}"
    );

    // The spec loses our hook: fail, with the fix.
    spec["hooks"] = serde_json::json!({});
    fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    let (code, json) = node.status(&flags);
    assert_eq!(code, 2, "{json:#}");
    let rc = check(&json, "runtime-config");
    assert!(
        text_of(&rc["summary"]).contains("does not hold the hook"),
        "{rc:#}"
    );
    assert!(text_of(&rc["help"]).contains("add-oci-hook"), "{rc:#}");
}

#[test]
fn status_on_containerd_1_7_follows_the_base_runtime_spec_of_add_oci_hook() {
    status_follows_the_base_runtime_spec(Release::V1_7);
}

#[test]
fn status_on_containerd_2_1_follows_the_base_runtime_spec_of_add_oci_hook() {
    status_follows_the_base_runtime_spec(Release::V2_1);
}

/// Reads the plugin's state file once it satisfies `done`.
fn wait_state(path: &Path, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let st: Option<Value> = fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(st) = st.filter(|s| done(s)) {
            return st;
        }
        assert!(Instant::now() < deadline, "state never satisfied: {path:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn nri_state_file_records_the_runtime_and_adjustments_and_is_removed_on_sigterm() {
    use std::os::unix::fs::MetadataExt as _;
    let mut setup = support::fake_nri::Setup::start(&[]);
    let mut conn = setup.registered();
    let path = setup
        .dir
        .path()
        .join("install")
        .join("tetragon-nri-hook.state");
    let st = wait_state(&path, |s| s["registered"] == true);
    assert_eq!(st["runtime_name"], "fake", "{st:#}");
    assert_eq!(st["pid"], setup.child.id(), "{st:#}");
    assert_eq!(
        st["socket"],
        support::fake_nri::Setup::socket(setup.dir.path())
            .display()
            .to_string()
    );
    let meta = fs::symlink_metadata(&path).unwrap();
    assert!(meta.is_file() && meta.mode() & 0o7777 == 0o644, "{meta:?}");
    for i in 0..3 {
        let req = support::fake_nri::create_request("app", &format!("c{i}"));
        assert!(!support::fake_nri::ok_payload(conn.call("CreateContainer", req)).is_empty());
    }
    // Written within a second of the last adjustment (at most once a second).
    let st = wait_state(&path, |s| s["containers_adjusted"] == 3);
    assert!(st["last_adjusted"].is_string(), "{st:#}");
    setup.child.signal(libc::SIGTERM);
    assert!(setup.child.wait_for(WAIT).is_some_and(|s| s.success()));
    assert!(!path.exists(), "the state file outlived a clean exit");
}

#[test]
fn status_probe_stays_ready_with_the_agent_down_and_skip_takes_check_ids() {
    let node = Node::new();
    node.install_oci_hooks();
    let agent = ["--grpc-address", &node.agent_address()];
    // Agent down: a failure for an operator ...
    let (code, json) = node.status(&agent);
    assert_eq!(code, 2, "{json:#}");
    assert_eq!(json["checks"][0]["id"], "danger", "{json:#}");
    // ... but not for the readiness probe: the hook is in place and runs.
    let mut probe = agent.to_vec();
    probe.push("--probe");
    let (code, json) = node.status(&probe);
    assert_eq!(code, 0, "{json:#}");
    assert_eq!(ids(&json), ["hook-file", "binary"], "{json:#}");
    // `--skip agent` leaves out `danger` too; the rest stays.
    let mut skip = agent.to_vec();
    skip.extend(["--skip", "agent", "--skip", "binary,hook-file"]);
    let (code, json) = node.status(&skip);
    assert_eq!(
        (code, ids(&json)),
        (0, vec!["hook-log".to_owned()]),
        "{json:#}"
    );
    // A refused container in the log is a warning: exit 1, or 0 with `--ignore-warnings`,
    // and the JSON's `exit_code` is the one the process gives.
    let now = oci_hook::log::rfc3339(std::time::SystemTime::now(), 3);
    fs::write(
        node.install().join("tetragon-oci-hook.log"),
        format!("{{\"time\":\"{now}\",\"level\":\"error\",\"msg\":\"failing container\"}}\n"),
    )
    .unwrap();
    let mut warned = agent.to_vec();
    warned.extend(["--skip", "agent"]);
    let (code, json) = node.status(&warned);
    assert_eq!(
        (code, &json["result"]),
        (1, &Value::from("warn")),
        "{json:#}"
    );
    warned.push("--ignore-warnings");
    let (code, json) = node.status(&warned);
    assert_eq!(
        (code, &json["result"]),
        (0, &Value::from("warn")),
        "{json:#}"
    );
    // The same with the `--output-format` spelling.
    let out = support::cmd::bin()
        .args(["status", "--local-install-dir"])
        .arg(node.install())
        .arg("--oci-hooks.local-dir")
        .arg(node.hooks())
        .args([
            "--probe",
            "--output-format",
            "json",
            "--grpc-address",
            &node.agent_address(),
        ])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (out.status.code(), &json["exit_code"]),
        (Some(0), &Value::from(0))
    );
    // An id that is not a check: exit 2, the ids listed, nothing on stdout.
    let out = support::cmd::run(&[
        "status",
        "--local-install-dir",
        &node.install().display().to_string(),
        "--skip",
        "agnet",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agnet") && stderr.contains("hook-log"),
        "{stderr}"
    );
}

#[test]
fn status_ends_within_its_timeout_with_a_128_mib_binary_and_a_silent_agent() {
    use std::os::unix::fs::PermissionsExt as _;
    let node = Node::new();
    node.install_oci_hooks();
    // The installed hook padded to 128 MiB (an ELF runs with bytes after it), and an image
    // copy differing only in its last byte: the compare reads everything, then hashes both.
    let installed = node.install().join("tetragon-oci-hook");
    let mut bytes = fs::read(support::hook_bin()).unwrap();
    bytes.resize(128 << 20, 0);
    fs::write(&installed, &bytes).unwrap();
    fs::set_permissions(&installed, fs::Permissions::from_mode(0o755)).unwrap();
    *bytes.last_mut().unwrap() = 1;
    let image = node.dir.path().join("image-copy");
    fs::write(&image, &bytes).unwrap();
    drop(bytes);
    // Accepts connections and never says a word.
    let _silent = std::os::unix::net::UnixListener::bind(node.agent_socket()).unwrap();
    let start = Instant::now();
    let out = support::cmd::bin()
        .arg("status")
        .arg("--local-install-dir")
        .arg(node.install())
        .arg("--oci-hooks.local-dir")
        .arg(node.hooks())
        .arg("--local-binary")
        .arg(&image)
        .args(["--grpc-address", &node.agent_address()])
        .args(["--timeout", "300ms", "--output", "json"])
        .output()
        .unwrap();
    let took = start.elapsed();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    support::skip::to_real_stderr(&format!(
        "measured: status --timeout 300ms, 128 MiB binary, silent agent: {took:?} wall, \
         elapsed_ms {}\n",
        json["elapsed_ms"]
    ));
    assert_eq!(out.status.code(), Some(2), "{json:#}");
    // The agent got its slice (it ran beside the compare) and was found silent.
    let agent = check(&json, "agent");
    assert_eq!(agent["result"], "fail", "{json:#}");
    assert!(text_of(agent).contains("did not answer"), "{json:#}");
    // The compare (or the hashes of the two differing copies after it) was cut by the
    // deadline: a warning saying what it found, not a broken binary.
    let binary = check(&json, "binary");
    assert_eq!(binary["result"], "warn", "{json:#}");
    let said = text_of(binary);
    assert!(
        said.contains("within --timeout") || said.contains("--timeout reached"),
        "{json:#}"
    );
    assert_eq!(json["checks"][0]["id"], "danger", "{json:#}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn status_does_not_run_a_hook_binary_another_user_could_have_planted() {
    use std::os::unix::fs::PermissionsExt as _;
    if !is_root() {
        skip!("not root");
    }
    let node = Node::new();
    node.install_oci_hooks();
    let installed = node.install().join("tetragon-oci-hook");
    let marker = node.dir.path().join("ran");
    let planted = format!(
        "#!/bin/sh\ntouch {}\necho tetragon-oci-hook 0.0\n",
        marker.display()
    );
    for how in ["owner", "dir-mode"] {
        fs::remove_file(&installed).unwrap();
        fs::write(&installed, &planted).unwrap();
        fs::set_permissions(&installed, fs::Permissions::from_mode(0o755)).unwrap();
        match how {
            "owner" => std::os::unix::fs::chown(&installed, Some(65534), Some(65534)).unwrap(),
            _ => fs::set_permissions(node.install(), fs::Permissions::from_mode(0o777)).unwrap(),
        }
        let (code, json) = node.status(&["--grpc-address", &node.agent_address()]);
        assert_eq!(code, 2, "{how}: {json:#}");
        let binary = check(&json, "binary");
        assert_eq!(binary["result"], "fail", "{how}: {json:#}");
        assert!(
            binary["summary"].as_str().unwrap().contains("not run"),
            "{how}: {json:#}"
        );
        assert!(binary["help"].as_str().unwrap().contains("chown root:root"));
        let why = text_of(&binary["evidence"]);
        match how {
            "owner" => assert!(why.contains("uid 65534"), "{why}"),
            _ => assert!(why.contains("writable by group or others"), "{why}"),
        }
        assert!(
            check(&json, "agent")["summary"]
                .as_str()
                .unwrap()
                .contains("not asked"),
            "{json:#}"
        );
        // Not asked is not unreachable: no danger claimed.
        assert!(!ids(&json).iter().any(|i| i == "danger"), "{json:#}");
        assert!(!marker.exists(), "{how}: status ran the planted binary");
    }
}

#[test]
fn status_merges_imports_as_the_containerd_release_given_found_or_guessed() {
    let release = Release::V2_1;
    let bin_dir = require!(
        support::runtimes::bin_dir(release),
        support::runtimes::missing(release)
    );
    let node = Node::new();
    let config = node.dir.path().join("config.toml");
    fs::write(&config, "version = 2\n").unwrap();
    let note = |path: &std::ffi::OsStr, extra: &[&str]| {
        let out = support::cmd::bin()
            .env("PATH", path)
            .args(["status", "--interface", "nri-hook", "--output", "json"])
            .arg("--local-install-dir")
            .arg(node.install())
            .arg("--config-file")
            .arg(&config)
            .args([
                "--nri-hook.socket",
                "/nonexistent/nri.sock",
                "--skip",
                "agent",
            ])
            .args(extra)
            .output()
            .unwrap();
        let json: Value = serde_json::from_slice(&out.stdout).unwrap();
        text_of(&check(&json, "runtime-config")["evidence"])
    };
    let with_containerd = std::env::join_paths([bin_dir, PathBuf::from("/usr/bin")]).unwrap();
    let said = note(&with_containerd, &["--containerd-version", "1.7"]);
    assert!(
        said.contains("as containerd 1.7 does (--containerd-version)"),
        "{said}"
    );
    let said = note(&with_containerd, &[]);
    assert!(
        said.contains("as containerd 2.1 does (`containerd --version`)"),
        "{said}"
    );
    let said = note(std::ffi::OsStr::new("/nonexistent"), &[]);
    assert!(said.contains("no `containerd` on PATH"), "{said}");
}

#[test]
fn status_ends_within_its_timeout_while_containerd_imports_are_still_being_read() {
    // Thirty imported files of 8,000 keys each: seconds to read and merge in a debug build.
    let node = Node::new();
    let imports = node.dir.path().join("conf.d");
    fs::create_dir(&imports).unwrap();
    let keys: String = (0..8000)
        .map(|j| format!("k{j} = \"xxxxxxxxxxxxxxxx\"\n"))
        .collect();
    for i in 0..30 {
        fs::write(
            imports.join(format!("{i:02}.toml")),
            format!("version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n{keys}"),
        )
        .unwrap();
    }
    let config = node.dir.path().join("config.toml");
    fs::write(
        &config,
        format!(
            "version = 2\nimports = [\"{}/*.toml\"]\n",
            imports.display()
        ),
    )
    .unwrap();
    let start = Instant::now();
    let out = support::cmd::bin()
        .args(["status", "--interface", "nri-hook", "--skip", "agent"])
        .arg("--local-install-dir")
        .arg(node.install())
        .arg("--config-file")
        .arg(&config)
        .args(["--timeout", "300ms", "--output", "json"])
        .output()
        .unwrap();
    let took = start.elapsed();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    support::skip::to_real_stderr(&format!(
        "measured: status --timeout 300ms, 30 imports of 8,000 keys: {took:?} wall\n"
    ));
    let c = check(&json, "runtime-config");
    assert_eq!(c["result"], "warn", "{json:#}");
    assert_eq!(c["summary"], "not finished within --timeout", "{json:#}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn status_colours_only_a_terminal_and_not_with_no_color() {
    require!(
        support::skip::has_program("script").then_some(()),
        "`script` (util-linux) not found"
    );
    let node = Node::new();
    node.install_oci_hooks();
    let bin = support::cmd::bin()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let cmd = format!(
        "{bin} status --local-install-dir {} --oci-hooks.local-dir {} --probe",
        node.install().display(),
        node.hooks().display()
    );
    // `script` runs it on a pseudo-terminal.
    let on_tty = |env: &[(&str, &str)]| {
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("TERM", "xterm")
            .env_remove("NO_COLOR")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = on_tty(&[]);
    assert!(text.contains("\x1b[32mOK  \x1b[0m"), "{text:?}");
    for env in [[("NO_COLOR", "1")], [("TERM", "dumb")]] {
        let text = on_tty(&env);
        assert!(
            text.contains("OK ") && !text.contains('\x1b'),
            "{env:?}: {text:?}"
        );
    }
    let piped = support::cmd::bin()
        .args(["status", "--probe", "--local-install-dir"])
        .arg(node.install())
        .arg("--oci-hooks.local-dir")
        .arg(node.hooks())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&piped.stdout);
    assert!(text.contains("OK ") && !text.contains('\x1b'), "{text:?}");
}
