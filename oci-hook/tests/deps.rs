//! The hook runs at every container start on every node, so what it links is checked here: its
//! normal dependency tree (read from `cargo metadata`) must not contain the setup package nor the
//! crates only the patcher needs.

// Test code: a panic is how a check fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

/// Crates the hook must never depend on, directly or not.
const FORBIDDEN: &[&str] = &["tetragon-rthooks", "toml_edit", "similar", "sha2"];

/// Names of the packages in `package`'s normal (non-dev, non-build) dependency tree.
fn normal_tree(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = names
        .iter()
        .find(|(_, name)| **name == package)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("{package} is not in the workspace"));
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            // `kind` is null for a normal dependency, "dev" or "build" otherwise.
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                todo.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    seen.into_iter().map(|id| names[id].to_owned()).collect()
}

#[test]
fn the_hook_depends_on_nothing_of_the_setup_package() {
    let tree = normal_tree("tetragon-oci-hook");
    // The walk does follow dependencies (else the check below would pass on nothing).
    for expected in ["tonic", "prost", "cel", "http"] {
        assert!(tree.contains(expected), "{expected} missing from {tree:?}");
    }
    let found: Vec<_> = FORBIDDEN.iter().filter(|f| tree.contains(**f)).collect();
    assert!(
        found.is_empty(),
        "the hook's dependency tree gained {found:?}; it must stay free of the patcher"
    );
    // And the setup package does pull them in, so the names above are the right ones.
    let setup = normal_tree("tetragon-rthooks");
    for f in FORBIDDEN.iter().skip(1) {
        assert!(setup.contains(*f), "{f} not in the setup package's tree");
    }
    assert!(setup.contains("tetragon-oci-hook"));
}

/// Crates only the hook binary needs (the `client` feature): the setup tool validates hook
/// arguments without them, and runs the installed hook for what needs them (CEL, the agent).
const CLIENT_ONLY: &[&str] = &[
    "tokio",
    "hyper",
    "hyper-util",
    "tonic",
    "tower-service",
    "cel",
    "regex",
    "regex-automata",
    "regex-syntax",
];

/// Names in `cargo tree -p <package> -e normal`: unlike `cargo metadata`, whose resolve unifies
/// the features of every workspace member, this resolves features as building that package alone
/// does (what the image build and `scripts/bench-process.sh` do for the setup binary).
fn tree_alone(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none"])
        .args(["--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_setup_package_links_no_grpc_client_cel_or_regex_engine() {
    let setup = tree_alone("tetragon-rthooks");
    // The walk sees the hook's library and what the setup tool does need.
    for expected in ["tetragon-oci-hook", "toml_edit", "prost"] {
        assert!(
            setup.contains(expected),
            "{expected} missing from {setup:?}"
        );
    }
    let found: Vec<_> = CLIENT_ONLY.iter().filter(|c| setup.contains(**c)).collect();
    assert!(
        found.is_empty(),
        "the setup package's tree gained {found:?}: depend on `tetragon-oci-hook` with \
         `default-features = false` and keep these behind its `client` feature"
    );
    // The hook built alone still has every one of them (its default `client` feature).
    let hook = tree_alone("tetragon-oci-hook");
    let missing: Vec<_> = CLIENT_ONLY.iter().filter(|c| !hook.contains(**c)).collect();
    assert!(missing.is_empty(), "the hook lost {missing:?}");
}
