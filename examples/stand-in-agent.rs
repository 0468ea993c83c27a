//! The tests' stand-in Tetragon agent as a program, for benchmarks and manual end-to-end runs:
//! `stand-in-agent SOCKET` serves the trimmed gRPC service on the unix socket SOCKET, accepting
//! every `RuntimeHook` call and printing each `CreateContainer` as one JSON line on stdout,
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
    let Some(socket) = std::env::args().nth(1) else {
        eprintln!("usage: stand-in-agent SOCKET (serves until stdin closes)");
        std::process::exit(2);
    };
    let agent = test_agent::Agent::start_at(socket.as_ref(), test_agent::Behavior::Accept);
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
