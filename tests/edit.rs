//! Snapshot tests of every edit over the repo's own fixtures (`tests/fixtures/`).
//!
//! Each snapshot is the unified diff the user would review (its context lines show that the
//! neighbours were left alone) followed by what the tool reports, or the error it gives. Every
//! fixture is also checked for idempotence: patching the output again changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use rthooks::edit::{Edit, EditError};
use rthooks::patch::patch_text;
use rthooks::plan::unified_diff;
use toml_edit::DocumentMut;

/// Shows the bytes a terminal would hide: carriage returns and a byte-order mark.
fn visible(s: &str) -> String {
    s.replace('\r', "<CR>").replace('\u{feff}', "<BOM>")
}

fn report(path: &Path, edit_fn: &dyn Fn(&mut DocumentMut) -> Result<Edit, EditError>) -> String {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    match patch_text(Path::new(&name), &text, edit_fn) {
        Err(err) => {
            let mut out = format!("error: {err}");
            for cause in err.chain().skip(1) {
                out.push_str(&format!("\ncaused by: {cause}"));
            }
            out
        }
        Ok(patched) => {
            // A second run over the output must find nothing to do and keep every byte.
            let again = patch_text(Path::new(&name), &patched.after, edit_fn).unwrap();
            assert!(
                again.edit.is_unchanged(),
                "{name}: second run changed {:?}",
                again.edit
            );
            assert_eq!(
                again.after, patched.after,
                "{name}: second run changed bytes"
            );
            let mut out = visible(&unified_diff(&patched.before, &patched.after, &name, &name));
            for c in &patched.edit.changes {
                out.push_str(&format!("change: {c}\n"));
            }
            for n in &patched.edit.notes {
                out.push_str(&format!("note: {n}\n"));
            }
            for w in &patched.edit.warnings {
                out.push_str(&format!("warning: {w}\n"));
            }
            out
        }
    }
}

#[test]
fn enable_nri() {
    insta::glob!("fixtures/containerd/*.toml", |path| {
        insta::assert_snapshot!(report(path, &rthooks::containerd::enable_nri));
    });
}

#[test]
fn add_oci_hook() {
    insta::glob!("fixtures/containerd/*.toml", |path| {
        insta::assert_snapshot!(report(path, &|doc| {
            rthooks::containerd::add_oci_hook(doc, "/etc/containerd/base-spec.json")
        }));
    });
}

#[test]
fn enable_annotations() {
    let annotations = [
        "io.kubernetes.cri-o.Devices".to_owned(),
        "tetragon.io/policy".to_owned(),
    ];
    insta::glob!("fixtures/crio/*.conf", |path| {
        insta::assert_snapshot!(report(path, &|doc| {
            rthooks::crio::enable_annotations(doc, &annotations)
        }));
    });
}

/// Whole-file results for a few fixtures, as cargo's `out/` directories: the complete output a
/// user would install.
#[test]
fn enable_nri_whole_files() {
    for name in [
        "comments-around-every-key-v2.toml",
        "cni-keys-last-v2.toml",
        "tables-out-of-order-v2.toml",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/containerd")
            .join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let patched = patch_text(&path, &text, rthooks::containerd::enable_nri).unwrap();
        insta::assert_snapshot!(format!("enable_nri_whole_file@{name}"), patched.after);
    }
}

#[test]
fn enable_nri_preserves_crlf_line_endings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/containerd/cni-keys-last-crlf-v2.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let patched = patch_text(&path, &text, rthooks::containerd::enable_nri).unwrap();
    assert!(patched.after.len() > text.len());
    assert_eq!(
        patched.after.matches('\n').count(),
        patched.after.matches("\r\n").count()
    );
    // The LF twin gives the same result but for the line endings.
    let lf = std::fs::read_to_string(path.with_file_name("cni-keys-last-v2.toml")).unwrap();
    let lf_patched = patch_text(&path, &lf, rthooks::containerd::enable_nri).unwrap();
    assert_eq!(patched.after.replace("\r\n", "\n"), lf_patched.after);
}

/// On minikube's layout (plugin tables indented two spaces, keys four, no blank line between
/// them) the added block must read exactly as in Tetragon's runtime-hooks docs, right after the
/// last plugin table.
#[test]
fn enable_nri_on_minikube_layout_matches_tetragon_docs() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/containerd/minikube-style-indented-v2.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let patched = patch_text(&path, &text, rthooks::containerd::enable_nri).unwrap();
    let docs_block = r#"    startup_delay = "100ms"
  [plugins."io.containerd.nri.v1.nri"]
    disable = false
    disable_connections = false
    plugin_config_path = "/etc/nri/conf.d"
    plugin_path = "/opt/nri/plugins"
    plugin_registration_timeout = "5s"
    plugin_request_timeout = "2s"
    socket_path = "/var/run/nri/nri.sock"
"#;
    assert!(patched.after.ends_with(docs_block), "{}", patched.after);
    let added = docs_block.split_once('\n').unwrap().1;
    assert_eq!(patched.after.strip_suffix(added), Some(text.as_str()));
}
