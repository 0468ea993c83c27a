//! Every edit over the real distribution configs in `../shared/fixtures` (beside the checkout).
//!
//! For each file: the output parses; comparing parsed values, only the keys the edit is about
//! differ; every input line other than the edited ones survives, in order; and a second run
//! changes nothing. The value comparison here is written independently of the tool's own
//! post-edit check, so that a bug in one is caught by the other.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::{Path, PathBuf};

use rthooks::edit::{Edit, EditError};
use rthooks::patch::patch_text;
use toml_edit::DocumentMut;

mod support;
use support::values::{differences, parse};

struct Case {
    name: &'static str,
    edit: fn(&mut DocumentMut) -> Result<Edit, EditError>,
    /// Whether a changed value at this path is what the edit is for.
    intended: fn(&[String]) -> bool,
    /// The key names that may appear on a line the edit rewrites.
    line_keys: &'static [&'static str],
}

fn cases_for(dir: &str) -> Vec<Case> {
    match dir {
        "containerd" => vec![
            Case {
                name: "enable-nri",
                edit: rthooks::containerd::enable_nri,
                intended: |p| {
                    p.len() >= 2
                        && p[0] == "plugins"
                        && (p[1] == "nri" || p[1] == "io.containerd.nri.v1.nri")
                },
                line_keys: &["disable"],
            },
            Case {
                name: "add-oci-hook",
                edit: |doc| {
                    rthooks::containerd::add_oci_hook(doc, "/etc/containerd/base-spec.json")
                },
                intended: |p| p.last().is_some_and(|k| k == "base_runtime_spec"),
                line_keys: &["base_runtime_spec"],
            },
        ],
        "crio" => vec![Case {
            name: "enable-annotations",
            edit: |doc| {
                rthooks::crio::enable_annotations(
                    doc,
                    &[
                        "io.kubernetes.cri-o.Devices".into(),
                        "tetragon.io/policy".into(),
                    ],
                )
            },
            intended: |p| p.last().is_some_and(|k| k == "allowed_annotations"),
            line_keys: &["allowed_annotations", "]"],
        }],
        _ => vec![],
    }
}

fn shared_fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    dir.is_dir().then_some(dir)
}

#[test]
fn every_edit_over_shared_fixtures() {
    let root = require!(
        shared_fixtures(),
        "../shared/fixtures is not beside the checkout"
    );
    let mut checked = 0;
    let mut changed = 0;
    for dir in ["containerd", "crio"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no fixtures in {dir}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for case in cases_for(dir) {
                let label = format!("{} on {}", case.name, file.display());
                let patched = match patch_text(&file, &text, case.edit) {
                    Ok(p) => p,
                    Err(err) => {
                        // The only refusal a real config may get: a cri-o drop-in with no
                        // runtime table, which has nothing to extend.
                        let msg = err.to_string();
                        assert!(
                            case.name == "enable-annotations"
                                && msg.contains("has no runtime table"),
                            "{label}: unexpected error: {msg}"
                        );
                        assert!(!text.contains("[crio.runtime.runtimes."), "{label}: {msg}");
                        checked += 1;
                        continue;
                    }
                };
                checked += 1;
                if patched.after != text {
                    changed += 1;
                }

                // Parsed values: only the intended keys differ.
                let (before, after) = (parse(&text), parse(&patched.after));
                let mut diffs = Vec::new();
                differences(Some(&before), Some(&after), &mut Vec::new(), &mut diffs);
                for d in &diffs {
                    assert!((case.intended)(d), "{label}: unintended change at {d:?}");
                }
                assert_eq!(diffs.is_empty(), patched.edit.is_unchanged(), "{label}");

                // Every other input line survives, in order.
                let old: Vec<&str> = text.lines().collect();
                let new: Vec<&str> = patched.after.lines().collect();
                let ops = similar::capture_diff_slices(similar::Algorithm::Myers, &old, &new);
                for op in ops {
                    if let similar::DiffOp::Delete {
                        old_index, old_len, ..
                    }
                    | similar::DiffOp::Replace {
                        old_index, old_len, ..
                    } = op
                    {
                        for line in &old[old_index..old_index + old_len] {
                            assert!(
                                case.line_keys.iter().any(|k| line.contains(k)),
                                "{label}: line lost or changed: {line:?}"
                            );
                        }
                    }
                }

                // Idempotent.
                let again = patch_text(&file, &patched.after, case.edit).unwrap();
                assert!(
                    again.edit.is_unchanged(),
                    "{label}: second run: {:?}",
                    again.edit
                );
                assert_eq!(
                    again.after, patched.after,
                    "{label}: second run changed bytes"
                );
            }
        }
    }
    eprintln!("checked {checked} edits over the shared fixtures, {changed} of them changed a file");
    assert!(
        changed > 10,
        "the corpus should exercise real changes, got {changed}"
    );
}
