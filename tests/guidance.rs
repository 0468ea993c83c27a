//! What a new operator meets (issue 15): the other runtime's file refused with the right command,
//! a `help:` line on every error that has a fix, where the result of a patch went, `print-config`
//! checking the hook's arguments as `install` does, and help texts that say what `hook-args` is.
//!
//! Every refusal is checked the same way: exit 2, a `help:` line (last), nothing on stdout, the
//! input byte-identical and no file left beside it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use oci_hook::log::Level;
use support::cmd::listing;

const BIN: &str = env!("CARGO_BIN_EXE_tetragon-oci-hook-setup");

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The `help:` line (the last line of stderr), or a panic showing the output.
    fn help(&self) -> &str {
        let last = self.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("help: "),
            "no help line last in:\n{}",
            self.stderr
        );
        last
    }
}

/// Runs the binary in `dir` (also its `TMPDIR`), without `containerd` on `PATH` unless `path`.
fn run_in(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("TMPDIR", dir)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// A temporary directory holding a copy of `fixture` as `name`.
fn copy_of(fixture_rel: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::copy(fixture(fixture_rel), &path).unwrap();
    (dir, path)
}

/// Runs `args` on a copy of `fixture_rel` (named `name`), and checks that it is refused as a
/// refusal must be: exit 2, nothing on stdout, the file unchanged, nothing left beside it.
/// Returns the run, for its message and help.
fn refused(fixture_rel: &str, name: &str, args: &[&str]) -> Run {
    let (dir, path) = copy_of(fixture_rel, name);
    let before = fs::read(&path).unwrap();
    let listed = listing(dir.path());
    let r = run_in(dir.path(), args);
    let what = format!("{args:?} on {fixture_rel}");
    assert_eq!(r.code, 2, "{what}: {}", r.stderr);
    assert!(r.stderr.starts_with("error: "), "{what}: {}", r.stderr);
    assert_eq!(r.stdout, "", "{what}: nothing is shown for a refused edit");
    assert_eq!(fs::read(&path).unwrap(), before, "{what}: input changed");
    assert_eq!(listing(dir.path()), listed, "{what}: a file was left");
    r
}

// ---- Right tool for the right file ----

#[test]
fn containerd_commands_refuse_a_crio_config_and_name_patch_crio_conf() {
    for fixture_rel in ["wrong-file/crio.conf", "wrong-file/crio-drop-in.conf"] {
        for args in [
            &["enable-nri", "--dry-run"][..],
            &["enable-nri", "--in-place"],
            &["enable-nri", "--check"],
            &["add-oci-hook", "--in-place"],
            &["add-oci-hook", "--dry-run"],
            &["enable-nri", "--drop-in", "conf.d/99-tetragon.toml"],
        ] {
            let mut argv = vec!["patch-containerd-conf", "--config-file", "crio.conf"];
            argv.extend_from_slice(args);
            let r = refused(fixture_rel, "crio.conf", &argv);
            assert!(
                r.stderr.contains("`crio` is cri-o's table"),
                "{argv:?}: {}",
                r.stderr
            );
            assert!(r.help().contains("patch-crio-conf enable-annotations"));
        }
    }
}

#[test]
fn crio_command_refuses_a_containerd_config_and_names_patch_containerd_conf() {
    for fixture_rel in [
        "containerd/containerd-1.7.24-config-default-v2.toml",
        "containerd/containerd-2.1.9-config-default-v3.toml",
        "containerd/version-1-short-names.toml",
    ] {
        for mode in ["--dry-run", "--in-place"] {
            let r = refused(
                fixture_rel,
                "config.toml",
                &[
                    "patch-crio-conf",
                    "enable-annotations",
                    "--annotations",
                    "a",
                    "--config-file",
                    "config.toml",
                    mode,
                ],
            );
            assert!(
                r.stderr
                    .contains("this is a containerd config, not cri-o's"),
                "{fixture_rel}: {}",
                r.stderr
            );
            assert!(r.help().contains("patch-containerd-conf enable-nri"));
        }
    }
}

#[test]
fn both_commands_refuse_podmans_containers_conf() {
    let containerd = refused(
        "wrong-file/containers.conf",
        "containers.conf",
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "containers.conf",
            "--in-place",
        ],
    );
    assert!(containerd.stderr.contains("podman's `containers.conf`"));
    assert!(containerd.help().contains("podman needs no patch"));
    let crio = refused(
        "wrong-file/containers.conf",
        "containers.conf",
        &[
            "patch-crio-conf",
            "enable-annotations",
            "--annotations",
            "a",
            "--config-file",
            "containers.conf",
            "--in-place",
        ],
    );
    assert!(crio.stderr.contains("podman's `containers.conf`"));
    assert!(crio.help().contains("podman needs no patch"));
}

