//! `--output-format json` of patch-containerd-conf, patch-crio-conf, install and uninstall: one
//! JSON document on stdout (nothing else there, nothing on stderr), saying what the files on
//! disk then show: the files changed with their sha256 before and after, the keys changed with
//! their old and new values, and the exit code's meaning unchanged (1: `--check` found changes,
//! 2: an error, printed as a JSON error with its `help`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use rthooks::plan::sha256_hex;
use serde_json::{Value, json};
use support::cmd::bin;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Runs the setup binary with `args` (no containerd on PATH: the release comes from the config
/// or `--containerd-version`), and parses its stdout as the one JSON document it must be.
fn run_json(args: &[&str]) -> (i32, Value) {
    let out: Output = bin()
        .env("PATH", "/nonexistent")
        .args(args)
        .args(["--output-format", "json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let doc: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{stdout}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "stderr: {stderr}");
    let code = out.status.code().unwrap();
    assert_eq!(doc["schema_version"], 1);
    assert_eq!(doc["exit_code"], code);
    assert_eq!(doc["ok"], code != 2, "{doc:#}");
    (code, doc)
}

/// A copy of `fixture` in a new temp dir.
fn copy(fixture: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(name);
    fs::copy(Path::new(FIXTURES).join(fixture), &path).unwrap();
    (tmp, path)
}

fn sha(path: &Path) -> String {
    sha256_hex(&fs::read(path).unwrap())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The entry of `doc["keys"]` for `key`.
fn key<'a>(doc: &'a Value, key: &str) -> &'a Value {
    doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == key)
        .unwrap_or_else(|| panic!("no key {key} in {doc:#}"))
}

#[test]
fn enable_nri_in_place_json_lists_the_file_and_key_as_written() {
    let (_tmp, config) = copy(
        "containerd/nri-disabled-with-comment-v2.toml",
        "config.toml",
    );
    let before = sha(&config);
    let (code, doc) = run_json(&[
        "patch-containerd-conf",
        "enable-nri",
        "--config-file",
        s(&config),
        "--in-place",
    ]);
    assert_eq!(code, 0);
    assert_eq!(doc["command"], "patch-containerd-conf enable-nri");
    assert_eq!(
        (
            &doc["dry_run"],
            &doc["check"],
            &doc["changes"],
            &doc["written"]
        ),
        (&json!(false), &json!(false), &json!(true), &json!(true))
    );
    assert_eq!(
        doc["files"],
        json!([{
            "path": s(&config),
            "action": "modified",
            "before_sha256": before,
            "after_sha256": sha(&config),
            "written": true,
        }])
    );
    assert_ne!(
        doc["files"][0]["before_sha256"],
        doc["files"][0]["after_sha256"]
    );
    let disable = key(&doc, "plugins.\"io.containerd.nri.v1.nri\".disable");
    assert_eq!(disable["file"], s(&config));
    assert_eq!(
        (&disable["change"], &disable["old"], &disable["new"]),
        (&json!("changed"), &json!(true), &json!(false))
    );
    assert_eq!(
        disable["path"],
        json!(["plugins", "io.containerd.nri.v1.nri", "disable"])
    );
    let diff = doc["diff"].as_str().unwrap();
    assert!(
        diff.contains("-    disable = true   # flip me\n+    disable = false   # flip me\n"),
        "{diff}"
    );
    assert_eq!(doc["error"], Value::Null);

    // Run again: nothing to change, nothing written, no files.
    let (code, doc) = run_json(&[
        "patch-containerd-conf",
        "enable-nri",
        "--config-file",
        s(&config),
        "--in-place",
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        (
            &doc["changes"],
            &doc["written"],
            &doc["files"],
            &doc["keys"],
            &doc["diff"]
        ),
        (
            &json!(false),
            &json!(false),
            &json!([]),
            &json!([]),
            &json!("")
        )
    );
}

#[test]
fn enable_nri_new_table_json_reports_every_key_added() {
    let (_tmp, config) = copy("containerd/no-plugins-v2.toml", "config.toml");
    let original = fs::read(&config).unwrap();
    let (code, doc) = run_json(&[
        "patch-containerd-conf",
        "enable-nri",
        "--config-file",
        s(&config),
        "--dry-run",
    ]);
    assert_eq!(code, 0);
    // Dry run: the file is byte-identical; the document says what would change.
    assert_eq!(fs::read(&config).unwrap(), original);
    assert_eq!(
        (&doc["dry_run"], &doc["written"]),
        (&json!(true), &json!(false))
    );
    // No --output, no --in-place: a new temporary file, named only when written.
    assert_eq!(doc["files"][0]["action"], "created");
    assert_eq!(doc["files"][0]["path"], Value::Null);
    let keys = doc["keys"].as_array().unwrap();
    assert!(keys.len() > 1, "{doc:#}");
    for k in keys {
        assert_eq!(k["change"], "added", "{k}");
        assert_eq!(k["old"], Value::Null, "{k}");
        assert_eq!(k["path"][1], "io.containerd.nri.v1.nri", "{k}");
    }
    assert_eq!(
        key(&doc, "plugins.\"io.containerd.nri.v1.nri\".disable")["new"],
        false
    );
    assert!(
        doc["diff"].as_str().unwrap().starts_with("--- a/"),
        "{doc:#}"
    );

    // Written to a new temporary file: its name is in the document, and it holds the after.
    let (code, doc) = run_json(&[
        "patch-containerd-conf",
        "enable-nri",
        "--config-file",
        s(&config),
    ]);
    assert_eq!(code, 0);
    let written = PathBuf::from(doc["files"][0]["path"].as_str().unwrap());
    assert_eq!(doc["files"][0]["after_sha256"], sha(&written));
    assert_eq!(doc["files"][0]["written"], true);
    assert_eq!(fs::read(&config).unwrap(), original);
    fs::remove_file(written).unwrap();
}

#[test]
fn check_json_exits_1_with_changes_pending_and_writes_nothing() {
    let (_tmp, config) = copy("containerd/nri-disabled-v3.toml", "config.toml");
    let original = fs::read(&config).unwrap();
    let (code, doc) = run_json(&[
        "patch-containerd-conf",
        "enable-nri",
        "--config-file",
        s(&config),
        "--check",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        (&doc["check"], &doc["changes"], &doc["written"], &doc["ok"]),
        (&json!(true), &json!(true), &json!(false), &json!(true))
    );
    assert_eq!(fs::read(&config).unwrap(), original);
}

#[test]
fn add_oci_hook_json_reports_the_base_runtime_spec_of_each_runtime() {
    let (_tmp, config) = copy(
        "containerd/containerd-1.7.24-config-default-v2.toml",
        "config.toml",
    );
    let (code, doc) = run_json(&[
        "patch-containerd-conf",
        "add-oci-hook",
        "--runtime-spec",
        "/etc/containerd/tetragon-base-spec.json",
        "--config-file",
        s(&config),
        "--in-place",
    ]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["command"], "patch-containerd-conf add-oci-hook");
    let spec = key(
        &doc,
        "plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.base_runtime_spec",
    );
    assert_eq!(spec["old"], "");
    assert_eq!(spec["new"], "/etc/containerd/tetragon-base-spec.json");
    assert_eq!(spec["change"], "changed");
    let text = fs::read_to_string(&config).unwrap();
    assert!(text.contains("base_runtime_spec = \"/etc/containerd/tetragon-base-spec.json\""));
}

#[test]
fn enable_annotations_json_reports_each_allowed_annotations_list() {
    let (_tmp, config) = copy("crio/runtimes-mixed.conf", "crio.conf");
    let (code, doc) = run_json(&[
        "patch-crio-conf",
        "enable-annotations",
        "--annotations",
        "tetragon.io/policy",
        "--config-file",
        s(&config),
        "--in-place",
    ]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["command"], "patch-crio-conf enable-annotations");
    let crun = key(&doc, "crio.runtime.runtimes.crun.allowed_annotations");
    assert_eq!(
        crun["old"],
        json!(["io.containers.trace-syscall", "io.kubernetes.cri-o.Devices"])
    );
    assert_eq!(
        crun["new"],
        json!([
            "io.containers.trace-syscall",
            "io.kubernetes.cri-o.Devices",
            "tetragon.io/policy"
        ])
    );
    let runc = key(&doc, "crio.runtime.runtimes.runc.allowed_annotations");
    assert_eq!(
        (&runc["change"], &runc["new"]),
        (&json!("added"), &json!(["tetragon.io/policy"]))
    );
    assert_eq!(doc["files"][0]["after_sha256"], sha(&config));
}

#[test]
fn drop_in_json_lists_the_drop_in_and_the_import_then_undo_removes_both() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    let original = "version = 2\n\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n";
    fs::write(&config, original).unwrap();
    let drop_in = tmp.path().join("nri.toml");
    let (code, doc) = run_json(&[
        "patch-containerd-conf",
        "enable-nri",
        "--config-file",
        s(&config),
        "--drop-in",
        s(&drop_in),
        "--containerd-version",
        "2.1",
    ]);
    assert_eq!(code, 0, "{doc:#}");
    let files = doc["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{doc:#}");
    assert_eq!(
        (
            &files[0]["path"],
            &files[0]["action"],
            &files[0]["before_sha256"]
        ),
        (&json!(s(&drop_in)), &json!("created"), &Value::Null)
    );
    assert_eq!(files[0]["after_sha256"], sha(&drop_in));
    assert_eq!(
        (&files[1]["path"], &files[1]["action"]),
        (&json!(s(&config)), &json!("modified"))
    );
    assert_eq!(files[1]["before_sha256"], sha256_hex(original.as_bytes()));
    let imports = key(&doc, "imports");
    assert_eq!(
        (&imports["file"], &imports["change"]),
        (&json!(s(&config)), &json!("added"))
    );
    let disable = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| {
            k["file"] == s(&drop_in) && k["key"] == "plugins.\"io.containerd.nri.v1.nri\".disable"
        })
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert_eq!(
        (&disable["change"], &disable["new"]),
        (&json!("added"), &json!(false))
    );

    let (code, doc) = run_json(&[
        "patch-containerd-conf",
        "enable-nri",
        "--config-file",
        s(&config),
        "--drop-in",
        s(&drop_in),
        "--undo",
    ]);
    assert_eq!(code, 0, "{doc:#}");
    let files = doc["files"].as_array().unwrap();
    assert_eq!(
        (
            &files[0]["path"],
            &files[0]["action"],
            &files[0]["after_sha256"]
        ),
        (&json!(s(&drop_in)), &json!("removed"), &Value::Null)
    );
    assert_eq!(key(&doc, "imports")["change"], "removed");
    assert!(!drop_in.exists());
    assert_eq!(fs::read_to_string(&config).unwrap(), original);
}

#[test]
fn install_and_uninstall_json_list_the_binary_and_the_hook_file() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("tetragon-oci-hook");
    let body = b"#!/bin/sh\nexit 0\n";
    fs::write(&source, body).unwrap();
    let install_dir = tmp.path().join("install");
    let hooks_dir = tmp.path().join("hooks");
    fs::create_dir(&install_dir).unwrap();
    fs::create_dir(&hooks_dir).unwrap();
    let install = |extra: &[&str]| {
        let mut args = vec![
            "install".to_owned(),
            format!("--local-binary={}", source.display()),
            format!("--local-install-dir={}", install_dir.display()),
            "--host-install-dir=/opt/tetragon".to_owned(),
            format!("--oci-hooks.local-dir={}", hooks_dir.display()),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_json(&args)
    };
    let (code, doc) = install(&["--dry-run"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        (&doc["dry_run"], &doc["written"]),
        (&json!(true), &json!(false))
    );
    assert!(fs::read_dir(&install_dir).unwrap().next().is_none());

    let (code, doc) = install(&[]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["command"], "install");
    let binary = install_dir.join("tetragon-oci-hook");
    let hook_file = hooks_dir.join("tetragon-oci-hook.json");
    assert_eq!(
        doc["files"],
        json!([
            {"path": s(&binary), "action": "created", "before_sha256": null,
             "after_sha256": sha256_hex(body), "written": true},
            {"path": s(&hook_file), "action": "created", "before_sha256": null,
             "after_sha256": sha(&hook_file), "written": true},
        ])
    );
    // The hook file is JSON, not a runtime config: no keys.
    assert_eq!(doc["keys"], json!([]));
    assert!(
        doc["diff"].as_str().unwrap().contains("createRuntime"),
        "{doc:#}"
    );

    let (code, doc) = install(&[]);
    assert_eq!(
        (code, &doc["changes"], &doc["written"]),
        (0, &json!(false), &json!(false))
    );

    let (code, doc) = run_json(&[
        "uninstall",
        &format!("--local-install-dir={}", install_dir.display()),
        &format!("--oci-hooks.local-dir={}", hooks_dir.display()),
    ]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["command"], "uninstall");
    let removed: Vec<(&str, &str)> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["action"].as_str().unwrap()))
        .collect();
    assert_eq!(removed.len(), 2, "{doc:#}");
    assert!(removed.iter().all(|(_, a)| *a == "removed"), "{removed:?}");
    assert!(!binary.exists() && !hook_file.exists());
}

