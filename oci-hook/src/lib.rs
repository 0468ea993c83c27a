//! The OCI hook `tetragon-oci-hook` (crate `oci_hook`): run by the container runtime before
//! every container starts, it tells the Tetragon agent about the container and, when the agent
//! cannot be told, applies the fail policy.
//!
//! - [`args`]: command line, defaults file, and the strict [`args::validate_args`] for the
//!   installer;
//! - [`spec`]: OCI state and spec to request;
//! - [`client`]: the gRPC call;
//! - [`policy`]: the fail check after a failed call;
//! - [`log`]: JSON-lines log with rotation;
//! - [`proto`]: generated messages and client of the trimmed agent API.
//!
//! [`run`] ties them together and returns what the binary prints and its exit status; it never
//! panics on input and never fails a container for a reason of its own (a bad flag or defaults
//! file is logged and the default kept). Exit status: 0 when the container may start (or nothing
//! was to be done), 1 when the fail policy stops it (or `server-version` failed).
//!
//! A `createRuntime` run ends within `--grpc-timeout` (at most [`args::MAX_GRPC_TIMEOUT`], 60 s;
//! a larger value is clamped and the clamp logged) + [`GRACE`] (1 s) whatever happens: reading
//! stdin and the agent call leave room for the fail check (`--fail-cel-timeout`, default 200 ms
//! of the CEL child's CPU time, when a CEL expression is set; the child is killed at the end of
//! the overall budget in any case) and the last log lines (the log lock is waited for at most
//! [`log::LOCK_WAIT`]). A watchdog thread, started before anything is logged, ends the process
//! just before the bound in any case, failing the container unless the agent accepted it, the
//! namespace rules allow it (known once the spec is read; they are also what decides when the
//! CEL expression cannot), the fail check allowed it, or gRPC is disabled.
//!
//! Run by hand, it explains itself (on stderr): no hook name or an unknown one gets the short
//! usage ([`args::short_usage`]) with a `help:` line (the nearest hook name when there is one),
//! and a flag problem its `help:` (the nearest known flag for a typo). A terminal on stdin is
//! taken for a person, never read: a flag problem is then an error (exit 2, nothing run, nothing
//! logged), no hook name exits 2. For a runtime (stdin not a terminal) the same text goes to
//! stderr and the log, and the hook runs with defaults for bad flags, exit 0 for no or an
//! unknown hook name: a hook that failed every container over a typo would also stop the
//! agent's own pod from starting, and `tetragon-oci-hook-setup install` refuses bad hook
//! arguments up front. With no OCI state on stdin (empty, unusable, or a terminal) `config.json`
//! is looked for from the working directory, and its absence is reported with that reason.
//!
//! `--help`, `--version` and `--just-print-config` print and exit only without a hook name;
//! with one (as the runtime runs the hook) they are logged as ignored and the hook runs.
//! `config.json` is read only if it is a regular file of at most [`spec::CONFIG_LIMIT`] (16 MiB).
//!
//! A spec that cannot be found or parsed counts as a failed call, since no request can be sent:
//! the fail policy decides, and with no annotations known the namespace rules fail the container
//! (as upstream does). `--disable-grpc` skips both the call and the policy.

pub mod address;
pub mod args;
#[cfg(feature = "client")]
pub mod client;
pub mod file;
pub mod log;
#[cfg(feature = "client")]
pub mod policy;
#[cfg(feature = "client")]
pub mod proto;
#[cfg(feature = "client")]
pub mod spec;

#[cfg(feature = "client")]
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
#[cfg(feature = "client")]
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
#[cfg(feature = "client")]
use std::time::{Instant, SystemTime};

#[cfg(feature = "client")]
use serde_json::Value;

#[cfg(feature = "client")]
use self::args::Config;
use self::args::Parsed;
#[cfg(feature = "client")]
use self::log::{Level, Logger};

/// What the binary prints and the status it exits with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Exit status.
    pub code: u8,
    /// Text for stdout.
    pub stdout: String,
    /// Text for stderr (shown by the runtime, e.g. in `kubectl describe pod`).
    pub stderr: String,
}

