//! The `tetragon-oci-hook` binary run as a runtime runs it: OCI state on stdin, a bundle with
//! `config.json`, a stand-in agent on a unix socket (or none), and its JSON log read back.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support_agent;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support_agent::{Agent, Behavior};

const HOOK: &str = env!("CARGO_BIN_EXE_tetragon-oci-hook");

/// A containerd-style spec: CRI annotations, relative `root.path`, systemd cgroups path.
const CONTAINERD_SPEC: &str = r#"{
  "ociVersion": "1.2.0",
  "process": {"args": ["/pause"], "cwd": "/"},
  "root": {"path": "rootfs"},
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec"]},
    {"destination": "/etc/hosts", "type": "bind", "source": "/var/lib/kubelet/pods/u1/etc-hosts", "options": ["rbind", "rw"]}
  ],
  "annotations": {
    "io.kubernetes.cri.container-type": "container",
    "io.kubernetes.cri.container-name": "app",
    "io.kubernetes.cri.image-name": "docker.io/library/nginx:1.27",
    "io.kubernetes.cri.sandbox-name": "web-0",
    "io.kubernetes.cri.sandbox-namespace": "shop",
    "io.kubernetes.cri.sandbox-uid": "6b1f-uid",
    "kubernetes.io/config.hash": "abc123"
  },
  "linux": {
    "cgroupsPath": "kubepods-besteffort-pod6b1f.slice:cri-containerd:c0ffee",
    "namespaces": [{"type": "pid"}, {"type": "some-future-namespace"}]
  }
}"#;

/// A cri-o-style spec: Kubernetes annotations, absolute `root.path`, cgroupfs path.
const CRIO_SPEC: &str = r#"{
  "ociVersion": "1.0.2-dev",
  "root": {"path": "/var/lib/containers/storage/overlay/l1/merged", "readonly": false},
  "mounts": [{"destination": "/dev/shm", "type": "bind", "source": "/run/containers/shm", "options": ["rw"]}],
  "annotations": {
    "io.kubernetes.container.name": "sidecar",
    "io.kubernetes.cri-o.ContainerID": "828977b42e31",
    "io.kubernetes.cri-o.ImageName": "quay.io/org/sidecar@sha256:0123",
    "io.kubernetes.pod.name": "db-1",
    "io.kubernetes.pod.namespace": "data",
    "io.kubernetes.pod.uid": "d4e7-uid"
  },
  "linux": {"cgroupsPath": "/kubepods/besteffort/podd4e7/crio-828977b42e31"}
}"#;

/// A scratch directory under the target dir, with a bundle holding `spec` (if any).
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new(spec: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hook")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        std::fs::create_dir(dir.path().join("bundle")).unwrap();
        if let Some(spec) = spec {
            std::fs::write(dir.path().join("bundle/config.json"), spec).unwrap();
        }
        Self { dir }
    }

    fn with_namespace(ns: Option<&str>) -> Self {
        let mut spec: Value = serde_json::from_str(CRIO_SPEC).unwrap();
        let ann = spec["annotations"].as_object_mut().unwrap();
        ann.remove("io.kubernetes.pod.namespace");
        if let Some(ns) = ns {
            ann.insert("io.kubernetes.pod.namespace".into(), ns.into());
        }
        Self::new(Some(&spec.to_string()))
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn bundle(&self) -> PathBuf {
        self.path().join("bundle")
    }

    fn log_path(&self) -> PathBuf {
        self.path().join("hook.log")
    }

    fn state(&self) -> String {
        format!(
            r#"{{"ociVersion":"1.0.2","id":"c0ffee","status":"creating","pid":42,"bundle":"{}"}}"#,
            self.bundle().display()
        )
    }

    /// Runs the hook binary `bin` with the state on stdin.
    fn run_bin(&self, bin: &Path, args: &[&str], stdin: Input) -> Run {
        // Each run gets a fresh log, so that `Run::log` holds only its own lines.
        let _ = std::fs::remove_file(self.log_path());
        let mut cmd = Command::new(bin);
        cmd.arg("--log-fname").arg(self.log_path()).args(args);
        cmd.current_dir(self.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.env_remove("RUST_BACKTRACE");
        let start = Instant::now();
        let mut child = match &stdin {
            Input::Null => cmd.stdin(Stdio::null()).spawn().unwrap(),
            Input::Zero => cmd
                .stdin(std::fs::File::open("/dev/zero").unwrap())
                .spawn()
                .unwrap(),
            _ => cmd.stdin(Stdio::piped()).spawn().unwrap(),
        };
        let mut held = None;
        if let Some(mut w) = child.stdin.take() {
            let text = match &stdin {
                Input::State => self.state(),
                Input::Text(t) => t.clone(),
                Input::StateKeptOpen => self.state(),
                Input::OpenForever => String::new(),
                Input::Null | Input::Zero => unreachable!(),
            };
            // A hook that does not read stdin closes it: ignore EPIPE, as a runtime does.
            let _ = w.write_all(text.as_bytes());
            if matches!(stdin, Input::StateKeptOpen | Input::OpenForever) {
                held = Some(w);
            }
        }
        let out = child.wait_with_output().unwrap();
        drop(held);
        Run {
            code: out.status.code().expect("hook killed by a signal"),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
            log: read_log(&self.log_path()),
            elapsed: start.elapsed(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_bin(Path::new(HOOK), args, Input::State)
    }
}

enum Input {
    State,
    Text(String),
    Null,
    Zero,
    StateKeptOpen,
    OpenForever,
}

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    log: Vec<Value>,
    elapsed: Duration,
}

impl Run {
    fn line(&self, msg: &str) -> &Value {
        self.log
            .iter()
            .find(|l| l["msg"] == msg)
            .unwrap_or_else(|| panic!("no log line {msg:?} in {:#?}", self.log))
    }

    fn has(&self, msg: &str) -> bool {
        self.log.iter().any(|l| l["msg"] == msg)
    }
}

fn read_log(path: &Path) -> Vec<Value> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
        })
        .collect()
}

