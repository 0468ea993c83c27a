//! The `tetragon-oci-hook` binary run as a runtime runs it: OCI state on stdin, a bundle with
//! `config.json`, a stand-in agent on a unix socket (or none), and its JSON log read back.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The workspace's one skip policy: the root package's `tests/support/skip.rs`.
#[path = "../../tests/support/skip.rs"]
#[allow(dead_code, unused_macros, unreachable_pub, clippy::print_stderr)]
mod skip;
mod support {
    //! Where the skip policy's macros look for it.
    pub(crate) use super::skip;
}

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use test_agent::{Agent, Behavior};

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
    "io.kubernetes.cri.image-name": "localhost/library/nginx:1.27",
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
    "io.kubernetes.cri-o.ImageName": "localhost/org/sidecar@sha256:0123",
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
    assert_eq!(cc.container_image, "localhost/library/nginx:1.27");
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
    assert_eq!(cc.container_image, "localhost/org/sidecar@sha256:0123");
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

/// The short usage every explanation ends with.
const SHORT_USAGE: &str = "Usage: tetragon-oci-hook [FLAGS] HOOK\n\nThe container runtime runs";

#[test]
fn a_runtime_without_a_hook_name_or_with_an_unknown_one_gets_the_usage_and_exit_0() {
    let case = Case::new(Some(CRIO_SPEC));
    let run = case.run(&[]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stderr.starts_with(
            "warning: no hook name given\n\
             help: give the hook name the runtime runs it with, e.g. `createRuntime`\n\n"
        ) && run.stderr.contains(SHORT_USAGE),
        "{}",
        run.stderr
    );
    // The log says it too, with the same fix.
    let line = run.line("hook called without event, bailing out");
    assert_eq!(line["level"], "WARN");
    assert!(line["help"].as_str().unwrap().contains("createRuntime"));

    let run = case.run(&["createRuntme"]);
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(
        run.stderr.starts_with(
            "warning: unknown hook `createRuntme`: nothing to do\n\
             help: did you mean `createRuntime`?\n\n"
        ) && run.stderr.contains(SHORT_USAGE),
        "{}",
        run.stderr
    );
    let line = run.line("unknown hook, nothing to do");
    assert_eq!(line["hook"], "createRuntme");
    assert_eq!(line["help"], "did you mean `createRuntime`?");
    let run = case.run(&["prestart"]);
    assert_eq!(run.line("unknown hook, nothing to do")["help"], {
        "the hooks are `createRuntime`, `createContainer`, `poststop`, `server-version`"
    });
}

/// Runs the hook with a pseudo-terminal as stdin (and stdout and stderr), as a person at a
/// shell does: `script` (util-linux). Returns the exit code and what the terminal showed.
fn on_terminal(case: &Case, args: &str) -> Option<(i32, String)> {
    if !support::skip::has_program("script") {
        skip!("`script` (util-linux) not found", None);
    }
    let cmd = format!("{HOOK} --log-fname {} {args}", case.log_path().display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .current_dir(case.bundle())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8(out.stdout).unwrap().replace("\r\n", "\n");
    Some((out.status.code().unwrap(), shown))
}

#[test]
fn a_person_without_a_hook_name_gets_the_usage_and_exit_2() {
    let case = Case::new(Some(CRIO_SPEC));
    let Some((code, shown)) = on_terminal(&case, "") else {
        return;
    };
    assert_eq!(code, 2, "{shown}");
    assert!(
        shown.starts_with("error: no hook name given\nhelp: ") && shown.contains(SHORT_USAGE),
        "{shown}"
    );
    // An unknown hook is explained the same way, and still exits 0 (as upstream).
    let (code, shown) = on_terminal(&case, "poststart").unwrap();
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.starts_with("warning: unknown hook `poststart`: nothing to do\nhelp: the hooks are")
            && shown.contains(SHORT_USAGE),
        "{shown}"
    );
}

#[test]
fn a_flag_typo_by_a_person_is_an_error_naming_the_nearest_flag() {
    let case = Case::new(Some(CRIO_SPEC));
    let Some((code, shown)) = on_terminal(&case, "--grpc-timout 1s --disable-grpc createRuntime")
    else {
        return;
    };
    assert_eq!(code, 2, "{shown}");
    assert_eq!(
        shown,
        "error: unknown flag `--grpc-timout`\n\
         help: did you mean `--grpc-timeout`?\n\n\
         See `tetragon-oci-hook --help` for the flags.\n"
    );
    // Refused before anything ran: nothing logged.
    assert!(!case.log_path().exists());
}

