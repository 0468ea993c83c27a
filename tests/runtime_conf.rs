//! The runtime's whole configuration, judged from the command line: NRI's default validator
//! (`install --interface nri-hook` refuses, `enable-nri` warns), the hooks dirs cri-o or podman
//! reads (`install --interface oci-hooks --crio-config/--containers-conf`), and which cri-o file
//! sets each runtime's `allowed_annotations`. Fixtures: `tests/fixtures/nri-validator/` and
//! `tests/fixtures/hooks-dirs/`. The real-podman proof is in `tests/podman.rs`.

// Helpers outside `#[test]` functions panic on a failed setup step, as a test body does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rthooks::hooks_dirs::{HooksRuntime, check_host_dir, hooks_dirs};
use rthooks::layers::Layer;
use support::cmd::{bin, listing};
use support::skip::{is_root, skip};

/// A node in a temp dir: the hook binary to install, the install and hooks dirs, and a copy of
/// one fixture (file or directory) under `conf/`.
struct Node {
    tmp: tempfile::TempDir,
}

impl Node {
    fn new(fixture: &str) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let n = Node { tmp };
        for d in ["src", "install", "hooks", "conf"] {
            fs::create_dir_all(n.path(d)).unwrap();
        }
        fs::write(n.path("src/tetragon-oci-hook"), b"#!/bin/sh\nexit 0\n").unwrap();
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(fixture);
        copy_tree(&from, &n.path("conf").join(from.file_name().unwrap()));
        n
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The copied fixture, or a file inside it.
    fn conf(&self, rel: &str) -> String {
        self.path("conf").join(rel).display().to_string()
    }

    fn install_cmd(&self, interface: &str, extra: &[&str]) -> Command {
        let mut cmd = bin();
        cmd.args([
            "install",
            &format!("--interface={interface}"),
            &format!(
                "--local-binary={}",
                self.path("src/tetragon-oci-hook").display()
            ),
            &format!("--local-install-dir={}", self.path("install").display()),
            &format!("--host-install-dir={}", self.path("install").display()),
            &format!("--oci-hooks.local-dir={}", self.path("hooks").display()),
        ])
        .args(extra);
        cmd
    }

    fn install(&self, interface: &str, extra: &[&str]) -> Output {
        self.install_cmd(interface, extra).output().unwrap()
    }

    /// Nothing installed and the config untouched.
    fn assert_nothing_written(&self, fixture: &str) {
        assert!(listing(&self.path("install")).is_empty());
        assert!(listing(&self.path("hooks")).is_empty());
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(fixture);
        let to = self.path("conf").join(from.file_name().unwrap());
        assert_same_tree(&from, &to);
    }

    fn stderr(&self, out: &Output) -> String {
        String::from_utf8_lossy(&out.stderr)
            .replace(&self.tmp.path().display().to_string(), "[TMP]")
    }
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_tree(&e.path(), &to.join(e.file_name()));
        }
    } else {
        fs::copy(from, to).unwrap();
    }
}

fn assert_same_tree(a: &Path, b: &Path) {
    if a.is_dir() {
        for e in fs::read_dir(a).unwrap() {
            let e = e.unwrap();
            assert_same_tree(&e.path(), &b.join(e.file_name()));
        }
    } else {
        assert_eq!(
            fs::read(a).unwrap(),
            fs::read(b).unwrap(),
            "{} changed",
            b.display()
        );
    }
}

// --- NRI's default validator -------------------------------------------------------------

const REJECTS: &str = "nri-validator/containerd-2.2-rejects-oci-hooks-v3.toml";

