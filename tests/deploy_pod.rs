//! The pods of `deploy/*.yaml` and of the Tetragon Helm chart, run for real with podman.
//!
//! Each pod is read from its manifest (`spec.template.spec` of the DaemonSet) and run by
//! [`PodRun`]: one `podman pod` (no infra container: nothing shares a namespace in these pods)
//! and one `podman run` per container, with the manifest's command, user, capabilities,
//! read-only root, no-new-privileges and mounts. Host paths are never touched: every
//! `hostPath` is mapped to a directory of the test (a path the test did not map fails the
//! test), and the same mapping is applied to the command line, where the chart passes host
//! paths (`--host-install-dir`). The image is `Containerfile` built by
//! `scripts/build-image.sh --bins` from the binaries under test (the debug build, stripped:
//! the dist build takes minutes; `scripts/build-image.sh` alone measures the shipped image) into
//! the tests' podman store (`tests/support/podman.rs`).
//!
//! - nri-hook, on containerd 1.7 and 2.1: the pod registers; a CRI container gets the hook; the
//!   stand-in agent gets the request; the `export-logs` sidecar prints the hook's log line;
//!   containerd restarts and the pod re-registers with no restart of its own; SIGTERM (the
//!   grace period) stops it cleanly and the hook binary stays.
//! - oci-hooks: the hook file appears in the (mapped) host hooks dir; a host podman container
//!   runs the hook; the sidecar prints its log line; SIGTERM removes the hook file and binary.
//! - The chart's nri-hook pod mounts the socket file itself: after a containerd restart it is
//!   left with the dead socket (why deploy/ mounts the directory).
//! - The chart's own container command (`_container_rthooks.tpl`), rendered by [`chart`] for
//!   default values and for values with `failAllowNamespaces`, `failAllowNamespacesRegex` and
//!   `extraHookArgs`, checked against `tests/fixtures/chart/*.args`, then run in the chart's pod.
//! - The capabilities: the installer needs none; a pod whose uid 0 is not the owner of the
//!   host dirs (what CAP_DAC_OVERRIDE would have allowed) fails with a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::cri::{self, Cri, PodSpec};
use support::podman::Podman;
use support::runtimes::{self, Release};
use support::skip::{is_root, skip};
use test_agent::{Agent, Behavior};

const WAIT: Duration = Duration::from_secs(20);
/// The host paths of the manifests and the chart's defaults.
const HOST_INSTALL: &str = "/opt/tetragon";
const HOST_HOOKS: &str = "/usr/share/containers/oci/hooks.d";
const HOST_NRI_DIR: &str = "/var/run/nri";
const HOST_NRI_SOCKET: &str = "/var/run/nri/nri.sock";
const AGENT_SOCKET: &str = "/var/run/tetragon/tetragon.sock";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The image and the pods.

/// The image under test, built once per test binary into the tests' podman store; `None`
/// (after the skip policy) without root or podman.
fn image() -> Option<Podman> {
    if !is_root() {
        skip("not root");
        return None;
    }
    let podman = Podman::get()?;
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        // The hook beside the setup binary, checked to be up to date with its sources.
        let bins = Path::new(support::hook_bin()).parent().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-image.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("--bins")
            .arg(bins)
            .arg("--store")
            .arg(podman.store())
            .output()
            .map_err(|e| format!("{}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/build-image.sh failed: {}",
                text(&out.stderr).trim()
            ))
        }
    });
    match built {
        Ok(()) => Some(podman),
        // Not a missing component: our script failed.
        Err(e) => panic!("{e}"),
    }
}

/// The pod template (`spec.template.spec`) of `deploy/NAME`.
fn deploy_pod(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name);
    let text = fs::read_to_string(&path).unwrap();
    let doc: Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(doc["kind"], "DaemonSet", "{}", path.display());
    doc["spec"]["template"]["spec"].clone()
}

/// Host path -> the test's own path. Applied to `hostPath` volumes and, as a prefix, to every
/// command-line argument.
#[derive(Default, Clone)]
struct PathMap(BTreeMap<String, PathBuf>);

impl PathMap {
    fn with(mut self, host: &str, ours: &Path) -> Self {
        self.0.insert(host.to_owned(), ours.to_owned());
        self
    }

    fn volume(&self, host: &str) -> &Path {
        self.0.get(host).unwrap_or_else(|| {
            panic!(
                "hostPath `{host}` is not mapped by the test: refusing to mount a real host path"
            )
        })
    }

    /// `arg` with the longest mapped host path in it replaced, unless `arg` names a path under
    /// one of the container's `mounts` (then it is the container's own path: the chart mounts
    /// the install dir at its host path in the sidecar, and the NRI socket likewise).
    fn arg(&self, arg: &str, mounts: &[&str]) -> String {
        let names = |p: &str| {
            arg.match_indices(p)
                .any(|(i, _)| matches!(arg[i + p.len()..].chars().next(), None | Some('/')))
        };
        if mounts.iter().any(|m| names(m)) {
            return arg.to_owned();
        }
        let mut best: Option<(&String, &PathBuf)> = None;
        for (host, ours) in &self.0 {
            if names(host) && best.is_none_or(|(b, _)| host.len() > b.len()) {
                best = Some((host, ours));
            }
        }
        match best {
            Some((host, ours)) => arg.replace(host.as_str(), &ours.display().to_string()),
            None => arg.to_owned(),
        }
    }
}