#[test]
fn an_error_in_json_is_one_document_with_its_help_and_exit_2() {
    let (_tmp, config) = copy(
        "containerd/error-disable-is-a-string-v2.toml",
        "config.toml",
    );
    let original = fs::read(&config).unwrap();
    let (code, doc) = run_json(&[
        "patch-containerd-conf",
        "enable-nri",
        "--config-file",
        s(&config),
        "--in-place",
    ]);
    assert_eq!(code, 2);
    assert_eq!(fs::read(&config).unwrap(), original);
    let error = &doc["error"];
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("config.toml:"), "{doc:#}");
    assert!(
        error["help"].as_str().is_some_and(|h| !h.is_empty()),
        "{doc:#}"
    );
    assert!(error["causes"].is_array());
    assert_eq!(
        (&doc["changes"], &doc["written"], &doc["files"]),
        (&json!(false), &json!(false), &json!([]))
    );

    let (code, doc) = run_json(&[
        "patch-containerd-conf",
        "add-oci-hook",
        "--runtime-spec",
        "base-spec.json",
        "--config-file",
        s(&config),
    ]);
    assert_eq!(code, 2);
    assert_eq!(
        doc["error"],
        json!({
            "message": "--runtime-spec `base-spec.json` is not an absolute path",
            "causes": [],
            "help": "containerd resolves it on the node, e.g. `/etc/containerd/base-spec.json`",
        })
    );

    let (code, doc) = run_json(&[
        "uninstall",
        "--local-install-dir=/nonexistent",
        "--binary-name=../x",
    ]);
    assert_eq!(code, 2, "{doc:#}");
    assert!(doc["error"]["message"].is_string());
}

