//! Our drop-in read by the running daemon, not just by `config dump`: containerd 1.7 and 2.1
//! started with a main config (NRI off in it) that imports `conf.d/*.toml`, plus the drop-in
//! `enable-nri --drop-in auto` wrote, open the NRI socket and our plugin registers; a CRI
//! container created on a containerd whose drop-in comes from `add-oci-hook --drop-in auto`
//! starts from that base runtime spec.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use toml_edit::{Array, DocumentMut, value};

mod support;
use support::child::ChildGuard;
use support::containerd::{Containerd, Setup};
use support::cri::{self, Cri, PodSpec};
use support::runtimes::{self, Release};

const WAIT: Duration = Duration::from_secs(20);

fn import_conf_d(doc: &mut DocumentMut) {
    let mut a = Array::new();
    a.push("conf.d/*.toml");
    doc.insert("imports", value(a));
}

/// Runs our patcher in drop-in mode on a configured (not started) containerd.
fn drop_in(ctrd: &Containerd, args: &[&str]) {
    fs::create_dir_all(ctrd.paths.base.join("conf.d")).unwrap();
    let out = support::cmd::bin()
        .arg("patch-containerd-conf")
        .args(args)
        .args(["--drop-in", "auto", "--containerd-version"])
        .arg(ctrd.release.as_str())
        .arg("--config-file")
        .arg(&ctrd.paths.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ctrd.paths
            .base
            .join("conf.d/99-tetragon-oci-hook.toml")
            .is_file()
    );
}

fn nri_socket_and_registration(release: Release) {
    require!(runtimes::containerd(release), runtimes::missing(release));
    let setup = Setup::default_config().edit(move |doc, _| {
        import_conf_d(doc);
        // 2.1's default has NRI on: turn it off in the main file, so the drop-in must win.
        if release == Release::V2_1 {
            doc["plugins"]["io.containerd.nri.v1.nri"]["disable"] = value(true);
        }
    });
    let ctrd = Containerd::configure(release, setup).unwrap();
    drop_in(&ctrd, &["enable-nri"]);
    let ctrd = ctrd.started();
    assert!(ctrd.nri_socket().exists(), "{release}: {}", ctrd.log());

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tetragon-oci-hook");
    fs::write(&src, b"#!/bin/sh\nexit 0\n").unwrap();
    fs::create_dir(dir.path().join("install")).unwrap();
    let child = support::cmd::nri_plugin(
        &src,
        &dir.path().join("install"),
        Path::new("/opt/tetragon"),
        ctrd.nri_socket(),
    )
    .stderr(fs::File::create(dir.path().join("plugin.log")).unwrap())
    .spawn()
    .unwrap();
    let _plugin = ChildGuard::new(child);
    ctrd.wait_log("plugin \\\"01-tetragon\\\" connected", WAIT)
        .unwrap_or_else(|log| panic!("{release}: plugin not connected:\n{log}"));
}

#[test]
fn containerd_1_7_with_our_nri_drop_in_opens_the_socket_and_registers_the_plugin() {
    nri_socket_and_registration(Release::V1_7);
}

#[test]
fn containerd_2_1_with_our_nri_drop_in_opens_the_socket_and_registers_the_plugin() {
    nri_socket_and_registration(Release::V2_1);
}

fn container_spec_from_drop_in(release: Release) {
    let bin_dir = require!(runtimes::bin_dir(release), runtimes::missing(release));
    let work = tempfile::tempdir().unwrap();
    // A base spec: the release's own default OCI spec plus an annotation to find it by.
    let out = std::process::Command::new(bin_dir.join("ctr"))
        .args(["oci", "spec"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut spec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    spec["annotations"] = serde_json::json!({ "io.tetragon.test/base-spec": "from-drop-in" });
    let spec_path = work.path().join("base-spec.json");
    fs::write(&spec_path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    let setup = cri::containerd_setup(release).edit(|doc, _| import_conf_d(doc));
    let ctrd = Containerd::configure(release, setup).unwrap();
    drop_in(
        &ctrd,
        &[
            "add-oci-hook",
            "--runtime-spec",
            spec_path.to_str().unwrap(),
        ],
    );
    let ctrd = ctrd.started();
    cri::import_image(&bin_dir.join("ctr"), ctrd.grpc_socket(), work.path()).unwrap();
    let logs = work.path().join("pod-logs");
    fs::create_dir_all(&logs).unwrap();
    let mut cri = Cri::connect(ctrd.grpc_socket()).unwrap();
    let pod = PodSpec {
        name: "dropin".into(),
        namespace: "default".into(),
        uid: format!("uid-dropin-{}", std::process::id()),
    };
    let (pod_id, sandbox) = cri.run_pod(&pod, &logs).unwrap();
    let result = (|| {
        let cid = cri
            .create_container(&pod_id, &sandbox, "app", &["/bin/sleep", "600"])
            .map_err(|e| format!("create: {e}"))?;
        let (_, info) = cri
            .container_status(&cid)
            .map_err(|e| format!("status: {e}"))?;
        Ok::<_, String>(info["runtimeSpec"]["annotations"].clone())
    })();
    if let Err(e) = cri.remove_pod(&pod_id) {
        eprintln!("teardown: removing pod {pod_id}: {e}");
    }
    let annotations = result.unwrap_or_else(|e| panic!("{release}: {e}\n{}", ctrd.log()));
    assert_eq!(
        annotations["io.tetragon.test/base-spec"], "from-drop-in",
        "{release}: {annotations}"
    );
}

#[test]
fn containerd_1_7_container_starts_from_the_base_spec_of_our_drop_in() {
    container_spec_from_drop_in(Release::V1_7);
}

#[test]
fn containerd_2_1_container_starts_from_the_base_spec_of_our_drop_in() {
    container_spec_from_drop_in(Release::V2_1);
}
