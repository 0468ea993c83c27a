//! The NRI plugin against a fake runtime: the other side of the mux, written here from the
//! protocol (frames, ttrpc messages, NRI calls), driving the real `install --interface nri-hook`
//! process over a unix socket, or over a socketpair in pre-launched mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message as _;
use rthooks::nri::mux;
use rthooks::nri::proto::nri::{
    ConfigureResponse, Container, CreateContainerRequest, CreateContainerResponse,
    SynchronizeRequest, SynchronizeResponse,
};
use rthooks::nri::proto::ttrpc::Response;
use rthooks::nri::ttrpc;
use support::child::ChildGuard;
use support::fake_nri::{BIN, Conn, PLUGIN, Setup, WAIT, create_request, ok_payload};

fn expected_hook_args(dir: &str, extra: &[&str]) -> Vec<String> {
    // `args[0]` is the hook's full host path, as in the hooks.d file.
    let mut v = vec![
        format!("{dir}/tetragon-oci-hook"),
        "createRuntime".to_owned(),
        "--log-fname".to_owned(),
        format!("{dir}/tetragon-oci-hook.log"),
    ];
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

fn assert_adds_hook(resp: Response, dir: &str, extra: &[&str]) {
    let resp = CreateContainerResponse::decode(ok_payload(resp).as_slice()).unwrap();
    let hooks = resp.adjust.unwrap().hooks.unwrap();
    assert_eq!(hooks.create_runtime.len(), 1);
    assert!(hooks.prestart.is_empty() && hooks.poststop.is_empty());
    let hook = &hooks.create_runtime[0];
    assert_eq!(hook.path, format!("{dir}/tetragon-oci-hook"));
    assert_eq!(hook.args, expected_hook_args(dir, extra));
}

#[test]
fn registers_and_serves_configure_before_the_register_reply() {
    let mut s = Setup::start(&[]);
    let mut c = s.accept();
    let (id, reg) = c.register_request();
    assert_eq!(id % 2, 1, "client stream ids are odd");
    assert_eq!(
        (reg.plugin_name.as_str(), reg.plugin_idx.as_str()),
        ("tetragon", "01")
    );
    // containerd 1.7 configures the plugin before it answers RegisterPlugin.
    let resp = ConfigureResponse::decode(ok_payload(c.configure("")).as_slice()).unwrap();
    assert_eq!(resp.events, 8, "CREATE_CONTAINER only");
    c.reply_register(id);
    s.wait_log("01-tetragon: registered");
    assert!(s.log().contains("connected to"), "{}", s.log());
    // The binary was copied before connecting.
    assert!(s.dir.path().join("install/tetragon-oci-hook").is_file());
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(), 0, "{}", s.log());
    assert!(c.closed_by_plugin());
    // Kept on exit: a container created with the hook may still be about to run it.
    assert!(s.dir.path().join("install/tetragon-oci-hook").is_file());
}

#[test]
fn synchronize_echoes_more_and_create_container_gets_the_hook() {
    let s = Setup::start(&[]);
    let mut c = s.registered();
    for more in [true, false] {
        let req = SynchronizeRequest { more };
        let resp = c.call("Synchronize", req.encode_to_vec());
        let resp = SynchronizeResponse::decode(ok_payload(resp).as_slice()).unwrap();
        assert_eq!(resp.more, more);
    }
    let resp = c.call("CreateContainer", create_request("nginx", "ctr-1"));
    assert_adds_hook(resp, "/opt/tetragon", &["--grpc-address", "unix:///t.sock"]);
    s.wait_log("adding hook to container default/web-0/nginx (ctr-1)");
}

