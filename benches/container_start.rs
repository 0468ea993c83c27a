//! How much our NRI plugin and hook add to a container start on a real containerd.
//!
//! `cargo bench --bench container_start` (as root, after `scripts/fetch-containerd.sh`): for
//! containerd 1.7 and 2.1, the median over 20 containers of CreateContainer + StartContainer
//! through the CRI, first without any plugin, then with `install --interface nri-hook` running
//! and the stand-in agent up (so every start runs `tetragon-oci-hook` and its gRPC call).

#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::child::ChildGuard;
use support::containerd::Containerd;
use support::cri::{self, Cri, PodSpec};
use support::runtimes::{self, Release};
use test_agent::{Agent, Behavior};

const RUNS: usize = 20;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// CreateContainer + StartContainer of `n` containers in a fresh pod (removed afterwards).
fn sample(cri: &mut Cri, logs: &Path, tag: &str, n: usize) -> Vec<Duration> {
    let pod = PodSpec {
        name: format!("bench-{tag}"),
        namespace: "default".into(),
        uid: format!("uid-{tag}"),
    };
    let (pod_id, sandbox) = cri.run_pod(&pod, logs).unwrap();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let id = cri
            .create_container(&pod_id, &sandbox, &format!("c{i}"), &["/bin/sleep", "600"])
            .unwrap();
        cri.start_container(&id).unwrap();
        samples.push(start.elapsed());
    }
    cri.remove_pod(&pod_id).unwrap();
    samples
}

fn start_plugin(containerd: &Containerd, install: &Path, agent: &Agent) -> ChildGuard {
    let child = support::cmd::nri_plugin(
        Path::new(support::hook_bin()),
        install,
        install,
        containerd.nri_socket(),
    )
    .args(["hook-args", "--grpc-address", &agent.address()])
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    ChildGuard::new(child)
}

fn bench(release: Release) {
    let work = tempfile::tempdir().unwrap();
    let containerd = require!(
        cri::containerd_for_pods(release, work.path()),
        runtimes::missing(release)
    );
    let logs = work.path().join("logs");
    fs::create_dir_all(&logs).unwrap();
    let mut cri = Cri::connect(containerd.grpc_socket()).unwrap();
    let agent = Agent::start_at(&work.path().join("agent.sock"), Behavior::Accept);
    let install = work.path().join("install");
    fs::create_dir_all(&install).unwrap();
    let _ = sample(&mut cri, &logs, "warmup", 5);

    // Alternate blocks without and with the plugin, so that drift on the machine hits both.
    const BLOCK: usize = 5;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for round in 0..RUNS / BLOCK {
        without.extend(sample(&mut cri, &logs, &format!("without-{round}"), BLOCK));
        let from = containerd.log_len();
        let plugin = start_plugin(&containerd, &install, &agent);
        containerd
            .wait_log_since(
                from,
                "plugin \\\"01-tetragon\\\" connected",
                Duration::from_secs(20),
            )
            .unwrap();
        with.extend(sample(&mut cri, &logs, &format!("with-{round}"), BLOCK));
        drop(plugin);
    }
    let calls = agent.requests().len();
    let (without, with) = (median(without), median(with));
    println!(
        "{release}: CreateContainer+StartContainer, median of {RUNS}: without plugin {:.1} ms, \
         with plugin + hook + agent {:.1} ms, added {:.1} ms (agent saw {calls} calls)",
        without.as_secs_f64() * 1e3,
        with.as_secs_f64() * 1e3,
        (with.as_secs_f64() - without.as_secs_f64()) * 1e3,
    );
}

fn main() {
    if std::env::args().any(|a| a == "--test") {
        return; // `cargo test --benches`: nothing to check here
    }
    for release in Release::ALL {
        bench(release);
    }
}
