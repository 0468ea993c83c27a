//! The gRPC client for the agent: one unary call over a unix socket (or loopback TCP), on a
//! current-thread tokio runtime, bounded by `--grpc-timeout`.
//!
//! The connection is a bare HTTP/2 connection (hyper) wrapped as a tonic service, without tonic's
//! channel (no balancer, no reconnect, no DNS, no TLS): the hook makes exactly one call per
//! process. A missing or refusing socket fails at once; only a connected but silent agent waits
//! out the timeout. Host names other than `localhost` are not resolved (no resolver on the
//! critical path of container start); give an IP address.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::codegen::http;

use crate::proto::fine_guidance_sensors_client::FineGuidanceSensorsClient;
use crate::proto::{GetVersionRequest, RuntimeHookRequest};

pub use crate::address::Address;

/// A tonic transport made of one HTTP/2 connection (also what the end-to-end tests' CRI client
/// talks through).
#[derive(Debug, Clone)]
pub struct H2(SendRequest<tonic::body::Body>);

/// The future an [`H2`] call returns.
pub type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, hyper::Error>> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

/// Starts HTTP/2 on `io`; the connection is driven by a task on the current tokio runtime.
pub async fn handshake<T>(io: T) -> anyhow::Result<H2>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(io))
        .await
        .context("HTTP/2 handshake with the agent failed")?;
    tokio::spawn(conn);
    Ok(H2(send))
}

async fn connect(address: &str) -> anyhow::Result<FineGuidanceSensorsClient<H2>> {
    let addr = Address::parse(address).context("invalid agent address")?;
    let h2 = match &addr {
        Address::Unix(path) => {
            let io = tokio::net::UnixStream::connect(path)
                .await
                .with_context(|| format!("failed to connect to `{address}`"))?;
            handshake(io).await?
        }
        Address::Tcp(sa) => {
            let io = tokio::net::TcpStream::connect(sa)
                .await
                .with_context(|| format!("failed to connect to `{address}`"))?;
            handshake(io).await?
        }
    };
    // grpc-go (the agent) uses `localhost` as the authority for unix sockets.
    let origin = http::Uri::from_static("http://localhost");
    Ok(FineGuidanceSensorsClient::with_origin(h2, origin))
}

/// Runs `f` on a fresh current-thread runtime, cut off after `timeout`.
fn run<T, F>(timeout: Duration, f: F) -> anyhow::Result<T>
where
    F: Future<Output = anyhow::Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("failed to start the async runtime")?;
    rt.block_on(async {
        match tokio::time::timeout(timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!(
                "the agent did not answer within {} (`--grpc-timeout`)",
                crate::args::format_duration(timeout)
            )),
        }
    })
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow!(
        "the agent returned code {:?}: {}",
        status.code(),
        status.message()
    )
}

/// Sends `RuntimeHook(req)` to the agent at `address`; any error status is an error.
pub fn runtime_hook(
    address: &str,
    timeout: Duration,
    req: RuntimeHookRequest,
) -> anyhow::Result<()> {
    run(timeout, async {
        let mut client = connect(address).await?;
        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout);
        client.runtime_hook(request).await.map_err(status_error)?;
        Ok(())
    })
}

/// Asks the agent at `address` for its version.
pub fn server_version(address: &str, timeout: Duration) -> anyhow::Result<String> {
    run(timeout, async {
        let mut client = connect(address).await?;
        let mut request = tonic::Request::new(GetVersionRequest {});
        request.set_timeout(timeout);
        let resp = client.get_version(request).await.map_err(status_error)?;
        Ok(resp.into_inner().version)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_forms() {
        assert_eq!(
            Address::parse("unix:///var/run/tetragon/tetragon.sock").unwrap(),
            Address::Unix("/var/run/tetragon/tetragon.sock".into())
        );
        assert_eq!(
            Address::parse("unix:/a/b").unwrap(),
            Address::Unix("/a/b".into())
        );
        assert_eq!(
            Address::parse("unix:rel").unwrap(),
            Address::Unix("rel".into())
        );
        assert_eq!(
            Address::parse("localhost:54321").unwrap(),
            Address::Tcp("127.0.0.1:54321".parse().unwrap())
        );
        assert_eq!(
            Address::parse("[::1]:5").unwrap(),
            Address::Tcp("[::1]:5".parse().unwrap())
        );
        for bad in [
            "",
            "unix:",
            "unix://rel",
            "host",
            "example.org:1",
            "127.0.0.1:http",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