/// Directory of the running binary, symlinks resolved (`/proc/self/exe`), else `.`.
pub fn binary_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok().or(Some(p)))
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Parses `args` (without the program name) over the defaults file beside the binary.
pub fn parse_with_defaults(args: &[String], bin_dir: &Path) -> Parsed {
    let defaults_path = bin_dir.join(args::DEFAULTS_FILE);
    let (text, file_diags) = args::load_defaults_file(&defaults_path);
    let mut parsed = args::parse(
        args,
        bin_dir,
        text.as_deref().map(|t| (defaults_path.as_path(), t)),
    );
    parsed.diagnostics.splice(0..0, file_diags);
    parsed
}

/// The hidden command with which `tetragon-oci-hook-setup install` has the hook it installs
/// check `--fail-cel-expr` and `--fail-allow-namespaces-regex`. It reads no stdin and writes no
/// log. The answer is a line on stdout, [`CHECK_CEL_VALID`] (exit 0: they compile) or
/// [`CHECK_CEL_INVALID`] (exit 2: one does not; on stderr then, the problem of each invalid
/// regex on its own line, else the CEL expression's reason). A binary that is not this hook, or
/// an older hook without the command (which exits 0 for an unknown hook name), gives neither, so
/// the caller can tell "valid" from "not checked".
pub const CHECK_CEL: &str = "check-cel";

/// `check-cel`'s stdout line when everything it was given compiles (or there is nothing).
pub const CHECK_CEL_VALID: &str = "tetragon-oci-hook check-cel: valid";

/// `check-cel`'s stdout line when something it was given does not compile.
pub const CHECK_CEL_INVALID: &str = "tetragon-oci-hook check-cel: invalid";

#[cfg(feature = "client")]
fn check_cel(parsed: &Parsed) -> Outcome {
    let invalid = |stderr: String| Outcome {
        stdout: format!("{CHECK_CEL_INVALID}\n"),
        stderr,
        code: 2,
    };
    // Regexes first, each problem on its own line as `--fail-allow-namespaces-regex` names it
    // (the setup tool shows those lines as they are); then the CEL expression's reason alone.
    let regex_problems: Vec<&str> = parsed
        .diagnostics
        .iter()
        .filter(|d| {
            d.source == "command line"
                && d.message
                    .starts_with("invalid `--fail-allow-namespaces-regex`")
        })
        .map(|d| d.message.as_str())
        .collect();
    if !regex_problems.is_empty() {
        return invalid(format!("{}\n", regex_problems.join("\n")));
    }
    let result = match &parsed.config.fail_cel_expr {
        Some(expr) => policy::check_cel(expr),
        None => Ok(()),
    };
    match result {
        Ok(()) => Outcome {
            stdout: format!("{CHECK_CEL_VALID}\n"),
            ..Outcome::default()
        },
        Err(e) => invalid(format!("{e:#}\n")),
    }
}

