//! The test harness's own checks: a skip is visible in plain `cargo test` output, and the
//! policy reads `E2E_REQUIRED` as documented.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

/// Skips unconditionally; run only by [`skip_line_reaches_the_real_stderr`].
#[test]
#[ignore = "run by skip_line_reaches_the_real_stderr"]
fn probe_that_skips() {
    skip!("probe reason");
}

/// Runs [`probe_that_skips`] in this test binary as `cargo test` does (libtest capturing the
/// test's output): the `skipped:` line still reaches stderr, with the test's name, and the test
/// passes. Under `E2E_REQUIRED=1` the same test fails with the reason.
#[test]
fn skip_line_reaches_the_real_stderr() {
    let run = |required: Option<&str>| {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--ignored",
            "--exact",
            "probe_that_skips",
            "--test-threads=1",
        ])
        .env_remove("RUST_TEST_NOCAPTURE")
        .env_remove(support::skip::REQUIRED_ENV);
        if let Some(v) = required {
            cmd.env(support::skip::REQUIRED_ENV, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    for required in [None, Some("0"), Some("yes")] {
        let (ok, stdout, stderr) = run(required);
        assert!(ok, "{required:?}: {stdout}{stderr}");
        assert_eq!(
            stderr, "skipped: probe reason [probe_that_skips]\n",
            "{required:?}: {stdout}"
        );
        assert!(stdout.contains("test probe_that_skips ... ok"), "{stdout}");
    }

    let (ok, stdout, _) = run(Some("1"));
    assert!(!ok, "E2E_REQUIRED=1 must fail the test: {stdout}");
    assert!(
        stdout.contains("E2E_REQUIRED=1 but probe reason"),
        "{stdout}"
    );
}