#[test]
fn a_person_running_create_runtime_is_told_that_stdin_was_not_read() {
    let case = Case::new(Some(CRIO_SPEC));
    let Some((code, shown)) = on_terminal(&case, "--disable-grpc createRuntime") else {
        return;
    };
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.starts_with("note: stdin is a terminal, so no OCI state was read"),
        "{shown}"
    );
    // Without a config.json there either, the failure says both.
    let empty = Case::new(None);
    let addr = no_agent(&empty);
    let (code, shown) =
        on_terminal(&empty, &format!("--grpc-address {addr} createRuntime")).unwrap();
    assert_eq!(code, 1, "{shown}");
    assert!(
        shown.contains(
            "failing container: stdin is a terminal, so no OCI state was read, and failed to \
             find the spec file"
        ),
        "{shown}"
    );
}

#[test]
fn empty_stdin_says_no_oci_state_on_stdin() {
    let case = Case::new(None);
    let addr = no_agent(&case);
    let run = case.run_bin(
        Path::new(HOOK),
        &["--grpc-address", &addr, "createRuntime"],
        Input::Text(String::new()),
    );
    assert_clean(&run);
    assert_eq!(run.code, 1);
    let err = run.line(FAILED)["err"].as_str().unwrap();
    assert!(
        err.starts_with("no OCI state on stdin, and failed to find the spec file (`config.json`)"),
        "{err}"
    );
    assert!(
        run.stderr
            .starts_with("failing container: no OCI state on stdin, and failed to find"),
        "{}",
        run.stderr
    );
}

#[test]
fn server_version_asks_the_agent() {
    let agent = Agent::start(Behavior::Accept);
    let case = Case::new(None);
    let run = case.run(&["--grpc-address", &agent.address(), "server-version"]);
    assert_eq!(
        (run.code, run.stdout.trim()),
        (0, test_agent::VERSION),
        "{run:#?}"
    );
    assert_eq!(run.line("server version")["version"], test_agent::VERSION);
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
    // Also on stderr (a runtime shows it when the container fails), each with its fix.
    assert!(
        run.stderr
            .starts_with("warning: unknown flag `--no-such-flag`\nhelp: known flags are"),
        "{}",
        run.stderr
    );
    let run = case.run(&[
        "createRuntime",
        "--grpc-address",
        &addr,
        "--grpc-timout",
        "1s",
    ]);
    assert_eq!(run.code, 0, "{run:#?}");
    let line = run.line("invalid hook arguments, using defaults for them");
    assert_eq!(
        line["error"],
        "command line: unknown flag `--grpc-timout`; help: did you mean `--grpc-timeout`?"
    );
    assert!(run.has(
        "failCheck determined that we should not fail this container, even if there was an error"
    ));
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
    if !support::skip::has_program("script") {
        skip!("`script` (util-linux) not found");
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
/// hook it installs: exit 0 and the "valid" answer line for an expression that compiles, 2, the
/// "invalid" line and the reason for one that does not; it writes no log and reads no stdin.
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
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        format!("{}\n", oci_hook::CHECK_CEL_VALID)
    );
    let bad = run("annotations[");
    assert_eq!(bad.status.code(), Some(2));
    assert!(!bad.stderr.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&bad.stdout),
        format!("{}\n", oci_hook::CHECK_CEL_INVALID)
    );
    assert!(!log.exists(), "check-cel must not write the hook log");
}

/// `check-cel` also compiles each `--fail-allow-namespaces-regex` as the fail check does (the
/// setup tool links no regex engine and relies on this): an invalid one exits 2 with one line
/// naming it, before any CEL reason; valid regexes (a `\p{..}` class, a value starting with `-`)
/// pass.
#[test]
fn check_cel_command_rejects_an_invalid_namespace_regex_by_name() {
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tetragon-oci-hook"))
            .args(["--log-fname", "/dev/null"])
            .args(args)
            .arg("check-cel")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let ok = run(&[
        "--fail-allow-namespaces-regex=^\\p{Greek}+$",
        "--fail-allow-namespaces-regex=-ns",
    ]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        format!("{}\n", oci_hook::CHECK_CEL_VALID)
    );
    let bad = run(&[
        "--fail-allow-namespaces-regex=ok",
        "--fail-allow-namespaces-regex=(unclosed",
        "--fail-cel-expr",
        "annotations[",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&bad.stdout),
        format!("{}\n", oci_hook::CHECK_CEL_INVALID)
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr
            .starts_with("invalid `--fail-allow-namespaces-regex` `(unclosed`: regex parse error"),
        "{stderr}"
    );
}

