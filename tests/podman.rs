//! End to end with a real consumer: podman reads the hooks.d file that `install` writes (the
//! same format cri-o reads) and runs the installed binary at `createRuntime`.

// Helpers outside `#[test]` functions panic on a failed setup step, as a test body does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::Stdio;

use support::child::ChildGuard;
use support::cmd::{bin, run, wait_for_line};
use support::podman::{self, Podman, RUN_OPTIONS, library_mounts, recording_hook};

/// Directories of one test: the hook program's source, the install and hooks dirs, and where
/// the hook records its calls.
struct Node {
    _tmp: tempfile::TempDir,
    source: PathBuf,
    install: PathBuf,
    hooks: PathBuf,
    record: PathBuf,
}

impl Node {
    fn new() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let n = Node {
            source: root.join("src/tetragon-oci-hook"),
            install: root.join("opt-tetragon"),
            hooks: root.join("hooks.d"),
            record: root.join("record"),
            _tmp: tmp,
        };
        for d in [n.source.parent().unwrap(), &n.install, &n.hooks, &n.record] {
            fs::create_dir_all(d).unwrap();
        }
        recording_hook(&n.source, &n.record);
        n
    }

    /// The Helm chart's command line, with this node's directories (the install dir is the
    /// same path inside and outside, as no container is in between).
    fn install_args(&self, daemonize: bool) -> Vec<String> {
        let mut args = vec![
            "install".to_owned(),
            "--interface=oci-hooks".to_owned(),
            format!("--local-binary={}", self.source.display()),
            format!("--local-install-dir={}", self.install.display()),
            format!("--host-install-dir={}", self.install.display()),
            format!("--oci-hooks.local-dir={}", self.hooks.display()),
        ];
        if daemonize {
            args.push("--daemonize".to_owned());
        }
        args.extend(
            [
                "hook-args",
                "--grpc-address=unix:///var/run/tetragon/tetragon.sock",
                "--fail-allow-namespaces",
                "kube-system,ns1",
            ]
            .map(str::to_owned),
        );
        args
    }

    fn expected_argv(&self) -> Vec<String> {
        let bin = self.install.join("tetragon-oci-hook").display().to_string();
        vec![
            bin.clone(),
            "createRuntime".to_owned(),
            "--log-fname".to_owned(),
            self.install
                .join("tetragon-oci-hook.log")
                .display()
                .to_string(),
            "--grpc-address=unix:///var/run/tetragon/tetragon.sock".to_owned(),
            "--fail-allow-namespaces".to_owned(),
            "kube-system,ns1".to_owned(),
        ]
    }

    fn clear_record(&self) {
        for f in ["argv", "cwd", "stdin"] {
            let _ = fs::remove_file(self.record.join(f));
        }
    }

    /// Runs a container and returns what the hook recorded (`None`: not called).
    fn run_container(&self, podman: &Podman) -> Option<(Vec<String>, String, serde_json::Value)> {
        self.clear_record();
        let out = podman.run_true(&self.hooks);
        assert!(
            out.status.success(),
            "podman run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let argv = fs::read_to_string(self.record.join("argv")).ok()?;
        let cwd = fs::read_to_string(self.record.join("cwd")).unwrap();
        let stdin = fs::read_to_string(self.record.join("stdin")).unwrap();
        let state = serde_json::from_str(&stdin)
            .unwrap_or_else(|e| panic!("hook stdin is not the OCI state ({e}): {stdin}"));
        Some((
            argv.lines().map(str::to_owned).collect(),
            cwd.trim_end().to_owned(),
            state,
        ))
    }

    fn assert_called(&self, podman: &Podman) {
        let (argv, cwd, state) = self
            .run_container(podman)
            .expect("podman did not run the installed hook");
        assert_eq!(argv, self.expected_argv());
        // The OCI state of a container being created; the runtime runs the hook in its bundle.
        assert_eq!(state["status"], "creating", "{state}");
        assert!(
            state["id"].as_str().is_some_and(|id| !id.is_empty()),
            "{state}"
        );
        assert!(state["pid"].as_u64().is_some_and(|p| p > 0), "{state}");
        assert_eq!(state["bundle"].as_str(), Some(cwd.as_str()), "{state}");
    }

    fn files_gone(&self) -> bool {
        !self.install.join("tetragon-oci-hook").exists()
            && !self.hooks.join("tetragon-oci-hook.json").exists()
    }
}

