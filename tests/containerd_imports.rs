//! The effective config ([`rthooks::effective`]) against the real loader: for every layout in
//! `tests/fixtures/containerd-imports/` (a main `config.toml` and the files it imports), the
//! NRI settings and the CRI runtimes' `base_runtime_spec`/`runtime_type` we compute must equal
//! what `containerd config dump` of containerd 1.7 and 2.1 reports. `@DIR@` in a fixture is the
//! layout's directory (for absolute imports). `error-*` layouts must be refused by both.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};

use rthooks::effective::{self, Effective, MergeRule};
use toml_edit::{DocumentMut, Item};

mod support;
use support::runtimes::{self, Release};

const DEFAULT_NRI_SOCKET: &str = "/var/run/nri/nri.sock";

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/containerd-imports");
    let mut cases: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    cases
}

/// Copies a layout into `to`, replacing `@DIR@` with `to`.
fn materialize(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            materialize(&entry.path(), &dest);
        } else {
            let text = fs::read_to_string(entry.path()).unwrap();
            fs::write(dest, text.replace("@DIR@", &to.to_string_lossy())).unwrap();
        }
    }
}

fn get<'a>(item: &'a Item, path: &[&str]) -> Option<&'a Item> {
    path.iter()
        .try_fold(item, |it, k| it.as_table_like()?.get(k))
}

fn rule(release: Release) -> MergeRule {
    match release {
        Release::V1_7 => MergeRule::WholePluginSection,
        Release::V2_1 => MergeRule::KeyByKey,
    }
}

fn model(main: &Path, release: Release) -> anyhow::Result<Effective> {
    let layers = effective::load(main, None)?;
    effective::merge(&layers, rule(release))
}