#[test]
fn synchronize_of_5000_containers_split_as_containerd_splits_it_is_answered_in_order() {
    let s = Setup::start(&[]);
    let mut c = s.registered();
    let pods = support::fake_nri::pods_bytes(2500);
    let ctrs: Vec<Vec<u8>> = (0..5000)
        .map(|i| {
            let id = format!("{i:064x}");
            support::fake_nri::container_bytes("app", &id, &format!("pod-{}", i / 2), 135)
        })
        .collect();
    let messages = support::fake_nri::synchronize_requests(&pods, &ctrs);
    assert!(messages.len() > 1, "65 MB of containers is split");
    for (i, m) in messages.iter().enumerate() {
        let more = i + 1 < messages.len();
        assert!(m.len() <= support::fake_nri::TTRPC_MESSAGE_MAX);
        assert_eq!(SynchronizeRequest::decode(m.as_slice()).unwrap().more, more);
        let resp = c.call_as_containerd("Synchronize", m.clone());
        let resp = SynchronizeResponse::decode(ok_payload(resp).as_slice()).unwrap();
        assert_eq!(resp.more, more, "message {i} of {}", messages.len());
    }
    // Still serving: the next container gets the hook.
    let resp = c.call("CreateContainer", create_request("nginx", "ctr-after-sync"));
    assert_adds_hook(resp, "/opt/tetragon", &["--grpc-address", "unix:///t.sock"]);
}

#[test]
fn unknown_methods_and_services_get_unimplemented() {
    let s = Setup::start(&[]);
    let mut c = s.registered();
    let resp = c.call("StopContainer", Vec::new());
    let st = resp.status.unwrap();
    assert_eq!((st.code, st.message.as_str()), (12, "method StopContainer"));
    let id = c.next_stream;
    c.next_stream += 2;
    let other = ttrpc::request(id, "some.Other", "Configure", Vec::new());
    mux::write_frames(&mut c.stream, 1, &other).unwrap();
    let st = c.response(id).status.unwrap();
    assert_eq!((st.code, st.message.as_str()), (12, "service some.Other"));
    // Still serving.
    assert_adds_hook(
        c.call("CreateContainer", create_request("a", "b")),
        "/opt/tetragon",
        &["--grpc-address", "unix:///t.sock"],
    );
}

#[test]
fn requests_split_across_frames_are_reassembled() {
    let s = Setup::start(&[]);
    let mut c = s.registered();
    let req = create_request("big", "ctr-big");
    assert!(req.len() > 12_000, "{}", req.len());
    for frame in [4096, 1, 9118, 100_000] {
        let resp = c.call_framed("CreateContainer", req.clone(), frame);
        assert_adds_hook(resp, "/opt/tetragon", &["--grpc-address", "unix:///t.sock"]);
    }
    // Two requests in one write, and a frame for a connection nobody opened in between.
    let (a, ma) = c.request_bytes("CreateContainer", create_request("x", "1"));
    let (b, mb) = c.request_bytes(
        "Synchronize",
        SynchronizeRequest { more: true }.encode_to_vec(),
    );
    let mut wire = Vec::new();
    mux::write_frames(&mut wire, 1, &ma).unwrap();
    mux::write_frames(&mut wire, 7, b"ignored").unwrap();
    mux::write_frames(&mut wire, 1, &mb).unwrap();
    c.raw(&wire);
    assert_adds_hook(
        c.response(a),
        "/opt/tetragon",
        &["--grpc-address", "unix:///t.sock"],
    );
    assert!(
        SynchronizeResponse::decode(ok_payload(c.response(b)).as_slice())
            .unwrap()
            .more
    );
}

#[test]
fn malformed_requests_get_errors_and_a_bad_create_still_gets_the_hook() {
    let s = Setup::start(&[]);
    let mut c = s.registered();
    // Not a ttrpc.Request.
    let bad = ttrpc::encode_message(c.next_stream, ttrpc::TYPE_REQUEST, 0, &[0xff, 0xff, 0xff]);
    let id = c.next_stream;
    c.next_stream += 2;
    mux::write_frames(&mut c.stream, 1, &bad).unwrap();
    assert_eq!(c.response(id).status.unwrap().code, 3);
    // An even stream id.
    let even = ttrpc::request(4, PLUGIN, "Synchronize", Vec::new());
    mux::write_frames(&mut c.stream, 1, &even).unwrap();
    assert_eq!(c.response(4).status.unwrap().code, 3);
    // A CreateContainer payload that does not decode: the hook is added anyway (our policy:
    // an error status would fail the container's creation).
    let resp = c.call("CreateContainer", vec![0x12, 0xff, 0xff, 0xff, 0x0f]);
    assert_adds_hook(resp, "/opt/tetragon", &["--grpc-address", "unix:///t.sock"]);
    s.wait_log("cannot decode CreateContainerRequest");
    // A bad Configure payload is an error.
    assert_eq!(c.call("Configure", vec![0xff]).status.unwrap().code, 3);
}