const ALLOWED: &str = "hook request to agent succeeded";
const FAILED: &str = "hook request to the agent failed";
const NOT_FAILING: &str =
    "failCheck determined that we should not fail this container, even if there was an error";
const FAILING: &str = "failing container";

fn no_agent(case: &Case) -> String {
    format!("unix://{}", case.path().join("missing.sock").display())
}

#[test]
fn agent_receives_every_field_from_a_containerd_spec() {
    let agent = Agent::start(Behavior::Accept);
    let case = Case::new(Some(CONTAINERD_SPEC));
    let run = case.run(&["--grpc-address", &agent.address(), "createRuntime"]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:#?}");
    let seen = agent.requests();
    assert_eq!(seen.len(), 1);
    let cc = &seen[0];
    assert_eq!(
        cc.cgroups_path,
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6b1f.slice/cri-containerd-c0ffee.scope"
    );
    assert_eq!(cc.root_dir, case.bundle().join("rootfs").to_str().unwrap());
    assert_eq!(cc.container_name, "app");
    assert_eq!(cc.container_id, "");
    assert_eq!(cc.container_image, "docker.io/library/nginx:1.27");
    assert_eq!(cc.pod_name, "web-0");
    assert_eq!(cc.pod_uid, "6b1f-uid");
    assert_eq!(cc.pod_namespace, "shop");
    assert_eq!(cc.annotations.len(), 7);
    assert_eq!(cc.annotations["kubernetes.io/config.hash"], "abc123");
    assert_eq!(cc.mounts.len(), 2);
    let m = &cc.mounts[1];
    assert_eq!(
        (m.destination.as_str(), m.r#type.as_str(), m.source.as_str()),
        ("/etc/hosts", "bind", "/var/lib/kubelet/pods/u1/etc-hosts")
    );
    assert_eq!(m.options, ["rbind", "rw"]);
    let line = run.line(ALLOWED);
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["req-cgroups"], cc.cgroups_path.as_str());
    assert_eq!(line["req-podNamespace"], "shop");
}

#[test]
fn agent_receives_every_field_from_a_crio_spec() {
    let agent = Agent::start(Behavior::Accept);
    let case = Case::new(Some(CRIO_SPEC));
    let run = case.run(&["--grpc-address", &agent.address(), "createRuntime"]);
    assert_eq!(run.code, 0, "{run:#?}");
    let cc = &agent.requests()[0];
    assert_eq!(
        cc.cgroups_path,
        "/kubepods/besteffort/podd4e7/crio-828977b42e31"
    );
    assert_eq!(cc.root_dir, "/var/lib/containers/storage/overlay/l1/merged");
    assert_eq!(cc.container_name, "sidecar");
    assert_eq!(cc.container_id, "828977b42e31");
    assert_eq!(cc.container_image, "quay.io/org/sidecar@sha256:0123");
    assert_eq!(cc.pod_name, "db-1");
    assert_eq!(cc.pod_uid, "d4e7-uid");
    assert_eq!(cc.pod_namespace, "data");
    assert_eq!(cc.annotations.len(), 6);
    assert_eq!(cc.mounts[0].destination, "/dev/shm");
}

#[test]
fn log_lines_have_the_upstream_keys_and_format() {
    let agent = Agent::start(Behavior::Accept);
    let case = Case::new(Some(CONTAINERD_SPEC));
    let run = case.run(&[
        "--grpc-address",
        &agent.address(),
        "--log-level=debug",
        "createRuntime",
    ]);
    let line = run.line(ALLOWED);
    let keys: Vec<&str> = line
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "time",
        "level",
        "msg",
        "hook",
        "start-time",
        "req-cgroups",
        "req-rootdir",
        "req-containerName",
        "req-containerID",
        "req-containerImage",
        "req-podName",
        "req-podUID",
        "req-podNamespace",
        "req-annotations",
    ] {
        assert!(keys.contains(&k), "missing `{k}` in {line}");
    }
    assert_eq!(line["hook"], "createRuntime");
    assert_eq!(
        line["req-annotations"]["kubernetes.io/config.hash"],
        "abc123"
    );
    let time_re = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$").unwrap();
    for k in ["time", "start-time"] {
        assert!(time_re.is_match(line[k].as_str().unwrap()), "{k}: {line}");
    }
    // The raw line starts with time, level, msg, in that order.
    let raw = std::fs::read_to_string(case.log_path()).unwrap();
    assert!(raw.lines().all(|l| l.starts_with("{\"time\":\"")), "{raw}");
    assert!(
        raw.contains("\",\"level\":\"INFO\",\"msg\":\"hook request to agent succeeded\",\"hook\":")
    );
    // Without debug, no annotations.
    let case = Case::new(Some(CONTAINERD_SPEC));
    let run = case.run(&["--grpc-address", &agent.address(), "createRuntime"]);
    assert!(run.line(ALLOWED).get("req-annotations").is_none());
}

