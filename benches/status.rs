//! `status` wall time, with the release binaries: `cargo bench --bench status` (after
//! `cargo build --release`, which builds the hook binary it runs).
//!
//! An install dir with the hook installed for oci-hooks (`install`, as the DaemonSet does), the
//! stand-in agent answering, and the NRI interface against a fake runtime socket with our
//! plugin's state: `status` is run many times per setup and its wall time (process start to
//! exit, as a readiness probe sees it) reported as p50 and p99, with one `target:` line each.
//! Asserts nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use test_agent::{Agent, Behavior};

const RUNS: usize = 200;
const TARGET: Duration = Duration::from_millis(50);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Runs `status` with `args` `RUNS` times; returns the sorted wall times and the last exit code.
fn measure(args: &[String]) -> (Vec<Duration>, i32) {
    let mut times = Vec::with_capacity(RUNS);
    let mut code = -1;
    for _ in 0..RUNS {
        let t = Instant::now();
        let st = support::cmd::bin()
            .arg("status")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        times.push(t.elapsed());
        code = st.code().unwrap_or(-1);
    }
    times.sort();
    (times, code)
}

fn report(work: &str, args: &[String]) {
    let (times, code) = measure(args);
    if code != 0 {
        let out = support::cmd::bin()
            .arg("status")
            .args(args)
            .output()
            .unwrap();
        panic!(
            "status did not pass for {work}: exit {code}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    for (name, p) in [("p50", 0.5), ("p99", 0.99)] {
        let d = percentile(&times, p);
        println!(
            "target: status wall, {work} ({name}) | {:.1} ms | < {} ms | {}",
            d.as_secs_f64() * 1e3,
            TARGET.as_millis(),
            if d < TARGET { "met" } else { "NOT met" }
        );
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let install = dir.path().join("install");
    let hooks = dir.path().join("hooks.d");
    std::fs::create_dir(&install).unwrap();
    std::fs::create_dir(&hooks).unwrap();
    let agent_socket = dir.path().join("agent.sock");
    let _agent = Agent::start_at(&agent_socket, Behavior::Accept);
    let address = format!("unix://{}", agent_socket.display());
    let out = support::cmd::run(&[
        "install",
        "--interface=oci-hooks",
        "--local-binary",
        support::hook_bin(),
        "--local-install-dir",
        &s(&install),
        "--host-install-dir",
        &s(&install),
        "--oci-hooks.local-dir",
        &s(&hooks),
        "hook-args",
        "--grpc-address",
        &address,
    ]);
    assert!(out.status.success(), "{out:?}");
    let common = vec![
        "--local-install-dir".to_owned(),
        s(&install),
        "--oci-hooks.local-dir".to_owned(),
        s(&hooks),
        "--local-binary".to_owned(),
        support::hook_bin().to_owned(),
    ];
    let mut oci = common.clone();
    oci.extend(["--interface".into(), "oci-hooks".into()]);
    report("oci-hooks, agent answering", &oci);
    // The DaemonSet's readiness probe: the agent is not asked.
    let mut probe = oci.clone();
    probe.push("--probe".into());
    report("oci-hooks, readiness probe `--probe`", &probe);

    // NRI: our plugin registered with a fake runtime, its state in the same install dir.
    let setup = support::fake_nri::Setup::start(&[]);
    let _conn = setup.registered();
    // The socket `status` probes: accepts and closes every connection (the fake runtime's
    // own listener would fill its backlog with probes it never accepts).
    let nri_socket = dir.path().join("nri.sock");
    let listener = std::os::unix::net::UnixListener::bind(&nri_socket).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
        }
    });
    let state = setup
        .dir
        .path()
        .join("install")
        .join(rthooks::status::state::FILE_NAME);
    let deadline = Instant::now() + Duration::from_secs(10);
    let registered =
        || std::fs::read_to_string(&state).is_ok_and(|t| t.contains("\"registered\": true"));
    while !registered() {
        assert!(
            Instant::now() < deadline,
            "no state file at {}",
            state.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::copy(&state, install.join(rthooks::status::state::FILE_NAME)).unwrap();
    let mut nri = common;
    nri.extend([
        "--interface".into(),
        "nri-hook".into(),
        // The plugin's hook is at this host path (the fake install's).
        "--host-install-dir".into(),
        "/opt/tetragon".into(),
        "--nri-hook.socket".into(),
        s(&nri_socket),
        "--config-file".into(),
        s(&dir.path().join("no-containerd-config.toml")),
        "--grpc-address".into(),
        address,
    ]);
    report("nri-hook, agent answering", &nri);
}