#[test]
fn oversized_message_is_skipped_and_oversized_frame_drops_the_connection() {
    let s = Setup::start(&[]);
    let mut c = s.registered();
    // A 17 MiB ttrpc message, sent in 1 MiB frames: skipped, answered RESOURCE_EXHAUSTED.
    let len: u32 = 17 << 20;
    let id = c.next_stream;
    c.next_stream += 2;
    let mut msg = len.to_be_bytes().to_vec();
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&[ttrpc::TYPE_REQUEST, 0]);
    mux::write_frames(&mut c.stream, 1, &msg).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..17 {
        let mut frame = 1u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        c.raw(&frame);
        c.raw(&chunk);
    }
    assert_eq!(c.response(id).status.unwrap().code, 8);
    assert_adds_hook(
        c.call("CreateContainer", create_request("a", "b")),
        "/opt/tetragon",
        &["--grpc-address", "unix:///t.sock"],
    );
    // A frame header announcing more than 16 MiB: the plugin drops the connection at once
    // (nothing of the frame is sent) and registers again on a new one.
    let mut frame = 1u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&((16u32 << 20) + 1).to_be_bytes());
    c.raw(&frame);
    assert!(c.closed_by_plugin());
    s.wait_log("announces 16777217 bytes");
    let _again = s.registered();
}

#[test]
fn reconnects_after_abrupt_close_missing_and_stale_socket() {
    let mut s = Setup::start(&[]);
    let c = s.registered();
    // containerd stops: the connection drops and the socket file stays behind (ECONNREFUSED).
    drop(c);
    drop(s.listener.take());
    s.wait_log("Connection refused");
    // Then it is removed (ENOENT) ...
    fs::remove_file(Setup::socket(s.dir.path())).unwrap();
    s.wait_log("No such file or directory");
    // ... and containerd is back: the plugin registers again on its own.
    s.listener = Some(UnixListener::bind(Setup::socket(s.dir.path())).unwrap());
    let mut c = s.registered();
    assert_adds_hook(
        c.call("CreateContainer", create_request("a", "b")),
        "/opt/tetragon",
        &["--grpc-address", "unix:///t.sock"],
    );
    // SIGINT while connected: exit 0.
    s.signal(libc::SIGINT);
    assert_eq!(s.wait_exit(), 0, "{}", s.log());
}

