//! Running our `tetragon-oci-hook-setup` binary and reading what it did: its output as one
//! transcript (for snapshots), a directory listing, a line awaited on a child's stderr.

use std::fs;
use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output};

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

/// The sorted names of the entries of `dir` (not recursive).
pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
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

/// Reads lines from `r` (a child's stderr) until one contains `needle`; returns all lines read,
/// that one included. Panics if the stream ends first.
pub(crate) fn wait_for_line(r: &mut impl BufRead, needle: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!("stderr ended before `{needle}`: {seen}");
        }
        seen.push_str(&line);
        if line.contains(needle) {
            return seen;
        }
    }
}

/// `tetragon-oci-hook-setup install --interface nri-hook --daemonize` as the DaemonSet runs it:
/// copies `local_binary` into `install_dir` (`host_install_dir` on the host) and connects to the
/// runtime's NRI socket `socket`; stdin and stdout null, no inherited `NRI_PLUGIN_SOCKET`. The
/// caller adds its flags, `hook-args ...` and stderr, then spawns it.
pub(crate) fn nri_plugin(
    local_binary: &Path,
    install_dir: &Path,
    host_install_dir: &Path,
    socket: &Path,
) -> Command {
    let mut cmd = bin();
    cmd.args(["install", "--interface", "nri-hook", "--daemonize"])
        .arg("--local-binary")
        .arg(local_binary)
        .arg("--local-install-dir")
        .arg(install_dir)
        .arg("--host-install-dir")
        .arg(host_install_dir)
        .arg("--nri-hook.socket")
        .arg(socket)
        .env_remove("NRI_PLUGIN_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    cmd
}
