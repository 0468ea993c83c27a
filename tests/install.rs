//! `install`, `uninstall` and `print-config` from the command line, and the hook file model
//! against real hooks.d files. The podman end-to-end run is in `tests/podman.rs`.

// Helpers outside `#[test]` functions panic on a failed setup step, as a test body does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::io::BufReader;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use rthooks::hook_invocation::HookInvocation;
use rthooks::hook_json::{self, HookFile};
use support::child::{self, ChildGuard};
use support::cmd::{bin, listing, run, transcript, wait_for_line};
use support::skip::{is_root, skip};

const HOOK_BYTES: &[u8] = b"#!/bin/sh\nexit 0\n";

/// A node in a temp dir: `src/tetragon-oci-hook` (the binary to install), `hostInstall/` and
/// `hostHooks/` (the dirs as the chart mounts them).
struct Node {
    tmp: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let n = Node { tmp };
        fs::create_dir_all(n.path("src")).unwrap();
        fs::create_dir_all(n.path("hostInstall")).unwrap();
        fs::create_dir_all(n.path("hostHooks")).unwrap();
        fs::write(n.source(), HOOK_BYTES).unwrap();
        n
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn source(&self) -> PathBuf {
        self.path("src/tetragon-oci-hook")
    }

    fn binary(&self) -> PathBuf {
        self.path("hostInstall/tetragon-oci-hook")
    }

    fn hook_file(&self) -> PathBuf {
        self.path("hostHooks/tetragon-oci-hook.json")
    }

    /// The Helm chart's command line, with `--local-binary` and this node's local dirs.
    fn helm_args(&self) -> Vec<String> {
        vec![
            "install".into(),
            "--interface=oci-hooks".into(),
            format!("--local-binary={}", self.source().display()),
            format!("--local-install-dir={}", self.path("hostInstall").display()),
            "--host-install-dir=/opt/tetragon".into(),
            format!("--oci-hooks.local-dir={}", self.path("hostHooks").display()),
            "hook-args".into(),
            "--grpc-address=unix:///var/run/tetragon/tetragon.sock".into(),
            "--fail-allow-namespaces".into(),
            "kube-system,ns1".into(),
        ]
    }

    fn install(&self, extra_before_hook_args: &[&str]) -> Output {
        let mut args = self.helm_args();
        let at = args.iter().position(|a| a == "hook-args").unwrap();
        for (i, e) in extra_before_hook_args.iter().enumerate() {
            args.insert(at + i, (*e).to_owned());
        }
        bin().args(&args).output().unwrap()
    }

    fn uninstall_args(&self) -> Vec<String> {
        vec![
            "uninstall".into(),
            "--interface".into(),
            "oci-hooks".into(),
            "--local-install-dir".into(),
            self.path("hostInstall").display().to_string(),
            "--oci-hooks.local-dir".into(),
            self.path("hostHooks").display().to_string(),
        ]
    }

    fn t(&self, out: &Output) -> String {
        transcript(out, self.root())
    }

