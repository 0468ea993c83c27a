//! The `tetragon-oci-hook-setup` binary as a user runs it: exit codes, what is printed, and what
//! is (and is not) written.
//!
//! Each run is snapshotted as one string in uv's form (exit code, stdout, stderr) with the
//! temporary directory shown as `[TMP]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::cmd::names as entries;

const BIN: &str = env!("CARGO_BIN_EXE_tetragon-oci-hook-setup");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn snapshot(&self) -> String {
        format!(
            "exit_code: {}\n----- stdout -----\n{}----- stderr -----\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the binary in `dir` with `args`, with `dir` replaced by `[TMP]` in its output.
fn run(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("TMPDIR", dir)
        .output()
        .unwrap();
    let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(&dir.display().to_string(), "[TMP]");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: clean(&out.stdout),
        stderr: clean(&out.stderr),
    }
}

fn fixture(rel: &str) -> String {
    fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(rel),
    )
    .unwrap()
}

/// A temporary directory holding `name` with `content`.
fn setup(name: &str, content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, content).unwrap();
    (dir, path)
}

const DISABLED: &str = "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.nri.v1.nri\"]\n    disable = true # off for now\n";

#[test]
fn enable_nri_in_place_then_nothing_to_do() {
    let (dir, path) = setup("config.toml", DISABLED);
    let first = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--in-place",
        ],
    );
    insta::assert_snapshot!(first.snapshot(), @r#"
    exit_code: 0
    ----- stdout -----
    --- a/config.toml
    +++ b/config.toml
    @@ -2,4 +2,4 @@
     
     [plugins]
       [plugins."io.containerd.nri.v1.nri"]
    -    disable = true # off for now
    +    disable = false # off for now
    ----- stderr -----
    set `plugins."io.containerd.nri.v1.nri".disable` from true to false
    wrote `config.toml`
    "#);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        DISABLED.replace("true", "false")
    );
    let second = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--in-place",
        ],
    );
    insta::assert_snapshot!(second.snapshot(), @r#"
    exit_code: 0
    ----- stdout -----
    ----- stderr -----
    note: NRI is already enabled (`plugins."io.containerd.nri.v1.nri".disable = false`)
    `config.toml` needs no change; nothing written
    "#);
    assert_eq!(entries(dir.path()), ["config.toml"]);
}

#[test]
fn flags_may_come_before_the_action() {
    let (dir, path) = setup("config.toml", DISABLED);
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "--config-file",
            "config.toml",
            "--in-place",
            "--quiet",
            "enable-nri",
        ],
    );
    assert_eq!((r.code, r.stdout.as_str(), r.stderr.as_str()), (0, "", ""));
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .contains("disable = false")
    );
}

#[test]
fn dry_run_writes_nothing() {
    let (dir, path) = setup("config.toml", DISABLED);
    let before = fs::metadata(&path).unwrap();
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--in-place",
            "--dry-run",
        ],
    );
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("+    disable = false # off for now"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.ends_with("dry run: nothing written\n"),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), DISABLED);
    assert_eq!(
        fs::metadata(&path).unwrap().modified().unwrap(),
        before.modified().unwrap()
    );
    assert_eq!(entries(dir.path()), ["config.toml"]);
}

#[test]
fn check_exits_1_when_changes_are_pending_and_0_when_not() {
    let (dir, path) = setup("config.toml", DISABLED);
    let args = [
        "patch-containerd-conf",
        "enable-nri",
        "--config-file",
        "config.toml",
        "--check",
    ];
    let pending = run(dir.path(), &args);
    assert_eq!(pending.code, 1, "{}", pending.stderr);
    assert!(
        pending
            .stdout
            .starts_with("--- a/config.toml\n+++ b/config.toml\n")
    );
    assert!(
        pending
            .stderr
            .contains("needs changes (--check: nothing written)")
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), DISABLED);
    let quiet = run(dir.path(), &[&args[..], &["--quiet"]].concat());
    assert_eq!(
        (quiet.code, quiet.stdout.as_str(), quiet.stderr.as_str()),
        (1, "", "")
    );

    fs::write(&path, DISABLED.replace("true", "false")).unwrap();
    let clean = run(dir.path(), &args);
    assert_eq!(clean.code, 0, "{}", clean.stderr);
    assert_eq!(clean.stdout, "");
}

