//! The whole system on a real containerd, as Tetragon's runtime-hooks docs describe it: the
//! config patched by our `enable-nri`, our NRI plugin registered (`install --interface nri-hook
//! --daemonize`), a pod and its container created through the Kubernetes CRI, runc running our
//! `tetragon-oci-hook` at createRuntime, and the hook reaching the agent or applying the
//! fail-allow policy.
//!
//! Runs on containerd 1.7 and 2.1 (fetched by `scripts/fetch-containerd.sh`), as root. Pods use
//! the host's network (no CNI here) and a local busybox image (no registry here). Everything is
//! torn down even on failure: pods by [`PodGuard`], the plugin by [`Plugin`]'s `Drop`, containerd
//! by the harness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod support;

use support::child::ChildGuard;
use support::cri::{self, Cri, PodSpec};
use support::runtimes::{self, Release};
use test_agent::{Agent, Behavior};

const WAIT: Duration = Duration::from_secs(20);
const ALLOWED_NS: &str = "tetragon-allowed";

/// `tetragon-oci-hook-setup install --interface nri-hook --daemonize`, as the DaemonSet runs it.
struct Plugin {
    child: ChildGuard,
    log: PathBuf,
}

impl Plugin {
    fn start(dir: &Path, nri_socket: &Path, agent: &str) -> Self {
        let install = dir.join("install");
        fs::create_dir_all(&install).unwrap();
        let log = dir.join("plugin.log");
        let child = support::cmd::nri_plugin(
            Path::new(support::hook_bin()),
            &install,
            &install,
            nri_socket,
        )
        .args(["hook-args", "--grpc-address", agent, "--grpc-timeout", "5s"])
        .args([
            "--fail-allow-namespaces",
            &format!("kube-system,{ALLOWED_NS}"),
        ])
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
        Self {
            child: ChildGuard::new(child),
            log,
        }
    }

    fn terminate(&mut self) -> Option<i32> {
        self.child.signal(libc::SIGTERM);
        self.child.wait_for(WAIT)?.code()
    }
}

/// Removes the pods it holds when dropped, so that a failing assertion leaves no pod behind.
struct PodGuard<'a> {
    cri: &'a mut Cri,
    pods: Vec<String>,
}

impl PodGuard<'_> {
    fn run(&mut self, pod: &PodSpec, logs: &Path) -> (String, cri::v1::PodSandboxConfig) {
        let (id, cfg) = self.cri.run_pod(pod, logs).unwrap();
        self.pods.push(id.clone());
        (id, cfg)
    }
}

impl Drop for PodGuard<'_> {
    fn drop(&mut self) {
        for id in self.pods.drain(..) {
            if let Err(e) = self.cri.remove_pod(&id) {
                eprintln!("teardown: removing pod {id}: {e}");
            }
        }
    }
}

