//! `install --interface oci-hooks`: validate the hook's arguments, plan the binary copy and the
//! hook file, print the plan, apply it; with `--daemonize`, hold a lease, wait for SIGINT or
//! SIGTERM, then remove what was installed unless another installer still holds it.

use std::process::ExitCode;

use anyhow::Context;
use rthooks::install::{self, InstallOptions};
use rthooks::sys::TerminationSignals;

use super::{report, show_plan};
use crate::cli::{InstallArgs, InstallTail};

/// `install --interface oci-hooks`.
pub(super) fn install(args: InstallArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    // Block the signals before installing: one that arrives meanwhile waits until we can
    // uninstall, instead of killing the process between the two files.
    let signals = if args.daemonize && !args.dry_run {
        Some(TerminationSignals::block().context("failed to block SIGINT and SIGTERM")?)
    } else {
        None
    };
    // Before anything is written: a hooks dir the runtime does not read would install a hook
    // that is never run.
    for note in super::runtime_conf::check_hooks_dir(&args)? {
        if verbose {
            eprintln!("note: {note}");
        }
    }
    let hook_args = match args.hook_args {
        Some(InstallTail::HookArgs { args }) => args,
        None => Vec::new(),
    };
    // A typo in the hook's flags fails this install (one pod) now, rather than every container
    // on the node later. The CEL expression is compiled by the hook being installed.
    if let Some(warning) = install::validate_hook_args(&args.local_binary, &hook_args)? {
        eprintln!("warning: {warning}");
    }
    let opts = InstallOptions {
        local_binary: args.local_binary,
        local_install_dir: args.local_install_dir,
        host_install_dir: args.host_install_dir,
        hooks_dir: args.oci_hooks_local_dir,
        hook_args,
    };
    let mut installation = install::plan_install(&opts)?;
    // Overlapping `--daemonize` installers (a DaemonSet update with maxSurge, a manual run
    // beside the pod) share the files: each holds a lease, and the guard serializes installing
    // and removing. Plan again under the guard: one exiting meanwhile may have removed files.
    let guard = match &signals {
        Some(_) => {
            let guard = install::InstallersGuard::lock(
                &opts.local_install_dir,
                binary_name(&installation),
                install::GUARD_WAIT,
            )?;
            installation = install::plan_install(&opts)?;
            Some(guard)
        }
        None => None,
    };
    for note in &installation.notes {
        eprintln!("note: {note}");
    }
    show_plan(&installation.plan, verbose || args.dry_run);
    if args.dry_run {
        eprintln!("dry run: nothing written");
        return Ok(ExitCode::SUCCESS);
    }
    report(&installation.plan.apply()?, verbose);
    if verbose {
        eprintln!(
            "installed hook `{}` for binary `{}`",
            installation.hook_path.display(),
            installation.binary_path.display()
        );
    }
    let (Some(signals), Some(guard)) = (signals, guard) else {
        return Ok(ExitCode::SUCCESS);
    };
    let name = binary_name(&installation);
    let lease = install::InstallerLease::take(&opts.local_install_dir, name, &guard)?;
    drop(guard);
    // Installed: automation reading the JSON result gets it now, not at uninstall.
    super::json::emit(0);
    eprintln!("waiting for SIGINT or SIGTERM to uninstall");
    let signal = signals
        .wait()
        .context("failed to wait for SIGINT or SIGTERM")?;
    eprintln!("received {signal}: uninstalling");
    // Bounded: past the wait, decide without the guard rather than leave a hook with no agent.
    let guard =
        match install::InstallersGuard::lock(&opts.local_install_dir, name, install::GUARD_WAIT) {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("warning: {e:#}; deciding without it");
                None
            }
        };
    // If the leases cannot be read, remove: a hook left behind with no agent fails containers.
    let release = lease.release(guard.as_ref()).unwrap_or_else(|e| {
        eprintln!("warning: {e:#}; removing as if no other installer were running");
        install::Release::default()
    });
    for stale in &release.stale {
        eprintln!(
            "removed the stale lease `{}` of an installer that is gone",
            stale.display()
        );
    }
    if let Some(live) = release.live.first() {
        eprintln!(
            "another installer still holds the hook (lease `{}`): `{}` and `{}` are left in place",
            live.display(),
            installation.hook_path.display(),
            installation.binary_path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    report(&installation.undo_plan()?.apply()?, true);
    if let Some(guard) = guard {
        guard.remove();
    }
    Ok(ExitCode::SUCCESS)
}

/// The installed binary's file name (the lease and guard files are named after it).
fn binary_name(installation: &install::Installation) -> &str {
    installation
        .binary_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(rthooks::defaults::BINARY_NAME)
}