/// The fail policy, with no agent listening.
#[test]
fn fail_policy_table_with_agent_down() {
    struct Row {
        ns: Option<&'static str>,
        args: &'static [&'static str],
        code: i32,
    }
    let rows = [
        // The default allow list is kube-system.
        Row {
            ns: Some("kube-system"),
            args: &[],
            code: 0,
        },
        Row {
            ns: Some("default"),
            args: &[],
            code: 1,
        },
        Row {
            ns: None,
            args: &[],
            code: 1,
        },
        // The chart's two-item form, and the `=` form; an explicit list replaces the default.
        Row {
            ns: Some("ns1"),
            args: &["--fail-allow-namespaces", "kube-system,ns1"],
            code: 0,
        },
        Row {
            ns: Some("kube-system"),
            args: &["--fail-allow-namespaces=ns1"],
            code: 1,
        },
        Row {
            ns: Some("ns2"),
            args: &[
                "--fail-allow-namespaces=ns1",
                "--fail-allow-namespaces",
                "ns2",
            ],
            code: 0,
        },
        // Regexes: substring unless anchored, never split on commas.
        Row {
            ns: Some("team-ab"),
            args: &["--fail-allow-namespaces-regex", "^team-[a-z]{1,3}$"],
            code: 0,
        },
        Row {
            ns: Some("team-abcd"),
            args: &["--fail-allow-namespaces-regex", "^team-[a-z]{1,3}$"],
            code: 1,
        },
        Row {
            ns: Some("my-infra"),
            args: &["--fail-allow-namespaces-regex=infra"],
            code: 0,
        },
        // CEL decides alone (true = fail).
        Row {
            ns: Some("ns1"),
            args: &[
                "--fail-cel-expr",
                r#"annotations["io.kubernetes.pod.namespace"] != "ns1""#,
            ],
            code: 0,
        },
        Row {
            ns: Some("kube-system"),
            args: &[
                "--fail-cel-expr",
                r#"annotations["io.kubernetes.pod.namespace"] != "ns1""#,
            ],
            code: 1,
        },
        Row {
            ns: Some("anything"),
            args: &["--fail-cel-expr", "false"],
            code: 0,
        },
        // The namespace key list can be replaced.
        Row {
            ns: Some("kube-system"),
            args: &["--annotations-namespace-key", "other.key"],
            code: 1,
        },
    ];
    for (i, row) in rows.iter().enumerate() {
        let case = Case::with_namespace(row.ns);
        let addr = no_agent(&case);
        let mut args = vec!["--grpc-address", addr.as_str()];
        args.extend_from_slice(row.args);
        args.push("createRuntime");
        let run = case.run(&args);
        assert_eq!(run.code, row.code, "row {i}: {args:?}\n{run:#?}");
        assert!(run.has(FAILED), "row {i}: {run:#?}");
        let err = run.line(FAILED)["err"].as_str().unwrap();
        assert!(err.contains("No such file or directory"), "row {i}: {err}");
        if row.code == 0 {
            assert!(run.has(NOT_FAILING), "row {i}: {run:#?}");
            assert_eq!(run.stderr, "", "row {i}");
        } else {
            let line = run.line(FAILING);
            assert_eq!(line["level"], "ERROR");
            assert_eq!(line["should-fail"], true);
            assert!(
                line["error"]
                    .as_str()
                    .unwrap()
                    .contains("failed to connect")
            );
            assert!(
                run.stderr
                    .starts_with("failing container: failed to connect to `unix://")
                    && run.stderr.trim_end().ends_with(&format!(
                        ". Check logs ({}) for additional info",
                        case.log_path().display()
                    )),
                "row {i}: {}",
                run.stderr
            );
        }
    }
}

