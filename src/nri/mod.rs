//! Tetragon's NRI plugin: adds the OCI hook to every container containerd creates.
//!
//! No Rust NRI library exists, so this module speaks the plugin side of the protocol itself:
//! [`mux`] (NRI's connection multiplexer), [`ttrpc`] (unary ttrpc framing), [`plugin`] (the
//! answers), [`session`] (one connection: register, then serve), [`log`] (the plugin's log).
//! The protobuf messages are generated from `proto/nri.proto` and `proto/ttrpc.proto`
//! ([`proto`]).
//!
//! Two ways to run:
//! - [`run_external`]: connect to the runtime's NRI socket (without blocking: a runtime that
//!   accepts nothing is a failed attempt), and after the connection drops, reconnect every
//!   [`FAST_RETRY_INTERVAL`] for [`FAST_RETRY_FOR`], then backing off from [`RETRY_INTERVAL`]
//!   to [`MAX_RETRY_INTERVAL`] (the socket file may be missing or stale while containerd
//!   restarts; see [`Outage`]) until [`ExternalOptions::give_up_after`] passes without a
//!   registration; then fail, so that kubelet restarts the pod (a bind-mounted socket keeps its
//!   old inode; only a new mount helps). The give-up clock starts when registration is lost,
//!   however the session ended (EOF, I/O or protocol error, a runtime that stopped reading).
//! - [`run_prelaunched`]: containerd started the plugin from its `plugin_path` with a connected
//!   socket in `NRI_PLUGIN_SOCKET`; serve it until EOF (containerd relaunches the plugin).
//!
//! Copying the hook binary is done by the caller ([`crate::install::plan_install_binary`]).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::error::WithHelp;

pub mod log;
pub mod mux;
pub mod plugin;
pub mod session;
pub mod ttrpc;

/// Generated protobuf messages.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod proto {
    /// `nri.pkg.api.v1alpha1` (trimmed: the messages the plugin reads or writes).
    pub mod nri {
        include!(concat!(env!("OUT_DIR"), "/nri.pkg.api.v1alpha1.rs"));
    }
    /// ttrpc's envelope.
    pub mod ttrpc {
        include!(concat!(env!("OUT_DIR"), "/ttrpc.rs"));
    }
}

use self::log::{Level, Log};
use self::plugin::Plugin;
use self::session::End;
use crate::hook_invocation::HookInvocation;

/// Time between two connection attempts during the first [`FAST_RETRY_FOR`] of an outage:
/// containerd usually serves again within a few hundred milliseconds of a restart, and every
/// container it creates before we are back gets no hook.
pub const FAST_RETRY_INTERVAL: Duration = Duration::from_millis(50);
/// How long to retry at [`FAST_RETRY_INTERVAL`].
pub const FAST_RETRY_FOR: Duration = Duration::from_secs(2);
/// Time between the first two connection attempts after that; it doubles at each attempt up
/// to [`MAX_RETRY_INTERVAL`].
pub const RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// The longest time between two connection attempts.
pub const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// During an outage the first failure is logged, then a failure with a new reason (at most one
/// line per [`MIN_LOG_GAP`]), and otherwise one summary line per this interval.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(5);
/// The least time between two lines of one outage.
pub const MIN_LOG_GAP: Duration = Duration::from_secs(1);
/// A registered session shorter than this ends as a failed attempt of the outage it was part
/// of; a longer one ends the outage (and the next disconnection starts a new one).
pub const STABLE_SESSION: Duration = Duration::from_secs(1);
/// Environment variable naming the inherited socket of a pre-launched plugin.
pub const SOCKET_ENV: &str = "NRI_PLUGIN_SOCKET";
/// Environment variable with a pre-launched plugin's name.
pub const NAME_ENV: &str = "NRI_PLUGIN_NAME";
/// Environment variable with a pre-launched plugin's index.
pub const INDEX_ENV: &str = "NRI_PLUGIN_IDX";

/// What [`run_external`] needs.
#[derive(Debug, Clone)]
pub struct ExternalOptions {
    /// The runtime's NRI socket.
    pub socket: PathBuf,
    /// Plugin name.
    pub name: String,
    /// Two-digit plugin index.
    pub index: String,
    /// The hook to add.
    pub hook: HookInvocation,
    /// Give up (error) after this long without a registration.
    pub give_up_after: Duration,
    /// The least severe level logged.
    pub log_level: Level,
    /// Where to keep the state file `status` reads ([`crate::status::state`]); `None`: none.
    pub state_file: Option<PathBuf>,
}