#[test]
fn nri_hook_install_refuses_when_containerd_validator_rejects_oci_hooks() {
    let node = Node::new(REJECTS);
    let config = node.conf("containerd-2.2-rejects-oci-hooks-v3.toml");
    // Without --dry-run: the refusal comes before anything is written or any socket is tried.
    let out = node.install(
        "nri-hook",
        &["--daemonize", &format!("--containerd-config={config}")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        node.stderr(&out),
        "error: refusing to start the NRI plugin: \
         [TMP]/conf/containerd-2.2-rejects-oci-hooks-v3.toml:11: \
         `plugins.\"io.containerd.nri.v1.nri\".default_validator.reject_oci_hook_adjustment = true` \
         (validator enabled at [TMP]/conf/containerd-2.2-rejects-oci-hooks-v3.toml:10): \
         containerd's default NRI validator rejects OCI hook adjustments, so every container \
         the tetragon NRI plugin adds its hook to fails to be created\n\
         help: set `reject_oci_hook_adjustment = false` (or remove it) at \
         [TMP]/conf/containerd-2.2-rejects-oci-hooks-v3.toml:11, then restart containerd; or \
         hook containers without NRI (`install --interface oci-hooks`, or \
         `patch-containerd-conf add-oci-hook` on containerd)\n"
    );
    node.assert_nothing_written(REJECTS);
}

#[test]
fn nri_hook_install_refuses_when_an_imported_drop_in_enables_the_validator() {
    let fixture = "nri-validator/containerd-2.2-rejects-in-import";
    let node = Node::new(fixture);
    let config = node.conf("containerd-2.2-rejects-in-import/config.toml");
    let out = node.install(
        "nri-hook",
        &["--daemonize", &format!("--containerd-config={config}")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = node.stderr(&out);
    let drop_in = "[TMP]/conf/containerd-2.2-rejects-in-import/conf.d/50-nri-lockdown.toml";
    assert!(
        err.starts_with(&format!(
            "error: refusing to start the NRI plugin: {drop_in}:5: \
             `plugins.\"io.containerd.nri.v1.nri\".default_validator.reject_oci_hook_adjustment = \
             true` (validator enabled at {drop_in}:4)"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "help: set `reject_oci_hook_adjustment = false` (or remove it) at {drop_in}:5"
        )),
        "{err}"
    );
    node.assert_nothing_written(fixture);
}

#[test]
fn enable_nri_warns_naming_a_validator_key_of_the_wrong_type() {
    let fixture = "nri-validator/containerd-2.2-enable-not-a-bool-v3.toml";
    let node = Node::new(fixture);
    let config = node.conf("containerd-2.2-enable-not-a-bool-v3.toml");
    let out = bin()
        .args([
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            &config,
            "--dry-run",
        ])
        .output()
        .unwrap();
    let err = node.stderr(&out);
    assert!(
        err.contains(
            "warning: cannot tell whether containerd's default NRI validator rejects OCI hooks: \
             [TMP]/conf/containerd-2.2-enable-not-a-bool-v3.toml:4: \
             `plugins.\"io.containerd.nri.v1.nri\".default_validator.enable` is a string, \
             expected a boolean\nhelp: write `enable = true` or `enable = false`"
        ),
        "{out:?} {err}"
    );
}

#[test]
fn nri_hook_install_starts_when_validator_allows_oci_hooks_or_is_not_enabled() {
    for fixture in [
        "nri-validator/containerd-2.2-validator-allows-oci-hooks-v3.toml",
        "nri-validator/containerd-2.2-reject-without-enable-v3.toml",
    ] {
        let node = Node::new(fixture);
        let name = Path::new(fixture).file_name().unwrap().to_str().unwrap();
        let out = node.install(
            "nri-hook",
            &[
                "--dry-run",
                &format!("--containerd-config={}", node.conf(name)),
            ],
        );
        assert!(out.status.success(), "{fixture}: {}", node.stderr(&out));
    }
}

#[test]
fn nri_hook_install_notes_a_missing_containerd_config() {
    let node = Node::new(REJECTS);
    let missing = node.conf("nope.toml");
    let out = node.install(
        "nri-hook",
        &["--dry-run", &format!("--containerd-config={missing}")],
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        node.stderr(&out).contains(
            "note: `[TMP]/conf/nope.toml` does not exist: containerd's NRI validator not checked"
        ),
        "{}",
        node.stderr(&out)
    );
}

#[test]
fn nri_hook_install_refuses_when_a_crio_drop_in_rejects_oci_hooks() {
    let fixture = "nri-validator/crio-1.34-rejects-in-drop-in";
    let node = Node::new(fixture);
    let out = node.install(
        "nri-hook",
        &[
            "--daemonize",
            &format!("--containerd-config={}", node.conf("none.toml")),
            &format!(
                "--crio-config={}",
                node.conf("crio-1.34-rejects-in-drop-in/crio.conf")
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = node.stderr(&out);
    assert!(
        err.contains(
            "crio.conf.d/20-lockdown.conf:3: \
             `crio.nri.default_validator.nri_validator_reject_oci_hook_adjustment = true` \
             (validator enabled at [TMP]/conf/crio-1.34-rejects-in-drop-in/crio.conf.d/10-nri.conf:2)"
        ),
        "{err}"
    );
    assert!(
        err.contains("\nhelp: set `nri_validator_reject_oci_hook_adjustment = false`"),
        "{err}"
    );
    node.assert_nothing_written(fixture);
}

#[test]
fn crio_validator_rejection_in_main_file_undone_by_later_drop_in_is_accepted() {
    for (fixture, ok) in [
        ("nri-validator/crio-1.34-rejects", false),
        ("nri-validator/crio-1.34-reject-undone-by-drop-in", true),
    ] {
        let node = Node::new(fixture);
        let name = Path::new(fixture).file_name().unwrap().to_str().unwrap();
        let out = node.install(
            "nri-hook",
            &[
                "--dry-run",
                &format!("--containerd-config={}", node.conf("none.toml")),
                &format!("--crio-config={}", node.conf(&format!("{name}/crio.conf"))),
            ],
        );
        assert_eq!(out.status.success(), ok, "{fixture}: {}", node.stderr(&out));
        if !ok {
            assert!(
                node.stderr(&out)
                    .contains(&format!("{name}/crio.conf:13: "))
            );
        }
    }
}

#[test]
fn validator_key_of_the_wrong_type_is_an_error_with_file_and_line() {
    let fixture = "nri-validator/containerd-2.2-enable-not-a-bool-v3.toml";
    let node = Node::new(fixture);
    let config = node.conf("containerd-2.2-enable-not-a-bool-v3.toml");
    let out = node.install(
        "nri-hook",
        &["--daemonize", &format!("--containerd-config={config}")],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        node.stderr(&out),
        "error: [TMP]/conf/containerd-2.2-enable-not-a-bool-v3.toml:4: \
         `plugins.\"io.containerd.nri.v1.nri\".default_validator.enable` is a string, expected a \
         boolean\nhelp: write `enable = true` or `enable = false`\n"
    );
    node.assert_nothing_written(fixture);
}

#[test]
fn enable_nri_warns_when_validator_rejects_oci_hooks() {
    let node = Node::new(REJECTS);
    let config = node.conf("containerd-2.2-rejects-oci-hooks-v3.toml");
    let out = bin()
        .args([
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            &config,
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = node.stderr(&out);
    assert!(
        err.contains(
            "warning: [TMP]/conf/containerd-2.2-rejects-oci-hooks-v3.toml:11: \
             `plugins.\"io.containerd.nri.v1.nri\".default_validator.reject_oci_hook_adjustment = true`"
        ),
        "{err}"
    );
    assert!(
        err.contains("\nhelp: set `reject_oci_hook_adjustment = false`"),
        "{err}"
    );
    // Quiet still warns; a config that allows hooks does not.
    let allows = Node::new("nri-validator/containerd-2.2-validator-allows-oci-hooks-v3.toml");
    let config = allows.conf("containerd-2.2-validator-allows-oci-hooks-v3.toml");
    let out = bin()
        .args([
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            &config,
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success() && !allows.stderr(&out).contains("warning"),
        "{out:?}"
    );
}

// --- cri-o / podman hooks dirs --------------------------------------------------------------

#[test]
fn oci_hooks_install_refuses_a_dir_crio_does_not_read_and_names_the_one_it_does() {
    let fixture = "hooks-dirs/crio-drop-in-overrides";
    let node = Node::new(fixture);
    let out = node.install(
        "oci-hooks",
        &[
            "--oci-hooks.host-dir=/etc/containers/oci/hooks.d",
            &format!(
                "--crio-config={}",
                node.conf("crio-drop-in-overrides/crio.conf")
            ),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        node.stderr(&out),
        "error: cri-o does not read hook files from `/etc/containers/oci/hooks.d`: it reads \
         `/opt/vendor/hooks.d` (`hooks_dir` at \
         [TMP]/conf/crio-drop-in-overrides/crio.conf.d/50-vendor-hooks.conf:3)\n\
         help: install into `/opt/vendor/hooks.d`: `--oci-hooks.host-dir=/opt/vendor/hooks.d` \
         with that host dir mounted at `--oci-hooks.local-dir` (Helm: \
         `rthooks.ociHooks.hooksPath=/opt/vendor/hooks.d`)\n"
    );
    node.assert_nothing_written(fixture);
}

#[test]
fn oci_hooks_install_accepts_the_dir_openshift_configures() {
    let node = Node::new("hooks-dirs/crio-openshift");
    let out = node.install(
        "oci-hooks",
        &[
            "--oci-hooks.host-dir=/etc/containers/oci/hooks.d/",
            &format!("--crio-config={}", node.conf("crio-openshift/crio.conf")),
        ],
    );
    assert!(out.status.success(), "{}", node.stderr(&out));
    assert!(node.path("hooks/tetragon-oci-hook.json").is_file());
    // The default dir is not read there.
    let out = node.install(
        "oci-hooks",
        &[
            "--oci-hooks.host-dir=/usr/share/containers/oci/hooks.d",
            &format!(
                "--crio-config={}",
                node.conf("crio-openshift/crio.conf.d/00-default.conf")
            ),
            "--dry-run",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", node.stderr(&out));
    assert!(node.stderr(&out).contains(
        "crio.conf.d/00-default.conf:4)\nhelp: install into `/etc/containers/oci/hooks.d`"
    ));
}

#[test]
fn oci_hooks_install_without_hooks_dir_setting_takes_crio_default() {
    let node = Node::new("hooks-dirs/crio-default");
    let conf = format!("--crio-config={}", node.conf("crio-default/crio.conf"));
    let out = node.install(
        "oci-hooks",
        &["--oci-hooks.host-dir=/etc/containers/oci/hooks.d", &conf],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        node.stderr(&out).contains(
            "it reads `/usr/share/containers/oci/hooks.d` (cri-o's default `hooks_dir` (no config \
             file sets it))"
        ),
        "{}",
        node.stderr(&out)
    );
    let out = node.install(
        "oci-hooks",
        &[
            "--oci-hooks.host-dir=/usr/share/containers/oci/hooks.d",
            &conf,
            "--dry-run",
        ],
    );
    assert!(out.status.success(), "{}", node.stderr(&out));
}

#[test]
fn oci_hooks_install_refuses_a_read_only_hooks_dir_naming_the_override_dir() {
    if !is_root() {
        skip("not root: cannot mount a read-only tmpfs");
        return;
    }
    let fixture = "hooks-dirs/crio-default";
    let node = Node::new(fixture);
    let hooks = node.path("hooks");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
        .arg(&hooks)
        .status()
        .unwrap();
    if !mounted.success() {
        skip("cannot mount a tmpfs here");
        return;
    }
    let out = node.install(
        "oci-hooks",
        &[
            "--oci-hooks.host-dir=/usr/share/containers/oci/hooks.d",
            &format!("--crio-config={}", node.conf("crio-default/crio.conf")),
        ],
    );
    let _ = Command::new("umount").arg(&hooks).status();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = node.stderr(&out);
    assert!(
        err.starts_with(
            "error: hooks dir `/usr/share/containers/oci/hooks.d` is on a read-only file system"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "help: add `/etc/containers/oci/hooks.d` to the runtime's hooks dirs in a crio.conf.d \
             drop-in"
        ),
        "{err}"
    );
    node.assert_nothing_written(fixture);
}

#[test]
fn oci_hooks_install_refuses_a_crio_config_that_does_not_exist() {
    let node = Node::new("hooks-dirs/crio-default");
    let out = node.install(
        "oci-hooks",
        &[&format!("--crio-config={}", node.conf("x/crio.conf"))],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        node.stderr(&out).starts_with(
            "error: --crio-config: neither `[TMP]/conf/x/crio.conf` nor `[TMP]/conf/x/crio.conf.d` \
             exists\nhelp: "
        ),
        "{}",
        node.stderr(&out)
    );
}

#[test]
fn broken_crio_drop_in_is_an_error_naming_it() {
    let fixture = "hooks-dirs/crio-openshift";
    let node = Node::new(fixture);
    fs::write(
        node.path("conf/crio-openshift/crio.conf.d/10-broken.conf"),
        "[crio\n",
    )
    .unwrap();
    let out = node.install(
        "oci-hooks",
        &[
            "--oci-hooks.host-dir=/etc/containers/oci/hooks.d",
            &format!("--crio-config={}", node.conf("crio-openshift/crio.conf")),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        node.stderr(&out).starts_with(
            "error: `[TMP]/conf/crio-openshift/crio.conf.d/10-broken.conf`:1: is not valid TOML"
        ),
        "{}",
        node.stderr(&out)
    );
    assert!(listing(&node.path("hooks")).is_empty());
}

#[test]
fn chart_command_line_without_runtime_config_is_unchanged() {
    // No --crio-config / --containers-conf: no check, whatever the host dir would be.
    let node = Node::new("hooks-dirs/crio-drop-in-overrides");
    let out = node.install("oci-hooks", &[]);
    assert!(out.status.success(), "{}", node.stderr(&out));
    assert!(
        !node.stderr(&out).contains("note: "),
        "{}",
        node.stderr(&out)
    );
}

// --- allowed_annotations sources --------------------------------------------------------------

#[test]
fn enable_annotations_names_the_file_that_sets_each_runtimes_annotations() {
    let node = Node::new("hooks-dirs/crio-annotations-overridden");
    let conf = node.conf("crio-annotations-overridden/crio.conf");
    let out = bin()
        .args([
            "patch-crio-conf",
            "enable-annotations",
            "--config-file",
            &conf,
            "--annotations",
            "tetragon.io/policy",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = node.stderr(&out);
    assert!(
        err.contains(
            "warning: runtime `runc`: [TMP]/conf/crio-annotations-overridden/crio.conf.d/20-runc.conf:2 \
             comes after `[TMP]/conf/crio-annotations-overridden/crio.conf` and replaces that \
             runtime's table"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "note: runtime `crun`: cri-o takes `allowed_annotations` from \
             [TMP]/conf/crio-annotations-overridden/crio.conf:8"
        ),
        "{err}"
    );
    assert!(
        err.contains("note: runtime `runc`: no `allowed_annotations` in effect"),
        "{err}"
    );
}

#[test]
fn relative_host_hooks_dir_is_refused() {
    let fixture = "hooks-dirs/crio-default";
    let node = Node::new(fixture);
    let conf = format!("--crio-config={}", node.conf("crio-default/crio.conf"));
    let out = node.install("oci-hooks", &["--oci-hooks.host-dir=hooks.d", &conf]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        node.stderr(&out),
        "error: --oci-hooks.host-dir `hooks.d` is not an absolute path\nhelp: pass the hooks dir \
         as the host sees it, e.g. `--oci-hooks.host-dir=/etc/containers/oci/hooks.d`\n"
    );
    node.assert_nothing_written(fixture);
}

#[test]
fn containers_conf_hooks_dir_is_checked_and_its_drop_ins_are_not_read() {
    let fixture = "hooks-dirs/podman";
    let node = Node::new(fixture);
    // podman reads a `CONTAINERS_CONF` file alone: a `.d` beside it does not count.
    fs::create_dir_all(node.path("conf/podman/containers.conf.d")).unwrap();
    fs::write(
        node.path("conf/podman/containers.conf.d/99-other.conf"),
        "[engine]\nhooks_dir = [\"/opt/other\"]\n",
    )
    .unwrap();
    let conf = format!("--containers-conf={}", node.conf("podman/containers.conf"));
    let out = node.install(
        "oci-hooks",
        &[
            "--oci-hooks.host-dir=/etc/containers/oci/hooks.d",
            &conf,
            "--dry-run",
        ],
    );
    assert!(out.status.success(), "{}", node.stderr(&out));
    assert!(
        node.stderr(&out).contains(
            "note: `/etc/containers/oci/hooks.d` is one of the hooks dirs --containers-conf \
             `[TMP]/conf/podman/containers.conf` reads"
        ),
        "{}",
        node.stderr(&out)
    );
    let out = node.install("oci-hooks", &["--oci-hooks.host-dir=/opt/other", &conf]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        node.stderr(&out).starts_with(
            "error: podman does not read hook files from `/opt/other`: it reads \
             `/usr/share/containers/oci/hooks.d`, `/etc/containers/oci/hooks.d` (`hooks_dir` at \
             [TMP]/conf/podman/containers.conf:2)\nhelp: install into `/etc/containers/oci/hooks.d`"
        ),
        "{}",
        node.stderr(&out)
    );
    let missing = format!("--containers-conf={}", node.conf("nope.conf"));
    let out = node.install("oci-hooks", &[&missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        node.stderr(&out)
            .starts_with("error: --containers-conf: `[TMP]/conf/nope.conf` does not exist\n"),
        "{}",
        node.stderr(&out)
    );
    assert!(listing(&node.path("hooks")).is_empty());
}

#[test]
fn containers_conf_hooks_dir_appended_with_the_append_attribute_is_accepted() {
    for (fixture, at) in [
        (
            "hooks-dirs/podman-append",
            "`hooks_dir` at podman's default + [TMP]/conf/podman-append/containers.conf:3 \
             (appended)",
        ),
        (
            "hooks-dirs/podman-empty",
            "`hooks_dir` at [TMP]/conf/podman-empty/containers.conf:3: an empty list, so \
             podman's implicit dirs",
        ),
    ] {
        let node = Node::new(fixture);
        let name = Path::new(fixture).file_name().unwrap().to_str().unwrap();
        let conf = format!(
            "--containers-conf={}",
            node.conf(&format!("{name}/containers.conf"))
        );
        let out = node.install(
            "oci-hooks",
            &[
                "--oci-hooks.host-dir=/etc/containers/oci/hooks.d",
                &conf,
                "--dry-run",
            ],
        );
        assert!(out.status.success(), "{fixture}: {}", node.stderr(&out));
        let out = node.install("oci-hooks", &["--oci-hooks.host-dir=/opt/other", &conf]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            node.stderr(&out).starts_with(&format!(
                "error: podman does not read hook files from `/opt/other`: it reads \
                 `/usr/share/containers/oci/hooks.d`, `/etc/containers/oci/hooks.d` ({at})\n"
            )),
            "{fixture}: {}",
            node.stderr(&out)
        );
        node.assert_nothing_written(fixture);
    }
}

/// OpenShift's real drop-in (`../shared/fixtures`, machine-config-operator's `00-default`, no
/// `.conf` suffix: cri-o reads every file of `crio.conf.d`) lists `/etc`, `/run` and the
/// read-only `/usr` hooks dirs: the chart's default `/usr/share/...` is refused as read-only
/// and `/etc/containers/oci/hooks.d` is named, not the tmpfs `/run` one.
#[test]
fn openshift_read_only_usr_hooks_dir_points_at_etc() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/crio/openshift-mco-crio.conf.d-00-default.conf");
    let text = require!(
        fs::read_to_string(&path).ok(),
        format!(
            "no `{}` (the shared fixtures beside the checkout)",
            path.display()
        )
    );
    let layers = [Layer::parse("/etc/crio/crio.conf.d/00-default", text).unwrap()];
    let dirs = hooks_dirs(HooksRuntime::Crio, &layers).unwrap();
    assert_eq!(
        dirs.set_at.as_deref(),
        Some("/etc/crio/crio.conf.d/00-default:22")
    );
    check_host_dir(&dirs, Path::new("/etc/containers/oci/hooks.d"), false).unwrap();
    let err =
        check_host_dir(&dirs, Path::new("/usr/share/containers/oci/hooks.d"), true).unwrap_err();
    assert!(err.message.contains("read-only"), "{}", err.message);
    assert!(
        err.help
            .starts_with("install into `/etc/containers/oci/hooks.d`"),
        "{}",
        err.help
    );
}

/// The warning does not depend on how the key is spelled: a validator table named with a TOML
/// escape in a file that imports nothing (the case the edit judges without a second parse) is
/// still found.
#[test]
fn enable_nri_warns_when_validator_key_is_spelled_with_an_escape() {
    let fixture = "nri-validator/containerd-2.2-rejects-oci-hooks-escaped-key-v3.toml";
    let node = Node::new(fixture);
    let config = node.conf("containerd-2.2-rejects-oci-hooks-escaped-key-v3.toml");
    let out = bin()
        .args([
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            &config,
            "--dry-run",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = node.stderr(&out);
    assert!(
        err.contains(
            "warning: [TMP]/conf/containerd-2.2-rejects-oci-hooks-escaped-key-v3.toml:13: \
             `plugins.\"io.containerd.nri.v1.nri\".default_validator.reject_oci_hook_adjustment = true`"
        ),
        "{err}"
    );
    node.assert_nothing_written(fixture);
}