fn hook_log(install: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(install.join("tetragon-oci-hook.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Says what the scenario does; shown by `scripts/demo-containerd.sh` (`--nocapture`).
fn step(release: Release, what: impl std::fmt::Display) {
    eprintln!("[{release}] {what}");
}

fn scenario(release: Release) {
    let work = tempfile::tempdir().unwrap();
    let containerd = require!(
        cri::containerd_for_pods(release, work.path()),
        runtimes::missing(release)
    );
    let logs = work.path().join("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    step(
        release,
        format_args!(
            "containerd running, its config patched by our enable-nri: {}",
            containerd.paths.config.display()
        ),
    );
    step(
        release,
        format_args!("imported the local image {}", cri::IMAGE),
    );

    // The agent, then the plugin, which must register before any container is created.
    let agent_socket = work.path().join("agent.sock");
    let agent = Agent::start_at(&agent_socket, Behavior::Accept);
    let mut plugin = Plugin::start(work.path(), containerd.nri_socket(), &agent.address());
    containerd
        .wait_log("plugin \\\"01-tetragon\\\" connected", WAIT)
        .unwrap_or_else(|log| panic!("{release}: plugin not connected:\n{log}"));
    let install = work.path().join("install");
    step(
        release,
        format_args!(
            "stand-in agent on {}; our NRI plugin registered as 01-tetragon",
            agent.address()
        ),
    );

    let mut cri = Cri::connect(containerd.grpc_socket()).unwrap();
    let mut pods = PodGuard {
        cri: &mut cri,
        pods: Vec::new(),
    };

    // 1. Agent up: the container starts, its spec has our hook, the agent saw it.
    let pod = PodSpec {
        name: "web".into(),
        namespace: "default".into(),
        uid: format!("uid-{}", std::process::id()),
    };
    let (pod_id, sandbox) = pods.run(&pod, &logs);
    let cid = pods
        .cri
        .create_container(&pod_id, &sandbox, "app", &["/bin/sleep", "600"])
        .unwrap();
    pods.cri.start_container(&cid).unwrap();
    step(
        release,
        format_args!(
            "pod {}/{} running; container `app` ({cid}) started",
            pod.namespace, pod.name
        ),
    );
    let (status, info) = pods.cri.container_status(&cid).unwrap();
    assert_eq!(
        status.state,
        cri::v1::ContainerState::ContainerRunning as i32,
        "{status:?}"
    );
    let spec = &info["runtimeSpec"];
    let hooks = &spec["hooks"]["createRuntime"];
    let ours = hooks
        .as_array()
        .and_then(|h| {
            h.iter()
                .find(|h| h["path"] == install.join("tetragon-oci-hook").display().to_string())
        })
        .unwrap_or_else(|| panic!("{release}: no createRuntime hook of ours in {hooks}"));
    assert_eq!(ours["args"][1], "createRuntime", "{ours}");
    // `--grpc-timeout 5s` + 2 s: the runtime's backstop reached the OCI spec.
    assert_eq!(ours["timeout"], 7, "{release}: {ours}");
    step(
        release,
        format_args!("its OCI spec has our createRuntime hook: {ours}"),
    );

    let seen = agent.wait_for_requests(1, WAIT);
    assert_eq!(seen.len(), 1, "{release}: the agent saw {seen:?}");
    let req = &seen[0];
    let cgroups = spec["linux"]["cgroupsPath"].as_str().unwrap();
    assert_eq!(req.cgroups_path, cgroups);
    let bundle = containerd
        .paths
        .state
        .join("io.containerd.runtime.v2.task/k8s.io")
        .join(&cid);
    assert_eq!(Path::new(&req.root_dir), bundle.join("rootfs"));
    assert_eq!(req.container_name, "app");
    assert_eq!(req.pod_name, pod.name);
    assert_eq!(req.pod_namespace, pod.namespace);
    assert_eq!(req.pod_uid, pod.uid);
    step(
        release,
        format_args!(
            "the agent saw it: cgroupsPath={} rootDir={} pod={}/{} uid={}",
            req.cgroups_path, req.root_dir, req.pod_namespace, req.pod_name, req.pod_uid
        ),
    );
    assert!(
        hook_log(&install)
            .iter()
            .any(|l| l["msg"] == "hook request to agent succeeded"),
        "{release}: hook log: {:?}",
        hook_log(&install)
    );

    // 2. Agent down: a container in `default` is refused, naming the hook; one in the allowed
    //    namespace starts, and the log says why.
    drop(agent);
    step(release, "agent stopped");
    let cid2 = pods
        .cri
        .create_container(&pod_id, &sandbox, "refused", &["/bin/sleep", "600"])
        .unwrap();
    let err = pods
        .cri
        .start_container(&cid2)
        .expect_err("a container must not start without the agent");
    assert!(
        err.message().contains("failing container"),
        "{release}: start error does not name the hook: {}",
        err.message()
    );

    step(
        release,
        format_args!(
            "container `refused` in namespace default did not start: {}",
            err.message()
        ),
    );

    let allowed = PodSpec {
        name: "system".into(),
        namespace: ALLOWED_NS.into(),
        uid: format!("uid-allowed-{}", std::process::id()),
    };
    let (pod2, sandbox2) = pods.run(&allowed, &logs);
    let cid3 = pods
        .cri
        .create_container(&pod2, &sandbox2, "allowed", &["/bin/sleep", "600"])
        .unwrap();
    pods.cri.start_container(&cid3).unwrap();
    step(
        release,
        format_args!("container `allowed` in namespace {ALLOWED_NS} started (fail-allow policy)"),
    );
    let msg =
        "failCheck determined that we should not fail this container, even if there was an error";
    assert!(
        hook_log(&install)
            .iter()
            .any(|l| l["msg"] == msg && l["req-podNamespace"] == ALLOWED_NS),
        "{release}: hook log: {:?}",
        hook_log(&install)
    );

    // 3. Teardown: pods, then the plugin (SIGTERM, exit 0), then containerd (harness).
    drop(pods);
    step(release, "pods removed; stopping the plugin with SIGTERM");
    assert_eq!(
        plugin.terminate(),
        Some(0),
        "{release}: plugin log:\n{}",
        fs::read_to_string(&plugin.log).unwrap_or_default()
    );
}

#[test]
fn pod_gets_hook_through_nri_and_hook_gates_start_containerd_1_7() {
    scenario(Release::V1_7);
}

#[test]
fn pod_gets_hook_through_nri_and_hook_gates_start_containerd_2_1() {
    scenario(Release::V2_1);
}
