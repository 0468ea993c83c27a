//! End to end under a real runtime: podman (with runc) runs `tetragon-oci-hook` as a
//! `createRuntime` OCI hook from a hooks dir, for containers from a local busybox image.
//!
//! Podman is used with private storage, run and hooks directories (`--root`, `--runroot`,
//! `--tmpdir`, `--hooks-dir`), the `vfs` driver, the `cgroupfs` manager and no network, so that
//! it works in a plain root sandbox without touching the machine's configuration.
//! Needs (Debian 12): `podman`, `runc`, `busybox-static`; run as root.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use test_agent::{Agent, Behavior};

const SETUP: &str = env!("CARGO_BIN_EXE_tetragon-oci-hook-setup");
const BUSYBOX: &str = "/bin/busybox";
const IMAGE: &str = "localhost/rthooks-busybox:test";

/// Returns `Some(reason)` when podman cannot be used here.
fn missing() -> Option<String> {
    for bin in ["podman", "runc"] {
        let found = Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!(
                "`{bin}` not found (apt-get install -y podman runc)"
            ));
        }
    }
    if !Path::new(BUSYBOX).exists() {
        return Some(format!(
            "`{BUSYBOX}` not found (apt-get install -y busybox-static)"
        ));
    }
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| text(&o.stdout))
        .unwrap_or_default();
    if uid.trim() != "0" {
        return Some("not root".to_owned());
    }
    None
}

macro_rules! require_podman {
    () => {
        if let Some(reason) = missing() {
            if std::env::var_os("E2E_REQUIRED").is_some_and(|v| v == "1") {
                panic!("E2E_REQUIRED=1 but {reason}");
            }
            println!("skipped: {reason}");
            return;
        }
    };
}

/// A private podman setup: storage, state, hooks dir and a busybox image.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("podman").tempdir().unwrap();
        let p = Self { dir };
        std::fs::create_dir(p.hooks_dir()).unwrap();
        p.import_busybox();
        p
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

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        let p = self.path();
        c.arg("--root").arg(p.join("root"));
        c.arg("--runroot").arg(p.join("runroot"));
        c.arg("--tmpdir").arg(p.join("tmp"));
        c.arg("--hooks-dir").arg(self.hooks_dir());
        c.args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"]);
        c.args(["--events-backend", "file", "--runtime", "runc"]);
        c
    }

    fn podman(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn import_busybox(&self) {
        let rootfs = self.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "echo", "sleep", "cat"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let tar = self.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        // The first podman call on a fresh boot creates its shared-memory lock file
        // (/dev/shm/libpod_lock); two stores doing that at once race ("failed to create 2048
        // locks ... file exists"), so the tests of this binary take turns for this call.
        static FIRST_CALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let turn = FIRST_CALL.lock().unwrap_or_else(|e| e.into_inner());
        let out = self.podman(&["import", tar.to_str().unwrap(), IMAGE]);
        drop(turn);
        assert!(
            out.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
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

    /// `podman run` with the namespace annotation and the sandbox's ulimits.
    fn run(&self, ns: &str, extra: &[&str], cmd: &[&str]) -> Output {
        let ann = format!("io.kubernetes.pod.namespace={ns}");
        let mut args = vec![
            "run",
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--annotation",
            &ann,
        ];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.extend_from_slice(cmd);
        self.podman(&args)
    }

    fn log(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-a", "-f", "-t", "0"]);
        // vfs layers may hold read-only dirs; the temp dir removal copes with the rest.
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn podman_without_agent_starts_allowed_namespace_and_refuses_others() {
    require_podman!();
    let pm = Podman::new();
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
    require_podman!();
    let pm = Podman::new();
    let agent = Agent::start(Behavior::Accept);
    pm.install_hook(&["--grpc-address", &agent.address()]);

    let out = pm.run("default", &["-d", "--name", "hooked"], &["sleep", "60"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pid = text(
        &pm.podman(&["inspect", "--format", "{{.State.Pid}}", "hooked"])
            .stdout,
    );
    let pid = pid.trim();
    let mountpoint = text(&pm.podman(&["mount", "hooked"]).stdout);
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
    require_podman!();
    let pm = Podman::new();
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
        let ann = format!("io.kubernetes.pod.namespace={ns}");
        let mut child = pm
            .cmd()
            .args([
                "run",
                "--rm",
                "--network",
                "none",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
                "--annotation",
                &ann,
                IMAGE,
            ])
            .args(["echo", "started"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > std::time::Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("podman run in {ns} still running after 60 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
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
        assert!(err.contains("did not finish within 200ms"), "{err}");
    }
}
