//! The real consumer of what the patcher writes: containerd itself.
//!
//! For containerd 1.7 (version 1 and 2 files) and 2.1 (version 2 and 3 files), fetched by
//! `scripts/fetch-containerd.sh`, every fixture is patched by the real binary and then loaded
//! with `containerd --config OUT config dump`: containerd must accept the output and report NRI
//! enabled (`disable = false`), or, for `add-oci-hook`, report the base runtime spec on every
//! runc runtime that had none.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use toml_edit::{DocumentMut, Item};

mod support;
use support::runtimes::{self, Release};

const BIN: &str = env!("CARGO_BIN_EXE_tetragon-oci-hook-setup");
const SPEC: &str = "/etc/containerd/tetragon-base-spec.json";

/// The repo's fixtures, plus the shared distribution configs when they are beside the checkout.
fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("tests/fixtures/containerd")];
    let shared = root.join("../shared/fixtures/containerd");
    if shared.is_dir() {
        dirs.push(shared);
    }
    let mut files: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| fs::read_dir(d).unwrap().map(|e| e.unwrap().path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("error-")
        })
        .collect();
    files.sort();
    files
}

/// The config version a file declares (1 when it has none), or `None` when it is not TOML.
fn version_of(text: &str) -> Option<i64> {
    let body = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc: DocumentMut = body.parse().ok()?;
    Some(doc.get("version").and_then(Item::as_integer).unwrap_or(1))
}

fn accepts(release: Release, version: i64) -> bool {
    match release {
        Release::V1_7 => (1..=2).contains(&version),
        Release::V2_1 => (2..=3).contains(&version),
    }
}

/// Runs the patcher on `input`, writing to `out`; returns the path containerd should load
/// (the input itself when nothing needed changing).
fn patch(args: &[&str], input: &Path, out: &Path) -> PathBuf {
    let status = Command::new(BIN)
        .args(args)
        .arg("--config-file")
        .arg(input)
        .arg("--output")
        .arg(out)
        .arg("--quiet")
        // A k3s-rendered fixture is refused without it (k3s rewrites that file); what is
        // checked here is that containerd loads what we write.
        .arg("--force")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{args:?} on {}: {}",
        input.display(),
        String::from_utf8_lossy(&status.stderr)
    );
    if out.exists() {
        out.to_owned()
    } else {
        input.to_owned()
    }
}

fn get<'a>(item: &'a Item, path: &[&str]) -> Option<&'a Item> {
    path.iter()
        .try_fold(item, |it, k| it.as_table_like()?.get(k))
}

fn nri_disable(dump: &str) -> Option<bool> {
    let doc: DocumentMut = dump.parse().unwrap();
    get(
        doc.as_item(),
        &["plugins", "io.containerd.nri.v1.nri", "disable"],
    )?
    .as_bool()
}

