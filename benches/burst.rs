//! A burst of container starts: 200 `tetragon-oci-hook createRuntime` processes started at once.
//!
//! `scripts/bench-burst.sh` runs it on the shipped (`dist`) hook; `cargo bench --bench burst --
//! --hook PATH` runs it on any hook binary (default: the hook beside the setup binary of this
//! build). 200 threads wait on a barrier, then each starts one hook (its OCI state on stdin, its
//! own bundle with a `config.json`) and waits for it; a hook's latency is from just before its
//! spawn to its exit. All hooks share one log file, as on a node. Runs:
//!
//! - the stand-in agent up, answering each call after 1 ms (in this process, on its own thread),
//!   first with 10 and 50 hooks at once (how latency grows with the burst), then 200;
//! - the agent down, default fail policy (every container refused, exit 1);
//! - the agent down, `--fail-allow-namespaces default` (every container allowed, exit 0);
//! - the agent up, the log pre-filled to just under the rotation size ([`MAX_SIZE`]) so that the
//!   burst crosses it.
//!
//! After each run the log is read back line by line: every line one JSON object, exactly one
//! decision line per hook (by container id), no other line lost; after the rotation run, across
//! the backup and the new file, with the filler whole in the backup. Prints the numbers and one
//! `target:` line per target; exits 1 when a correctness check fails (a hook that did not end,
//! a wrong exit code, a lost or broken line).

#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier, mpsc};
use std::time::{Duration, Instant};

use oci_hook::log::{LOCK_BUSY_MSG, MAX_SIZE};
use support::child::{ChildGuard, signal_pid};
use test_agent::{Agent, Behavior};

/// Hooks started at once.
const HOOKS: usize = 200;
/// Smaller bursts run first with the agent up, to show how latency grows with the burst.
const SMALLER: [usize; 2] = [10, 50];
/// Bursts with the agent up (latency samples: `HOOKS * ROUNDS_UP`).
const ROUNDS_UP: usize = 5;
/// How long the agent takes to answer.
const AGENT_DELAY: Duration = Duration::from_millis(1);
/// A burst that has not ended by then counts its remaining hooks as hung (and kills them).
const BURST_LIMIT: Duration = Duration::from_secs(60);
/// Target: p99 of a hook's wall time in a burst with the agent up.
const P99_TARGET: Duration = Duration::from_millis(20);

const MSG_OK: &str = "hook request to agent succeeded";
const MSG_ALLOW: &str =
    "failCheck determined that we should not fail this container, even if there was an error";
const MSG_REFUSE: &str = "failing container";

struct Work {
    dir: PathBuf,
    hook: PathBuf,
}

impl Work {
    fn bundle(&self, i: usize) -> PathBuf {
        self.dir.join(format!("bundles/b{i}"))
    }

    /// One bundle per hook: `rootfs/` and a `config.json` naming container `burst-<i>`.
    fn make_bundles(&self) {
        for i in 0..HOOKS {
            let b = self.bundle(i);
            fs::create_dir_all(b.join("rootfs")).unwrap();
            let config = serde_json::json!({
                "ociVersion": "1.2.0",
                "root": {"path": "rootfs"},
                "annotations": {
                    "io.kubernetes.cri-o.ContainerID": format!("burst-{i}"),
                    "io.kubernetes.cri.container-name": "app",
                    "io.kubernetes.cri.sandbox-name": format!("web-{i}"),
                    "io.kubernetes.cri.sandbox-namespace": "default",
                    "io.kubernetes.cri.sandbox-uid": format!("uid-{i}"),
                    "io.kubernetes.cri.image-name": "localhost/library/nginx:1.27",
                },
                "linux": {"cgroupsPath": format!("kubepods-besteffort-pod{i}.slice:cri-containerd:burst{i}")},
            });
            fs::write(b.join("config.json"), config.to_string()).unwrap();
        }
    }
}

