//! `print-config`: the hook file for a hook binary, on stdout.

use std::process::ExitCode;

use crate::cli::PrintConfigArgs;

/// `print-config`: the hook's arguments are checked as `install` checks them (the same
/// function, the same errors), so a typo is refused here too rather than printed into a hook
/// file that would fail every container start.
pub(super) fn print_config(args: &PrintConfigArgs) -> anyhow::Result<ExitCode> {
    let json = rthooks::install::print_config(&args.binary, &args.args)?;
    if let Some(warning) = rthooks::install::validate_hook_args(&args.binary, &args.args)? {
        eprintln!("warning: {warning}");
    }
    print!("{json}");
    Ok(ExitCode::SUCCESS)
}