#[test]
fn a_usage_error_in_json_is_a_json_error_too() {
    let (code, doc) = run_json(&["patch-containerd-conf", "enable-nri", "--in-plac"]);
    assert_eq!(code, 2);
    assert_eq!(doc["command"], "patch-containerd-conf enable-nri");
    assert_eq!(
        doc["error"],
        json!({
            "message": "unexpected argument '--in-plac' found",
            "causes": [],
            "help": "a similar argument exists: '--in-place'",
        })
    );
    let (code, doc) = run_json(&["install", "--local-install-dir", "/x"]);
    assert_eq!(code, 2);
    assert_eq!(
        doc["error"],
        json!({
            "message": "the following required arguments were not provided: \
                        --host-install-dir <DIR>",
            "causes": [],
            "help": "see `tetragon-oci-hook-setup install --help`",
        })
    );
    // `--help` stays text, exit 0.
    let out = bin()
        .args(["uninstall", "--output-format", "json", "--help"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout).unwrap().contains("Usage:"));
}

#[test]
fn install_daemonize_json_prints_the_result_once_installed_then_waits() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    use std::time::Duration;
    use support::child::ChildGuard;

    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("tetragon-oci-hook");
    fs::write(&source, b"#!/bin/sh\nexit 0\n").unwrap();
    let (install_dir, hooks_dir) = (tmp.path().join("install"), tmp.path().join("hooks"));
    fs::create_dir(&install_dir).unwrap();
    fs::create_dir(&hooks_dir).unwrap();
    let mut child = ChildGuard::new(
        bin()
            .arg("install")
            .arg(format!("--local-binary={}", source.display()))
            .arg(format!("--local-install-dir={}", install_dir.display()))
            .arg("--host-install-dir=/opt/tetragon")
            .arg(format!("--oci-hooks.local-dir={}", hooks_dir.display()))
            .args(["--daemonize", "--output-format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The whole document arrives while the installer still runs (it ends with a lone `}`).
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    while !text.ends_with("\n}\n") {
        assert_ne!(
            stdout.read_line(&mut text).unwrap(),
            0,
            "stdout ended: {text}"
        );
    }
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((&doc["ok"], &doc["written"]), (&json!(true), &json!(true)));
    assert_eq!(doc["files"].as_array().unwrap().len(), 2, "{doc:#}");
    assert!(hooks_dir.join("tetragon-oci-hook.json").is_file());
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    support::cmd::wait_for_line(&mut stderr, "waiting for SIGINT or SIGTERM");
    child.signal(libc::SIGTERM);
    let status = child
        .wait_for(Duration::from_secs(10))
        .expect("installer exits");
    assert!(status.success(), "{status}");
    // Uninstalled, said on stderr as text; nothing more on stdout.
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");
    assert!(!hooks_dir.join("tetragon-oci-hook.json").exists());
}

#[test]
fn install_nri_hook_dry_run_json_lists_the_binary_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let source = tmp.path().join("tetragon-oci-hook");
    fs::write(&source, b"#!/bin/sh\nexit 0\n").unwrap();
    let install_dir = tmp.path().join("install");
    fs::create_dir(&install_dir).unwrap();
    let missing = tmp.path().join("config.toml");
    let (code, doc) = run_json(&[
        "install",
        "--interface",
        "nri-hook",
        "--dry-run",
        &format!("--local-binary={}", source.display()),
        &format!("--local-install-dir={}", install_dir.display()),
        "--host-install-dir=/opt/tetragon",
        &format!("--containerd-config={}", missing.display()),
    ]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        doc["files"],
        json!([{
            "path": s(&install_dir.join("tetragon-oci-hook")),
            "action": "created",
            "before_sha256": null,
            "after_sha256": sha(&source),
            "written": false,
        }])
    );
    // The note text mode prints on stderr is in the document.
    assert!(
        doc["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("does not exist")),
        "{doc:#}"
    );
    assert!(fs::read_dir(&install_dir).unwrap().next().is_none());
}

/// A stdout closed before the document is printed (a reader that went away): no panic, the exit
/// code kept (the files were written before the document is made), and stderr says that the
/// document was lost and what was written.
#[test]
fn a_closed_stdout_in_json_keeps_the_exit_code_and_says_what_was_written() {
    let (dir, path) = copy("containerd/nri-disabled-v3.toml", "config.toml");
    let (read, write) = rustix::pipe::pipe().unwrap();
    drop(read);
    let out = bin()
        .env("PATH", "/nonexistent")
        .args([
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            s(&path),
        ])
        .args(["--in-place", "--output-format", "json"])
        .stdout(std::process::Stdio::from(write))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "error: cannot print the JSON document to stdout (Broken pipe (os error 32)); exit \
             code 0, 1 file(s) written: {}\n",
            path.display()
        )
    );
    drop(dir);
}