#[test]
fn a_hook_file_or_a_runtime_spec_as_config_file_is_refused_with_where_it_belongs() {
    let commands: [&[&str]; 3] = [
        &["patch-containerd-conf", "enable-nri"],
        &["patch-containerd-conf", "add-oci-hook"],
        &[
            "patch-crio-conf",
            "enable-annotations",
            "--annotations",
            "a",
        ],
    ];
    for command in commands {
        for (fixture_rel, message, help) in [
            (
                "wrong-file/hook.json",
                "is an OCI hook file (hooks.d JSON), not a runtime's TOML config",
                "hook files are written by `install --interface oci-hooks`",
            ),
            (
                "wrong-file/base-spec.json",
                "is an OCI runtime spec (JSON with `ociVersion`)",
                "--runtime-spec file.json`",
            ),
        ] {
            let mut argv = command.to_vec();
            argv.extend(["--config-file", "file.json", "--in-place"]);
            let r = refused(fixture_rel, "file.json", &argv);
            assert!(r.stderr.contains(message), "{argv:?}: {}", r.stderr);
            assert!(r.help().contains(help), "{argv:?}: {}", r.stderr);
            assert!(
                r.help().contains("/etc/containerd/config.toml"),
                "{}",
                r.stderr
            );
        }
    }
}

/// No false positive: every config of ours that is not an error case, and an empty file, is
/// taken by its own command (the corpus test does the same over `../shared/fixtures`).
#[test]
fn real_and_empty_configs_are_not_taken_for_another_runtimes() {
    let files = |dir: &str| {
        let mut v: Vec<PathBuf> = fs::read_dir(fixture(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                p.is_file() && !name.starts_with("error-")
            })
            .collect();
        v.sort();
        v
    };
    let containerd = files("containerd");
    assert!(containerd.len() > 10);
    for file in containerd.iter().chain(files("k3s").iter()) {
        for action in ["enable-nri", "add-oci-hook"] {
            let dir = file.parent().unwrap();
            let r = run_in(
                dir,
                &[
                    "patch-containerd-conf",
                    action,
                    "--config-file",
                    file.to_str().unwrap(),
                    "--dry-run",
                    "--force",
                ],
            );
            assert_eq!(r.code, 0, "{action} on {}: {}", file.display(), r.stderr);
        }
    }
    let crio = files("crio");
    assert!(!crio.is_empty());
    for file in &crio {
        let r = run_in(
            file.parent().unwrap(),
            &[
                "patch-crio-conf",
                "enable-annotations",
                "--annotations",
                "a",
                "--config-file",
                file.to_str().unwrap(),
                "--dry-run",
            ],
        );
        assert_eq!(r.code, 0, "{}: {}", file.display(), r.stderr);
    }
    // An empty file is containerd's version 1 config, and a cri-o file without runtimes.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("empty.toml"), "").unwrap();
    let r = run_in(
        dir.path(),
        &[
            "patch-crio-conf",
            "enable-annotations",
            "--annotations",
            "a",
            "--config-file",
            "empty.toml",
        ],
    );
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("has no runtime table"), "{}", r.stderr);
    assert!(!r.stderr.contains("containerd"), "{}", r.stderr);
}

/// Real-world shapes near the line between the runtimes (tests/fixtures/lookalike/): only the
/// CRI plugin table, version 1's `[plugins.cri]`, a runtime handler named `crio`, no `version`
/// nor `plugins`, dotted keys, BOM and CRLF, comments only; cri-o drop-ins with only a runtime
/// table. Refusing one of these would take the tool away from a real node.
#[test]
fn lookalike_configs_are_patched_by_their_own_command() {
    let dir = fixture("lookalike");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (containerd, crio): (Vec<_>, Vec<_>) = files.iter().partition(|p| {
        p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("containerd-")
    });
    assert!(containerd.len() >= 7 && crio.len() >= 2, "{files:?}");
    let tmp = tempfile::tempdir().unwrap();
    for file in containerd {
        let before = fs::read(file).unwrap();
        for action in [&["enable-nri"][..], &["add-oci-hook"]] {
            let mut args = vec!["patch-containerd-conf"];
            args.extend_from_slice(action);
            args.extend(["--config-file", file.to_str().unwrap(), "--dry-run"]);
            let r = run_in(tmp.path(), &args);
            assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
            assert!(!r.stderr.contains("cri-o"), "{args:?}: {}", r.stderr);
        }
        assert_eq!(fs::read(file).unwrap(), before);
    }
    for file in crio {
        let r = run_in(
            tmp.path(),
            &[
                "patch-crio-conf",
                "enable-annotations",
                "--annotations",
                "a",
                "--config-file",
                file.to_str().unwrap(),
                "--dry-run",
            ],
        );
        assert_eq!(r.code, 0, "{}: {}", file.display(), r.stderr);
        assert!(r.stdout.contains("+allowed_annotations"), "{}", r.stdout);
    }
    assert!(listing(tmp.path()).is_empty());
}

