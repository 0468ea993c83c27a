//! The one fake NRI runtime (the other side of the mux), written from the protocol (frames,
//! ttrpc messages, NRI calls), for `tests/nri.rs` and `benches/nri.rs`: [`Setup`] starts the
//! real `install --interface nri-hook --daemonize` against a socket it listens on, [`Conn`] is
//! the runtime's end of one plugin connection.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;
use rthooks::nri::mux::{self, Demux};
use rthooks::nri::proto::nri::{
    ConfigureRequest, ConfigureResponse, Container, CreateContainerRequest, PodSandbox,
    RegisterPluginRequest,
};
use rthooks::nri::proto::ttrpc::{Request, Response};
use rthooks::nri::ttrpc::{self, Assembler, Message};

use super::child::ChildGuard;

/// Our setup binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_tetragon-oci-hook-setup");
/// The plugin's ttrpc service.
pub const PLUGIN: &str = "nri.pkg.api.v1alpha1.Plugin";
/// How long the fake runtime waits for the plugin (a read, a connection, an exit, a log line).
pub const WAIT: Duration = Duration::from_secs(10);

/// `chunks` as mux frames on connection 1 (the plugin's ttrpc server).
fn frames<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut wire = Vec::new();
    for chunk in chunks {
        wire.extend_from_slice(&1u32.to_be_bytes());
        wire.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        wire.extend_from_slice(chunk);
    }
    wire
}

/// The runtime's end of one plugin connection.
pub struct Conn {
    /// The trunk to the plugin.
    pub stream: UnixStream,
    /// Splits the trunk into its two connections.
    pub demux: Demux,
    /// Connection 1: the plugin's answers to our calls.
    pub responses: Assembler,
    /// Connection 2: the plugin's calls (RegisterPlugin).
    pub requests: Assembler,
    /// Complete messages read on connection 1, oldest first.
    pub got_responses: Vec<Message>,
    /// Complete messages read on connection 2, oldest first.
    pub got_requests: Vec<Message>,
    /// The stream id of our next call (odd, as a ttrpc client's).
    pub next_stream: u32,
    buf: Vec<u8>,
}

impl Conn {
    /// The runtime's end of `stream`, reads bounded by [`WAIT`].
    pub fn new(stream: UnixStream) -> Self {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Self {
            stream,
            demux: Demux::new(),
            responses: Assembler::new(),
            requests: Assembler::new(),
            got_responses: Vec::new(),
            got_requests: Vec::new(),
            next_stream: 1,
            buf: vec![0; 65536],
        }
    }

    /// Reads one chunk; false on EOF.
    pub fn read_some(&mut self) -> bool {
        let n = match self.stream.read(&mut self.buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("reading from the plugin: {e}"),
        };
        let (r, q) = (&mut self.responses, &mut self.requests);
        let (gr, gq) = (&mut self.got_responses, &mut self.got_requests);
        self.demux
            .feed(&self.buf[..n], |conn, f| match conn {
                1 => r.feed(f, gr),
                2 => q.feed(f, gq),
                other => panic!("plugin wrote to connection {other}"),
            })
            .unwrap();
        n > 0
    }

    /// Whether the plugin closed the connection (reads until EOF).
    pub fn closed_by_plugin(&mut self) -> bool {
        while self.read_some() {}
        true
    }

    /// The next request the plugin sends on connection 2.
    pub fn next_request(&mut self) -> (u32, Request) {
        while self.got_requests.is_empty() {
            assert!(self.read_some(), "plugin closed the connection");
        }
        match self.got_requests.remove(0) {
            Message::Complete {
                stream_id,
                kind: ttrpc::TYPE_REQUEST,
                payload,
                ..
            } => (stream_id, Request::decode(payload.as_slice()).unwrap()),
            other => panic!("not a request: {other:?}"),
        }
    }

    pub fn register_request(&mut self) -> (u32, RegisterPluginRequest) {
        let (id, req) = self.next_request();
        assert_eq!(
            (req.service.as_str(), req.method.as_str()),
            ("nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin")
        );
        (
            id,
            RegisterPluginRequest::decode(req.payload.as_slice()).unwrap(),
        )
    }

    pub fn reply_register(&mut self, stream_id: u32) {
        let msg = ttrpc::ok_response(stream_id, Vec::new());
        mux::write_frames(&mut self.stream, 2, &msg).unwrap();
    }

    /// Sends raw bytes on the trunk.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// A ttrpc request message for `Plugin/method`, with the next stream id.
    pub fn request_bytes(&mut self, method: &str, payload: Vec<u8>) -> (u32, Vec<u8>) {
        let id = self.next_stream;
        self.next_stream += 2;
        (id, ttrpc::request(id, PLUGIN, method, payload))
    }

