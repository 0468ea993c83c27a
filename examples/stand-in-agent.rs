//! The tests' stand-in Tetragon agent as a program, for benchmarks and manual end-to-end runs:
//! `stand-in-agent [--delay-ms N] SOCKET` serves the trimmed gRPC service on the unix socket
//! SOCKET, accepting every `RuntimeHook` call (after N ms when `--delay-ms` is given, as an agent
//! that takes time to answer) and printing each `CreateContainer` as one JSON line on stdout,
//! until stdin closes.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    missing_docs
)]

use std::io::Read;
use std::time::Duration;

fn main() {
    let usage = || -> ! {
        eprintln!("usage: stand-in-agent [--delay-ms N] SOCKET (serves until stdin closes)");
        std::process::exit(2);
    };
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut behavior = test_agent::Behavior::Accept;
    if args.first().is_some_and(|a| a == "--delay-ms") {
        let Some(ms) = args.get(1).and_then(|v| v.parse::<u64>().ok()) else {
            usage()
        };
        behavior = test_agent::Behavior::AcceptAfter(Duration::from_millis(ms));
        args.drain(..2);
    }
    let [socket] = args.as_slice() else { usage() };
    let agent = test_agent::Agent::start_at(socket.as_ref(), behavior);
    println!("ready {}", agent.address());
    let printer = std::thread::spawn({
        let seen = agent.seen_handle();
        move || {
            let mut printed = 0;
            loop {
                let batch: Vec<_> = seen.lock().unwrap()[printed..].to_vec();
                for cc in &batch {
                    let line = serde_json::json!({
                        "cgroupsPath": cc.cgroups_path,
                        "rootDir": cc.root_dir,
                        "podNamespace": cc.pod_namespace,
                        "containerName": cc.container_name,
                    });
                    println!("{line}");
                }
                printed += batch.len();
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(agent);
    drop(printer);
}
