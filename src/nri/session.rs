//! One connection to the runtime: register, then answer calls until EOF or a signal.
//!
//! Everything runs on the calling thread, blocking in `poll(2)` on the socket and (optionally) a
//! signalfd. The runtime calls plugins one at a time under a node-wide lock, so there is never
//! more than one request to answer, and a single thread answers it without any hand-off. The
//! `RegisterPlugin` call goes out first on connection 2, and connection 1 is served while its
//! reply is awaited: containerd 1.7 sends `Configure` before it replies.
//!
//! What is not here: reconnecting and choosing the mode ([`crate::nri`]), the answers
//! ([`crate::nri::plugin`]).

use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prost::Message as _;

use crate::nri::mux::{self, Demux, PLUGIN_CONN, RUNTIME_CONN};
use crate::nri::plugin::{Plugin, RUNTIME_SERVICE};
use crate::nri::proto::nri::RegisterPluginRequest;
use crate::nri::proto::ttrpc::{Request, Response};
use crate::nri::ttrpc::{self, Assembler, Message, code};

/// How long the runtime may take to answer `RegisterPlugin`.
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(5);
/// Stream id of our one call, `RegisterPlugin` (client streams are odd).
const REGISTER_STREAM: u32 = 1;

/// Why a session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The runtime closed the connection.
    Eof {
        /// Whether registration had completed.
        registered: bool,
    },
    /// SIGINT or SIGTERM arrived.
    Signal(&'static str),
}

/// Registers `plugin` on `stream` and serves it until the runtime closes the connection or a
/// signal arrives on `signals` (a signalfd). Errors: I/O, a protocol violation, a refused or
/// timed-out registration.
pub fn serve(
    stream: &mut UnixStream,
    plugin: &mut Plugin,
    signals: Option<BorrowedFd<'_>>,
) -> anyhow::Result<End> {
    let mut s = Session {
        demux: Demux::new(),
        plugin_conn: Assembler::new(),
        runtime_conn: Assembler::new(),
        registered: false,
    };
    let register = RegisterPluginRequest {
        plugin_name: plugin.name.clone(),
        plugin_idx: plugin.index.clone(),
    };
    let msg = ttrpc::request(
        REGISTER_STREAM,
        RUNTIME_SERVICE,
        "RegisterPlugin",
        register.encode_to_vec(),
    );
    mux::write_frames(stream, RUNTIME_CONN, &msg)
        .context("failed to send RegisterPlugin on the NRI socket")?;
    plugin.log.info(format_args!(
        "{}: registering with the runtime",
        plugin.full_name
    ));
    let deadline = Instant::now() + REGISTRATION_TIMEOUT;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let timeout = if s.registered {
            None
        } else {
            match deadline.checked_duration_since(Instant::now()) {
                Some(d) if !d.is_zero() => Some(d),
                _ => bail!(
                    "the runtime did not answer RegisterPlugin within {REGISTRATION_TIMEOUT:?}"
                ),
            }
        };
        match wait(stream, signals, timeout)? {
            Ready::Signal(name) => return Ok(End::Signal(name)),
            Ready::Timeout => continue,
            Ready::Socket => {}
        }
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => {
                continue;
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
            Err(e) => return Err(e).context("failed to read from the NRI socket"),
        };
        if n == 0 {
            if !s.demux.at_boundary()
                || !s.plugin_conn.at_boundary()
                || !s.runtime_conn.at_boundary()
            {
                plugin.log.warn(format_args!(
                    "{}: the runtime closed the connection in the middle of a message",
                    plugin.full_name
                ));
            }
            return Ok(End::Eof {
                registered: s.registered,
            });
        }
        s.on_bytes(&buf[..n], stream, plugin)?;
    }
}

struct Session {
    demux: Demux,
    plugin_conn: Assembler,
    runtime_conn: Assembler,
    registered: bool,
}

impl Session {
    fn on_bytes(
        &mut self,
        data: &[u8],
        stream: &mut UnixStream,
        plugin: &mut Plugin,
    ) -> anyhow::Result<()> {
        let mut requests = Vec::new();
        let mut replies = Vec::new();
        let (pc, rc) = (&mut self.plugin_conn, &mut self.runtime_conn);
        self.demux
            .feed(data, |conn, fragment| match conn {
                PLUGIN_CONN => pc.feed(fragment, &mut requests),
                RUNTIME_CONN => rc.feed(fragment, &mut replies),
                // Like the runtime's mux: bytes for a connection nobody opened are dropped.
                _ => {}
            })
            .context("protocol error on the NRI socket")?;
        for msg in requests {
            let out = self.request(msg, plugin);
            if let Some(out) = out {
                mux::write_frames(stream, PLUGIN_CONN, &out)
                    .context("failed to write a reply to the NRI socket")?;
            }
        }
        for msg in replies {
            self.reply(msg, plugin)?;
        }
        Ok(())
    }