/// CPU time (user + system) of the waited-for children of this process so far
/// (`/proc/self/stat` fields `cutime` and `cstime`, in clock ticks of 10 ms).
fn children_cpu() -> Duration {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses): state is field 3.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest.split(' ').map(|v| v.parse().unwrap_or(0)).collect();
    // cutime and cstime are fields 16 and 17, i.e. 13 and 14 after the state.
    Duration::from_millis((f[13] + f[14]) * 10)
}

/// What one burst did.
struct Burst {
    /// Per hook: latency and exit code (`None`: did not end within [`BURST_LIMIT`], killed).
    ends: Vec<(Duration, Option<i32>)>,
    wall: Duration,
}

impl Burst {
    fn ended(&self) -> usize {
        self.ends.iter().filter(|e| e.1.is_some()).count()
    }
    fn codes(&self) -> BTreeMap<Option<i32>, usize> {
        let mut m = BTreeMap::new();
        for e in &self.ends {
            *m.entry(e.1).or_default() += 1;
        }
        m
    }
}

/// Starts `n` processes of `program` at once with `args` (for the hook: ending with the stage
/// name), each with its container's OCI state on stdin, and waits for them all.
fn burst(work: &Work, program: &Path, args: &[String], n: usize) -> Burst {
    let barrier = Arc::new(Barrier::new(n + 1));
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let bundle = work.bundle(i);
        let state = format!(
            r#"{{"ociVersion":"1.0.2","id":"burst-{i}","status":"creating","pid":1,"bundle":"{}"}}"#,
            bundle.display()
        );
        // No `current_dir` (the hook finds the bundle in the state): with one, std cannot use
        // `posix_spawn` in this static build and forks this large, many-threaded process for
        // every hook, which cost more CPU than the hooks themselves (seen with `perf`).
        let mut cmd = Command::new(program);
        // As runc runs a hook: with the hook's own environment, empty here (not this
        // process's: `RUST_BACKTRACE` in it would make every error capture a backtrace).
        cmd.env_clear()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let (barrier, tx) = (barrier.clone(), tx.clone());
        threads.push(std::thread::spawn(move || {
            barrier.wait();
            let start = Instant::now();
            let mut child = ChildGuard::new(cmd.spawn().unwrap());
            tx.send((i, Some(child.id()), None)).unwrap();
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(state.as_bytes());
            }
            // Bounded by the main thread: it kills the hooks still running at BURST_LIMIT.
            let status = child.wait().unwrap();
            let took = start.elapsed();
            tx.send((i, None, Some((took, status.code().unwrap_or(-1)))))
                .unwrap();
        }));
    }
    drop(tx);
    let t0 = Instant::now();
    barrier.wait();
    let mut pids = vec![None; n];
    let mut ends = vec![None; n];
    let deadline = t0 + BURST_LIMIT;
    let mut left = n;
    while left > 0 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((i, Some(pid), _)) => pids[i] = Some(pid),
            Ok((i, None, end)) => {
                ends[i] = end;
                left -= 1;
            }
            Err(_) => break,
        }
    }
    let wall = t0.elapsed();
    let hung: Vec<usize> = (0..n).filter(|i| ends[*i].is_none()).collect();
    for &i in &hung {
        if let Some(pid) = pids[i] {
            let _ = signal_pid(pid as i32, libc::SIGKILL);
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Burst {
        ends: ends
            .into_iter()
            .map(|e| match e {
                Some((d, code)) => (d, Some(code)),
                None => (BURST_LIMIT, None),
            })
            .collect(),
        wall,
    }
}

/// The log files: `log` and its rotated backups (`<stem>-<time>.log`), oldest first.
fn log_files(log: &Path) -> Vec<PathBuf> {
    let dir = log.parent().unwrap();
    let mut backups: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("hook-") && n.ends_with(".log")
        })
        .collect();
    backups.sort();
    if log.exists() {
        backups.push(log.to_path_buf());
    }
    backups
}

/// What reading the log back found.
#[derive(Default)]
struct LogCheck {
    lines: usize,
    /// Lines that are not one whole JSON object, and text after the last newline.
    broken: usize,
    /// Decision lines (`msg` == the expected one) per container id.
    decisions: BTreeMap<String, usize>,
    /// Other decision messages seen (any of the three).
    other_decisions: usize,
    filler: usize,
    by_msg: BTreeMap<String, usize>,
}

