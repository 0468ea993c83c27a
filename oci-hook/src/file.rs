//! Bounded reads of regular files (the defaults file, `config.json`), apart from `spec` so that
//! the setup tool, which builds this crate without its `client` feature, reads a defaults file as
//! the hook does.

use std::io::Read;
use std::path::Path;

use anyhow::bail;

/// Reads the regular file at `path` (symlinks followed), at most `limit` bytes: opened
/// `O_NONBLOCK` (a FIFO never blocks) only if `stat` says it is a regular file, checked again with
/// `fstat` on the descriptor, and read with a
/// bounded reader (never read whole when over). `what` names the content in the error ("a
/// spec"). A missing file and a directory are plain `std::io::Error`s (`NotFound`,
/// `IsADirectory`).
pub fn read_regular(path: &Path, limit: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    use rustix::fs::{FileType, Mode, OFlags};
    // `stat` first (symlinks followed, as the open does): a device or FIFO is refused without
    // being opened (opening a device can have effects, e.g. a tape rewinding). The `fstat`
    // below still checks what was actually opened.
    let st = rustix::fs::stat(path).map_err(std::io::Error::from)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind == FileType::Directory {
        return Err(std::io::Error::from(std::io::ErrorKind::IsADirectory).into());
    }
    if kind != FileType::RegularFile {
        bail!("not a regular file ({kind:?})");
    }
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let st = rustix::fs::fstat(&fd).map_err(std::io::Error::from)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind == FileType::Directory {
        return Err(std::io::Error::from(std::io::ErrorKind::IsADirectory).into());
    }
    if kind != FileType::RegularFile {
        bail!("not a regular file ({kind:?})");
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let mib = limit >> 20;
    if size > limit {
        bail!("{size} bytes, more than the {mib} MiB {what} may have");
    }
    let mut text = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // The file may grow after `fstat`: read one byte past the bound to notice.
    std::fs::File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut text)?;
    if text.len() as u64 > limit {
        bail!("more than the {mib} MiB {what} may have");
    }
    Ok(text)
}
