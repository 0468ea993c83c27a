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
//!   [`FAST_RETRY_INTERVAL`], then [`RETRY_INTERVAL`] (the socket file may be missing or stale
//!   while containerd restarts) until [`ExternalOptions::give_up_after`] passes without a
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
/// Time between two connection attempts after that.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(200);
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
    // When the plugin last stopped being registered (or started): the give-up clock.
    let mut down_since = Instant::now();
    let mut attempt: u64 = 0;
    loop {
        attempt += 1;
        match session::connect(&opts.socket) {
            Ok(mut stream) => {
                plugin.log.info(format_args!(
                    "{full}: connected to `{socket}` (attempt {attempt})"
                ));
                let started = Instant::now();
                let outcome = session::serve(&mut stream, &mut plugin, Some(signals.as_fd()));
                drop(stream);
                match outcome.end {
                    Ok(End::Signal(sig)) => {
                        plugin
                            .log
                            .info(format_args!("{full}: received {sig}, disconnecting"));
                        remove_state(&mut plugin);
                        return Ok(sig);
                    }
                    Ok(End::Eof) => {
                        plugin.log.warn(format_args!(
                            "{full}: the runtime closed the connection; reconnecting"
                        ));
                        plugin.state_now(|s| {
                            s.unregistered(Some("the runtime closed the connection"))
                        });
                    }
                    Err(e) => {
                        plugin
                            .log
                            .error(format_args!("{full}: {e:#}; reconnecting"));
                        let msg = format!("{e:#}");
                        plugin.state_now(|s| s.unregistered(Some(&msg)));
                    }
                }
                if outcome.registered {
                    // However the session ended, registration was lost just now: the give-up
                    // clock starts here, not at the last clean disconnect.
                    down_since = Instant::now();
                    attempt = 0;
                    // Reconnect at once (containerd may already be back), unless sessions end
                    // as fast as they start.
                    if started.elapsed() >= FAST_RETRY_INTERVAL {
                        continue;
                    }
                }
            }
            Err(e) => {
                plugin.log.warn(format_args!(
                    "{full}: cannot connect to `{socket}` (attempt {attempt}): {e}"
                ));
                // The first failure of an outage is recorded; not every retry.
                if attempt == 1 {
                    let msg = format!("cannot connect to `{socket}`: {e}");
                    plugin.state_now(|s| s.unregistered(Some(&msg)));
                }
            }
        }
        if down_since.elapsed() >= opts.give_up_after {
            let msg = format!("not registered for {:?}; gave up", opts.give_up_after);
            plugin.state_now(|s| {
                s.unregistered(Some(&msg))?;
                s.flush(Duration::from_secs(1))
            });
            return Err(crate::error::help_error(
                format!(
                    "not registered with the runtime at `{socket}` for {:?}; giving up",
                    opts.give_up_after
                ),
                "check \
                 that containerd runs with NRI enabled (`patch-containerd-conf enable-nri`) and \
                 that the socket is mounted as a directory, not as a file (a file mount keeps a \
                 stale socket after containerd restarts)",
            ));
        }
        let interval = if down_since.elapsed() < FAST_RETRY_FOR {
            FAST_RETRY_INTERVAL
        } else {
            RETRY_INTERVAL
        };
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