#[test]
fn a_runtime_that_never_comes_back_makes_the_plugin_fail() {
    let mut s = Setup::start(&["--nri-hook.give-up-after", "0.5"]);
    drop(s.listener.take());
    assert_eq!(s.wait_exit(), 2);
    let log = s.log();
    assert!(log.contains("giving up"), "{log}");
    assert!(
        log.contains("help: check that containerd runs with NRI enabled"),
        "{log}"
    );
    // Retried at the fast pace (50 ms) all along, and said so once, in the final error.
    let attempts: u64 = log
        .split_once("for 500ms (")
        .and_then(|(_, rest)| rest.split_once(" attempts"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no attempt count in the final error: {log}"));
    assert!(attempts >= 5, "{attempts} attempts in 0.5 s: {log}");
}

#[test]
fn a_refused_socket_costs_a_few_log_lines_not_one_per_attempt() {
    let mut s = Setup::start(&["--nri-hook.give-up-after", "6"]);
    // containerd is gone and its socket file stays behind: every attempt is ECONNREFUSED.
    drop(s.listener.take());
    assert_eq!(s.wait_exit(), 2, "{}", s.log());
    let log = s.log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" 01-tetragon: ") && l.contains("connect to `"))
        .collect();
    // The first failure in full, then one summary per 5 s (then the final error).
    assert_eq!(failures.len(), 2, "{log}");
    assert!(
        failures[0].contains("cannot connect to `")
            && failures[0].contains("Connection refused")
            && failures[0].ends_with("(attempt 1)"),
        "{log}"
    );
    assert!(
        failures[1].contains("still failing: cannot connect to `")
            && failures[1].contains("Connection refused")
            && failures[1].contains(" attempts in 5 s)"),
        "{log}"
    );
    assert!(log.contains("giving up"), "{log}");
    let plugin_lines = log.lines().filter(|l| l.contains(" 01-tetragon: ")).count();
    assert!(plugin_lines <= 3, "{log}");
    // Yet it kept trying: 50 ms apart for 2 s, then backing off to 1 s.
    let attempts: u64 = log
        .split_once("for 6s (")
        .and_then(|(_, rest)| rest.split_once(" attempts"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("no attempt count in the final error: {log}"));
    assert!((30..=60).contains(&attempts), "{attempts} attempts: {log}");
}

#[test]
fn a_runtime_that_drops_the_plugin_right_after_registering_is_paced_and_given_up_on() {
    let mut s = Setup::start(&["--nri-hook.give-up-after", "3"]);
    // A broken runtime: it registers the plugin, then closes the connection at once, for ever.
    let mut sessions = 0;
    let started = Instant::now();
    while s.child.wait_for(Duration::ZERO).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the plugin never gave up on a runtime that keeps dropping it ({sessions} sessions)"
        );
        let listener = s.listener.as_ref().unwrap();
        listener.set_nonblocking(true).unwrap();
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                let mut c = Conn::new(stream);
                let (id, _) = c.register_request();
                c.configure("");
                c.reply_register(id);
                sessions += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(s.wait_exit(), 2, "{}", s.log());
    let log = s.log();
    assert!(log.contains("giving up"), "{log}");
    // 50 ms apart for 2 s, then backing off: not a reconnect per session end.
    assert!((5..=60).contains(&sessions), "{sessions} sessions: {log}");
    let dropped = log
        .lines()
        .filter(|l| l.contains("dropped the plugin"))
        .count();
    assert!((1..=3).contains(&dropped), "{log}");
}

#[test]
fn sigterm_while_waiting_for_the_runtime_exits_zero() {
    let mut s = Setup::start(&[]);
    drop(s.listener.take());
    s.wait_log("cannot connect");
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(), 0, "{}", s.log());
    s.wait_log("received SIGTERM");
}

#[test]
fn refused_registration_is_retried() {
    let s = Setup::start(&[]);
    let mut c = s.accept();
    let (id, _) = c.register_request();
    let msg = ttrpc::error_response(id, 6, "plugin already registered".into());
    mux::write_frames(&mut c.stream, 2, &msg).unwrap();
    assert!(c.closed_by_plugin());
    s.wait_log("refused to register plugin `01-tetragon`: plugin already registered");
    let _again = s.registered();
}

/// Runs the binary as containerd runs a plugin from `plugin_path`: no arguments, the socket as
/// fd 3, name and index in the environment.
fn prelaunch(args: &[&str], stderr: Stdio) -> (ChildGuard, Conn) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("NRI_PLUGIN_SOCKET", "3")
        .env("NRI_PLUGIN_NAME", "tetragon")
        .env("NRI_PLUGIN_IDX", "05")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: dup2 is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(theirs);
    (ChildGuard::new(child), Conn::new(ours))
}

fn wait_child(child: &mut ChildGuard) -> i32 {
    let st = child.wait_for(WAIT).expect("plugin did not exit");
    st.code().unwrap_or(-1)
}

