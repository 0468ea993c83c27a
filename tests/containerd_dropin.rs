//! `patch-containerd-conf ... --drop-in PATH|auto [--undo]`, proven with the real loader:
//! containerd 1.7 and 2.1 `config dump` the main file plus our drop-in. The drop-in holds just
//! our keys on 2.x rules and the whole plugin section on 1.x rules, so on 1.x everything else in
//! the section must survive too: the dump before and after differ only in what we set.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use toml_edit::{DocumentMut, Item};

mod support;
use support::cmd::bin;
use support::runtimes::{self, Release};

const SPEC: &str = "/etc/containerd/tetragon-base-spec.json";
const DROP_IN: &str = "99-tetragon-oci-hook.toml";

fn run(config: &Path, args: &[&str]) -> Output {
    bin()
        .env("PATH", "/nonexistent")
        .arg("patch-containerd-conf")
        .args(args)
        .arg("--config-file")
        .arg(config)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

/// containerd's own default config of `release`, importing `conf.d/*.toml`, in a temp dir.
fn default_with_conf_d(bin_path: &Path) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    let default = runtimes::config_default(bin_path).unwrap();
    assert!(default.contains("imports = []"));
    fs::write(
        &config,
        default.replace("imports = []", "imports = [\"conf.d/*.toml\"]"),
    )
    .unwrap();
    fs::create_dir(tmp.path().join("conf.d")).unwrap();
    (tmp, config)
}

fn dump(bin_path: &Path, config: &Path) -> DocumentMut {
    runtimes::config_dump(bin_path, config)
        .unwrap()
        .parse()
        .unwrap()
}

fn get<'a>(doc: &'a DocumentMut, path: &[&str]) -> Option<&'a Item> {
    path.iter()
        .try_fold(doc.as_item(), |it, k| it.as_table_like()?.get(k))
}

/// Every leaf of a dump with its value, to compare two dumps.
fn leaves(doc: &DocumentMut) -> Vec<(String, String)> {
    fn walk(item: &Item, path: String, out: &mut Vec<(String, String)>) {
        match item.as_table_like() {
            Some(t) => {
                for (k, v) in t.iter() {
                    walk(v, format!("{path}.{k}"), out);
                }
            }
            None => out.push((path, item.to_string().trim().to_owned())),
        }
    }
    let mut out = Vec::new();
    walk(doc.as_item(), String::new(), &mut out);
    out.retain(|(k, _)| k != ".imports");
    out
}

fn release_args(release: Release) -> [&'static str; 2] {
    ["--containerd-version", release.as_str()]
}

/// enable-nri and add-oci-hook through `--drop-in auto` on each release's default config: the
/// dump then has NRI on and our base spec on runc, and nothing else changed; a second run
/// changes nothing; `--undo` restores every file byte for byte.
#[test]
fn drop_in_auto_changes_only_our_keys_in_containerd_config_dump() {
    for release in Release::ALL {
        let bin_path = require!(runtimes::containerd(release), runtimes::missing(release));
        let (tmp, config) = default_with_conf_d(&bin_path);
        let main_before = fs::read(&config).unwrap();
        let before = dump(&bin_path, &config);
        let r = release_args(release);
        let err = ok(&run(
            &config,
            &["enable-nri", "--drop-in", "auto", r[0], r[1]],
        ));
        let drop_in = tmp.path().join("conf.d").join(DROP_IN);
        // 1.7's default has NRI off; 2.1's has it on, and nothing is written for it.
        assert_eq!(drop_in.is_file(), release == Release::V1_7, "{err}");
        assert_eq!(
            fs::read(&config).unwrap(),
            main_before,
            "{release}: the main file was touched although conf.d/*.toml covers the drop-in"
        );
        let err = ok(&run(
            &config,
            &[
                "add-oci-hook",
                "--runtime-spec",
                SPEC,
                "--drop-in",
                "auto",
                r[0],
                r[1],
            ],
        ));
        eprintln!("{release}: {err}");
        let after = dump(&bin_path, &config);
        let nri = ["plugins", "io.containerd.nri.v1.nri", "disable"];
        assert_eq!(get(&after, &nri).and_then(Item::as_bool), Some(false));
        let cri = match release {
            Release::V1_7 => "io.containerd.grpc.v1.cri",
            Release::V2_1 => "io.containerd.cri.v1.runtime",
        };
        let spec = [
            "plugins",
            cri,
            "containerd",
            "runtimes",
            "runc",
            "base_runtime_spec",
        ];
        assert_eq!(get(&after, &spec).and_then(Item::as_str), Some(SPEC));
        // Nothing else moved (on 1.7 the drop-in carries whole sections).
        let (b, a) = (leaves(&before), leaves(&after));
        let changed: Vec<_> = a.iter().filter(|l| !b.contains(l)).collect();
        let ours = if release == Release::V1_7 { 2 } else { 1 };
        assert_eq!(changed.len(), ours, "{release}: {changed:?}");

        // Idempotent: a second run writes nothing, --check finds nothing pending.
        let drop_in_text = fs::read(&drop_in).unwrap();
        ok(&run(
            &config,
            &["enable-nri", "--drop-in", "auto", r[0], r[1]],
        ));
        let check = run(
            &config,
            &[
                "add-oci-hook",
                "--runtime-spec",
                SPEC,
                "--drop-in",
                "auto",
                "--check",
                r[0],
                r[1],
            ],
        );
        assert_eq!(check.status.code(), Some(0), "{check:?}");
        assert_eq!(fs::read(&drop_in).unwrap(), drop_in_text);

        ok(&run(
            &config,
            &["enable-nri", "--drop-in", "auto", "--undo"],
        ));
        assert!(drop_in.exists());
        ok(&run(
            &config,
            &[
                "add-oci-hook",
                "--runtime-spec",
                SPEC,
                "--drop-in",
                "auto",
                "--undo",
            ],
        ));
        assert!(!drop_in.exists());
        assert_eq!(fs::read(&config).unwrap(), main_before);
        assert_eq!(leaves(&dump(&bin_path, &config)), b);
    }
}