fn check_log(files: &[PathBuf], decision: &str) -> LogCheck {
    let mut c = LogCheck::default();
    for f in files {
        let text = fs::read(f).unwrap();
        let (whole, tail) = match text.iter().rposition(|b| *b == b'\n') {
            Some(n) => text.split_at(n + 1),
            None => (&text[..0], &text[..]),
        };
        if !tail.is_empty() {
            c.broken += 1;
        }
        for line in whole.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            c.lines += 1;
            let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice(line) else {
                c.broken += 1;
                continue;
            };
            let msg = obj.get("msg").and_then(|m| m.as_str()).unwrap_or("");
            if msg == "filler" {
                c.filler += 1;
                continue;
            }
            *c.by_msg.entry(msg.to_owned()).or_default() += 1;
            if msg == decision {
                let id = obj.get("req-containerID").and_then(|v| v.as_str());
                *c.decisions.entry(id.unwrap_or("?").to_owned()).or_default() += 1;
            } else if [MSG_OK, MSG_ALLOW, MSG_REFUSE].contains(&msg) {
                c.other_decisions += 1;
            }
        }
    }
    c
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn target(work: &str, measured: &str, target: &str, met: bool) {
    let met = if met { "met" } else { "NOT met" };
    println!("target: {work} | {measured} | {target} | {met}");
}

struct Scenario<'a> {
    name: &'a str,
    /// Hooks started at once.
    hooks: usize,
    args: Vec<String>,
    code: i32,
    decision: &'a str,
    rounds: usize,
}

/// Runs `s`, prints its numbers; returns false when a correctness check failed.
fn run(work: &Work, s: &Scenario<'_>, prefill: u64) -> (bool, Vec<Duration>) {
    let log = work.dir.join("logs/hook.log");
    let mut ok = true;
    let mut lat = Vec::new();
    let (mut ended, mut total, mut wrong_code) = (0, 0, 0);
    let mut codes: BTreeMap<Option<i32>, usize> = BTreeMap::new();
    let mut walls = Vec::new();
    let mut busy = 0;
    let cpu_before = children_cpu();
    for _ in 0..s.rounds {
        let _ = fs::remove_dir_all(log.parent().unwrap());
        fs::create_dir_all(log.parent().unwrap()).unwrap();
        let mut filler = 0;
        if prefill > 0 {
            filler = fill_log(&log, prefill);
        }
        let mut args = vec!["--log-fname".to_owned(), log.display().to_string()];
        args.extend(s.args.iter().cloned());
        args.push("createRuntime".to_owned());
        let b = burst(work, &work.hook, &args, s.hooks);
        walls.push(b.wall);
        ended += b.ended();
        total += s.hooks;
        for (code, n) in b.codes() {
            *codes.entry(code).or_default() += n;
            if code != Some(s.code) {
                wrong_code += n;
            }
        }
        lat.extend(b.ends.iter().filter(|e| e.1.is_some()).map(|e| e.0));

        let files = log_files(&log);
        let c = check_log(&files, s.decision);
        busy += c.by_msg.get(LOCK_BUSY_MSG).copied().unwrap_or(0);
        let once = (0..s.hooks)
            .filter(|i| c.decisions.get(&format!("burst-{i}")) == Some(&1))
            .count();
        let extra = c.decisions.values().sum::<usize>() - once;
        let round_ok = c.broken == 0
            && once == s.hooks
            && extra == 0
            && c.other_decisions == 0
            && c.filler == filler;
        if !round_ok || prefill > 0 {
            let sizes: Vec<String> = files
                .iter()
                .map(|f| {
                    format!(
                        "{} {} B",
                        f.file_name().unwrap().to_string_lossy(),
                        fs::metadata(f).unwrap().len()
                    )
                })
                .collect();
            println!(
                "  {}: log files [{}]; {} lines, {} broken, {once}/{} hooks with exactly one \
                 decision line, {extra} extra, {} other decisions, filler {}/{filler}; by msg {:?}",
                s.name,
                sizes.join(", "),
                s.hooks,
                c.lines,
                c.broken,
                c.other_decisions,
                c.filler,
                c.by_msg
            );
        }
        if prefill > 0 {
            // Two concurrent rotators can leave a second, small backup (see oci-hook/src/log.rs);
            // what must hold is that the filler and every decision line are somewhere.
            let rotated = files.len() >= 2;
            let within = files[..files.len().saturating_sub(1)]
                .iter()
                .all(|f| fs::metadata(f).unwrap().len() <= MAX_SIZE);
            println!(
                "  {}: rotated: {rotated} ({} backups); every backup within the size limit: {within}",
                s.name,
                files.len().saturating_sub(1)
            );
            ok &= rotated;
        }
        ok &= round_ok;
    }
    ok &= ended == total && wrong_code == 0;
    let cpu = (children_cpu() - cpu_before) / total as u32;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{}: hooks that found the log lock busy for {} and wrote without it: {busy}",
        s.name,
        ms(oci_hook::log::LOCK_WAIT)
    );
    println!(
        "{}: CPU (user + system) per hook {}: {} hooks need at least {} on {cores} cores",
        s.name,
        ms(cpu),
        s.hooks,
        ms(cpu * s.hooks as u32 / cores as u32)
    );
    lat.sort();
    walls.sort();
    println!(
        "{}: {ended}/{total} hooks ended, exit codes {:?}; latency p50 {}, p99 {}, max {}; \
         burst wall (median of {}) {}",
        s.name,
        codes
            .iter()
            .map(|(c, n)| (c.map_or("hung".to_owned(), |c| c.to_string()), *n))
            .collect::<Vec<_>>(),
        ms(pct(&lat, 50.0)),
        ms(pct(&lat, 99.0)),
        ms(*lat.last().unwrap()),
        walls.len(),
        ms(walls[walls.len() / 2]),
    );
    (ok, lat)
}

