//! The NRI plugin with a real containerd (1.7 and 2.1, fetched by `scripts/fetch-containerd.sh`)
//! on private sockets and dirs: registration, re-registration after a containerd restart,
//! SIGTERM, and pre-launched mode from `plugin_path`. `E2E_REQUIRED=1` turns a missing release
//! into a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod support;
use support::child::ChildGuard;
use support::containerd::{BOOTED, Containerd, Setup};
use support::runtimes::Release;

const BIN: &str = env!("CARGO_BIN_EXE_tetragon-oci-hook-setup");
const WAIT: Duration = Duration::from_secs(20);

/// The line containerd logs once the plugin is connected (1.7 and 2.1 alike).
fn connected(name: &str) -> String {
    format!("plugin \\\"{name}\\\" connected")
}

fn start(release: Release, setup: Setup) -> Option<Containerd> {
    support::skip::require(
        support::runtimes::containerd(release),
        support::runtimes::missing(release),
    )?;
    Containerd::start(release, setup)
}

/// `install --interface nri-hook --daemonize` against containerd's NRI socket.
struct Plugin {
    child: ChildGuard,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Plugin {
    fn start(socket: &Path) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("tetragon-oci-hook");
        fs::write(&src, b"#!/bin/sh\nexit 0\n").unwrap();
        fs::create_dir(dir.path().join("install")).unwrap();
        let log = dir.path().join("plugin.log");
        let child = support::cmd::nri_plugin(
            &src,
            &dir.path().join("install"),
            Path::new("/opt/tetragon"),
            socket,
        )
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
        Self {
            child: ChildGuard::new(child),
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn registrations(&self) -> usize {
        self.log().matches("01-tetragon: registered").count()
    }

    fn wait_registrations(&self, n: usize) -> Instant {
        let deadline = Instant::now() + WAIT;
        while self.registrations() < n {
            assert!(
                Instant::now() < deadline,
                "plugin not registered {n} times:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        Instant::now()
    }

    fn terminate(&mut self) -> i32 {
        self.child.signal(libc::SIGTERM);
        let st = self.child.wait_for(WAIT).expect("plugin ignored SIGTERM");
        st.code().unwrap_or(-1)
    }
}

fn nri_socket_presence(release: Release) {
    let Some(default) = start(release, Setup::default_config()) else {
        return;
    };
    let ours = Containerd::start(release, Setup::enable_nri()).unwrap();
    match release {
        // NRI is off in 1.7's default config; our enable-nri output turns it on.
        Release::V1_7 => assert!(!default.nri_socket().exists(), "{}", default.log()),
        // On by default in 2.x; enable-nri leaves the config as it is.
        Release::V2_1 => assert!(default.nri_socket().exists(), "{}", default.log()),
    }
    assert!(ours.nri_socket().exists(), "{}", ours.log());
}

#[test]
fn nri_socket_only_with_enable_nri_on_1_7() {
    nri_socket_presence(Release::V1_7);
}

#[test]
fn nri_socket_by_default_on_2_1() {
    nri_socket_presence(Release::V2_1);
}

fn registers_again_after_restart_and_exits_zero_on_sigterm(release: Release) {
    let Some(mut ctrd) = start(release, Setup::enable_nri()) else {
        return;
    };
    let mut plugin = Plugin::start(ctrd.nri_socket());
    plugin.wait_registrations(1);
    ctrd.wait_log(&connected("01-tetragon"), WAIT)
        .unwrap_or_else(|log| panic!("{release}: no connect line in:\n{log}"));

    for round in 2..=3 {
        let from = ctrd.log_len();
        ctrd.stop();
        let restarted = Instant::now();
        ctrd.restart();
        let booted = Instant::now();
        let registered = plugin.wait_registrations(round);
        ctrd.wait_log_since(from, &connected("01-tetragon"), WAIT)
            .unwrap_or_else(|log| panic!("{release}: not connected after restart:\n{log}"));
        // Measured, not asserted (timing belongs in benchmarks): see benches/nri.rs.
        eprintln!(
            "{release}: restart {round}: re-registered {:?} after containerd started, {:?} after \
             it booted",
            registered.duration_since(restarted),
            registered.saturating_duration_since(booted)
        );
    }
    let from = ctrd.log_len();
    assert_eq!(plugin.terminate(), 0, "{}", plugin.log());
    assert!(
        plugin.log().contains("received SIGTERM"),
        "{}",
        plugin.log()
    );
    ctrd.wait_log_since(
        from,
        "connection to plugin \\\"01-tetragon\\\" closed",
        WAIT,
    )
    .unwrap_or_else(|log| panic!("{release}: plugin exit not seen:\n{log}"));
    assert!(ctrd.is_running(), "containerd survives the plugin's exit");
}

#[test]
fn registers_again_after_restart_and_exits_zero_on_sigterm_1_7() {
    registers_again_after_restart_and_exits_zero_on_sigterm(Release::V1_7);
}

#[test]
fn registers_again_after_restart_and_exits_zero_on_sigterm_2_1() {
    registers_again_after_restart_and_exits_zero_on_sigterm(Release::V2_1);
}

fn prelaunched_from_plugin_path(release: Release) {
    require!(
        support::runtimes::containerd(release),
        support::runtimes::missing(release)
    );
    let ctrd = Containerd::configure(release, Setup::enable_nri()).unwrap();
    let plugin_log = ctrd.paths.base.join("prelaunched.log");
    fs::copy(BIN, ctrd.paths.plugin_path.join("01-tetragon")).unwrap();
    fs::write(
        ctrd.paths.plugin_config_path.join("01-tetragon.conf"),
        format!(
            "host_install_dir = \"/opt/tetragon\"\nhook_args = [\"--fail-allow-namespaces\", \
             \"kube-system\"]\nlog_file = \"{}\"\n",
            plugin_log.display()
        ),
    )
    .unwrap();
    let mut ctrd = ctrd.started();
    let log = ctrd.log();
    // "plugin \"pre-connected:01-tetragon[PID]\" registered as \"01-tetragon\"" (1.7 and 2.1)
    let connected_at = log
        .find("registered as \\\"01-tetragon\\\"")
        .unwrap_or_else(|| panic!("{release}: pre-launched plugin not connected:\n{log}"));
    let booted_at = log.find(BOOTED).unwrap();
    assert!(
        connected_at < booted_at,
        "{release}: registered only after boot:\n{log}"
    );
    let text = fs::read_to_string(&plugin_log).unwrap();
    assert!(text.contains("01-tetragon: registered"), "{text}");
    assert!(
        text.contains("01-tetragon: hook `/opt/tetragon/tetragon-oci-hook`"),
        "{text}"
    );
    // containerd goes away: the plugin sees EOF and exits (containerd relaunches it).
    ctrd.stop();
    let deadline = Instant::now() + WAIT;
    while !fs::read_to_string(&plugin_log)
        .unwrap()
        .contains("the runtime closed the connection; exiting")
    {
        assert!(
            Instant::now() < deadline,
            "pre-launched plugin did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn prelaunched_from_plugin_path_registers_before_boot_1_7() {
    prelaunched_from_plugin_path(Release::V1_7);
}

#[test]
fn prelaunched_from_plugin_path_registers_before_boot_2_1() {
    prelaunched_from_plugin_path(Release::V2_1);
}
