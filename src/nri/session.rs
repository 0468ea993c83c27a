//! One connection to the runtime: register, then answer calls until EOF or a signal.
//!
//! Everything runs on the calling thread, waiting in `poll(2)` on the socket and (optionally) a
//! signalfd. The runtime calls plugins one at a time under a node-wide lock, so there is never
//! more than one request to answer, and a single thread answers it without any hand-off. The
//! `RegisterPlugin` call goes out first on connection 2, and connection 1 is served while its
//! reply is awaited: containerd 1.7 sends `Configure` before it replies.
//!
//! The socket is non-blocking: replies are queued and written as the runtime reads them, with the
//! signalfd in the same poll, so a runtime that stops reading never keeps a signal from being
//! handled. A runtime that leaves more than [`MAX_QUEUED`] bytes unread, or reads nothing for
//! [`WRITE_STALL_TIMEOUT`] while a reply waits, has a broken session (an error: the caller
//! reconnects).
//!
//! What is not here: reconnecting and choosing the mode ([`crate::nri`]), the answers
//! ([`crate::nri::plugin`]).

use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use prost::Message as _;
use rustix::event::{PollFd, PollFlags, Timespec};

use crate::nri::mux::{self, Demux, PLUGIN_CONN, RUNTIME_CONN};
use crate::nri::plugin::{Plugin, RUNTIME_SERVICE};
use crate::nri::proto::nri::RegisterPluginRequest;
use crate::nri::proto::ttrpc::{Request, Response};
use crate::nri::ttrpc::{self, Assembler, Message, code};

/// How long the runtime may take to answer `RegisterPlugin`.
pub const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reply may wait without the runtime reading a byte of it before the session counts
/// as broken (containerd's own request timeout is 2 s).
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The most output queued for a runtime that does not read it (a reply is under 1 KiB).
pub const MAX_QUEUED: usize = 4 << 20;
/// The longest error text sent back in a status (the rest is cut).
pub const MAX_STATUS_TEXT: usize = 4096;
/// Stream id of our one call, `RegisterPlugin` (client streams are odd).
const REGISTER_STREAM: u32 = 1;

/// Why a session ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The runtime closed the connection.
    Eof,
    /// SIGINT or SIGTERM arrived.
    Signal(&'static str),
}

/// How a session ended, and whether it had registered.
#[derive(Debug)]
pub struct Outcome {
    /// Whether registration had completed (the plugin was serving until this ended).
    pub registered: bool,
    /// EOF or a signal; an error for I/O, a protocol violation, a runtime that stopped reading,
    /// a refused or timed-out registration.
    pub end: anyhow::Result<End>,
}

/// Registers `plugin` on `stream` and serves it until the runtime closes the connection, a
/// signal arrives on `signals` (a signalfd) or the session breaks.
pub fn serve(
    stream: &mut UnixStream,
    plugin: &mut Plugin,
    signals: Option<BorrowedFd<'_>>,
) -> Outcome {
    let mut s = Session {
        demux: Demux::new(),
        plugin_conn: Assembler::new(),
        runtime_conn: Assembler::new(),
        registered: false,
        out: Vec::new(),
        sent: 0,
        stalled_since: None,
    };
    let end = s.run(stream, plugin, signals);
    Outcome {
        registered: s.registered,
        end,
    }
}

struct Session {
    demux: Demux,
    plugin_conn: Assembler,
    runtime_conn: Assembler,
    registered: bool,
    /// Frames to write; `out[sent..]` is not written yet.
    out: Vec<u8>,
    sent: usize,
    /// Since when unsent output has waited without the runtime reading any of it.
    stalled_since: Option<Instant>,
}