    /// The response to one message on connection 1, if it needs one.
    fn request(&mut self, msg: Message, plugin: &mut Plugin) -> Option<Vec<u8>> {
        let (stream_id, kind, payload) = match msg {
            Message::Oversized { stream_id, len } => {
                plugin.log.error(format_args!(
                    "{}: skipped a {len}-byte request (limit {})",
                    plugin.full_name,
                    ttrpc::MAX_MESSAGE
                ));
                return Some(ttrpc::error_response(
                    stream_id,
                    code::RESOURCE_EXHAUSTED,
                    format!(
                        "message length {len} exceeds the maximum of {}",
                        ttrpc::MAX_MESSAGE
                    ),
                ));
            }
            Message::Complete {
                stream_id,
                kind,
                payload,
                ..
            } => (stream_id, kind, payload),
        };
        if kind != ttrpc::TYPE_REQUEST {
            plugin.log.warn(format_args!(
                "{}: ignored a message of type {kind} on the plugin connection",
                plugin.full_name
            ));
            return None;
        }
        if stream_id % 2 != 1 {
            return Some(ttrpc::error_response(
                stream_id,
                code::INVALID_ARGUMENT,
                "StreamID must be odd for client initiated streams".to_owned(),
            ));
        }
        let req = match Request::decode(payload.as_slice()) {
            Ok(r) => r,
            Err(e) => {
                plugin.log.error(format_args!(
                    "{}: cannot decode a ttrpc request: {e}",
                    plugin.full_name
                ));
                return Some(ttrpc::error_response(
                    stream_id,
                    code::INVALID_ARGUMENT,
                    format!("unmarshal request error: {e}"),
                ));
            }
        };
        plugin.log.debug(format_args!(
            "{}: {}/{} ({} bytes)",
            plugin.full_name,
            req.service,
            req.method,
            req.payload.len()
        ));
        Some(
            match plugin.handle(&req.service, &req.method, &req.payload) {
                Ok(reply) => ttrpc::ok_response(stream_id, reply),
                Err((code, message)) => {
                    if code == code::UNIMPLEMENTED {
                        plugin.log.warn(format_args!(
                            "{}: unsupported call {}/{}",
                            plugin.full_name, req.service, req.method
                        ));
                    }
                    ttrpc::error_response(stream_id, code, message)
                }
            },
        )
    }

    fn reply(&mut self, msg: Message, plugin: &mut Plugin) -> anyhow::Result<()> {
        let Message::Complete {
            stream_id: REGISTER_STREAM,
            kind: ttrpc::TYPE_RESPONSE,
            payload,
            ..
        } = msg
        else {
            plugin.log.warn(format_args!(
                "{}: ignored an unexpected message on the runtime connection: {msg:?}",
                plugin.full_name
            ));
            return Ok(());
        };
        let resp = Response::decode(payload.as_slice())
            .context("cannot decode the runtime's answer to RegisterPlugin")?;
        if let Some(status) = resp.status.filter(|s| s.code != 0) {
            bail!(
                "the runtime refused to register plugin `{}`: {} (code {})",
                plugin.full_name,
                status.message,
                status.code
            );
        }
        self.registered = true;
        plugin
            .log
            .info(format_args!("{}: registered", plugin.full_name));
        Ok(())
    }
}

enum Ready {
    Socket,
    Signal(&'static str),
    Timeout,
}

/// Waits until the socket is readable (or hung up), a signal is pending, or `timeout` passes.
fn wait(
    stream: &UnixStream,
    signals: Option<BorrowedFd<'_>>,
    timeout: Option<Duration>,
) -> anyhow::Result<Ready> {
    let mut fds = [
        libc::pollfd {
            fd: stream.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: signals.map_or(-1, |s| s.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    match poll(&mut fds, timeout)? {
        0 => Ok(Ready::Timeout),
        _ if fds[1].revents != 0 => {
            let sig = read_signal(signals)?;
            Ok(Ready::Signal(sig))
        }
        _ => Ok(Ready::Socket),
    }
}

/// Sleeps for `d` unless a signal arrives on `signals` first; returns its name.
pub fn sleep_or_signal(
    signals: Option<BorrowedFd<'_>>,
    d: Duration,
) -> anyhow::Result<Option<&'static str>> {
    let Some(sfd) = signals else {
        std::thread::sleep(d);
        return Ok(None);
    };
    let mut fds = [libc::pollfd {
        fd: sfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    let deadline = Instant::now() + d;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if poll(&mut fds, Some(left))? == 0 {
            if left.is_zero() || Instant::now() >= deadline {
                return Ok(None);
            }
            continue;
        }
        return read_signal(signals).map(Some);
    }
}

fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> anyhow::Result<usize> {
    let ms = timeout.map_or(-1, |d| {
        // Round up so that a wait never ends just before its deadline.
        i32::try_from(d.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
    });
    loop {
        // SAFETY: `fds` is a valid slice of pollfd for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc >= 0 {
            return Ok(rc as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e).context("poll failed");
        }
    }
}

fn read_signal(signals: Option<BorrowedFd<'_>>) -> anyhow::Result<&'static str> {
    let Some(fd) = signals else {
        bail!("no signal fd");
    };
    // SAFETY: signalfd_siginfo is plain data; reading into it is how signalfd is used.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a writable buffer of `size` bytes.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&raw mut info).cast(), size) };
    if n != size as isize {
        return Err(std::io::Error::last_os_error()).context("failed to read the signalfd");
    }
    Ok(if info.ssi_signo == libc::SIGINT as u32 {
        "SIGINT"
    } else {
        "SIGTERM"
    })
}
