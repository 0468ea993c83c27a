//! `status`: runs the checks of [`rthooks::status`] for the interface in use, within
//! `--timeout`, and prints them (text, worst first; or JSON). Writes nothing, takes no lock.

use std::collections::HashSet;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rthooks::defaults;
use rthooks::effective::Release;
use rthooks::error::help_error;
use rthooks::status::{self, Check, Report, Verdict, state};

use crate::cli::{OutputFormat, StatusArgs, StatusInterface};

/// Time kept back from the agent probe and the binary compare for the checks after them (at
/// most a quarter of `--timeout`).
const RESERVE: Duration = Duration::from_millis(20);
/// The most of `--timeout` that `containerd --version` may take (and at most a quarter of it).
const VERSION_LIMIT: Duration = Duration::from_millis(500);

/// The containerd release reading the config: `--containerd-version`, else `containerd
/// --version` when a binary is on `PATH` (bounded), else `None` (the config's `version`
/// decides); with the note saying which.
fn release_of(args: &StatusArgs, deadline: Instant) -> anyhow::Result<(Option<Release>, String)> {
    if let Some(v) = &args.containerd_version {
        let release = Release::parse(v).ok_or_else(|| {
            help_error(
                format!("--containerd-version `{v}` is not a release"),
                "write it as `X.Y`, e.g. `--containerd-version 2.1`",
            )
        })?;
        return Ok((
            Some(release),
            format!("imports merged as containerd {release} does (--containerd-version)"),
        ));
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if let Some(release) = super::effective::installed_release_within(VERSION_LIMIT.min(left / 4)) {
        return Ok((
            Some(release),
            format!("imports merged as containerd {release} does (`containerd --version`)"),
        ));
    }
    Ok((
        None,
        "no --containerd-version and no `containerd` on PATH: imports merged as the config's \
         `version` says (3 and more: 2.x, else 1.x)"
            .to_owned(),
    ))
}

/// Runs `status`.
pub(super) fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let deadline = start + args.timeout;
    // The agent probe and the binary compare end this much before the deadline.
    let inner_deadline = deadline - RESERVE.min(args.timeout / 4);
    let mut skip: HashSet<&str> = args.skip.iter().map(String::as_str).collect();
    if args.probe {
        skip.extend(status::PROBE_SKIPS);
    }
    if skip.contains("agent") {
        // `danger` is the agent being unreachable: without asking it, nothing to say.
        skip.insert("danger");
    }
    let (release, release_note) = release_of(args, deadline)?;
    let local_dir = &args.local_install_dir;
    let host_dir = args.host_install_dir.as_deref().unwrap_or(local_dir);
    let state_path = local_dir.join(state::FILE_NAME);
    let hook_file = args
        .oci_hooks_local_dir
        .join(format!("{}.json", defaults::BINARY_NAME));
    let (nri, interface_from) = interface(args, &state_path, &hook_file);
    let binary = local_dir.join(defaults::BINARY_NAME);

    let mut checks: Vec<Check> = Vec::new();
    // The installed hook's argv, when the runtime runs it now (registered plugin, valid file).
    let mut hook_args: Option<(Vec<String>, String)> = None;
    // nri-hook: the plugin's state (the hook's args) first, so the agent probe starts early.
    let mut nri_found = None;
    if nri {
        let found = status::nri::plugin(&state_path, &args.nri_hook_name, &args.nri_hook_index);
        if let (true, Some(st)) = (found.registered, &found.state) {
            hook_args = Some((
                st.hook_args.clone(),
                format!("the NRI state `{}`", state_path.display()),
            ));
        }
        nri_found = Some(found);
    } else {
        if args.crio_config.is_some() || args.containers_conf.is_some() {
            let a = args.clone();
            checks.push(
                within(inner_deadline, move || hooks_dir_check(&a))
                    .unwrap_or_else(|| unfinished("runtime-config", &args.crio_config_or_conf())),
            );
        }
        // containerd without NRI: the hook comes from the runc runtimes' base runtime spec.
        let hook_path = Path::new(host_dir).join(defaults::BINARY_NAME);
        let (config, hook) = (args.config_file.clone(), hook_path.display().to_string());
        let base = within(inner_deadline, move || {
            status::oci_hooks::containerd_base_spec(&config, release, &hook)
        })
        .unwrap_or_else(|| {
            Some((
                unfinished("runtime-config", &args.config_file.display().to_string()),
                None,
            ))
        });
        let mut from_base_spec = false;
        if let Some((mut c, spec_args)) = base {
            if let (Verdict::Ok, Some(a)) = (c.result, spec_args) {
                hook_args = Some((
                    a,
                    format!("the base runtime spec of `{}`", args.config_file.display()),
                ));
                from_base_spec = true;
            }
            c.evidence.push(release_note.clone());
            checks.push(c);
        }
        if from_base_spec && std::fs::symlink_metadata(&hook_file).is_err() {
            checks.push(Check::new(
                "hook-file",
                Verdict::Skip,
                "no hooks.d file: containerd runs the hook from its base runtime spec",
            ));
        } else {
            let found = status::oci_hooks::check(&hook_file, host_dir, local_dir);
            if let Some(a) = found.args {
                hook_args = Some((a, format!("`{}`", hook_file.display())));
            }
            checks.push(found.check);
        }
    }

    // The hook's own configuration: its argv over its defaults file beside the binary.
    let defaults_path = local_dir.join(oci_hook::args::DEFAULTS_FILE);
    let (defaults_text, _) = oci_hook::args::load_defaults_file(&defaults_path);
    let fallback_argv = vec![
        Path::new(host_dir)
            .join(defaults::BINARY_NAME)
            .display()
            .to_string(),
        defaults::STAGE.to_owned(),
    ];
    let argv = hook_args.as_ref().map_or(&fallback_argv, |(a, _)| a);
    let config = status::hook_config(
        argv,
        defaults_text
            .as_deref()
            .map(|t| (defaults_path.as_path(), t)),
    );
    let (address, address_from) = match (&args.grpc_address, &hook_args) {
        (Some(a), _) => (a.clone(), "--grpc-address".to_owned()),
        (None, Some((_, from))) => (
            config.grpc_address.clone(),
            format!("the hook's args in {from}"),
        ),
        (None, None) => (config.grpc_address.clone(), "the hook's default".to_owned()),
    };
    // The agent probe runs beside the other checks from here, with the whole budget but the
    // reserve: a slow compare of a huge binary does not eat its time. The binary is run only
    // if it is safe to run as root (root's, in a dir only root can change).
    let runnable = status::binary::safe_to_run(&binary);
    let agent_probe = if skip.contains("agent") {
        None
    } else {
        let (binary, address) = (binary.clone(), address.clone());
        let runnable = runnable.clone();
        Some(std::thread::spawn(move || match runnable {
            Ok(()) => status::agent::check(&binary, &address, inner_deadline),
            Err(why) => status::agent::not_run(&binary, &why),
        }))
    };

    if let Some(found) = nri_found {
        let config = args.config_file.clone();
        let mut c = within(inner_deadline, move || {
            status::nri::runtime_config(&config, release)
        })
        .unwrap_or_else(|| unfinished("runtime-config", &args.config_file.display().to_string()));
        c.evidence.push(release_note);
        checks.push(c);
        let mut connected = None;
        if let (true, Some(st)) = (found.registered, &found.state) {
            // Registered through the socket checked (a pre-launched plugin has none).
            if Path::new(&st.socket) == args.nri_hook_socket {
                connected = Some(st.pid);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        checks.push(status::nri::socket(
            &args.nri_hook_socket,
            left.min(Duration::from_millis(500)),
            connected,
        ));
        checks.push(found.check);
    }

    if !skip.contains("binary") {
        checks.push(status::binary::check(
            &binary,
            &args.local_binary,
            inner_deadline,
            runnable.as_ref().err().map(String::as_str),
        ));
    }

    let mut reachable = true;
    if let Some(probe) = agent_probe {
        let mut agent = probe.join().unwrap_or_else(|_| status::agent::AgentFound {
            check: Check::new("agent", Verdict::Fail, "the agent probe failed"),
            reachable: false,
        });
        agent
            .check
            .evidence
            .push(format!("address from {address_from}"));
        reachable = agent.reachable;
        checks.push(agent.check);
    }

    if !skip.contains("hook-log") {
        let log = status::oci_hooks::local_path(&config.log_fname, host_dir, local_dir);
        checks.push(status::hook_log::check(&log));
    }

    if hook_args.is_some() && !reachable && runnable.is_ok() && !skip.contains("danger") {
        if let Some(d) = status::danger(&config, &address) {
            checks.insert(0, d);
        }
    }
    checks.retain(|c| !skip.contains(c.id));
    let mut report = Report::new(
        if nri { "nri-hook" } else { "oci-hooks" },
        interface_from,
        checks,
        start.elapsed(),
    );
    // `--ignore-warnings` / `--probe`: warnings exit 0, and the JSON says the exit code given.
    if report.exit_code == 1 && (args.ignore_warnings || args.probe) {
        report.exit_code = 0;
    }
    let text = match args.output {
        OutputFormat::Json => report.json(),
        OutputFormat::Text => {
            let color = std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::env::var_os("TERM").is_none_or(|t| t != "dumb");
            report.text(color)
        }
    };
    let mut out = std::io::stdout().lock();
    // A closed stdout loses the report, not the verdict: the exit code still says it.
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    Ok(ExitCode::from(report.exit_code))
}

/// `f`'s result if it comes before `deadline`. A check that reads the runtime's files (up to
/// thousands of imports) runs in a thread of its own; one still running at the deadline is
/// left behind (it ends with the process) and reported by [`unfinished`].
fn within<T: Send + 'static>(
    deadline: Instant,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("status-check".to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .ok()?;
    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .ok()
}

/// The check `id` that did not finish within `--timeout`, reading `what`.
fn unfinished(id: &'static str, what: &str) -> Check {
    Check::new(id, Verdict::Warn, "not finished within --timeout")
        .evidence(format!("still reading {what}"))
        .help("give `status` a longer --timeout")
}

impl StatusArgs {
    /// `--crio-config`, `--containers-conf`: the files the hooks-dir check reads.
    fn crio_config_or_conf(&self) -> String {
        [self.crio_config.as_ref(), self.containers_conf.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Which interface to check, and why.
fn interface(args: &StatusArgs, state_path: &Path, hook_file: &Path) -> (bool, String) {
    let exists = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    match args.interface {
        StatusInterface::NriHook => (true, "--interface nri-hook".to_owned()),
        StatusInterface::OciHooks => (false, "--interface oci-hooks".to_owned()),
        StatusInterface::Auto if exists(state_path) => (
            true,
            format!(
                "auto: the NRI plugin's state `{}` exists",
                state_path.display()
            ),
        ),
        StatusInterface::Auto if exists(hook_file) => (
            false,
            format!("auto: the hook file `{}` exists", hook_file.display()),
        ),
        StatusInterface::Auto if exists(&args.nri_hook_socket) => (
            true,
            format!(
                "auto: the NRI socket `{}` exists",
                args.nri_hook_socket.display()
            ),
        ),
        StatusInterface::Auto => (
            false,
            "auto: no NRI state, hook file or NRI socket found".to_owned(),
        ),
    }
}

/// `runtime-config` for oci-hooks: the hooks dir is one the runtime reads (`--crio-config`,
/// `--containers-conf`), as `install` checks it.
fn hooks_dir_check(args: &StatusArgs) -> Check {
    const ID: &str = "runtime-config";
    match super::runtime_conf::check_hooks_dir_of(
        &args.oci_hooks_local_dir,
        args.oci_hooks_host_dir.as_deref(),
        args.crio_config.as_deref(),
        args.containers_conf.as_deref(),
    ) {
        Ok(notes) => {
            let mut c = Check::new(ID, Verdict::Ok, "the runtime reads the hooks dir");
            c.evidence = notes;
            c
        }
        Err(e) => {
            let mut c = Check::new(ID, Verdict::Fail, status::cut(&format!("{e:#}"), 400));
            c.help = rthooks::error::help_of(&e).map(str::to_owned);
            c.evidence.push(
                [args.crio_config.as_ref(), args.containers_conf.as_ref()]
                    .into_iter()
                    .flatten()
                    .map(|p: &PathBuf| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            c
        }
    }
}