// ---- hardening: every run ends within `--grpc-timeout` + 1 s, whatever it is given ----

/// A hook run watched from outside: killed once `limit` has passed (so that a hang fails the
/// test instead of stalling it), with its exit code, wall time and peak RSS (its own and that of
/// its children, from `wait4`).
#[derive(Debug)]
struct Watched {
    /// `None` when killed by a signal.
    code: Option<i32>,
    elapsed: Duration,
    max_rss_kib: i64,
    stderr: String,
}

/// What the watched hook gets on stdin.
enum Feed {
    /// This text, then end of file.
    Text(String),
    /// Nothing, and the pipe stays open until the hook ends.
    OpenForever,
}

fn run_watched(mut cmd: Command, feed: Feed, limit: Duration) -> Watched {
    use std::io::Read;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE");
    let start = Instant::now();
    // Reaped with `wait4` below, for its rusage.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut stdin = child.stdin.take().unwrap();
    let held = match feed {
        Feed::Text(text) => {
            std::thread::spawn(move || {
                let _ = stdin.write_all(text.as_bytes());
            });
            None
        }
        Feed::OpenForever => Some(stdin),
    };
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    // Read (and dropped) so that the hook never blocks on a full pipe.
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let mut killed = false;
    let (status, ru, elapsed) = loop {
        let mut status = 0;
        // SAFETY: `rusage` is plain data; all zeroes is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `pid` is our child, not reaped yet (the `Child` is never waited on), and both
        // pointers are valid for the call.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break (status, ru, start.elapsed());
        }
        assert_eq!(r, 0, "wait4 failed");
        if !killed && start.elapsed() > limit {
            let _ = child.kill();
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    drop(held);
    let _ = out.join();
    Watched {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        elapsed,
        max_rss_kib: ru.ru_maxrss,
        stderr: err.join().unwrap(),
    }
}

impl Case {
    /// The hook with the case's log and working dir, and `args`.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(HOOK);
        cmd.arg("--log-fname")
            .arg(self.log_path())
            .args(args)
            .current_dir(self.path());
        cmd
    }

    fn watched(&self, args: &[&str]) -> Watched {
        run_watched(
            self.command(args),
            Feed::Text(self.state()),
            Duration::from_secs(20),
        )
    }
}

const LOCK_BUSY: &str =
    "the log file is locked by another process; writing without the lock and without rotating";

/// The issue's attack: any user who can open the log (0644 in older installs) takes its lock and
/// holds it; the hook must neither wait for it nor lose its line.
#[test]
fn hook_ends_within_timeout_when_log_lock_is_held() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let case = Case::with_namespace(Some("kube-system"));
    // A log as an older hook left it (0644), in a directory the user can reach.
    std::fs::set_permissions(case.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(case.log_path(), "").unwrap();
    std::fs::set_permissions(case.log_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut holder = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "flock",
            "-x",
        ])
        .arg(case.log_path())
        .args(["sleep", "25"])
        .process_group(0)
        .spawn()
        .unwrap();
    let holder_pgid = rustix::process::Pid::from_raw(holder.id() as i32).unwrap();
    // Wait until the lock is really held by the user.
    let probe = std::fs::File::open(case.log_path()).unwrap();
    let t0 = Instant::now();
    while rustix::fs::flock(&probe, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
        rustix::fs::flock(&probe, rustix::fs::FlockOperation::Unlock).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10), "flock never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let agent = Agent::start(Behavior::Hang);
    let address = agent.address();
    let runs = [
        (
            vec!["--grpc-timeout", "1s", "--disable-grpc"],
            "gRPC was disabled, so will not be contacting the agent",
        ),
        (
            vec!["--grpc-timeout", "1s", "--grpc-address", &address],
            NOT_FAILING,
        ),
    ];
    let mut results = Vec::new();
    for (args, msg) in runs {
        let mut args = args.clone();
        args.push("createRuntime");
        let run = case.watched(&args);
        let log = read_log(&case.log_path());
        results.push((run, log, msg));
    }
    let _ = rustix::process::kill_process_group(holder_pgid, rustix::process::Signal::KILL);
    let _ = holder.wait();
    let mut busy_notes = 0;
    for (run, log, msg) in &results {
        assert_eq!(run.code, Some(0), "{run:#?}");
        assert!(run.elapsed < Duration::from_secs(2), "{:?}", run.elapsed);
        assert!(
            log.iter().any(|l| l["msg"] == *msg),
            "{msg:?} not in {log:#?}"
        );
        busy_notes = log.iter().filter(|l| l["msg"] == LOCK_BUSY).count();
    }
    // Noted once per run: two runs, two notes in the shared log.
    assert_eq!(busy_notes, 2, "{:#?}", results[1].1);
}

