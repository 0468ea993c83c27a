//! NRI plugin benchmark, against a fake runtime (the other side of the mux), with the release
//! binary: `cargo bench --bench nri`.
//!
//! - time to answer one `CreateContainer` (a 13 KB request sent as a 4,096-byte and a 9 KB frame,
//!   as containerd does), median and p99 over many requests;
//! - the plugin's RSS while idle, and after 1k and 100k requests (it must stay flat);
//! - time from the runtime's socket coming back to the plugin's `RegisterPlugin`.
//!
//! Prints one line per number; asserts nothing (targets: < 200 µs median, < 10 MiB idle, flat
//! RSS, < 1 s to re-register).

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
use rthooks::nri::proto::nri::CreateContainerResponse;
use support::fake_nri::{Setup, create_request_sized};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn main() {
    let mut setup = Setup::start(&[]);
    let sock = Setup::socket(setup.dir.path());
    let mut c = setup.registered();
    std::thread::sleep(Duration::from_millis(200));
    let pid = setup.child.id();
    println!("idle RSS: {} KiB", rss_kib(pid));

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
    times.sort();
    let pct = |p: usize| times[times.len() * p / 100];
    println!(
        "CreateContainer round trip over 100k: median {:?}, p99 {:?}, max {:?}",
        pct(50),
        pct(99),
        times[times.len() - 1]
    );
    println!(
        "RSS after 1k requests: {rss_1k} KiB; after 100k: {} KiB",
        rss_kib(pid)
    );

    // Re-registration: the runtime goes away (connection and socket), comes back after `gap`.
    let mut conn = c;
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
        println!(
            "socket back after {gap_ms} ms down: RegisterPlugin after median {:?}, max {:?}",
            samples[samples.len() / 2],
            samples[samples.len() - 1]
        );
    }
}