/// The `podman run` options of one container of `pod`: user, capabilities, read-only root,
/// no-new-privileges, mounts. Panics on a field this renderer does not know, so that a manifest
/// change cannot go untested.
fn run_options(pod: &Value, c: &Value, map: &PathMap) -> Vec<String> {
    let known_pod = [
        "priorityClassName",
        "terminationGracePeriodSeconds",
        "automountServiceAccountToken",
        "enableServiceLinks",
        "hostUsers",
        "securityContext",
        "tolerations",
        "containers",
        "volumes",
    ];
    for k in pod.as_object().unwrap().keys() {
        assert!(
            known_pod.contains(&k.as_str()),
            "pod field `{k}` not rendered"
        );
    }
    let known_container = [
        "name",
        "image",
        "imagePullPolicy",
        "terminationMessagePolicy",
        "command",
        "securityContext",
        "readinessProbe",
        "resources",
        "volumeMounts",
    ];
    for k in c.as_object().unwrap().keys() {
        assert!(
            known_container.contains(&k.as_str()),
            "container field `{k}` not rendered"
        );
    }
    // hostUsers: true is podman's default (no user namespace): uid 0 is the host's root.
    assert_ne!(pod["hostUsers"], false, "user namespaces not rendered");
    let mut o: Vec<String> = Vec::new();
    let psc = &pod["securityContext"];
    let sc = &c["securityContext"];
    for k in psc.as_object().into_iter().flat_map(|m| m.keys()) {
        assert!(
            ["runAsUser", "runAsGroup", "seccompProfile"].contains(&k.as_str()),
            "pod securityContext `{k}` not rendered"
        );
    }
    // RuntimeDefault is podman's default seccomp profile.
    if let Some(p) = psc.get("seccompProfile") {
        assert_eq!(p["type"], "RuntimeDefault");
    }
    let uid = sc["runAsUser"].as_u64().or(psc["runAsUser"].as_u64());
    let gid = sc["runAsGroup"].as_u64().or(psc["runAsGroup"].as_u64());
    if let Some(uid) = uid {
        o.push(format!("--user={uid}:{}", gid.unwrap_or(0)));
    }
    for k in sc.as_object().into_iter().flat_map(|m| m.keys()) {
        assert!(
            [
                "capabilities",
                "readOnlyRootFilesystem",
                "allowPrivilegeEscalation",
                "privileged",
                "runAsUser",
                "runAsGroup"
            ]
            .contains(&k.as_str()),
            "container securityContext `{k}` not rendered"
        );
    }
    for cap in sc["capabilities"]["drop"].as_array().into_iter().flatten() {
        o.push(format!("--cap-drop={}", cap.as_str().unwrap()));
    }
    for cap in sc["capabilities"]["add"].as_array().into_iter().flatten() {
        o.push(format!("--cap-add={}", cap.as_str().unwrap()));
    }
    if sc["readOnlyRootFilesystem"] == true {
        // podman's --read-only alone adds writable tmpfs on /run, /tmp and /var/tmp, which a
        // Kubernetes pod does not get: only what the manifest mounts is writable.
        o.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    if sc["allowPrivilegeEscalation"] == false {
        o.push("--security-opt=no-new-privileges".into());
    }
    if sc["privileged"] == true {
        o.push("--privileged".into());
    }
    let volumes = pod["volumes"].as_array().unwrap();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap();
        let at = m["mountPath"].as_str().unwrap();
        let ro = m["readOnly"] == true;
        let v = volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no volume `{name}`"));
        if let Some(hp) = v.get("hostPath") {
            let ours = map.volume(hp["path"].as_str().unwrap());
            match hp["type"].as_str().unwrap_or("") {
                "DirectoryOrCreate" => fs::create_dir_all(ours).unwrap(),
                "Directory" => assert!(ours.is_dir(), "{} is not a directory", ours.display()),
                "Socket" => assert!(
                    fs::metadata(ours).unwrap().file_type().is_socket(),
                    "{} is not a socket",
                    ours.display()
                ),
                t => panic!("hostPath type `{t}` not rendered"),
            }
            let ro = if ro { ":ro" } else { "" };
            o.push(format!("--volume={}:{at}{ro}", ours.display()));
        } else if v.get("emptyDir").is_some() {
            o.push(format!("--tmpfs={at}:rw,nosuid,nodev,mode=0777"));
        } else {
            panic!("volume `{name}` of a kind not rendered: {v}");
        }
    }
    o
}

/// A pod run with podman: removed (with its containers) when dropped.
struct PodRun {
    podman: Podman,
    name: String,
    grace: u64,
    containers: Vec<String>,
    /// The (empty) hooks dir of the podman that runs the pod itself.
    _hooks: tempfile::TempDir,
}

