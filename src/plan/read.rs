//! Reading what a destination holds now, without following a link or opening anything but a
//! regular file.

use super::*;

/// What `path` holds now (see [`Current`]), reading a regular file up to `limit` bytes.
///
/// A symlink is never followed, and nothing but a regular file is opened: the file is opened
/// `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` to be the regular file `lstat` saw, so a
/// FIFO, a device or a link swapped in meanwhile neither hangs nor is read.
pub fn read_current(path: &Path, limit: u64) -> anyhow::Result<Current> {
    use std::io::Read;
    let ctx = || format!("failed to read `{}`", path.display());
    let (file, fmeta) = match open_current(path)? {
        Opened::Other(current) => return Ok(current),
        Opened::File(file, fmeta) => (file, fmeta),
    };
    if fmeta.len() > limit {
        return Ok(Current::Large { size: fmeta.len() });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(fmeta.len()).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(ctx)?;
    if bytes.len() as u64 > limit {
        return Ok(Current::Large {
            size: bytes.len() as u64,
        });
    }
    Ok(Current::File {
        bytes,
        mode: fmeta.permissions().mode() & 0o7777,
    })
}

/// What a binary's destination holds now, as [`read_current`] finds it, but a regular file is
/// never read whole: it is held open ([`Current::Binary`]), compared with `source` (sizes first,
/// then chunk by chunk) and hashed only when it differs (the summary names what it replaces).
pub fn read_current_binary(path: &Path, source: Option<&Blob>) -> anyhow::Result<Current> {
    let ctx = || format!("failed to read `{}`", path.display());
    let (file, fmeta) = match open_current(path)? {
        Opened::Other(current) => return Ok(current),
        Opened::File(file, fmeta) => (file, fmeta),
    };
    let mode = fmeta.permissions().mode() & 0o7777;
    let same = match source {
        Some(src) => src.same_as(&file).with_context(ctx)?,
        None => false,
    };
    // Hashed only when it differs from the source (the summary names what it replaces).
    let held = Blob::held(file, !same && source.is_some()).with_context(ctx)?;
    Ok(Current::Binary { held, mode, same })
}

/// [`read_current_binary`] for an install from `source` (an opened, checked regular file): it is
/// hashed, and compared with what `path` holds in the same pass. Returns the source's [`Blob`]
/// and what `path` holds.
pub(super) fn hash_source_and_current(
    source_path: &Path,
    source: fs::File,
    path: &Path,
) -> anyhow::Result<(Blob, Current)> {
    let ctx = || format!("failed to read `{}`", path.display());
    let src_ctx = || format!("failed to read `{}`", source_path.display());
    let (file, fmeta) = match open_current(path)? {
        Opened::Other(current) => return Ok((Blob::hash(source).with_context(src_ctx)?, current)),
        Opened::File(file, fmeta) => (file, fmeta),
    };
    let mode = fmeta.permissions().mode() & 0o7777;
    let (blob, same) = Blob::hash_comparing(source, &file).with_context(src_ctx)?;
    // Hashed only when it differs from the source (the summary names what it replaces).
    let held = Blob::held(file, !same).with_context(ctx)?;
    Ok((blob, Current::Binary { held, mode, same }))
}

/// A path looked at without following it: a regular file opened (and its `fstat`), or what else
/// is there.
enum Opened {
    File(fs::File, fs::Metadata),
    Other(Current),
}

fn open_current(path: &Path) -> anyhow::Result<Opened> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let ctx = || format!("failed to read `{}`", path.display());
    let meta = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Opened::Other(Current::Absent));
        }
        Err(e) => return Err(e).with_context(ctx),
        Ok(meta) => meta,
    };
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(crate::error::help_error(
            format!(
                "`{}` is a directory, expected a file path to write",
                path.display()
            ),
            "remove or move the directory; nothing was written",
        ));
    }
    if ft.is_symlink() {
        let target = fs::read_link(path).with_context(ctx)?;
        return Ok(Opened::Other(Current::Symlink { target }));
    }
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else {
            "not a regular file"
        };
        return Ok(Opened::Other(Current::Special { kind }));
    }
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(f) => f,
        // Replaced by a symlink or removed since `lstat`: look again (once).
        Err(e)
            if e.raw_os_error() == Some(libc::ELOOP)
                || e.kind() == std::io::ErrorKind::NotFound =>
        {
            return match fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => Ok(Opened::Other(Current::Symlink {
                    target: fs::read_link(path).with_context(ctx)?,
                })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Ok(Opened::Other(Current::Absent))
                }
                _ => Err(e).with_context(ctx),
            };
        }
        Err(e) => return Err(e).with_context(ctx),
    };
    let fmeta = file.metadata().with_context(ctx)?;
    if !fmeta.is_file() {
        return Err(crate::error::help_error(
            format!(
                "`{}` changed while it was read (it is no longer a regular file)",
                path.display()
            ),
            "run again",
        ));
    }
    Ok(Opened::File(file, fmeta))
}
