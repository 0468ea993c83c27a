//! From what the runtime hands the hook (the OCI state on stdin, the bundle's `config.json`) to
//! the agent's `CreateContainer` request.
//!
//! Only the fields the request needs are parsed; unknown fields and values are ignored, so a
//! newer runtime or spec cannot break the hook. Reading stdin is bounded in size and time and
//! never waits on a terminal. This module does not talk to the agent and does not log.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::proto::{CreateContainer, Mount, RuntimeHookRequest, runtime_hook_request};

/// Most bytes read from stdin: a state is a few hundred bytes, annotations included.
pub const STDIN_LIMIT: usize = 1 << 20;

/// Largest `config.json` read: real specs are under 200 KB; a bigger file is a read error (the
/// fail policy decides) and is never read whole.
pub const CONFIG_LIMIT: u64 = 16 << 20;

/// Longest time spent waiting on stdin.
pub const STDIN_DEADLINE: Duration = Duration::from_secs(2);

/// The part of the OCI state (runtime-spec `state.md`) the hook uses.
#[derive(Debug, Default, Deserialize)]
pub struct State {
    /// Container ID.
    #[serde(default)]
    pub id: String,
    /// Absolute path of the bundle (holds `config.json`).
    #[serde(default)]
    pub bundle: String,
}

/// The part of the OCI runtime spec (`config.json`) the hook uses.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Spec {
    /// `root`.
    pub root: Option<Root>,
    /// `annotations`.
    pub annotations: HashMap<String, String>,
    /// `mounts`.
    pub mounts: Vec<SpecMount>,
    /// `linux`.
    pub linux: Option<Linux>,
}

/// `root` of the spec.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Root {
    /// Path of the root filesystem, absolute or relative to the bundle.
    pub path: String,
}

/// `linux` of the spec.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Linux {
    /// `cgroupsPath`: a path, or `slice:prefix:name` with the systemd driver.
    #[serde(rename = "cgroupsPath")]
    pub cgroups_path: String,
}

/// One entry of `mounts`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SpecMount {
    /// `destination`.
    pub destination: String,
    /// `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `source`.
    pub source: String,
    /// `options`.
    pub options: Vec<String>,
}

/// Reads the OCI state from `stdin`: at most [`STDIN_LIMIT`] bytes, for at most `deadline`,
/// stopping as soon as a whole JSON value has arrived. A terminal is not read at all.
/// Returns `Ok(None)` when nothing usable came (terminal, empty, timeout); an error when the
/// bytes are not a state.
pub fn read_state(stdin: &std::io::Stdin, deadline: Duration) -> anyhow::Result<Option<State>> {
    if stdin.is_terminal() {
        return Ok(None);
    }
    let bytes = read_bounded(stdin, deadline)?;
    parse_state(&bytes)
}

/// Parses state bytes; empty input is `Ok(None)`.
pub fn parse_state(bytes: &[u8]) -> anyhow::Result<Option<State>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let state: State = serde_json::from_slice(bytes).context("invalid OCI state on stdin")?;
    Ok(Some(state))
}

fn read_bounded(stdin: &std::io::Stdin, deadline: Duration) -> anyhow::Result<Vec<u8>> {
    use rustix::event::{PollFd, PollFlags, poll};
    let start = Instant::now();
    let fd = stdin.as_fd();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut lock = stdin.lock();
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            if serde_json::from_slice::<serde::de::IgnoredAny>(&buf).is_ok() {
                return Ok(buf);
            }
            bail!("stdin did not close within {} s", deadline.as_secs_f32());
        }
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let ts = rustix::event::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(std::io::Error::from(e)).context("failed to poll stdin"),
        }
        let n = match lock.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("failed to read stdin"),
        };
        if n == 0 {
            return Ok(buf);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > STDIN_LIMIT {
            bail!("more than {STDIN_LIMIT} bytes on stdin; not an OCI state");
        }
        // A runtime that keeps stdin open after writing the state must not stall the hook.
        if serde_json::from_slice::<serde::de::IgnoredAny>(&buf).is_ok() {
            return Ok(buf);
        }
    }
}

/// Candidates for `config.json`: the bundle's, then `./config.json`, `../config.json` and
/// `../userdata/config.json` from `cwd` (older cri-o and containerd layouts).
pub fn config_candidates(bundle: Option<&Path>, cwd: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(b) = bundle {
        v.push(b.join("config.json"));
    }
    v.push(cwd.join("config.json"));
    v.push(cwd.join("../config.json"));
    v.push(cwd.join("../userdata/config.json"));
    v
}