#[test]
fn missing_socket_fails_fast_despite_a_long_timeout() {
    let case = Case::with_namespace(Some("kube-system"));
    let addr = no_agent(&case);
    let run = case.run(&[
        "--grpc-address",
        &addr,
        "--grpc-timeout",
        "60s",
        "createRuntime",
    ]);
    assert_eq!(run.code, 0);
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

#[test]
fn refusing_socket_is_a_failed_call() {
    let case = Case::with_namespace(Some("default"));
    let sock = case.path().join("dead.sock");
    // A socket file nobody listens on: connect is refused.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let run = case.run(&[
        "--grpc-address",
        &format!("unix:{}", sock.display()),
        "createRuntime",
    ]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.line(FAILED)["err"]
            .as_str()
            .unwrap()
            .contains("Connection refused")
    );
}

#[test]
fn hanging_agent_is_cut_off_at_the_timeout() {
    let agent = Agent::start(Behavior::Hang);
    for (ns, code) in [("default", 1), ("kube-system", 0)] {
        let case = Case::with_namespace(Some(ns));
        let run = case.run(&[
            "--grpc-address",
            &agent.address(),
            "--grpc-timeout=300ms",
            "createRuntime",
        ]);
        assert_eq!(run.code, code, "{run:#?}");
        assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
        let err = run.line(FAILED)["err"].as_str().unwrap();
        assert!(err.contains("did not answer within 300ms"), "{err}");
    }
    assert_eq!(agent.requests().len(), 2);
}

#[test]
fn agent_error_status_is_a_failure() {
    let agent = Agent::start(Behavior::Fail(
        tonic::Code::PermissionDenied,
        "not today".into(),
    ));
    let case = Case::with_namespace(Some("default"));
    let run = case.run(&["--grpc-address", &agent.address(), "createRuntime"]);
    assert_eq!(run.code, 1, "{run:#?}");
    let err = run.line(FAILED)["err"].as_str().unwrap();
    assert!(
        err.contains("PermissionDenied") && err.contains("not today"),
        "{err}"
    );
    assert!(run.stderr.contains("not today"), "{}", run.stderr);
}

#[test]
fn disable_grpc_contacts_nobody() {
    let agent = Agent::start(Behavior::Accept);
    let case = Case::with_namespace(Some("default"));
    let run = case.run(&[
        "--grpc-address",
        &agent.address(),
        "--disable-grpc",
        "createRuntime",
    ]);
    assert_eq!(run.code, 0);
    assert!(
        run.has("gRPC was disabled, so will not be contacting the agent"),
        "{run:#?}"
    );
    assert!(agent.requests().is_empty());
}

