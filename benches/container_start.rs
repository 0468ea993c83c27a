//! How much our NRI plugin and hook add to a container start on a real containerd, and where
//! the time goes.
//!
//! `cargo bench --bench container_start` (as root, after `scripts/fetch-containerd.sh`). For
//! containerd 1.7 and 2.1, CreateContainer + StartContainer through the CRI in three arms:
//!
//! - `none`: no plugin;
//! - `hook, no agent call`: `install --interface nri-hook` running with `hook-args
//!   --disable-grpc`, so every start runs the plugin's answer and `tetragon-oci-hook` (a process
//!   run by runc), without the gRPC call;
//! - `hook + agent`: the plugin with the stand-in agent's address (answering at once), so every
//!   start also makes the hook's gRPC call.
//!
//! Paired and interleaved: each of 30 rounds (`CONTAINER_START_ROUNDS=N` for more) runs every
//! arm once (a fresh pod, [`BLOCK`] containers), the arms' order rotating from round to round,
//! and the i-th container of an arm is paired with the i-th of `none` in the same round, so
//! that drift on the machine hits all arms alike.
//! Reported: the median of the paired differences with a 95% bootstrap interval (resampling
//! the pairs), per arm; `hook, no agent call` - `none` is the plugin and the hook process,
//! `hook + agent` - `hook, no agent call` (paired the same way) the agent call.
//!
//! The plugin runs at `--log-level debug`, so its log has a line when a call arrives and one
//! when the adjustment is ready: their distance is its answer time, in place.
//!
//! Then, on 2.1, 50 pods created concurrently through the CRI (50 connections), two batches
//! without and two with the plugin, alternating: every container must carry the hook in its OCI
//! spec and reach the agent exactly once; the median start latency of each side and their
//! difference are reported.
//!
//! Prints one `target:` line per release (the added latency's 95% interval narrower than
//! +-5 ms, the noise of the earlier unpaired method) and for the concurrent run (every
//! container got the hook).

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
use std::time::{Duration, Instant};

use support::child::ChildGuard;
use support::containerd::Containerd;
use support::cri::{self, Cri, PodSpec};
use support::runtimes::{self, Release};
use test_agent::{Agent, Behavior};

/// Rounds per release (each runs every arm once), unless `CONTAINER_START_ROUNDS` says.
const ROUNDS: usize = 30;

