//! The one podman of the tests (`tests/podman.rs`, `tests/hook_podman.rs`): the podman found on
//! `PATH`, with a store of its own (storage, run and temp dirs, `vfs` driver, `cgroupfs`
//! manager, file events, runc when installed), kept apart from the machine's
//! `/var/lib/containers` and `containers.conf`, and ONE image built into it by
//! `scripts/podman-test-image.sh`: a static busybox with all its applet links.
//!
//! [`Podman::get`] applies the skip policy (`super::skip`) when podman is missing or cannot run
//! a container here. Each test passes its own hooks dir ([`Podman::command`]).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The image the podman tests run (built by `scripts/podman-test-image.sh`).
pub(crate) const IMAGE: &str = "localhost/rthooks-test:latest";

/// Options of `podman run` the sandboxes need: no network, and the rlimits as they are (raising
/// them is refused on the CI machines).
pub(crate) const RUN_OPTIONS: [&str; 6] = [
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// `-v` options that make a dynamically linked host binary run in the busybox image: each
/// shared library `ldd` lists, bind-mounted read-only at the same path.
pub(crate) fn library_mounts(binary: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut mounts = Vec::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            mounts.push("-v".to_owned());
            mounts.push(format!("{path}:{path}:ro"));
        }
    }
    mounts
}

/// Writes a hook program (a shell script) that records its argv (one per line), its working
/// directory and its stdin (the OCI state) as `argv`, `cwd` and `stdin` in `record_dir`.
pub(crate) fn recording_hook(path: &Path, record_dir: &Path) {
    let script = format!(
        "#!/bin/sh\n\
         out='{dir}'\n\
         printf '%s\\n' \"$0\" \"$@\" > \"$out/argv.tmp\"\n\
         pwd > \"$out/cwd\"\n\
         cat > \"$out/stdin\"\n\
         mv \"$out/argv.tmp\" \"$out/argv\"\n",
        dir = record_dir.display()
    );
    fs::write(path, script).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A podman kept apart from the machine's storage and configuration.
#[derive(Debug, Clone)]
pub(crate) struct Podman {
    global: Vec<String>,
    store: std::path::PathBuf,
}

impl Podman {
    /// The podman found on PATH, with the test image built, after one successful run; `None`
    /// (after the skip policy) when podman is missing or cannot run containers here.
    ///
    /// The first call of a test binary does the work while the other tests wait for it: this
    /// also keeps the first podman call on a fresh boot, which creates the shared-memory lock
    /// file (`/dev/shm/libpod_lock`), to one at a time (two at once race: "failed to create
    /// 2048 locks ... file exists").
    pub(crate) fn get() -> Option<Podman> {
        static PODMAN: OnceLock<Result<Podman, String>> = OnceLock::new();
        match PODMAN.get_or_init(Podman::probe) {
            Ok(p) => Some(p.clone()),
            Err(reason) => {
                super::skip::skip(reason);
                None
            }
        }
    }

    fn probe() -> Result<Podman, String> {
        if !super::skip::has_program("podman") {
            return Err("podman not found (apt-get install podman runc busybox-static)".to_owned());
        }
        // podman refuses a runroot longer than 50 characters, which a path under `target/`
        // easily is: keep the store under the system temp dir, one per checkout.
        let checkout = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            env!("CARGO_MANIFEST_DIR").hash(&mut h);
            h.finish()
        };
        let store = std::env::temp_dir().join(format!("rthooks-podman-{checkout:016x}"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/podman-test-image.sh");
        let built = Command::new("sh")
            .arg(&script)
            .arg(&store)
            .arg(IMAGE)
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run `{}`: {e}", script.display()))?;
        if !built.status.success() {
            return Err(format!(
                "building the test image failed: {}",
                String::from_utf8_lossy(&built.stderr).trim()
            ));
        }
        // Same storage options as the script; the machine's /var/lib/containers and
        // containers.conf stay untouched.
        let s = |p: &str| store.join(p).display().to_string();
        let mut global: Vec<String> = vec![
            "--root".into(),
            s("root"),
            "--runroot".into(),
            s("runroot"),
            "--tmpdir".into(),
            s("tmp"),
            "--storage-driver".into(),
            "vfs".into(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "file".into(),
        ];
        // crun (podman's default in Debian 12) refuses hosts with hybrid cgroups; runc works.
        if super::skip::has_program("runc") {
            global.extend(["--runtime".into(), "runc".into()]);
        }
        let podman = Podman { global, store };
        let empty = tempfile::tempdir().unwrap();
        let out = podman.run_true(empty.path());
        if !out.status.success() {
            return Err(format!(
                "podman cannot run a container here: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(podman)
    }

    /// The store's directory (`root/`, `runroot/`, `tmp/`), for scripts that take `--store`.
    pub(crate) fn store(&self) -> &Path {
        &self.store
    }

    /// `podman` with the storage options and `--hooks-dir HOOKS`.
    pub(crate) fn command(&self, hooks_dir: &Path) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(&self.global).arg("--hooks-dir").arg(hooks_dir);
        cmd
    }

    /// `CONTAINERS_CONF=CONF podman run --rm [RUN_OPTIONS] IMAGE true`: no `--hooks-dir`, so
    /// podman reads its hooks dirs from that private `containers.conf` (`[engine] hooks_dir`).
    pub(crate) fn run_true_with_containers_conf(&self, conf: &Path) -> Output {
        Command::new("podman")
            .env("CONTAINERS_CONF", conf)
            .args(&self.global)
            .arg("run")
            .args(RUN_OPTIONS)
            .arg("--rm")
            .arg(IMAGE)
            .arg("true")
            .output()
            .expect("run podman")
    }

    /// `podman --hooks-dir HOOKS run --rm [RUN_OPTIONS] IMAGE true`.
    pub(crate) fn run_true(&self, hooks_dir: &Path) -> Output {
        self.run(hooks_dir, &["--rm"], &["true"])
    }

    /// `podman --hooks-dir HOOKS run [RUN_OPTIONS] EXTRA... IMAGE CMD...`, unspawned.
    pub(crate) fn run_command(&self, hooks_dir: &Path, extra: &[&str], cmd: &[&str]) -> Command {
        let mut c = self.command(hooks_dir);
        c.arg("run")
            .args(RUN_OPTIONS)
            .args(extra)
            .arg(IMAGE)
            .args(cmd);
        c
    }

    /// `podman --hooks-dir HOOKS run [RUN_OPTIONS] EXTRA... IMAGE CMD...`, its output.
    pub(crate) fn run(&self, hooks_dir: &Path, extra: &[&str], cmd: &[&str]) -> Output {
        self.run_command(hooks_dir, extra, cmd)
            .output()
            .expect("run podman")
    }
}