#[test]
fn other_hooks_do_nothing() {
    let case = Case::new(Some(CRIO_SPEC));
    for hook in ["createContainer", "poststop"] {
        let run = case.run(&[hook]);
        assert_eq!(run.code, 0);
        assert!(
            run.log
                .iter()
                .any(|l| l["msg"] == "nothing to do" && l["hook"] == hook),
            "{run:#?}"
        );
    }
    let run = case.run(&["prestart"]);
    assert_eq!(run.code, 0);
    assert!(
        run.log
            .iter()
            .any(|l| l["level"] == "WARN" && l["hook"] == "prestart"),
        "{run:#?}"
    );
    let run = case.run(&[]);
    assert_eq!(run.code, 0);
    assert!(run.has("hook called without event, bailing out"));
}

#[test]
fn server_version_asks_the_agent() {
    let agent = Agent::start(Behavior::Accept);
    let case = Case::new(None);
    let run = case.run(&["--grpc-address", &agent.address(), "server-version"]);
    assert_eq!(
        (run.code, run.stdout.trim()),
        (0, support_agent::VERSION),
        "{run:#?}"
    );
    assert_eq!(
        run.line("server version")["version"],
        support_agent::VERSION
    );
    let run = case.run(&["--grpc-address", &no_agent(&case), "server-version"]);
    assert_eq!(run.code, 1);
}

// ---- bad input: a clear log line, a defined exit status, no panic, no hang ----

fn assert_clean(run: &Run) {
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.code == 0 || run.code == 1, "{run:#?}");
    assert!(run.elapsed < Duration::from_secs(15), "{:?}", run.elapsed);
}

#[test]
fn bad_stdin_never_hangs() {
    let case = Case::new(Some(CRIO_SPEC));
    let addr = no_agent(&case);
    let args = ["--grpc-address", addr.as_str(), "createRuntime"];
    // Empty and invalid state: no bundle, and no config.json in the working dir.
    for input in [
        Input::Null,
        Input::Text(String::new()),
        Input::Text("{\"bundle\":".into()),
    ] {
        let run = case.run_bin(Path::new(HOOK), &args, input);
        assert_clean(&run);
        assert_eq!(run.code, 1);
        let err = run.line(FAILED)["err"].as_str().unwrap();
        assert!(err.contains("failed to find the spec file"), "{err}");
    }
    let run = case.run_bin(Path::new(HOOK), &args, Input::Text("not json".into()));
    assert_clean(&run);
    assert!(
        run.has("failed to read the OCI state from stdin"),
        "{run:#?}"
    );
    // Endless stdin.
    let run = case.run_bin(Path::new(HOOK), &args, Input::Zero);
    assert_clean(&run);
    assert!(
        run.line("failed to read the OCI state from stdin")["err"]
            .as_str()
            .unwrap()
            .contains("bytes on stdin")
    );
    // A stdin that never closes, after a whole state: the state is used at once.
    let run = case.run_bin(Path::new(HOOK), &args, Input::StateKeptOpen);
    assert_clean(&run);
    assert_eq!(run.line(FAILED)["req-podNamespace"], "data");
    assert!(run.elapsed < Duration::from_secs(2), "{:?}", run.elapsed);
    // A stdin that never closes and never speaks: given up after the deadline.
    let run = case.run_bin(Path::new(HOOK), &args, Input::OpenForever);
    assert_clean(&run);
    assert!(
        run.line("failed to read the OCI state from stdin")["err"]
            .as_str()
            .unwrap()
            .contains("did not close")
    );
}

