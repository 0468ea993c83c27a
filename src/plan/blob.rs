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

/// Chunk size for hashing, comparing and the fallback copy (at most six buffers of it live).
/// 64 KiB: the buffers stay in the core's cache and come from the heap; at 256 KiB each is a
/// fresh `mmap` and a 17.7 MB compare-and-hash in a new process took 20-25 ms instead of 5.
pub(super) const CHUNK: usize = 64 << 10;

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
        let stamp = Stamp::of(&file)?;
        // Compared only at the same size; a difference found stops the comparing, not the hash.
        let other = match other {
            Some(o) if o.metadata()?.size() == stamp.size => Some(o),
            _ => None,
        };
        let (digest, same) = hash_file(&file, stamp.size, other)?;
        if !stamp.same(&Stamp::of(&file)?, source) {
            return Err(changed());
        }
        let blob = Self {
            file: Arc::new(file),
            len: stamp.size,
            sha256: Some(hex(&digest)),
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
        let mut buf = vec![0u8; CHUNK];
        let mut cmp = Comparing::new(Some(other));
        let mut off = 0u64;
        while off < len && cmp.same() {
            let n = read_chunk(&self.file, &mut buf, off, len)?;
            cmp.chunk(&buf[..n], off, len)?;
            off += n as u64;
        }
        Ok(cmp.same())
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

/// At and above this size the hash runs on a thread of its own while this one reads (and
/// compares): sha256 is the slower half, so the two overlap instead of adding up.
const PIPELINE_MIN: u64 = 4 * CHUNK as u64;

/// Buffers in flight between the reading and the hashing thread.
const PIPELINE_DEPTH: usize = 4;

/// The sha256 of the first `len` bytes of `file` and, when `other` is given, whether it holds
/// the same `len` bytes (read in the same pass, so that each chunk of `file` is read once).
fn hash_file(file: &File, len: u64, other: Option<&File>) -> std::io::Result<(Vec<u8>, bool)> {
    if len >= PIPELINE_MIN {
        if let Some(done) = hash_pipelined(file, len, other) {
            return done;
        }
    }
    hash_serial(file, len, other)
}

fn hash_serial(file: &File, len: u64, other: Option<&File>) -> std::io::Result<(Vec<u8>, bool)> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut cmp = Comparing::new(other);
    let mut off = 0u64;
    while off < len {
        let n = read_chunk(file, &mut buf, off, len)?;
        hasher.update(&buf[..n]);
        cmp.chunk(&buf[..n], off, len)?;
        off += n as u64;
    }
    Ok((hasher.finalize().to_vec(), cmp.same()))
}

/// [`hash_serial`] with the hash on a scoped thread fed through a small ring of buffers; `None`
/// when no thread could be started (a pids limit): the caller hashes serially.
fn hash_pipelined(
    file: &File,
    len: u64,
    other: Option<&File>,
) -> Option<std::io::Result<(Vec<u8>, bool)>> {
    use std::sync::mpsc::sync_channel;
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(PIPELINE_DEPTH);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(PIPELINE_DEPTH);
        let hasher = std::thread::Builder::new()
            .name("sha256".into())
            .spawn_scoped(scope, move || {
                use sha2::Digest;
                let mut hasher = sha2::Sha256::new();
                while let Ok((buf, n)) = full_rx.recv() {
                    hasher.update(&buf[..n]);
                    // The reader may have stopped (an error): then the buffer is dropped.
                    let _ = empty_tx.send(buf);
                }
                hasher.finalize().to_vec()
            })
            .ok()?;
        let mut spare: Vec<Vec<u8>> = (0..PIPELINE_DEPTH).map(|_| vec![0u8; CHUNK]).collect();
        let mut cmp = Comparing::new(other);
        let mut off = 0u64;
        let read = (|| {
            while off < len {
                let mut buf = match spare.pop() {
                    Some(buf) => buf,
                    // The hasher holds them all: wait for one back.
                    None => empty_rx.recv().map_err(|_| hasher_gone())?,
                };
                let n = read_chunk(file, &mut buf, off, len)?;
                cmp.chunk(&buf[..n], off, len)?;
                full_tx.send((buf, n)).map_err(|_| hasher_gone())?;
                off += n as u64;
            }
            Ok(())
        })();
        // Ends the hasher's loop, on success and on error alike.
        drop(full_tx);
        let digest = hasher.join().map_err(|_| hasher_gone());
        Some(read.and(digest).map(|digest| (digest, cmp.same())))
    })
}

