//! A real containerd on private paths, for end-to-end tests.
//!
//! [`Containerd::start`] writes a config made from the release's own `containerd config default`
//! (with NRI enabled by OUR `patch-containerd-conf enable-nri` when asked), in which every path
//! of the node's containerd (`/var/lib/containerd`, `/run/containerd`, `/opt/containerd`, the NRI
//! socket, `plugin_path` and `plugin_config_path`) is moved under a temporary dir. It then starts
//! the daemon with the release's `usr/bin` first on `PATH` (so its shim finds the matching runc),
//! waits for its gRPC socket and its "booted" line, and captures its log. It is ALWAYS stopped:
//! [`Drop`] sends SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
//!
//! ```ignore
//! let ctr = require!(Containerd::start(Release::V1_7, Setup::enable_nri()), "containerd 1.7 not found");
//! assert!(ctr.nri_socket().exists());
//! ctr.wait_log("plugin \"01-tetragon\" connected", Duration::from_secs(10)).unwrap();
//! ```
//!
//! Not handled: containerd's shims put their sockets under the fixed `/run/containerd/s/` on
//! 1.7 whatever the config says; tests that run containers must expect that.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use toml_edit::{DocumentMut, Item, Value};

use super::runtimes::{self, Release};

/// How long containerd may take to boot.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd may take to exit after SIGTERM.
pub use super::child::STOP_TIMEOUT;
/// The line containerd logs once every plugin is loaded and it serves.
pub const BOOTED: &str = "containerd successfully booted";

const SETUP_BIN: &str = env!("CARGO_BIN_EXE_tetragon-oci-hook-setup");

/// A config tweak applied to the document before it is written.
pub type Edit = Box<dyn Fn(&mut DocumentMut, &Paths)>;

/// How the config is made.
pub struct Setup {
    /// Run our `patch-containerd-conf enable-nri` on the default config.
    pub enable_nri: bool,
    /// Extra edits (e.g. `restrict_oom_score_adj = true`), after the paths are moved.
    pub edits: Vec<Edit>,
}

impl Setup {
    /// The release's default config, paths moved, nothing else changed.
    pub fn default_config() -> Self {
        Self {
            enable_nri: false,
            edits: Vec::new(),
        }
    }

    /// The default config after our `enable-nri`.
    pub fn enable_nri() -> Self {
        Self {
            enable_nri: true,
            edits: Vec::new(),
        }
    }

    /// Adds an edit of the document.
    pub fn edit(mut self, f: impl Fn(&mut DocumentMut, &Paths) + 'static) -> Self {
        self.edits.push(Box::new(f));
        self
    }
}

/// The private paths of one containerd.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The temporary dir everything is under.
    pub base: PathBuf,
    /// `root`.
    pub root: PathBuf,
    /// `state`.
    pub state: PathBuf,
    /// The gRPC socket.
    pub grpc_socket: PathBuf,
    /// The NRI socket.
    pub nri_socket: PathBuf,
    /// NRI `plugin_path` (pre-launched plugins).
    pub plugin_path: PathBuf,
    /// NRI `plugin_config_path`.
    pub plugin_config_path: PathBuf,
    /// The written config.
    pub config: PathBuf,
    /// containerd's stdout and stderr.
    pub log: PathBuf,
}

impl Paths {
    fn new(base: &Path) -> Self {
        Self {
            base: base.to_owned(),
            root: base.join("root"),
            state: base.join("state"),
            grpc_socket: base.join("state/containerd.sock"),
            nri_socket: base.join("nri/nri.sock"),
            plugin_path: base.join("nri-plugins"),
            plugin_config_path: base.join("nri-conf"),
            config: base.join("config.toml"),
            log: base.join("containerd.log"),
        }
    }

    /// Maps a node path of the default config to its private place, if it is one.
    fn map(&self, s: &str) -> Option<String> {
        let table: [(&str, PathBuf); 6] = [
            ("/var/lib/containerd", self.root.clone()),
            ("/run/containerd", self.state.clone()),
            ("/opt/containerd", self.base.join("opt")),
            ("/var/run/nri", self.base.join("nri")),
            ("/opt/nri/plugins", self.plugin_path.clone()),
            ("/etc/nri/conf.d", self.plugin_config_path.clone()),
        ];
        table.iter().find_map(|(prefix, to)| {
            let rest = s.strip_prefix(prefix)?;
            (rest.is_empty() || rest.starts_with('/')).then(|| format!("{}{rest}", to.display()))
        })
    }
}