    /// Every file under the node and its content, to compare before and after a failed run.
    fn snapshot_files(&self) -> Vec<(String, Vec<u8>, u32)> {
        listing(self.root())
            .into_iter()
            .map(|rel| {
                let p = self.path(&rel);
                let meta = fs::metadata(&p).unwrap();
                let bytes = if meta.is_file() {
                    fs::read(&p).unwrap()
                } else {
                    Vec::new()
                };
                (rel, bytes, meta.mode())
            })
            .collect()
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn hook_args_of(file: &Path) -> Vec<String> {
    match hook_json::parse(&fs::read_to_string(file).unwrap()).unwrap() {
        HookFile::Current(h) => h.hook.args,
        HookFile::Legacy(l) => panic!("wrote a legacy file: {l:?}"),
    }
}

#[test]
fn install_helm_command_line_writes_binary_and_hook_file() {
    let node = Node::new();
    let out = node.install(&[]);
    insta::assert_snapshot!(node.t(&out), @r#"
    exit_code: 0
    ----- stdout -----
    --- a/[TMP]/hostHooks/tetragon-oci-hook.json
    +++ b/[TMP]/hostHooks/tetragon-oci-hook.json
    @@ -0,0 +1,22 @@
    +{
    +  "version": "1.0.0",
    +  "hook": {
    +    "path": "/opt/tetragon/tetragon-oci-hook",
    +    "args": [
    +      "/opt/tetragon/tetragon-oci-hook",
    +      "createRuntime",
    +      "--log-fname",
    +      "/opt/tetragon/tetragon-oci-hook.log",
    +      "--grpc-address=unix:///var/run/tetragon/tetragon.sock",
    +      "--fail-allow-namespaces",
    +      "kube-system,ns1"
    +    ],
    +    "timeout": 62
    +  },
    +  "when": {
    +    "always": true
    +  },
    +  "stages": [
    +    "createRuntime"
    +  ]
    +}
    ----- stderr -----
    copy `[TMP]/src/tetragon-oci-hook` to `[TMP]/hostInstall/tetragon-oci-hook` (sha256 306c6ca7407560340797866e077e053627ad409277d1b9da58106fce4cf717cb, 17 bytes, mode 0755)
    write `[TMP]/hostHooks/tetragon-oci-hook.json` (453 bytes, mode 0644)
    wrote `[TMP]/hostInstall/tetragon-oci-hook`
    wrote `[TMP]/hostHooks/tetragon-oci-hook.json`
    installed hook `[TMP]/hostHooks/tetragon-oci-hook.json` for binary `[TMP]/hostInstall/tetragon-oci-hook`
    "#);
    assert_eq!(fs::read(node.binary()).unwrap(), HOOK_BYTES);
    assert_eq!(mode(&node.binary()), 0o755);
    assert_eq!(mode(&node.hook_file()), 0o644);
    let text = fs::read_to_string(node.hook_file()).unwrap();
    assert!(text.ends_with("}\n"), "{text}");
    assert_eq!(
        listing(node.root()),
        [
            "hostHooks",
            "hostHooks/tetragon-oci-hook.json",
            "hostInstall",
            "hostInstall/tetragon-oci-hook",
            "src",
            "src/tetragon-oci-hook"
        ],
        "no temporary file may be left behind"
    );
}

#[test]
fn install_passes_hook_args_through_untouched() {
    let node = Node::new();
    let mut args = node.helm_args();
    args.truncate(args.iter().position(|a| a == "hook-args").unwrap() + 1);
    // Valid hook flags, some of which are also flags of this tool (`--log-level`), a regex
    // with a comma and a CEL expression with spaces and quotes.
    let tail = [
        "--log-level",
        "debug",
        "--grpc-address=unix:///run/t/agent.sock",
        "--fail-allow-namespaces-regex",
        "^ns-[a-z]{1,3}$",
        "--fail-cel-expr",
        "annotations[\"io.kubernetes.pod.namespace\"] == \"two words\"",
        "--grpc-timeout=2s",
    ];
    args.extend(tail.map(str::to_owned));
    let out = bin().args(&args).output().unwrap();
    assert!(out.status.success(), "{}", node.t(&out));
    let written = hook_args_of(&node.hook_file());
    assert_eq!(
        written[..4],
        [
            "/opt/tetragon/tetragon-oci-hook",
            "createRuntime",
            "--log-fname",
            "/opt/tetragon/tetragon-oci-hook.log"
        ]
    );
    assert_eq!(written[4..], tail);
}

/// A valid CEL expression passes the check by the real hook binary, and the install goes on.
#[test]
fn install_checks_cel_with_the_hook_being_installed() {
    let node = Node::new();
    let mut args = node.helm_args();
    args[2] = format!("--local-binary={}", support::hook_bin());
    args.extend(
        [
            "--fail-cel-expr",
            "annotations[\"io.kubernetes.pod.namespace\"] != \"ns1\"",
        ]
        .map(str::to_owned),
    );
    let out = bin().args(&args).output().unwrap();
    assert!(out.status.success(), "{}", node.t(&out));
    assert!(
        hook_args_of(&node.hook_file())
            .iter()
            .any(|a| a == "--fail-cel-expr")
    );
}

/// A hook binary that never answers the CEL check cannot stall the install (or a pre-launched
/// plugin's `Configure`): it is killed after the bound and the expression is left unchecked,
/// with a warning.
#[test]
fn install_is_not_stalled_by_a_hook_that_never_answers_the_cel_check() {
    let node = Node::new();
    fs::write(node.source(), b"#!/bin/sh\nexec sleep 60\n").unwrap();
    fs::set_permissions(node.source(), fs::Permissions::from_mode(0o755)).unwrap();
    let mut args = node.helm_args();
    args.extend(["--fail-cel-expr", "true"].map(str::to_owned));
    let start = std::time::Instant::now();
    let out = bin().args(&args).output().unwrap();
    let took = start.elapsed();
    assert!(out.status.success(), "{}", node.t(&out));
    assert!(
        took < std::time::Duration::from_secs(15),
        "install took {took:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("could not check the CEL expression with")
            && stderr.contains("did not answer within 5s")
            && stderr.contains("is not checked"),
        "{stderr}"
    );
    assert!(node.hook_file().exists());
}

/// Only the hook's `check-cel` answer counts as "valid": a binary that is not our hook (or an
/// older hook, which exits 0 for an unknown hook name) and exits 0 without the answer, or exits
/// 2 without it, leaves the expression unchecked with a warning; never silently accepted, never
/// refused for a reason that is not the expression's.
#[test]
fn install_warns_when_the_binary_gives_no_check_cel_answer() {
    for (script, status) in [
        ("#!/bin/sh\nexit 0\n", "exit status: 0"),
        ("#!/bin/sh\necho valid\nexit 0\n", "exit status: 0"),
        ("#!/bin/sh\necho oops >&2\nexit 2\n", "exit status: 2"),
    ] {
        let node = Node::new();
        fs::write(node.source(), script).unwrap();
        fs::set_permissions(node.source(), fs::Permissions::from_mode(0o755)).unwrap();
        let mut args = node.helm_args();
        args.extend(["--fail-cel-expr", "annotations["].map(str::to_owned));
        let out = bin().args(&args).output().unwrap();
        assert!(out.status.success(), "{script:?}: {}", node.t(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "could not check the CEL expression with `{}`",
                node.source().display()
            )) && stderr.contains(&format!(
                "it exited with {status} without `check-cel`'s answer"
            )) && stderr.contains("`--fail-cel-expr` is not checked"),
            "{script:?}: {stderr}"
        );
        assert!(node.hook_file().exists(), "{script:?}");
    }
}

/// `print-config` asks the same question and gets the same warning from a binary that is not
/// our hook; the real hook's answer passes without one.
#[test]
fn print_config_warns_when_the_binary_gives_no_check_cel_answer() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("tetragon-oci-hook");
    fs::write(&fake, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let run = |binary: &str| {
        bin()
            .args(["print-config", "--binary", binary, "--args"])
            .args(["--fail-cel-expr", "true"])
            .output()
            .unwrap()
    };
    let out = run(fake.to_str().unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("could not check the CEL expression with"),
        "{stderr}"
    );
    let out = run(support::hook_bin());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("could not check"), "{stderr}");
}

/// A typo in the hook's flags fails the install (one DaemonSet pod) instead of every container
/// on the node: nothing is written.
#[test]
fn install_rejects_invalid_hook_args_and_writes_nothing() {
    for bad in [
        &["--fail-allow-namespace", "kube-system"][..],
        &["--grpc-timeout", "soon"],
        &["--fail-allow-namespaces-regex", "(unclosed"],
        &["--fail-cel-expr", "annotations["],
    ] {
        let node = Node::new();
        let mut args = node.helm_args();
        args.truncate(args.iter().position(|a| a == "hook-args").unwrap() + 1);
        args.extend(bad.iter().map(|s| s.to_string()));
        // The real hook as the binary to install: it is what checks the CEL expression.
        args[2] = format!("--local-binary={}", support::hook_bin());
        let before = listing(node.root());
        let out = bin().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", node.t(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("invalid hook arguments"),
            "{bad:?}: {stderr}"
        );
        assert_eq!(
            listing(node.root()),
            before,
            "{bad:?}: something was written"
        );
    }
}

