//! NRI plugin benchmark, against a fake runtime (the other side of the mux), with the release
//! binary: `cargo bench --bench nri`.
//!
//! - a runtime with 5,000 existing containers (2,500 pods): the `Synchronize` payload (about
//!   13 KB per container) split as containerd splits it (`fake_nri::synchronize_requests`, under
//!   ttrpc's 4 MiB), time from the first message to the last answer, and the RSS after;
//! - time to answer one `CreateContainer` (a 13 KB request sent as a 4,096-byte and a 9 KB frame,
//!   as containerd does): p50/p99 of the first 1,000 back to back, median and p99 over 100k;
//! - the plugin's RSS while idle, and after 1k and 100k requests (it must stay flat);
//! - time from the runtime's socket coming back to the plugin's `RegisterPlugin`.
//!
//! Prints one line per number and a `target:` line per target (< 200 µs p99 over 1,000
//! `CreateContainer`, < 10 MiB idle, RSS flat: at most 1 MiB more after 100k requests than
//! after 1k, < 1 s to re-register, the whole `Synchronize` within containerd's 2 s plugin
//! request timeout); asserts only that the answers are right. The peak RSS through
//! `Synchronize` is printed, without a target.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use prost::Message as _;
use rthooks::nri::proto::nri::{CreateContainerResponse, SynchronizeResponse};
use support::fake_nri::{Setup, create_request_sized, ok_payload};

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Peak RSS so far.
fn hwm_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn target(work: &str, measured: &str, target: &str, met: bool) {
    let met = if met { "met" } else { "NOT met" };
    println!("target: {work} | {measured} | {target} | {met}");
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    if std::env::args().any(|a| a == "--test") {
        return; // `cargo test --benches`: nothing to check here
    }
    let mut setup = Setup::start(&[]);
    let sock = Setup::socket(setup.dir.path());
    let mut c = setup.registered();
    std::thread::sleep(Duration::from_millis(200));
    let pid = setup.child.id();
    let idle = rss_kib(pid);
    println!("idle RSS: {idle} KiB");
    target(
        "NRI plugin RSS, idle",
        &format!("{:.1} MiB", idle as f64 / 1024.0),
        "< 10 MiB",
        idle < 10 * 1024,
    );

    // A runtime with 5,000 containers: Synchronize, split as containerd splits it.
    let pods = support::fake_nri::pods_bytes(2500);
    let ctrs: Vec<Vec<u8>> = (0..5000)
        .map(|i| {
            let id = format!("{i:064x}");
            support::fake_nri::container_bytes("app", &id, &format!("pod-{}", i / 2), 135)
        })
        .collect();
    let messages = support::fake_nri::synchronize_requests(&pods, &ctrs);
    let bytes: usize = messages.iter().map(Vec::len).sum();
    let mut sync_times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for (i, m) in messages.iter().enumerate() {
            let resp = c.call_as_containerd("Synchronize", m.clone());
            let resp = SynchronizeResponse::decode(ok_payload(resp).as_slice()).unwrap();
            assert_eq!(resp.more, i + 1 < messages.len());
        }
        sync_times.push(t.elapsed());
    }
    sync_times.sort();
    let sync_rss = rss_kib(pid);
    let sync_peak = hwm_kib(pid);
    println!(
        "Synchronize of 2,500 pods / 5,000 containers ({:.1} MB in {} messages): median of 5 {:.1} ms, \
         max {:.1} ms; RSS after {sync_rss} KiB, peak {sync_peak} KiB",
        bytes as f64 / 1e6,
        messages.len(),
        sync_times[2].as_secs_f64() * 1e3,
        sync_times[4].as_secs_f64() * 1e3,
    );
    target(
        "NRI Synchronize, 5,000 containers (median)",
        &format!("{:.1} ms", sync_times[2].as_secs_f64() * 1e3),
        "< 2 s (containerd's timeout)",
        sync_times[4] < Duration::from_secs(2),
    );
    let before_creates = rss_kib(pid);

    let req = create_request_sized("nginx", &"4f3c2b1a".repeat(8), 140);
    println!("CreateContainer request: {} bytes", req.len());
    let call = |c: &mut support::fake_nri::Conn, req: Vec<u8>| {
        c.call_as_containerd("CreateContainer", req).payload
    };
    let check = CreateContainerResponse::decode(call(&mut c, req.clone()).as_slice()).unwrap();
    assert_eq!(check.adjust.unwrap().hooks.unwrap().create_runtime.len(), 1);
    let mut times = Vec::with_capacity(100_000);
    let mut rss_1k = 0;
    for i in 0..100_000 {
        let t = Instant::now();
        let resp = call(&mut c, req.clone());
        times.push(t.elapsed());
        assert!(!resp.is_empty());
        if i == 999 {
            rss_1k = rss_kib(pid);
        }
    }
    let mut first = times[..1000].to_vec();
    first.sort();
    let p = |v: &[Duration], q: usize| v[v.len() * q / 100];
    println!(
        "CreateContainer, first 1,000 back to back: p50 {}, p99 {}, max {}; RSS before {before_creates} KiB, after {rss_1k} KiB",
        us(p(&first, 50)),
        us(p(&first, 99)),
        us(first[999]),
    );
    target(
        "NRI CreateContainer, 1,000 back to back (p99)",
        &us(p(&first, 99)),
        "< 200 µs",
        p(&first, 99) < Duration::from_micros(200),
    );
    times.sort();
    let pct = |p: usize| times[times.len() * p / 100];
    println!(
        "CreateContainer round trip over 100k: median {:?}, p99 {:?}, max {:?}",
        pct(50),
        pct(99),
        times[times.len() - 1]
    );
    let rss_100k = rss_kib(pid);
    println!("RSS after 1k requests: {rss_1k} KiB; after 100k: {rss_100k} KiB");
    target(
        "NRI plugin RSS, 1k -> 100k CreateContainer",
        &format!("{rss_1k} -> {rss_100k} KiB"),
        "flat (< +1 MiB)",
        rss_100k < rss_1k + 1024,
    );

    // Re-registration: the runtime goes away (connection and socket), comes back after `gap`.
    let mut conn = c;
    let mut worst = Duration::ZERO;
    for gap_ms in [0u64, 50, 100, 500] {
        let mut samples = Vec::new();
        for _ in 0..5 {
            drop(conn);
            drop(setup.listener.take());
            std::fs::remove_file(&sock).unwrap();
            std::thread::sleep(Duration::from_millis(gap_ms));
            setup.listener = Some(UnixListener::bind(&sock).unwrap());
            let back = Instant::now();
            conn = setup.accept();
            let (reg, _) = conn.register_request();
            samples.push(back.elapsed());
            conn.configure("");
            conn.reply_register(reg);
        }
        samples.sort();
        worst = worst.max(samples[samples.len() - 1]);
        println!(
            "socket back after {gap_ms} ms down: RegisterPlugin after median {:?}, max {:?}",
            samples[samples.len() / 2],
            samples[samples.len() - 1]
        );
    }
    target(
        "NRI re-registration after the runtime's socket is back (max)",
        &format!("{:.0} ms", worst.as_secs_f64() * 1e3),
        "< 1 s",
        worst < Duration::from_secs(1),
    );
}