/// A running (or stopped) private containerd.
pub struct Containerd {
    /// The release.
    pub release: Release,
    /// Its paths.
    pub paths: Paths,
    bin: PathBuf,
    bin_dir: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Containerd {
    /// Writes the config and starts containerd; `None` when the release is not fetched (use
    /// `require!`). Panics if containerd does not boot, with its log.
    pub fn start(release: Release, setup: Setup) -> Option<Self> {
        let c = Self::configure(release, setup)?;
        Some(c.started())
    }

    /// Writes the config without starting containerd (to prepare `plugin_path` first); call
    /// [`Containerd::started`] next.
    pub fn configure(release: Release, setup: Setup) -> Option<Self> {
        let bin = runtimes::containerd(release)?;
        let bin_dir = runtimes::bin_dir(release)?;
        let dir = tempfile::Builder::new().prefix("ctrd").tempdir().unwrap();
        let paths = Paths::new(dir.path());
        for d in [&paths.plugin_path, &paths.plugin_config_path] {
            fs::create_dir_all(d).unwrap();
        }
        let default = runtimes::config_default(&bin).unwrap();
        let default_path = dir.path().join("default.toml");
        fs::write(&default_path, &default).unwrap();
        let text = if setup.enable_nri {
            let out_path = dir.path().join("nri.toml");
            let out = Command::new(SETUP_BIN)
                .args(["patch-containerd-conf", "enable-nri", "--quiet"])
                .arg("--config-file")
                .arg(&default_path)
                .arg("--output")
                .arg(&out_path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "enable-nri: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // No output file: the default needed no change (NRI already on).
            fs::read_to_string(&out_path).unwrap_or(default)
        } else {
            default
        };
        let mut doc: DocumentMut = text.parse().unwrap();
        move_paths(doc.as_item_mut(), &paths);
        for edit in &setup.edits {
            edit(&mut doc, &paths);
        }
        fs::write(&paths.config, doc.to_string()).unwrap();
        Some(Self {
            release,
            paths,
            bin,
            bin_dir,
            child: None,
            _dir: dir,
        })
    }

    /// Starts the daemon and waits until it has booted.
    pub fn started(mut self) -> Self {
        self.spawn();
        self
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log_start = fs::metadata(&self.paths.log).map_or(0, |m| m.len());
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.log)
            .unwrap();
        let path = format!(
            "{}:{}",
            self.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.paths.config)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            let booted = self.log_since(log_start).contains(BOOTED);
            if booted && self.paths.grpc_socket.exists() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "{} exited ({st}) while booting:\n{}",
                    self.release,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not boot within {BOOT_TIMEOUT:?}:\n{}",
                self.release,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The gRPC socket.
    pub fn grpc_socket(&self) -> &Path {
        &self.paths.grpc_socket
    }

    /// The NRI socket.
    pub fn nri_socket(&self) -> &Path {
        &self.paths.nri_socket
    }

    /// containerd's whole log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.paths.log).unwrap_or_default()
    }

    /// The log from byte offset `from`.
    pub fn log_since(&self, from: u64) -> String {
        let bytes = fs::read(&self.paths.log).unwrap_or_default();
        String::from_utf8_lossy(bytes.get(from as usize..).unwrap_or_default()).into_owned()
    }

    /// The log's current length, to look only at what follows.
    pub fn log_len(&self) -> u64 {
        fs::metadata(&self.paths.log).map_or(0, |m| m.len())
    }

    /// Waits until the log (from offset `from`) contains `needle`; the log text as error.
    pub fn wait_log_since(&self, from: u64, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.log_since(from);
            if text.contains(needle) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(text);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// [`Containerd::wait_log_since`] from the start.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        self.wait_log_since(0, needle, timeout)
    }

    /// Whether the daemon process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// The daemon's pid, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops the daemon (SIGTERM, SIGKILL after [`STOP_TIMEOUT`]); no-op when stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        super::child::stop(&mut child, STOP_TIMEOUT);
    }

    /// Stops and starts again with the same config and state; returns when booted.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Moves every node path in the document under the private dir.
fn move_paths(item: &mut Item, paths: &Paths) {
    match item {
        Item::Table(t) => {
            for (_, v) in t.iter_mut() {
                move_paths(v, paths);
            }
        }
        Item::Value(v) => move_value(v, paths),
        Item::ArrayOfTables(a) => {
            for t in a.iter_mut() {
                for (_, v) in t.iter_mut() {
                    move_paths(v, paths);
                }
            }
        }
        Item::None => {}
    }
}

fn move_value(v: &mut Value, paths: &Paths) {
    match v {
        Value::String(s) => {
            if let Some(new) = paths.map(s.value()) {
                let decor = s.decor().clone();
                *v = Value::from(new);
                *v.decor_mut() = decor;
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                move_value(x, paths);
            }
        }
        Value::InlineTable(t) => {
            for (_, x) in t.iter_mut() {
                move_value(x, paths);
            }
        }
        _ => {}
    }
}