#[cfg(feature = "client")]
/// Runs the hook with `args` (without the program name), reading the OCI state from stdin.
pub fn run(args: &[String]) -> Outcome {
    let start = SystemTime::now();
    let started = Instant::now();
    if args.len() == 1 && args[0] == policy::EVAL_CEL {
        let mut stdout = policy::eval_cel_child();
        stdout.push('\n');
        return Outcome {
            stdout,
            ..Outcome::default()
        };
    }
    let parsed = parse_with_defaults(args, &binary_dir());
    let cfg = &parsed.config;
    let hook = parsed.hook();
    // The runtime runs the hook with a stage name: then `--help`, `--version` and
    // `--just-print-config` (from a bad `hook-args` or defaults file) must not turn it into a
    // silent allow. They are logged below and ignored; without a hook name they work as usual.
    let ignored: Vec<&str> = [
        (parsed.help, "--help"),
        (parsed.version, "--version"),
        (cfg.just_print_config, "--just-print-config"),
    ]
    .into_iter()
    .filter_map(|(given, flag)| given.then_some(flag))
    .collect();
    if hook.is_none() {
        if parsed.help {
            return Outcome {
                stdout: args::usage(),
                ..Outcome::default()
            };
        }
        if parsed.version {
            let stdout = format!("tetragon-oci-hook {}\n", env!("CARGO_PKG_VERSION"));
            return Outcome {
                stdout,
                ..Outcome::default()
            };
        }
        if cfg.just_print_config {
            let mut stdout = serde_json::to_string_pretty(cfg).unwrap_or_default();
            stdout.push('\n');
            let stderr: String = parsed
                .diagnostics
                .iter()
                .map(|d| format!("warning: {d}\n"))
                .collect();
            return Outcome {
                stdout,
                stderr,
                ..Outcome::default()
            };
        }
    }
    if hook == Some(CHECK_CEL) {
        return check_cel(&parsed);
    }
    // A terminal on stdin is a person, not a runtime (which gives the OCI state on a pipe or
    // file): a mistake of theirs is an error with its fix, and the hook does not run. What a
    // runtime runs keeps the lenient path below (logged, defaults kept, exit 0).
    let person = std::io::stdin().is_terminal();
    let mut said = explain(&parsed.diagnostics, person);
    if person && parsed.diagnostics.iter().any(|d| d.source == COMMAND_LINE) {
        said.push_str("\nSee `tetragon-oci-hook --help` for the flags.\n");
        return Outcome {
            code: 2,
            stderr: said,
            ..Outcome::default()
        };
    }
    // The watchdog starts before anything is written to the log: a log on a hung filesystem
    // must not hold the container start past the budget.
    let budget = (hook == Some(args::CREATE_RUNTIME)).then(|| {
        let budget = Budget::new(started, cfg);
        budget.start_watchdog(cfg.disable_grpc);
        budget
    });
    let mut log = Logger::new(cfg.log_fname.clone(), cfg.log_level);
    for d in &parsed.diagnostics {
        if d.source == COMMAND_LINE {
            log.error(
                "invalid hook arguments, using defaults for them",
                &[("error", d.to_string().into())],
            );
        } else {
            log.warn(
                "ignoring part of the defaults file",
                &[("error", d.to_string().into())],
            );
        }
    }
    for flag in ignored {
        log.warn(
            "ignoring a flag that only makes sense without a hook name",
            &[("flag", flag.into()), ("hook", hook.unwrap_or("").into())],
        );
    }
    let mut outcome = match parsed.hook() {
        None => {
            let help = "give the hook name the runtime runs it with, e.g. `createRuntime`";
            log.warn(
                "hook called without event, bailing out",
                &[("help", help.into())],
            );
            let kind = if person { "error" } else { "warning" };
            said.push_str(&format!(
                "{kind}: no hook name given\nhelp: {help}\n\n{}",
                args::short_usage()
            ));
            // Exit 0 for a runtime, as for an unknown hook: the hook never fails a container
            // for a reason of its own.
            Outcome {
                code: if person { 2 } else { 0 },
                ..Outcome::default()
            }
        }
        Some(args::CREATE_RUNTIME) => {
            let budget = budget.unwrap_or_else(|| Budget::new(started, cfg));
            if person {
                said.push_str(
                    "note: stdin is a terminal, so no OCI state was read (a runtime gives it on \
                     stdin); looking for `config.json` from the working directory\n",
                );
            }
            create_runtime(cfg, &mut log, start, &budget)
        }
        Some(hook @ ("createContainer" | "poststop")) => {
            log.info("nothing to do", &[("hook", hook.into())]);
            Outcome::default()
        }
        Some("server-version") => server_version(cfg, &mut log),
        Some(other) => {
            let help = match args::nearest(other, args::HOOKS.iter().map(|(h, _)| *h)) {
                Some(near) => format!("did you mean `{near}`?"),
                None => {
                    let hooks: Vec<String> =
                        args::HOOKS.iter().map(|(h, _)| format!("`{h}`")).collect();
                    format!("the hooks are {}", hooks.join(", "))
                }
            };
            log.warn(
                "unknown hook, nothing to do",
                &[("hook", other.into()), ("help", help.clone().into())],
            );
            // Still exit 0, as upstream: a runtime that runs the hook at a stage it does not
            // know must not fail the container for it.
            said.push_str(&format!(
                "warning: unknown hook `{other}`: nothing to do\nhelp: {help}\n\n{}",
                args::short_usage()
            ));
            Outcome::default()
        }
    };
    // What was said first (problems with the flags, the usage), then the hook's own message.
    outcome.stderr.insert_str(0, &said);
    outcome
}