/// Runs the plugin against the socket until SIGINT/SIGTERM (returns the signal's name) or until
/// it has been unregistered for longer than `give_up_after` (error).
pub fn run_external(opts: &ExternalOptions, signals: &OwnedFd) -> anyhow::Result<&'static str> {
    plugin::check_index(&opts.index)?;
    plugin::check_name(&opts.name)?;
    let mut plugin = Plugin::new(
        &opts.name,
        &opts.index,
        &opts.hook,
        Log::stderr(opts.log_level),
    );
    let socket = opts.socket.display().to_string();
    plugin.state = opts.state_file.clone().map(|path| {
        crate::status::state::Recorder::new(path, &opts.name, &opts.index, &socket, &opts.hook)
    });
    let full = plugin.full_name.clone();
    let hook = plugin::nri_hook(&opts.hook);
    plugin.log.info(format_args!(
        "{full}: adding hook `{}` {:?} to every new container",
        hook.path, hook.args
    ));
    // Failed attempts since the plugin last stopped being registered (or started): the
    // give-up clock, the retry interval and what is logged.
    let mut outage = Outage::new(Instant::now());
    loop {
        let attempt = outage.attempts + 1;
        let failure = match session::connect(&opts.socket) {
            Ok(mut stream) => {
                plugin.log.info(format_args!(
                    "{full}: connected to `{socket}` (attempt {attempt})"
                ));
                let started = Instant::now();
                let outcome = session::serve(&mut stream, &mut plugin, Some(signals.as_fd()));
                drop(stream);
                let why = match outcome.end {
                    Ok(End::Signal(sig)) => {
                        plugin
                            .log
                            .info(format_args!("{full}: received {sig}, disconnecting"));
                        remove_state(&mut plugin);
                        return Ok(sig);
                    }
                    Ok(End::Eof) => "the runtime closed the connection".to_owned(),
                    Err(e) => format!("{e:#}"),
                };
                if outcome.registered {
                    plugin.state_now(|s| s.unregistered(Some(&why)));
                }
                if outcome.registered && started.elapsed() >= STABLE_SESSION {
                    // However the session ended, registration was lost just now: it is logged
                    // whole, and the give-up clock starts here, not at the last clean
                    // disconnect.
                    if why.starts_with("the runtime closed") {
                        plugin.log.warn(format_args!("{full}: {why}; reconnecting"));
                    } else {
                        plugin
                            .log
                            .error(format_args!("{full}: {why}; reconnecting"));
                    }
                    outage = Outage::new(Instant::now());
                    // Reconnect at once: containerd may already be back.
                    continue;
                } else if outcome.registered {
                    // A runtime that drops the plugin right after registering it is not a
                    // recovery: one more failed attempt of this outage (paced, its log lines
                    // bounded, the give-up clock still running), not a fresh start.
                    Some(format!(
                        "the runtime at `{socket}` dropped the plugin within {STABLE_SESSION:?} \
                         of registering it: {why}"
                    ))
                } else {
                    Some(format!(
                        "the session with `{socket}` ended before registering: {why}"
                    ))
                }
            }
            Err(e) => Some(format!("cannot connect to `{socket}`: {e}")),
        };
        if let Some(why) = failure {
            match outage.failed(Instant::now(), &why) {
                Line::First => {
                    plugin
                        .log
                        .warn(format_args!("{full}: {why} (attempt {attempt})"));
                    // A failure with a new reason is recorded (at most one a second), not every
                    // retry.
                    plugin.state_now(|s| s.unregistered(Some(&why)));
                }
                Line::Summary { attempts, secs } => plugin.log.warn(format_args!(
                    "{full}: still failing: {why} ({attempts} attempts in {secs} s)"
                )),
                Line::Quiet => {}
            }
        }
        if outage.since.elapsed() >= opts.give_up_after {
            let msg = format!("not registered for {:?}; gave up", opts.give_up_after);
            plugin.state_now(|s| {
                s.unregistered(Some(&msg))?;
                s.flush(Duration::from_secs(1))
            });
            return Err(crate::error::help_error(
                format!(
                    "not registered with the runtime at `{socket}` for {:?} ({} attempts{}); \
                     giving up",
                    opts.give_up_after,
                    outage.attempts,
                    outage
                        .last_error
                        .as_deref()
                        .map(|e| format!("; last: {e}"))
                        .unwrap_or_default(),
                ),
                "check \
                 that containerd runs with NRI enabled (`patch-containerd-conf enable-nri`) and \
                 that the socket is mounted as a directory, not as a file (a file mount keeps a \
                 stale socket after containerd restarts)",
            ));
        }
        let interval = outage.next_interval(Instant::now());
        if let Some(sig) = session::sleep_or_signal(Some(signals.as_fd()), interval)? {
            plugin
                .log
                .info(format_args!("{full}: received {sig}, exiting"));
            remove_state(&mut plugin);
            return Ok(sig);
        }
    }
}

