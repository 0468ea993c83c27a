//! Helpers for the `install` tests: running our binary, a recording hook program, and a real
//! podman kept apart from the machine's own storage.
//!
//! Use with `mod support_podman;` at the top of a test file. A test that needs a component that
//! is missing calls [`skip`], which prints one `skipped: <reason>` line, or panics under
//! `E2E_REQUIRED=1` (as CI runs).
#![allow(dead_code)]
// Test helpers: a failed setup step panics, as in a test body.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Environment variable turning skips into failures.
pub(crate) const REQUIRED_ENV: &str = "E2E_REQUIRED";

/// The image the podman tests run (built by `scripts/podman-test-image.sh`).
pub(crate) const IMAGE: &str = "localhost/rthooks-test:latest";

/// Whether missing components must fail the test.
pub(crate) fn e2e_required() -> bool {
    std::env::var(REQUIRED_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Reports a missing component: one `skipped:` line, or a panic under `E2E_REQUIRED=1`.
pub(crate) fn skip(reason: &str) {
    if e2e_required() {
        panic!("{REQUIRED_ENV} is set but {reason}");
    }
    eprintln!("skipped: {reason}");
}

/// Our binary.
pub(crate) fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tetragon-oci-hook-setup"));
    // anyhow appends a backtrace to `{:?}` when this is set; outputs are compared verbatim.
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    cmd
}

/// Runs our binary with `args` and returns its output.
pub(crate) fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .output()
        .expect("run tetragon-oci-hook-setup")
}

/// The output in one string (`exit_code`, stdout, stderr), with `tmp` shown as `[TMP]`.
pub(crate) fn transcript(out: &Output, tmp: &Path) -> String {
    let t = tmp.display().to_string();
    // Diff headers show paths without their leading `/` (`a/tmp/...`).
    let bare = t.trim_start_matches('/');
    let hide = |s: &[u8]| {
        String::from_utf8_lossy(s)
            .replace(&format!("--- a/{bare}"), "--- a/[TMP]")
            .replace(&format!("+++ b/{bare}"), "+++ b/[TMP]")
            .replace(&t, "[TMP]")
    };
    format!(
        "exit_code: {}\n----- stdout -----\n{}----- stderr -----\n{}",
        out.status
            .code()
            .map_or("signal".to_owned(), |c| c.to_string()),
        hide(&out.stdout),
        hide(&out.stderr),
    )
}

/// The sorted names in `dir` (recursively, `sub/name`), to check that nothing was left behind.
pub(crate) fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

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
}

impl Podman {
    /// The podman found on PATH, with the test image built, after one successful run; `None`
    /// (after [`skip`]) when podman is missing or cannot run containers here.
    pub(crate) fn get() -> Option<Podman> {
        static PODMAN: OnceLock<Result<Podman, String>> = OnceLock::new();
        match PODMAN.get_or_init(Podman::probe) {
            Ok(p) => Some(p.clone()),
            Err(reason) => {
                skip(reason);
                None
            }
        }
    }

    fn probe() -> Result<Podman, String> {
        let version = Command::new("podman").arg("--version").output();
        match version {
            Ok(o) if o.status.success() => {}
            _ => return Err("podman not found (apt-get install podman)".to_owned()),
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
        if Command::new("runc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            global.extend(["--runtime".into(), "runc".into()]);
        }
        let podman = Podman { global };
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

    /// `podman` with the storage options and `--hooks-dir HOOKS`.
    pub(crate) fn command(&self, hooks_dir: &Path) -> Command {
        let mut cmd = Command::new("podman");
        cmd.args(&self.global).arg("--hooks-dir").arg(hooks_dir);
        cmd
    }

    /// `podman --hooks-dir HOOKS run --rm --network none IMAGE true`.
    pub(crate) fn run_true(&self, hooks_dir: &Path) -> Output {
        Command::new("podman")
            .args(&self.global)
            .arg("--hooks-dir")
            .arg(hooks_dir)
            .args(["run", "--rm", "--network", "none"])
            // Raising rlimits is refused on the CI machines.
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args([IMAGE, "true"])
            .output()
            .expect("run podman")
    }
}