#[test]
fn config_json_found_from_the_working_dir_without_state() {
    let agent = Agent::start(Behavior::Accept);
    let case = Case::new(Some(CRIO_SPEC));
    let mut cmd_case_dir = case.bundle();
    cmd_case_dir.push("sub");
    std::fs::create_dir(&cmd_case_dir).unwrap();
    let out = Command::new(HOOK)
        .args([
            "--log-fname",
            case.log_path().to_str().unwrap(),
            "--grpc-address",
            &agent.address(),
            "createRuntime",
        ])
        .current_dir(&cmd_case_dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(agent.requests()[0].pod_name, "db-1");
}

#[test]
fn missing_or_invalid_config_json() {
    let case = Case::new(None);
    let addr = no_agent(&case);
    let run = case.run(&["--grpc-address", &addr, "createRuntime"]);
    assert_clean(&run);
    assert_eq!(run.code, 1);
    assert!(
        run.line(FAILED)["err"]
            .as_str()
            .unwrap()
            .contains("failed to find the spec file")
    );

    let case = Case::new(Some("{\"annotations\": [1, 2"));
    let run = case.run(&["--grpc-address", &addr, "createRuntime"]);
    assert_clean(&run);
    assert_eq!(run.code, 1);
    let err = run.line(FAILED)["err"].as_str().unwrap();
    assert!(
        err.contains("failed to parse") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn bad_cel_is_logged_and_namespace_rules_apply() {
    let case = Case::with_namespace(Some("kube-system"));
    let run = case.run(&[
        "--grpc-address",
        &no_agent(&case),
        "--fail-cel-expr",
        "annotations[",
        "createRuntime",
    ]);
    assert_clean(&run);
    assert_eq!(run.code, 0);
    let line = run.line("failCheck failed");
    assert_eq!(line["level"], "ERROR");
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("failed to compile"),
        "{line}"
    );
}

#[test]
fn bad_flags_are_logged_and_defaults_kept() {
    let case = Case::with_namespace(Some("kube-system"));
    let addr = no_agent(&case);
    let run = case.run(&[
        "--grpc-address",
        &addr,
        "--fail-allow-namespaces-regex",
        "(",
        "--grpc-timeout",
        "ten",
        "--no-such-flag",
        "createRuntime",
    ]);
    assert_clean(&run);
    assert_eq!(run.code, 0, "{run:#?}");
    let errors: Vec<&str> = run
        .log
        .iter()
        .filter(|l| l["msg"] == "invalid hook arguments, using defaults for them")
        .map(|l| l["error"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].contains("unknown flag `--no-such-flag`"),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("--fail-allow-namespaces-regex"))
    );
    assert!(errors.iter().any(|e| e.contains("--grpc-timeout")));
}

#[test]
fn bad_address_is_a_failed_call() {
    for (ns, code) in [("default", 1), ("kube-system", 0)] {
        let case = Case::with_namespace(Some(ns));
        let run = case.run(&["--grpc-address", "dns:///tetragon", "createRuntime"]);
        assert_clean(&run);
        assert_eq!(run.code, code);
        assert!(run.has("invalid hook arguments, using defaults for them"));
        assert!(
            run.line(FAILED)["err"]
                .as_str()
                .unwrap()
                .contains("invalid agent address")
        );
    }
}

#[test]
fn unwritable_log_goes_to_stderr() {
    let case = Case::with_namespace(Some("kube-system"));
    let out = Command::new(HOOK)
        .args([
            "--log-fname",
            "/proc/no/such/dir/hook.log",
            "--grpc-address",
            &no_agent(&case),
            "createRuntime",
        ])
        .stdin(Stdio::null())
        .current_dir(case.bundle())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(NOT_FAILING), "{stderr}");
}

// ---- defaults file beside the binary ----

/// A copy of the hook binary in the case's directory, so a defaults file can sit beside it.
fn private_binary(case: &Case) -> PathBuf {
    let bin = case.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let dst = bin.join("tetragon-oci-hook");
    if std::fs::hard_link(HOOK, &dst).is_err() {
        std::fs::copy(HOOK, &dst).unwrap();
    }
    dst
}

#[test]
fn defaults_file_is_used_and_flags_win() {
    let case = Case::with_namespace(Some("ns1"));
    let bin = private_binary(&case);
    let addr = no_agent(&case);
    std::fs::write(
        bin.with_file_name("tetragon-oci-hook.json"),
        format!(r#"{{"grpc_address": "{addr}", "fail-allow-namespaces": ["ns1", "ns2"], "log-level": "debug"}}"#),
    )
    .unwrap();
    let run = case.run_bin(&bin, &["createRuntime"], Input::State);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.line(FAILED).get("req-annotations").is_some(),
        "debug from the file"
    );

    let run = case.run_bin(
        &bin,
        &["--fail-allow-namespaces", "other", "createRuntime"],
        Input::State,
    );
    assert_eq!(run.code, 1, "the flag replaces the file's list");

    let out = Command::new(&bin)
        .arg("--just-print-config")
        .output()
        .unwrap();
    let cfg: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["grpc-address"], addr.as_str());
    assert_eq!(
        cfg["fail-allow-namespaces"],
        serde_json::json!(["ns1", "ns2"])
    );
    assert_eq!(
        cfg["log-fname"],
        bin.with_file_name("tetragon-oci-hook.log")
            .to_str()
            .unwrap()
    );
}