fn args_ref(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn podman_runs_installed_hook_at_create_runtime_until_uninstalled() {
    let Some(podman) = Podman::get() else { return };
    let node = Node::new();
    let out = run(&args_ref(&node.install_args(false)));
    assert!(out.status.success(), "{out:?}");
    node.assert_called(&podman);

    let install_dir = format!("--local-install-dir={}", node.install.display());
    let hooks_dir = format!("--oci-hooks.local-dir={}", node.hooks.display());
    let out = run(&[
        "uninstall",
        "--interface",
        "oci-hooks",
        &install_dir,
        &hooks_dir,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(node.files_gone());
    assert!(
        node.run_container(&podman).is_none(),
        "podman still ran the hook after uninstall"
    );
}

#[test]
fn podman_stops_calling_hook_after_daemonized_install_gets_sigterm() {
    let Some(podman) = Podman::get() else { return };
    let node = Node::new();
    let mut child = ChildGuard::new(
        bin()
            .args(node.install_args(true))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    wait_for_line(&mut stderr, "waiting for SIGINT or SIGTERM");
    node.assert_called(&podman);

    child.signal(libc::SIGTERM);
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{status:?}: {rest}");
    assert!(node.files_gone(), "{rest}");
    assert!(
        node.run_container(&podman).is_none(),
        "podman still ran the hook after the daemonized install ended"
    );
}

/// What the Helm chart's DaemonSet does: the installer runs as PID 1 of a container that sees
/// the host's install dir at `/hostInstall` and its hooks dir at `/hostHooks`, with the chart's
/// command line (only `--host-install-dir` names a temp dir here instead of `/opt/tetragon`).
/// The hook file it writes must name the host paths, and `podman stop` (SIGTERM) must remove
/// both files.
#[test]
fn podman_installer_container_writes_host_paths_and_cleans_up_on_stop() {
    let Some(podman) = Podman::get() else { return };
    let node = Node::new();
    let no_hooks = tempfile::tempdir().unwrap();
    let setup = env!("CARGO_BIN_EXE_tetragon-oci-hook-setup");
    let name = format!("rthooks-installer-{}", std::process::id());
    let mut run = podman.command(no_hooks.path());
    run.args(["run", "-d", "--name", &name])
        .args(RUN_OPTIONS)
        .args(library_mounts(std::path::Path::new(setup)))
        .arg("-v")
        .arg(format!("{setup}:/usr/bin/tetragon-oci-hook-setup:ro"))
        .arg("-v")
        .arg(format!(
            "{}:/usr/bin/tetragon-oci-hook:ro",
            node.source.display()
        ))
        .arg("-v")
        .arg(format!("{}:/hostInstall", node.install.display()))
        .arg("-v")
        .arg(format!("{}:/hostHooks", node.hooks.display()))
        .arg(podman::IMAGE)
        .args([
            "tetragon-oci-hook-setup",
            "install",
            "--interface=oci-hooks",
            "--local-install-dir=/hostInstall",
        ])
        .arg(format!("--host-install-dir={}", node.install.display()))
        .args([
            "--oci-hooks.local-dir=/hostHooks",
            "--daemonize",
            "hook-args",
            "--grpc-address=unix:///var/run/tetragon/tetragon.sock",
            "--fail-allow-namespaces",
            "kube-system,ns1",
        ]);
    let started = run.output().unwrap();
    // Removes the installer container even when an assertion below fails.
    struct Remove<'a>(&'a Podman, &'a std::path::Path, &'a str);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = self.0.command(self.1).args(["rm", "-f", self.2]).output();
        }
    }
    let _remove = Remove(&podman, no_hooks.path(), &name);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let logs = |podman: &Podman| {
        let out = podman
            .command(no_hooks.path())
            .args(["logs", &name])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !logs(&podman).contains("waiting for SIGINT or SIGTERM") {
        assert!(
            std::time::Instant::now() < deadline,
            "the installer did not finish: {}",
            logs(&podman)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    node.assert_called(&podman);

    let stop = podman
        .command(no_hooks.path())
        .args(["stop", "-t", "20", &name])
        .output()
        .unwrap();
    let exit = podman
        .command(no_hooks.path())
        .args(["inspect", "--format", "{{.State.ExitCode}}", &name])
        .output()
        .unwrap();
    let log = logs(&podman);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&exit.stdout).trim(), "0", "{log}");
    assert!(log.contains("received SIGTERM: uninstalling"), "{log}");
    assert!(node.files_gone(), "{log}");
    assert!(
        node.run_container(&podman).is_none(),
        "podman still ran the hook after the installer container stopped"
    );
}

/// `--containers-conf`: the hooks dir set in a private `containers.conf` (podman's
/// `CONTAINERS_CONF`) is accepted by the check and podman runs the hook from it; a dir that
/// `containers.conf` does not list is refused, and podman indeed does not run hooks from it.
#[test]
fn podman_runs_hook_from_hooks_dir_that_containers_conf_check_accepts() {
    let Some(podman) = Podman::get() else { return };
    let node = Node::new();
    let conf_dir = node.record.parent().unwrap().join("etc-containers");
    fs::create_dir_all(&conf_dir).unwrap();
    let reads_hooks = conf_dir.join("containers.conf");
    fs::write(
        &reads_hooks,
        format!(
            "[engine]\nhooks_dir = [\n  \"{}\",\n]\n",
            node.hooks.display()
        ),
    )
    .unwrap();
    let elsewhere = node.record.parent().unwrap().join("other-hooks.d");
    fs::create_dir_all(&elsewhere).unwrap();
    let reads_elsewhere = conf_dir.join("elsewhere.conf");
    fs::write(
        &reads_elsewhere,
        format!("[engine]\nhooks_dir = [\"{}\"]\n", elsewhere.display()),
    )
    .unwrap();

    // Refused: nothing written.
    let mut args = node.install_args(false);
    args.insert(
        1,
        format!("--containers-conf={}", reads_elsewhere.display()),
    );
    let out = run(&args_ref(&args));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "podman does not read hook files from `{}`",
            node.hooks.display()
        )),
        "{err}"
    );
    assert!(fs::read_dir(&node.hooks).unwrap().next().is_none(), "{err}");

    // Accepted: installed, and podman (reading only that containers.conf) runs the hook.
    let mut args = node.install_args(false);
    args.insert(1, format!("--containers-conf={}", reads_hooks.display()));
    let out = run(&args_ref(&args));
    assert!(out.status.success(), "{out:?}");
    node.clear_record();
    let ran = podman.run_true_with_containers_conf(&reads_hooks);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let argv = fs::read_to_string(node.record.join("argv"))
        .expect("podman did not run the hook from the dir its containers.conf lists");
    assert_eq!(argv.lines().collect::<Vec<_>>(), node.expected_argv());

    // The refused dir is indeed not read: with `elsewhere.conf`, the installed hook is not run.
    node.clear_record();
    let ran = podman.run_true_with_containers_conf(&reads_elsewhere);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert!(
        !node.record.join("argv").exists(),
        "podman ran a hook from a dir its containers.conf does not list"
    );
}
