//! How the config patcher writes and locks (issue 9): the output path is never followed, an
//! edit never overwrites a file changed meanwhile, the edit lock's wait is bounded, and a write
//! killed at any point leaves no partial file under any name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rthooks::patch::{Output, lock_for, plan_file};
use support::cmd::names;

const DISABLED: &str = "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n";

#[test]
fn symlink_planted_at_the_output_after_the_check_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, DISABLED).unwrap();
    let out = dir.path().join("out.toml");
    let (plan, _) = plan_file(
        &config,
        &Output::Path(out.clone()),
        rthooks::containerd::enable_nri,
    )
    .unwrap();
    // Between the check and the write, another user plants a link to a file of root's.
    let victim = dir.path().join("victim");
    fs::write(&victim, "root's file\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&victim, &out).unwrap();
    plan.apply().unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root's file\n");
    assert!(fs::symlink_metadata(&out).unwrap().file_type().is_file());
    assert_eq!(
        fs::read_to_string(&out).unwrap(),
        DISABLED.replace("true", "false")
    );
}

#[test]
fn in_place_edit_of_a_file_changed_meanwhile_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, DISABLED).unwrap();
    let (plan, _) = plan_file(&config, &Output::InPlace, rthooks::containerd::enable_nri).unwrap();
    let theirs = format!("{DISABLED}# edited by someone else\n");
    fs::write(&config, &theirs).unwrap();
    let err = plan.apply().unwrap_err();
    let msg = rthooks::error::Report(&err).to_string();
    assert!(
        msg.contains("changed while we were editing it; nothing written"),
        "{msg}"
    );
    assert!(msg.contains("help: run again"), "{msg}");
    assert_eq!(fs::read_to_string(&config).unwrap(), theirs);
    assert_eq!(names(dir.path()), ["config.toml"]);
}

#[test]
fn edit_lock_wait_is_bounded_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, DISABLED).unwrap();
    let link = dir.path().join("link.toml");
    std::os::unix::fs::symlink(&config, &link).unwrap();
    let held = lock_for(&config, &Output::InPlace, Duration::from_secs(1))
        .unwrap()
        .unwrap();
    let meta = fs::metadata(&held.path).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o077,
        0,
        "lock file must be private"
    );
    // The config through its symlink is the same file, so the same lock.
    let start = Instant::now();
    let err = lock_for(&link, &Output::InPlace, Duration::from_millis(300)).unwrap_err();
    let waited = start.elapsed();
    let msg = rthooks::error::Report(&err).to_string();
    assert!(msg.contains("another run is still editing"), "{msg}");
    assert!(msg.contains("config.toml"), "{msg}");
    assert!(msg.contains("help:"), "{msg}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    // --output naming another file locks that file, not the config.
    let other = lock_for(
        &config,
        &Output::Path(dir.path().join("out.toml")),
        Duration::from_millis(300),
    )
    .unwrap();
    assert!(other.is_some());
    drop(held);
    assert!(
        lock_for(&link, &Output::InPlace, Duration::from_millis(300))
            .unwrap()
            .is_some()
    );
}

const HELPER_ENV: &str = "PLAN_WRITE_KILLED_TARGET";

/// Run by `killed_write_leaves_no_partial_file_under_any_name` in a child process: one big
/// write, killed midway by the parent.
#[test]
#[ignore = "helper process of killed_write_leaves_no_partial_file_under_any_name"]
fn killed_write_helper() {
    let target = PathBuf::from(std::env::var_os(HELPER_ENV).expect("run by its parent test"));
    let big = vec![b'#'; 256 << 20];
    rthooks::plan::write_atomic(&target, &big, None).unwrap();
}

/// Open files of process `pid` that lie in `dir` (other than `except`).
fn open_in(pid: u32, dir: &Path, except: &Path) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|to| to.starts_with(dir) && to != except && to != dir)
    })
}

#[test]
fn killed_write_leaves_no_partial_file_under_any_name() {
    let dir = tempfile::tempdir().unwrap();
    let dir_path = fs::canonicalize(dir.path()).unwrap();
    let target = dir_path.join("config.toml");
    for round in 0..3 {
        fs::write(&target, "old = 1\n").unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "killed_write_helper", "--quiet"])
            .env(HELPER_ENV, &target)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill it while it has its temporary file open, i.e. in the middle of the write.
        let start = Instant::now();
        while !open_in(child.id(), &dir_path, &target) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: the write finished before it could be killed"
            );
            assert!(start.elapsed() < Duration::from_secs(60), "no write seen");
            std::thread::sleep(Duration::from_micros(200));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // The target is whole (old or new); anything else is a complete file under a name no
        // runtime loads, and the next write removes it.
        let size = fs::metadata(&target).unwrap().len();
        assert!(size == 8 || size == 256 << 20, "round {round}: {size}");
        for name in names(&dir_path) {
            if name == "config.toml" {
                continue;
            }
            assert!(
                name.starts_with(".config.toml.tetragon-tmp-"),
                "round {round}: `{name}` left behind"
            );
            let left = fs::metadata(dir_path.join(&name)).unwrap().len();
            assert_eq!(
                left,
                256 << 20,
                "round {round}: partial `{name}` left behind"
            );
        }
        rthooks::plan::write_atomic(&target, b"new = 1\n", None).unwrap();
        assert_eq!(names(&dir_path), ["config.toml"], "round {round}");
    }
}

#[test]
fn check_and_dry_run_need_no_edit_lock_and_in_place_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    fs::write(&config, DISABLED).unwrap();
    let held = lock_for(&config, &Output::InPlace, Duration::from_secs(1)).unwrap();
    let run = |mode: &str| {
        Command::new(env!("CARGO_BIN_EXE_tetragon-oci-hook-setup"))
            .args([
                "patch-containerd-conf",
                "enable-nri",
                "--config-file",
                config.to_str().unwrap(),
                mode,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // Read-only modes answer while another run holds the lock.
    assert_eq!(run("--check").wait().unwrap().code(), Some(1));
    assert_eq!(run("--dry-run").wait().unwrap().code(), Some(0));
    // A writing run waits for the holder, then edits what the holder left.
    let mut writer = run("--in-place");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        writer.try_wait().unwrap().is_none(),
        "must wait for the lock"
    );
    assert_eq!(fs::read_to_string(&config).unwrap(), DISABLED);
    drop(held);
    assert_eq!(writer.wait().unwrap().code(), Some(0));
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        DISABLED.replace("true", "false")
    );
}