#[test]
fn malformed_defaults_file_is_ignored() {
    for text in [
        "{\"log-level\": ",
        "[1]",
        r#"{"grpc-timeout": "soon", "bogus": 1}"#,
    ] {
        let case = Case::with_namespace(Some("kube-system"));
        let bin = private_binary(&case);
        std::fs::write(bin.with_file_name("tetragon-oci-hook.json"), text).unwrap();
        let run = case.run_bin(
            &bin,
            &["--grpc-address", &no_agent(&case), "createRuntime"],
            Input::State,
        );
        assert_clean(&run);
        assert_eq!(run.code, 0, "{text}: {run:#?}");
        let line = run.line("ignoring part of the defaults file");
        assert_eq!(line["level"], "WARN");
        assert!(
            line["error"]
                .as_str()
                .unwrap()
                .contains("tetragon-oci-hook.json"),
            "{line}"
        );
    }
}

/// Program header types and dynamic tags of an ELF64 little-endian file that show dynamic
/// linking: `PT_INTERP` (a loader is needed) and `DT_NEEDED` entries (shared libraries).
fn elf_dynamic_deps(bytes: &[u8]) -> (bool, usize) {
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&bytes[..4], b"\x7fELF");
    assert_eq!((bytes[4], bytes[5]), (2, 1), "ELF64 little-endian expected");
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let (mut interp, mut needed) = (false, 0);
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(ph) {
            3 => interp = true,
            2 => {
                let (off, size) = (u64_at(ph + 8), u64_at(ph + 32));
                needed += (off..off + size)
                    .step_by(16)
                    .filter(|&d| u64_at(d) == 1)
                    .count();
            }
            _ => {}
        }
    }
    (interp, needed)
}

#[test]
fn binary_is_statically_linked() {
    // The hook is copied onto hosts whose libc we do not know: no loader, no shared libraries.
    // Debug and release builds share the `crt-static` setting in `.cargo/config.toml`.
    let bytes = std::fs::read(HOOK).unwrap();
    assert_eq!(
        elf_dynamic_deps(&bytes),
        (false, 0),
        "`{HOOK}` is dynamically linked"
    );
    // The same check on a known dynamic binary, so the check itself can fail.
    let sh = std::fs::read("/bin/sh").unwrap();
    assert!(elf_dynamic_deps(&sh).1 > 0);
    if let Ok(out) = Command::new("ldd").arg(HOOK).output() {
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains("libc.so"), "{text}");
    }
}

#[test]
fn symlinked_binary_uses_the_real_directory() {
    let case = Case::with_namespace(Some("ns1"));
    let bin = private_binary(&case);
    std::fs::write(
        bin.with_file_name("tetragon-oci-hook.json"),
        r#"{"fail-allow-namespaces": "ns1"}"#,
    )
    .unwrap();
    let link_dir = case.path().join("link");
    std::fs::create_dir(&link_dir).unwrap();
    let link = link_dir.join("tetragon-oci-hook");
    std::os::unix::fs::symlink(&bin, &link).unwrap();
    let out = Command::new(&link)
        .arg("--just-print-config")
        .output()
        .unwrap();
    let cfg: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        cfg["log-fname"],
        bin.with_file_name("tetragon-oci-hook.log")
            .to_str()
            .unwrap()
    );
    assert_eq!(cfg["fail-allow-namespaces"], serde_json::json!(["ns1"]));
}