    /// Waits for the response to `stream_id`.
    pub fn response(&mut self, stream_id: u32) -> Response {
        loop {
            if let Some(i) = self.got_responses.iter().position(
                |m| matches!(m, Message::Complete { stream_id: s, .. } if *s == stream_id),
            ) {
                let Message::Complete { kind, payload, .. } = self.got_responses.remove(i) else {
                    unreachable!()
                };
                assert_eq!(kind, ttrpc::TYPE_RESPONSE);
                return Response::decode(payload.as_slice()).unwrap();
            }
            assert!(self.read_some(), "plugin closed the connection");
        }
    }

    /// Calls `Plugin/method`, each frame at most `frame` bytes.
    pub fn call_framed(&mut self, method: &str, payload: Vec<u8>, frame: usize) -> Response {
        let (id, msg) = self.request_bytes(method, payload);
        self.raw(&frames(msg.chunks(frame)));
        self.response(id)
    }

    /// Calls `Plugin/method` split as containerd's Go `bufio` writer does: 4,096 bytes, then the
    /// rest in one frame.
    pub fn call_as_containerd(&mut self, method: &str, payload: Vec<u8>) -> Response {
        let (id, msg) = self.request_bytes(method, payload);
        let (head, rest) = msg.split_at(msg.len().min(4096));
        self.raw(&frames([head, rest].into_iter().filter(|p| !p.is_empty())));
        self.response(id)
    }

    pub fn call(&mut self, method: &str, payload: Vec<u8>) -> Response {
        self.call_framed(method, payload, 4096)
    }

    pub fn configure(&mut self, config: &str) -> Response {
        let req = ConfigureRequest {
            config: config.to_owned(),
            runtime_name: "fake".into(),
            runtime_version: "0".into(),
            registration_timeout: 0,
            request_timeout: 0,
        };
        self.call("Configure", req.encode_to_vec())
    }
}

/// The payload of a successful response; panics on an error status.
pub fn ok_payload(resp: Response) -> Vec<u8> {
    assert!(
        resp.status.as_ref().is_none_or(|s| s.code == 0),
        "error status: {:?}",
        resp.status
    );
    resp.payload
}

/// A CreateContainer request as containerd sends it: the fields the plugin reads plus about
/// 13 KB of labels, annotations, env and mounts (unknown to the plugin's trimmed proto).
pub fn create_request(name: &str, id: &str) -> Vec<u8> {
    create_request_sized(name, id, 135)
}

/// [`create_request`] with `envs` environment variables in the container.
pub fn create_request_sized(name: &str, id: &str, envs: usize) -> Vec<u8> {
    let container = container_bytes(name, id, "pod-1", envs);
    let req = CreateContainerRequest {
        pod: Some(pod("pod-1", "web-0")),
        container: None,
    };
    let mut out = req.encode_to_vec();
    push_field(&mut out, 0x12, &container); // field 2 (container)
    out
}

/// Appends a length-delimited field with tag byte `tag` (field number << 3 | 2).
fn push_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    prost::encoding::encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn pod(id: &str, name: &str) -> PodSandbox {
    PodSandbox {
        id: id.into(),
        name: name.into(),
        uid: format!("uid-{id}"),
        namespace: "default".into(),
    }
}

/// An encoded NRI `Container`: the fields the plugin reads plus `envs` environment variables
/// of about 95 bytes (field 8, unknown to the plugin's trimmed proto), standing for the labels,
/// annotations, env and mounts containerd sends.
pub fn container_bytes(name: &str, id: &str, pod_id: &str, envs: usize) -> Vec<u8> {
    let mut container = Container {
        id: id.into(),
        pod_sandbox_id: pod_id.into(),
        name: name.into(),
    }
    .encode_to_vec();
    for i in 0..envs {
        let env = format!("ENV_VARIABLE_NUMBER_{i:03}=some-value-that-is-long-enough-{i:040}");
        push_field(&mut container, 0x42, env.as_bytes()); // field 8 (env)
    }
    container
}

/// Largest ttrpc message containerd's ttrpc client sends (`messageLengthMax`, 4 MiB); a larger
/// one fails in the client, before anything is written, with `OversizedMessageErr`.
pub const TTRPC_MESSAGE_MAX: usize = 4 << 20;

