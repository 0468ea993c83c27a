//! `tetragon-oci-hook-setup`: patches container-runtime configuration for Tetragon's runtime
//! hooks and installs the hook.
//!
//! This file parses the command line ([`cli`]), runs it ([`ops`], one module per command, over
//! the `rthooks` core), and turns the outcome into an exit code: 0, 1 for `--check` with
//! changes pending, 2 for an error (printed as `error: ...`, its causes, then `help: ...`).

mod cli;
mod ops;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Started by containerd from its NRI `plugin_path`: no arguments, a socket in the environment.
    if std::env::args_os().len() == 1 {
        if let Some(fd) = std::env::var_os(rthooks::nri::SOCKET_ENV) {
            return exit(ops::run_prelaunched_from_config(&fd.to_string_lossy()));
        }
    }
    let argv: Vec<_> = std::env::args_os().collect();
    let json = cli::json_command(&argv);
    match cli::parse_cli(argv) {
        Ok(cli) => exit(ops::run(cli)),
        Err(err) => exit(ops::parse_failed(err, json)),
    }
}

/// The exit code of a run; an error is printed first.
fn exit(outcome: anyhow::Result<ExitCode>) -> ExitCode {
    outcome.unwrap_or_else(|err| {
        ops::print_error(&err);
        ExitCode::from(2)
    })
}