/// A drop-in no import covers gets one `imports` entry in the main file (and the header says
/// so); `--undo` removes the drop-in and exactly that entry.
#[test]
fn drop_in_path_adds_one_import_entry_and_undo_removes_only_it() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    let original = "version = 2\n# ours and theirs\nimports = [\"/etc/containerd/other/*.toml\"] # keep\n\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true # off\n";
    fs::write(&config, original).unwrap();
    fs::create_dir(tmp.path().join("tetragon")).unwrap();
    let drop_in = tmp.path().join("tetragon/nri.toml");
    let out = run(
        &config,
        &[
            "enable-nri",
            "--drop-in",
            drop_in.to_str().unwrap(),
            "--containerd-version",
            "2.1",
        ],
    );
    ok(&out);
    let main = fs::read_to_string(&config).unwrap();
    assert_eq!(
        main,
        original.replace(
            "\"/etc/containerd/other/*.toml\"]",
            "\"/etc/containerd/other/*.toml\", \"tetragon/nri.toml\"]"
        )
    );
    let text = fs::read_to_string(&drop_in).unwrap();
    assert!(
        text.starts_with("# Written by tetragon-oci-hook-setup"),
        "{text}"
    );
    assert!(text.contains("\"tetragon/nri.toml\""), "{text}");
    // 2.x rules: just the key.
    assert!(
        text.ends_with("version = 2\n\n[plugins.\"io.containerd.nri.v1.nri\"]\ndisable = false\n"),
        "{text}"
    );
    if let Some(bin_path) = support::skip::require(
        runtimes::containerd(Release::V2_1),
        runtimes::missing(Release::V2_1),
    ) {
        let d = dump(&bin_path, &config);
        assert_eq!(
            get(&d, &["plugins", "io.containerd.nri.v1.nri", "disable"]).and_then(Item::as_bool),
            Some(false)
        );
    }
    let out = run(
        &config,
        &[
            "enable-nri",
            "--drop-in",
            drop_in.to_str().unwrap(),
            "--undo",
        ],
    );
    ok(&out);
    assert_eq!(fs::read_to_string(&config).unwrap(), original);
    assert!(!drop_in.exists());
}