// ---- A `help:` on every error with a fix ----

#[test]
fn a_missing_config_gets_a_help_that_says_what_the_runtime_does_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let listed = listing(dir.path());
    for (args, want) in [
        (
            &[
                "patch-containerd-conf",
                "enable-nri",
                "--config-file",
                "config.toml",
            ][..],
            "containerd 2.x runs without a config file, with NRI enabled",
        ),
        (
            &[
                "patch-containerd-conf",
                "enable-nri",
                "--config-file",
                "config.toml",
            ],
            "re-run with --create",
        ),
        (
            &[
                "patch-containerd-conf",
                "add-oci-hook",
                "--config-file",
                "config.toml",
            ],
            "create it with `containerd config default > config.toml`",
        ),
        (
            &[
                "patch-crio-conf",
                "enable-annotations",
                "--annotations",
                "a",
                "--config-file",
                "crio.conf",
            ],
            "pass the file that defines `[crio.runtime.runtimes.NAME]`",
        ),
    ] {
        let r = run_in(dir.path(), args);
        assert_eq!(r.code, 2, "{args:?}");
        assert!(
            r.stderr.starts_with("error: failed to read `"),
            "{}",
            r.stderr
        );
        assert!(r.help().contains(want), "{args:?}: {}", r.stderr);
    }
    assert_eq!(listing(dir.path()), listed);
}

#[test]
fn create_starts_a_missing_config_from_the_version_its_release_reads() {
    let dir = tempfile::tempdir().unwrap();
    let create = |release: &str, mode: &str| {
        run_in(
            dir.path(),
            &[
                "patch-containerd-conf",
                "enable-nri",
                "--config-file",
                "config.toml",
                "--create",
                "--containerd-version",
                release,
                mode,
            ],
        )
    };
    // containerd 2.x: version 3, where NRI is on by default: nothing to write, no file.
    let r = create("2.1", "--in-place");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("empty `version = 3` config"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("NRI is enabled by default"),
        "{}",
        r.stderr
    );
    assert!(listing(dir.path()).is_empty());
    // containerd 1.7: version 2 and the NRI table; --dry-run shows it and writes nothing,
    // --check says a change is pending (exit 1) and writes nothing.
    let r = create("1.7", "--dry-run");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("+version = 2\n"), "{}", r.stdout);
    assert!(listing(dir.path()).is_empty());
    let r = create("1.7", "--check");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(listing(dir.path()).is_empty());
    let r = create("1.7", "--in-place");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let written = fs::read_to_string(dir.path().join("config.toml")).unwrap();
    assert!(
        written.starts_with(
            "version = 2\n\n[plugins.\"io.containerd.nri.v1.nri\"]\ndisable = false\n"
        ),
        "{written}"
    );
    // Once it exists, --create changes nothing about how it is read.
    let r = create("1.7", "--in-place");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("needs no change"), "{}", r.stderr);
    assert_eq!(
        fs::read_to_string(dir.path().join("config.toml")).unwrap(),
        written
    );
    // Without a release to go by, it asks for one.
    let other = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--create",
            "--in-place",
        ])
        .current_dir(other.path())
        .env("PATH", other.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.ends_with("help: pass the release that reads it, e.g. `--containerd-version 2.1` (version 3) or `--containerd-version 1.7` (version 2)\n"),
        "{stderr}"
    );
    assert!(listing(other.path()).is_empty());
}

