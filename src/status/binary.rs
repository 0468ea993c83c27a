//! The `binary` check: the installed hook is a regular executable file, not on a `noexec`
//! mount, the same bytes as the image's copy, and runs (`--version`).

use std::fs::File;
use std::io::Read as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Check, Verdict};

/// The largest binary compared (as `install` copies at most this).
pub const MAX_BINARY: u64 = 128 << 20;

/// Opens a regular file without following a link or blocking; `Err` says what it is instead.
fn open_file(path: &Path) -> Result<(File, u64), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    Ok((file, meta.len()))
}

/// Whether `a` and `b` hold the same bytes (read in chunks, at most [`MAX_BINARY`]).
fn same_bytes(a: &Path, b: &Path) -> Result<bool, String> {
    let (mut fa, la) = open_file(a)?;
    let (mut fb, lb) = open_file(b)?;
    if la != lb {
        return Ok(false);
    }
    if la > MAX_BINARY {
        return Err(format!("larger than {} MiB", MAX_BINARY >> 20));
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = fa.read(&mut ba).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(fb.read(&mut bb[..1]).map_err(|e| e.to_string())? == 0);
        }
        fb.read_exact(&mut bb[..n]).map_err(|e| e.to_string())?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// The sha256 of the regular file at `path` (bounded), for evidence.
fn sha256_of(path: &Path) -> String {
    use sha2::Digest as _;
    let Ok((file, _)) = open_file(path) else {
        return "?".to_owned();
    };
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut file = file.take(MAX_BINARY);
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(_) => return "?".to_owned(),
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `binary`: `installed` (the hook in the install dir, as mounted here) against `image_copy`
/// (`--local-binary`), its version asked before `deadline`.
pub fn check(installed: &Path, image_copy: &Path, deadline: Instant) -> Check {
    const ID: &str = "binary";
    let reinstall = "re-run the installer (restart the tetragon-rthooks pod), or `tetragon-oci-hook-setup \
                     install --local-install-dir ... --host-install-dir ...`";
    use std::os::unix::fs::PermissionsExt as _;
    let meta = match std::fs::symlink_metadata(installed) {
        Err(e) => {
            return Check::new(ID, Verdict::Fail, "the hook binary is not installed")
                .evidence(format!("{}: {e}", installed.display()))
                .help(reinstall);
        }
        Ok(m) => m,
    };
    if !meta.is_file() {
        let what = if meta.file_type().is_symlink() {
            "a symlink"
        } else {
            "not a regular file"
        };
        return Check::new(ID, Verdict::Fail, format!("the hook binary is {what}"))
            .evidence(installed.display().to_string())
            .help(format!(
                "remove `{}`, then {reinstall}",
                installed.display()
            ));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Check::new(ID, Verdict::Fail, "the hook binary is not executable")
            .evidence(format!(
                "{}: mode {:o}",
                installed.display(),
                meta.permissions().mode() & 0o7777
            ))
            .help(format!("chmod 0755 {}", installed.display()));
    }
    let dir = installed.parent().unwrap_or(Path::new("/"));
    if crate::sys::dir_state(dir).is_ok_and(|s| s.noexec) {
        return Check::new(
            ID,
            Verdict::Fail,
            "the hook binary is on a `noexec` mount: the runtime cannot run it",
        )
        .evidence(dir.display().to_string())
        .help("install into a dir on a mount without `noexec` (`--host-install-dir`, Helm: `rthooks.installDir`)");
    }
    let mut evidence = Vec::new();
    let mut result = Verdict::Ok;
    let mut help = None;
    let mut summary = String::new();
    if std::fs::symlink_metadata(image_copy).is_ok() {
        match same_bytes(installed, image_copy) {
            Ok(true) => evidence.push(format!(
                "{}: same bytes as the image's `{}` ({} bytes)",
                installed.display(),
                image_copy.display(),
                meta.len()
            )),
            Ok(false) => {
                result = Verdict::Warn;
                summary = "the installed hook differs from the image's copy".to_owned();
                evidence.push(format!(
                    "{}: sha256 {}",
                    installed.display(),
                    sha256_of(installed)
                ));
                evidence.push(format!(
                    "{}: sha256 {}",
                    image_copy.display(),
                    sha256_of(image_copy)
                ));
                help = Some(reinstall.to_owned());
            }
            Err(e) => evidence.push(format!("not compared with `{}`: {e}", image_copy.display())),
        }
    } else {
        evidence.push(format!(
            "the image's copy `{}` is not here: not compared",
            image_copy.display()
        ));
    }
    let until = deadline.min(Instant::now() + Duration::from_millis(500));
    let version = match super::agent::run_until(Command::new(installed).arg("--version"), until) {
        Ok(out) if out.status.is_some_and(|s| s.success()) => {
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }
        Ok(out) => {
            return Check::new(ID, Verdict::Fail, "the hook binary does not run")
                .evidence(format!(
                    "`{} --version`: {}",
                    installed.display(),
                    match out.status {
                        Some(s) => format!(
                            "{s}: {}",
                            super::cut(String::from_utf8_lossy(&out.stderr).trim(), 300)
                        ),
                        None => "killed after 500 ms".to_owned(),
                    }
                ))
                .help(reinstall);
        }
        Err(e) => {
            return Check::new(ID, Verdict::Fail, "the hook binary does not run")
                .evidence(format!("{}: {e}", installed.display()))
                .help(reinstall);
        }
    };
    if summary.is_empty() {
        summary = format!("installed, runs: {}", super::cut(&version, 100));
    } else {
        evidence.insert(0, format!("version: {}", super::cut(&version, 100)));
    }
    Check {
        id: ID,
        result,
        summary,
        evidence,
        help,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn binary_check_compares_with_the_image_and_runs_it() {
        let dir = tempfile::tempdir().unwrap();
        let soon = || Instant::now() + Duration::from_secs(2);
        let body = "#!/bin/sh\necho tetragon-oci-hook 9.9\n";
        let inst = script(dir.path(), "inst", body);
        let image = script(dir.path(), "image", body);
        let c = check(&inst, &image, soon());
        assert_eq!(c.result, Verdict::Ok, "{c:?}");
        assert!(c.summary.contains("9.9"), "{c:?}");
        script(
            dir.path(),
            "image",
            "#!/bin/sh\necho tetragon-oci-hook 9.8\n",
        );
        let c = check(&inst, &image, soon());
        assert_eq!(c.result, Verdict::Warn, "{c:?}");
        assert!(c.evidence.iter().any(|e| e.contains("sha256")), "{c:?}");
        let missing = dir.path().join("missing");
        assert_eq!(check(&missing, &image, soon()).result, Verdict::Fail);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&inst, &link).unwrap();
        assert!(check(&link, &image, soon()).summary.contains("symlink"));
        let broken = script(dir.path(), "broken", "#!/bin/sh\nexit 7\n");
        assert!(
            check(&broken, &missing, soon())
                .summary
                .contains("does not run")
        );
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&inst, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            check(&inst, &image, soon())
                .summary
                .contains("not executable")
        );
    }
}