impl PodRun {
    /// Runs every container of `pod` (command and mounts mapped by `map`).
    fn start(podman: &Podman, pod: &Value, map: &PathMap) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "rthooks-deploy-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let hooks = tempfile::tempdir().unwrap();
        let mut run = Self {
            podman: podman.clone(),
            name,
            grace: pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30),
            containers: Vec::new(),
            _hooks: hooks,
        };
        let out = run.podman(&["pod", "create", "--infra=false", "--name", &run.name]);
        assert!(out.status.success(), "pod create: {}", text(&out.stderr));
        for c in pod["containers"].as_array().unwrap() {
            let cname = format!("{}-{}", run.name, c["name"].as_str().unwrap());
            let mut args: Vec<String> = vec![
                "run".into(),
                "-d".into(),
                "--pod".into(),
                run.name.clone(),
                "--name".into(),
                cname.clone(),
                "--pull=never".into(),
            ];
            args.extend(support::podman::RUN_OPTIONS.iter().map(|s| s.to_string()));
            args.extend(run_options(pod, c, map));
            args.push(c["image"].as_str().unwrap().to_owned());
            let mounts: Vec<&str> = c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| m["mountPath"].as_str().unwrap())
                .collect();
            for a in c["command"].as_array().unwrap() {
                args.push(map.arg(a.as_str().unwrap(), &mounts));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = run.podman(&args);
            assert!(out.status.success(), "podman run: {}", text(&out.stderr));
            run.containers.push(cname);
        }
        run
    }

    fn podman(&self, args: &[&str]) -> Output {
        self.podman
            .command(self._hooks.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn container(&self, name: &str) -> String {
        format!("{}-{name}", self.name)
    }

    /// Runs the manifest's readiness probe in its container (`podman exec`: the container's
    /// user, capabilities and read-only root), its paths mapped as the command's are.
    fn probe(&self, pod: &Value, map: &PathMap) -> Output {
        let c = pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c.get("readinessProbe").is_some())
            .expect("a container with a readiness probe");
        let mounts: Vec<&str> = c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        let cname = self.container(c["name"].as_str().unwrap());
        let mut args = vec!["exec".to_owned(), cname];
        for a in c["readinessProbe"]["exec"]["command"].as_array().unwrap() {
            args.push(map.arg(a.as_str().unwrap(), &mounts));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.podman(&args)
    }

    /// Waits until the readiness probe passes (exit 0), at most [`WAIT`].
    fn wait_ready(&self, pod: &Value, map: &PathMap) {
        let start = Instant::now();
        loop {
            let out = self.probe(pod, map);
            if out.status.success() {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "the readiness probe never passed: exit {:?}\n{}{}",
                out.status.code(),
                text(&out.stdout),
                text(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn logs(&self, name: &str) -> String {
        let out = self.podman(&["logs", &self.container(name)]);
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }

    /// Waits until `name`'s logs contain `needle`.
    fn wait_logs(&self, name: &str, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let logs = self.logs(name);
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                start.elapsed() < WAIT,
                "{name}: no `{needle}` in its logs within {WAIT:?}:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `podman inspect` of container `name`.
    fn inspect(&self, name: &str) -> Value {
        let out = self.podman(&["inspect", &self.container(name)]);
        assert!(out.status.success(), "inspect: {}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone()
    }

    /// Stops the installer as the kubelet stops the pod: SIGTERM, SIGKILL after the grace
    /// period; returns its exit code. (The `export-logs` sidecar is left to [`Drop`]: `tail`
    /// runs as its container's PID 1, which ignores SIGTERM, so the kubelet kills it at the end
    /// of the grace period, for the chart's pod as for ours.)
    fn stop_installer(&self) -> i64 {
        let grace = self.grace.to_string();
        let name = self.container("tetragon-rthooks");
        let out = self.podman(&["stop", "-t", &grace, &name]);
        assert!(out.status.success(), "podman stop: {}", text(&out.stderr));
        self.inspect("tetragon-rthooks")["State"]["ExitCode"]
            .as_i64()
            .unwrap()
    }
}

impl Drop for PodRun {
    fn drop(&mut self) {
        let out = self.podman(&["pod", "rm", "-f", "-t", "0", &self.name]);
        if !out.status.success() {
            eprintln!(
                "teardown: podman pod rm {}: {}",
                self.name,
                text(&out.stderr)
            );
        }
    }
}

fn hook_log_msgs(install: &Path) -> Vec<String> {
    fs::read_to_string(install.join("tetragon-oci-hook.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["msg"].as_str().map(str::to_owned))
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// oci-hooks

/// One node for the oci-hooks pods: install dir, hooks dir, agent socket, all under a temp dir.
struct OciNode {
    dir: tempfile::TempDir,
    agent: Agent,
}

impl OciNode {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("deploy").tempdir().unwrap();
        fs::create_dir(dir.path().join("hooks.d")).unwrap();
        let agent = Agent::start_at(&dir.path().join("agent.sock"), Behavior::Accept);
        Self { dir, agent }
    }
    fn install(&self) -> PathBuf {
        self.dir.path().join("opt-tetragon")
    }
    fn hooks(&self) -> PathBuf {
        self.dir.path().join("hooks.d")
    }
    fn map(&self) -> PathMap {
        PathMap::default()
            .with(HOST_INSTALL, &self.install())
            .with(HOST_HOOKS, &self.hooks())
            .with(AGENT_SOCKET, self.agent.socket())
    }
    fn hook_file(&self) -> PathBuf {
        self.hooks().join("tetragon-oci-hook.json")
    }
    /// A container of the host's podman (the tests' busybox image), with the mapped hooks dir.
    fn run_host_container(&self, podman: &Podman, ns: &str) -> Output {
        let ann = format!("io.kubernetes.pod.namespace={ns}");
        podman.run(
            &self.hooks(),
            &["--rm", "--annotation", &ann],
            &["echo", "host container ran"],
        )
    }
}

/// Runs the oci-hooks pod `pod` on a fresh node and checks what every oci-hooks pod must do;
/// returns the node and the installed hook file's args for more checks.
fn oci_hooks_pod_lifecycle(podman: &Podman, pod: &Value) -> Vec<String> {
    let node = OciNode::new();
    let run = PodRun::start(podman, pod, &node.map());
    let probe_fails_before_install =
        !run.probe(pod, &node.map()).status.success() || node.hook_file().exists();

    // The installer wrote the hook file for the host's paths and copied the binary.
    wait_until("hook file in the host hooks dir", || {
        node.hook_file().exists()
    });
    let hook: Value = serde_json::from_slice(&fs::read(node.hook_file()).unwrap()).unwrap();
    let bin = node.install().join("tetragon-oci-hook");
    assert_eq!(hook["hook"]["path"], bin.display().to_string(), "{hook}");
    assert!(bin.is_file());
    run.wait_logs("tetragon-rthooks", "waiting for SIGINT or SIGTERM");
    // The manifest's readiness probe (`status --probe`), run in the installer's container as the
    // kubelet would: ready once installed.
    assert!(probe_fails_before_install);
    run.wait_ready(pod, &node.map());

    // A host container runs the hook, which reaches the agent; the sidecar prints its log.
    let out = node.run_host_container(podman, "default");
    assert!(
        out.status.success(),
        "host container: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let seen = node.agent.wait_for_requests(1, WAIT);
    assert_eq!(seen.len(), 1, "the agent saw {seen:?}");
    assert!(
        hook_log_msgs(&node.install())
            .iter()
            .any(|m| m == "hook request to agent succeeded"),
        "{:?}",
        hook_log_msgs(&node.install())
    );
    run.wait_logs("export-logs", "hook request to agent succeeded");

    // SIGTERM: the installer removes what it installed and exits 0 within the grace period.
    let start = Instant::now();
    let code = run.stop_installer();
    assert_eq!(code, 0, "{}", run.logs("tetragon-rthooks"));
    assert!(
        start.elapsed() < Duration::from_secs(run.grace + 5),
        "{:?}",
        start.elapsed()
    );
    assert!(!node.hook_file().exists(), "hook file left after SIGTERM");
    assert!(!bin.exists(), "hook binary left after SIGTERM (oci-hooks)");
    // Nothing else left in the host dirs (no temp file, lease or lock).
    assert_eq!(fs::read_dir(node.hooks()).unwrap().count(), 0);
    let left: Vec<_> = fs::read_dir(node.install())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "tetragon-oci-hook.log")
        .collect();
    assert!(left.is_empty(), "left in the install dir: {left:?}");
    hook["hook"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn oci_hooks_pod_installs_hook_runs_it_for_host_containers_and_removes_it_on_sigterm() {
    let Some(podman) = image() else { return };
    let pod = deploy_pod("rthooks-oci-hooks.yaml");
    let args = oci_hooks_pod_lifecycle(&podman, &pod);
    assert_eq!(args[1], "createRuntime", "{args:?}");
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--fail-allow-namespaces" && w[1] == "kube-system"),
        "{args:?}"
    );
}

/// Without CAP_DAC_OVERRIDE (dropped by the manifest), uid 0 writes only where it owns the
/// directory: a host hooks dir owned by another user is refused with a clear error, nothing
/// written. This is the one thing the capability would allow, and the manifests do not need
/// it: the install and hooks dirs of a node are root's.
#[test]
fn oci_hooks_pod_without_dac_override_cannot_write_a_hooks_dir_root_does_not_own() {
    let Some(podman) = image() else { return };
    let pod = deploy_pod("rthooks-oci-hooks.yaml");
    let node = OciNode::new();
    fs::set_permissions(node.hooks(), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(node.hooks(), Some(65534), Some(65534)).unwrap();
    let run = PodRun::start(&podman, &pod, &node.map());
    wait_until("the installer exits", || {
        run.inspect("tetragon-rthooks")["State"]["Running"] == false
    });
    let state = &run.inspect("tetragon-rthooks")["State"];
    let logs = run.logs("tetragon-rthooks");
    assert_ne!(state["ExitCode"], 0, "{logs}");
    assert!(logs.contains("error:"), "{logs}");
    assert!(
        logs.contains("error: cannot write to hooks dir `/hostHooks`: Permission denied"),
        "{logs}"
    );
    assert!(logs.contains("help: "), "{logs}");
    // Nothing written on the host.
    assert_eq!(fs::read_dir(node.hooks()).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(node.install()).unwrap().count(),
        0,
        "{:?}",
        fs::read_dir(node.install()).unwrap().collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------
// nri-hook

fn nri_pod_on(release: Release) {
    let Some(podman) = image() else { return };
    let work = tempfile::tempdir().unwrap();
    let mut containerd = require!(
        cri::containerd_for_pods(release, work.path()),
        runtimes::missing(release)
    );
    let agent = Agent::start_at(&work.path().join("agent.sock"), Behavior::Accept);
    let install = work.path().join("opt-tetragon");
    let nri_dir = containerd.nri_socket().parent().unwrap().to_owned();
    let map = PathMap::default()
        .with(HOST_INSTALL, &install)
        .with(HOST_NRI_DIR, &nri_dir)
        .with(AGENT_SOCKET, agent.socket());
    let pod = deploy_pod("rthooks-nri-hook.yaml");
    let run = PodRun::start(&podman, &pod, &map);
    let connected = "plugin \\\"01-tetragon\\\" connected";
    containerd
        .wait_log(connected, WAIT)
        .unwrap_or_else(|log| panic!("{release}: pod's plugin not connected:\n{log}"));
    // The manifest's readiness probe (`status --probe`), run in the installer's container as the
    // kubelet would (no capability, read-only root): ready once registered.
    run.wait_ready(&pod, &map);

    // The pod connected with no capability: containerd's NRI socket dir is root's and 0700, so
    // only uid 0 may reach the socket, and it does by owner rights alone (no CAP_DAC_OVERRIDE).
    {
        use std::os::unix::fs::MetadataExt;
        let dir = fs::metadata(&nri_dir).unwrap();
        let sock = fs::metadata(containerd.nri_socket()).unwrap();
        assert_eq!((dir.uid(), dir.mode() & 0o777), (0, 0o700), "{release}");
        assert_eq!(sock.uid(), 0, "{release}");
    }

    // A CRI container gets the hook; the agent gets the request; the sidecar prints the log.
    let mut cri = Cri::connect(containerd.grpc_socket()).unwrap();
    let logs = work.path().join("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    let spec = PodSpec {
        name: "web".into(),
        namespace: "default".into(),
        uid: format!("uid-deploy-{}", std::process::id()),
    };
    let (pod_id, sandbox) = cri.run_pod(&spec, &logs).unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cid = cri
            .create_container(&pod_id, &sandbox, "app", &["/bin/sleep", "600"])
            .unwrap();
        cri.start_container(&cid).unwrap();
        let (_, info) = cri.container_status(&cid).unwrap();
        let hooks = &info["runtimeSpec"]["hooks"]["createRuntime"];
        let bin = install.join("tetragon-oci-hook").display().to_string();
        assert!(
            hooks
                .as_array()
                .is_some_and(|h| h.iter().any(|h| h["path"] == bin.as_str())),
            "{release}: no hook of ours in {hooks}"
        );
        let seen = agent.wait_for_requests(1, WAIT);
        assert_eq!(seen.len(), 1, "{release}: the agent saw {seen:?}");
        assert_eq!(seen[0].container_name, "app");
        run.wait_logs("export-logs", "hook request to agent succeeded");

        // containerd restarts: the pod's plugin reconnects to the new socket in the mounted
        // dir by itself, and the pod's container is the same process (no restart).
        let before = run.inspect("tetragon-rthooks")["State"]["Pid"].clone();
        let from = containerd.log_len();
        containerd.restart();
        containerd
            .wait_log_since(from, connected, WAIT)
            .unwrap_or_else(|log| panic!("{release}: no re-registration:\n{log}"));
        let after = run.inspect("tetragon-rthooks");
        assert_eq!(after["State"]["Running"], true, "{after}");
        assert_eq!(
            after["State"]["Pid"], before,
            "{release}: the pod restarted"
        );
        assert_eq!(after["RestartCount"].as_u64().unwrap_or(0), 0);
        run.wait_ready(&pod, &map);
        let mut cri = Cri::connect(containerd.grpc_socket()).unwrap();
        let cid2 = cri
            .create_container(&pod_id, &sandbox, "after-restart", &["/bin/sleep", "600"])
            .unwrap();
        cri.start_container(&cid2).unwrap();
        let seen = agent.wait_for_requests(2, WAIT);
        assert_eq!(
            seen.len(),
            2,
            "{release}: after the restart the agent saw {seen:?}"
        );
        assert_eq!(seen[1].container_name, "after-restart");

        // SIGTERM: the plugin exits 0; the hook binary stays (containers created with the
        // hook in their spec still run it).
        let code = run.stop_installer();
        assert_eq!(code, 0, "{}", run.logs("tetragon-rthooks"));
        assert!(
            install.join("tetragon-oci-hook").is_file(),
            "{release}: the hook binary was removed on SIGTERM"
        );
    }));
    let mut cri = Cri::connect(containerd.grpc_socket()).unwrap();
    if let Err(e) = cri.remove_pod(&pod_id) {
        eprintln!("teardown: removing pod {pod_id}: {e}");
    }
    if let Err(p) = result {
        eprintln!(
            "pod logs:\n{}\n---\n{}",
            run.logs("tetragon-rthooks"),
            run.logs("export-logs")
        );
        std::panic::resume_unwind(p);
    }
}

#[test]
fn nri_pod_registers_hooks_cri_containers_and_survives_containerd_restart_1_7() {
    nri_pod_on(Release::V1_7);
}

#[test]
fn nri_pod_registers_hooks_cri_containers_and_survives_containerd_restart_2_1() {
    nri_pod_on(Release::V2_1);
}

// ---------------------------------------------------------------------------------------------
// The Helm chart's pod.

/// The chart's rthooks container command, rendered as `_container_rthooks.tpl` does, and its
/// pod (`rthooks-daemonset.yaml` + `_container_rthooks.tpl`: volumes, mounts, no
/// securityContext, the `export-logs` sidecar).
mod chart {
    use serde_json::{Value, json};

    /// The values the command depends on (`values.yaml` names).
    pub(crate) struct Values {
        pub(crate) interface: &'static str,
        /// `.Release.Namespace`.
        pub(crate) namespace: &'static str,
        pub(crate) install_dir: &'static str,
        pub(crate) hooks_path: &'static str,
        pub(crate) nri_socket: &'static str,
        pub(crate) grpc_address: &'static str,
        pub(crate) fail_allow_namespaces: &'static str,
        pub(crate) fail_allow_namespaces_regex: Vec<&'static str>,
        /// A Go map: rendered in key order; `None` is YAML's `null`.
        pub(crate) extra_hook_args: std::collections::BTreeMap<&'static str, Option<&'static str>>,
    }

    impl Values {
        /// `values.yaml`'s defaults, installed into `kube-system`.
        pub(crate) fn defaults(interface: &'static str) -> Self {
            Self {
                interface,
                namespace: "kube-system",
                install_dir: "/opt/tetragon",
                hooks_path: "/usr/share/containers/oci/hooks.d",
                nri_socket: "/var/run/nri/nri.sock",
                grpc_address: "unix:///var/run/tetragon/tetragon.sock",
                fail_allow_namespaces: "",
                fail_allow_namespaces_regex: Vec::new(),
                extra_hook_args: Default::default(),
            }
        }
    }

    /// `command:` of container `tetragon-rthooks` (`_container_rthooks.tpl`).
    pub(crate) fn command(v: &Values) -> Vec<String> {
        let mut c: Vec<String> = vec![
            "tetragon-oci-hook-setup".into(),
            "install".into(),
            format!("--interface={}", v.interface),
            // `container.tetragonOCIHookSetup.installPath` / `.hooksPath` (_helpers.tpl).
            "--local-install-dir=/hostInstall".into(),
            format!("--host-install-dir={}", v.install_dir),
            "--oci-hooks.local-dir=/hostHooks".into(),
            "--daemonize".into(),
            "hook-args".into(),
            format!("--grpc-address={}", v.grpc_address),
            "--fail-allow-namespaces".into(),
        ];
        c.push(if v.fail_allow_namespaces.is_empty() {
            v.namespace.to_owned()
        } else {
            format!("{},{}", v.namespace, v.fail_allow_namespaces)
        });
        for r in &v.fail_allow_namespaces_regex {
            c.push(format!("--fail-allow-namespaces-regex={r}"));
        }
        for (k, val) in &v.extra_hook_args {
            c.push(match val {
                None => format!("--{k}"),
                Some(val) => format!("--{k}={val}"),
            });
        }
        c
    }

    /// The pod's spec as the chart renders it (image set by the test).
    pub(crate) fn pod(v: &Values, image: &str) -> Value {
        let mut mounts =
            vec![json!({"name": "oci-hook-install-path", "mountPath": "/hostInstall"})];
        let mut volumes = vec![json!({"name": "oci-hook-install-path",
            "hostPath": {"path": v.install_dir, "type": "DirectoryOrCreate"}})];
        if v.interface == "oci-hooks" {
            mounts.push(json!({"name": "oci-hooks-path", "mountPath": "/hostHooks"}));
            volumes.push(json!({"name": "oci-hooks-path",
                "hostPath": {"path": v.hooks_path, "type": "Directory"}}));
        } else {
            mounts.push(json!({"name": "nri-socket-path", "mountPath": v.nri_socket}));
            volumes.push(json!({"name": "nri-socket-path",
                "hostPath": {"path": v.nri_socket, "type": "Socket"}}));
        }
        json!({
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": "tetragon-rthooks",
                    "image": image,
                    "terminationMessagePolicy": "FallbackToLogsOnError",
                    "command": command(v),
                    "volumeMounts": mounts,
                },
                {
                    "name": "export-logs",
                    "image": image,
                    "command": ["tail", "-F", format!("{}/tetragon-oci-hook.log", v.install_dir)],
                    "volumeMounts": [{"name": "oci-hook-install-path",
                        "mountPath": v.install_dir, "readOnly": true}],
                },
            ],
            "volumes": volumes,
        })
    }
}

/// The chart's own nri-hook pod (default values) mounts the NRI socket itself (`type:
/// Socket`): its plugin registers, but once containerd restarts, the mount still holds the old,
/// dead socket (containerd made a new one at the path), so the plugin cannot reconnect while
/// its container lives. deploy/rthooks-nri-hook.yaml mounts the directory instead, and
/// re-registers (`nri_pod_registers_hooks_cri_containers_and_survives_containerd_restart_*`).
#[test]
fn chart_nri_pod_registers_but_its_socket_mount_goes_stale_when_containerd_restarts() {
    let Some(podman) = image() else { return };
    let release = Release::V2_1;
    let mut containerd = require!(
        support::containerd::Containerd::start(release, support::containerd::Setup::enable_nri()),
        runtimes::missing(release)
    );
    let work = tempfile::tempdir().unwrap();
    let agent = Agent::start_at(&work.path().join("agent.sock"), Behavior::Accept);
    let map = PathMap::default()
        .with(HOST_INSTALL, &work.path().join("opt-tetragon"))
        .with(HOST_NRI_SOCKET, containerd.nri_socket())
        .with(AGENT_SOCKET, agent.socket());
    let values = chart::Values::defaults("nri-hook");
    let pod = chart::pod(&values, "localhost/tetragon-rthooks:latest");
    let run = PodRun::start(&podman, &pod, &map);
    let connected = "plugin \\\"01-tetragon\\\" connected";
    containerd
        .wait_log(connected, WAIT)
        .unwrap_or_else(|log| panic!("the chart's pod did not register:\n{log}"));

    let from = containerd.log_len();
    containerd.restart();
    let stale = containerd.wait_log_since(from, connected, Duration::from_secs(5));
    assert!(
        stale.is_err(),
        "the chart's pod re-registered through a socket mount:\n{}",
        run.logs("tetragon-rthooks")
    );
    assert_eq!(run.inspect("tetragon-rthooks")["State"]["Running"], true);
    // It keeps trying the dead socket it was given.
    let logs = run.logs("tetragon-rthooks");
    assert!(
        logs.contains("cannot connect to `/var/run/nri/nri.sock`")
            && logs.contains("Connection refused"),
        "{logs}"
    );
}

/// The values of the second case: every value that reaches the command line set.
fn chart_values_set() -> chart::Values {
    let mut v = chart::Values::defaults("oci-hooks");
    v.fail_allow_namespaces = "ns-a,ns-b";
    v.fail_allow_namespaces_regex = vec!["^dev-.*$", "^acme-.*$"];
    v.extra_hook_args = [
        ("grpc-timeout", Some("7s")),
        (
            "annotations-namespace-key",
            Some("io.kubernetes.pod.namespace"),
        ),
        ("disable-grpc", None),
    ]
    .into_iter()
    .collect();
    v
}

/// The fixture's args: one per line, `#` lines are comments.
fn fixture_args(name: &str) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chart")
        .join(name);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn chart_command_renders_as_the_template_for_default_and_set_values() {
    assert_eq!(
        chart::command(&chart::Values::defaults("nri-hook")),
        fixture_args("command-nri-hook-defaults.args")
    );
    assert_eq!(
        chart::command(&chart::Values::defaults("oci-hooks")),
        fixture_args("command-oci-hooks-defaults.args")
    );
    assert_eq!(
        chart::command(&chart_values_set()),
        fixture_args("command-oci-hooks-values.args")
    );
}

/// Our manifests run the chart's command, flag for flag, plus the NRI socket's path (which the
/// chart leaves at its default) for nri-hook.
#[test]
fn deploy_manifests_run_the_charts_command() {
    for (file, iface) in [
        ("rthooks-oci-hooks.yaml", "oci-hooks"),
        ("rthooks-nri-hook.yaml", "nri-hook"),
    ] {
        let pod = deploy_pod(file);
        let ours: Vec<String> = pod["containers"][0]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .filter(|a| !a.starts_with("--nri-hook.socket="))
            .collect();
        assert_eq!(
            ours,
            chart::command(&chart::Values::defaults(iface)),
            "{file}"
        );
        let sidecar = &pod["containers"][1];
        assert_eq!(sidecar["name"], "export-logs");
        assert_eq!(
            sidecar["command"],
            json!(["tail", "-F", "/opt/tetragon/tetragon-oci-hook.log"])
        );
    }
}

/// The chart's own oci-hooks pod (default capabilities, writable root, its mounts), with every
/// value that reaches the command line set: the hook file carries them, in the chart's order,
/// and a host container runs the hook with them.
#[test]
fn chart_oci_hooks_pod_with_values_set_installs_and_removes_the_hook() {
    let Some(podman) = image() else { return };
    let values = chart_values_set();
    let pod = chart::pod(&values, "localhost/tetragon-rthooks:latest");
    let node = OciNode::new();
    let run = PodRun::start(&podman, &pod, &node.map());
    wait_until("hook file", || node.hook_file().exists());
    let hook: Value = serde_json::from_slice(&fs::read(node.hook_file()).unwrap()).unwrap();
    let args: Vec<&str> = hook["hook"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let command = chart::command(&values);
    let hook_args: Vec<String> = command
        .iter()
        .skip_while(|a| *a != "hook-args")
        .skip(1)
        .map(|a| node.map().arg(a, &[]))
        .collect();
    assert_eq!(args[4..], hook_args[..], "{hook}");
    let out = node.run_host_container(&podman, "dev-1");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // `--disable-grpc`: the hook did not call the agent, and said so.
    run.wait_logs("export-logs", "\"msg\"");
    assert!(node.agent.requests().is_empty());
    let code = run.stop_installer();
    assert_eq!(code, 0, "{}", run.logs("tetragon-rthooks"));
    assert!(!node.hook_file().exists());
}

// ---------------------------------------------------------------------------------------------
// The manifests against the Kubernetes API schema.

/// `scripts/validate-manifests.sh FILES...`: `None` (after the skip policy) when the validator
/// cannot be installed here, else whether the files are valid and the output.
fn validate(files: &[&Path]) -> Option<(bool, String)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/validate-manifests.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(files)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    match out.status.code() {
        Some(3) => {
            skip(format!(
                "kubernetes-validate not installable: {}",
                all.trim()
            ));
            None
        }
        Some(0) => Some((true, all)),
        Some(1) => Some((false, all)),
        c => panic!("{}: exit {c:?}:\n{all}", script.display()),
    }
}

#[test]
fn deploy_manifests_validate_strictly_against_the_kubernetes_schema() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut files: Vec<PathBuf> = fs::read_dir(&deploy)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let Some((valid, out)) = validate(&refs) else {
        return;
    };
    assert!(valid, "{out}");
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        for v in ["1.30", "1.33"] {
            assert!(
                out.contains(&format!(
                    "{name} passed for resource daemonset/tetragon-rthooks against version {v}"
                )),
                "{name} not validated against {v}:\n{out}"
            );
        }
    }

    // The same manifest with one field misspelt is refused: the check is strict.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let good = fs::read_to_string(&files[0]).unwrap();
    assert!(good.contains("readOnlyRootFilesystem: true"));
    fs::write(
        &bad,
        good.replace(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesytem: true",
        ),
    )
    .unwrap();
    let (valid, out) = validate(&[&bad]).unwrap();
    assert!(!valid, "{out}");
    assert!(
        out.contains("'readOnlyRootFilesytem' was unexpected"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// A node without a registry: the image moved with `podman save` / `ctr images import`.

#[test]
fn image_saved_by_podman_imports_into_containerd_and_runs_there() {
    let Some(podman) = image() else { return };
    let release = Release::V2_1;
    let containerd = require!(
        support::containerd::Containerd::start(
            release,
            support::containerd::Setup::default_config()
        ),
        runtimes::missing(release)
    );
    let ctr = runtimes::bin_dir(release).unwrap().join("ctr");
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("rthooks.tar");
    let image = "localhost/tetragon-rthooks:latest";
    let out = podman
        .command(work.path())
        .args(["save", "-o"])
        .arg(&archive)
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "podman save: {}", text(&out.stderr));
    let ctr_cmd = |args: &[&str]| {
        Command::new(&ctr)
            .arg("--address")
            .arg(containerd.grpc_socket())
            .args(["-n", "k8s.io"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = ctr_cmd(&["images", "import", archive.to_str().unwrap()]);
    assert!(out.status.success(), "ctr import: {}", text(&out.stderr));
    let out = ctr_cmd(&["images", "ls", "-q"]);
    assert!(
        text(&out.stdout).lines().any(|l| l == image),
        "{}",
        text(&out.stdout)
    );
    // The kubelet's view: PATH from the image config finds our binaries, and `tail` is there.
    let id = format!("rthooks-import-{}", std::process::id());
    let out = ctr_cmd(&[
        "run",
        "--rm",
        "--net-host",
        image,
        &id,
        "tetragon-oci-hook-setup",
        "--version",
    ]);
    assert!(
        out.status.success() && text(&out.stdout).starts_with("tetragon-oci-hook-setup "),
        "ctr run: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = ctr_cmd(&[
        "run",
        "--rm",
        "--net-host",
        image,
        &format!("{id}-tail"),
        "tail",
        "--help",
    ]);
    assert!(
        text(&out.stderr).contains("-F"),
        "tail: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The build script itself.

/// Runs `scripts/build-image.sh --bins BINS --store <tests' store> --tag TAG`; its image id.
fn build_image_as(podman: &Podman, bins: &Path, tag: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-image.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--bins")
        .arg(bins)
        .arg("--store")
        .arg(podman.store())
        .args(["--tag", tag])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-image.sh: {}",
        text(&out.stderr)
    );
    let work = tempfile::tempdir().unwrap();
    let out = podman
        .command(work.path())
        .args(["image", "inspect", "--format", "{{.Id}}", tag])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

#[test]
fn rebuilding_the_image_removes_the_image_it_replaced() {
    let Some(podman) = image() else { return };
    let built = Path::new(support::hook_bin()).parent().unwrap();
    // Two builds with different content: the binaries, then the same two files swapped.
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for (setup, hook, dir) in [
        ("tetragon-oci-hook-setup", "tetragon-oci-hook", a.path()),
        ("tetragon-oci-hook", "tetragon-oci-hook-setup", b.path()),
    ] {
        fs::copy(built.join(setup), dir.join("tetragon-oci-hook-setup")).unwrap();
        fs::copy(built.join(hook), dir.join("tetragon-oci-hook")).unwrap();
    }
    // Not the tests' image name: this test moves its tags (both `:1` and `:latest`).
    let repo = format!("localhost/rthooks-rebuild-{}", std::process::id());
    let tag = format!("{repo}:1");
    /// Removes the test's two tags (and so its image), even when the test fails.
    struct Untag<'a>(&'a Podman, [String; 2]);
    impl Drop for Untag<'_> {
        fn drop(&mut self) {
            let work = tempfile::tempdir().unwrap();
            let _ = self
                .0
                .command(work.path())
                .arg("rmi")
                .args(&self.1)
                .output();
        }
    }
    let _untag = Untag(&podman, [tag.clone(), format!("{repo}:latest")]);
    let first = build_image_as(&podman, a.path(), &tag);
    let second = build_image_as(&podman, b.path(), &tag);
    assert_ne!(first, second, "the two builds differ in content");
    let work = tempfile::tempdir().unwrap();
    let names = |id: &str| {
        let out = podman
            .command(work.path())
            .args(["image", "inspect", "--format", "{{.RepoTags}}", id])
            .output()
            .unwrap();
        out.status.success().then(|| text(&out.stdout))
    };
    // The replaced image is gone, unless another name still holds it (a build of the same
    // content under another tag): then it is not the rebuild's leftover.
    if let Some(tags) = names(&first) {
        assert!(
            !tags.contains(&repo) && tags.contains("localhost/"),
            "the replaced image {first} is still in the store as {tags}"
        );
    }
    assert!(names(&second).is_some_and(|t| t.contains(&tag)));
}

// ---------------------------------------------------------------------------------------------
// What the manifests grant (read from the files: the pod runs above only prove it is enough).

#[test]
fn deploy_manifests_grant_no_capability_no_host_namespace_and_only_three_host_paths() {
    for name in ["rthooks-nri-hook.yaml", "rthooks-oci-hooks.yaml"] {
        let pod = deploy_pod(name);
        for k in ["hostPID", "hostIPC", "hostNetwork", "shareProcessNamespace"] {
            assert!(pod.get(k).is_none_or(|v| v == false), "{name}: {k}");
        }
        assert_eq!(pod["automountServiceAccountToken"], false, "{name}");
        for c in pod["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            let who = format!("{name}: {}", c["name"]);
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{who}");
            assert!(sc["capabilities"].get("add").is_none(), "{who}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{who}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{who}");
            assert_ne!(sc["privileged"], true, "{who}");
            // The sidecar only reads.
            if c["name"] == "export-logs" {
                for m in c["volumeMounts"].as_array().unwrap() {
                    assert_eq!(m["readOnly"], true, "{who}: {m}");
                }
            }
        }
        for v in pod["volumes"].as_array().unwrap() {
            let path = v["hostPath"]["path"].as_str().unwrap();
            assert!(
                [HOST_INSTALL, HOST_HOOKS, HOST_NRI_DIR].contains(&path),
                "{name}: host path {path}"
            );
            // A directory, never the socket itself (its inode goes stale on a restart).
            assert_ne!(v["hostPath"]["type"], "Socket", "{name}: {v}");
        }
    }
}

#[test]
fn readiness_probe_passes_the_installers_own_flags_and_values() {
    for name in ["rthooks-nri-hook.yaml", "rthooks-oci-hooks.yaml"] {
        let pod = deploy_pod(name);
        let c = &pod["containers"][0];
        assert_eq!(c["name"], "tetragon-rthooks");
        let command: Vec<&str> = c["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let probe: Vec<&str> = c["readinessProbe"]["exec"]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(probe[..2], ["tetragon-oci-hook-setup", "status"], "{name}");
        // `status` takes `install`'s flags (issue 12): the probe checks what this pod installed
        // only if each of them is spelt, and valued, as in the install command.
        // `--probe`: the readiness preset (our part of the node, not the agent).
        assert!(probe.contains(&"--probe"), "{name}: {probe:?}");
        for arg in &probe[2..] {
            if arg.starts_with("--timeout=") || *arg == "--probe" {
                continue;
            }
            let before_hook_args = command.iter().take_while(|a| **a != "hook-args");
            assert!(
                before_hook_args.clone().any(|a| a == arg),
                "{name}: probe argument {arg} is not in the install command {command:?}"
            );
        }
        // The probe's own bound is under the kubelet's.
        let timeout = probe.iter().find_map(|a| a.strip_prefix("--timeout="));
        let secs: f64 = timeout.unwrap().trim_end_matches('s').parse().unwrap();
        assert!(secs < c["readinessProbe"]["timeoutSeconds"].as_f64().unwrap());
    }
}

#[test]
fn build_script_refuses_bad_input_with_help_and_exit_2_building_nothing() {
    let built = Path::new(support::hook_bin()).parent().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-image.sh");
    // Binaries of this machine's architecture that cannot start (cut after their first 4 KiB,
    // as one linked against a libc that cannot apply its relocations would crash).
    let broken = tempfile::tempdir().unwrap();
    for name in ["tetragon-oci-hook", "tetragon-oci-hook-setup"] {
        let bytes = std::fs::read(built.join(name)).unwrap();
        let path = broken.path().join(name);
        std::fs::write(&path, &bytes[..4096]).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let cases: [(&[&str], &str); 5] = [
        (
            &["--bins", broken.path().to_str().unwrap()],
            "failed: the binary does not run",
        ),
        (&["--frobnicate"], "unknown argument `--frobnicate`"),
        (&["--arch", "sparc"], "unsupported architecture `sparc`"),
        (
            &["--bins", empty.path().to_str().unwrap()],
            "is not an executable file",
        ),
        // Our x86-64 (or whatever this is) binaries in an image of the other architecture.
        (
            &[
                "--arch",
                if cfg!(target_arch = "aarch64") {
                    "amd64"
                } else {
                    "arm64"
                },
                "--bins",
                built.to_str().unwrap(),
            ],
            "binary (ELF machine",
        ),
    ];
    for (args, says) in cases {
        let out = Command::new("bash")
            .arg(&script)
            .args(args)
            .arg("--store")
            .arg(store.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        if err.contains("podman not found") {
            skip("podman not installed");
            return;
        }
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.contains(says),
            "{args:?}: {err}"
        );
        assert!(err.contains("\nhelp: "), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        // Nothing built: no image store was made.
        assert!(
            !store.path().join("root").exists(),
            "{args:?}: a store was created"
        );
    }
}
