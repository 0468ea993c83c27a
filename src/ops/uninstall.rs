//! `uninstall`: remove the hook file and the binary (only the binary for `nri-hook`), then the
//! lock and lease files of `--daemonize` installers that are gone.

use std::process::ExitCode;

use rthooks::install::{self, UninstallOptions};

use super::{report, show_plan};
use crate::cli::{Interface, UninstallArgs};

/// `uninstall`.
pub(super) fn uninstall(args: UninstallArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    let plan = if args.interface == Interface::NriHook {
        install::plan_uninstall_binary(&args.local_install_dir, &args.binary_name)?
    } else {
        install::plan_uninstall(&UninstallOptions {
            local_install_dir: args.local_install_dir.clone(),
            binary_name: args.binary_name.clone(),
            hooks_dir: args.oci_hooks_local_dir.clone(),
        })?
    };
    show_plan(&plan, verbose || args.dry_run);
    if args.dry_run {
        eprintln!("dry run: nothing removed");
        return Ok(ExitCode::SUCCESS);
    }
    report(&plan.apply()?, verbose);
    // Lock and lease files of `--daemonize` installers that are gone (killed) go too; those of
    // live installers stay (they are in use), as does nothing when the dir is missing.
    if args.local_install_dir.is_dir() {
        match install::clean_up_installer_files(&args.local_install_dir, &args.binary_name) {
            Ok(r) if verbose => {
                for stale in &r.stale {
                    eprintln!("removed the stale lease `{}`", stale.display());
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("warning: {e:#}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