fn rounds() -> usize {
    std::env::var("CONTAINER_START_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(ROUNDS)
}
/// Containers per arm and round.
const BLOCK: usize = 2;
/// Pods of the concurrent run.
const CONCURRENT: usize = 50;
/// Resamples of the bootstrap.
const RESAMPLES: usize = 4000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Arm {
    None,
    HookNoAgent,
    HookAgent,
}

impl Arm {
    const ALL: [Self; 3] = [Self::None, Self::HookNoAgent, Self::HookAgent];
}

fn ms(d: f64) -> String {
    format!("{d:.1} ms")
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median of `d` and its 95% percentile-bootstrap interval (a fixed-seed xorshift, so a
/// run is reproducible from its samples).
fn median_ci(d: &[f64]) -> (f64, f64, f64) {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut meds: Vec<f64> = (0..RESAMPLES)
        .map(|_| {
            let s: Vec<f64> = (0..d.len())
                .map(|_| d[(next() % d.len() as u64) as usize])
                .collect();
            median(&s)
        })
        .collect();
    meds.sort_by(f64::total_cmp);
    let lo = meds[RESAMPLES * 25 / 1000];
    let hi = meds[RESAMPLES * 975 / 1000 - 1];
    (median(d), lo, hi)
}

/// CreateContainer + StartContainer of `n` containers in a fresh pod (removed afterwards), in ms.
fn sample(cri: &mut Cri, logs: &Path, tag: &str, n: usize) -> Vec<f64> {
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
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    cri.remove_pod(&pod_id).unwrap();
    samples
}

/// Starts the plugin with `hook_args`, its log (debug level: a line when a call arrives) in
/// `log`, and waits until containerd reports it connected.
fn start_plugin(
    containerd: &Containerd,
    install: &Path,
    hook_args: &[&str],
    log: &Path,
) -> ChildGuard {
    let from = containerd.log_len();
    let child = support::cmd::nri_plugin(
        Path::new(support::hook_bin()),
        install,
        install,
        containerd.nri_socket(),
    )
    .args(["--log-level", "debug", "hook-args"])
    .args(hook_args)
    .stderr(fs::File::create(log).unwrap())
    .spawn()
    .unwrap();
    let plugin = ChildGuard::new(child);
    containerd
        .wait_log_since(
            from,
            "plugin \\\"01-tetragon\\\" connected",
            Duration::from_secs(20),
        )
        .unwrap();
    plugin
}

fn hook_args(arm: Arm, agent: &Agent) -> Option<Vec<String>> {
    match arm {
        Arm::None => None,
        Arm::HookNoAgent => Some(vec!["--disable-grpc".into()]),
        Arm::HookAgent => Some(vec!["--grpc-address".into(), agent.address()]),
    }
}

/// Seconds since midnight of an RFC 3339 time (`2026-12-02T08:25:55.123456Z`).
fn seconds_of_day(t: &str) -> Option<f64> {
    let hms = t.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = hms.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// The plugin's time per `CreateContainer` from its log, in µs: from the line written when the
/// call arrived (after reading and decoding the ttrpc envelope) to the line written when the
/// adjustment is ready (the reply is encoded and queued right after).
fn answer_times(log: &Path) -> Vec<f64> {
    let text = fs::read_to_string(log).unwrap_or_default();
    let mut out = Vec::new();
    let mut arrived = None;
    for line in text.lines() {
        let t = line.split(' ').next().and_then(seconds_of_day);
        if line.contains("/CreateContainer (") {
            arrived = t;
        } else if line.contains("adding hook to container") {
            if let (Some(a), Some(t)) = (arrived.take(), t) {
                out.push((t - a) * 1e6);
            }
        }
    }
    out
}

fn report(release: Release, what: &str, d: &[f64]) -> (f64, f64, f64) {
    let (m, lo, hi) = median_ci(d);
    println!(
        "{release}: {what}: median of {} paired differences {:+.1} ms, 95% CI [{:+.1}, {:+.1}] ms",
        d.len(),
        m,
        lo,
        hi
    );
    (m, lo, hi)
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

    // samples[arm][round] = the BLOCK start times of that arm in that round.
    let mut samples = vec![Vec::new(); Arm::ALL.len()];
    let mut answers = Vec::new();
    let plugin_log = work.path().join("plugin.log");
    let rounds = rounds();
    for round in 0..rounds {
        for k in 0..Arm::ALL.len() {
            let a = (round + k) % Arm::ALL.len();
            let arm = Arm::ALL[a];
            let plugin = hook_args(arm, &agent).map(|args| {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                start_plugin(&containerd, &install, &args, &plugin_log)
            });
            let tag = format!("{a}-{round}");
            samples[a].push(sample(&mut cri, &logs, &tag, BLOCK));
            drop(plugin);
            if arm != Arm::None {
                answers.extend(answer_times(&plugin_log));
            }
        }
    }
    let calls = agent.requests().len();
    let flat = |a: usize| samples[a].concat();
    let paired = |a: usize, b: usize| -> Vec<f64> {
        let (x, y) = (flat(a), flat(b));
        x.iter().zip(&y).map(|(x, y)| x - y).collect()
    };
    println!(
        "{release}: CreateContainer+StartContainer, {rounds} rounds x {BLOCK} per arm; medians: \
         none {}, hook without agent call {}, hook + agent {} (agent saw {calls} calls, expected {})",
        ms(median(&flat(0))),
        ms(median(&flat(1))),
        ms(median(&flat(2))),
        rounds * BLOCK,
    );
    let (m, lo, hi) = report(
        release,
        "added by plugin + hook + agent call",
        &paired(2, 0),
    );
    report(release, "  of which plugin + hook process", &paired(1, 0));
    report(release, "  of which the agent call", &paired(2, 1));
    println!(
        "{release}: the plugin's answer to CreateContainer (its log, call in -> adjustment ready): \
         median {:.0} µs, max {:.0} µs over {} calls",
        median(&answers),
        answers.iter().cloned().fold(0.0, f64::max),
        answers.len()
    );
    let half = (hi - lo) / 2.0;
    let met = if half < 5.0 { "met" } else { "NOT met" };
    println!(
        "target: container start added, {release} (paired median, 95% CI) | {m:+.1} ms [{lo:+.1}, {hi:+.1}] | CI half-width < 5 ms | {met}"
    );

    if release == Release::V2_1 {
        concurrent(&containerd, &logs, &install, &agent);
    }
}

/// [`CONCURRENT`] pods at once, one CRI connection each; start times in ms and container ids.
fn concurrent_batch(containerd: &Containerd, logs: &Path, tag: &str) -> Vec<(f64, String)> {
    let socket = containerd.grpc_socket().to_path_buf();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CONCURRENT));
    let threads: Vec<_> = (0..CONCURRENT)
        .map(|i| {
            let (socket, logs, barrier) = (socket.clone(), logs.to_path_buf(), barrier.clone());
            let pod = PodSpec {
                name: format!("{tag}-{i}"),
                namespace: "default".into(),
                uid: format!("uid-{tag}-{i}"),
            };
            std::thread::spawn(move || {
                let mut cri = Cri::connect(&socket).unwrap();
                barrier.wait();
                let (pod_id, sandbox) = cri.run_pod(&pod, &logs).unwrap();
                let start = Instant::now();
                let id = cri
                    .create_container(&pod_id, &sandbox, "app", &["/bin/sleep", "600"])
                    .unwrap();
                cri.start_container(&id).unwrap();
                let took = start.elapsed().as_secs_f64() * 1e3;
                (took, id, pod_id, cri)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut out = Vec::new();
    let mut cri = Cri::connect(&socket).unwrap();
    for (took, id, pod_id, mut own) in results {
        let (_, info) = cri.container_status(&id).unwrap();
        let hooks = &info["runtimeSpec"]["hooks"]["createRuntime"];
        let with_hook = hooks.as_array().is_some_and(|h| {
            h.iter().any(|h| {
                h["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("/tetragon-oci-hook"))
            })
        });
        out.push((took, if with_hook { id } else { String::new() }));
        own.remove_pod(&pod_id).unwrap();
    }
    out
}

fn concurrent(containerd: &Containerd, logs: &Path, install: &Path, agent: &Agent) {
    // Two batches of each, alternating: without, with, without, with.
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let before = agent.requests().len();
    let addr = agent.address();
    let plugin_log = logs.join("plugin-concurrent.log");
    for round in 0..2 {
        without.extend(concurrent_batch(
            containerd,
            logs,
            &format!("conc-none{round}"),
        ));
        let plugin = start_plugin(containerd, install, &["--grpc-address", &addr], &plugin_log);
        with.extend(concurrent_batch(
            containerd,
            logs,
            &format!("conc-hook{round}"),
        ));
        drop(plugin);
    }
    let seen = agent.requests();
    let reached = (0..2 * CONCURRENT)
        .filter(|i| {
            let name = format!("conc-hook{}-{}", i / CONCURRENT, i % CONCURRENT);
            seen[before..]
                .iter()
                .filter(|cc| cc.pod_name == name)
                .count()
                == 1
        })
        .count();
    let hooked = with.iter().filter(|(_, id)| !id.is_empty()).count();
    let stray = without.iter().filter(|(_, id)| !id.is_empty()).count();
    let t = |v: &[(f64, String)]| v.iter().map(|x| x.0).collect::<Vec<_>>();
    let (mw, mh) = (median(&t(&without)), median(&t(&with)));
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let n = 2 * CONCURRENT;
    println!(
        "containerd 2.1, {CONCURRENT} pods created concurrently through CRI: CreateContainer+StartContainer \
         median without plugin {} (max {}), with plugin + hook + agent {} (max {}), added {:+.1} ms \
         per container (2 batches of each, alternating); {hooked}/{n} OCI specs carry the hook, \
         {reached}/{n} reached the agent once; {stray} without the plugin carry it",
        ms(mw),
        ms(max(&t(&without))),
        ms(mh),
        ms(max(&t(&with))),
        mh - mw,
    );
    let ok = hooked == n && reached == n && stray == 0;
    let met = if ok { "met" } else { "NOT met" };
    println!(
        "target: {CONCURRENT} concurrent pods on containerd 2.1 (x2): containers with the hook, reaching the agent | {hooked}/{n}, {reached}/{n} | all | {met}"
    );
}

fn main() {
    if std::env::args().any(|a| a == "--test") {
        return; // `cargo test --benches`: nothing to check here
    }
    if !support::skip::is_root() {
        support::skip::skip("not root (containerd needs it)");
        return;
    }
    for release in Release::ALL {
        bench(release);
    }
}