#[test]
fn output_writes_a_new_file_with_the_configs_mode() {
    let (dir, path) = setup("config.toml", DISABLED);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--output",
            "new.toml",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.starts_with("--- a/config.toml\n+++ b/new.toml\n"),
        "{}",
        r.stdout
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        DISABLED,
        "the input is not touched"
    );
    let out = dir.path().join("new.toml");
    assert!(
        fs::read_to_string(&out)
            .unwrap()
            .contains("disable = false # off for now")
    );
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(entries(dir.path()), ["config.toml", "new.toml"]);
}

#[test]
fn output_naming_the_config_itself_acts_as_in_place() {
    let (dir, path) = setup("config.toml", DISABLED);
    let abs = path.display().to_string();
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--output",
            &abs,
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .starts_with("--- a/config.toml\n+++ b/config.toml\n"),
        "{}",
        r.stdout
    );
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .contains("disable = false")
    );
    assert_eq!(entries(dir.path()), ["config.toml"]);
}

#[test]
fn without_output_writes_a_new_temporary_file_and_says_where() {
    let (dir, path) = setup("config.toml", DISABLED);
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(fs::read_to_string(&path).unwrap(), DISABLED);
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("wrote patched config to"))
        .unwrap();
    let written = line
        .trim_start_matches("wrote patched config to `")
        .trim_end_matches('`');
    let written = written.replace("[TMP]", &dir.path().display().to_string());
    assert!(
        fs::read_to_string(&written)
            .unwrap()
            .contains("disable = false")
    );
    assert!(written.ends_with(".toml"), "{written}");
}

/// As root, the replaced file keeps its owner (the write goes through a new file, which would
/// otherwise belong to root).
#[test]
fn in_place_keeps_owner_and_mode() {
    use std::os::unix::fs::MetadataExt;
    let (dir, path) = setup("config.toml", DISABLED);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
    let root = fs::metadata(dir.path()).unwrap().uid() == 0;
    if root {
        std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    }
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--in-place",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o604);
    if root {
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    } else {
        support::skip::skip("not running as root (the owner part of this test)");
    }
}

#[test]
fn symlinked_config_is_edited_at_its_target() {
    let (dir, real) = setup("real.toml", DISABLED);
    let link = dir.path().join("config.toml");
    std::os::unix::fs::symlink("real.toml", &link).unwrap();
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--in-place",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        fs::read_to_string(&real)
            .unwrap()
            .contains("disable = false")
    );
}

#[test]
fn add_oci_hook_sets_base_runtime_spec() {
    let (dir, path) = setup(
        "config.toml",
        &fixture("containerd/containerd-1.7.24-config-default-v2.toml"),
    );
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "add-oci-hook",
            "--config-file",
            "config.toml",
            "--runtime-spec",
            "/etc/containerd/tetragon-spec.json",
            "--in-place",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("+          base_runtime_spec = \"/etc/containerd/tetragon-spec.json\""),
        "{}",
        r.stdout
    );
    assert_eq!(
        fs::read_to_string(&path)
            .unwrap()
            .matches("base_runtime_spec = \"/etc/containerd/tetragon-spec.json\"")
            .count(),
        1
    );
    let rel = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "add-oci-hook",
            "--config-file",
            "config.toml",
            "--runtime-spec",
            "spec.json",
        ],
    );
    assert_eq!(rel.code, 2);
    assert!(
        rel.stderr.contains("not an absolute path"),
        "{}",
        rel.stderr
    );
}