#[test]
fn new_log_file_is_created_0600() {
    use std::os::unix::fs::PermissionsExt;
    let case = Case::with_namespace(Some("kube-system"));
    let run = case.run(&["--disable-grpc", "createRuntime"]);
    assert_eq!(run.code, 0);
    let mode = std::fs::metadata(case.log_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
}

/// A symlink at the log path is not followed (its target keeps its content); a FIFO there
/// does not block the hook. The line goes to stderr instead.
#[test]
fn log_path_symlink_is_not_followed_and_fifo_does_not_hang() {
    let case = Case::with_namespace(Some("kube-system"));
    let victim = case.path().join("victim");
    std::fs::write(&victim, "keep\n").unwrap();
    std::os::unix::fs::symlink(&victim, case.log_path()).unwrap();
    let run = case.watched(&["--disable-grpc", "createRuntime"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    assert!(run.stderr.contains("gRPC was disabled"), "{run:#?}");

    std::fs::remove_file(case.log_path()).unwrap();
    let st = Command::new("mkfifo")
        .arg(case.log_path())
        .status()
        .unwrap();
    assert!(st.success());
    let run = case.watched(&["--disable-grpc", "createRuntime"]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.elapsed < Duration::from_secs(2), "{:?}", run.elapsed);
    assert!(run.stderr.contains("gRPC was disabled"), "{run:#?}");
}

const TEN: &str = "[0,1,2,3,4,5,6,7,8,9]";

/// `TEN.all(a, TEN.all(b, ... true))`, `depth` deep: 10^depth steps, little memory.
fn all_nest(depth: usize) -> String {
    let mut e = "true".to_owned();
    for i in 0..depth {
        e = format!("{TEN}.all(v{i}, {e})");
    }
    e
}

/// `TEN.map(a, TEN.map(b, ... a)).size() > 0`, `depth` deep: 10^depth values.
fn map_nest(depth: usize) -> String {
    let mut e = "v0".to_owned();
    for i in 0..depth {
        e = format!("{TEN}.map(v{i}, {e})");
    }
    format!("{e}.size() > 0")
}

/// Strings that grow eightfold per level: 16 × 8^9 bytes (2.1 GB) at the bottom, reached in well
/// under a second. Evaluates to false (do not fail), if it is ever allowed to finish.
fn memory_bomb() -> String {
    let mut e = "v9.size() == 0".to_owned();
    for i in (0..10).rev() {
        let seed = if i == 0 {
            "\"0123456789abcdef\"".to_owned()
        } else {
            vec![format!("v{}", i - 1); 8].join("+")
        };
        e = format!("[{seed}].exists(v{i}, {e})");
    }
    e
}

/// The issue's slow expressions (a ~270-byte `.all()` nest, a ~230-byte `.map()` nest) are
/// stopped at `--fail-cel-timeout` (default 200 ms) of CPU time; the namespace rules decide, and the log
/// says which bound was hit.
#[test]
fn slow_cel_is_stopped_at_its_deadline_and_namespace_rules_decide() {
    let (all, map) = (all_nest(8), map_nest(7));
    assert!((200..300).contains(&all.len()) && (200..300).contains(&map.len()));
    for expr in [all, map] {
        for (ns, code) in [("kube-system", 0), ("default", 1)] {
            let case = Case::with_namespace(Some(ns));
            let addr = no_agent(&case);
            let run = case.watched(&[
                "--grpc-address",
                &addr,
                "--grpc-timeout=1s",
                "--fail-cel-expr",
                &expr,
                "createRuntime",
            ]);
            assert_eq!(run.code, Some(code), "{run:#?}");
            assert!(run.elapsed < Duration::from_secs(2), "{:?}", run.elapsed);
            let log = read_log(&case.log_path());
            let err = log
                .iter()
                .find(|l| l["msg"] == "failCheck failed")
                .unwrap_or_else(|| panic!("{log:#?}"))["error"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(
                err.contains("used more than 200ms of CPU time (`--fail-cel-timeout`)")
                    && err.contains("using the namespace rules"),
                "{err}"
            );
            // Stopped early: far from the gigabytes the `.map()` nest reaches unbounded.
            assert!(run.max_rss_kib < 256 << 10, "{} KiB", run.max_rss_kib);
        }
    }
}

/// An expression that allocates gigabytes in a fraction of a second, given a long timeout, is
/// stopped by the memory cap: the namespace rules decide and the log names the cap.
#[test]
fn memory_hungry_cel_is_capped_and_namespace_rules_decide() {
    let case = Case::with_namespace(Some("default"));
    let addr = no_agent(&case);
    let expr = memory_bomb();
    let run = case.watched(&[
        "--grpc-address",
        &addr,
        "--fail-cel-timeout=10s",
        "--fail-cel-expr",
        &expr,
        "createRuntime",
    ]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let log = read_log(&case.log_path());
    let err = log
        .iter()
        .find(|l| l["msg"] == "failCheck failed")
        .unwrap_or_else(|| panic!("{log:#?}"))["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(err.contains("memory cap"), "{err}");
    // The cap is 256 MiB of heap over a 256 MiB stack reservation and the image.
    assert!(run.max_rss_kib < 700 << 10, "{} KiB", run.max_rss_kib);
}

/// A silent agent, then a slow CEL expression with a long `--fail-cel-timeout`: the CEL gets
/// what is left of the grace second, and the hook ends within `--grpc-timeout` + 1 s.
#[test]
fn hook_ends_within_grpc_timeout_plus_one_second_with_hanging_agent_and_slow_cel() {
    let agent = Agent::start(Behavior::Hang);
    let case = Case::with_namespace(Some("kube-system"));
    let expr = all_nest(8);
    let run = case.watched(&[
        "--grpc-address",
        &agent.address(),
        "--grpc-timeout=1s",
        "--fail-cel-timeout=30s",
        "--fail-cel-expr",
        &expr,
        "createRuntime",
    ]);
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.elapsed < Duration::from_secs(2), "{:?}", run.elapsed);
    let log = read_log(&case.log_path());
    assert!(log.iter().any(|l| l["msg"] == NOT_FAILING), "{log:#?}");
    // The bound hit is the overall budget, and the message says so (not `--fail-cel-timeout`).
    let err = log
        .iter()
        .find(|l| l["msg"] == "failCheck failed")
        .unwrap_or_else(|| panic!("{log:#?}"))["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        err.contains("left of the hook's time budget (`--grpc-timeout` + 1s)")
            && !err.contains("30s"),
        "{err}"
    );
}

/// A runtime that keeps stdin open without writing: the hook still ends within
/// `--grpc-timeout` + 1 s.
#[test]
fn hook_ends_within_grpc_timeout_plus_one_second_when_stdin_never_closes() {
    let case = Case::with_namespace(Some("kube-system"));
    let addr = no_agent(&case);
    let run = run_watched(
        case.command(&[
            "--grpc-address",
            &addr,
            "--grpc-timeout=1s",
            "createRuntime",
        ]),
        Feed::OpenForever,
        Duration::from_secs(20),
    );
    assert!(matches!(run.code, Some(0 | 1)), "{run:#?}");
    assert!(run.elapsed < Duration::from_secs(2), "{:?}", run.elapsed);
}

/// A huge `config.json` is a read error that goes to the fail policy, without being read whole.
#[test]
fn huge_config_json_is_a_read_error_and_is_not_read_whole() {
    let case = Case::new(None);
    // Sparse: 500 MB that cost no disk.
    let f = std::fs::File::create(case.bundle().join("config.json")).unwrap();
    f.set_len(500 << 20).unwrap();
    drop(f);
    let addr = no_agent(&case);
    let run = case.watched(&["--grpc-address", &addr, "createRuntime"]);
    assert_eq!(run.code, Some(1), "{run:#?}");
    let log = read_log(&case.log_path());
    let err = log
        .iter()
        .find(|l| l["msg"] == FAILED)
        .unwrap_or_else(|| panic!("{log:#?}"))["err"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        err.contains("config.json") && err.contains("more than the 16 MiB"),
        "{err}"
    );
    assert!(run.max_rss_kib < 64 << 10, "{} KiB", run.max_rss_kib);
}

/// A FIFO or a device as `config.json` is a read error naming it, at once.
#[test]
fn special_config_json_is_a_read_error() {
    for special in ["fifo", "device"] {
        let case = Case::new(None);
        let spec = case.bundle().join("config.json");
        if special == "fifo" {
            assert!(
                Command::new("mkfifo")
                    .arg(&spec)
                    .status()
                    .unwrap()
                    .success()
            );
        } else {
            std::os::unix::fs::symlink("/dev/zero", &spec).unwrap();
        }
        let addr = no_agent(&case);
        let run = case.watched(&["--grpc-address", &addr, "createRuntime"]);
        assert_eq!(run.code, Some(1), "{run:#?}");
        assert!(run.elapsed < Duration::from_secs(2), "{:?}", run.elapsed);
        let log = read_log(&case.log_path());
        let err = log
            .iter()
            .find(|l| l["msg"] == FAILED)
            .unwrap_or_else(|| panic!("{log:#?}"))["err"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            err.contains("config.json") && err.contains("not a regular file"),
            "{special}: {err}"
        );
    }
}

/// Exit codes stay the policy's (0 or 1) when stdout and stderr are a pipe nobody reads
/// (EPIPE), or closed.
#[test]
fn exit_status_is_the_policys_when_stdout_or_stderr_is_broken_or_closed() {
    use std::os::unix::process::CommandExt;
    for (ns, code) in [("kube-system", 0), ("default", 1)] {
        let case = Case::with_namespace(Some(ns));
        let addr = no_agent(&case);
        for closed in [false, true] {
            let mut cmd = case.command(&["--grpc-address", &addr, "createRuntime"]);
            // No state on stdin: `config.json` is found from the working dir.
            cmd.stdin(Stdio::null()).current_dir(case.bundle());
            if closed {
                // SAFETY: only async-signal-safe `close` between fork and exec.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::close(1);
                        libc::close(2);
                        Ok(())
                    });
                }
            } else {
                let (reader, writer) = rustix::pipe::pipe().unwrap();
                drop(reader);
                let writer = std::fs::File::from(writer);
                cmd.stdout(writer.try_clone().unwrap()).stderr(writer);
            }
            let status = cmd.status().unwrap();
            assert_eq!(
                status.code(),
                Some(code),
                "ns {ns}, closed {closed}: {status:?}"
            );
        }
    }
    // Something on stdout: `--version`.
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    drop(reader);
    let writer = std::fs::File::from(writer);
    let status = Command::new(HOOK)
        .arg("--version")
        .stdout(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// The CEL child gets every annotation, also when they are more than a pipe's buffer.
#[test]
fn cel_in_its_child_process_sees_large_annotations() {
    let mut spec: Value = serde_json::from_str(CRIO_SPEC).unwrap();
    let big = "x".repeat(300 << 10);
    spec["annotations"]["big"] = big.clone().into();
    let case = Case::new(Some(&spec.to_string()));
    let addr = no_agent(&case);
    for (expr, code) in [
        (format!("annotations[\"big\"].size() == {}", big.len()), 1),
        ("annotations[\"big\"] == \"y\"".to_owned(), 0),
    ] {
        let run = case.watched(&[
            "--grpc-address",
            &addr,
            "--fail-cel-expr",
            &expr,
            "createRuntime",
        ]);
        assert_eq!(run.code, Some(code), "{expr}: {run:#?}");
        let log = read_log(&case.log_path());
        assert!(
            !log.iter().any(|l| l["msg"] == "failCheck failed"),
            "{log:#?}"
        );
    }
}

/// The defaults file beside the binary is read on every run: a FIFO there must not block the
/// hook, and a huge one is not read; both are ignored with a warning.
#[test]
fn special_or_huge_defaults_file_is_ignored_without_blocking() {
    for (kind, want) in [
        ("fifo", "not a regular file"),
        ("huge", "more than the 1 MiB"),
    ] {
        let case = Case::with_namespace(Some("kube-system"));
        let bin = private_binary(&case);
        let defaults = bin.with_file_name("tetragon-oci-hook.json");
        if kind == "fifo" {
            assert!(
                Command::new("mkfifo")
                    .arg(&defaults)
                    .status()
                    .unwrap()
                    .success()
            );
        } else {
            let f = std::fs::File::create(&defaults).unwrap();
            f.set_len(2 << 20).unwrap();
        }
        let mut cmd = Command::new(&bin);
        cmd.arg("--log-fname")
            .arg(case.log_path())
            .args(["--disable-grpc", "createRuntime"])
            .current_dir(case.path());
        let run = run_watched(cmd, Feed::Text(case.state()), Duration::from_secs(20));
        assert_eq!(run.code, Some(0), "{kind}: {run:#?}");
        assert!(
            run.elapsed < Duration::from_secs(2),
            "{kind}: {:?}",
            run.elapsed
        );
        let log = read_log(&case.log_path());
        let warn = log
            .iter()
            .find(|l| l["msg"] == "ignoring part of the defaults file")
            .unwrap_or_else(|| panic!("{kind}: {log:#?}"));
        assert!(
            warn["error"].as_str().unwrap().contains(want),
            "{kind}: {warn}"
        );
    }
}

/// A runtime that never reads the hook's stderr (a full pipe): the hook blocks writing its
/// message, and the watchdog still ends it within `--grpc-timeout` + 1 s with the decision
/// already made (exit 1: the container is refused).
#[test]
fn hook_ends_within_grpc_timeout_plus_one_second_when_stderr_is_never_read() {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let case = Case::with_namespace(Some("default"));
    let addr = no_agent(&case);
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    // Fill the pipe, then make writes to it block again.
    let flags = fcntl_getfl(&writer).unwrap();
    fcntl_setfl(&writer, flags | OFlags::NONBLOCK).unwrap();
    while rustix::io::write(&writer, &[b'x'; 4096]).is_ok() {}
    fcntl_setfl(&writer, flags).unwrap();
    let mut cmd = case.command(&[
        "--grpc-address",
        &addr,
        "--grpc-timeout=1s",
        "createRuntime",
    ]);
    cmd.stdin(Stdio::null())
        .current_dir(case.bundle())
        .stderr(std::fs::File::from(writer));
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let mut ended = false;
    while start.elapsed() < Duration::from_secs(20) {
        if child.try_wait().unwrap().is_some() {
            ended = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = start.elapsed();
    if !ended {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    drop(reader);
    assert!(ended, "the hook blocked on its stderr");
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let log = read_log(&case.log_path());
    assert!(log.iter().any(|l| l["msg"] == FAILING), "{log:#?}");
}

/// `--help`, `--version` and `--just-print-config` with a hook name (a bad `hook-args`) do not
/// turn `createRuntime` into a silent allow: the agent is called, the fail policy applies, and
/// the ignored flag is logged.
#[test]
fn no_op_flags_with_a_hook_name_still_apply_the_fail_policy() {
    for flag in ["--help", "-h", "--version", "--just-print-config"] {
        let case = Case::with_namespace(Some("default"));
        let addr = no_agent(&case);
        let run = case.run(&[flag, "--grpc-address", &addr, "createRuntime"]);
        assert_eq!(run.code, 1, "{flag}: {run:#?}");
        assert!(run.has(FAILING), "{flag}: {run:#?}");
        let warn = run.line("ignoring a flag that only makes sense without a hook name");
        assert_eq!(warn["level"], "WARN");
        let want = if flag == "-h" { "--help" } else { flag };
        assert_eq!(warn["flag"], want, "{flag}");
        assert!(run.stdout.is_empty(), "{flag}: {}", run.stdout);
    }
}

/// A `--grpc-timeout` over the maximum (here from the defaults file, which `install` does not
/// check) is clamped to 60 s, and the clamp is logged.
#[test]
fn grpc_timeout_over_the_maximum_is_clamped_and_logged() {
    let case = Case::with_namespace(Some("kube-system"));
    let bin = private_binary(&case);
    std::fs::write(
        bin.parent().unwrap().join("tetragon-oci-hook.json"),
        r#"{"grpc-timeout": "100000h"}"#,
    )
    .unwrap();
    let addr = no_agent(&case);
    let run = case.run_bin(
        &bin,
        &["--grpc-address", &addr, "createRuntime"],
        Input::State,
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let line = run.line("ignoring part of the defaults file");
    let err = line["error"].as_str().unwrap();
    assert!(
        err.contains("`--grpc-timeout` `100000h` is more than the maximum 60s; using 60s"),
        "{err}"
    );
    let out = Command::new(&bin)
        .arg("--just-print-config")
        .output()
        .unwrap();
    let cfg: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cfg["grpc-timeout"], "60s");
}

/// Many hooks at once on the fail path (agent down) with an allow-everything CEL on a loaded
/// machine: each one allows its container. Before, spawning the CEL child counted against
/// `--fail-cel-timeout` (wall time) and an answer already in the pipe at the deadline was
/// dropped, so some hooks failed containers the policy allows. A short `--fail-cel-timeout`
/// (30 ms, of CPU time now; the child needs a few) makes the old failure certain: 116 of 120
/// failed before the fix.
#[test]
fn concurrent_fail_checks_with_an_allow_everything_cel_all_allow() {
    const HOOKS: usize = 120;
    let case = Case::with_namespace(Some("default"));
    let addr = no_agent(&case);
    let children: Vec<_> = (0..HOOKS)
        .map(|_| {
            let mut cmd = case.command(&[
                "--grpc-address",
                &addr,
                "--grpc-timeout=10s",
                "--fail-cel-timeout=30ms",
                "--fail-cel-expr",
                "false",
                "createRuntime",
            ]);
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            let mut w = child.stdin.take().unwrap();
            let _ = w.write_all(case.state().as_bytes());
            drop(w);
            child
        })
        .collect();
    let mut failed = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        if out.status.code() != Some(0) {
            failed.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {HOOKS} failed: {failed:#?}",
        failed.len()
    );
    let log = read_log(&case.log_path());
    assert_eq!(
        log.iter().filter(|l| l["msg"] == NOT_FAILING).count(),
        HOOKS,
        "{:#?}",
        log.iter()
            .filter(|l| l["msg"] == "failCheck failed")
            .collect::<Vec<_>>()
    );
}

/// An older 0644 log past the size limit whose lock another user holds forever: the next hook
/// rotates it anyway, writes its lines to a fresh 0600 log, and the old log (now the backup)
/// is 0600 too.
#[test]
fn oversized_log_locked_by_another_user_is_rotated_and_closed_to_others() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let case = Case::with_namespace(Some("kube-system"));
    std::fs::set_permissions(case.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let old = std::fs::File::create(case.log_path()).unwrap();
    old.set_len(oci_hook::log::MAX_SIZE + 1).unwrap();
    drop(old);
    std::fs::set_permissions(case.log_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let old_ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(case.log_path()).unwrap());
    let mut holder = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "flock",
            "-x",
        ])
        .arg(case.log_path())
        .args(["sleep", "25"])
        .process_group(0)
        .spawn()
        .unwrap();
    let holder_pgid = rustix::process::Pid::from_raw(holder.id() as i32).unwrap();
    let probe = std::fs::File::open(case.log_path()).unwrap();
    let t0 = Instant::now();
    while rustix::fs::flock(&probe, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
        rustix::fs::flock(&probe, rustix::fs::FlockOperation::Unlock).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(10), "flock never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let run = case.watched(&["--disable-grpc", "createRuntime"]);
    let _ = rustix::process::kill_process_group(holder_pgid, rustix::process::Signal::KILL);
    let _ = holder.wait();
    assert_eq!(run.code, Some(0), "{run:#?}");
    let fresh = std::fs::metadata(case.log_path()).unwrap();
    assert_ne!(
        std::os::unix::fs::MetadataExt::ino(&fresh),
        old_ino,
        "not rotated"
    );
    assert_eq!(fresh.permissions().mode() & 0o777, 0o600);
    let log = read_log(&case.log_path());
    assert!(
        log.iter()
            .any(|l| l["msg"] == "gRPC was disabled, so will not be contacting the agent"),
        "{log:#?}"
    );
    assert!(!log.iter().any(|l| l["msg"] == LOCK_BUSY), "{log:#?}");
    let backups: Vec<_> = std::fs::read_dir(case.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let n = e.file_name().into_string().unwrap();
            n.starts_with("hook-") && n.ends_with(".log")
        })
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let b = backups[0].metadata().unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&b), old_ino);
    assert_eq!(b.permissions().mode() & 0o777, 0o600);
}
