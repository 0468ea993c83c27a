//! Property tests: arbitrary TOML documents through the three edits.
//!
//! Documents are generated from the pieces real configs are made of (versions, plugin and
//! runtime tables in every quoting and layout, dotted keys, inline tables, comments, CRLF), with
//! values of the right and the wrong types. For each document and edit: no panic; a refusal
//! leaves no output; a result parses, differs from the input only at the keys the edit is about
//! (compared by value, independently of the tool's own check), and a second run changes nothing.
//! A second property feeds arbitrary text and checks only that nothing panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;

use proptest::prelude::*;
use rthooks::edit::{Edit, EditError};
use rthooks::patch::patch_text;
use toml_edit::DocumentMut;

mod support;
use support::values::{differences, parse};

fn quoted(name: &'static str) -> impl Strategy<Value = String> {
    let bare = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let mut options = vec![format!("\"{name}\""), format!("'{name}'")];
    if bare {
        options.push(name.to_owned());
    }
    proptest::sample::select(options)
}

fn table_path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("plugins".to_owned()),
        quoted("io.containerd.nri.v1.nri").prop_map(|k| format!("plugins.{k}")),
        Just("plugins.nri".to_owned()),
        quoted("io.containerd.grpc.v1.cri").prop_map(|k| format!("plugins.{k}")),
        (quoted("io.containerd.grpc.v1.cri"), quoted("runc"))
            .prop_map(|(c, r)| format!("plugins.{c}.containerd.runtimes.{r}")),
        (quoted("io.containerd.cri.v1.runtime"), quoted("kata"))
            .prop_map(|(c, r)| format!("plugins.{c}.containerd.runtimes.{r}")),
        Just("plugins.cri.containerd.default_runtime".to_owned()),
        Just("plugins.cri.containerd.runtimes.runc.options".to_owned()),
        Just("crio.runtime".to_owned()),
        quoted("crun").prop_map(|r| format!("crio.runtime.runtimes.{r}")),
        Just("crio.runtime.runtimes.runc".to_owned()),
        Just("grpc".to_owned()),
        Just("metrics".to_owned()),
    ]
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("\"\"".to_owned()),
        Just("''".to_owned()),
        Just("\"yes\"".to_owned()),
        Just("3".to_owned()),
        Just("\"io.containerd.runc.v2\"".to_owned()),
        Just("'io.containerd.runc.v2'".to_owned()),
        Just("\"io.containerd.kata.v2\"".to_owned()),
        Just("\"/etc/containerd/base-spec.json\"".to_owned()),
        Just("\"/other.json\"".to_owned()),
        Just("[]".to_owned()),
        Just("[\"a\", \"tetragon.io/policy\"]".to_owned()),
        Just("[\n  \"a\", # why\n  \"b\",\n]".to_owned()),
        Just("[1, 2]".to_owned()),
        Just("{ disable = true }".to_owned()),
        Just("{ runtime_type = \"io.containerd.runc.v2\", base_runtime_spec = \"\" }".to_owned()),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("disable".to_owned()),
        Just("runtime_type".to_owned()),
        Just("base_runtime_spec".to_owned()),
        Just("allowed_annotations".to_owned()),
        Just("socket_path".to_owned()),
        quoted("io.containerd.nri.v1.nri").prop_map(|k| format!("{k}.disable")),
        Just("runtimes.runc".to_owned()),
        Just("runc".to_owned()),
        Just("nri".to_owned()),
        Just("address".to_owned()),
    ]
}

/// A whole runtime table, since `add-oci-hook` needs a runc `runtime_type` and a missing or
/// empty `base_runtime_spec` in the same table.
fn runtime_block() -> impl Strategy<Value = String> {
    let cri = prop_oneof![
        quoted("io.containerd.grpc.v1.cri"),
        quoted("io.containerd.cri.v1.runtime"),
        Just("cri".to_owned())
    ];
    let spec = proptest::sample::select(vec![
        "",
        "\n  base_runtime_spec = \"\"",
        "\n  base_runtime_spec = ''  # empty",
        "\n  base_runtime_spec = \"/other.json\"",
    ]);
    (cri, quoted("runc"), spec).prop_map(|(c, r, s)| {
        format!(
            "[plugins.{c}.containerd.runtimes.{r}]\n  runtime_type = \"io.containerd.runc.v2\"{s}"
        )
    })
}

fn line() -> impl Strategy<Value = String> {
    let indent = proptest::sample::select(vec!["", "  ", "    ", "\t"]);
    let comment = proptest::sample::select(vec!["", " # note", "  #x"]);
    prop_oneof![
        4 => (indent.clone(), key(), scalar(), comment.clone())
            .prop_map(|(i, k, v, c)| format!("{i}{k} = {v}{c}")),
        2 => (indent.clone(), table_path(), comment)
            .prop_map(|(i, p, c)| format!("{i}[{p}]{c}")),
        1 => Just(String::new()),
        1 => indent.prop_map(|i| format!("{i}# a comment")),
        1 => runtime_block(),
    ]
}