/// Where a [`args::Diagnostic`] about the command line comes from (others name the defaults
/// file).
#[cfg(feature = "client")]
const COMMAND_LINE: &str = "command line";

/// The problems found in the arguments, for stderr: `error:` (for a person, who gets exit 2)
/// or `warning:` (for a runtime: the hook runs with defaults for them, and logs them), each
/// with its `help:` line.
#[cfg(feature = "client")]
fn explain(diagnostics: &[args::Diagnostic], person: bool) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let kind = if person && d.source == COMMAND_LINE {
            "error"
        } else {
            "warning"
        };
        if d.source == COMMAND_LINE {
            out.push_str(&format!("{kind}: {}", d.message));
        } else {
            out.push_str(&format!("{kind}: {}: {}", d.source, d.message));
        }
        if let Some(using) = &d.using {
            out.push_str(&format!("; using {using}"));
        }
        out.push('\n');
        if let Some(help) = &d.help {
            out.push_str(&format!("help: {help}\n"));
        }
    }
    out
}

/// How long past `--grpc-timeout` a `createRuntime` hook may take, whatever happens (held log
/// lock, slow CEL, huge spec, silent agent, stalled stdin).
pub const GRACE: Duration = Duration::from_secs(1);

#[cfg(feature = "client")]
/// Time kept at the end of the budget for logging (at most [`log::LOCK_WAIT`] on the lock) and
/// exiting, after the fail check.
const TAIL: Duration = Duration::from_millis(250);

#[cfg(feature = "client")]
/// How long before the end of the budget the watchdog ends the process (room for the exit).
const CUT_OFF_MARGIN: Duration = Duration::from_millis(100);

#[cfg(feature = "client")]
/// The exit status if the watchdog has to end the process: 1 (fail the container) until the
/// agent accepted the container, the namespace rules allow it (known once the spec is read:
/// they decide when the CEL expression cannot) or the fail check allowed it.
static CUT_OFF_CODE: AtomicU8 = AtomicU8::new(1);

#[cfg(feature = "client")]
/// The time budget of one `createRuntime` run: it ends at start + `--grpc-timeout` + [`GRACE`].
/// Reading stdin and the agent call stop early enough to leave room for the fail check
/// (`--fail-cel-timeout` when a CEL expression is set) and the final log lines.
#[derive(Debug)]
struct Budget {
    end: Instant,
    reserve: Duration,
}

#[cfg(feature = "client")]
impl Budget {
    fn new(started: Instant, cfg: &Config) -> Self {
        // A long `--fail-cel-timeout` does not eat into the agent call's time: the fail check
        // gets what is left of the grace period then.
        let cel = if cfg.fail_cel_expr.is_some() {
            cfg.fail_cel_timeout.min(GRACE.saturating_sub(TAIL))
        } else {
            Duration::ZERO
        };
        let total = cfg.grpc_timeout.saturating_add(GRACE);
        Self {
            end: started
                .checked_add(total)
                .unwrap_or(started + Duration::from_secs(86_400)),
            reserve: cel.saturating_add(TAIL),
        }
    }

    /// Time left for the steps before the fail check.
    fn until_reserve(&self) -> Duration {
        self.end
            .saturating_duration_since(Instant::now())
            .saturating_sub(self.reserve)
    }

    /// Time left for the fail check (all but [`TAIL`]).
    fn until_end(&self) -> Duration {
        self.end
            .saturating_duration_since(Instant::now())
            .saturating_sub(TAIL)
    }