/// `(name, runtime_type, base_runtime_spec)` of every CRI runtime in a dump.
fn runtimes_in(dump: &str, release: Release) -> Vec<(String, String, String)> {
    let doc: DocumentMut = dump.parse().unwrap();
    let cri = match release {
        Release::V1_7 => "io.containerd.grpc.v1.cri",
        Release::V2_1 => "io.containerd.cri.v1.runtime",
    };
    let Some(rts) = get(doc.as_item(), &["plugins", cri, "containerd", "runtimes"])
        .and_then(Item::as_table_like)
    else {
        return Vec::new();
    };
    rts.iter()
        .map(|(name, rt)| {
            let s = |k: &str| {
                get(rt, &[k])
                    .and_then(Item::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            (name.to_owned(), s("runtime_type"), s("base_runtime_spec"))
        })
        .collect()
}

/// Names of the runtimes whose `base_runtime_spec` is ours in a patched file, looking only at
/// the CRI table that `release` reads for a file of `version` (containerd 2.x migrates a
/// version-2 file's `io.containerd.grpc.v1.cri` into its split plugins and reads 2.x names in it
/// too).
fn patched_runtimes(text: &str, release: Release, version: i64) -> Vec<String> {
    let doc: DocumentMut = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .parse()
        .unwrap();
    let cri: &[&str] = match (release, version) {
        (Release::V1_7, 1) => &["cri"],
        (Release::V1_7, _) => &["io.containerd.grpc.v1.cri"],
        // AKS ships `version = 2` files with 2.x plugin names; 2.1 reads both.
        (Release::V2_1, 2) => &["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"],
        (Release::V2_1, _) => &["io.containerd.cri.v1.runtime"],
    };
    let mut names = Vec::new();
    for c in cri {
        if let Some(rts) = get(doc.as_item(), &["plugins", c, "containerd", "runtimes"])
            .and_then(Item::as_table_like)
        {
            for (name, rt) in rts.iter() {
                if get(rt, &["base_runtime_spec"]).and_then(Item::as_str) == Some(SPEC) {
                    names.push(name.to_owned());
                }
            }
        }
    }
    names
}

fn check_release(release: Release) {
    let bin = require!(runtimes::containerd(release), runtimes::missing(release));
    let tmp = tempfile::tempdir().unwrap();
    let (mut loaded, mut enabled_by_us, mut patched_specs) = (0, 0, 0);
    for (i, input) in fixtures().into_iter().enumerate() {
        let text = fs::read_to_string(&input).unwrap();
        let Some(version) = version_of(&text) else {
            continue;
        };
        if !accepts(release, version) {
            continue;
        }
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        // Imports that cannot be read (a plain path missing here): containerd's daemon refuses
        // the config, and so do we (2.1's `config dump` ignores the missing file).
        if let Err(e) = rthooks::effective::load(&input, None) {
            eprintln!("{release}: imports not loadable here, left out: {name}: {e}");
            continue;
        }
        // A config containerd refuses as it is (e.g. one whose `imports` name files this machine
        // lacks) says nothing about our output.
        let before = match runtimes::config_dump(&bin, &input) {
            Ok(d) => d,
            Err(e) => {
                eprintln!(
                    "{release}: not loadable as shipped, left out: {name}: {}",
                    e.lines().last().unwrap_or("")
                );
                continue;
            }
        };

        let out = tmp.path().join(format!("{i}-nri.toml"));
        let patched = patch(&["patch-containerd-conf", "enable-nri"], &input, &out);
        let after = runtimes::config_dump(&bin, &patched)
            .unwrap_or_else(|e| panic!("{release} rejects enable-nri output of {name}: {e}"));
        assert_eq!(
            nri_disable(&after),
            Some(false),
            "{release}, {name}: NRI not enabled in dump"
        );
        if nri_disable(&before) == Some(true) {
            enabled_by_us += 1;
        }

        let out = tmp.path().join(format!("{i}-hook.toml"));
        let patched = patch(
            &[
                "patch-containerd-conf",
                "add-oci-hook",
                "--runtime-spec",
                SPEC,
            ],
            &input,
            &out,
        );
        let after = runtimes::config_dump(&bin, &patched)
            .unwrap_or_else(|e| panic!("{release} rejects add-oci-hook output of {name}: {e}"));
        // Every runc runtime the patched file points at our spec, in a CRI table this release
        // reads, must have it in containerd's view; runtimes it did not touch keep theirs.
        let ours = patched_runtimes(&fs::read_to_string(&patched).unwrap(), release, version);
        let old = runtimes_in(&before, release);
        for (rt, _, spec) in runtimes_in(&after, release) {
            if ours.contains(&rt) {
                assert_eq!(
                    spec, SPEC,
                    "{release}, {name}: runtime {rt} lacks the base spec"
                );
            } else {
                let was = old
                    .iter()
                    .find(|(n, ..)| *n == rt)
                    .map(|(_, _, s)| s.clone());
                assert_eq!(Some(spec), was, "{release}, {name}: runtime {rt} changed");
            }
        }
        for rt in &ours {
            assert!(
                runtimes_in(&after, release).iter().any(|(n, ..)| n == rt),
                "{release}, {name}: runtime {rt} missing from the dump"
            );
        }
        patched_specs += ours.len();
        loaded += 1;
    }
    eprintln!(
        "{release}: loaded {loaded} patched configs; NRI was off and is now on in \
         {enabled_by_us}; {patched_specs} runtimes now use the base spec"
    );
    assert!(
        patched_specs >= 5,
        "{release}: too few runtimes were patched to mean anything"
    );
    assert!(
        loaded >= 8,
        "{release}: only {loaded} fixtures could be checked"
    );
    assert!(
        enabled_by_us >= 1 || release == Release::V2_1,
        "{release}: no fixture had NRI off"
    );
}

#[test]
fn containerd_1_7_loads_every_patched_config_with_nri_enabled() {
    check_release(Release::V1_7);
}

#[test]
fn containerd_2_1_loads_every_patched_config_with_nri_enabled() {
    check_release(Release::V2_1);
}

/// The reason `enable-nri` exists: containerd 1.7's own default config has NRI off, and our
/// output of it has NRI on.
#[test]
fn containerd_1_7_default_config_has_nri_off_until_patched() {
    let bin = require!(
        runtimes::containerd(Release::V1_7),
        runtimes::missing(Release::V1_7)
    );
    let tmp = tempfile::tempdir().unwrap();
    let default = tmp.path().join("config.toml");
    fs::write(&default, runtimes::config_default(&bin).unwrap()).unwrap();
    let dump = runtimes::config_dump(&bin, &default).unwrap();
    assert_eq!(nri_disable(&dump), Some(true));
    let out = tmp.path().join("patched.toml");
    patch(&["patch-containerd-conf", "enable-nri"], &default, &out);
    assert_eq!(
        nri_disable(&runtimes::config_dump(&bin, &out).unwrap()),
        Some(false)
    );
}
