//! The workspace's binaries, for tests of the setup package.

use std::path::Path;
use std::sync::OnceLock;
use std::time::SystemTime;

/// Path of `tetragon-oci-hook`, the binary of the workspace member `oci-hook/`, found beside the
/// setup binary under test (cargo sets `CARGO_BIN_EXE_*` only for a package's own binaries).
///
/// A plain `cargo test` or `cargo build` at the root builds it (`oci-hook` is a default
/// member); `cargo test --test NAME` and `cargo bench` may not. When it is missing, or older than
/// a source of `oci-hook/` (`src/`, `proto/`, `build.rs`, whose changes always relink it), this
/// panics with the command that builds it, rather than testing some other binary.
pub fn hook_bin() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let setup = Path::new(env!("CARGO_BIN_EXE_tetragon-oci-hook-setup"));
        let hook = setup.with_file_name("tetragon-oci-hook");
        let release = setup.parent().is_some_and(|d| d.ends_with("release"));
        let build = format!(
            "run `cargo build -p tetragon-oci-hook{}` (a plain `cargo test` at the root builds it)",
            if release { " --release" } else { "" },
        );
        let built = std::fs::metadata(&hook).and_then(|m| m.modified());
        let Ok(built) = built else {
            panic!("`{}` not found: {build}", hook.display());
        };
        let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("oci-hook");
        let sources = ["src", "proto", "build.rs"].map(|s| crate_dir.join(s));
        let newest = sources.iter().filter_map(|s| newest_file(s)).max();
        if let Some(newer) = newest.filter(|(t, _)| *t > built) {
            panic!(
                "`{}` is older than `{}`: {build}",
                hook.display(),
                newer.1.display()
            );
        }
        hook.to_str()
            .expect("the target directory's path is UTF-8")
            .to_owned()
    })
}

/// The most recently modified file at `path` (a file, or a directory read recursively) and its
/// time.
fn newest_file(path: &Path) -> Option<(SystemTime, std::path::PathBuf)> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return Some((meta.modified().ok()?, path.to_path_buf()));
    }
    let mut newest: Option<(SystemTime, std::path::PathBuf)> = None;
    for entry in std::fs::read_dir(path).ok()?.flatten() {
        if let Some(f) =
            newest_file(&entry.path()).filter(|f| newest.as_ref().is_none_or(|n| f.0 > n.0))
        {
            newest = Some(f);
        }
    }
    newest
}