#[test]
fn prelaunched_plugin_takes_its_hook_from_the_conf_and_exits_on_eof() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("plugin.log");
    let (mut child, mut c) = prelaunch(&[], Stdio::null());
    let (id, reg) = c.register_request();
    assert_eq!(
        (reg.plugin_name.as_str(), reg.plugin_idx.as_str()),
        ("tetragon", "05")
    );
    let conf = format!(
        "host_install_dir = \"/run/tg\"\nhook_args = [\"--fail-allow-namespaces\", \"ns\"]\n\
         log_file = \"{}\"\n",
        log.display()
    );
    let resp = ConfigureResponse::decode(ok_payload(c.configure(&conf)).as_slice()).unwrap();
    assert_eq!(resp.events, 8);
    c.reply_register(id);
    assert_adds_hook(
        c.call("CreateContainer", create_request("nginx", "c1")),
        "/run/tg",
        &["--fail-allow-namespaces", "ns"],
    );
    // containerd closes the socket (it relaunches the plugin when it restarts).
    drop(c);
    assert_eq!(wait_child(&mut child), 0);
    let text = fs::read_to_string(&log).unwrap();
    // The lines from before Configure named the log file are in it too.
    for needle in [
        "05-tetragon: pre-launched by the runtime (socket fd 3)",
        "05-tetragon: registered",
        "adding hook to container default/web-0/nginx (c1)",
        "the runtime closed the connection; exiting",
    ] {
        assert!(text.contains(needle), "no `{needle}` in:\n{text}");
    }
}

#[test]
fn prelaunched_plugin_with_a_bad_conf_fails_configure_with_the_reason() {
    let (mut child, mut c) = prelaunch(&[], Stdio::null());
    let _ = c.register_request();
    let resp = c.configure("hook_args = []\n");
    let st = resp.status.unwrap();
    assert_eq!(st.code, 3);
    assert!(
        st.message
            .contains("05-tetragon: the plugin configuration has no `host_install_dir`"),
        "{}",
        st.message
    );
    drop(c);
    assert_eq!(wait_child(&mut child), 0);
}

#[test]
fn prelaunched_install_command_uses_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("install")).unwrap();
    let src = dir.path().join("tetragon-oci-hook");
    fs::write(&src, b"#!/bin/sh\n").unwrap();
    let args = [
        "install",
        "--interface=nri-hook",
        "--daemonize",
        &format!("--local-binary={}", src.display()),
        &format!(
            "--local-install-dir={}",
            dir.path().join("install").display()
        ),
        "--host-install-dir=/opt/x",
    ];
    let (mut child, mut c) = prelaunch(&args, Stdio::null());
    let (id, reg) = c.register_request();
    assert_eq!(
        reg.plugin_idx, "05",
        "the environment wins over the flag default"
    );
    ok_payload(c.configure(""));
    c.reply_register(id);
    assert_adds_hook(
        c.call("CreateContainer", create_request("n", "i")),
        "/opt/x",
        &[],
    );
    drop(c);
    assert_eq!(wait_child(&mut child), 0);
}

#[test]
fn prelaunched_with_a_bad_fd_is_a_clear_error() {
    let out = Command::new(BIN)
        .env("NRI_PLUGIN_SOCKET", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`NRI_PLUGIN_SOCKET=0` is not a file descriptor"),
        "{err}"
    );
}

#[test]
fn log_level_debug_logs_every_call_and_warn_hides_info() {
    let s = Setup::start(&["--log-level", "debug"]);
    let mut c = s.registered();
    ok_payload(c.call(
        "Synchronize",
        SynchronizeRequest { more: false }.encode_to_vec(),
    ));
    s.wait_log("debug 01-tetragon: nri.pkg.api.v1alpha1.Plugin/Synchronize (0 bytes)");

    let s = Setup::start(&["--log-level", "warn"]);
    let mut c = s.registered();
    assert_eq!(c.call("StopContainer", Vec::new()).status.unwrap().code, 12);
    s.wait_log("warn 01-tetragon: unsupported call nri.pkg.api.v1alpha1.Plugin/StopContainer");
    assert!(!s.log().contains(" info "), "{}", s.log());
}