/// Finds and parses `config.json`: the first candidate that exists must be a regular file (after
/// its symlinks) of at most [`CONFIG_LIMIT`] bytes, checked with `fstat` on the descriptor opened
/// `O_NONBLOCK` (a FIFO never blocks the hook). Returns its path and the spec.
pub fn load_spec(candidates: &[PathBuf]) -> anyhow::Result<(PathBuf, Spec)> {
    for path in candidates {
        let text = match read_config(path) {
            Ok(t) => t,
            Err(e)
                if e.downcast_ref::<std::io::Error>().map(std::io::Error::kind)
                    == Some(std::io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(e) => return Err(e.context(format!("failed to read `{}`", path.display()))),
        };
        let spec: Spec = serde_json::from_slice(&text)
            .with_context(|| format!("failed to parse `{}`", path.display()))?;
        return Ok((path.clone(), spec));
    }
    let tried: Vec<String> = candidates
        .iter()
        .map(|p| format!("`{}`", p.display()))
        .collect();
    bail!(
        "failed to find the spec file (`config.json`); tried {}",
        tried.join(", ")
    );
}

/// Reads one `config.json`: regular file, at most [`CONFIG_LIMIT`] bytes, bounded read.
/// A missing file (or a directory) is an `std::io::Error` of kind `NotFound`.
fn read_config(path: &Path) -> anyhow::Result<Vec<u8>> {
    read_regular(path, CONFIG_LIMIT, "a spec").map_err(|e| {
        match e.downcast_ref::<std::io::Error>().map(std::io::Error::kind) {
            // As before: a directory named `config.json` is not the spec; try the next place.
            Some(std::io::ErrorKind::IsADirectory) => {
                std::io::Error::from(std::io::ErrorKind::NotFound).into()
            }
            _ => e,
        }
    })
}

pub use crate::file::read_regular;

/// Expands a systemd `slice:prefix:name` cgroups path as runc's systemd driver does; any
/// other value is returned as is.
///
/// ```
/// use oci_hook::spec::cgroup_path;
/// assert_eq!(
///     cgroup_path("kubepods-besteffort-pod42.slice:cri-containerd:abc").unwrap(),
///     "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod42.slice/cri-containerd-abc.scope"
/// );
/// assert_eq!(cgroup_path("/kubepods/besteffort/pod42/abc").unwrap(), "/kubepods/besteffort/pod42/abc");
/// ```
pub fn cgroup_path(raw: &str) -> anyhow::Result<String> {
    let parts: Vec<&str> = raw.split(':').collect();
    if raw.starts_with('/') || parts.len() != 3 {
        return Ok(raw.to_owned());
    }
    let (slice, prefix, name) = (parts[0], parts[1], parts[2]);
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    let mut path = expand_slice(slice)?;
    let unit = if name.ends_with(".slice") {
        name.to_owned()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    if !path.ends_with('/') {
        path.push('/');
    }
    path.push_str(&unit);
    Ok(path)
}

/// `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root.
fn expand_slice(slice: &str) -> anyhow::Result<String> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        bail!("invalid systemd slice `{slice}`: no `.slice` suffix");
    };
    if slice.contains('/') {
        bail!("invalid systemd slice `{slice}`: contains `/`");
    }
    if stem == "-" {
        return Ok("/".to_owned());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if part.is_empty() {
            bail!("invalid systemd slice `{slice}`: empty component");
        }
        path.push('/');
        path.push_str(&prefix);
        path.push_str(part);
        path.push_str(".slice");
        prefix.push_str(part);
        prefix.push('-');
    }
    Ok(path)
}

/// The root directory of the container: `root.path` when absolute (cri-o, podman), else the
/// bundle joined with it (containerd's `rootfs`).
pub fn root_dir(bundle: &Path, spec: &Spec) -> PathBuf {
    match spec.root.as_ref().map(|r| r.path.as_str()) {
        Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
        Some(p) if !p.is_empty() => bundle.join(p),
        _ => bundle.to_path_buf(),
    }
}

fn first_of(annotations: &HashMap<String, String>, keys: &[&str]) -> String {
    keys.iter()
        .find_map(|k| annotations.get(*k))
        .cloned()
        .unwrap_or_default()
}