/// `--create` plans on a config that is not there; by the time it writes, another user (who may
/// write the directory) or a package install may have put something at that name.
#[test]
fn create_never_writes_through_or_over_what_appears_at_the_path_meanwhile() {
    use rthooks::patch::{Output, plan_new_file};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // An empty file elsewhere: an in-place edit expecting "nothing" would take it as the
    // config and fill it.
    let victim = dir.path().join("victim");
    fs::write(&victim, "").unwrap();
    let theirs = "version = 2\n# theirs\n";
    for planted in [
        "symlink to an empty file",
        "dangling symlink",
        "regular file",
    ] {
        let (plan, _) = plan_new_file(
            &config,
            "version = 2\n",
            &Output::InPlace,
            rthooks::containerd::enable_nri,
        )
        .unwrap();
        match planted {
            "symlink to an empty file" => std::os::unix::fs::symlink(&victim, &config).unwrap(),
            "dangling symlink" => {
                std::os::unix::fs::symlink(dir.path().join("nowhere"), &config).unwrap()
            }
            _ => fs::write(&config, theirs).unwrap(),
        }
        let err = format!("{:#}", plan.apply().unwrap_err());
        assert!(
            err.contains("changed while we were editing it"),
            "{planted}: {err}"
        );
        assert_eq!(
            fs::read(&victim).unwrap(),
            b"",
            "{planted}: written through"
        );
        assert!(!dir.path().join("nowhere").exists(), "{planted}");
        if planted == "regular file" {
            assert_eq!(fs::read_to_string(&config).unwrap(), theirs);
        } else {
            assert!(
                fs::symlink_metadata(&config).unwrap().is_symlink(),
                "{planted}"
            );
        }
        fs::remove_file(&config).unwrap();
        assert_eq!(
            listing(dir.path()),
            ["victim"],
            "{planted}: a file was left"
        );
    }
    // With nothing planted, the file is created, mode 0644 whatever the umask.
    let (plan, _) = plan_new_file(
        &config,
        "version = 2\n",
        &Output::InPlace,
        rthooks::containerd::enable_nri,
    )
    .unwrap();
    plan.apply().unwrap();
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(&config).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o644);
}

/// A config path that is a symlink to nothing is said to be one, in both commands: `--create`
/// does not create through it, and its help does not send the user back to `--create`.
#[test]
fn a_dangling_symlink_as_config_is_named_and_create_does_not_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("nowhere.toml", dir.path().join("config.toml")).unwrap();
    for args in [
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--create",
            "--containerd-version",
            "1.7",
            "--in-place",
        ][..],
        &["patch-containerd-conf", "enable-nri", "--in-place"],
        &[
            "patch-crio-conf",
            "enable-annotations",
            "--annotations",
            "a",
            "--in-place",
        ],
    ] {
        let mut argv = args.to_vec();
        argv.extend(["--config-file", "config.toml"]);
        let r = run_in(dir.path(), &argv);
        assert_eq!(r.code, 2, "{argv:?}: {}", r.stderr);
        assert!(
            r.stderr
                .starts_with("error: failed to read `config.toml`: it is a symlink to `nowhere.toml`, which does not exist"),
            "{argv:?}: {}",
            r.stderr
        );
        assert!(r.help().contains("create the file the link points to"));
        assert!(!r.help().contains("re-run with --create"));
        assert_eq!(listing(dir.path()), ["config.toml"], "{argv:?}");
    }
}

#[test]
fn toml_syntax_errors_get_a_help_for_what_is_usually_wrong_there() {
    for (content, help) in [
        (
            "version = 2\n[plugins\n",
            "line 2: close the table header with `]`",
        ),
        (
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri]\n",
            "line 2: a quoted key on this line is not closed",
        ),
        (
            "version = 2\nroot = \"/var/lib\n",
            "line 2: close the string with `\"`",
        ),
        (
            "version = 2\nroot = '/var/lib\n",
            "line 2: close the string with `'`",
        ),
        (
            "version = 2\nroot \"/x\"\n",
            "line 2: put `=` between the key and its value",
        ),
        ("version = 2\nroot = /x\n", "line 2: quote the value"),
        (
            "version = 2\nversion = 3\n",
            "line 2: `version` is already set in this table",
        ),
        (
            "version = 2\n[a]\nx = 1\n[a]\ny = 2\n",
            "line 4: `[a]` is defined twice",
        ),
        (
            "version = 2\nx = [1, 2\n",
            "line 2: close the array with `]`",
        ),
        (
            "version = 2\nx = True\n",
            "line 2: booleans are `true` or `false`",
        ),
        (
            "version = 2\nx = \"C:\\q\"\n",
            "line 2: a `\\` in a \"...\" string starts an escape",
        ),
        (
            "version = 2\nx = 1 y = 2\n",
            "line 2: one `key = value` per line",
        ),
        ("version = 2\nx == 1\n", "line 2: write one `=`"),
        // Each of these got a help that was wrong at that spot.
        (
            "version = 2\n[[plugins]\n",
            "line 2: close the header with `]]`",
        ),
        (
            "version = 2\nx = \"\"\"a\n",
            "line 3: close the multi-line string with `\"\"\"`",
        ),
        (
            "version = 2\nx = '''a\n",
            "line 3: close the multi-line string with `'''`",
        ),
        (
            "version = 2\nx = \"a\" # c\ny = # d\n",
            "line 3: the key has no value",
        ),
        (
            "version = 2\nx = \"\\u12\"\n",
            "line 2: a `\\u` escape takes 4",
        ),
        ("version = 2\nx = [1,,2]\n", "line 2: remove the extra `,`"),
        ("version = 2\n= 1\n", "line 2: a key is missing before `=`"),
        (
            "version = 2\nx = 2024-13-01\n",
            "line 2: this value is not a valid number, date or time",
        ),
        (
            "version = 2\nx = 1.\n",
            "line 2: this value is not a valid number, date or time",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.toml"), content).unwrap();
        let r = run_in(
            dir.path(),
            &[
                "patch-containerd-conf",
                "enable-nri",
                "--config-file",
                "config.toml",
                "--in-place",
            ],
        );
        assert_eq!(r.code, 2, "{content:?}");
        assert!(
            r.stderr.contains("failed to parse `config.toml` as TOML"),
            "{}",
            r.stderr
        );
        assert!(
            r.help().starts_with(&format!("help: {help}")),
            "{content:?}: {}",
            r.stderr
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("config.toml")).unwrap(),
            content
        );
        assert_eq!(listing(dir.path()), ["config.toml"]);
    }
}

