//! `install --interface nri-hook` (copy the binary, then run as an NRI plugin until a signal)
//! and the plugin containerd pre-launches from its `plugin_path`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use rthooks::defaults;
use rthooks::error::help_error;
use rthooks::install;
use rthooks::nri::{self, ExternalOptions, Prelaunched};
use rthooks::sys::TerminationSignals;

use super::{report, show_plan};
use crate::cli::{InstallArgs, InstallTail};

/// Started by containerd from its NRI `plugin_path`: the socket is the inherited descriptor
/// `fd`, the hook comes in the plugin's configuration.
pub(crate) fn run_prelaunched_from_config(fd: &str) -> anyhow::Result<ExitCode> {
    let signals = TerminationSignals::block().context("failed to block SIGINT and SIGTERM")?;
    let sfd = signals.signalfd().context("failed to create a signalfd")?;
    nri::run_prelaunched(
        fd,
        defaults::NRI_PLUGIN_NAME,
        defaults::NRI_PLUGIN_INDEX,
        Prelaunched::FromConfig,
        &sfd,
        nri::log::Level::Info,
        None,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `install --interface nri-hook`: copy the binary, then run as an NRI plugin until a signal.
pub(super) fn install(args: InstallArgs, log_level: nri::log::Level) -> anyhow::Result<ExitCode> {
    nri::plugin::check_index(&args.nri_hook_index)?;
    nri::plugin::check_name(&args.nri_hook_name)?;
    if !args.daemonize && !args.dry_run {
        return Err(help_error(
            "`install --interface nri-hook` needs `--daemonize`: the NRI plugin must stay up to \
             add the hook to new containers",
            "add `--daemonize` (the Helm chart does)",
        ));
    }
    let give_up_after = Duration::try_from_secs_f64(args.nri_hook_give_up_after)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            help_error(
                format!(
                    "--nri-hook.give-up-after `{}` is not a positive number of seconds",
                    args.nri_hook_give_up_after
                ),
                "e.g. `--nri-hook.give-up-after 60`",
            )
        })?;
    // Validated exactly as for oci-hooks, before anything is written: a typo in the hook's flags
    // fails this install (one pod) now, rather than every container on the node later.
    // A runtime whose NRI validator rejects OCI hooks would fail every container we hook.
    for note in super::runtime_conf::check_nri_validators(&args)? {
        eprintln!("note: {note}");
    }
    let hook_args = match args.hook_args {
        Some(InstallTail::HookArgs { args }) => args,
        None => Vec::new(),
    };
    if let Some(warning) = install::validate_hook_args(&args.local_binary, &hook_args)? {
        eprintln!("warning: {warning}");
    }
    // Block the signals before anything else: one that arrives meanwhile is handled by the
    // plugin's loop instead of killing the process in the middle of the copy.
    let signals = if args.dry_run {
        None
    } else {
        Some(TerminationSignals::block().context("failed to block SIGINT and SIGTERM")?)
    };
    let install = install::plan_install_binary(
        &args.local_binary,
        &args.local_install_dir,
        &args.host_install_dir,
        hook_args,
    )?;
    show_plan(&install.plan, true);
    let Some(signals) = signals else {
        eprintln!("dry run: nothing written");
        return Ok(ExitCode::SUCCESS);
    };
    report(&install.plan.apply()?, true);
    // Installed: automation reading the JSON result gets it now; the plugin runs on.
    super::json::emit(0);
    let hook = install.invocation;
    let state_file = args
        .local_install_dir
        .join(rthooks::status::state::FILE_NAME);
    let sfd = signals.signalfd().context("failed to create a signalfd")?;
    // The binary stays installed on exit: a container whose creation got the hook may still run
    // it (containerd starts the task later), and a missing hook binary would fail that start.
    if let Some(fd) = std::env::var_os(nri::SOCKET_ENV) {
        nri::run_prelaunched(
            &fd.to_string_lossy(),
            &args.nri_hook_name,
            &args.nri_hook_index,
            Prelaunched::Fixed(hook),
            &sfd,
            log_level,
            Some(state_file),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    nri::run_external(
        &ExternalOptions {
            socket: args.nri_hook_socket,
            name: args.nri_hook_name,
            index: args.nri_hook_index,
            hook,
            give_up_after,
            log_level,
            state_file: Some(state_file),
        },
        &sfd,
    )?;
    Ok(ExitCode::SUCCESS)
}
