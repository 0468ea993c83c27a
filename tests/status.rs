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

    /// Waits until the plugin's state file says it is registered.
    fn wait_registered(&self) {
        let path = self.install().join("tetragon-nri-hook.state");
        let deadline = Instant::now() + WAIT;
        loop {
            let st: Option<Value> = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if st.as_ref().is_some_and(|s| s["registered"] == true) {
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

    // A clean exit removes the state file: no plugin, no danger.
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
    let (code, json) = node.status_code(&probe);
    assert_eq!((code, json["exit_code"].as_i64()), (0, Some(1)), "{json:#}");
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