#[test]
fn crio_enable_annotations() {
    let (dir, path) = setup("crio.conf", &fixture("crio/runtimes-mixed.conf"));
    let r = run(
        dir.path(),
        &[
            "patch-crio-conf",
            "enable-annotations",
            "--config-file",
            "crio.conf",
            "--output-file",
            "crio.conf",
            "--annotations",
            "tetragon.io/a,tetragon.io/b",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.matches("\"tetragon.io/a\"").count(), 3, "{text}");
    let again = run(
        dir.path(),
        &[
            "patch-crio-conf",
            "enable-annotations",
            "--config-file",
            "crio.conf",
            "--check",
            "--annotations",
            "tetragon.io/b",
            "--annotations",
            "tetragon.io/a",
        ],
    );
    assert_eq!(again.code, 0, "{}", again.stderr);

    let empty = run(
        dir.path(),
        &[
            "patch-crio-conf",
            "enable-annotations",
            "--config-file",
            "crio.conf",
            "--annotations",
            "a,,b",
        ],
    );
    assert_eq!(empty.code, 2);
    assert!(empty.stderr.contains("empty name"), "{}", empty.stderr);
    let missing = run(
        dir.path(),
        &[
            "patch-crio-conf",
            "enable-annotations",
            "--config-file",
            "crio.conf",
        ],
    );
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("--annotations"),
        "{}",
        missing.stderr
    );
}

/// Every error: exit 2, a message naming the file, the input byte-identical, nothing else
/// written in the directory.
#[test]
fn errors_exit_2_and_write_nothing() {
    let cases: &[(&str, &str, &[&str], &str)] = &[
        (
            "invalid TOML",
            "version = 2\n[plugins\n",
            &["--in-place"],
            "failed to parse `config.toml` as TOML",
        ),
        (
            "string disable",
            "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = \"yes\"\n",
            &["--in-place"],
            "config.toml:3: `plugins.\"io.containerd.nri.v1.nri\".disable` is a string (\"yes\"), expected a boolean",
        ),
        (
            "plugins not a table",
            "version = 2\nplugins = []\n",
            &["--output", "out.toml"],
            "config.toml:2: `plugins` is an array, expected a table",
        ),
        (
            "unknown version",
            "version = 7\n",
            &["--in-place"],
            "`version` is 7",
        ),
        (
            "missing output dir",
            DISABLED,
            &["--output", "no/such/dir/out.toml"],
            "directory `no/such/dir` does not exist",
        ),
        (
            "output is a directory",
            DISABLED,
            &["--output", "."],
            "is a directory",
        ),
        (
            "both outputs",
            DISABLED,
            &["--in-place", "--output", "x.toml"],
            "--in-place and --output",
        ),
    ];
    for (what, content, extra, want) in cases {
        let (dir, path) = setup("config.toml", content);
        let args = [
            &[
                "patch-containerd-conf",
                "enable-nri",
                "--config-file",
                "config.toml",
            ][..],
            extra,
        ]
        .concat();
        let r = run(dir.path(), &args);
        assert_eq!(r.code, 2, "{what}: {}", r.stderr);
        assert!(r.stderr.starts_with("error: "), "{what}: {}", r.stderr);
        assert!(
            r.stderr.contains(want),
            "{what}: want {want:?} in {}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{what}");
        assert_eq!(r.stdout, "", "{what}: no diff is shown for a refused edit");
        assert_eq!(&fs::read_to_string(&path).unwrap(), content, "{what}");
        assert_eq!(entries(dir.path()), ["config.toml"], "{what}");
    }
}

#[test]
fn missing_and_directory_configs() {
    let dir = tempfile::tempdir().unwrap();
    let missing = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "nope.toml",
        ],
    );
    insta::assert_snapshot!(missing.snapshot(), @r"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: failed to read `nope.toml`

    Caused by:
      - No such file or directory (os error 2)

    help: containerd 2.x runs without a config file, with NRI enabled: nothing to enable then. containerd 1.7 needs one: re-run with --create to start from an empty `version = 2` file, or create the whole default with `containerd config default > nope.toml`; or pass the file containerd is started with (`--config-file`)
    ");
    let is_dir = run(
        dir.path(),
        &["patch-containerd-conf", "enable-nri", "--config-file", "."],
    );
    insta::assert_snapshot!(is_dir.snapshot(), @r"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: `.` is a directory, expected a config file
    help: pass the file itself, e.g. `./config.toml`
    ");
    fs::write(dir.path().join("latin1.toml"), b"# caf\xe9\nversion = 2\n").unwrap();
    let bad_utf8 = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "latin1.toml",
        ],
    );
    assert_eq!(bad_utf8.code, 2);
    assert!(
        bad_utf8
            .stderr
            .contains("latin1.toml`:1: is not valid UTF-8"),
        "{}",
        bad_utf8.stderr
    );
}