#[test]
fn install_without_hook_args_and_with_global_log_level() {
    let node = Node::new();
    let mut args = node.helm_args();
    args.truncate(args.iter().position(|a| a == "hook-args").unwrap());
    args.insert(0, "--log-level=error".into());
    let out = bin().args(&args).output().unwrap();
    // `--log-level error` keeps the output for errors and warnings only.
    insta::assert_snapshot!(node.t(&out), @r"
    exit_code: 0
    ----- stdout -----
    ----- stderr -----
    ");
    assert_eq!(hook_args_of(&node.hook_file()).len(), 4);
}

#[test]
fn install_is_idempotent_and_skips_an_identical_copy() {
    let node = Node::new();
    assert!(node.install(&[]).status.success());
    let inode = fs::metadata(node.binary()).unwrap().ino();
    let hook_inode = fs::metadata(node.hook_file()).unwrap().ino();
    let out = node.install(&[]);
    insta::assert_snapshot!(node.t(&out), @"
    exit_code: 0
    ----- stdout -----
    ----- stderr -----
    `[TMP]/hostInstall/tetragon-oci-hook` already holds `[TMP]/src/tetragon-oci-hook` (sha256 306c6ca7407560340797866e077e053627ad409277d1b9da58106fce4cf717cb, 17 bytes, mode 0755): copy skipped
    `[TMP]/hostHooks/tetragon-oci-hook.json` unchanged
    installed hook `[TMP]/hostHooks/tetragon-oci-hook.json` for binary `[TMP]/hostInstall/tetragon-oci-hook`
    ");
    assert_eq!(fs::metadata(node.binary()).unwrap().ino(), inode);
    assert_eq!(fs::metadata(node.hook_file()).unwrap().ino(), hook_inode);
}

#[test]
fn install_fixes_the_mode_of_an_identical_binary() {
    let node = Node::new();
    fs::write(node.binary(), HOOK_BYTES).unwrap();
    fs::set_permissions(node.binary(), fs::Permissions::from_mode(0o600)).unwrap();
    let out = node.install(&[]);
    assert!(
        node.t(&out).contains(
            "already holds `[TMP]/src/tetragon-oci-hook`: set its mode from 0600 to 0755"
        ),
        "{}",
        node.t(&out)
    );
    assert_eq!(mode(&node.binary()), 0o755);
}

#[test]
fn install_replaces_a_running_binary_without_text_file_busy() {
    let node = Node::new();
    // A real executable that keeps running while the new one is installed.
    let sleep = Path::new("/bin/sleep");
    let truebin = Path::new("/bin/true");
    if !sleep.exists() || !truebin.exists() {
        skip!("/bin/sleep or /bin/true missing");
    }
    fs::copy(sleep, node.source()).unwrap();
    assert!(node.install(&[]).status.success());
    let running = ChildGuard::new(Command::new(node.binary()).arg("30").spawn().unwrap());
    let old_inode = fs::metadata(node.binary()).unwrap().ino();

    fs::copy(truebin, node.source()).unwrap();
    let out = node.install(&[]);
    drop(running);
    assert!(out.status.success(), "{}", node.t(&out));
    assert_eq!(fs::read(node.binary()).unwrap(), fs::read(truebin).unwrap());
    assert_ne!(fs::metadata(node.binary()).unwrap().ino(), old_inode);
    assert!(
        node.t(&out).contains(", replacing sha256 "),
        "{}",
        node.t(&out)
    );
}

#[test]
fn install_dry_run_shows_diff_and_copy_and_writes_nothing() {
    let node = Node::new();
    // An older hook file is on disk: the dry run shows the diff against it.
    let old = hook_json::render(&hook_json::tetragon_hook(&HookInvocation::new(
        "/opt/tetragon/tetragon-oci-hook",
        vec!["--grpc-address=unix:///old.sock".to_owned()],
    )));
    fs::write(node.hook_file(), &old).unwrap();
    let before = node.snapshot_files();
    let out = node.install(&["--dry-run"]);
    insta::assert_snapshot!(node.t(&out), @r#"
    exit_code: 0
    ----- stdout -----
    --- a/[TMP]/hostHooks/tetragon-oci-hook.json
    +++ b/[TMP]/hostHooks/tetragon-oci-hook.json
    @@ -7,7 +7,9 @@
           "createRuntime",
           "--log-fname",
           "/opt/tetragon/tetragon-oci-hook.log",
    -      "--grpc-address=unix:///old.sock"
    +      "--grpc-address=unix:///var/run/tetragon/tetragon.sock",
    +      "--fail-allow-namespaces",
    +      "kube-system,ns1"
         ],
         "timeout": 62
       },
    ----- stderr -----
    copy `[TMP]/src/tetragon-oci-hook` to `[TMP]/hostInstall/tetragon-oci-hook` (sha256 306c6ca7407560340797866e077e053627ad409277d1b9da58106fce4cf717cb, 17 bytes, mode 0755)
    replace `[TMP]/hostHooks/tetragon-oci-hook.json` (453 bytes, mode 0644)
    dry run: nothing written
    "#);
    assert_eq!(node.snapshot_files(), before);
}

#[test]
fn install_reports_and_replaces_a_legacy_hook_file() {
    let node = Node::new();
    fs::write(
        node.hook_file(),
        r#"{"hook": "/usr/libexec/old-hook", "stages": ["prestart"]}"#,
    )
    .unwrap();
    let out = node.install(&[]);
    assert!(out.status.success());
    assert!(
        node.t(&out).contains(
            "note: `[TMP]/hostHooks/tetragon-oci-hook.json` uses the legacy 0.1.0 hook schema \
             (hook `/usr/libexec/old-hook`); it is replaced by a 1.0.0 file"
        ),
        "{}",
        node.t(&out)
    );
    assert_eq!(hook_args_of(&node.hook_file()).len(), 7);
}

#[test]
fn install_nri_hook_checks_flags_before_writing() {
    let node = Node::new();
    let nri = |extra: &[&str]| {
        let mut args = node.helm_args();
        args[1] = "--interface=nri-hook".into();
        let at = args.iter().position(|a| a == "hook-args").unwrap();
        for (i, e) in extra.iter().enumerate() {
            args.insert(at + i, (*e).to_owned());
        }
        bin().args(&args).output().unwrap()
    };
    let out = nri(&[]);
    insta::assert_snapshot!(node.t(&out), @r"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: `install --interface nri-hook` needs `--daemonize`: the NRI plugin must stay up to add the hook to new containers
    help: add `--daemonize` (the Helm chart does)
    ");
    let out = nri(&["--daemonize", "--nri-hook.index=1"]);
    insta::assert_snapshot!(node.t(&out), @r"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: --nri-hook.index `1` is not two digits
    help: NRI orders plugins by a two-digit index, e.g. `--nri-hook.index 01`
    ");
    for bad in [
        &["--daemonize", "--nri-hook.index=001"][..],
        &["--daemonize", "--nri-hook.name=a/b"],
        &["--daemonize", "--nri-hook.give-up-after=0"],
    ] {
        let out = nri(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", node.t(&out));
    }
    assert_eq!(listing(&node.path("hostInstall")), Vec::<String>::new());
    assert_eq!(listing(&node.path("hostHooks")), Vec::<String>::new());

    // A dry run shows the copy and writes nothing.
    let out = nri(&["--dry-run"]);
    assert!(out.status.success(), "{}", node.t(&out));
    assert!(
        node.t(&out).contains("dry run: nothing written"),
        "{}",
        node.t(&out)
    );
    assert_eq!(listing(&node.path("hostInstall")), Vec::<String>::new());
}

#[test]
fn uninstall_nri_hook_removes_only_the_binary() {
    let node = Node::new();
    let out = node.install(&[]);
    assert!(out.status.success(), "{}", node.t(&out));
    let out = run(&[
        "uninstall",
        "--interface",
        "nri-hook",
        "--local-install-dir",
        node.path("hostInstall").to_str().unwrap(),
        "--oci-hooks.local-dir",
        node.path("hostHooks").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", node.t(&out));
    assert_eq!(listing(&node.path("hostInstall")), Vec::<String>::new());
    assert_eq!(listing(&node.path("hostHooks")).len(), 1);
}

#[test]
fn install_accepts_nri_hook_flags_and_requires_both_install_dirs() {
    let node = Node::new();
    let out = node.install(&["--nri-hook.index=02", "--nri-hook.name", "tg"]);
    assert!(out.status.success(), "{}", node.t(&out));

    let out = run(&["install", "--host-install-dir=/opt/tetragon"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--local-install-dir <DIR>"), "{err}");
    let out = run(&["install", "--local-install-dir=/x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--host-install-dir <DIR>"), "{err}");
}

#[test]
fn install_relative_host_dir_is_refused() {
    let node = Node::new();
    let mut args = node.helm_args();
    args[4] = "--host-install-dir=opt/tetragon".into();
    let out = bin().args(&args).output().unwrap();
    insta::assert_snapshot!(node.t(&out), @r"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: --host-install-dir `opt/tetragon` is not an absolute path
    help: the runtime runs the hook by this path on the host, e.g. `--host-install-dir=/opt/tetragon`
    ");
}

/// Puts an older installation in place, runs `args`, and checks that it failed and that every
/// file is exactly as before.
fn assert_fails_leaving_everything(node: &Node, out: Output) -> String {
    let t = node.t(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(!t.contains("panicked"), "{t}");
    t
}

fn with_old_install(node: &Node) -> Vec<(String, Vec<u8>, u32)> {
    fs::write(node.binary(), b"old binary").unwrap();
    fs::set_permissions(node.binary(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(node.hook_file(), b"{\"old\": true}\n").unwrap();
    node.snapshot_files()
}

#[test]
fn install_missing_binary_writes_nothing() {
    let node = Node::new();
    let before = with_old_install(&node);
    let mut args = node.helm_args();
    args[2] = format!("--local-binary={}", node.path("src/nope").display());
    let out = bin().args(&args).output().unwrap();
    insta::assert_snapshot!(assert_fails_leaving_everything(&node, out), @"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: failed to read the hook binary `[TMP]/src/nope`

    Caused by:
      - No such file or directory (os error 2)

    help: --local-binary names the hook binary to install (default `/usr/bin/tetragon-oci-hook`); nothing was written
    ");
    assert_eq!(node.snapshot_files(), before);
}

#[test]
fn install_empty_or_unreadable_binary_writes_nothing() {
    let node = Node::new();
    let before_empty = {
        fs::write(node.source(), b"").unwrap();
        with_old_install(&node)
    };
    let out = node.install(&[]);
    let t = assert_fails_leaving_everything(&node, out);
    assert!(
        t.contains("error: the hook binary `[TMP]/src/tetragon-oci-hook` is empty"),
        "{t}"
    );
    assert_eq!(node.snapshot_files(), before_empty);

    let mut args = node.helm_args();
    args[2] = format!("--local-binary={}", node.path("src").display());
    let out = bin().args(&args).output().unwrap();
    let t = assert_fails_leaving_everything(&node, out);
    assert!(
        t.contains("error: the hook binary `[TMP]/src` is not a regular file"),
        "{t}"
    );
    assert_eq!(node.snapshot_files(), before_empty);
}

#[test]
fn install_missing_hooks_dir_names_the_flag_and_writes_nothing() {
    let node = Node::new();
    fs::remove_dir(node.path("hostHooks")).unwrap();
    let before = node.snapshot_files();
    let out = node.install(&[]);
    insta::assert_snapshot!(assert_fails_leaving_everything(&node, out), @r"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: hooks dir `[TMP]/hostHooks` does not exist
    help: pass the directory the runtime reads hook files from with `--oci-hooks.local-dir` (as mounted here); for cri-o it is the `hooks_dir` setting in crio.conf. `/etc/containers/oci/hooks.d` is read by cri-o and podman (`/usr/share/containers/oci/hooks.d` is read-only on RHCOS)
    ");
    assert_eq!(node.snapshot_files(), before);
}

#[test]
fn install_missing_install_dir_writes_nothing() {
    let node = Node::new();
    fs::remove_dir(node.path("hostInstall")).unwrap();
    let before = node.snapshot_files();
    let out = node.install(&[]);
    insta::assert_snapshot!(assert_fails_leaving_everything(&node, out), @r"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: install dir `[TMP]/hostInstall` (`/opt/tetragon` on the host) does not exist
    help: `--local-install-dir` is the host's install dir as mounted here; mount it (the Helm chart does), or create it
    ");
    assert_eq!(node.snapshot_files(), before);
}

/// Runs our binary with `args` in a private mount namespace after `mount_cmd` (a shell command)
/// ran there, so the mount vanishes with the process. `None` when that is not possible here.
fn with_mount(mount_cmd: &str, args: &[String]) -> Option<Output> {
    let probe = Command::new("unshare").args(["-m", "true"]).output();
    if !is_root() || !probe.is_ok_and(|o| o.status.success()) {
        skip("mounting needs root and `unshare -m` (util-linux)");
        return None;
    }
    let script = format!("{mount_cmd} || exit 99; exec \"$0\" \"$@\"");
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .arg(env!("CARGO_BIN_EXE_tetragon-oci-hook-setup"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    if out.status.code() == Some(99) {
        skip(format!(
            "`{mount_cmd}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        return None;
    }
    Some(out)
}

#[test]
fn install_read_only_install_dir_names_the_fix_and_writes_nothing() {
    let node = Node::new();
    let before = with_old_install(&node);
    let dir = node.path("hostInstall").display().to_string();
    let Some(out) = with_mount(
        &format!("mount --bind '{dir}' '{dir}' && mount -o remount,bind,ro '{dir}'"),
        &node.helm_args(),
    ) else {
        return;
    };
    insta::assert_snapshot!(assert_fails_leaving_everything(&node, out), @r"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: cannot install into `[TMP]/hostInstall` (`/opt/tetragon` on the host): read-only file system
    help: choose another host directory, e.g. `--host-install-dir=/run/tetragon` (Helm: `rthooks.installDir`); note that /run is a tmpfs, so the hook binary and its log are gone after a reboot until this installer runs again
    ");
    assert_eq!(node.snapshot_files(), before);
}

#[test]
fn install_read_only_hooks_dir_names_the_flag_and_writes_nothing() {
    let node = Node::new();
    let before = node.snapshot_files();
    let dir = node.path("hostHooks").display().to_string();
    let Some(out) = with_mount(
        &format!("mount --bind '{dir}' '{dir}' && mount -o remount,bind,ro '{dir}'"),
        &node.helm_args(),
    ) else {
        return;
    };
    let t = assert_fails_leaving_everything(&node, out);
    assert!(
        t.contains("error: cannot write to hooks dir `[TMP]/hostHooks`: read-only file system\nhelp: pass the directory the runtime reads hook files from with `--oci-hooks.local-dir`"),
        "{t}"
    );
    assert!(
        t.contains("`hooks_dir`") && t.contains("`/etc/containers/oci/hooks.d`"),
        "{t}"
    );
    // The binary was not copied either: nothing is written before every check passed.
    assert_eq!(node.snapshot_files(), before);
}

#[test]
fn install_noexec_install_dir_is_refused_and_writes_nothing() {
    let node = Node::new();
    let before = node.snapshot_files();
    let dir = node.path("hostInstall").display().to_string();
    let Some(out) = with_mount(
        &format!("mount -t tmpfs -o noexec,size=1m tmpfs '{dir}'"),
        &node.helm_args(),
    ) else {
        return;
    };
    insta::assert_snapshot!(assert_fails_leaving_everything(&node, out), @r"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: cannot install into `[TMP]/hostInstall` (`/opt/tetragon` on the host): it is mounted `noexec`, so the runtime could never run the hook from there
    help: choose another host directory, e.g. `--host-install-dir=/run/tetragon` (Helm: `rthooks.installDir`); note that /run is a tmpfs, so the hook binary and its log are gone after a reboot until this installer runs again
    ");
    assert_eq!(node.snapshot_files(), before);
}

#[test]
fn install_unwritable_install_dir_as_non_root_writes_nothing() {
    let node = Node::new();
    with_old_install(&node);
    // As root, run as `nobody` (root may write anywhere); otherwise as ourselves.
    let euid_root = is_root();
    fs::set_permissions(node.root(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(node.path("hostInstall"), fs::Permissions::from_mode(0o555)).unwrap();
    fs::set_permissions(node.path("hostHooks"), fs::Permissions::from_mode(0o777)).unwrap();
    let before = node.snapshot_files();
    let mut cmd = bin();
    cmd.args(node.helm_args());
    if euid_root {
        cmd.uid(65534).gid(65534);
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            skip!(format!("cannot run the binary as nobody: {e}"));
        }
    };
    insta::assert_snapshot!(assert_fails_leaving_everything(&node, out), @r"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: cannot install into `[TMP]/hostInstall` (`/opt/tetragon` on the host): Permission denied (os error 13)
    help: run it as root (runtime configs, hooks dirs and the install dir belong to root), or give it paths you may write
    ");
    assert_eq!(node.snapshot_files(), before);
}

#[test]
fn uninstall_removes_both_files_then_warns_when_absent() {
    let node = Node::new();
    assert!(node.install(&[]).status.success());
    let out = bin().args(node.uninstall_args()).output().unwrap();
    let t = node.t(&out);
    assert!(t.starts_with("exit_code: 0\n"), "{t}");
    assert!(
        t.contains("removed `[TMP]/hostHooks/tetragon-oci-hook.json`"),
        "{t}"
    );
    assert!(
        t.contains("removed `[TMP]/hostInstall/tetragon-oci-hook`"),
        "{t}"
    );
    assert!(!node.binary().exists() && !node.hook_file().exists());

    let out = bin().args(node.uninstall_args()).output().unwrap();
    insta::assert_snapshot!(node.t(&out), @r"
    exit_code: 0
    ----- stdout -----
    ----- stderr -----
    `[TMP]/hostHooks/tetragon-oci-hook.json` does not exist: nothing to remove
    `[TMP]/hostInstall/tetragon-oci-hook` does not exist: nothing to remove
    warning: `[TMP]/hostHooks/tetragon-oci-hook.json` does not exist: nothing to remove
    warning: `[TMP]/hostInstall/tetragon-oci-hook` does not exist: nothing to remove
    ");
}

#[test]
fn uninstall_dry_run_removes_nothing() {
    let node = Node::new();
    assert!(node.install(&[]).status.success());
    let before = node.snapshot_files();
    let mut args = node.uninstall_args();
    args.push("--dry-run".into());
    let out = bin().args(&args).output().unwrap();
    let t = node.t(&out);
    assert!(
        t.starts_with("exit_code: 0\n----- stdout -----\n--- a/"),
        "{t}"
    );
    assert!(t.contains("-    \"createRuntime\"\n"), "{t}");
    assert!(
        t.contains("remove `[TMP]/hostInstall/tetragon-oci-hook`\n"),
        "{t}"
    );
    assert!(t.ends_with("dry run: nothing removed\n"), "{t}");
    assert_eq!(node.snapshot_files(), before);
}

#[test]
fn uninstall_binary_name_selects_the_files() {
    let node = Node::new();
    let other = node.path("src/my-hook");
    fs::write(&other, HOOK_BYTES).unwrap();
    let mut args = node.helm_args();
    args[2] = format!("--local-binary={}", other.display());
    assert!(bin().args(&args).output().unwrap().status.success());
    assert!(node.path("hostHooks/my-hook.json").exists());
    assert!(node.path("hostInstall/my-hook").exists());

    let mut args = node.uninstall_args();
    args.extend(["--binary-name".into(), "my-hook".into()]);
    let out = bin().args(&args).output().unwrap();
    assert!(out.status.success(), "{}", node.t(&out));
    assert_eq!(listing(&node.path("hostHooks")), Vec::<String>::new());
    assert_eq!(listing(&node.path("hostInstall")), Vec::<String>::new());

    let mut args = node.uninstall_args();
    args.extend(["--binary-name".into(), "../x".into()]);
    let out = bin().args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn print_config_prints_the_hook_file() {
    let out = run(&[
        "print-config",
        "--binary",
        "/run/tetragon/tetragon-oci-hook",
        "--args",
        "--grpc-address=unix:///var/run/tetragon/tetragon.sock",
        "--fail-allow-namespaces",
        "kube-system",
    ]);
    insta::assert_snapshot!(transcript(&out, Path::new("/nonexistent")), @r#"
    exit_code: 0
    ----- stdout -----
    {
      "version": "1.0.0",
      "hook": {
        "path": "/run/tetragon/tetragon-oci-hook",
        "args": [
          "/run/tetragon/tetragon-oci-hook",
          "createRuntime",
          "--log-fname",
          "/run/tetragon/tetragon-oci-hook.log",
          "--grpc-address=unix:///var/run/tetragon/tetragon.sock",
          "--fail-allow-namespaces",
          "kube-system"
        ],
        "timeout": 62
      },
      "when": {
        "always": true
      },
      "stages": [
        "createRuntime"
      ]
    }
    ----- stderr -----
    "#);
    let out = run(&["print-config"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\"path\": \"/usr/bin/tetragon-oci-hook\""),
        "{text}"
    );
    assert!(
        text.contains("\"/usr/bin/tetragon-oci-hook.log\""),
        "{text}"
    );
    let out = run(&["print-config", "--binary", "hook"]);
    assert_eq!(out.status.code(), Some(2));
}

fn daemonize(node: &Node, signal: i32, between: impl FnOnce()) -> (Output, String) {
    let mut args = node.helm_args();
    args.insert(2, "--daemonize".into());
    let mut child = ChildGuard::new(
        bin()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = wait_for_line(&mut stderr, "waiting for SIGINT or SIGTERM");
    between();
    child.signal(signal);
    std::io::Read::read_to_string(&mut stderr, &mut seen).unwrap();
    let out = Output {
        status: child.wait().unwrap(),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    (
        out,
        seen.replace(&node.root().display().to_string(), "[TMP]"),
    )
}

#[test]
fn daemonize_uninstalls_on_sigterm() {
    let node = Node::new();
    let (out, stderr) = daemonize(&node, libc::SIGTERM, || {
        assert_eq!(fs::read(node.binary()).unwrap(), HOOK_BYTES);
        assert!(node.hook_file().exists());
    });
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("received SIGTERM: uninstalling\n"),
        "{stderr}"
    );
    assert_eq!(listing(&node.path("hostInstall")), Vec::<String>::new());
    assert_eq!(listing(&node.path("hostHooks")), Vec::<String>::new());
}

#[test]
fn daemonize_keeps_a_file_changed_since_and_removes_the_other() {
    let node = Node::new();
    let (out, stderr) = daemonize(&node, libc::SIGINT, || {
        fs::write(node.hook_file(), b"{\"someone\": \"else\"}\n").unwrap();
    });
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: `[TMP]/hostHooks/tetragon-oci-hook.json` no longer holds what was \
             installed: left in place"
        ),
        "{stderr}"
    );
    assert_eq!(
        fs::read(node.hook_file()).unwrap(),
        b"{\"someone\": \"else\"}\n"
    );
    assert!(!node.binary().exists(), "{stderr}");
}

/// Every real hooks.d file in `../shared/fixtures/hooks` reads, and what we would write back
/// holds the same JSON value.
#[test]
fn hook_json_round_trips_real_hook_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/hooks");
    let entries = require!(
        fs::read_dir(&dir).ok(),
        format!(
            "no `{}` (the shared fixtures beside the checkout)",
            dir.display()
        )
    );
    let mut seen = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        let file = hook_json::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let original: serde_json::Value = serde_json::from_str(&text).unwrap();
        let again = match &file {
            HookFile::Current(h) => {
                let rendered = hook_json::render(h);
                assert!(rendered.ends_with("}\n"));
                assert_eq!(hook_json::parse(&rendered).unwrap(), file);
                serde_json::from_str::<serde_json::Value>(&rendered).unwrap()
            }
            HookFile::Legacy(l) => serde_json::to_value(l).unwrap(),
        };
        assert_eq!(again, original, "{}", path.display());
        seen.push(format!(
            "{} {} {}",
            path.file_name().unwrap().to_string_lossy(),
            file.version(),
            file.path()
        ));
    }
    seen.sort();
    insta::assert_snapshot!(seen.join("\n"), @"
    containers-common-docs-nvidia-annotations-1.0.0.json 1.0.0 /usr/sbin/nvidia-container-runtime-hook
    containers-common-docs-oci-systemd-hook-0.1.0-legacy.json 0.1.0 /usr/libexec/oci/hooks.d/oci-systemd-hook
    containers-common-docs-oci-systemd-hook-1.0.0.json 1.0.0 /usr/libexec/oci/hooks.d/oci-systemd-hook
    nri-hook-injector-always-inject.json 1.0.0 /usr/local/sbin/demo-hook.sh
    nvidia-container-toolkit-oci-nvidia-hook.json 1.0.0 /usr/bin/nvidia-container-runtime-hook
    oci-seccomp-bpf-hook-installed.json 1.0.0 /usr/libexec/oci/hooks.d/oci-seccomp-bpf-hook
    ");
}

#[test]
fn print_config_matches_the_installed_hook_file() {
    let node = Node::new();
    assert!(node.install(&[]).status.success());
    let out = run(&[
        "print-config",
        "--binary",
        "/opt/tetragon/tetragon-oci-hook",
        "--args",
        "--grpc-address=unix:///var/run/tetragon/tetragon.sock",
        "--fail-allow-namespaces",
        "kube-system,ns1",
    ]);
    assert!(out.status.success());
    assert_eq!(out.stdout, fs::read(node.hook_file()).unwrap());
}

#[test]
fn install_unreadable_binary_as_non_root_writes_nothing() {
    let node = Node::new();
    with_old_install(&node);
    fs::set_permissions(node.root(), fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["hostInstall", "hostHooks"] {
        fs::set_permissions(node.path(d), fs::Permissions::from_mode(0o777)).unwrap();
    }
    fs::set_permissions(node.source(), fs::Permissions::from_mode(0o000)).unwrap();
    let before = node.snapshot_files();
    let mut cmd = bin();
    cmd.args(node.helm_args());
    // Root reads any file: drop to `nobody` for the run.
    if is_root() {
        cmd.uid(65534).gid(65534);
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => {
            skip!(format!("cannot run the binary as nobody: {e}"));
        }
    };
    insta::assert_snapshot!(assert_fails_leaving_everything(&node, out), @"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: failed to read the hook binary `[TMP]/src/tetragon-oci-hook`

    Caused by:
      - Permission denied (os error 13)

    help: --local-binary names the hook binary to install (default `/usr/bin/tetragon-oci-hook`); nothing was written
    ");
    assert_eq!(node.snapshot_files(), before);
}

/// In the Helm DaemonSet the installer is its container's PID 1, to which the kernel delivers
/// only the signals it blocks or handles; SIGTERM comes from outside its PID namespace.
#[test]
fn daemonize_as_pid_1_uninstalls_on_sigterm_from_outside() {
    let node = Node::new();
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .output();
    if !is_root() || !probe.is_ok_and(|o| o.status.success()) {
        skip!("a PID namespace needs root and `unshare --pid` (util-linux)");
    }
    let mut args = node.helm_args();
    args.insert(2, "--daemonize".into());
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork"])
        .arg(env!("CARGO_BIN_EXE_tetragon-oci-hook-setup"))
        .args(&args)
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(unshare.stderr.take().unwrap());
    let mut seen = wait_for_line(&mut stderr, "waiting for SIGINT or SIGTERM");
    let children =
        fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id())).unwrap();
    let pid: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.ends_with("\t1"),
        "not PID 1 in its namespace: {nspid}"
    );

    child::signal_pid(pid, libc::SIGTERM).unwrap();
    // A PID 1 that neither blocks nor handles SIGTERM never sees it: do not hang on that.
    let Some(out) = child::wait_timeout(&mut unshare, std::time::Duration::from_secs(20)) else {
        let _ = child::signal_pid(pid, libc::SIGKILL);
        let _ = unshare.wait();
        panic!("the installer (PID 1) did not exit after SIGTERM");
    };
    std::io::Read::read_to_string(&mut stderr, &mut seen).unwrap();
    assert!(out.success(), "{out:?}: {seen}");
    assert!(seen.contains("received SIGTERM: uninstalling"), "{seen}");
    assert!(
        !node.binary().exists() && !node.hook_file().exists(),
        "{seen}"
    );
}

/// Runs `cmd` to its end, killing it (and failing the test) after `secs` seconds: what used to
/// hang fails here instead of hanging the suite.
fn output_within(mut cmd: Command, secs: u64) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if child::wait_timeout(&mut child, std::time::Duration::from_secs(secs)).is_none() {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "still running after {secs}s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(p: &Path) {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    mknodat(CWD, p, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
}

/// `install --interface nri-hook` checks the hook's arguments exactly as oci-hooks does, before
/// `hook-args` that would make the hook a silent no-op (`--help`, `--version`,
/// `--just-print-config`), a positional argument (the runtime supplies the hook name), or a
/// `--grpc-timeout` over the hook's maximum fail the install, for both interfaces; nothing is
/// written.
#[test]
fn install_rejects_hook_args_that_make_the_hook_a_no_op_or_stall_it() {
    for interface in ["--interface=oci-hooks", "--interface=nri-hook"] {
        for bad in [
            &["--help"][..],
            &["-h"],
            &["--version"],
            &["--just-print-config"],
            &["poststop"],
            &["--grpc-timeout", "100000h"],
        ] {
            let node = Node::new();
            let mut args = node.helm_args();
            args[2] = format!("--local-binary={}", support::hook_bin());
            if interface.ends_with("nri-hook") {
                args[1] = interface.into();
                args.truncate(args.iter().position(|a| a == "hook-args").unwrap());
                args.extend([
                    "--daemonize".to_owned(),
                    format!("--nri-hook.socket={}", node.path("no-nri.sock").display()),
                    "--nri-hook.give-up-after=1".to_owned(),
                    "hook-args".to_owned(),
                ]);
            } else {
                args.truncate(args.iter().position(|a| a == "hook-args").unwrap() + 1);
            }
            args.extend(bad.iter().map(|s| s.to_string()));
            let before = listing(node.root());
            let mut cmd = bin();
            cmd.args(&args);
            let out = output_within(cmd, 20);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{interface} {bad:?}: {}",
                node.t(&out)
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("invalid hook arguments") && stderr.contains("help:"),
                "{interface} {bad:?}: {stderr}"
            );
            assert_eq!(
                listing(node.root()),
                before,
                "{interface} {bad:?}: something was written"
            );
        }
    }
}

/// the binary is copied.
#[test]
fn install_nri_hook_rejects_invalid_hook_args_and_writes_nothing() {
    for bad in [
        &["--grpc-timout", "2s"][..],
        &["--fail-cel-expr", "annotations["],
    ] {
        let node = Node::new();
        let mut args = node.helm_args();
        args[1] = "--interface=nri-hook".into();
        // The real hook as the binary to install: it is what checks the CEL expression.
        args[2] = format!("--local-binary={}", support::hook_bin());
        args.truncate(args.iter().position(|a| a == "hook-args").unwrap());
        args.extend(
            [
                "--daemonize".to_owned(),
                format!("--nri-hook.socket={}", node.path("no-nri.sock").display()),
                "--nri-hook.give-up-after=1".to_owned(),
                "hook-args".to_owned(),
            ]
            .into_iter()
            .chain(bad.iter().map(|s| s.to_string())),
        );
        let before = listing(node.root());
        let mut cmd = bin();
        cmd.args(&args);
        let out = output_within(cmd, 20);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", node.t(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("invalid hook arguments"),
            "{bad:?}: {stderr}"
        );
        assert_eq!(
            listing(node.root()),
            before,
            "{bad:?}: something was written"
        );
    }
}

/// A symlink at the hook path is replaced by the hook file, never followed: what it points to
/// is neither shown in the diff nor changed.
#[test]
fn install_replaces_a_symlinked_hook_file_without_showing_its_target() {
    let node = Node::new();
    let secret = node.path("secret");
    fs::write(&secret, "SECRET-CONTENT\n").unwrap();
    std::os::unix::fs::symlink(&secret, node.hook_file()).unwrap();
    for dry_run in [true, false] {
        let out = node.install(if dry_run { &["--dry-run"] } else { &[] });
        let t = node.t(&out);
        assert!(out.status.success(), "{t}");
        assert!(
            !t.contains("SECRET-CONTENT"),
            "shows the link's target: {t}"
        );
        assert!(
            t.contains(
                "replace the symlink `[TMP]/hostHooks/tetragon-oci-hook.json` (-> \
                 `[TMP]/secret`, not followed) with a file"
            ),
            "{t}"
        );
    }
    assert!(fs::symlink_metadata(node.hook_file()).unwrap().is_file());
    assert_eq!(fs::read(&secret).unwrap(), b"SECRET-CONTENT\n");
    hook_args_of(&node.hook_file());
}

/// A hooks-dir entry linking to `/dev/zero` is not read (it used to be read until memory ran
/// out): install succeeds within a 1 GiB address space.
#[test]
fn install_over_a_hook_path_linking_to_dev_zero_stays_bounded() {
    let node = Node::new();
    std::os::unix::fs::symlink("/dev/zero", node.hook_file()).unwrap();
    let mut cmd = bin();
    cmd.args(node.helm_args());
    // SAFETY: setrlimit is async-signal-safe; it only limits the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 1 << 30,
                rlim_max: 1 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = output_within(cmd, 30);
    assert!(out.status.success(), "{}", node.t(&out));
    assert!(fs::symlink_metadata(node.hook_file()).unwrap().is_file());
    hook_args_of(&node.hook_file());
}

/// A FIFO at the hook path is never opened: install refuses it by name with a `help:` and
/// writes nothing; uninstall removes it (and a symlink to a FIFO is removed, not its target).
/// Both used to hang.
#[test]
fn install_and_uninstall_with_a_fifo_at_the_hook_path_do_not_hang() {
    let node = Node::new();
    mkfifo(&node.hook_file());
    let before = node.snapshot_files();
    let mut cmd = bin();
    cmd.args(node.helm_args());
    let out = output_within(cmd, 20);
    insta::assert_snapshot!(node.t(&out), @r"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: `[TMP]/hostHooks/tetragon-oci-hook.json` is a FIFO, not a regular file
    help: remove it (this tool writes a regular file there); nothing was written
    ");
    assert_eq!(node.snapshot_files(), before);

    let mut cmd = bin();
    cmd.args(node.uninstall_args());
    let out = output_within(cmd, 20);
    assert!(out.status.success(), "{}", node.t(&out));
    assert!(node.t(&out).contains("a FIFO"), "{}", node.t(&out));
    assert!(fs::symlink_metadata(node.hook_file()).is_err());

    let fifo = node.path("fifo");
    mkfifo(&fifo);
    std::os::unix::fs::symlink(&fifo, node.hook_file()).unwrap();
    let mut cmd = bin();
    cmd.args(node.uninstall_args());
    let out = output_within(cmd, 20);
    assert!(out.status.success(), "{}", node.t(&out));
    assert!(fs::symlink_metadata(node.hook_file()).is_err());
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
}

/// Uninstall removes a symlink at the hook or binary path itself, never what it points to, and
/// never shows that file's content.
#[test]
fn uninstall_removes_a_symlink_never_its_target() {
    let node = Node::new();
    let secret = node.path("secret");
    fs::write(&secret, "SECRET-CONTENT\n").unwrap();
    std::os::unix::fs::symlink(&secret, node.hook_file()).unwrap();
    std::os::unix::fs::symlink(&secret, node.binary()).unwrap();
    let out = bin().args(node.uninstall_args()).output().unwrap();
    let t = node.t(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        !t.contains("SECRET-CONTENT"),
        "shows the link's target: {t}"
    );
    assert!(
        t.contains(
            "remove the symlink `[TMP]/hostHooks/tetragon-oci-hook.json` (-> `[TMP]/secret`; \
             what it points to is kept)"
        ),
        "{t}"
    );
    assert!(fs::symlink_metadata(node.hook_file()).is_err());
    assert!(fs::symlink_metadata(node.binary()).is_err());
    assert_eq!(fs::read(&secret).unwrap(), b"SECRET-CONTENT\n");
}

/// `--local-binary` over the documented bound (512 MiB) is refused before anything is written,
/// checked on the opened file (a sparse file here, so nothing big is read).
#[test]
fn install_refuses_a_local_binary_over_the_size_bound() {
    let node = Node::new();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(node.source())
        .unwrap();
    f.set_len((512 << 20) + 1).unwrap();
    drop(f);
    let before = node.snapshot_files();
    let out = node.install(&[]);
    let t = node.t(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("over the 536870912-byte bound"), "{t}");
    assert!(t.contains("help: --local-binary"), "{t}");
    assert_eq!(node.snapshot_files(), before);
}

/// A `--daemonize` installer, started and waiting; its stderr so far.
struct Daemon {
    child: ChildGuard,
    stderr: BufReader<std::process::ChildStderr>,
    seen: String,
}

impl Daemon {
    fn start(node: &Node) -> Daemon {
        let mut args = node.helm_args();
        args.insert(2, "--daemonize".into());
        let mut child = bin()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let seen = wait_for_line(&mut stderr, "waiting for SIGINT or SIGTERM");
        Daemon {
            child: ChildGuard::new(child),
            stderr,
            seen,
        }
    }

    fn signal(&self, signal: i32) {
        self.child.signal(signal);
    }

    /// Waits for it to end (at most 20 s) and returns its status and whole stderr.
    fn finish(mut self, node: &Node) -> (std::process::ExitStatus, String) {
        let Some(status) = child::wait_timeout(&mut self.child, std::time::Duration::from_secs(20))
        else {
            let _ = self.child.kill();
            panic!(
                "installer still running 20 s after the signal: {}",
                self.seen
            );
        };
        std::io::Read::read_to_string(&mut self.stderr, &mut self.seen).unwrap();
        (
            status,
            self.seen
                .replace(&node.root().display().to_string(), "[TMP]"),
        )
    }
}

/// Overlapping installers (a DaemonSet update with maxSurge): the first one to get SIGTERM
/// leaves the hook file and binary to the one still running, which removes them when it ends.
#[test]
fn overlapping_installers_keep_the_files_until_the_last_one_exits() {
    let node = Node::new();
    // The real hook, so that what stays in place is shown to still run.
    fs::copy(support::hook_bin(), node.source()).unwrap();
    let first = Daemon::start(&node);
    let second = Daemon::start(&node);
    first.signal(libc::SIGTERM);
    let (status, stderr) = first.finish(&node);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("another installer still holds the hook (lease `[TMP]/hostInstall/"),
        "{stderr}"
    );
    assert!(node.hook_file().exists(), "{stderr}");
    let ran = Command::new(node.binary())
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        ran.status.success() && ran.stdout.starts_with(b"tetragon-oci-hook "),
        "the installed hook no longer runs: {ran:?}"
    );

    second.signal(libc::SIGTERM);
    let (status, stderr) = second.finish(&node);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("removed `[TMP]/hostInstall/tetragon-oci-hook`"),
        "{stderr}"
    );
    assert_eq!(listing(&node.path("hostInstall")), Vec::<String>::new());
    assert_eq!(listing(&node.path("hostHooks")), Vec::<String>::new());
}

/// Two installers told to stop at the same moment never both keep the files: the guard lock
/// makes one of them the last one out.
#[test]
fn installers_stopped_together_remove_the_files() {
    for _ in 0..5 {
        let node = Node::new();
        let a = Daemon::start(&node);
        let b = Daemon::start(&node);
        a.signal(libc::SIGTERM);
        b.signal(libc::SIGTERM);
        let (sa, ea) = a.finish(&node);
        let (sb, eb) = b.finish(&node);
        assert!(sa.success() && sb.success(), "{ea}\n{eb}");
        assert_eq!(
            listing(&node.path("hostInstall")),
            Vec::<String>::new(),
            "{ea}\n{eb}"
        );
        assert_eq!(
            listing(&node.path("hostHooks")),
            Vec::<String>::new(),
            "{ea}\n{eb}"
        );
    }
}

/// An installer killed with SIGKILL leaves its lease behind, but nobody holds its lock: the
/// next installer to stop removes that stale lease and the files.
#[test]
fn a_killed_installers_stale_lease_does_not_keep_the_files() {
    let node = Node::new();
    let killed = Daemon::start(&node);
    killed.signal(libc::SIGKILL);
    let (status, _) = killed.finish(&node);
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(
        listing(&node.path("hostInstall"))
            .iter()
            .any(|n| n.ends_with(".lease")),
        "{:?}",
        listing(&node.path("hostInstall"))
    );
    let next = Daemon::start(&node);
    next.signal(libc::SIGTERM);
    let (status, stderr) = next.finish(&node);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("removed the stale lease"), "{stderr}");
    assert_eq!(listing(&node.path("hostInstall")), Vec::<String>::new());
    assert_eq!(listing(&node.path("hostHooks")), Vec::<String>::new());
}

/// An explicit `uninstall` removes the files even while a `--daemonize` installer runs (it is
/// the operator's decision); the installer then finds them gone.
#[test]
fn uninstall_removes_the_files_even_while_an_installer_runs() {
    let node = Node::new();
    let d = Daemon::start(&node);
    let out = bin().args(node.uninstall_args()).output().unwrap();
    assert!(out.status.success(), "{}", node.t(&out));
    assert!(!node.binary().exists() && !node.hook_file().exists());
    assert!(
        listing(&node.path("hostInstall"))
            .iter()
            .any(|n| n.ends_with(".lease")),
        "the live installer's lease must stay"
    );
    d.signal(libc::SIGTERM);
    let (status, stderr) = d.finish(&node);
    assert!(status.success(), "{stderr}");
    assert_eq!(listing(&node.path("hostInstall")), Vec::<String>::new());
}

/// After an installer was killed, an explicit `uninstall` removes its stale lease and lock file
/// too: the install dir is left empty.
#[test]
fn uninstall_after_a_killed_installer_leaves_the_install_dir_empty() {
    let node = Node::new();
    let killed = Daemon::start(&node);
    killed.signal(libc::SIGKILL);
    killed.finish(&node);
    let out = bin().args(node.uninstall_args()).output().unwrap();
    let t = node.t(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("removed the stale lease"), "{t}");
    assert_eq!(listing(&node.path("hostInstall")), Vec::<String>::new());
    assert_eq!(listing(&node.path("hostHooks")), Vec::<String>::new());
}

/// An installer starting while another one exits ends up with its files in place: installing
/// and the exiting one's removal never interleave.
#[test]
fn an_installer_starting_while_another_exits_keeps_its_files() {
    for _ in 0..5 {
        let node = Node::new();
        let old = Daemon::start(&node);
        let mut args = node.helm_args();
        args.insert(2, "--daemonize".into());
        let mut child = bin()
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        old.signal(libc::SIGTERM);
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let seen = wait_for_line(&mut stderr, "waiting for SIGINT or SIGTERM");
        let new = Daemon {
            child: ChildGuard::new(child),
            stderr,
            seen,
        };
        let (status, old_err) = old.finish(&node);
        assert!(status.success(), "{old_err}");
        assert!(
            node.binary().exists() && node.hook_file().exists(),
            "the new installer's files are gone:\n{old_err}"
        );
        new.signal(libc::SIGTERM);
        let (status, new_err) = new.finish(&node);
        assert!(status.success(), "{new_err}");
        assert_eq!(listing(&node.path("hostInstall")), Vec::<String>::new());
        assert_eq!(listing(&node.path("hostHooks")), Vec::<String>::new());
    }
}

/// `--local-binary` may be a symlink (the image's `/usr/bin/tetragon-oci-hook` may be one): the
/// file it names is copied. A FIFO there is refused at once, never waited on.
#[test]
fn install_local_binary_may_be_a_link_but_never_a_fifo() {
    let node = Node::new();
    let link = node.path("src/link");
    std::os::unix::fs::symlink(node.source(), &link).unwrap();
    let mut args = node.helm_args();
    args[2] = format!("--local-binary={}", link.display());
    let out = bin().args(&args).output().unwrap();
    assert!(out.status.success(), "{}", node.t(&out));
    let installed = node.path("hostInstall/link");
    assert!(fs::symlink_metadata(&installed).unwrap().is_file());
    assert_eq!(fs::read(&installed).unwrap(), HOOK_BYTES);

    let node = Node::new();
    let fifo = node.path("src/fifo");
    mkfifo(&fifo);
    let mut args = node.helm_args();
    args[2] = format!("--local-binary={}", fifo.display());
    let before = node.snapshot_files();
    let mut cmd = bin();
    cmd.args(&args);
    let out = output_within(cmd, 20);
    let t = node.t(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(
        t.contains("is not a regular file\nhelp: --local-binary"),
        "{t}"
    );
    assert_eq!(node.snapshot_files(), before);
}

/// A hook file over the 1 MiB read bound is not read: install refuses it by name (it is not one
/// this tool wrote) and writes nothing; uninstall removes it.
#[test]
fn an_oversized_hook_file_is_never_read() {
    let node = Node::new();
    let f = fs::File::create(node.hook_file()).unwrap();
    f.set_len((1 << 20) + 1).unwrap();
    drop(f);
    let before = node.snapshot_files();
    let out = node.install(&[]);
    insta::assert_snapshot!(node.t(&out), @r"
    exit_code: 2
    ----- stdout -----
    ----- stderr -----
    error: `[TMP]/hostHooks/tetragon-oci-hook.json` is a 1048577-byte file, over the 1048576-byte bound this tool reads back
    help: remove it (this tool writes a regular file there); nothing was written
    ");
    assert_eq!(node.snapshot_files(), before);
    let out = bin().args(node.uninstall_args()).output().unwrap();
    let t = node.t(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.len() < 4096, "the file was shown: {} bytes", t.len());
    assert!(!node.hook_file().exists(), "{t}");
}