/// Sends `count` small `CreateContainer` requests from another thread without reading a reply
/// (the writes may block while the plugin does not read); returns when all are sent or `limit`
/// passes.
fn flood_without_reading(c: &mut Conn, count: usize, limit: Duration) {
    let mut wire = Vec::new();
    for i in 0..count {
        let (_, msg) = c.request_bytes("CreateContainer", create_request_small(i));
        mux::write_frames(&mut wire, 1, &msg).unwrap();
    }
    let mut writer = c.stream.try_clone().unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let _ = writer.write_all(&wire);
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let deadline = Instant::now() + limit;
    while !done.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A small CreateContainer request (the reply, with the hook, is bigger than the request).
fn create_request_small(i: usize) -> Vec<u8> {
    CreateContainerRequest {
        pod: None,
        container: Some(Container {
            id: format!("c{i}"),
            pod_sandbox_id: String::new(),
            name: String::new(),
        }),
    }
    .encode_to_vec()
}

/// Counts the complete responses the plugin wrote, reading until EOF.
fn responses_until_eof(c: &mut Conn) -> usize {
    c.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 65536];
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let (r, q) = (&mut c.responses, &mut c.requests);
                let (gr, gq) = (&mut c.got_responses, &mut c.got_requests);
                c.demux
                    .feed(&buf[..n], |conn, f| match conn {
                        1 => r.feed(f, gr),
                        _ => q.feed(f, gq),
                    })
                    .unwrap();
            }
        }
    }
    c.got_responses.len()
}

#[test]
fn a_session_healthy_longer_than_give_up_reconnects_however_it_breaks() {
    let mut s = Setup::start(&["--nri-hook.give-up-after", "1"]);
    let mut c = s.registered();
    // Healthy for twice the give-up time, then a protocol error (a frame header announcing more
    // than 16 MiB): the give-up clock starts now, so the plugin reconnects.
    std::thread::sleep(Duration::from_secs(2));
    let mut frame = 1u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&((16u32 << 20) + 1).to_be_bytes());
    c.raw(&frame);
    assert!(c.closed_by_plugin());
    let mut c = s.registered();
    assert_adds_hook(
        c.call("CreateContainer", create_request("a", "b")),
        "/opt/tetragon",
        &["--grpc-address", "unix:///t.sock"],
    );
    // Healthy again for longer than give-up, then the runtime closes the socket mid-request
    // (the reply's write fails, or the read sees EOF): reconnect again.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, msg) = c.request_bytes("CreateContainer", create_request("x", "y"));
    mux::write_frames(&mut c.stream, 1, &msg[..msg.len() / 2]).unwrap();
    drop(c);
    let mut c = s.registered();
    // ... and once more: a whole request, then a close before the reply is read.
    std::thread::sleep(Duration::from_millis(1500));
    let (_, msg) = c.request_bytes("CreateContainer", create_request("x", "y"));
    mux::write_frames(&mut c.stream, 1, &msg).unwrap();
    c.stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(c);
    let _c = s.registered();
    assert!(s.child.try_wait().unwrap().is_none(), "{}", s.log());
    assert!(!s.log().contains("giving up"), "{}", s.log());
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(), 0, "{}", s.log());
}

#[test]
fn sigterm_ends_the_plugin_within_1s_while_the_runtime_does_not_read() {
    let mut s = Setup::start(&[]);
    let mut c = s.registered();
    // 3000 replies (~600 KB) are more than the socket buffer holds: the plugin has unsent output.
    const N: usize = 3000;
    flood_without_reading(&mut c, N, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    s.signal(libc::SIGTERM);
    let Some(st) = s.child.wait_for(Duration::from_secs(1)) else {
        panic!(
            "the plugin did not end within 1 s of SIGTERM ({:?})\n{}",
            start.elapsed(),
            s.log()
        );
    };
    assert_eq!(st.code(), Some(0), "{}", s.log());
    // It really was stuck with replies the runtime had not read.
    let got = responses_until_eof(&mut c);
    assert!(
        got < N,
        "all {got} replies were written: the runtime was not blocking"
    );
    s.wait_log("received SIGTERM");
}

#[test]
fn a_runtime_that_stops_reading_breaks_the_session_and_the_plugin_reconnects() {
    let s = Setup::start(&[]);
    let mut c = s.registered();
    flood_without_reading(&mut c, 3000, Duration::from_secs(3));
    // Nothing read for 5 s: the session is broken, and the plugin registers again.
    let _again = s.registered();
    s.wait_log("has not read from the NRI socket for 5s");
    drop(c);
}

#[test]
fn a_runtime_that_sends_but_never_reads_is_cut_off_at_the_queue_bound() {
    let s = Setup::start(&[]);
    let mut c = s.registered();
    // Unknown methods with 8 KiB names: each reply carries a 4 KiB status text, so 2000 of them
    // exceed the 4 MiB queue long before the write stall timeout.
    let name = "M".repeat(8 << 10);
    let mut wire = Vec::new();
    for _ in 0..2000 {
        let (_, msg) = c.request_bytes(&name, Vec::new());
        mux::write_frames(&mut wire, 1, &msg).unwrap();
    }
    let mut writer = c.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = writer.write_all(&wire);
    });
    let start = Instant::now();
    let _again = s.registered();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "reconnected only after the stall timeout"
    );
    s.wait_log("at most 4194304 are kept");
    drop(c);
}