/// A read-only output directory: as root, permission bits do not stop a write, so the
/// directory is made read-only with a read-only bind mount; as another user, with chmod.
#[test]
fn read_only_output_directory() {
    let (dir, path) = setup("config.toml", DISABLED);
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    let guard = ReadOnly::new(&ro);
    let _guard = require!(
        guard,
        "cannot make a read-only directory here (not root, or mount refused)"
    );
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--output",
            "ro/out.toml",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("failed to create a temporary file in `ro`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("Read-only file system") || r.stderr.contains("Permission denied"),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), DISABLED);
    assert!(entries(&ro).is_empty());
}

/// Makes a directory read-only for the duration of a test.
struct ReadOnly(PathBuf, bool);

impl ReadOnly {
    fn new(dir: &Path) -> Option<Self> {
        if !support::skip::is_root() {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o555)).ok()?;
            return Some(Self(dir.to_owned(), false));
        }
        let d = dir.to_str()?;
        let ok = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["--bind", d, d]) {
            return None;
        }
        if !ok(&["-o", "remount,ro,bind", d]) {
            let _ = Command::new("umount").arg(d).status();
            return None;
        }
        Some(Self(dir.to_owned(), true))
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.1 {
            let _ = Command::new("umount").arg(&self.0).status();
        } else {
            let _ = fs::set_permissions(&self.0, fs::Permissions::from_mode(0o755));
        }
    }
}

// ---- Hardening (issue 9): the output path, the config read, concurrency, closed pipes ----

const NRI_OFF_LAST_LINE: &str =
    "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true";

fn enable_nri_to(dir: &Path, flag: &str, out: &str) -> Run {
    run(
        dir,
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            flag,
            out,
        ],
    )
}

#[test]
fn output_symlink_is_refused_and_its_target_left_alone() {
    let (dir, path) = setup("config.toml", DISABLED);
    let victim = dir.path().join("victim");
    fs::write(&victim, "not a config\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&victim, dir.path().join("out.toml")).unwrap();
    let r = enable_nri_to(dir.path(), "--output", "out.toml");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("`out.toml` is a symlink"), "{}", r.stderr);
    assert!(r.stderr.contains("help:"), "{}", r.stderr);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "not a config\n");
    assert!(
        fs::symlink_metadata(dir.path().join("out.toml"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), DISABLED);

    // cri-o's --output-file: the same.
    let (dir, _) = setup("crio.conf", "[crio.runtime]\n");
    fs::write(dir.path().join("victim"), "x").unwrap();
    std::os::unix::fs::symlink("victim", dir.path().join("out.conf")).unwrap();
    let r = run(
        dir.path(),
        &[
            "patch-crio-conf",
            "enable-annotations",
            "--annotations",
            "a.b/c",
            "--config-file",
            "crio.conf",
            "--output-file",
            "out.conf",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("`out.conf` is a symlink"), "{}", r.stderr);
    assert_eq!(fs::read_to_string(dir.path().join("victim")).unwrap(), "x");
}

#[test]
fn output_fifo_socket_device_or_directory_is_refused_and_left_alone() {
    use std::os::unix::fs::FileTypeExt;
    let (dir, path) = setup("config.toml", DISABLED);
    let d = dir.path();
    assert!(
        Command::new("mkfifo")
            .arg(d.join("fifo"))
            .status()
            .unwrap()
            .success()
    );
    let _sock = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
    fs::create_dir(d.join("subdir")).unwrap();
    // A character device like /dev/null, made here (needs CAP_MKNOD: skipped without it).
    let dev = Command::new("mknod")
        .arg(d.join("null"))
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());
    let mut cases = vec![
        ("fifo", "is a FIFO"),
        ("sock", "is a socket"),
        ("subdir", "is a directory"),
    ];
    if dev {
        cases.push(("null", "is a character device"));
    } else {
        support::skip::skip("`mknod` refused (needs CAP_MKNOD): the character-device case");
    }
    for (name, says) in cases {
        let r = enable_nri_to(d, "--output", name);
        assert_eq!(r.code, 2, "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!("`{name}` {says}")),
            "{name}: {}",
            r.stderr
        );
        assert!(r.stderr.contains("help:"), "{}", r.stderr);
    }
    let kind = |n: &str| fs::symlink_metadata(d.join(n)).unwrap().file_type();
    assert!(kind("fifo").is_fifo());
    assert!(kind("sock").is_socket());
    assert!(kind("subdir").is_dir());
    if dev {
        assert!(kind("null").is_char_device());
    }
    assert_eq!(fs::read_to_string(&path).unwrap(), DISABLED);
}

