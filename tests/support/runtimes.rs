//! Locating the real container runtimes fetched by `scripts/fetch-containerd.sh`,
//! the skip reason for tests that need them, and `containerd config dump`.
//!
//! Cache layout (same env var / default as the script):
//! `${TETRAGON_RTHOOKS_CACHE:-$HOME/.cache/tetragon-rthooks}/containerd-<1.7|2.1>/`
//! holds the `dpkg -x` trees of Debian's `containerd` and `runc` packages, so
//! the binaries are `<dir>/usr/bin/containerd` and `<dir>/usr/bin/runc`.  The
//! script writes `<dir>/.complete` last; a directory without it is ignored.
//!
//! A test whose release is missing follows the one skip policy (`super::skip`), with the
//! reason [`missing`]: `require!(runtimes::containerd(release), runtimes::missing(release))`.
#![allow(dead_code, unused_macros)]

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable overriding the cache root.
pub const CACHE_ENV: &str = "TETRAGON_RTHOOKS_CACHE";
/// Hint in the skip reason [`missing`].
pub const FETCH_HINT: &str = "run scripts/fetch-containerd.sh";
/// Upper bound for one `containerd config ...` invocation.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A containerd release provided by `scripts/fetch-containerd.sh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Release {
    /// containerd 1.7 (Debian 13 "trixie"); config versions 1 and 2 only.
    V1_7,
    /// containerd 2.1 (Debian unstable); config versions 1, 2 and 3.
    V2_1,
}

impl Release {
    pub const ALL: [Release; 2] = [Release::V1_7, Release::V2_1];

    /// "1.7" / "2.1"
    pub fn as_str(self) -> &'static str {
        match self {
            Release::V1_7 => "1.7",
            Release::V2_1 => "2.1",
        }
    }

    /// Name of the release's directory under the cache root.
    pub fn dir_name(self) -> String {
        format!("containerd-{}", self.as_str())
    }

    /// Highest `version = N` the release's config loader accepts.
    pub fn max_config_version(self) -> u32 {
        match self {
            Release::V1_7 => 2,
            Release::V2_1 => 3,
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "containerd {}", self.as_str())
    }
}

/// `$TETRAGON_RTHOOKS_CACHE` if set and non-empty, else
/// `$HOME/.cache/tetragon-rthooks` (like `${VAR:-default}` in the script).
pub fn cache_root() -> Option<PathBuf> {
    match std::env::var_os(CACHE_ENV) {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".cache/tetragon-rthooks")),
    }
}

/// The release's completely fetched directory (the `dpkg -x` root).
pub fn release_dir(release: Release) -> Option<PathBuf> {
    let dir = cache_root()?.join(release.dir_name());
    dir.join(".complete").is_file().then_some(dir)
}

fn executable(path: PathBuf) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&path).ok()?;
    (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(path)
}

/// `<dir>/usr/bin/containerd` of the release, if fetched.
pub fn containerd(release: Release) -> Option<PathBuf> {
    executable(release_dir(release)?.join("usr/bin/containerd"))
}

/// `<dir>/usr/bin/runc` (runc of the same Debian suite), if fetched.
pub fn runc(release: Release) -> Option<PathBuf> {
    executable(release_dir(release)?.join("usr/bin/runc"))
}

/// `<dir>/usr/bin`: prepend to `PATH` when starting containerd so that its
/// shim (`containerd-shim-runc-v2`, same dir) finds the matching `runc`.
pub fn bin_dir(release: Release) -> Option<PathBuf> {
    containerd(release).and_then(|p| p.parent().map(Path::to_path_buf))
}

/// The skip reason for a release that is not fetched:
/// `containerd 1.7 not found (run scripts/fetch-containerd.sh)`.
pub fn missing(release: Release) -> String {
    format!("{release} not found ({FETCH_HINT})")
}

/// Output of a `containerd ... config dump` run that succeeded.
#[derive(Debug, Clone)]
pub struct Dump {
    /// The merged configuration, TOML.
    pub stdout: String,
    /// Warnings, e.g. 2.1's `Ambiguous nri plugin in v1 config, treating as
    /// io.containerd.grpc.v1.nri`, or 1.7's v1-deprecation warning.
    pub stderr: String,
}

/// `containerd --config <config> config dump`: stdout on success, stderr (or
/// a description of the failure) as error.
///
/// Facts (checked with strace for 1.7.24 and 2.1.9): `config dump` only
/// reads the config file (and its imports); it creates no directories or
/// sockets, does not touch `root`/`state` (/var/lib/containerd,
/// /run/containerd) and works as non-root, so no state redirection is done
/// and the config under test is passed unmodified.
///
/// containerd 2.1 silently dumps defaults when `--config` names a missing
/// file, so a missing `config` is reported as an error here up front.
/// containerd 1.7 echoes the config path, as given, in `imports = [...]`.
pub fn config_dump(bin: &Path, config: &Path) -> Result<String, String> {
    config_dump_full(bin, config).map(|d| d.stdout)
}

/// Like [`config_dump`], also returning stderr (warnings) on success.
pub fn config_dump_full(bin: &Path, config: &Path) -> Result<Dump, String> {
    if !config.is_file() {
        return Err(format!("config file {} does not exist", config.display()));
    }
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config).args(["config", "dump"]);
    let (ok, stdout, stderr, status) = run(cmd)?;
    if ok {
        Ok(Dump { stdout, stderr })
    } else if stderr.trim().is_empty() {
        Err(format!("{} config dump failed: {status}", bin.display()))
    } else {
        Err(stderr)
    }
}

/// `containerd config default` (no config file involved).
pub fn config_default(bin: &Path) -> Result<String, String> {
    let mut cmd = Command::new(bin);
    cmd.args(["config", "default"]);
    match run(cmd)? {
        (true, stdout, _, _) => Ok(stdout),
        (false, _, stderr, status) => Err(format!("config default failed: {status}: {stderr}")),
    }
}

/// The version field of `containerd --version`, e.g. "1.7.24~ds1" or
/// "2.1.9+unknown".
pub fn version(bin: &Path) -> Option<String> {
    let mut cmd = Command::new(bin);
    cmd.arg("--version");
    let (ok, stdout, _, _) = run(cmd).ok()?;
    if !ok {
        return None;
    }
    // "containerd github.com/containerd/containerd/v2 2.1.9+unknown"
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    match fields.as_slice() {
        ["containerd", _, v, ..] => Some(v.trim_start_matches('v').to_string()),
        _ => None,
    }
}

/// Runs `cmd` with stdin closed, collecting stdout/stderr, killing it after
/// [`COMMAND_TIMEOUT`].  Returns (success, stdout, stderr, status text).
fn run(mut cmd: Command) -> Result<(bool, String, String, String), String> {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {desc}: {e}"))?;
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("piped stdout")));
    let err = reader(Box::new(child.stderr.take().expect("piped stderr")));
    let status = match super::child::wait_or_kill(&mut child, COMMAND_TIMEOUT) {
        (Some(status), false) => status,
        (_, true) => return Err(format!("{desc} timed out after {COMMAND_TIMEOUT:?}")),
        (None, false) => return Err(format!("waiting for {desc} failed")),
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok((status.success(), stdout, stderr, status.to_string()))
}