/// `(name, runtime_type, base_runtime_spec)` of the runtimes whose spec or type a file sets.
fn model_runtimes(eff: &Effective) -> Vec<(String, Option<String>, String)> {
    eff.runtimes()
        .into_iter()
        .map(|(name, (ty, spec))| {
            (
                name,
                ty.and_then(|s| s.as_str()).map(str::to_owned),
                spec.and_then(|s| s.as_str()).unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn check(release: Release) {
    let bin = require!(runtimes::containerd(release), runtimes::missing(release));
    let tmp = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for case in corpus() {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let dir = tmp.path().join(&name);
        materialize(&case, &dir);
        let main = dir.join("config.toml");
        let dump = runtimes::config_dump(&bin, &main);
        let ours = model(&main, release);
        if name.starts_with("error-") {
            let err = ours.expect_err(&name);
            let shown = rthooks::error::render(&err);
            assert!(
                shown.contains(&dir.to_string_lossy().into_owned()) && shown.contains(".toml:"),
                "{name}: error does not name the file and line: {shown}"
            );
            // containerd skips a repeated file, so it loads a cycle; we refuse it. 2.1's
            // `config dump` misreports a missing import: `command/config.go` ignores
            // `os.IsNotExist` from `LoadConfig` (and dumps what it loaded until then), while the
            // daemon (`command/main.go`) returns the error and does not start.
            let dump_misreports = release == Release::V2_1 && name.contains("missing");
            if name != "error-cycle-v2" && !dump_misreports {
                assert!(dump.is_err(), "{release} loads {name}");
            }
            continue;
        }
        let eff = ours.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        if eff.version > i64::from(release.max_config_version()) {
            assert!(
                dump.is_err(),
                "{release} loads {name}, version {}",
                eff.version
            );
            continue;
        }
        let dump = dump.unwrap_or_else(|e| panic!("{release} rejects {name}: {e}"));
        let doc: DocumentMut = dump.parse().unwrap();
        let nri = ["plugins", "io.containerd.nri.v1.nri"];
        let disable = get(doc.as_item(), &[nri[0], nri[1], "disable"])
            .and_then(Item::as_bool)
            .unwrap();
        assert_eq!(
            eff.nri_enabled(),
            !disable,
            "{release}, {name}: NRI enabled? ours {:?}",
            eff.nri_disable()
        );
        let socket = get(doc.as_item(), &[nri[0], nri[1], "socket_path"])
            .and_then(Item::as_str)
            .unwrap();
        assert_eq!(
            eff.nri_socket_path()
                .and_then(|s| s.as_str())
                .unwrap_or(DEFAULT_NRI_SOCKET),
            socket,
            "{release}, {name}: socket_path"
        );
        let cri = match release {
            Release::V1_7 => "io.containerd.grpc.v1.cri",
            Release::V2_1 => "io.containerd.cri.v1.runtime",
        };
        let dumped = get(doc.as_item(), &["plugins", cri, "containerd", "runtimes"])
            .and_then(Item::as_table_like)
            .unwrap();
        let mine = model_runtimes(&eff);
        for (rt, ty, spec) in &mine {
            let d = dumped
                .get(rt)
                .unwrap_or_else(|| panic!("{release}, {name}: runtime {rt} not in dump"));
            let s = |k: &str| get(d, &[k]).and_then(Item::as_str).unwrap_or_default();
            assert_eq!(s("base_runtime_spec"), spec, "{release}, {name}: {rt}");
            if let Some(ty) = ty {
                assert_eq!(s("runtime_type"), ty, "{release}, {name}: {rt}");
            }
        }
        for (rt, d) in dumped.iter() {
            let spec = get(d, &["base_runtime_spec"]).and_then(Item::as_str);
            if spec.is_some_and(|s| !s.is_empty()) {
                assert!(
                    mine.iter().any(|(n, ..)| n == rt),
                    "{release}, {name}: dump has a base spec for {rt}, we have none"
                );
            }
        }
        compared += 1;
    }
    eprintln!("{release}: {compared} layouts agree with `config dump`");
    assert!(
        compared >= 15,
        "{release}: only {compared} layouts compared"
    );
}

#[test]
fn effective_config_equals_containerd_1_7_config_dump() {
    check(Release::V1_7);
}

#[test]
fn effective_config_equals_containerd_2_1_config_dump() {
    check(Release::V2_1);
}

/// The measurement: the same two files, 1.7 loses the custom socket path (the imported
/// section replaces the main one), 2.1 keeps it.
#[test]
fn merge_rule_differs_between_1_7_and_2_1_on_the_same_files() {
    let case = corpus()
        .into_iter()
        .find(|c| c.ends_with("01-conf-d-glob-disables-nri-v2"))
        .unwrap();
    let main = case.join("config.toml");
    let old = model(&main, Release::V1_7).unwrap();
    let new = model(&main, Release::V2_1).unwrap();
    assert!(!old.nri_enabled() && !new.nri_enabled());
    assert!(old.nri_socket_path().is_none());
    assert_eq!(
        new.nri_socket_path().unwrap().as_str(),
        Some("/run/custom/nri.sock")
    );
    let origin = new.nri_disable().unwrap().origin.to_string();
    assert!(origin.ends_with("conf.d/50-nri.toml:3"), "{origin}");
}

/// The runtimes of a 2.1 dump: name -> (runtime_type, base_runtime_spec).
fn dumped_runtimes(doc: &DocumentMut) -> Vec<(String, String, String)> {
    let rts = get(
        doc.as_item(),
        &[
            "plugins",
            "io.containerd.cri.v1.runtime",
            "containerd",
            "runtimes",
        ],
    )
    .and_then(Item::as_table_like)
    .unwrap();
    rts.iter()
        .map(|(n, d)| {
            let s = |k: &str| {
                get(d, &[k])
                    .and_then(Item::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            (n.to_owned(), s("runtime_type"), s("base_runtime_spec"))
        })
        .collect()
}

/// A layout: its name, the main file, the files in `conf.d/` (name, text).
type Layout = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Mixed version 2 / version 3 layouts whose runc runtimes lack a base spec: a main file and
/// the files in `conf.d/` (it imports `conf.d/*.toml`). The first three set runtimes containerd
/// 2.x does not use (not migrated): the tool must refuse them, naming the file.
const MIXED_WITHOUT_SPEC: &[Layout] = &[
    (
        "v3 main, v2 NVIDIA-style import",
        "version = 3\nimports = [\"conf.d/*.toml\"]\n\
         [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc]\n\
         runtime_type = \"io.containerd.runc.v2\"\n",
        &[(
            "10-nvidia.toml",
            "version = 2\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]\n\
             runtime_type = \"io.containerd.runc.v2\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia.options]\n\
             BinaryName = \"/usr/bin/nvidia-container-runtime\"\n",
        )],
    ),
    (
        "v2 main, v3 import",
        "version = 2\nimports = [\"conf.d/*.toml\"]\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
         runtime_type = \"io.containerd.runc.v2\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n\
         SystemdCgroup = true\n",
        &[(
            "10-gpu.toml",
            "version = 3\n\
             [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.gpu]\n\
             runtime_type = \"io.containerd.runc.v2\"\n",
        )],
    ),
    (
        "v2 main, v2 import with a v3 runtimes table",
        "version = 2\nimports = [\"conf.d/*.toml\"]\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
         runtime_type = \"io.containerd.runc.v2\"\n",
        &[(
            "10-gpu.toml",
            "version = 2\n\
             [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.gpu]\n\
             runtime_type = \"io.containerd.runc.v2\"\n",
        )],
    ),
    (
        "v2 main, v2 NVIDIA-style import",
        "version = 2\nimports = [\"conf.d/*.toml\"]\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
         runtime_type = \"io.containerd.runc.v2\"\n",
        &[(
            "10-nvidia.toml",
            "version = 2\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.nvidia]\n\
             runtime_type = \"io.containerd.runc.v2\"\n",
        )],
    ),
    (
        "v2 main, versionless NRI import",
        "version = 2\nimports = [\"conf.d/*.toml\"]\n\
         [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
         runtime_type = \"io.containerd.runc.v2\"\n",
        &[(
            "10-nri.toml",
            "[plugins.\"io.containerd.nri.v1.nri\"]\ndisable = false\n",
        )],
    ),
    (
        "v3 main, v3 import",
        "version = 3\nimports = [\"conf.d/*.toml\"]\n\
         [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc]\n\
         runtime_type = \"io.containerd.runc.v2\"\n",
        &[(
            "10-kata.toml",
            "version = 3\n\
             [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.kata]\n\
             runtime_type = \"io.containerd.kata.v2\"\n",
        )],
    ),
];

/// `add-oci-hook --drop-in auto` on mixed version 2 / version 3 layouts, judged by containerd
/// 2.1's `config dump`: when the tool says it succeeded, every runc runtime containerd uses has a
/// base spec, ours on at least one, and every runtime containerd used before is still there
/// with its type (a version 3 drop-in over version 2 files would stop 2.x migrating them).
#[test]
fn dropin_on_mixed_version_files_takes_effect_in_containerd_2_1() {
    const SPEC: &str = "/etc/containerd/tetragon-base-spec.json";
    let release = Release::V2_1;
    let bin = require!(runtimes::containerd(release), runtimes::missing(release));
    let tmp = tempfile::tempdir().unwrap();
    for (i, (name, main_text, files)) in MIXED_WITHOUT_SPEC.iter().enumerate() {
        let dir = tmp.path().join(i.to_string());
        fs::create_dir_all(dir.join("conf.d")).unwrap();
        let main = dir.join("config.toml");
        fs::write(&main, main_text).unwrap();
        for (file, text) in *files {
            fs::write(dir.join("conf.d").join(file), text).unwrap();
        }
        let before = runtimes::config_dump(&bin, &main).unwrap();
        let before = dumped_runtimes(&before.parse().unwrap());
        let out = support::cmd::bin()
            .env("PATH", "/nonexistent")
            .args([
                "patch-containerd-conf",
                "add-oci-hook",
                "--runtime-spec",
                SPEC,
            ])
            .args([
                "--drop-in",
                "auto",
                "--containerd-version",
                "2.1",
                "--config-file",
            ])
            .arg(&main)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        let drop_in = dir.join("conf.d/99-tetragon-oci-hook.toml");
        if i < 3 {
            assert!(!out.status.success(), "{name}: accepted: {said}");
            assert!(
                said.contains("does not use") && said.contains(".toml:") && !drop_in.exists(),
                "{name}: {said}"
            );
            continue;
        }
        assert!(out.status.success(), "{name}: {said}");
        let drop_in = fs::read_to_string(drop_in).unwrap();
        let after = runtimes::config_dump(&bin, &main)
            .unwrap_or_else(|e| panic!("{name}: 2.1 rejects the result: {e}\n{drop_in}"));
        let after = dumped_runtimes(&after.parse().unwrap());
        for (rt, ty, _) in &before {
            assert!(
                after.iter().any(|(n, t, _)| n == rt && t == ty),
                "{name}: runtime {rt} ({ty}) lost: {after:?}\n{drop_in}"
            );
        }
        let runc: Vec<_> = after
            .iter()
            .filter(|(_, t, _)| t == "io.containerd.runc.v2")
            .collect();
        assert!(
            runc.iter().any(|(_, _, s)| s == SPEC),
            "{name}: no runc runtime with our spec: {after:?}\n{drop_in}"
        );
        assert!(
            runc.iter().all(|(_, _, s)| !s.is_empty()),
            "{name}: a runc runtime without a base spec: {after:?}\n{drop_in}"
        );
    }
}

/// 300 files in `conf.d` (more than the old 256-file cap): containerd 1.7 and 2.1 load them
/// all, and so do we; the last one read decides.
#[test]
fn three_hundred_imported_files_load_as_in_containerd_config_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let main = tmp.path().join("config.toml");
    fs::write(
        &main,
        "version = 2\nimports = [\"conf.d/*.toml\"]\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true\n",
    )
    .unwrap();
    let conf_d = tmp.path().join("conf.d");
    fs::create_dir(&conf_d).unwrap();
    for i in 0..300 {
        let disable = i != 299;
        fs::write(
            conf_d.join(format!("{i:03}.toml")),
            format!("version = 2\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = {disable}\n"),
        )
        .unwrap();
    }
    assert_eq!(effective::load(&main, None).unwrap().len(), 301);
    for release in Release::ALL {
        let eff = model(&main, release).unwrap();
        assert!(eff.nri_enabled(), "{release}");
        let origin = eff.nri_disable().unwrap().origin.to_string();
        assert!(origin.ends_with("conf.d/299.toml:3"), "{origin}");
        let Some(bin) =
            support::skip::require(runtimes::containerd(release), runtimes::missing(release))
        else {
            continue;
        };
        let doc: DocumentMut = runtimes::config_dump(&bin, &main).unwrap().parse().unwrap();
        let disable = get(
            doc.as_item(),
            &["plugins", "io.containerd.nri.v1.nri", "disable"],
        )
        .and_then(Item::as_bool);
        assert_eq!(disable, Some(false), "{release}");
    }
}