/// The `Synchronize` payloads containerd sends for `pods` and `containers` (encoded `PodSandbox`
/// and `Container` messages), split as containerd/nri's `pkg/adaptation` (`plugin.synchronize`,
/// `recalcObjsPerSyncMsg`) splits them: first everything in one message; while the ttrpc message
/// would pass [`TTRPC_MESSAGE_MAX`], pods and containers per message are multiplied by
/// `max / rejected length` (at most 0.9); every message but the last has `more` set.
pub fn synchronize_requests(pods: &[Vec<u8>], containers: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let encode = |pods: &[Vec<u8>], ctrs: &[Vec<u8>], more: bool| {
        let mut out = Vec::new();
        for p in pods {
            push_field(&mut out, 0x0a, p); // field 1 (pods)
        }
        for c in ctrs {
            push_field(&mut out, 0x12, c); // field 2 (containers)
        }
        if more {
            out.extend_from_slice(&[0x18, 1]); // field 3 (more), varint true
        }
        out
    };
    let (mut pods_left, mut ctrs_left) = (pods, containers);
    let (mut per_pods, mut per_ctrs) = (pods.len(), containers.len());
    let mut messages = Vec::new();
    loop {
        let more = pods_left.len() > per_pods || ctrs_left.len() > per_ctrs;
        let payload = encode(&pods_left[..per_pods], &ctrs_left[..per_ctrs], more);
        let len = ttrpc::request(1, PLUGIN, "Synchronize", payload.clone()).len();
        if len > TTRPC_MESSAGE_MAX {
            assert!(
                per_pods + per_ctrs > 8,
                "containerd gives up below 8 objects"
            );
            let factor = (TTRPC_MESSAGE_MAX as f64 / len as f64).min(0.9);
            per_pods = (per_pods as f64 * factor) as usize;
            per_ctrs = (per_ctrs as f64 * factor) as usize;
            continue;
        }
        messages.push(payload);
        if !more {
            return messages;
        }
        pods_left = &pods_left[per_pods..];
        ctrs_left = &ctrs_left[per_ctrs..];
        per_pods = per_pods.min(pods_left.len());
        per_ctrs = per_ctrs.min(ctrs_left.len());
    }
}

/// Encoded `PodSandbox` messages for `n` pods, `pod-<i>`.
pub fn pods_bytes(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| pod(&format!("pod-{i}"), &format!("web-{i}")).encode_to_vec())
        .collect()
}

/// A plugin process and the fake runtime's listening socket.
pub struct Setup {
    /// Holds `nri.sock`, `plugin.log`, `src/` and `install/`.
    pub dir: tempfile::TempDir,
    /// The runtime's socket; `None` while the runtime is "down".
    pub listener: Option<UnixListener>,
    /// The plugin process (stopped when dropped).
    pub child: ChildGuard,
}

impl Setup {
    pub fn socket(dir: &Path) -> PathBuf {
        dir.join("nri.sock")
    }

    /// Starts `install --interface nri-hook --daemonize` against a fresh socket.
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(Self::socket(dir.path())).unwrap();
        let child = Self::spawn(dir.path(), extra);
        Self {
            dir,
            listener: Some(listener),
            child: ChildGuard::new(child),
        }
    }

    pub fn spawn(dir: &Path, extra: &[&str]) -> Child {
        let src = dir.join("src");
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(dir.join("install")).unwrap();
        fs::write(src.join("tetragon-oci-hook"), b"#!/bin/sh\nexit 0\n").unwrap();
        let log = fs::File::create(dir.join("plugin.log")).unwrap();
        super::cmd::nri_plugin(
            &src.join("tetragon-oci-hook"),
            &dir.join("install"),
            Path::new("/opt/tetragon"),
            &Self::socket(dir),
        )
        .args(extra)
        .args(["hook-args", "--grpc-address", "unix:///t.sock"])
        .stderr(log)
        .spawn()
        .unwrap()
    }

    pub fn accept(&self) -> Conn {
        let listener = self.listener.as_ref().unwrap();
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    return Conn::new(s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "plugin did not connect\n{}",
                        self.log()
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Accepts, checks RegisterPlugin, configures and confirms the registration.
    pub fn registered(&self) -> Conn {
        let mut c = self.accept();
        let (id, reg) = c.register_request();
        assert_eq!(
            (reg.plugin_name.as_str(), reg.plugin_idx.as_str()),
            ("tetragon", "01")
        );
        let events = ConfigureResponse::decode(ok_payload(c.configure("")).as_slice()).unwrap();
        assert_eq!(events.events, 8);
        c.reply_register(id);
        c
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("plugin.log")).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the plugin.
    pub fn signal(&self, sig: i32) {
        self.child.signal(sig);
    }

    /// Waits at most [`WAIT`] for the plugin to exit; its exit code (-1: killed by a signal).
    pub fn wait_exit(&mut self) -> i32 {
        match self.child.wait_for(WAIT) {
            Some(st) => st.code().unwrap_or(-1),
            None => panic!("plugin did not exit\n{}", self.log()),
        }
    }
}