/// The machine's floor for a burst: [`HOOKS`] processes of a static binary that does nothing
/// (busybox `true`), started and waited for the same way, [`ROUNDS_UP`] times. Prints p50/p99/max
/// and CPU per process; returns the p99 (`None` when there is no static busybox).
fn floor(work: &Work) -> Option<Duration> {
    let bin = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())?;
    let cpu_before = children_cpu();
    let mut lat = Vec::new();
    for _ in 0..ROUNDS_UP {
        let b = burst(work, bin, &["true".to_owned()], HOOKS);
        assert_eq!(b.ended(), HOOKS, "`{} true` did not end", bin.display());
        lat.extend(b.ends.iter().map(|e| e.0));
    }
    let cpu = (children_cpu() - cpu_before) / (HOOKS * ROUNDS_UP) as u32;
    lat.sort();
    println!(
        "floor ({HOOKS} `{} true` at once, static, does nothing): latency p50 {}, p99 {}, max {}; \
         CPU per process {}",
        bin.display(),
        ms(pct(&lat, 50.0)),
        ms(pct(&lat, 99.0)),
        ms(*lat.last().unwrap()),
        ms(cpu)
    );
    Some(pct(&lat, 99.0))
}

/// Writes JSON filler lines to `log` until it is `size` bytes; returns how many.
fn fill_log(log: &Path, size: u64) -> usize {
    let line = format!(
        "{{\"time\":\"2026-01-01T00:00:00.000000000Z\",\"level\":\"INFO\",\"msg\":\"filler\",\"pad\":\"{}\"}}\n",
        "x".repeat(400)
    );
    let n = (size / line.len() as u64) as usize;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut buf = String::with_capacity(1 << 20);
    for _ in 0..n {
        buf.push_str(&line);
        if buf.len() > (1 << 20) - line.len() {
            f.write_all(buf.as_bytes()).unwrap();
            buf.clear();
        }
    }
    f.write_all(buf.as_bytes()).unwrap();
    n
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--test") {
        return; // `cargo test --benches`: nothing to check here
    }
    let hook = match args.iter().position(|a| a == "--hook") {
        Some(i) => PathBuf::from(&args[i + 1]),
        None => PathBuf::from(support::hook_bin()),
    };
    let dir = tempfile::Builder::new().prefix("burst").tempdir().unwrap();
    let work = Work {
        dir: dir.path().to_path_buf(),
        hook: fs::canonicalize(&hook).unwrap(),
    };
    work.make_bundles();
    println!(
        "hook: {} ({} bytes); {HOOKS} hooks per burst; load average (1 min) {}",
        work.hook.display(),
        fs::metadata(&work.hook).unwrap().len(),
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .next()
            .unwrap_or("?")
    );

    let agent = Agent::start_at(
        &work.dir.join("agent.sock"),
        Behavior::AcceptAfter(AGENT_DELAY),
    );
    let up = vec!["--grpc-address".to_owned(), agent.address()];
    let down = vec![
        "--grpc-address".to_owned(),
        format!("unix://{}", work.dir.join("none.sock").display()),
    ];
    let mut all_ok = true;
    let floor = floor(&work);
    // Smaller bursts first: how the latency grows with the number started at once.
    let mut expected_calls = 0;
    for n in SMALLER {
        let name = format!("agent up (1 ms), {n} at once");
        let s = Scenario {
            name: &name,
            hooks: n,
            args: up.clone(),
            code: 0,
            decision: MSG_OK,
            rounds: ROUNDS_UP,
        };
        all_ok &= run(&work, &s, 0).0;
        expected_calls += n * ROUNDS_UP;
    }
    let s = Scenario {
        name: "agent up (1 ms)",
        hooks: HOOKS,
        args: up.clone(),
        code: 0,
        decision: MSG_OK,
        rounds: ROUNDS_UP,
    };
    let (ok, lat) = run(&work, &s, 0);
    all_ok &= ok;
    // The last round's log, still there: bytes per hook, for the rotation run.
    let log_len = fs::metadata(work.dir.join("logs/hook.log")).map_or(0, |m| m.len());
    let per_hook = (log_len / HOOKS as u64).max(100);
    let p99 = pct(&lat, 99.0);
    target(
        &format!("hook burst, {HOOKS} at once, agent up (p99)"),
        &ms(p99),
        &format!("< {}", ms(P99_TARGET)),
        p99 < P99_TARGET,
    );
    if let Some(floor) = floor {
        println!(
            "agent up (1 ms): p99 {} is {:.1}x the floor's p99 {} ({HOOKS} static `true` at once)",
            ms(p99),
            p99.as_secs_f64() / floor.as_secs_f64(),
            ms(floor)
        );
    }
    let calls = agent.requests().len();
    expected_calls += HOOKS * ROUNDS_UP;
    println!("agent received {calls} calls (expected {expected_calls})");
    all_ok &= calls == expected_calls;

    for (name, mut extra, code, decision) in [
        ("agent down, refused", vec![], 1, MSG_REFUSE),
        (
            "agent down, allowed",
            vec!["--fail-allow-namespaces".to_owned(), "default".to_owned()],
            0,
            MSG_ALLOW,
        ),
    ] {
        let mut a = down.clone();
        a.append(&mut extra);
        let s = Scenario {
            name,
            hooks: HOOKS,
            args: a,
            code,
            decision,
            rounds: 2,
        };
        let (ok, lat) = run(&work, &s, 0);
        all_ok &= ok;
        target(
            &format!("hook burst, {HOOKS} at once, {name}: all end (max)"),
            &ms(*lat.last().unwrap()),
            "all end, right exit code",
            ok,
        );
    }

    // The burst crosses the rotation size: about half its lines before, half after.
    let s = Scenario {
        name: "agent up, crossing the rotation size",
        hooks: HOOKS,
        args: up,
        code: 0,
        decision: MSG_OK,
        rounds: 1,
    };
    let (ok, _) = run(&work, &s, MAX_SIZE - (HOOKS as u64 / 2) * per_hook);
    all_ok &= ok;
    target(
        "hook burst: hooks hung, wrong exit codes, log lines lost/broken (all runs)",
        if all_ok { "0" } else { "some (see above)" },
        "0",
        all_ok,
    );
    drop(agent);
    if !all_ok {
        std::process::exit(1);
    }
}