fn document() -> impl Strategy<Value = String> {
    let version = proptest::sample::select(vec![
        "",
        "version = 1\n",
        "version = 2\n",
        "version = 2\n",
        "version = 3\n",
        "version = 4\n",
        "version = 5\n",
        "version = '2'\n",
    ]);
    (
        version,
        proptest::collection::vec(line(), 0..14),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(v, lines, crlf, final_newline)| {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut text = v.replace('\n', eol);
            text.push_str(&lines.join(eol));
            if final_newline && !lines.is_empty() {
                text.push_str(eol);
            }
            text
        })
}

type EditFn = fn(&mut DocumentMut) -> Result<Edit, EditError>;

/// An edit's name, the edit, and which changed paths it is allowed to cause.
type Case = (&'static str, EditFn, fn(&[String]) -> bool);

fn edits() -> Vec<Case> {
    vec![
        ("enable-nri", rthooks::containerd::enable_nri, |p| {
            p.len() >= 2
                && p[0] == "plugins"
                && (p[1] == "nri" || p[1] == "io.containerd.nri.v1.nri")
        }),
        (
            "add-oci-hook",
            |d| rthooks::containerd::add_oci_hook(d, "/etc/containerd/base-spec.json"),
            |p| p.last().is_some_and(|k| k == "base_runtime_spec"),
        ),
        (
            "enable-annotations",
            |d| rthooks::crio::enable_annotations(d, &["tetragon.io/policy".into(), "b".into()]),
            |p| p.last().is_some_and(|k| k == "allowed_annotations"),
        ),
    ]
}

fn check(text: &str) -> Result<(), TestCaseError> {
    let valid = text
        .strip_prefix('\u{feff}')
        .unwrap_or(text)
        .parse::<DocumentMut>()
        .is_ok();
    for (name, edit, intended) in edits() {
        let patched = match patch_text(Path::new("t.toml"), text, edit) {
            Ok(p) => p,
            Err(err) => {
                // A refusal must be about the input: a parse error for text that is not TOML,
                // a located config error otherwise, never the tool's own post-edit check.
                let located = err.downcast_ref::<rthooks::patch::ConfigError>().is_some();
                prop_assert!(
                    if valid { located } else { !located },
                    "{name}: unexpected refusal: {err:#}\n--- in:\n{text}"
                );
                continue;
            }
        };
        prop_assert!(valid, "{name}: patched a document that does not parse");
        let before = parse(text);
        let after = parse(&patched.after);
        let mut diffs = Vec::new();
        differences(Some(&before), Some(&after), &mut Vec::new(), &mut diffs);
        for d in &diffs {
            prop_assert!(
                intended(d),
                "{name}: changed {d:?}\n--- in:\n{text}\n--- out:\n{}",
                patched.after
            );
        }
        prop_assert_eq!(diffs.is_empty(), patched.edit.is_unchanged(), "{}", name);
        let again = patch_text(Path::new("t.toml"), &patched.after, edit)
            .map_err(|e| TestCaseError::fail(format!("{name}: second run failed: {e}")))?;
        prop_assert!(
            again.edit.is_unchanged(),
            "{name}: second run: {:?}\n{}",
            again.edit,
            patched.after
        );
        prop_assert_eq!(&again.after, &patched.after, "{}", name);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn edits_of_generated_documents_are_exact_and_idempotent(text in document()) {
        check(&text)?;
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        for (_, edit, _) in edits() {
            let _ = patch_text(Path::new("t.toml"), &text, edit);
        }
    }
}

/// The property above would pass vacuously if the generator made only broken or untouched
/// documents; check that a fair share is valid TOML that each edit really changes.
#[test]
fn generated_documents_exercise_every_edit() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = document();
    let (mut valid, mut changed) = (0usize, [0usize; 3]);
    let total = 2000;
    for _ in 0..total {
        let text = strategy.new_tree(&mut runner).unwrap().current();
        if text.parse::<DocumentMut>().is_err() {
            continue;
        }
        valid += 1;
        for (i, (_, edit, _)) in edits().into_iter().enumerate() {
            if patch_text(Path::new("t.toml"), &text, edit).is_ok_and(|p| !p.edit.is_unchanged()) {
                changed[i] += 1;
            }
        }
    }
    eprintln!("{valid} of {total} generated documents parse; changed by each edit: {changed:?}");
    assert!(
        valid * 5 > total,
        "only {valid} of {total} generated documents parse"
    );
    for (i, n) in changed.iter().enumerate() {
        assert!(
            *n * 20 > valid,
            "edit {i} changed only {n} of {valid} valid documents"
        );
    }
}
