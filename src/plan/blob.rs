//! Binaries handled as open files, never read whole: hashed and compared in fixed chunks, copied
//! with `copy_file_range` (a bounded read/write loop where the kernel cannot). Memory stays at a
//! few chunk buffers whatever the size of the binary.
//!
//! A [`Blob`] holds its file open from the plan to the apply, so the inode copied is the one
//! hashed and compared; that it still holds those bytes is checked by its `stat` before and
//! after the copy: size and mtime, and for a source also ctime (which any write changes; not for
//! a destination held to be put back by an undo, since replacing or unlinking it changes its
//! ctime too).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use anyhow::Context as _;

/// Chunk size for hashing, comparing and the fallback copy (one or two buffers of it live).
pub(super) const CHUNK: usize = 256 << 10;

/// What identifies a file's content without reading it: any write changes `ctime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The same content, as far as `stat` tells: ctime only when `ctime` (see the module docs).
    fn same(&self, now: &Self, ctime: bool) -> bool {
        (self.dev, self.ino, self.size, self.mtime) == (now.dev, now.ino, now.size, now.mtime)
            && (!ctime || self.ctime == now.ctime)
    }

    fn of(file: &File) -> std::io::Result<Self> {
        let m = file.metadata()?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// A regular file held open, with its size and (when hashed) its sha256.
#[derive(Debug, Clone)]
pub struct Blob {
    file: Arc<File>,
    len: u64,
    sha256: Option<String>,
    stamp: Stamp,
    /// A source (ctime checked) rather than a held destination.
    source: bool,
}

impl PartialEq for Blob {
    fn eq(&self, other: &Self) -> bool {
        self.stamp == other.stamp
    }
}

impl Eq for Blob {}

impl Blob {
    /// Takes an opened regular file (checked by the caller), the source of a copy, and hashes it
    /// in chunks. The file is read by offset (`pread`), so where its offset stands does not
    /// matter.
    pub fn hash(file: File) -> std::io::Result<Self> {
        Ok(Self::hashed(file, true, None)?.0)
    }

    /// [`Blob::hash`], comparing in the same pass with `other` (a destination's open file) when
    /// it has the same size: each chunk is read once for both (an install over an identical
    /// copy reads the source once, not twice). The `bool` says whether `other` holds the same
    /// bytes.
    pub fn hash_comparing(file: File, other: &File) -> std::io::Result<(Self, bool)> {
        Self::hashed(file, true, Some(other))
    }

    /// Takes the file a destination holds (to compare, or to put back by an undo), hashed when
    /// `hash`.
    pub fn held(file: File, hash: bool) -> std::io::Result<Self> {
        if hash {
            return Ok(Self::hashed(file, false, None)?.0);
        }
        let stamp = Stamp::of(&file)?;
        Ok(Self {
            file: Arc::new(file),
            len: stamp.size,
            sha256: None,
            stamp,
            source: false,
        })
    }

    fn hashed(file: File, source: bool, other: Option<&File>) -> std::io::Result<(Self, bool)> {
        use sha2::Digest;
        let stamp = Stamp::of(&file)?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        // Compared only at the same size; a difference found stops the comparing, not the hash.
        let mut other = match other {
            Some(o) if o.metadata()?.size() == stamp.size => Some((o, vec![0u8; CHUNK])),
            _ => None,
        };
        let mut same = other.is_some();
        let mut off = 0u64;
        while off < stamp.size {
            let n = read_chunk(&file, &mut buf, off, stamp.size)?;
            hasher.update(&buf[..n]);
            if let Some((o, obuf)) = &mut other {
                let m = read_chunk(o, &mut obuf[..n], off, stamp.size)?;
                if m != n || buf[..n] != obuf[..n] {
                    same = false;
                    other = None;
                }
            }
            off += n as u64;
        }
        if !stamp.same(&Stamp::of(&file)?, source) {
            return Err(changed());
        }
        let blob = Self {
            file: Arc::new(file),
            len: stamp.size,
            sha256: Some(hex(&hasher.finalize())),
            stamp,
            source,
        };
        Ok((blob, same))
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lowercase hex sha256, when hashed.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }

    /// Whether `other` (an open regular file) holds the same bytes: sizes first, then chunk by
    /// chunk, stopping at the first difference.
    pub fn same_as(&self, other: &File) -> std::io::Result<bool> {
        let len = other.metadata()?.size();
        if len != self.len {
            return Ok(false);
        }
        let mut a = vec![0u8; CHUNK];
        let mut b = vec![0u8; CHUNK];
        let mut off = 0u64;
        while off < len {
            let n = read_chunk(&self.file, &mut a, off, len)?;
            let m = read_chunk(other, &mut b[..n], off, len)?;
            if m != n || a[..n] != b[..n] {
                return Ok(false);
            }
            off += n as u64;
        }
        Ok(true)
    }

    /// Copies the whole content into `dst` (an empty file opened for writing, offset 0):
    /// `copy_file_range` where the kernel can, else a [`CHUNK`]ed read/write loop. Fails if the
    /// source changed since it was hashed (its `stat`, before and after) or came up short.
    pub fn copy_to(&self, dst: &mut File) -> anyhow::Result<()> {
        if !self.stamp.same(&Stamp::of(&self.file)?, self.source) {
            return Err(changed().into());
        }
        let mut off_in = 0u64;
        let mut off_out = 0u64;
        let mut fallback = false;
        while off_in < self.len {
            let want = usize::try_from(self.len - off_in)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            match rustix::fs::copy_file_range(
                &*self.file,
                Some(&mut off_in),
                &*dst,
                Some(&mut off_out),
                want,
            ) {
                Ok(0) => return Err(changed().into()),
                Ok(_) => {}
                // Not between these files (another filesystem on old kernels, some FUSE and
                // network filesystems): copy through a buffer.
                Err(
                    rustix::io::Errno::XDEV
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::OPNOTSUPP
                    | rustix::io::Errno::INVAL,
                ) if off_in == 0 => {
                    fallback = true;
                    break;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(std::io::Error::from(e)).context("copy_file_range failed"),
            }
        }
        if fallback {
            let mut buf = vec![0u8; CHUNK];
            let mut off = 0u64;
            while off < self.len {
                let n = read_chunk(&self.file, &mut buf, off, self.len)?;
                dst.write_all(&buf[..n])?;
                off += n as u64;
            }
        }
        if !self.stamp.same(&Stamp::of(&self.file)?, self.source) {
            return Err(changed().into());
        }
        Ok(())
    }
}

/// Reads `buf.len()` bytes at `off` (fewer at `len`); a file that ends early is an error.
fn read_chunk(file: &File, buf: &mut [u8], off: u64, len: u64) -> std::io::Result<usize> {
    let n = usize::try_from(len - off).map_or(buf.len(), |rest| rest.min(buf.len()));
    let mut got = 0;
    while got < n {
        match file.read_at(&mut buf[got..n], off + got as u64) {
            Ok(0) => return Err(changed()),
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn changed() -> std::io::Error {
    std::io::Error::other("the file changed while it was read")
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}