#[test]
fn a_16_mib_unexpected_message_and_a_huge_method_name_log_short_lines() {
    let s = Setup::start(&["--log-level", "debug"]);
    let mut c = s.registered();
    // A 16 MiB response on the runtime connection for a call the plugin never made.
    let msg = ttrpc::encode_message(3, ttrpc::TYPE_RESPONSE, 0, &vec![0u8; 16 << 20]);
    mux::write_frames(&mut c.stream, 2, &msg).unwrap();
    s.wait_log("ignored an unexpected message on the runtime connection");
    // A 1 MiB method name: logged (debug and warn) and echoed in the status, all cut.
    let name = "M".repeat(1 << 20);
    let st = c.call(&name, Vec::new()).status.unwrap();
    assert_eq!(st.code, 12);
    assert!(st.message.len() <= 4200, "{} bytes", st.message.len());
    s.wait_log("unsupported call");
    // Still serving.
    assert_adds_hook(
        c.call("CreateContainer", create_request("a", "b")),
        "/opt/tetragon",
        &["--grpc-address", "unix:///t.sock"],
    );
    let log = s.log();
    let longest = log.lines().map(str::len).max().unwrap();
    assert!(longest < 2048, "a {longest}-byte log line");
    assert!(log.len() < 64 << 10, "{} bytes of log", log.len());
}

#[test]
fn prelaunched_lines_kept_before_configure_are_bounded_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("plugin.log");
    let (mut child, mut c) = prelaunch(&[], Stdio::null());
    let (id, _) = c.register_request();
    // 300 calls with 64 KiB method names before Configure: each logs a line that is kept until
    // the log file is known.
    let name = "M".repeat(64 << 10);
    for _ in 0..300 {
        assert_eq!(c.call(&name, Vec::new()).status.unwrap().code, 12);
    }
    let conf = format!(
        "host_install_dir = \"/run/tg\"\nlog_file = \"{}\"\n",
        log.display()
    );
    ok_payload(c.configure(&conf));
    c.reply_register(id);
    drop(c);
    assert_eq!(wait_child(&mut child), 0);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.len() < (64 << 10) + 4096, "{} bytes kept", text.len());
    assert!(text.contains("pre-launched by the runtime"), "{text}");
    assert!(text.contains("earlier log lines were dropped"), "{text}");
}

/// `hook_args` with `--help` (or `--version`, `--just-print-config`, a hook name) would make
/// every container's hook a silent no-op: `Configure` refuses them with the reason.
#[test]
fn prelaunched_configure_rejects_hook_args_that_make_the_hook_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["\"--help\"", "\"--just-print-config\"", "\"poststop\""] {
        let conf = format!(
            "host_install_dir = \"{}\"\nhook_args = [{bad}]\nlog_file = \"{}\"\n",
            dir.path().display(),
            dir.path().join("plugin.log").display()
        );
        let (mut child, mut c) = prelaunch(&[], Stdio::null());
        let _ = c.register_request();
        let st = c.configure(&conf).status.unwrap();
        assert_eq!(st.code, 3, "{bad}: {}", st.message);
        assert!(st.message.contains("`hook_args`"), "{bad}: {}", st.message);
        assert!(st.message.contains("help:"), "{bad}: {}", st.message);
        drop(c);
        assert_eq!(wait_child(&mut child), 0);
    }
}

