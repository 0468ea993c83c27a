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

/// Whether `a` and `b` hold the same bytes (read in chunks, at most [`MAX_BINARY`], given up
/// at `deadline`).
fn same_bytes(a: &Path, b: &Path, deadline: Instant) -> Result<bool, String> {
    let (mut fa, la) = open_file(a)?;
    let (mut fb, lb) = open_file(b)?;
    if la != lb {
        return Ok(false);
    }
    if la > MAX_BINARY {
        return Err(format!("larger than {} MiB", MAX_BINARY >> 20));
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut done: u64 = 0;
    loop {
        if Instant::now() >= deadline {
            return Err(format!(
                "--timeout reached after {} of {} MiB",
                done >> 20,
                la >> 20
            ));
        }
        let n = fa.read(&mut ba).map_err(|e| e.to_string())?;
        done += n as u64;
        if n == 0 {
            return Ok(fb.read(&mut bb[..1]).map_err(|e| e.to_string())? == 0);
        }
        fb.read_exact(&mut bb[..n]).map_err(|e| e.to_string())?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// The sha256 of the regular file at `path` (bounded in size, given up at `deadline`), for
/// evidence.
fn sha256_of(path: &Path, deadline: Instant) -> String {
    use sha2::Digest as _;
    let Ok((file, _)) = open_file(path) else {
        return "?".to_owned();
    };
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut file = file.take(MAX_BINARY);
    loop {
        if Instant::now() >= deadline {
            return "? (--timeout reached)".to_owned();
        }
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

/// Whether the file at `path` may be run as root: a regular file (not a link) owned by root
/// (or by the user running `status`), not writable by group or others, in a directory with the
/// same owners and no group or world write bit. Anyone else who can change it could make
/// `status` (root, in a readiness probe) run their program. `Err` says why not.
pub fn safe_to_run(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let ours = |uid: u32| uid == 0 || uid == crate::sys::euid();
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("`{}` is not a regular file", path.display()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dmeta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (what, p, m) in [("file", path, &meta), ("directory", dir, &dmeta)] {
        if !ours(m.uid()) {
            return Err(format!(
                "the {what} `{}` belongs to uid {}, not root",
                p.display(),
                m.uid()
            ));
        }
        if m.mode() & 0o022 != 0 {
            return Err(format!(
                "the {what} `{}` is writable by group or others (mode {:o})",
                p.display(),
                m.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

/// `binary`: `installed` (the hook in the install dir, as mounted here) against `image_copy`
/// (`--local-binary`), compared and its version asked before `deadline`. `not_safe`: why
/// [`safe_to_run`] refused it (then it is not run).
pub fn check(
    installed: &Path,
    image_copy: &Path,
    deadline: Instant,
    not_safe: Option<&str>,
) -> Check {
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
    if let Some(why) = not_safe {
        return Check::new(
            ID,
            Verdict::Fail,
            "the hook binary is not run: another user than root could have changed it",
        )
        .evidence(why.to_owned())
        .help(format!(
            "check who changed it; then `chown root:root {0} {1} && chmod go-w {0} {1}`, or {reinstall}",
            installed.display(),
            dir.display()
        ));
    }
    // Its version first (quick): then the compare, which may be long, gets what is left.
    let cap = Instant::now() + Duration::from_millis(500);
    let until = deadline.min(cap);
    let version = match super::agent::run_until(Command::new(installed).arg("--version"), until) {
        Ok(out) if out.status.is_some_and(|s| s.success()) => {
            Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        }
        // Cut by `--timeout`, not by its own 500 ms: not known to be broken.
        Ok(out) if out.status.is_none() && until < cap => None,
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
    let mut evidence = Vec::new();
    let mut result = Verdict::Ok;
    let mut help = None;
    let mut summary = String::new();
    if version.is_none() {
        result = Verdict::Warn;
        summary = "not checked within --timeout: `--version` did not finish".to_owned();
        help = Some("give `status` a longer --timeout".to_owned());
    } else if std::fs::symlink_metadata(image_copy).is_ok() {
        match same_bytes(installed, image_copy, deadline) {
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
                    sha256_of(installed, deadline)
                ));
                evidence.push(format!(
                    "{}: sha256 {}",
                    image_copy.display(),
                    sha256_of(image_copy, deadline)
                ));
                help = Some(reinstall.to_owned());
            }
            Err(e) if e.starts_with("--timeout") => {
                result = Verdict::Warn;
                summary = "not compared with the image's copy within --timeout".to_owned();
                evidence.push(format!("`{}`: {e}", image_copy.display()));
                help = Some("give `status` a longer --timeout".to_owned());
            }
            Err(e) => evidence.push(format!("not compared with `{}`: {e}", image_copy.display())),
        }
    } else {
        evidence.push(format!(
            "the image's copy `{}` is not here: not compared",
            image_copy.display()
        ));
    }
    let version = version.unwrap_or_else(|| "?".to_owned());
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
        let c = check(&inst, &image, soon(), None);
        assert_eq!(c.result, Verdict::Ok, "{c:?}");
        assert!(c.summary.contains("9.9"), "{c:?}");
        script(
            dir.path(),
            "image",
            "#!/bin/sh\necho tetragon-oci-hook 9.8\n",
        );
        let c = check(&inst, &image, soon(), None);
        assert_eq!(c.result, Verdict::Warn, "{c:?}");
        assert!(c.evidence.iter().any(|e| e.contains("sha256")), "{c:?}");
        let missing = dir.path().join("missing");
        assert_eq!(check(&missing, &image, soon(), None).result, Verdict::Fail);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&inst, &link).unwrap();
        assert!(
            check(&link, &image, soon(), None)
                .summary
                .contains("symlink")
        );
        let broken = script(dir.path(), "broken", "#!/bin/sh\nexit 7\n");
        assert!(
            check(&broken, &missing, soon(), None)
                .summary
                .contains("does not run")
        );
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&inst, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            check(&inst, &image, soon(), None)
                .summary
                .contains("not executable")
        );
    }
}

#[cfg(test)]
mod safety_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_binary_others_could_change_is_not_safe_to_run() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("hook");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(safe_to_run(&bin), Ok(()));
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(
            safe_to_run(&bin)
                .unwrap_err()
                .contains("writable by group or others")
        );
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = safe_to_run(&bin).unwrap_err();
        assert!(e.contains("directory") && e.contains("mode 1777"), "{e}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&bin, &link).unwrap();
        assert!(
            safe_to_run(&link)
                .unwrap_err()
                .contains("not a regular file")
        );
        if crate::sys::euid() == 0 {
            std::os::unix::fs::chown(&bin, Some(65534), None).unwrap();
            assert!(safe_to_run(&bin).unwrap_err().contains("uid 65534"));
            // Refused before anything runs: the check names why and runs nothing.
            let c = check(
                &bin,
                &bin,
                Instant::now() + Duration::from_secs(2),
                safe_to_run(&bin).err().as_deref(),
            );
            assert_eq!(c.result, Verdict::Fail, "{c:?}");
            assert!(c.summary.contains("not run"), "{c:?}");
        }
    }

    #[test]
    fn the_compare_gives_up_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let bytes = vec![7u8; 8 << 20];
        std::fs::write(&a, &bytes).unwrap();
        std::fs::write(&b, &bytes).unwrap();
        let past = Instant::now();
        let e = same_bytes(&a, &b, past).unwrap_err();
        assert!(e.contains("--timeout reached after 0 of 8 MiB"), "{e}");
        assert_eq!(sha256_of(&a, past), "? (--timeout reached)");
        assert_eq!(
            same_bytes(&a, &b, Instant::now() + Duration::from_secs(30)),
            Ok(true)
        );
    }
}