/// Runs the binary under a 1 GiB address-space limit, killed after 20 s: an unbounded read
/// fails instead of eating the machine, and a hang fails instead of hanging the test.
fn run_bounded(dir: &Path, args: &[&str]) -> Run {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576; exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    if support::child::wait_timeout(&mut child, std::time::Duration::from_secs(20)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`{}` still running after 20 s", args.join(" "));
    }
    let out = child.wait_with_output().unwrap();
    let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(&dir.display().to_string(), "[TMP]");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: clean(&out.stdout),
        stderr: clean(&out.stderr),
    }
}

#[test]
fn config_file_must_be_a_bounded_regular_file_and_a_fifo_never_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        Command::new("mkfifo")
            .arg(d.join("fifo"))
            .status()
            .unwrap()
            .success()
    );
    let _sock = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
    fs::create_dir(d.join("subdir")).unwrap();
    let big = fs::File::create(d.join("big.toml")).unwrap();
    big.set_len(65 << 20).unwrap();
    drop(big);
    std::os::unix::fs::symlink("/dev/zero", d.join("zero.toml")).unwrap();
    for (config, says) in [
        ("fifo", "`fifo` is a FIFO, expected a regular config file"),
        ("/dev/zero", "`/dev/zero` is a character device"),
        // A symlink to a device: the config's own link is followed, then refused.
        ("zero.toml", "`zero.toml` is a character device"),
        ("sock", "`sock` is a socket"),
        ("subdir", "`subdir` is a directory"),
        ("big.toml", "more than the 64 MiB a config file may have"),
    ] {
        for mode in ["--in-place", "--dry-run"] {
            let r = run_bounded(
                d,
                &[
                    "patch-containerd-conf",
                    "enable-nri",
                    "--config-file",
                    config,
                    mode,
                ],
            );
            assert_eq!(r.code, 2, "{config} {mode}: {}", r.stderr);
            assert!(r.stderr.contains(says), "{config}: {}", r.stderr);
            assert!(r.stderr.contains("help:"), "{config}: {}", r.stderr);
        }
    }
}