#[test]
fn drop_in_is_refused_over_a_file_that_is_not_ours_and_auto_without_a_known_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    fs::write(&config, "version = 2\nimports = [\"conf.d/*.toml\"]\n").unwrap();
    fs::create_dir(tmp.path().join("conf.d")).unwrap();
    let theirs = tmp.path().join("conf.d").join(DROP_IN);
    fs::write(&theirs, "version = 2\n").unwrap();
    let out = run(&config, &["enable-nri", "--drop-in", "auto"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a drop-in of this tool"));
    let out = run(&config, &["enable-nri", "--drop-in", "auto", "--undo"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(fs::read_to_string(&theirs).unwrap(), "version = 2\n");

    fs::write(&config, "version = 2\nimports = [\"/srv/x/*.toml\"]\n").unwrap();
    let out = run(&config, &["enable-nri", "--drop-in", "auto"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("imports none of the drop-in dirs"), "{err}");
    assert!(err.contains("help: pass a path: `--drop-in"), "{err}");
}

/// k3s: the rendered config is left alone, the drop-in goes into the dir it imports; without
/// that import `--drop-in auto` has nowhere to go, and a path would need an edit of the
/// rendered file, which is refused.
#[test]
fn k3s_rendered_config_takes_the_drop_in_auto_route_without_being_edited() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_string_lossy().into_owned();
    let dir = tmp.path().join("var/lib/rancher/k3s/agent/etc/containerd");
    fs::create_dir_all(dir.join("config-v3.toml.d")).unwrap();
    let config = dir.join("config.toml");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k3s");
    let rendered = fs::read_to_string(fixture.join("k3s-rendered-v3-imports.toml"))
        .unwrap()
        .replace("\"/var/lib/rancher", &format!("\"{root}/var/lib/rancher"));
    fs::write(&config, &rendered).unwrap();
    // NRI is on by default on 2.x: a runtime spec needs a real change.
    let out = run(
        &config,
        &[
            "add-oci-hook",
            "--runtime-spec",
            SPEC,
            "--drop-in",
            "auto",
            "--containerd-version",
            "2.1",
        ],
    );
    ok(&out);
    assert_eq!(fs::read_to_string(&config).unwrap(), rendered);
    let drop_in = dir.join("config-v3.toml.d").join(DROP_IN);
    assert!(fs::read_to_string(&drop_in).unwrap().contains(SPEC));
    if let Some(bin_path) = support::skip::require(
        runtimes::containerd(Release::V2_1),
        runtimes::missing(Release::V2_1),
    ) {
        let d = dump(&bin_path, &config);
        let spec = [
            "plugins",
            "io.containerd.cri.v1.runtime",
            "containerd",
            "runtimes",
            "runc",
            "base_runtime_spec",
        ];
        assert_eq!(get(&d, &spec).and_then(Item::as_str), Some(SPEC));
    }

    let no_imports = fs::read_to_string(fixture.join("k3s-rendered-v3.toml")).unwrap();
    fs::write(&config, &no_imports).unwrap();
    let out = run(&config, &["enable-nri", "--drop-in", "auto"]);
    assert_eq!(out.status.code(), Some(2));
    let elsewhere = tmp.path().join("nri.toml");
    let out = run(
        &config,
        &[
            "add-oci-hook",
            "--runtime-spec",
            SPEC,
            "--drop-in",
            elsewhere.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is generated by k3s"), "{err}");
    assert!(err.contains("config-v3.toml.tmpl"), "{err}");
    assert_eq!(fs::read_to_string(&config).unwrap(), no_imports);
    assert!(!elsewhere.exists());
}

/// The header records the main file by absolute path: a run from another directory, or with
/// the config named relatively, still undoes its own entry.
#[test]
fn undo_removes_the_entry_whether_the_config_was_named_relatively_or_not() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    let original = "version = 2\n";
    fs::write(&config, original).unwrap();
    let out = bin()
        .current_dir(tmp.path())
        .args([
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "config.toml",
            "--drop-in",
            "nri-drop-in.toml",
            "--containerd-version",
            "1.7",
        ])
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        "version = 2\nimports = [\"nri-drop-in.toml\"]\n"
    );
    ok(&run(
        &config,
        &[
            "enable-nri",
            "--drop-in",
            tmp.path().join("nri-drop-in.toml").to_str().unwrap(),
            "--undo",
        ],
    ));
    assert_eq!(fs::read_to_string(&config).unwrap(), original);
    assert!(!tmp.path().join("nri-drop-in.toml").exists());
}

const NRI_OFF: &str = "version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n";

/// `config dump` of every installed release succeeds on `config`.
fn dump_ok_everywhere(config: &Path) {
    for release in Release::ALL {
        if let Some(bin_path) =
            support::skip::require(runtimes::containerd(release), runtimes::missing(release))
        {
            runtimes::config_dump(&bin_path, config).unwrap_or_else(|e| {
                panic!("{release}: {e}\n{}", fs::read_to_string(config).unwrap())
            });
        }
    }
}

/// `--undo` never leaves a plain import naming the deleted drop-in: an entry spelled
/// `./extra/ours.toml` by hand, or a config reached through a symlinked dir, is removed too,
/// and containerd still loads the config; an import of it in another file is refused with
/// nothing written.
#[test]
fn undo_leaves_no_import_of_the_deleted_drop_in_and_containerd_still_loads_the_config() {
    // A hand-respelled entry.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    fs::write(&config, NRI_OFF).unwrap();
    fs::create_dir(tmp.path().join("extra")).unwrap();
    let drop_in = tmp.path().join("extra/ours.toml");
    let args = |undo: bool| {
        let mut a = vec!["enable-nri", "--drop-in", drop_in.to_str().unwrap()];
        a.extend(if undo {
            vec!["--undo"]
        } else {
            vec!["--containerd-version", "2.1"]
        });
        a
    };
    ok(&run(&config, &args(false)));
    let main = fs::read_to_string(&config).unwrap();
    assert!(main.contains("imports = [\"extra/ours.toml\"]"), "{main}");
    fs::write(&config, main.replace("\"extra/", "\"./extra/")).unwrap();
    ok(&run(&config, &args(true)));
    assert!(!drop_in.exists());
    assert_eq!(fs::read_to_string(&config).unwrap(), NRI_OFF);
    dump_ok_everywhere(&config);

    // Created through a symlinked dir, undone through the real one.
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir(tmp.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real", tmp.path().join("etc")).unwrap();
    fs::write(tmp.path().join("real/config.toml"), NRI_OFF).unwrap();
    let out = bin()
        .current_dir(tmp.path())
        .args([
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "etc/config.toml",
            "--drop-in",
            "etc/ours.toml",
            "--containerd-version",
            "2.1",
        ])
        .output()
        .unwrap();
    ok(&out);
    let out = bin()
        .current_dir(tmp.path())
        .args([
            "patch-containerd-conf",
            "enable-nri",
            "--config-file",
            "real/config.toml",
            "--drop-in",
            "real/ours.toml",
            "--undo",
        ])
        .output()
        .unwrap();
    ok(&out);
    let config = tmp.path().join("real/config.toml");
    assert_eq!(fs::read_to_string(&config).unwrap(), NRI_OFF);
    assert!(!tmp.path().join("real/ours.toml").exists());
    dump_ok_everywhere(&config);

    // Another file imports it by name: refused, nothing written.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    fs::write(&config, format!("imports = [\"other.toml\"]\n{NRI_OFF}")).unwrap();
    fs::write(tmp.path().join("other.toml"), "version = 2\n").unwrap();
    let drop_in = tmp.path().join("ours.toml");
    ok(&run(
        &config,
        &[
            "enable-nri",
            "--drop-in",
            drop_in.to_str().unwrap(),
            "--containerd-version",
            "2.1",
        ],
    ));
    fs::write(
        tmp.path().join("other.toml"),
        "version = 2\nimports = [\"ours.toml\"]\n",
    )
    .unwrap();
    let main = fs::read_to_string(&config).unwrap();
    let out = run(
        &config,
        &[
            "enable-nri",
            "--drop-in",
            drop_in.to_str().unwrap(),
            "--undo",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("other.toml` imports `ours.toml`"), "{err}");
    assert!(drop_in.exists());
    assert_eq!(fs::read_to_string(&config).unwrap(), main);
}

/// A hand edit that breaks our drop-in stops a rerun (and --undo) with `file:line`; the file
/// is left as it is.
#[test]
fn broken_drop_in_is_reported_with_its_line_and_never_rewritten() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    fs::write(&config, NRI_OFF).unwrap();
    let drop_in = tmp.path().join("ours.toml");
    let d = drop_in.to_str().unwrap();
    ok(&run(
        &config,
        &["enable-nri", "--drop-in", d, "--containerd-version", "2.1"],
    ));
    let broken = format!("{}plugin_path = \n", fs::read_to_string(&drop_in).unwrap());
    let line = broken.lines().count();
    fs::write(&drop_in, &broken).unwrap();
    for args in [
        vec!["enable-nri", "--drop-in", d, "--containerd-version", "2.1"],
        vec![
            "add-oci-hook",
            "--runtime-spec",
            SPEC,
            "--drop-in",
            d,
            "--containerd-version",
            "2.1",
        ],
        vec!["enable-nri", "--drop-in", d, "--undo"],
    ] {
        let out = run(&config, &args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{d}:{line}: our drop-in does not parse")),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&drop_in).unwrap(), broken);
    }
}

/// On containerd 1.x rules a rerun writes our NRI section again from the effective config: a
/// key added by hand in it is named in a warning.
#[test]
fn rerun_warns_about_hand_added_keys_it_drops_on_1x_rules() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    fs::write(&config, NRI_OFF).unwrap();
    let drop_in = tmp.path().join("ours.toml");
    let d = drop_in.to_str().unwrap();
    ok(&run(
        &config,
        &["enable-nri", "--drop-in", d, "--containerd-version", "1.7"],
    ));
    let text = fs::read_to_string(&drop_in).unwrap();
    let (head, section) = text.split_once("disable = false\n").unwrap();
    fs::write(
        &drop_in,
        format!("{head}disable = false\nplugin_path = \"/opt/mine\"\n{section}"),
    )
    .unwrap();
    let err = ok(&run(
        &config,
        &["enable-nri", "--drop-in", d, "--containerd-version", "1.7"],
    ));
    assert!(err.contains("plugin_path"), "{err}");
    assert!(err.contains("warning:"), "{err}");
}

/// `enable-nri --undo` removes only the NRI settings from the shared drop-in: add-oci-hook's
/// base runtime spec stays in effect for containerd; undoing both removes file and import.
#[test]
fn undo_of_one_action_keeps_the_other_actions_settings_in_effect() {
    for release in Release::ALL {
        let bin_path = require!(runtimes::containerd(release), runtimes::missing(release));
        let (_tmp, config) = default_with_conf_d(&bin_path);
        let main_before = fs::read(&config).unwrap();
        let v = release_args(release);
        let auto = ["--drop-in", "auto", v[0], v[1]];
        let mut nri = vec!["enable-nri"];
        nri.extend(auto);
        let mut hook = vec!["add-oci-hook", "--runtime-spec", SPEC];
        hook.extend(auto);
        ok(&run(&config, &nri));
        ok(&run(&config, &hook));
        ok(&run(
            &config,
            &["enable-nri", "--drop-in", "auto", "--undo"],
        ));
        let ours = fs::read_to_string(config.with_file_name("conf.d").join(DROP_IN)).unwrap();
        assert!(!ours.contains("nri"), "{release}: {ours}");
        let d = dump(&bin_path, &config);
        let text = d.to_string();
        assert!(text.contains(SPEC), "{release}: {text}");
        ok(&run(
            &config,
            &[
                "add-oci-hook",
                "--runtime-spec",
                SPEC,
                "--drop-in",
                "auto",
                "--undo",
            ],
        ));
        assert!(
            !config.with_file_name("conf.d").join(DROP_IN).exists(),
            "{release}"
        );
        assert_eq!(fs::read(&config).unwrap(), main_before, "{release}");
        let text = dump(&bin_path, &config).to_string();
        assert!(!text.contains(SPEC), "{release}");
    }
}

/// `--undo` after our drop-in was deleted by hand still removes the `imports` entry naming it
/// (left behind, containerd 1.x refuses to start and 2.x silently drops the imports after it):
/// containerd 1.7 and 2.1 load the config again.
#[test]
fn undo_after_the_drop_in_was_deleted_removes_its_dangling_import_and_containerd_loads_the_config()
{
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    fs::write(&config, NRI_OFF).unwrap();
    fs::create_dir(tmp.path().join("tetragon")).unwrap();
    let drop_in = tmp.path().join("tetragon/nri.toml");
    let d = drop_in.to_str().unwrap();
    ok(&run(
        &config,
        &["enable-nri", "--drop-in", d, "--containerd-version", "2.1"],
    ));
    assert!(
        fs::read_to_string(&config)
            .unwrap()
            .contains("tetragon/nri.toml")
    );
    fs::remove_file(&drop_in).unwrap();
    ok(&run(&config, &["enable-nri", "--drop-in", d, "--undo"]));
    // The record of having created `imports` went with the file: an empty list stays.
    let undone = NRI_OFF.replace("version = 2\n", "version = 2\nimports = []\n");
    assert_eq!(fs::read_to_string(&config).unwrap(), undone);
    assert!(!drop_in.exists());
    dump_ok_everywhere(&config);
    // Nothing left: a second --undo is a no-op.
    ok(&run(&config, &["enable-nri", "--drop-in", d, "--undo"]));
    assert_eq!(fs::read_to_string(&config).unwrap(), undone);
}

/// An `imports` entry for our drop-in added by hand is named in the drop-in's header: deleting
/// the file alone would leave it dangling.
#[test]
fn drop_in_header_names_a_hand_added_import_entry_of_it() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    let main = format!("imports = [\"tetragon/nri.toml\"]\n{NRI_OFF}");
    fs::write(&config, &main).unwrap();
    fs::create_dir(tmp.path().join("tetragon")).unwrap();
    let drop_in = tmp.path().join("tetragon/nri.toml");
    let d = drop_in.to_str().unwrap();
    ok(&run(
        &config,
        &["enable-nri", "--drop-in", d, "--containerd-version", "2.1"],
    ));
    assert_eq!(fs::read_to_string(&config).unwrap(), main);
    let text = fs::read_to_string(&drop_in).unwrap();
    assert!(
        text.contains(&format!(
            "or delete this file and its entry in `imports` of {}.",
            config.display()
        )),
        "{text}"
    );
}