/// A syntax error in any TOML file a command reads gets the same help, not only in the file
/// being patched: a containerd `imports` file, a cri-o drop-in read by `install`.
#[test]
fn toml_syntax_errors_get_a_help_in_every_file_any_command_reads() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(
        d.join("config.toml"),
        format!(
            "version = 2\nimports = [\"{}\"]\n",
            d.join("extra.toml").display()
        ),
    )
    .unwrap();
    fs::write(d.join("extra.toml"), "[plugins\n").unwrap();
    fs::create_dir(d.join("crio.conf.d")).unwrap();
    fs::write(d.join("crio.conf"), "[crio.runtime.runtimes.runc]\n").unwrap();
    fs::write(d.join("crio.conf.d/10-x.conf"), "[crio.runtime]\nx = \n").unwrap();
    let listed = listing(d);
    let hooks = d.join("hooks");
    for (args, file, help) in [
        (
            vec![
                "patch-containerd-conf",
                "enable-nri",
                "--config-file",
                "config.toml",
                "--containerd-version",
                "1.7",
                "--in-place",
            ],
            "extra.toml",
            "help: line 1: close the table header with `]`",
        ),
        (
            vec![
                "install",
                "--interface",
                "oci-hooks",
                "--crio-config",
                "crio.conf",
                "--local-install-dir",
                "inst",
                "--host-install-dir",
                "/opt/x",
                "--oci-hooks.local-dir",
                hooks.to_str().unwrap(),
                "--oci-hooks.host-dir",
                hooks.to_str().unwrap(),
            ],
            "10-x.conf",
            "help: line 2: the key has no value",
        ),
    ] {
        let r = run_in(d, &args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(file), "{args:?}: {}", r.stderr);
        assert!(r.help().starts_with(help), "{args:?}: {}", r.stderr);
        assert_eq!(listing(d), listed, "{args:?}");
    }
}

#[test]
fn cel_and_regex_errors_in_hook_args_get_a_help() {
    let hook = support::hook_bin();
    let dir = tempfile::tempdir().unwrap();
    let install = |hook_args: &[&str]| {
        let mut argv = vec![
            "install",
            "--local-binary",
            hook,
            "--local-install-dir",
            "install",
            "--host-install-dir",
            "/opt/tetragon",
            "--oci-hooks.local-dir",
            "hooks",
            "hook-args",
        ];
        argv.extend_from_slice(hook_args);
        run_in(dir.path(), &argv)
    };
    let print_config = |hook_args: &[&str]| {
        let mut argv = vec!["print-config", "--binary", hook, "--args"];
        argv.extend_from_slice(hook_args);
        run_in(dir.path(), &argv)
    };
    for (args, message, help) in [
        (
            &["--fail-cel-expr", "annotations["][..],
            "invalid `--fail-cel-expr`",
            "help: fix the expression at the column shown: it is CEL and must give a bool",
        ),
        (
            &["--fail-allow-namespaces-regex", "kube-(system"],
            "invalid `--fail-allow-namespaces-regex` `kube-(system`",
            "help: the value is a regex",
        ),
    ] {
        for r in [install(args), print_config(args)] {
            assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
            assert_eq!(r.stdout, "");
            assert!(r.stderr.contains(message), "{}", r.stderr);
            assert!(r.help().starts_with(help), "{}", r.stderr);
        }
    }
    assert!(listing(dir.path()).is_empty());
}