    /// Starts the backstop: a thread that ends the process just before the budget ends, with
    /// [`CUT_OFF_CODE`] (0 when gRPC is disabled: then the hook never fails a container).
    fn start_watchdog(&self, disable_grpc: bool) {
        if disable_grpc {
            CUT_OFF_CODE.store(0, Ordering::Relaxed);
        }
        let at = self.end.checked_sub(CUT_OFF_MARGIN).unwrap_or(self.end);
        let spawned = std::thread::Builder::new()
            .name("watchdog".to_owned())
            .stack_size(64 << 10)
            .spawn(move || {
                loop {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left);
                }
                let code = CUT_OFF_CODE.load(Ordering::Relaxed);
                let msg = if code == 0 {
                    "tetragon-oci-hook did not finish in time; letting the container start\n"
                } else {
                    "failing container: tetragon-oci-hook did not finish in time\n"
                };
                // One write, no lock, and only if it cannot block: stderr may be what is stuck
                // (a pipe nobody reads). `POLLOUT` on a pipe means room for `PIPE_BUF` bytes,
                // and a shorter write to it is all or nothing.
                let stderr = std::io::stderr();
                let fd = std::os::fd::AsFd::as_fd(&stderr);
                let mut fds = [rustix::event::PollFd::new(
                    &fd,
                    rustix::event::PollFlags::OUT,
                )];
                let zero = rustix::event::Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                if rustix::event::poll(&mut fds, Some(&zero)).is_ok_and(|n| n == 1)
                    && fds[0].revents().contains(rustix::event::PollFlags::OUT)
                {
                    let _ = rustix::io::write(fd, msg.as_bytes());
                }
                std::process::exit(i32::from(code));
            });
        // Without the thread, the bounds on each step still hold.
        drop(spawned);
    }
}

#[cfg(feature = "client")]
fn server_version(cfg: &Config, log: &mut Logger) -> Outcome {
    match client::server_version(&cfg.grpc_address, cfg.grpc_timeout) {
        Ok(version) => {
            log.info("server version", &[("version", version.clone().into())]);
            Outcome {
                stdout: format!("{version}\n"),
                ..Outcome::default()
            }
        }
        Err(e) => {
            let err = format!("{e:#}");
            log.error(
                "failed to get the server version",
                &[("err", err.clone().into())],
            );
            Outcome {
                code: 1,
                stderr: format!("error: {err}\n"),
                ..Outcome::default()
            }
        }
    }
}

