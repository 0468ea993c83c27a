//! `tetragon-oci-hook`: the OCI hook the container runtime runs before each container starts.
//! This file only collects arguments and prints; the work is in `oci_hook`.

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let outcome = oci_hook::run(&args);
    // Not `print!`: it panics on a closed pipe (EPIPE), and a panic would turn the policy's
    // exit status into an abort. What cannot be printed is lost; the status still counts.
    let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    ExitCode::from(outcome.code)
}