#[test]
fn stale_temp_files_of_ours_are_removed_by_the_next_write_and_nothing_else() {
    let (dir, path) = setup("config.toml", DISABLED);
    let d = dir.path();
    // What a write killed midway leaves where O_TMPFILE is missing: a partial file.
    let stale = d.join(".config.toml.tetragon-tmp-0123456789ab");
    fs::write(&stale, "version = 2\n[plugins.\"io.con").unwrap();
    // Not ours by name, or a link: left alone.
    let other = d.join(".config.toml.tetragon-tmp-someone-else");
    fs::write(&other, "x").unwrap();
    let link = d.join(".config.toml.tetragon-tmp-abcdefabcdef");
    std::os::unix::fs::symlink("config.toml", &link).unwrap();
    let r = run(
        d,
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--in-place",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!stale.exists(), "the stale temp file must be removed");
    assert!(other.exists());
    assert!(fs::symlink_metadata(&link).is_ok());
    assert_eq!(
        entries(d),
        [
            ".config.toml.tetragon-tmp-abcdefabcdef",
            ".config.toml.tetragon-tmp-someone-else",
            "config.toml"
        ]
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        DISABLED.replace("true", "false")
    );
}

#[test]
fn concurrent_in_place_edits_of_one_file_never_lose_one() {
    let config = fixture("containerd/containerd-1.7.24-config-default-v2.toml");
    for round in 0..20 {
        let (dir, path) = setup("config.toml", &config);
        let spawn = |args: &[&str]| {
            Command::new(BIN)
                .args(args)
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let a = spawn(&[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--in-place",
        ]);
        let b = spawn(&[
            "patch-containerd-conf",
            "add-oci-hook",
            "--config-file",
            "config.toml",
            "--in-place",
        ]);
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let now = fs::read_to_string(&path).unwrap();
        let nri = now
            .split("[plugins.\"io.containerd.nri.v1.nri\"]")
            .nth(1)
            .unwrap();
        assert!(
            nri.trim_start().starts_with("disable = false"),
            "round {round}: enable-nri was lost"
        );
        assert!(
            now.contains("base_runtime_spec = \"/etc/containerd/base-spec.json\""),
            "round {round}: add-oci-hook was lost"
        );
        assert_eq!(entries(dir.path()), ["config.toml"]);
    }
}

/// As `concurrent_in_place_edits_of_one_file_never_lose_one`, with the file reached through two
/// paths: `b` is a bind mount of `a` (in a private mount namespace, so nothing leaks out), as a
/// DaemonSet pod's `/host/etc/containerd` and the host's `/etc/containerd` are. The edit lock
/// is keyed on the file's identity, not its path, so the two runs still take turns.
#[test]
fn concurrent_in_place_edits_through_two_paths_of_one_file_never_lose_one() {
    if !support::skip::is_root() {
        skip!("not root: cannot bind-mount");
    }
    if !support::skip::has_program("unshare") || !support::skip::has_program("mount") {
        skip!("unshare or mount not found");
    }
    let probe = tempfile::tempdir().unwrap();
    let (pa, pb) = (probe.path().join("a"), probe.path().join("b"));
    fs::create_dir(&pa).unwrap();
    fs::create_dir(&pb).unwrap();
    let can_mount = Command::new("unshare")
        .args(["-m", "--propagation", "private", "mount", "--bind"])
        .args([&pa, &pb])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !can_mount {
        skip!("mount --bind not permitted in a private mount namespace");
    }
    // Both runs in one private mount namespace; exits with 10 * a's code + b's code.
    const SCRIPT: &str = r#"mount --bind "$1" "$2" || exit 99
"$BIN" patch-containerd-conf enable-nri --config-file "$1/config.toml" --in-place >/dev/null 2>"$3/a.err" &
a=$!
"$BIN" patch-containerd-conf add-oci-hook --config-file "$2/config.toml" --in-place >/dev/null 2>"$3/b.err" &
b=$!
wait $a; ra=$?
wait $b; rb=$?
exit $((ra * 10 + rb))"#;
    let config = fixture("containerd/containerd-1.7.24-config-default-v2.toml");
    for round in 0..20 {
        let top = tempfile::tempdir().unwrap();
        let (a, b, logs) = (
            top.path().join("a"),
            top.path().join("b"),
            top.path().join("logs"),
        );
        for d in [&a, &b, &logs] {
            fs::create_dir(d).unwrap();
        }
        let path = a.join("config.toml");
        fs::write(&path, &config).unwrap();
        let status = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", SCRIPT, "sh"])
            .args([&a, &b, &logs])
            .env("BIN", BIN)
            .status()
            .unwrap();
        let err = |n: &str| fs::read_to_string(logs.join(n)).unwrap_or_default();
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: a: {} b: {}",
            err("a.err"),
            err("b.err")
        );
        let now = fs::read_to_string(&path).unwrap();
        let nri = now
            .split("[plugins.\"io.containerd.nri.v1.nri\"]")
            .nth(1)
            .unwrap();
        assert!(
            nri.trim_start().starts_with("disable = false"),
            "round {round}: enable-nri was lost"
        );
        assert!(
            now.contains("base_runtime_spec = \"/etc/containerd/base-spec.json\""),
            "round {round}: add-oci-hook was lost"
        );
        assert_eq!(entries(&a), ["config.toml"]);
        assert!(entries(&b).is_empty(), "the bind mount must be gone");
    }
}

/// `--output` into a world-writable sticky directory (`/tmp`) where another user planted the
/// file first: the result is ours (root's), mode 0644, not theirs to rewrite; a note says so.
/// `--in-place` on a config that user owns keeps its owner and mode (the operator chose it).
#[test]
fn output_over_a_file_another_user_planted_is_ours_with_mode_0644() {
    use std::os::unix::fs::MetadataExt;
    if !support::skip::is_root() {
        skip!("not root: cannot act as another user");
    }
    if !support::skip::has_program("setpriv") {
        skip!("setpriv not found");
    }
    let (dir, _) = setup("config.toml", DISABLED);
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let ww = dir.path().join("ww");
    fs::create_dir(&ww).unwrap();
    fs::set_permissions(&ww, fs::Permissions::from_mode(0o1777)).unwrap();
    let as_nobody = |file: &str| {
        let status = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sh",
                "-c",
            ])
            .arg("umask 0; echo 'x = 1' > \"$1\"")
            .arg("sh")
            .arg(ww.join(file))
            .status()
            .unwrap();
        assert!(status.success());
        let meta = fs::metadata(ww.join(file)).unwrap();
        assert_eq!((meta.uid(), meta.mode() & 0o7777), (65534, 0o666));
    };
    as_nobody("out.toml");
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--output",
            "ww/out.toml",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let meta = fs::symlink_metadata(ww.join("out.toml")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (0, rustix::process::getegid().as_raw(), 0o644),
        "the output must be ours, mode 0644"
    );
    assert!(
        r.stderr
            .contains("note: `ww/out.toml` belongs to uid 65534"),
        "{}",
        r.stderr
    );
    assert_eq!(
        fs::read_to_string(ww.join("out.toml")).unwrap(),
        DISABLED.replace("true", "false")
    );
    // The config itself, edited in place, keeps the owner and mode it has.
    as_nobody("theirs.toml");
    fs::write(ww.join("theirs.toml"), DISABLED).unwrap();
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "ww/theirs.toml",
            "--in-place",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("note:"), "{}", r.stderr);
    let meta = fs::symlink_metadata(ww.join("theirs.toml")).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (65534, 0o666));
}

