//! `print-config`: the hook file for a hook binary, on stdout.

use std::process::ExitCode;

use crate::cli::PrintConfigArgs;

/// `print-config`.
pub(super) fn print_config(args: &PrintConfigArgs) -> anyhow::Result<ExitCode> {
    print!(
        "{}",
        rthooks::install::print_config(&args.binary, &args.args)?
    );
    Ok(ExitCode::SUCCESS)
}