#[test]
fn permission_denied_gets_a_help() {
    require!(
        support::skip::is_root().then_some(()),
        "not root: cannot run the tool as another user"
    );
    let (dir, path) = copy_of(
        "containerd/nri-disabled-with-comment-v2.toml",
        "config.toml",
    );
    let before = fs::read(&path).unwrap();
    // The config readable by all, its directory writable only by root: `nobody` may read it
    // and cannot replace it.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["patch-containerd-conf", "enable-nri", "--config-file"])
        .arg(&path)
        .arg("--in-place")
        .env("TMPDIR", "/tmp")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .starts_with("help: run it as root"),
        "{stderr}"
    );
    assert_eq!(fs::read(&path).unwrap(), before);
}

/// `install` and `uninstall` get the same help for a permission error as the patch commands.
#[test]
fn permission_denied_gets_a_help_in_install_and_uninstall_too() {
    require!(
        support::skip::is_root().then_some(()),
        "not root: cannot run the tool as another user"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(d.join("hooks")).unwrap();
    fs::write(d.join("hooks/tetragon-oci-hook.json"), "{}").unwrap();
    fs::write(d.join("tetragon-oci-hook"), "bin").unwrap();
    let listed = listing(d);
    let hooks = d.join("hooks");
    let hooks = hooks.to_str().unwrap();
    let d_str = d.to_str().unwrap();
    for args in [
        &[
            "uninstall",
            "--interface",
            "oci-hooks",
            "--local-install-dir",
            d_str,
            "--oci-hooks.local-dir",
            hooks,
        ][..],
        &[
            "install",
            "--interface",
            "oci-hooks",
            "--local-binary",
            "/bin/true",
            "--local-install-dir",
            d_str,
            "--host-install-dir",
            "/opt/x",
            "--oci-hooks.local-dir",
            hooks,
            "--oci-hooks.host-dir",
            hooks,
        ],
    ] {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .args(args)
            .current_dir("/")
            .env("TMPDIR", "/tmp")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("Permission denied"), "{args:?}: {stderr}");
        let help = stderr.lines().last().unwrap();
        assert!(
            help.starts_with("help: run it as root"),
            "{args:?}: {stderr}"
        );
        assert_eq!(listing(d), listed, "{args:?}");
    }
}

/// Root refused (an immutable config): the help does not tell root to run as root.
#[test]
fn root_refused_gets_a_help_that_names_the_immutable_flag() {
    require!(
        support::skip::is_root().then_some(()),
        "not root: cannot make a file immutable"
    );
    let (dir, path) = copy_of(
        "containerd/nri-disabled-with-comment-v2.toml",
        "config.toml",
    );
    let before = fs::read(&path).unwrap();
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .arg(&path)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    struct Mutable<'a>(&'a dyn Fn(&str) -> bool);
    impl Drop for Mutable<'_> {
        fn drop(&mut self) {
            (self.0)("-i");
        }
    }
    let _mutable = Mutable(&chattr);
    require!(
        chattr("+i").then_some(()),
        "chattr +i not supported here (no chattr, or the file system has no immutable flag)"
    );
    let r = run_in(
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
    assert!(r.stderr.contains("Operation not permitted"), "{}", r.stderr);
    assert!(
        r.help().starts_with("help: root itself was refused") && r.help().contains("chattr -i"),
        "{}",
        r.stderr
    );
    chattr("-i");
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(listing(dir.path()), ["config.toml"]);
}

#[test]
fn read_only_file_system_gets_a_help() {
    require!(
        support::skip::is_root().then_some(()),
        "not root: cannot mount a read-only bind mount"
    );
    let (dir, path) = copy_of(
        "containerd/nri-disabled-with-comment-v2.toml",
        "config.toml",
    );
    let before = fs::read(&path).unwrap();
    let d = dir.path().to_str().unwrap();
    let mount = |args: &[&str]| Command::new("mount").args(args).status().unwrap().success();
    assert!(mount(&["--bind", d, d]));
    struct Unmount<'a>(&'a str);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(d);
    assert!(mount(&["-o", "remount,ro,bind", d]));
    let r = run_in(
        Path::new("/"),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            path.to_str().unwrap(),
            "--in-place",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("Read-only file system"), "{}", r.stderr);
    assert!(
        r.help()
            .starts_with("help: that file system is mounted read-only"),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read(&path).unwrap(), before);
}

// ---- Where the output went ----