/// Removes the state file on a clean exit, logging a failure.
fn remove_state(plugin: &mut Plugin) {
    if let Some(state) = &mut plugin.state {
        if let Err(e) = state.remove() {
            let path = state.path().display().to_string();
            plugin.log.warn(format_args!(
                "{}: cannot remove the state file `{path}`: {e}",
                plugin.full_name
            ));
        }
    }
}

/// What to log for one failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// The failure in full: the outage's first, or a new reason.
    First,
    /// Still failing: `attempts` since the outage began, `secs` ago.
    Summary { attempts: u64, secs: u64 },
    /// Nothing (logged recently, same reason).
    Quiet,
}

/// One period without registration: when to try again and which failures to log, so that a
/// runtime down for a minute costs a handful of log lines, not one per attempt, while the first
/// attempts still come every [`FAST_RETRY_INTERVAL`] (containerd restarts in well under a
/// second, and every container it creates before we are back gets no hook).
#[derive(Debug)]
struct Outage {
    /// When registration was lost (or the plugin started): the give-up clock.
    since: Instant,
    /// Failed attempts since then.
    attempts: u64,
    /// Attempts made at the backed-off pace (past [`FAST_RETRY_FOR`]).
    slow_attempts: u32,
    /// The last failure's reason.
    last_error: Option<String>,
    /// The reason and time of the last line logged.
    logged: Option<(String, Instant)>,
}

impl Outage {
    fn new(since: Instant) -> Self {
        Self {
            since,
            attempts: 0,
            slow_attempts: 0,
            last_error: None,
            logged: None,
        }
    }

    /// Records a failed attempt at `now` and says what to log.
    fn failed(&mut self, now: Instant, why: &str) -> Line {
        self.attempts += 1;
        self.last_error = Some(why.to_owned());
        let line = match &self.logged {
            None => Line::First,
            Some((_, at)) if now.saturating_duration_since(*at) < MIN_LOG_GAP => Line::Quiet,
            Some((reason, _)) if reason != why => Line::First,
            Some((_, at)) if now.saturating_duration_since(*at) >= SUMMARY_EVERY => Line::Summary {
                attempts: self.attempts,
                secs: now.saturating_duration_since(self.since).as_secs(),
            },
            Some(_) => Line::Quiet,
        };
        if line != Line::Quiet {
            self.logged = Some((why.to_owned(), now));
        }
        line
    }

    /// The time to wait before the next attempt: [`FAST_RETRY_INTERVAL`] for the first
    /// [`FAST_RETRY_FOR`], then from [`RETRY_INTERVAL`] doubling up to [`MAX_RETRY_INTERVAL`].
    fn next_interval(&mut self, now: Instant) -> Duration {
        if now.saturating_duration_since(self.since) < FAST_RETRY_FOR {
            return FAST_RETRY_INTERVAL;
        }
        let interval = RETRY_INTERVAL
            .saturating_mul(1 << self.slow_attempts.min(16))
            .min(MAX_RETRY_INTERVAL);
        self.slow_attempts = self.slow_attempts.saturating_add(1);
        interval
    }
}

/// How a pre-launched plugin got its hook.
#[derive(Debug, Clone)]
pub enum Prelaunched {
    /// From the command line; log to stderr.
    Fixed(HookInvocation),
    /// From the `.conf` text in `Configure`; log to the file it names.
    FromConfig,
}