impl Session {
    fn run(
        &mut self,
        stream: &mut UnixStream,
        plugin: &mut Plugin,
        signals: Option<BorrowedFd<'_>>,
    ) -> anyhow::Result<End> {
        stream
            .set_nonblocking(true)
            .context("failed to make the NRI socket non-blocking")?;
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
        self.queue(RUNTIME_CONN, &msg)?;
        plugin.log.info(format_args!(
            "{}: registering with the runtime",
            plugin.full_name
        ));
        let deadline = Instant::now() + REGISTRATION_TIMEOUT;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if !self.flush(stream)? {
                plugin.log.warn(format_args!(
                    "{}: the runtime closed the connection before reading {} bytes of replies",
                    plugin.full_name,
                    self.out.len() - self.sent
                ));
                return Ok(End::Eof);
            }
            // After the replies went out: a container start never waits for this write.
            plugin.state_tick();
            let now = Instant::now();
            let mut timeout = if self.registered {
                plugin.state.as_ref().and_then(|s| s.due_in())
            } else {
                None
            };
            if !self.registered {
                match deadline.checked_duration_since(now) {
                    Some(d) if !d.is_zero() => timeout = Some(d),
                    _ => bail!(
                        "the runtime did not answer RegisterPlugin within {REGISTRATION_TIMEOUT:?}"
                    ),
                }
            }
            if let Some(since) = self.stalled_since {
                match (since + WRITE_STALL_TIMEOUT).checked_duration_since(now) {
                    Some(d) if !d.is_zero() => {
                        timeout = Some(timeout.map_or(d, |t: Duration| t.min(d)));
                    }
                    _ => bail!(
                        "the runtime has not read from the NRI socket for {WRITE_STALL_TIMEOUT:?} \
                         ({} bytes unsent); the session is broken",
                        self.out.len() - self.sent
                    ),
                }
            }
            let readable = match wait(stream, signals, self.sent < self.out.len(), timeout)? {
                Ready::Signal(name) => return Ok(End::Signal(name)),
                Ready::Timeout => continue,
                Ready::Socket { readable } => readable,
            };
            if !readable {
                continue;
            }
            let n = match stream.read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock =>
                {
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => 0,
                Err(e) => return Err(e).context("failed to read from the NRI socket"),
            };
            if n == 0 {
                if !self.demux.at_boundary()
                    || !self.plugin_conn.at_boundary()
                    || !self.runtime_conn.at_boundary()
                {
                    plugin.log.warn(format_args!(
                        "{}: the runtime closed the connection in the middle of a message",
                        plugin.full_name
                    ));
                }
                return Ok(End::Eof);
            }
            self.on_bytes(&buf[..n], plugin)?;
        }
    }

    /// Queues `msg` for logical connection `conn`.
    fn queue(&mut self, conn: u32, msg: &[u8]) -> anyhow::Result<()> {
        let unsent = self.out.len() - self.sent;
        if unsent + msg.len() > MAX_QUEUED {
            bail!(
                "the runtime is not reading from the NRI socket ({unsent} bytes unsent, at most \
                 {MAX_QUEUED} are kept); the session is broken"
            );
        }
        if self.sent > 0 && self.sent * 2 >= self.out.len() {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        mux::append_frames(&mut self.out, conn, msg);
        Ok(())
    }

    /// Writes as much of the queued output as the socket takes without blocking; false if the
    /// runtime closed the connection.
    fn flush(&mut self, stream: &UnixStream) -> anyhow::Result<bool> {
        let mut progress = false;
        while self.sent < self.out.len() {
            match send(stream.as_fd(), &self.out[self.sent..]) {
                Ok(0) => bail!("the NRI socket took no bytes"),
                Ok(n) => {
                    self.sent += n;
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e)
                    if e.kind() == ErrorKind::BrokenPipe
                        || e.kind() == ErrorKind::ConnectionReset =>
                {
                    return Ok(false);
                }
                Err(e) => return Err(e).context("failed to write to the NRI socket"),
            }
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
            self.stalled_since = None;
        } else if progress || self.stalled_since.is_none() {
            self.stalled_since = Some(Instant::now());
        }
        Ok(true)
    }

    fn on_bytes(&mut self, data: &[u8], plugin: &mut Plugin) -> anyhow::Result<()> {
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
            if let Some(out) = self.request(msg, plugin) {
                self.queue(PLUGIN_CONN, &out)?;
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
                    ttrpc::error_response(stream_id, code, cut(message, MAX_STATUS_TEXT))
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
                "{}: ignored an unexpected message on the runtime connection: {}",
                plugin.full_name,
                describe(&msg)
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
        plugin.state_now(|s| s.registered());
        Ok(())
    }
}

/// A message in a log line: its header and at most 32 bytes of payload, never the whole of it.
fn describe(msg: &Message) -> String {
    match msg {
        Message::Oversized { stream_id, len } => {
            format!("a {len}-byte message on stream {stream_id} (skipped)")
        }
        Message::Complete {
            stream_id,
            kind,
            flags,
            payload,
        } => {
            let head = &payload[..payload.len().min(32)];
            let more = if payload.len() > head.len() {
                "..."
            } else {
                ""
            };
            format!(
                "type {kind}, flags {flags}, stream {stream_id}, {} bytes: {head:02x?}{more}",
                payload.len()
            )
        }
    }
}

/// `text`, cut to at most `max` bytes (at a character boundary) with a mark saying so.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(crate::nri::log::CUT_MARK);
    }
    text
}

enum Ready {
    Socket {
        /// Readable, hung up or in error (a read tells which); else only writable.
        readable: bool,
    },
    Signal(&'static str),
    Timeout,
}

/// Waits until the socket is readable (or hung up), writable if `want_write`, a signal is
/// pending, or `timeout` passes.
fn wait(
    stream: &UnixStream,
    signals: Option<BorrowedFd<'_>>,
    want_write: bool,
    timeout: Option<Duration>,
) -> anyhow::Result<Ready> {
    let mut flags = PollFlags::IN;
    if want_write {
        flags |= PollFlags::OUT;
    }
    let sig = signals.unwrap_or(stream.as_fd());
    let mut fds = [PollFd::new(stream, flags), PollFd::new(&sig, PollFlags::IN)];
    let n = if signals.is_some() { 2 } else { 1 };
    if poll(&mut fds[..n], timeout)? == 0 {
        return Ok(Ready::Timeout);
    }
    if n == 2 && !fds[1].revents().is_empty() {
        return Ok(Ready::Signal(read_signal(sig)?));
    }
    let revents = fds[0].revents();
    Ok(Ready::Socket {
        readable: !(revents - PollFlags::OUT).is_empty(),
    })
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
    let deadline = Instant::now() + d;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(&sfd, PollFlags::IN)];
        if poll(&mut fds, Some(left))? == 0 {
            if Instant::now() >= deadline {
                return Ok(None);
            }
            continue;
        }
        return read_signal(sfd).map(Some);
    }
}

