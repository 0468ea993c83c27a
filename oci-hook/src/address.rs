//! `--grpc-address` parsing, apart from the gRPC client so that the setup tool (which builds
//! this crate without its `client` feature) validates addresses the way the hook reads them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{anyhow, bail};

/// A parsed `--grpc-address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `unix:///path` or `unix:path`.
    Unix(PathBuf),
    /// `host:port` with an IP address or `localhost`.
    Tcp(SocketAddr),
}

impl Address {
    /// Parses `unix:///abs/path`, `unix:/abs/path`, `unix:rel/path` or `host:port` (IP literal or
    /// `localhost`, IPv6 in brackets).
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        if let Some(rest) = s.strip_prefix("unix://") {
            if !rest.starts_with('/') {
                bail!(
                    "`{s}`: `unix://` needs an absolute path\nhelp: write `unix:///path/to/socket` or `unix:relative/path`"
                );
            }
            return Ok(Self::Unix(PathBuf::from(rest)));
        }
        if let Some(rest) = s.strip_prefix("unix:") {
            if rest.is_empty() {
                bail!("`{s}`: empty socket path");
            }
            return Ok(Self::Unix(PathBuf::from(rest)));
        }
        let hostport = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        let Some((host, port)) = hostport.rsplit_once(':') else {
            bail!(
                "`{s}` is neither `unix:` nor `host:port`\nhelp: write `unix:///var/run/tetragon/tetragon.sock` or `127.0.0.1:54321`"
            );
        };
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow!("`{s}`: invalid port `{port}`"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let ip = if host.is_empty() || host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse::<IpAddr>().map_err(|_| {
                anyhow!("`{s}`: host `{host}` is not an IP address\nhelp: the hook resolves no host names but `localhost`")
            })?
        };
        Ok(Self::Tcp(SocketAddr::new(ip, port)))
    }
}