#[test]
fn without_in_place_the_config_is_unchanged_and_the_note_says_how_to_change_it() {
    let (dir, path) = copy_of(
        "containerd/nri-disabled-with-comment-v2.toml",
        "config.toml",
    );
    let before = fs::read(&path).unwrap();
    let r = run_in(
        dir.path(),
        &[
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(fs::read(&path).unwrap(), before);
    let lines: Vec<&str> = r.stderr.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with("wrote patched config to `"))
        .unwrap();
    assert_eq!(
        lines[at + 1],
        "note: `config.toml` itself is unchanged; to change it, re-run with --in-place (or \
         --output config.toml)"
    );
    // The same for cri-o, whose flag is --output-file; a dry run says it before the real run.
    let (dir, path) = copy_of("crio/runtimes-mixed.conf", "crio.conf");
    let before = fs::read(&path).unwrap();
    let base = [
        "patch-crio-conf",
        "enable-annotations",
        "--annotations",
        "x",
        "--config-file",
        "crio.conf",
    ];
    let r = run_in(dir.path(), &base);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "note: `crio.conf` itself is unchanged; to change it, re-run with --in-place (or \
             --output-file crio.conf)"
        ),
        "{}",
        r.stderr
    );
    let r = run_in(dir.path(), &[&base[..], &["--dry-run"]].concat());
    assert!(
        r.stderr.contains(
            "note: without --dry-run this writes the result to a new temporary file and leaves \
             `crio.conf` unchanged; add --in-place to change it"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read(&path).unwrap(), before);
    // --in-place: no such note.
    let r = run_in(dir.path(), &[&base[..], &["--in-place"]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("unchanged"), "{}", r.stderr);
    assert_ne!(fs::read(&path).unwrap(), before);
}

#[test]
fn each_patch_commands_help_says_where_the_result_goes() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["patch-containerd-conf", "--help"][..],
        &["patch-containerd-conf", "-h"],
        &["patch-containerd-conf", "enable-nri", "--help"],
        &["patch-containerd-conf", "add-oci-hook", "-h"],
        &["patch-crio-conf", "--help"],
        &["patch-crio-conf", "enable-annotations", "--help"],
    ] {
        let r = run_in(dir.path(), args);
        assert_eq!(r.code, 0, "{args:?}");
        let text = r.stdout.replace('\n', " ");
        assert!(
            text.contains("the patched config is written to a new temporary file")
                && text.contains("the config file itself is left unchanged")
                && text.contains("Pass --in-place to change the config itself"),
            "{args:?}: {}",
            r.stdout
        );
        // Each names only flags it has: cri-o's output flag is `--output-file`.
        if args[0] == "patch-crio-conf" {
            let bare = text.matches("--output").count()
                - text.matches("--output-file").count()
                - text.matches("--output-format").count();
            assert_eq!(bare, 0, "{args:?} names `--output`: {}", r.stdout);
        }
    }
}

/// `add-oci-hook --create` would start from a file with no runc runtime, so nothing to point at
/// the spec: refused up front (the help names `containerd config default`), nothing written.
#[test]
fn create_with_add_oci_hook_is_refused_with_the_default_config_as_fix() {
    let dir = tempfile::tempdir().unwrap();
    for release in ["1.7", "2.1"] {
        let r = run_in(
            dir.path(),
            &[
                "patch-containerd-conf",
                "add-oci-hook",
                "--runtime-spec",
                "/etc/containerd/base-spec.json",
                "--config-file",
                "config.toml",
                "--create",
                "--containerd-version",
                release,
                "--in-place",
            ],
        );
        assert_eq!(r.code, 2, "{release}: {}", r.stderr);
        assert!(r.stderr.contains("has no runc runtime"), "{}", r.stderr);
        assert!(
            r.help()
                .contains("`containerd config default > config.toml`"),
            "{}",
            r.stderr
        );
        assert!(listing(dir.path()).is_empty());
    }
}

// ---- print-config checks the hook's arguments as install does ----

#[test]
fn print_config_refuses_the_hook_args_install_refuses_with_the_same_error() {
    let dir = tempfile::tempdir().unwrap();
    let typo = ["--fail-allow-namespace", "x"];
    let printed = run_in(
        dir.path(),
        &[&["print-config", "--args"][..], &typo].concat(),
    );
    let installed = run_in(
        dir.path(),
        &[
            &[
                "install",
                "--local-install-dir",
                "i",
                "--host-install-dir",
                "/opt/tetragon",
                "--dry-run",
                "hook-args",
            ][..],
            &typo,
        ]
        .concat(),
    );
    for r in [&printed, &installed] {
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert_eq!(r.stdout, "");
        assert!(
            r.stderr.contains("unknown flag `--fail-allow-namespace`"),
            "{}",
            r.stderr
        );
    }
    assert_eq!(printed.stderr, installed.stderr);
    // What install accepts, print-config prints.
    let ok = run_in(
        dir.path(),
        &[
            "print-config",
            "--binary",
            "/opt/tetragon/tetragon-oci-hook",
            "--args",
            "--fail-allow-namespaces",
            "x",
        ],
    );
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(
        ok.stdout.contains("\"--fail-allow-namespaces\""),
        "{}",
        ok.stdout
    );
}