/// Builds the `CreateContainer` message from the spec.
pub fn create_container(cgroups_path: String, root_dir: &Path, spec: &Spec) -> CreateContainer {
    let a = &spec.annotations;
    CreateContainer {
        cgroups_path,
        root_dir: root_dir.to_string_lossy().into_owned(),
        annotations: a.clone(),
        container_name: first_of(
            a,
            &[
                "io.kubernetes.cri.container-name",
                "io.kubernetes.container.name",
            ],
        ),
        container_id: first_of(a, &["io.kubernetes.cri-o.ContainerID"]),
        pod_name: first_of(
            a,
            &["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"],
        ),
        pod_uid: first_of(
            a,
            &["io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"],
        ),
        pod_namespace: first_of(
            a,
            &[
                "io.kubernetes.cri.sandbox-namespace",
                "io.kubernetes.pod.namespace",
            ],
        ),
        container_image: first_of(
            a,
            &[
                "io.kubernetes.cri.image-name",
                "io.kubernetes.cri-o.ImageName",
            ],
        ),
        mounts: spec
            .mounts
            .iter()
            .map(|m| Mount {
                destination: m.destination.clone(),
                r#type: m.kind.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect(),
    }
}

/// Wraps a `CreateContainer` into the request the agent takes.
pub fn request(cc: CreateContainer) -> RuntimeHookRequest {
    RuntimeHookRequest {
        event: Some(runtime_hook_request::Event::CreateContainer(cc)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FIFO (or device) is refused before it is opened: a writer blocked opening the FIFO
    /// stays blocked (opening it for reading, as before, would have let it through).
    #[test]
    fn non_regular_file_is_refused_without_being_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.json");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = fifo.clone();
        let writer = std::thread::spawn(move || {
            // Blocks until a reader opens the FIFO.
            let f = std::fs::OpenOptions::new().write(true).open(&p);
            let _ = tx.send(());
            f
        });
        // Let the writer reach its blocking open.
        std::thread::sleep(std::time::Duration::from_millis(100));
        for path in [&fifo, &link] {
            let err = read_regular(path, CONFIG_LIMIT, "a spec").unwrap_err();
            assert!(
                format!("{err:#}").contains("not a regular file (Fifo)"),
                "{err:#}"
            );
        }
        let opened = rx
            .recv_timeout(std::time::Duration::from_millis(300))
            .is_ok();
        // Release the writer whatever happened.
        let _reader = rustix::fs::open(
            &fifo,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        writer.join().unwrap().unwrap();
        assert!(!opened, "the FIFO was opened");
        let err = read_regular(Path::new("/dev/null"), CONFIG_LIMIT, "a spec").unwrap_err();
        assert!(
            format!("{err:#}").contains("not a regular file (CharacterDevice)"),
            "{err:#}"
        );
    }

    #[test]
    fn cgroup_path_systemd_forms() {
        let cases = [
            (
                "kubepods-besteffort-pod42.slice:cri-containerd:abc",
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod42.slice/cri-containerd-abc.scope",
            ),
            (
                "machine.slice:libpod:abc",
                "/machine.slice/libpod-abc.scope",
            ),
            ("kubepods.slice:crio:x.slice", "/kubepods.slice/x.slice"),
            ("-.slice:p:n", "/p-n.scope"),
            (":p:n", "/system.slice/p-n.scope"),
            ("user.slice::n", "/user.slice/n.scope"),
            (
                "/kubepods/burstable/pod1/abc",
                "/kubepods/burstable/pod1/abc",
            ),
            ("", ""),
            ("a:b", "a:b"),
        ];
        for (raw, want) in cases {
            assert_eq!(cgroup_path(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn cgroup_path_rejects_bad_slices() {
        for raw in ["kubepods:p:n", "a--b.slice:p:n", "a/b.slice:p:n"] {
            assert!(cgroup_path(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn root_dir_relative_and_absolute() {
        let spec: Spec = serde_json::from_str(r#"{"root":{"path":"rootfs"}}"#).unwrap();
        assert_eq!(root_dir(Path::new("/b"), &spec), PathBuf::from("/b/rootfs"));
        let spec: Spec = serde_json::from_str(r#"{"root":{"path":"/var/lib/x/merged"}}"#).unwrap();
        assert_eq!(
            root_dir(Path::new("/b"), &spec),
            PathBuf::from("/var/lib/x/merged")
        );
    }

    #[test]
    fn spec_ignores_unknown_fields_and_values() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"9.9","process":{"x":1},"root":{"path":"r","readonly":true},
               "mounts":[{"destination":"/proc","type":"proc","source":"proc","uidMappings":[]}],
               "linux":{"cgroupsPath":"/a","namespaces":[{"type":"brandnew"}]},"future":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(spec.linux.unwrap().cgroups_path, "/a");
        assert_eq!(spec.mounts[0].destination, "/proc");
    }

    #[test]
    fn state_parsing() {
        assert!(parse_state(b"").unwrap().is_none());
        assert!(parse_state(b" \n").unwrap().is_none());
        assert!(parse_state(b"{\"bundle\":").is_err());
        let s = parse_state(
            br#"{"ociVersion":"1.0","id":"c","status":"creating","pid":1,"bundle":"/b"}"#,
        )
        .unwrap()
        .unwrap();
        assert_eq!((s.id.as_str(), s.bundle.as_str()), ("c", "/b"));
    }
}
