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

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;
use rthooks::nri::mux::{self, Demux};
use rthooks::nri::proto::nri::{
    ConfigureRequest, Container, CreateContainerRequest, CreateContainerResponse, PodSandbox,
};
use rthooks::nri::ttrpc::{self, Assembler, Message};

const BIN: &str = env!("CARGO_BIN_EXE_tetragon-oci-hook-setup");

struct Conn {
    stream: UnixStream,
    demux: Demux,
    conn1: Assembler,
    conn2: Assembler,
    got1: Vec<Message>,
    got2: Vec<Message>,
    buf: Vec<u8>,
    next: u32,
}

impl Conn {
    fn new(stream: UnixStream) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            stream,
            demux: Demux::new(),
            conn1: Assembler::new(),
            conn2: Assembler::new(),
            got1: Vec::new(),
            got2: Vec::new(),
            buf: vec![0; 65536],
            next: 1,
        }
    }

    fn read(&mut self) {
        let n = self.stream.read(&mut self.buf).unwrap();
        assert!(n > 0, "plugin closed");
        let (a, b, ga, gb) = (
            &mut self.conn1,
            &mut self.conn2,
            &mut self.got1,
            &mut self.got2,
        );
        self.demux
            .feed(&self.buf[..n], |c, f| {
                if c == 1 { a.feed(f, ga) } else { b.feed(f, gb) }
            })
            .unwrap();
    }

    fn register_request(&mut self) -> u32 {
        while self.got2.is_empty() {
            self.read();
        }
        match self.got2.remove(0) {
            Message::Complete { stream_id, .. } => stream_id,
            m => panic!("{m:?}"),
        }
    }

    /// Sends `msg` on connection 1 split like Go's bufio writer does (4,096 bytes, then the rest).
    fn send(&mut self, msg: &[u8]) {
        let mut wire = Vec::with_capacity(msg.len() + 16);
        let (a, b) = msg.split_at(msg.len().min(4096));
        for part in [a, b] {
            if !part.is_empty() {
                wire.extend_from_slice(&1u32.to_be_bytes());
                wire.extend_from_slice(&(part.len() as u32).to_be_bytes());
                wire.extend_from_slice(part);
            }
        }
        self.stream.write_all(&wire).unwrap();
    }

    fn call(&mut self, method: &str, payload: Vec<u8>) -> Vec<u8> {
        let id = self.next;
        self.next += 2;
        let msg = ttrpc::request(id, "nri.pkg.api.v1alpha1.Plugin", method, payload);
        self.send(&msg);
        loop {
            if let Some(Message::Complete { payload, .. }) = self.got1.pop() {
                let resp =
                    rthooks::nri::proto::ttrpc::Response::decode(payload.as_slice()).unwrap();
                return resp.payload;
            }
            self.read();
        }
    }
}

fn create_request() -> Vec<u8> {
    let mut container = Container {
        id: "4f3c2b1a".repeat(8),
        pod_sandbox_id: "pod".into(),
        name: "nginx".into(),
    }
    .encode_to_vec();
    for i in 0..140 {
        let env = format!("ENV_VARIABLE_NUMBER_{i:03}=some-value-that-is-long-enough-{i:040}");
        container.push(0x42);
        prost::encoding::encode_varint(env.len() as u64, &mut container);
        container.extend_from_slice(env.as_bytes());
    }
    let mut out = CreateContainerRequest {
        pod: Some(PodSandbox {
            id: "pod".into(),
            name: "web-0".into(),
            uid: "u".into(),
            namespace: "default".into(),
        }),
        container: None,
    }
    .encode_to_vec();
    out.push(0x12);
    prost::encoding::encode_varint(container.len() as u64, &mut out);
    out.extend_from_slice(&container);
    out
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn accept(listener: &UnixListener) -> Conn {
    let (s, _) = listener.accept().unwrap();
    Conn::new(s)
}

fn spawn(dir: &Path) -> Child {
    std::fs::create_dir_all(dir.join("install")).unwrap();
    std::fs::write(dir.join("tetragon-oci-hook"), b"#!/bin/sh\n").unwrap();
    Command::new(BIN)
        .args(["install", "--interface", "nri-hook", "--daemonize"])
        .arg("--local-binary")
        .arg(dir.join("tetragon-oci-hook"))
        .arg("--local-install-dir")
        .arg(dir.join("install"))
        .args(["--host-install-dir", "/opt/tetragon"])
        .arg("--nri-hook.socket")
        .arg(dir.join("nri.sock"))
        .args([
            "hook-args",
            "--grpc-address",
            "unix:///var/run/tetragon/tetragon.sock",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("nri.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut child = spawn(dir.path());
    let mut c = accept(&listener);
    let reg = c.register_request();
    c.call("Configure", ConfigureRequest::default().encode_to_vec());
    mux::write_frames(&mut c.stream, 2, &ttrpc::ok_response(reg, Vec::new())).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = child.id();
    println!("idle RSS: {} KiB", rss_kib(pid));

    let req = create_request();
    println!("CreateContainer request: {} bytes", req.len());
    let check =
        CreateContainerResponse::decode(c.call("CreateContainer", req.clone()).as_slice()).unwrap();
    assert_eq!(check.adjust.unwrap().hooks.unwrap().create_runtime.len(), 1);
    let mut times = Vec::with_capacity(100_000);
    let mut rss_1k = 0;
    for i in 0..100_000 {
        let t = Instant::now();
        let resp = c.call("CreateContainer", req.clone());
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
    let mut listener = listener;
    let mut conn = c;
    for gap_ms in [0u64, 50, 100, 500] {
        let mut samples = Vec::new();
        for _ in 0..5 {
            drop(conn);
            drop(listener);
            std::fs::remove_file(&sock).unwrap();
            std::thread::sleep(Duration::from_millis(gap_ms));
            listener = UnixListener::bind(&sock).unwrap();
            let back = Instant::now();
            conn = accept(&listener);
            let reg = conn.register_request();
            samples.push(back.elapsed());
            conn.call("Configure", ConfigureRequest::default().encode_to_vec());
            mux::write_frames(&mut conn.stream, 2, &ttrpc::ok_response(reg, Vec::new())).unwrap();
        }
        samples.sort();
        println!(
            "socket back after {gap_ms} ms down: RegisterPlugin after median {:?}, max {:?}",
            samples[samples.len() / 2],
            samples[samples.len() - 1]
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