#[test]
fn concurrent_hooks_append_whole_lines() {
    let case = Case::new(Some(CRIO_SPEC));
    let children: Vec<_> = (0..16)
        .map(|_| {
            Command::new(HOOK)
                .args([
                    "--log-fname",
                    case.log_path().to_str().unwrap(),
                    "--disable-grpc",
                    "createRuntime",
                ])
                .current_dir(case.bundle())
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let log = read_log(&case.log_path());
    assert_eq!(log.len(), 16);
    assert!(
        log.iter()
            .all(|l| l["msg"] == "gRPC was disabled, so will not be contacting the agent")
    );
}

#[test]
fn tcp_address_reaches_the_agent() {
    let agent = Agent::start_tcp(Behavior::Accept);
    let case = Case::new(Some(CRIO_SPEC));
    let run = case.run(&["--grpc-address", &agent.address(), "createRuntime"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(agent.requests()[0].pod_name, "db-1");
    let port = agent.address().rsplit_once(':').unwrap().1.to_owned();
    let run = case.run(&[
        "--grpc-address",
        &format!("localhost:{port}"),
        "createRuntime",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(agent.requests().len(), 2);
}

#[test]
fn terminal_stdin_is_not_read() {
    // `script` (util-linux) gives the hook a pseudo-terminal as stdin that never closes.
    if Command::new("script").arg("--version").output().is_err() {
        let required = std::env::var_os("E2E_REQUIRED").is_some_and(|v| v == "1");
        assert!(
            !required,
            "E2E_REQUIRED=1 but `script` (util-linux) not found"
        );
        println!("skipped: `script` (util-linux) not found");
        return;
    }
    let case = Case::new(Some(CRIO_SPEC));
    let cmd = format!(
        "{HOOK} --log-fname {} --disable-grpc createRuntime",
        case.log_path().display()
    );
    let status = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(case.bundle())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let log = read_log(&case.log_path());
    // No stdin problem logged: the terminal was skipped, and `config.json` found in the cwd.
    assert_eq!(log.len(), 1, "{log:#?}");
    assert_eq!(log[0]["req-podName"], "db-1");
}

#[test]
fn help_version_and_print_config() {
    let out = Command::new(HOOK).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.starts_with("Usage: tetragon-oci-hook [FLAGS] HOOK"),
        "{help}"
    );
    for flag in [
        "--log-fname",
        "--log-level",
        "--grpc-address",
        "--grpc-timeout",
        "--disable-grpc",
        "--just-print-config",
        "--annotations-namespace-key",
        "--fail-cel-expr",
        "--fail-allow-namespaces",
        "--fail-allow-namespaces-regex",
    ] {
        assert!(
            help.contains(&format!("  {flag} ")),
            "{flag} missing from --help"
        );
    }
    let out = Command::new(HOOK).arg("--version").output().unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("tetragon-oci-hook 0.")
    );
    // Problems are shown on stderr when printing the configuration.
    let out = Command::new(HOOK)
        .args(["--just-print-config", "--grpc-timeout=soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let cfg: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["grpc-timeout"], "10s");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("warning: command line: invalid `--grpc-timeout`"),
        "{stderr}"
    );
}

#[test]
fn concurrent_hooks_rotate_once_at_the_size_limit() {
    let case = Case::new(Some(CRIO_SPEC));
    // A sparse log at the 50 MiB limit: the first line written rotates it.
    let f = std::fs::File::create(case.log_path()).unwrap();
    f.set_len(50 * 1024 * 1024).unwrap();
    drop(f);
    let children: Vec<_> = (0..16)
        .map(|_| {
            Command::new(HOOK)
                .args([
                    "--log-fname",
                    case.log_path().to_str().unwrap(),
                    "--disable-grpc",
                    "createRuntime",
                ])
                .current_dir(case.bundle())
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(
        read_log(&case.log_path()).len(),
        16,
        "every line in the fresh log"
    );
    let backups: Vec<_> = std::fs::read_dir(case.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("hook-") && n.ends_with(".log"))
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let size = std::fs::metadata(case.path().join(&backups[0]))
        .unwrap()
        .len();
    assert_eq!(
        size,
        50 * 1024 * 1024,
        "the backup is the old log, untouched"
    );
}

/// The hidden `check-cel` command the setup tool uses to validate `--fail-cel-expr` with the
/// hook it installs: exit 0 for an expression that compiles, 2 with the reason for one that does
/// not; it writes no log and reads no stdin.
#[test]
fn check_cel_command_compiles_the_expression_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.log");
    let run = |expr: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tetragon-oci-hook"))
            .arg("--log-fname")
            .arg(&log)
            .args(["--fail-cel-expr", expr, "check-cel"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let ok = run("annotations[\"io.kubernetes.pod.namespace\"] == \"ns1\"");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = run("annotations[");
    assert_eq!(bad.status.code(), Some(2));
    assert!(!bad.stderr.is_empty());
    assert!(!log.exists(), "check-cel must not write the hook log");
}
