//! A stand-in Tetragon agent for tests: a real tonic gRPC server on a temporary unix socket that
//! implements the trimmed `tetragon.FineGuidanceSensors` service (`RuntimeHook`, `GetVersion`)
//! and records every `CreateContainer` it receives.
//!
//! A dev-dependency of the setup package and of the hook crate (their tests, benches and the
//! `stand-in-agent` example share this one agent); never part of a shipped binary. Use:
//!
//! ```ignore
//! let agent = test_agent::Agent::start(test_agent::Behavior::Accept);
//! // run the hook with `--grpc-address` = agent.address()
//! let seen = agent.wait_for_requests(1, Duration::from_secs(5));
//! assert_eq!(seen[0].pod_namespace, "ns1");
//! ```
//!
//! `Agent::start_tcp` listens on a loopback TCP port instead. The server runs on its own thread
//! with a current-thread runtime and stops when the `Agent` is dropped (a hanging request is released then too). It does not check anything itself:
//! tests assert on what it recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Generated messages and server of the trimmed agent API (`oci-hook/proto/tetragon.proto`).
pub mod proto {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/tetragon.rs"));
}

use proto::fine_guidance_sensors_server::{FineGuidanceSensors, FineGuidanceSensorsServer};
use proto::{
    CreateContainer, GetVersionRequest, GetVersionResponse, RuntimeHookRequest,
    RuntimeHookResponse, runtime_hook_request,
};

/// Version string the stand-in agent reports.
pub const VERSION: &str = "v0.0.0-stand-in";

/// How the stand-in agent answers `RuntimeHook`.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Record the request and answer OK.
    Accept,
    /// Record the request and answer OK after this delay (an agent that takes time to answer,
    /// for benchmarks; other requests are served meanwhile).
    AcceptAfter(Duration),
    /// Record the request and never answer (until the agent is dropped).
    Hang,
    /// Record the request and answer with this error status.
    Fail(tonic::Code, String),
}

struct Service {
    behavior: Behavior,
    seen: Arc<Mutex<Vec<CreateContainer>>>,
    stop: tokio::sync::watch::Receiver<bool>,
}

#[tonic::async_trait]
impl FineGuidanceSensors for Service {
    async fn get_version(
        &self,
        _request: tonic::Request<GetVersionRequest>,
    ) -> Result<tonic::Response<GetVersionResponse>, tonic::Status> {
        Ok(tonic::Response::new(GetVersionResponse {
            version: VERSION.to_owned(),
        }))
    }

    async fn runtime_hook(
        &self,
        request: tonic::Request<RuntimeHookRequest>,
    ) -> Result<tonic::Response<RuntimeHookResponse>, tonic::Status> {
        if let Some(runtime_hook_request::Event::CreateContainer(cc)) = request.into_inner().event {
            self.seen.lock().unwrap().push(cc);
        }
        match &self.behavior {
            Behavior::Accept => Ok(tonic::Response::new(RuntimeHookResponse {})),
            Behavior::AcceptAfter(delay) => {
                tokio::time::sleep(*delay).await;
                Ok(tonic::Response::new(RuntimeHookResponse {}))
            }
            Behavior::Hang => {
                let mut stop = self.stop.clone();
                let _ = stop.wait_for(|s| *s).await;
                Err(tonic::Status::unavailable("stand-in agent stopped"))
            }
            Behavior::Fail(code, msg) => Err(tonic::Status::new(*code, msg.clone())),
        }
    }
}

enum Listen {
    Unix(PathBuf),
    Tcp,
}

/// A running stand-in agent.
pub struct Agent {
    socket: PathBuf,
    address: String,
    seen: Arc<Mutex<Vec<CreateContainer>>>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl Agent {
    /// Starts an agent on a socket in a new temporary directory.
    pub fn start(behavior: Behavior) -> Self {
        let dir = tempfile::Builder::new().prefix("agent").tempdir().unwrap();
        let socket = dir.path().join("tetragon.sock");
        let mut agent = Self::start_at(&socket, behavior);
        agent._dir = Some(dir);
        agent
    }

    /// Starts an agent listening on `socket` (which must not exist yet).
    pub fn start_at(socket: &Path, behavior: Behavior) -> Self {
        Self::spawn(Listen::Unix(socket.to_path_buf()), behavior)
    }

    /// Starts an agent on a loopback TCP port (for `--grpc-address host:port`).
    pub fn start_tcp(behavior: Behavior) -> Self {
        Self::spawn(Listen::Tcp, behavior)
    }

    fn spawn(listen: Listen, behavior: Behavior) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let svc = FineGuidanceSensorsServer::new(Service {
            behavior,
            seen: seen.clone(),
            stop: stop_rx.clone(),
        });
        let socket = match &listen {
            Listen::Unix(p) => p.clone(),
            Listen::Tcp => PathBuf::new(),
        };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut stop = stop_rx;
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                // `Server::serve_with_incoming_shutdown` takes the service directly, so tonic's
                // `router` feature (and axum) is not needed.
                let server = tonic::transport::Server::builder();
                match listen {
                    Listen::Unix(path) => {
                        let listener = tokio::net::UnixListener::bind(&path).unwrap();
                        ready_tx.send(format!("unix://{}", path.display())).unwrap();
                        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                        server
                            .serve_with_incoming_shutdown(svc, incoming, shutdown)
                            .await
                    }
                    Listen::Tcp => {
                        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                        ready_tx
                            .send(listener.local_addr().unwrap().to_string())
                            .unwrap();
                        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                        server
                            .serve_with_incoming_shutdown(svc, incoming, shutdown)
                            .await
                    }
                }
                .unwrap();
            });
        });
        let address = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("stand-in agent did not start");
        Self {
            socket,
            address,
            seen,
            stop: stop_tx,
            thread: Some(thread),
            _dir: None,
        }
    }

    /// The socket path (empty for a TCP agent).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The `--grpc-address` value for this agent (`unix:///...` or `127.0.0.1:PORT`).
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// The `CreateContainer` requests received so far.
    pub fn requests(&self) -> Vec<CreateContainer> {
        self.seen.lock().unwrap().clone()
    }

    /// The shared list of received requests (for callers that watch it from another thread).
    pub fn seen_handle(&self) -> Arc<Mutex<Vec<CreateContainer>>> {
        self.seen.clone()
    }

    /// Waits until at least `n` requests arrived (or `timeout` passed) and returns them all.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<CreateContainer> {
        let start = Instant::now();
        loop {
            let seen = self.requests();
            if seen.len() >= n || start.elapsed() > timeout {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if !self.socket.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}