/// Serves the socket containerd passed in `NRI_PLUGIN_SOCKET` until EOF (`Ok(None)`) or
/// SIGINT/SIGTERM (`Ok(Some(signal))`). Name and index come from `NRI_PLUGIN_NAME` /
/// `NRI_PLUGIN_IDX` when set, else from `name`/`index`.
pub fn run_prelaunched(
    fd_text: &str,
    name: &str,
    index: &str,
    mode: Prelaunched,
    signals: &OwnedFd,
    log_level: Level,
    state_file: Option<PathBuf>,
) -> anyhow::Result<Option<&'static str>> {
    let name = std::env::var(NAME_ENV).unwrap_or_else(|_| name.to_owned());
    let index = std::env::var(INDEX_ENV).unwrap_or_else(|_| index.to_owned());
    plugin::check_index(&index).context(format!("from `{INDEX_ENV}` or the command line"))?;
    plugin::check_name(&name).context(format!("from `{NAME_ENV}` or the command line"))?;
    let fd = inherited_socket(fd_text)?;
    let mut plugin = match &mode {
        Prelaunched::Fixed(hook) => Plugin::new(&name, &index, hook, Log::stderr(log_level)),
        Prelaunched::FromConfig => Plugin::from_config(&name, &index, Log::pending()),
    };
    if let (Some(path), Prelaunched::Fixed(hook)) = (state_file, &mode) {
        plugin.state = Some(crate::status::state::Recorder::new(
            path,
            &name,
            &index,
            &format!("(pre-launched, fd {fd_text})"),
            hook,
        ));
    }
    let full = plugin.full_name.clone();
    plugin.log.info(format_args!(
        "{full}: pre-launched by the runtime (socket fd {fd_text})"
    ));
    let mut stream = UnixStream::from(fd);
    let outcome = session::serve(&mut stream, &mut plugin, Some(signals.as_fd()));
    match outcome.end {
        Ok(End::Eof) => {
            plugin.log.info(format_args!(
                "{full}: the runtime closed the connection; exiting"
            ));
            remove_state(&mut plugin);
            Ok(None)
        }
        Ok(End::Signal(sig)) => {
            plugin
                .log
                .info(format_args!("{full}: received {sig}, exiting"));
            remove_state(&mut plugin);
            Ok(Some(sig))
        }
        Err(e) => {
            plugin
                .log
                .error(format_args!("{full}: {}", crate::error::Report(&e)));
            let msg = format!("{e:#}");
            plugin.state_now(|s| {
                s.unregistered(Some(&msg))?;
                s.flush(Duration::from_secs(1))
            });
            Err(e)
        }
    }
}

/// Takes ownership of the socket fd named by `NRI_PLUGIN_SOCKET`, after checking that it is one.
fn inherited_socket(text: &str) -> anyhow::Result<OwnedFd> {
    let help = "containerd sets `NRI_PLUGIN_SOCKET` for plugins it launches from \
                `plugin_path`; unset it to connect to the NRI socket instead";
    let fd: i32 = text.parse().ok().filter(|fd| *fd > 2).with_help(
        || format!("`{SOCKET_ENV}={text}` is not a file descriptor"),
        help,
    )?;
    match crate::sys::inherited_socket(fd) {
        crate::sys::Inherited::Socket(owned) => Ok(owned),
        crate::sys::Inherited::NotSocket => Err(crate::error::help_error(
            format!("`{SOCKET_ENV}={text}` is not a socket"),
            help,
        )),
        crate::sys::Inherited::NotOpen(e) => Err(e).with_help(
            || format!("`{SOCKET_ENV}={text}` is not an open file"),
            help,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_fast_first_then_back_off_to_the_cap() {
        let t0 = Instant::now();
        let mut o = Outage::new(t0);
        assert_eq!(o.next_interval(t0), FAST_RETRY_INTERVAL);
        let late = t0 + FAST_RETRY_FOR;
        let got: Vec<u128> = (0..6).map(|_| o.next_interval(late).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn one_reason_is_logged_once_then_summarised() {
        let t0 = Instant::now();
        let mut o = Outage::new(t0);
        let refused = "Connection refused (os error 111)";
        let mut lines = Vec::new();
        // A minute of attempts, 50 ms apart: as many as the plugin could ever make.
        for i in 0..1200u64 {
            let line = o.failed(t0 + Duration::from_millis(50 * i), refused);
            if line != Line::Quiet {
                lines.push(line);
            }
        }
        assert_eq!(lines[0], Line::First);
        assert!(
            lines[1..].iter().all(|l| matches!(l, Line::Summary { .. })),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 12, "{lines:?}");
        assert_eq!(
            lines[1],
            Line::Summary {
                attempts: 101,
                secs: 5
            }
        );
    }

    #[test]
    fn a_new_reason_is_logged_but_never_more_than_once_a_gap() {
        let t0 = Instant::now();
        let mut o = Outage::new(t0);
        assert_eq!(o.failed(t0, "refused"), Line::First);
        // The socket file goes away: said at once, once the gap since the last line passed.
        assert_eq!(
            o.failed(t0 + Duration::from_millis(50), "missing"),
            Line::Quiet
        );
        assert_eq!(o.failed(t0 + MIN_LOG_GAP, "missing"), Line::First);
        // Two reasons flapping at every attempt: one line per gap at most.
        let flapping = (1..200u64)
            .map(|i| {
                let why = if i % 2 == 0 { "refused" } else { "missing" };
                o.failed(t0 + MIN_LOG_GAP + Duration::from_millis(50 * i), why)
            })
            .filter(|l| *l != Line::Quiet)
            .count();
        assert!(flapping <= 10, "{flapping} lines in 10 s");
    }
}