fn hasher_gone() -> std::io::Error {
    std::io::Error::other("internal error: the hashing thread stopped")
}

/// Compares a file chunk by chunk with the chunks read from another, until the first difference.
struct Comparing<'a> {
    other: Option<(&'a File, Vec<u8>)>,
    same: bool,
}

impl<'a> Comparing<'a> {
    fn new(other: Option<&'a File>) -> Self {
        Self {
            same: other.is_some(),
            other: other.map(|o| (o, vec![0u8; CHUNK])),
        }
    }

    /// Compares `chunk` (the bytes at `off`) with what the other file holds there.
    fn chunk(&mut self, chunk: &[u8], off: u64, len: u64) -> std::io::Result<()> {
        if let Some((o, obuf)) = &mut self.other {
            let m = read_chunk(o, &mut obuf[..chunk.len()], off, len)?;
            if m != chunk.len() || *chunk != obuf[..m] {
                self.same = false;
                self.other = None;
            }
        }
        Ok(())
    }

    fn same(&self) -> bool {
        self.same
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

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 11) as u8)
            .collect()
    }

    fn file_with(dir: &std::path::Path, name: &str, bytes: &[u8]) -> File {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        File::open(path).unwrap()
    }

    #[test]
    fn hashing_on_a_thread_gives_the_serial_sha256_at_every_size_around_the_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let base = PIPELINE_MIN as usize;
        for len in [0, 1, CHUNK, base - 1, base, base + 1, 9 * CHUNK + 5] {
            let bytes = payload(len, 3);
            let f = file_with(dir.path(), "f", &bytes);
            let (serial, _) = hash_serial(&f, len as u64, None).unwrap();
            let (chosen, same) = hash_file(&f, len as u64, None).unwrap();
            let expected = {
                use sha2::Digest;
                sha2::Sha256::digest(&bytes).to_vec()
            };
            assert_eq!(serial, expected, "len {len}");
            assert_eq!(chosen, expected, "len {len}");
            assert!(!same, "nothing was compared at len {len}");
            if len >= base {
                let (piped, _) = hash_pipelined(&f, len as u64, None).unwrap().unwrap();
                assert_eq!(piped, expected, "len {len}");
            }
        }
    }

    #[test]
    fn compare_while_hashing_finds_a_single_byte_difference_in_any_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let len = 9 * CHUNK + 5;
        let bytes = payload(len, 4);
        let src = file_with(dir.path(), "src", &bytes);
        let same = file_with(dir.path(), "same", &bytes);
        assert!(hash_file(&src, len as u64, Some(&same)).unwrap().1);
        for at in [0, CHUNK - 1, CHUNK, 5 * CHUNK + 77, len - 1] {
            let mut other = bytes.clone();
            other[at] ^= 0x40;
            let o = file_with(dir.path(), "other", &other);
            let (digest, same) = hash_file(&src, len as u64, Some(&o)).unwrap();
            assert!(!same, "difference at {at} not found");
            let (serial, serial_same) = hash_serial(&src, len as u64, Some(&o)).unwrap();
            assert_eq!((digest, same), (serial, serial_same), "at {at}");
        }
    }

    #[test]
    fn a_source_that_shrinks_under_the_hash_is_an_error_not_a_short_hash() {
        let dir = tempfile::tempdir().unwrap();
        let len = 9 * CHUNK + 5;
        // Told the length it had when it was `stat`ed, after it was cut: reading past the end
        // must fail, on the hashing thread's path too.
        let f = file_with(dir.path(), "f", &payload(3 * CHUNK, 5));
        let path = dir.path().join("f");
        let err = hash_file(&f, len as u64, None).unwrap_err();
        assert!(err.to_string().contains("changed"), "{err}");
        let blob = Blob::hash(File::open(&path).unwrap()).unwrap();
        assert_eq!(blob.len(), 3 * CHUNK as u64);
    }
}