#[test]
fn prelaunched_configure_rejects_invalid_hook_args_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("plugin.log");
    let conf = |args: &str| {
        format!(
            "host_install_dir = \"{}\"\nhook_args = [{args}]\nlog_file = \"{}\"\n",
            dir.path().display(),
            log.display()
        )
    };
    // A misspelled flag.
    let (mut child, mut c) = prelaunch(&[], Stdio::null());
    let _ = c.register_request();
    let st = c
        .configure(&conf("\"--grpc-timout\", \"2s\""))
        .status
        .unwrap();
    assert_eq!(st.code, 3);
    assert!(st.message.contains("`hook_args`"), "{}", st.message);
    assert!(st.message.contains("--grpc-timout"), "{}", st.message);
    assert!(st.message.contains("help:"), "{}", st.message);
    // The plugin adds no hook.
    let resp = c.call("CreateContainer", create_request("n", "i"));
    let resp = CreateContainerResponse::decode(ok_payload(resp).as_slice()).unwrap();
    assert!(resp.adjust.is_none(), "{resp:?}");
    drop(c);
    assert_eq!(wait_child(&mut child), 0);
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("--grpc-timout"),
        "the reason is in the plugin's log"
    );
    assert!(text.contains("help: fix `hook_args`"), "not cut: {text}");

    // A CEL expression that does not compile, checked by the hook binary at its host path.
    std::os::unix::fs::symlink(support::hook_bin(), dir.path().join("tetragon-oci-hook")).unwrap();
    let (mut child, mut c) = prelaunch(&[], Stdio::null());
    let _ = c.register_request();
    let st = c
        .configure(&conf("\"--fail-cel-expr\", \"annotations[\""))
        .status
        .unwrap();
    assert_eq!(st.code, 3);
    assert!(
        st.message.contains("invalid `--fail-cel-expr`"),
        "{}",
        st.message
    );
    drop(c);
    assert_eq!(wait_child(&mut child), 0);

    // Valid arguments: configured, and the hook carries them.
    let (mut child, mut c) = prelaunch(&[], Stdio::null());
    let (id, _) = c.register_request();
    let args = "\"--grpc-timeout\", \"2s\", \"--fail-cel-expr\", \"true\"";
    ok_payload(c.configure(&conf(args)));
    c.reply_register(id);
    assert_adds_hook(
        c.call("CreateContainer", create_request("n", "i")),
        &dir.path().display().to_string(),
        &["--grpc-timeout", "2s", "--fail-cel-expr", "true"],
    );
    drop(c);
    assert_eq!(wait_child(&mut child), 0);
}

#[test]
fn prelaunched_configure_logs_a_warning_when_the_hook_cannot_check_cel() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("plugin.log");
    let (mut child, mut c) = prelaunch(&[], Stdio::null());
    let (id, _) = c.register_request();
    // No hook binary in host_install_dir: the expression is not checked, and the log says so.
    let conf = format!(
        "host_install_dir = \"{}\"\nhook_args = [\"--fail-cel-expr\", \"true\"]\n\
         log_file = \"{}\"\n",
        dir.path().join("missing").display(),
        log.display()
    );
    ok_payload(c.configure(&conf));
    c.reply_register(id);
    drop(c);
    assert_eq!(wait_child(&mut child), 0);
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("warn 05-tetragon: could not check the CEL expression with"),
        "{text}"
    );
}

#[test]
fn a_runtime_that_accepts_no_connections_never_blocks_the_plugin() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};
    let dir = tempfile::tempdir().unwrap();
    let sock = Setup::socket(dir.path());
    // A hung runtime: its socket listens with a backlog of 0 and one connection already waits,
    // so a blocking connect(2) would wait for an accept that never comes.
    let listener = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&listener, &SocketAddrUnix::new(&sock).unwrap()).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    let _waiting = UnixStream::connect(&sock).unwrap();
    let child = Setup::spawn(dir.path(), &["--nri-hook.give-up-after", "0.5"]);
    let mut s = Setup {
        dir,
        listener: None,
        child: ChildGuard::new(child),
    };
    // It gives up on time (exit 2) instead of hanging in connect(2).
    assert_eq!(s.wait_exit(), 2, "{}", s.log());
    let log = s.log();
    assert!(log.contains("accepts no connections"), "{log}");
    assert!(log.contains("giving up"), "{log}");
    drop(listener);
}
