//! End to end under a real runtime: podman (with runc) runs `tetragon-oci-hook` as a
//! `createRuntime` OCI hook from a hooks dir, for containers from a local busybox image.
//!
//! Podman is the tests' one podman (`tests/support/podman.rs`): private storage, run and temp
//! directories, the `vfs` driver, the `cgroupfs` manager and no network, so that it works in a
//! plain root sandbox without touching the machine's configuration; each test has its own
//! `--hooks-dir`. Needs (Debian 12): `podman`, `runc`, `busybox-static`; run as root.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::child;
use support::podman::Podman;
use support::skip::{is_root, skip};
use test_agent::{Agent, Behavior};

const SETUP: &str = env!("CARGO_BIN_EXE_tetragon-oci-hook-setup");

/// One test's node: the shared podman store and image (`support::podman`), a hooks dir and an
/// install dir of its own, and a label on its containers, which are removed at the end.
struct Node {
    podman: Podman,
    dir: tempfile::TempDir,
    label: String,
}

impl Node {
    /// `None` (after the skip policy) when not root or podman cannot run containers here.
    fn new() -> Option<Self> {
        if !is_root() {
            skip("not root");
            return None;
        }
        let podman = Podman::get()?;
        static N: AtomicUsize = AtomicUsize::new(0);
        let label = format!(
            "rthooks.test=hook-podman-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new().prefix("podman").tempdir().unwrap();
        let p = Self { podman, dir, label };
        std::fs::create_dir(p.hooks_dir()).unwrap();
        Some(p)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn hooks_dir(&self) -> PathBuf {
        self.path().join("hooks.d")
    }

    fn install_dir(&self) -> PathBuf {
        self.path().join("install")
    }

    fn log_path(&self) -> PathBuf {
        self.install_dir().join("tetragon-oci-hook.log")
    }

    fn podman(&self, args: &[&str]) -> Output {
        self.podman
            .command(&self.hooks_dir())
            .args(args)
            .output()
            .unwrap()
    }

    /// Installs the hook for `createRuntime` with these extra flags, the way the DaemonSet
    /// does: `tetragon-oci-hook-setup install` copies the binary into the install dir and
    /// writes the hooks.d file.
    fn install_hook(&self, flags: &[&str]) {
        let install_dir = self.install_dir();
        std::fs::create_dir_all(&install_dir).unwrap();
        let dir = install_dir.display().to_string();
        let hooks = self.hooks_dir().display().to_string();
        let mut args = vec![
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
        ];
        args.extend_from_slice(flags);
        let out = Command::new(SETUP)
            .args(&args)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "install: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `podman run` of the shared image with the namespace annotation and this node's label,
    /// unspawned.
    fn run_command(&self, ns: &str, extra: &[&str], cmd: &[&str]) -> Command {
        let ann = format!("io.kubernetes.pod.namespace={ns}");
        let mut args = vec!["--annotation", &ann, "--label", &self.label];
        args.extend_from_slice(extra);
        self.podman.run_command(&self.hooks_dir(), &args, cmd)
    }

    /// `podman run` of the shared image with the namespace annotation and this node's label.
    fn run(&self, ns: &str, extra: &[&str], cmd: &[&str]) -> Output {
        self.run_command(ns, extra, cmd).output().unwrap()
    }

    fn log(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let filter = format!("label={}", self.label);
        let _ = self.podman(&["rm", "-f", "-t", "0", "--filter", &filter]);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn podman_without_agent_starts_allowed_namespace_and_refuses_others() {
    let Some(pm) = Node::new() else { return };
    let missing = format!("unix://{}", pm.path().join("no-agent.sock").display());
    pm.install_hook(&[
        "--grpc-address",
        &missing,
        "--fail-allow-namespaces",
        "kube-system,ns1",
    ]);

    let out = pm.run("ns1", &["--rm"], &["echo", "started"]);
    assert!(
        out.status.success(),
        "ns1 should start: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), "started");

    let out = pm.run("default", &["--rm"], &["echo", "started"]);
    assert!(!out.status.success(), "default must be refused");
    assert!(!text(&out.stdout).contains("started"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("failing container: failed to connect to"),
        "{stderr}"
    );

    let log = pm.log();
    let allowed = log
        .iter()
        .find(|l| l["msg"] == "failCheck determined that we should not fail this container, even if there was an error")
        .expect("allow line");
    assert_eq!(allowed["req-podNamespace"], "ns1");
    assert_eq!(allowed["hook"], "createRuntime");
    let failing = log
        .iter()
        .find(|l| l["msg"] == "failing container")
        .expect("failing line");
    assert_eq!(failing["level"], "ERROR");
    assert_eq!(failing["req-podNamespace"], "default");
    assert_eq!(failing["should-fail"], true);
    for l in &log {
        for k in [
            "time",
            "level",
            "msg",
            "hook",
            "start-time",
            "req-cgroups",
            "req-rootdir",
        ] {
            assert!(l.get(k).is_some(), "missing `{k}` in {l}");
        }
        assert!(l["req-cgroups"].as_str().unwrap().starts_with('/'), "{l}");
    }
}

#[test]
fn podman_with_agent_reports_real_cgroup_and_root_dir() {
    let Some(pm) = Node::new() else { return };
    let agent = Agent::start(Behavior::Accept);
    pm.install_hook(&["--grpc-address", &agent.address()]);

    let name = format!("hooked-{}", std::process::id());
    let out = pm.run("default", &["-d", "--name", &name], &["sleep", "60"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid = text(
        &pm.podman(&["inspect", "--format", "{{.State.Pid}}", &name])
            .stdout,
    );
    let pid = pid.trim();
    let mountpoint = text(&pm.podman(&["mount", &name]).stdout);
    let mountpoint = mountpoint.trim();
    assert!(
        !pid.is_empty() && !mountpoint.is_empty(),
        "pid {pid:?}, mountpoint {mountpoint:?}"
    );

    let seen = agent.wait_for_requests(1, std::time::Duration::from_secs(5));
    assert_eq!(seen.len(), 1);
    let cc = &seen[0];

    // The container's own cgroup, as the kernel reports it (unified or first v1 hierarchy).
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let real: Vec<&str> = cgroup
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .collect();
    assert!(
        real.contains(&cc.cgroups_path.as_str()),
        "agent saw {:?}, kernel says {cgroup}",
        cc.cgroups_path
    );
    assert!(cc.cgroups_path.len() > 1);

    assert_eq!(cc.root_dir, mountpoint);
    assert!(Path::new(&cc.root_dir).join("bin/busybox").exists());
    assert_eq!(cc.pod_namespace, "default");
    assert_eq!(cc.annotations["io.kubernetes.pod.namespace"], "default");
    assert!(cc.mounts.iter().any(|m| m.destination == "/proc"));

    let log = pm.log();
    let ok = log
        .iter()
        .find(|l| l["msg"] == "hook request to agent succeeded")
        .expect("success line");
    assert_eq!(ok["level"], "INFO");
    assert_eq!(ok["req-cgroups"], cc.cgroups_path.as_str());
    assert_eq!(ok["req-rootdir"], cc.root_dir.as_str());
}

/// Under a real runtime (runc runs the hook), a `--fail-cel-expr` that would run for minutes is
/// stopped at `--fail-cel-timeout` in its child process and the namespace rules decide: the
/// allowed namespace starts, another is refused, and neither `podman run` hangs.
#[test]
fn podman_slow_cel_is_stopped_and_namespace_rules_decide() {
    let Some(pm) = Node::new() else { return };
    let missing = format!("unix://{}", pm.path().join("no-agent.sock").display());
    // 10^8 steps if let run.
    let ten = "[0,1,2,3,4,5,6,7,8,9]";
    let mut expr = "true".to_owned();
    for i in 0..8 {
        expr = format!("{ten}.all(v{i}, {expr})");
    }
    pm.install_hook(&[
        "--grpc-address",
        &missing,
        "--grpc-timeout",
        "2s",
        "--fail-allow-namespaces",
        "ns1",
        "--fail-cel-expr",
        &expr,
    ]);
    let run_bounded = |ns: &str| {
        let mut child = pm
            .run_command(ns, &["--rm"], &["echo", "started"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if child::wait_timeout(&mut child, Duration::from_secs(60)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("podman run in {ns} still running after 60 s");
        }
        child.wait_with_output().unwrap()
    };
    let out = run_bounded("ns1");
    assert!(
        out.status.success(),
        "ns1 should start: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout).trim(), "started");
    let out = run_bounded("default");
    assert!(!out.status.success(), "default must be refused");

    let log = pm.log();
    let stopped: Vec<&Value> = log
        .iter()
        .filter(|l| l["msg"] == "failCheck failed")
        .collect();
    assert_eq!(stopped.len(), 2, "{log:#?}");
    for l in stopped {
        let err = l["error"].as_str().unwrap();
        assert!(
            err.contains("used more than 200ms of CPU time (`--fail-cel-timeout`)"),
            "{err}"
        );
    }
}