/// `poll(2)`, restarted after EINTR (with the full timeout again: callers recompute deadlines).
fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> anyhow::Result<usize> {
    let ts = timeout.map(|d| Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    });
    loop {
        match rustix::event::poll(fds, ts.as_ref()) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(std::io::Error::from(e)).context("poll failed"),
        }
    }
}

/// One non-blocking `send(2)` that never raises SIGPIPE (a runtime that closed the socket is an
/// EPIPE error, whatever the process's SIGPIPE disposition).
fn send(fd: BorrowedFd<'_>, data: &[u8]) -> std::io::Result<usize> {
    use rustix::net::SendFlags;
    rustix::net::send(fd, data, SendFlags::NOSIGNAL | SendFlags::DONTWAIT).map_err(Into::into)
}

/// Connects to the runtime's unix socket without blocking: a runtime whose listen backlog is
/// full (it accepts nothing) is an error at once, not a `connect(2)` that waits for it.
pub fn connect(path: &std::path::Path) -> std::io::Result<UnixStream> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    match rustix::net::connect(&fd, &SocketAddrUnix::new(path)?) {
        Ok(()) => Ok(UnixStream::from(fd)),
        Err(rustix::io::Errno::AGAIN) => Err(std::io::Error::other(
            "the runtime accepts no connections (its listen backlog is full)",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Reads one `signalfd_siginfo` (`ssi_signo` first) and names the signal.
fn read_signal(fd: BorrowedFd<'_>) -> anyhow::Result<&'static str> {
    const SIZE: usize = std::mem::size_of::<libc::signalfd_siginfo>();
    let mut info = [0u8; SIZE];
    let n = loop {
        match rustix::io::read(fd, &mut info) {
            Err(rustix::io::Errno::INTR) => {}
            other => break other,
        }
    };
    match n {
        Ok(SIZE) => {}
        Ok(n) => bail!("short read of the signalfd ({n} bytes)"),
        Err(e) => return Err(std::io::Error::from(e)).context("failed to read the signalfd"),
    }
    let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
    Ok(if signo == libc::SIGINT as u32 {
        "SIGINT"
    } else {
        "SIGTERM"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_is_cut_at_a_char_boundary() {
        assert_eq!(cut("short".to_owned(), 10), "short");
        let long = cut("é".repeat(3000), MAX_STATUS_TEXT);
        assert!(long.len() <= MAX_STATUS_TEXT + crate::nri::log::CUT_MARK.len());
        assert!(long.ends_with(crate::nri::log::CUT_MARK));
    }

    #[test]
    fn an_unexpected_message_is_described_by_its_header_not_its_payload() {
        let msg = Message::Complete {
            stream_id: 3,
            kind: 2,
            flags: 0,
            payload: vec![0xab; 16 << 20],
        };
        let text = describe(&msg);
        assert!(text.len() < 300, "{} bytes", text.len());
        assert!(text.contains("stream 3, 16777216 bytes"), "{text}");
        let big = Message::Oversized {
            stream_id: 5,
            len: u32::MAX,
        };
        assert!(describe(&big).contains("4294967295-byte message on stream 5"));
    }

    #[test]
    fn output_queued_past_the_bound_breaks_the_session() {
        let (runtime, plugin) = UnixStream::pair().unwrap();
        plugin.set_nonblocking(true).unwrap();
        let mut s = Session {
            demux: Demux::new(),
            plugin_conn: Assembler::new(),
            runtime_conn: Assembler::new(),
            registered: true,
            out: Vec::new(),
            sent: 0,
            stalled_since: None,
        };
        let chunk = vec![7u8; 64 << 10];
        let mut queued = 0;
        let err = loop {
            match s.queue(PLUGIN_CONN, &chunk) {
                Ok(()) => queued += chunk.len(),
                Err(e) => break e,
            }
            assert!(s.flush(&plugin).unwrap());
            assert!(queued <= MAX_QUEUED + (1 << 20), "{queued} queued");
        };
        assert!(format!("{err}").contains("not reading"), "{err}");
        assert!(s.stalled_since.is_some());
        // Unsent bytes stay bounded.
        assert!(s.out.len() - s.sent <= MAX_QUEUED);
        drop(runtime);
        // The peer is gone: flush reports it instead of failing.
        assert!(!s.flush(&plugin).unwrap());
    }
}