/// A pipe whose read end is already closed: writing to it fails with EPIPE.
fn broken_pipe() -> std::process::Stdio {
    let (read, write) = rustix::pipe::pipe().unwrap();
    drop(read);
    std::process::Stdio::from(write)
}

#[test]
fn closed_stdout_exits_2_with_a_message_and_writes_nothing() {
    let (dir, path) = setup("config.toml", DISABLED);
    let out = Command::new(BIN)
        .args([
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--in-place",
        ])
        .current_dir(dir.path())
        .stdout(broken_pipe())
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot print the diff to stdout") && stderr.contains("nothing written"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&path).unwrap(), DISABLED);
    assert_eq!(entries(dir.path()), ["config.toml"]);
}

#[test]
fn closed_stderr_keeps_the_exit_code() {
    let (dir, path) = setup("config.toml", DISABLED);
    let code = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(broken_pipe())
            .status()
            .unwrap()
            .code()
    };
    // An error, then a success that talks on stderr.
    assert_eq!(
        code(&[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "missing.toml",
            "--in-place"
        ]),
        Some(2)
    );
    assert_eq!(
        code(&[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--in-place"
        ]),
        Some(0)
    );
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        DISABLED.replace("true", "false")
    );
}

#[test]
fn missing_final_newline_is_kept_when_the_last_line_is_edited() {
    let (dir, path) = setup("config.toml", NRI_OFF_LAST_LINE);
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--in-place",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        NRI_OFF_LAST_LINE.replace("true", "false")
    );
    // CRLF too.
    let crlf = NRI_OFF_LAST_LINE.replace('\n', "\r\n");
    fs::write(&path, &crlf).unwrap();
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "add-oci-hook",
            "--config-file",
            "config.toml",
            "--in-place",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let now = fs::read_to_string(&path).unwrap();
    assert!(!now.ends_with('\n'), "{now:?}");
}

#[test]
fn nesting_limit_parse_error_names_the_line_and_helps() {
    let deep = format!("version = 2\n\n{} = 1\n", vec!["a"; 100].join("."));
    let (dir, path) = setup("config.toml", &deep);
    let r = run(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--in-place",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("`config.toml`:3:"), "{}", r.stderr);
    assert!(r.stderr.contains("help:"), "{}", r.stderr);
    assert_eq!(fs::read_to_string(&path).unwrap(), deep);
}