#[cfg(feature = "client")]
fn create_runtime(cfg: &Config, log: &mut Logger, start: SystemTime, budget: &Budget) -> Outcome {
    log.with("hook", args::CREATE_RUNTIME);
    log.with("start-time", log::rfc3339(start, 9));

    let stdin = std::io::stdin();
    // Why there is no state, if there is none: said with a missing `config.json`, which is
    // then looked for from the working directory only.
    let mut no_state = if stdin.is_terminal() {
        "stdin is a terminal, so no OCI state was read"
    } else {
        "no OCI state on stdin"
    };
    let state = match spec::read_state(&stdin, budget.until_reserve().min(spec::STDIN_DEADLINE)) {
        Ok(s) => s,
        Err(e) => {
            log.warn(
                "failed to read the OCI state from stdin",
                &[("err", format!("{e:#}").into())],
            );
            no_state = "the OCI state on stdin was unusable";
            None
        }
    };
    let bundle = state
        .as_ref()
        .filter(|s| !s.bundle.is_empty())
        .map(|s| PathBuf::from(&s.bundle));
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let candidates = spec::config_candidates(bundle.as_deref(), &cwd);

    let (config_path, spec) = match spec::load_spec(&candidates) {
        Ok(found) => found,
        Err(e) => {
            let err = match &state {
                None => format!("{no_state}, and {e:#}"),
                Some(_) => format!("{e:#}"),
            };
            if cfg.disable_grpc {
                log.warn(
                    "gRPC was disabled and the spec was not found",
                    &[("err", err.into())],
                );
                return Outcome::default();
            }
            // No request can be sent: treat it as a failed call, with no annotations known.
            log.warn(
                "hook request to the agent failed",
                &[("err", err.clone().into())],
            );
            return fail_check(cfg, log, &Default::default(), &err, budget);
        }
    };
    // What the fail check falls back to (and decides without a CEL expression): known now, so
    // that the watchdog never refuses a container the namespace rules allow.
    if !cfg.disable_grpc
        && !fail_policy(cfg, budget)
            .namespace_decision(&spec.annotations)
            .fail
    {
        CUT_OFF_CODE.store(0, Ordering::Relaxed);
    }
    let bundle_dir = bundle
        .or_else(|| config_path.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| cwd.clone());
    let raw_cgroups = spec
        .linux
        .as_ref()
        .map(|l| l.cgroups_path.as_str())
        .unwrap_or("");
    let cgroups = spec::cgroup_path(raw_cgroups).unwrap_or_else(|e| {
        log.warn(
            "error getting cgroup path",
            &[("err", format!("{e:#}").into())],
        );
        raw_cgroups.to_owned()
    });
    let root = spec::root_dir(&bundle_dir, &spec);
    let cc = spec::create_container(cgroups, &root, &spec);

    log.with("req-cgroups", cc.cgroups_path.clone());
    log.with("req-rootdir", cc.root_dir.clone());
    log.with("req-containerName", cc.container_name.clone());
    log.with("req-containerID", cc.container_id.clone());
    log.with("req-containerImage", cc.container_image.clone());
    log.with("req-podName", cc.pod_name.clone());
    log.with("req-podUID", cc.pod_uid.clone());
    log.with("req-podNamespace", cc.pod_namespace.clone());
    if log.enabled(Level::Debug) {
        let ann: serde_json::Map<String, Value> = spec
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        log.with("req-annotations", Value::Object(ann));
    }

    if cfg.disable_grpc {
        log.info(
            "gRPC was disabled, so will not be contacting the agent",
            &[],
        );
        return Outcome::default();
    }
    let timeout = budget.until_reserve().min(cfg.grpc_timeout);
    match client::runtime_hook(&cfg.grpc_address, timeout, spec::request(cc)) {
        Ok(()) => {
            CUT_OFF_CODE.store(0, Ordering::Relaxed);
            log.info("hook request to agent succeeded", &[]);
            Outcome::default()
        }
        Err(e) => {
            let err = format!("{e:#}");
            log.warn(
                "hook request to the agent failed",
                &[("err", err.clone().into())],
            );
            fail_check(cfg, log, &spec.annotations, &err, budget)
        }
    }
}

/// The fail policy of `cfg`; the CEL child may use `--fail-cel-timeout` of CPU time and is
/// stopped when the budget (but its tail) is spent.
#[cfg(feature = "client")]
fn fail_policy(cfg: &Config, budget: &Budget) -> policy::Policy {
    policy::Policy {
        namespace_keys: cfg.annotations_namespace_keys.clone(),
        allow_namespaces: cfg.fail_allow_namespaces.clone(),
        allow_regexes: cfg.fail_allow_namespaces_regex.clone(),
        cel_expr: cfg.fail_cel_expr.clone(),
        cel_eval: policy::CelEval::Isolated {
            exe: PathBuf::from("/proc/self/exe"),
            cpu: cfg.fail_cel_timeout,
            deadline: Instant::now() + budget.until_end(),
        },
    }
}

#[cfg(feature = "client")]
fn fail_check(
    cfg: &Config,
    log: &mut Logger,
    annotations: &std::collections::HashMap<String, String>,
    err: &str,
    budget: &Budget,
) -> Outcome {
    let policy = fail_policy(cfg, budget);
    let decision = policy.check(annotations);
    CUT_OFF_CODE.store(u8::from(decision.fail), Ordering::Relaxed);
    if let Some(pe) = &decision.policy_error {
        log.error("failCheck failed", &[("error", pe.clone().into())]);
    }
    if !decision.fail {
        log.info(
            "failCheck determined that we should not fail this container, even if there was an error",
            &[("reason", decision.reason.into())],
        );
        return Outcome::default();
    }
    log.error(
        "failing container",
        &[
            ("should-fail", true.into()),
            ("error", err.into()),
            ("reason", decision.reason.into()),
        ],
    );
    Outcome {
        code: 1,
        stderr: format!(
            "failing container: {err}. Check logs ({}) for additional info\n",
            log.path().display()
        ),
        ..Outcome::default()
    }
}