// ---- Help texts ----

#[test]
fn install_help_shows_hook_args_as_the_rest_of_the_line_for_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--help", "-h"] {
        let r = run_in(dir.path(), &["install", flag]);
        assert_eq!(r.code, 0);
        assert!(!r.stdout.contains("[COMMAND]"), "{}", r.stdout);
        assert!(!r.stdout.contains("Commands:"), "{}", r.stdout);
        assert!(
            r.stdout
                .contains("--host-install-dir <DIR> [hook-args <HOOK-FLAGS>...]"),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout
                .contains("hook-args  The rest of the line is the hook's own flags"),
            "{}",
            r.stdout
        );
    }
}

#[test]
fn install_hook_args_help_is_shown_on_every_line_and_never_installs() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["install", "hook-args", "--help"][..],
        &["install", "hook-args", "-h"],
        &["install", "--local-install-dir", "i", "hook-args", "--help"],
    ] {
        let r = run_in(dir.path(), args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr, "");
        assert!(
            r.stdout
                .starts_with("Everything after `hook-args` is the hook's own command line"),
            "{}",
            r.stdout
        );
        for flag in [
            "--grpc-address ADDR",
            "--fail-allow-namespaces NAMES",
            "--fail-cel-expr EXPR",
        ] {
            assert!(r.stdout.contains(flag), "{flag}: {}", r.stdout);
        }
        assert!(r.stdout.contains(&Level::NAMES.join(", ")), "{}", r.stdout);
        // No flag listed that install refuses in hook-args.
        assert!(
            !r.stdout
                .lines()
                .any(|l| l.trim_start().starts_with("--just-print-config")),
            "{}",
            r.stdout
        );
        assert!(
            r.stdout
                .contains("`--just-print-config`, `--help` and `--version` are refused here"),
            "{}",
            r.stdout
        );
    }
    assert!(listing(dir.path()).is_empty());
    // On a complete install line the same help is shown, and the install fails (a chart whose
    // values end in `--help` must not quietly install nothing); `--help` is never written into
    // a hook file (it would make the hook a no-op).
    fs::create_dir(dir.path().join("i")).unwrap();
    for flag in ["--help", "-h"] {
        let r = run_in(
            dir.path(),
            &[
                "install",
                "--local-install-dir",
                "i",
                "--host-install-dir",
                "/h",
                "--local-binary",
                "/bin/true",
                "--oci-hooks.local-dir",
                "i",
                "--oci-hooks.host-dir",
                "/h",
                "hook-args",
                flag,
            ],
        );
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(
            r.stdout
                .starts_with("Everything after `hook-args` is the hook's own command line"),
            "{}",
            r.stdout
        );
        assert!(
            r.stderr.contains(&format!(
                "`{flag}` after `hook-args` on a complete install line: its help is shown above, \
                 nothing was installed"
            )),
            "{}",
            r.stderr
        );
        assert!(r.help().contains("remove it to install"), "{}", r.stderr);
        assert_eq!(listing(dir.path()), ["i"]);
    }
    // Another mistake on the line is reported as such (clap's error), not as a complete line.
    let r = run_in(
        dir.path(),
        &["install", "--no-such-flag", "hook-args", "--help"],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("unexpected argument '--no-such-flag'"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("complete install line"), "{}", r.stderr);
    assert_eq!(listing(dir.path()), ["i"]);
    let r = run_in(
        dir.path(),
        &[
            "install",
            "--local-install-dir",
            "i",
            "--host-install-dir",
            "/h",
            "--dry-run",
            "hook-args",
            "--grpc-timeout",
            "5s",
            "--help",
        ],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn the_setup_tool_and_the_hook_list_the_same_log_levels() {
    let dir = tempfile::tempdir().unwrap();
    let setup = run_in(dir.path(), &["install", "--help"]);
    let names = Level::NAMES.join(", ");
    assert!(
        setup
            .stdout
            .contains(&format!("[possible values: {names}]")),
        "{}",
        setup.stdout
    );
    let hook = Command::new(support::hook_bin())
        .arg("--help")
        .output()
        .unwrap();
    let usage = String::from_utf8_lossy(&hook.stdout);
    let line = usage
        .lines()
        .find(|l| l.trim_start().starts_with("--log-level"))
        .unwrap_or_else(|| panic!("no --log-level in the hook's help:\n{usage}"));
    assert!(line.contains(&names), "{line}");
    // And the hook accepts each of them.
    for name in Level::NAMES {
        let out = Command::new(support::hook_bin())
            .args([
                "--log-level",
                name,
                "--log-fname",
                "/dev/null",
                "--just-print-config",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
