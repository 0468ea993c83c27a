//! `patch-containerd-conf` judged on the node's real configuration: the main file plus the files
//! it imports (layouts from `tests/fixtures/containerd-imports/`), and k3s/rke2 rendered configs
//! (`tests/fixtures/k3s/`). Where containerd itself can say what it runs with, it is asked
//! (`config dump` of 1.7 and 2.1; its `--version` picks the merge rule when on `PATH`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use toml_edit::DocumentMut;

mod support;
use support::cmd::{bin, transcript};
use support::runtimes::{self, Release};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Copies `tests/fixtures/<rel>` into a new temp dir; returns it (`@DIR@` is replaced by it).
fn layout(rel: &str) -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path, root: &Path) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &dest, root);
            } else {
                let text = fs::read_to_string(e.path()).unwrap();
                fs::write(dest, text.replace("@DIR@", &root.to_string_lossy())).unwrap();
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    copy(&fixtures().join(rel), tmp.path(), tmp.path());
    tmp
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Runs the patcher with `PATH` set to `path` (no `containerd` unless asked for).
fn patch(dir: &Path, path: &str, args: &[&str]) -> Output {
    bin()
        .env("PATH", path)
        .arg("patch-containerd-conf")
        .args(args)
        .arg("--config-file")
        .arg(dir.join("config.toml"))
        .output()
        .unwrap()
}

fn nri_disable(dump: &str) -> bool {
    let doc: DocumentMut = dump.parse().unwrap();
    doc["plugins"]["io.containerd.nri.v1.nri"]["disable"]
        .as_bool()
        .unwrap()
}

#[test]
fn enable_nri_refuses_when_an_import_disables_nri_again_and_writes_nothing() {
    let tmp = layout("containerd-imports/01-conf-d-glob-disables-nri-v2");
    let before = snapshot(tmp.path());
    let out = patch(
        tmp.path(),
        "/nonexistent",
        &["enable-nri", "--in-place", "--containerd-version", "2.1"],
    );
    assert_eq!(snapshot(tmp.path()), before);
    insta::assert_snapshot!(transcript(&out, tmp.path()), @r#"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: [TMP]/conf.d/50-nri.toml:3: this imported file sets `plugins."io.containerd.nri.v1.nri".disable = true`, after `[TMP]/config.toml`: editing `[TMP]/config.toml` would change nothing containerd runs with; nothing written
    help: edit the file that is read last instead: `tetragon-oci-hook-setup patch-containerd-conf enable-nri --config-file [TMP]/conf.d/50-nri.toml --in-place`, or put the change in a drop-in read after it (--drop-in), or remove that setting
    "#);
}

/// The fix the error offers works: run on the imported file, NRI is on in containerd's view,
/// and the main file then needs nothing.
#[test]
fn enable_nri_fix_offered_for_an_import_turns_nri_on_in_containerd() {
    for release in Release::ALL {
        let bin_path = require!(runtimes::containerd(release), runtimes::missing(release));
        let tmp = layout("containerd-imports/01-conf-d-glob-disables-nri-v2");
        let main = tmp.path().join("config.toml");
        assert!(nri_disable(
            &runtimes::config_dump(&bin_path, &main).unwrap()
        ));
        let drop_in = tmp.path().join("conf.d/50-nri.toml");
        let out = bin()
            .args([
                "patch-containerd-conf",
                "enable-nri",
                "--in-place",
                "--config-file",
            ])
            .arg(&drop_in)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(!nri_disable(
            &runtimes::config_dump(&bin_path, &main).unwrap()
        ));
        let main_before = fs::read(&main).unwrap();
        let out = patch(
            tmp.path(),
            "/nonexistent",
            &[
                "enable-nri",
                "--in-place",
                "--containerd-version",
                release.as_str(),
            ],
        );
        assert!(out.status.success(), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("needs no change: already in effect"), "{err}");
        assert!(err.contains("conf.d/50-nri.toml:3"), "{err}");
        assert_eq!(fs::read(&main).unwrap(), main_before);
    }
}

#[test]
fn enable_nri_does_nothing_when_an_import_already_enables_nri() {
    let tmp = layout("containerd-imports/05-relative-literal-import-enables-nri-v2");
    let before = snapshot(tmp.path());
    let out = patch(
        tmp.path(),
        "/nonexistent",
        &["enable-nri", "--in-place", "--containerd-version", "1.7"],
    );
    assert_eq!(snapshot(tmp.path()), before);
    insta::assert_snapshot!(transcript(&out, tmp.path()), @r#"
    exit_code: 0
    ----- stdout -----
    ----- stderr -----
    `[TMP]/config.toml` needs no change: already in effect with the 1 imported file(s): `disable = false` at [TMP]/extra/nri.toml:3
    "#);
    // --check agrees: nothing pending.
    let out = patch(
        tmp.path(),
        "/nonexistent",
        &["enable-nri", "--check", "--containerd-version", "1.7"],
    );
    assert_eq!(out.status.code(), Some(0));
}

/// The same files, two verdicts: containerd 1.x replaces the main file's NRI section with the
/// imported one (which lacks `disable = false`), 2.x merges key by key. The release comes from
/// the real `containerd --version` on `PATH`.
#[test]
fn enable_nri_merge_rule_follows_the_containerd_on_path() {
    for release in Release::ALL {
        let dir = require!(runtimes::bin_dir(release), runtimes::missing(release));
        let tmp = layout("containerd-imports/18-import-sets-only-socket-path-v2");
        let before = snapshot(tmp.path());
        let out = patch(
            tmp.path(),
            &dir.to_string_lossy(),
            &["enable-nri", "--in-place"],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let dump = runtimes::config_dump(
            &runtimes::containerd(release).unwrap(),
            &tmp.path().join("config.toml"),
        )
        .unwrap();
        match release {
            Release::V1_7 => {
                assert_eq!(out.status.code(), Some(2), "{err}");
                assert!(
                    err.contains("conf.d/socket.toml:2: this imported file has the"),
                    "{err}"
                );
                assert!(err.contains("containerd 1.x uses whole"), "{err}");
                assert!(nri_disable(&dump));
            }
            Release::V2_1 => {
                assert_eq!(out.status.code(), Some(0), "{err}");
                assert!(
                    err.contains("merging imports as containerd 2.1 does"),
                    "{err}"
                );
                assert!(err.contains("already in effect"), "{err}");
                assert!(!nri_disable(&dump));
            }
        }
        assert_eq!(snapshot(tmp.path()), before);
    }
}

#[test]
fn enable_nri_without_a_release_merges_by_the_config_version_and_says_so() {
    let tmp = layout("containerd-imports/18-import-sets-only-socket-path-v2");
    let out = patch(tmp.path(), "/nonexistent", &["enable-nri", "--dry-run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "(no --containerd-version and no `containerd` on PATH: merging imports as \
             containerd 1.x does, from `version = 2`; pass --containerd-version X.Y if another \
             release reads it)"
        ),
        "{err}"
    );
}

/// The edit goes into the main file when it takes effect there, and containerd agrees.
#[test]
fn add_oci_hook_edits_the_main_file_when_the_edit_takes_effect() {
    let bin_path = require!(
        runtimes::containerd(Release::V2_1),
        runtimes::missing(Release::V2_1)
    );
    let tmp = layout("containerd-imports/14-import-adds-a-runtime-v3");
    let spec = "/etc/containerd/tetragon.json";
    let out = patch(
        tmp.path(),
        "/nonexistent",
        &[
            "add-oci-hook",
            "--runtime-spec",
            spec,
            "--in-place",
            "--containerd-version",
            "2.1",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let dump = runtimes::config_dump(&bin_path, &tmp.path().join("config.toml")).unwrap();
    let doc: DocumentMut = dump.parse().unwrap();
    let rts = &doc["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"];
    assert_eq!(rts["runc"]["base_runtime_spec"].as_str(), Some(spec));
    // The imported kata runtime (not runc) keeps its own.
    assert_eq!(
        rts["kata"]["base_runtime_spec"].as_str(),
        Some("/etc/containerd/kata-spec.json")
    );
    // Run again: in effect now, nothing to do.
    let again = patch(
        tmp.path(),
        "/nonexistent",
        &[
            "add-oci-hook",
            "--runtime-spec",
            spec,
            "--check",
            "--containerd-version",
            "2.1",
        ],
    );
    assert_eq!(again.status.code(), Some(0), "{again:?}");
}

#[test]
fn add_oci_hook_refuses_when_an_import_overrides_the_base_spec() {
    let tmp = layout("containerd-imports/15-import-overrides-base-spec-v3");
    let before = snapshot(tmp.path());
    // The main file's runc has a spec of its own: the edit leaves it, the import sets another.
    let out = patch(
        tmp.path(),
        "/nonexistent",
        &[
            "add-oci-hook",
            "--runtime-spec",
            "/etc/containerd/a.json",
            "--in-place",
            "--containerd-version",
            "2.1",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    // `a.json` is what the main file has, `b.json` is what containerd runs with: no runc runtime
    // is left with ours, and the import is named.
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("conf.d/spec.toml"), "{err}");
    assert_eq!(snapshot(tmp.path()), before);
}

#[test]
fn broken_or_cyclic_imports_are_refused_naming_the_file_and_line() {
    for (case, expect) in [
        (
            "containerd-imports/error-broken-import-v2",
            "conf.d/bad.toml:3: failed to parse",
        ),
        (
            "containerd-imports/error-cycle-v2",
            "a.toml:2: import `config.toml` makes a cycle",
        ),
        (
            "containerd-imports/error-missing-literal-import-v2",
            "config.toml:2: failed to read imported file",
        ),
    ] {
        let tmp = layout(case);
        let before = snapshot(tmp.path());
        let out = patch(tmp.path(), "/nonexistent", &["enable-nri", "--in-place"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{case}: {err}");
        assert!(err.contains(expect), "{case}: {err}");
        assert_eq!(snapshot(tmp.path()), before, "{case}");
    }
}

/// A rendered k3s/rke2 config is never edited in place; the error names the template route,
/// and the drop-in dir when the rendered config imports one. `--force` edits it anyway.
#[test]
fn rendered_k3s_and_rke2_configs_are_refused_unless_forced() {
    let dir = fixtures().join("k3s");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 4);
    for name in names {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("config.toml");
        fs::copy(dir.join(&name), &config).unwrap();
        let before = fs::read(&config).unwrap();
        let out = bin()
            .env("PATH", "/nonexistent")
            .args([
                "patch-containerd-conf",
                "enable-nri",
                "--in-place",
                "--config-file",
            ])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert_eq!(fs::read(&config).unwrap(), before, "{name}");
        let program = if name.starts_with("rke2") {
            "rke2"
        } else {
            "k3s"
        };
        assert!(
            err.contains(&format!(
                "is generated by {program}, which rewrites it at every restart"
            )),
            "{name}: {err}"
        );
        let template = if name.contains("v3") {
            "config-v3.toml.tmpl"
        } else {
            "config.toml.tmpl"
        };
        assert!(err.contains(template), "{name}: {err}");
        assert!(err.contains("{{ template \"base\" . }}"), "{name}: {err}");
        assert_eq!(
            err.contains("matching the rendered config's import"),
            name.contains("imports"),
            "{name}: {err}"
        );
        let out = bin()
            .env("PATH", "/nonexistent")
            .args([
                "patch-containerd-conf",
                "enable-nri",
                "--in-place",
                "--force",
                "--config-file",
            ])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {err}");
        assert!(err.contains("warning: --force:"), "{name}: {err}");
    }
}

/// A config under k3s's agent dir is recognised by its place, header or not.
#[test]
fn config_under_the_k3s_agent_dir_is_refused_without_a_header() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var/lib/rancher/k3s/agent/etc/containerd");
    fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    fs::write(&config, "version = 2\n").unwrap();
    let out = bin()
        .args([
            "patch-containerd-conf",
            "enable-nri",
            "--in-place",
            "--config-file",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(fs::read_to_string(&config).unwrap(), "version = 2\n");
}

/// containerd 1.7 refuses a `version = 3` configuration (here set by the last import); so do
/// we when told 1.7 reads it, naming the file, and containerd agrees.
#[test]
fn a_config_version_newer_than_the_release_is_refused_naming_the_file() {
    let tmp = layout("containerd-imports/02-conf-d-glob-disables-nri-v3");
    let before = snapshot(tmp.path());
    let out = patch(
        tmp.path(),
        "/nonexistent",
        &["enable-nri", "--in-place", "--containerd-version", "1.7"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("conf.d/50-nri.toml:1: `version = 3` is newer than containerd 1.7 loads"),
        "{err}"
    );
    assert_eq!(snapshot(tmp.path()), before);
    if let Some(bin_path) = support::skip::require(
        runtimes::containerd(Release::V1_7),
        runtimes::missing(Release::V1_7),
    ) {
        assert!(runtimes::config_dump(&bin_path, &tmp.path().join("config.toml")).is_err());
    }
}

/// Runs `enable-nri --in-place` from `cwd` on `config` (as given), plus `extra`.
fn enable_nri_in(cwd: &Path, config: &str, extra: &[&str]) -> Output {
    bin()
        .env("PATH", "/nonexistent")
        .current_dir(cwd)
        .args(["patch-containerd-conf", "enable-nri", "--in-place"])
        .args(extra)
        .args(["--config-file", config])
        .output()
        .unwrap()
}

/// A rendered k3s/rke2 config is recognised named relatively from inside the agent dir, and
/// by a neighbouring template anywhere (a custom `--data-dir`), header or not.
#[test]
fn rendered_config_is_refused_by_relative_path_and_by_a_neighbouring_template() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = tmp.path().join("var/lib/rancher/k3s/agent/etc/containerd");
    let custom = tmp.path().join("data/agent/etc/containerd");
    for (dir, template) in [
        (&agent, None),
        (&custom, Some("config.toml.tmpl")),
        (&custom, Some("config-v3.toml.tmpl")),
    ] {
        fs::create_dir_all(dir).unwrap();
        for t in ["config.toml.tmpl", "config-v3.toml.tmpl"] {
            let _ = fs::remove_file(dir.join(t));
        }
        if let Some(t) = template {
            fs::write(dir.join(t), "{{ template \"base\" . }}\n").unwrap();
        }
        fs::write(dir.join("config.toml"), "version = 2\n").unwrap();
        let out = enable_nri_in(dir, "config.toml", &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{template:?}: {err}");
        assert!(
            err.contains("rewrites it at every restart"),
            "{template:?}: {err}"
        );
        if let Some(t) = template {
            assert!(err.contains(&*dir.join(t).to_string_lossy()), "{err}");
        }
        assert_eq!(
            fs::read_to_string(dir.join("config.toml")).unwrap(),
            "version = 2\n"
        );
    }
}

/// Another generator's `# File generated by X. DO NOT EDIT` header gets a generic refusal,
/// not k3s template advice; `--force` still edits.
#[test]
fn other_generators_get_a_generic_refusal_without_k3s_template_advice() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "# File generated by mytool. DO NOT EDIT.\nversion = 2\n";
    fs::write(tmp.path().join("config.toml"), text).unwrap();
    let out = enable_nri_in(tmp.path(), "config.toml", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("generated by mytool"), "{err}");
    assert!(!err.contains("tmpl"), "{err}");
    assert!(!err.contains("template"), "{err}");
    assert!(!err.contains("k3s"), "{err}");
    assert_eq!(
        fs::read_to_string(tmp.path().join("config.toml")).unwrap(),
        text
    );
    let out = enable_nri_in(tmp.path(), "config.toml", &["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Files of mixed versions whose CRI runtimes containerd 2.x ignores: the fix is to align the
/// versions, so the refusal says that, not "edit the file read last" (whose runtimes are the
/// ignored ones), whichever file is at fault; nothing is written.
#[test]
fn mixed_version_refusal_asks_to_align_versions_not_to_edit_another_file() {
    for rel in [
        "containerd-imports/25-mixed-v2-main-v3-import-stops-migration",
        "containerd-imports/26-mixed-v3-main-v2-import-runtimes-not-migrated",
    ] {
        let dir = layout(rel);
        let before = snapshot(dir.path());
        let config = dir.path().join("config.toml");
        let out = bin()
            .args([
                "patch-containerd-conf",
                "add-oci-hook",
                "--runtime-spec",
                "/s.json",
            ])
            .arg("--config-file")
            .arg(&config)
            .args(["--containerd-version", "2.1", "--in-place"])
            .output()
            .unwrap();
        let t = transcript(&out, dir.path());
        assert_eq!(out.status.code(), Some(2), "{rel}: {t}");
        assert!(
            t.contains("help: give every file of the config the same `version`")
                && !t.contains("edit the file that is read last"),
            "{rel}: {t}"
        );
        assert_eq!(snapshot(dir.path()), before, "{rel}: something was written");
    }
}
