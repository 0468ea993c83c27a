//! NRI's connection multiplexer: several logical connections over one unix socket.
//!
//! Every write is a frame `[conn id u32 BE][length u32 BE]` followed by `length` payload bytes.
//! A frame carries a fragment of its connection's byte stream, not a whole message: the runtime
//! splits a 13 KB request into a 4,096-byte and a 9,118-byte frame, so the receiver reassembles
//! per connection ([`crate::nri::ttrpc::Assembler`]). This module only splits the trunk into
//! `(conn id, fragment)` pieces and writes frames; it knows nothing about ttrpc.
//!
//! [`Demux`] never allocates what a header announces: payload bytes are handed on as they arrive,
//! and a frame longer than [`MAX_FRAME`] is an error before a byte of it is read.

use std::io::{self, Write};

/// The largest frame payload accepted (the runtime itself writes at most 4 MiB + 10).
pub const MAX_FRAME: u32 = 16 << 20;
/// Length of a frame header.
pub const HEADER_LEN: usize = 8;
/// The logical connection on which the plugin serves `nri.pkg.api.v1alpha1.Plugin`.
pub const PLUGIN_CONN: u32 = 1;
/// The logical connection on which the plugin calls `nri.pkg.api.v1alpha1.Runtime`.
pub const RUNTIME_CONN: u32 = 2;
/// Largest frame written. The runtime's ttrpc reads through a 4 KiB buffer and its mux refuses a
/// frame bigger than the buffer it is read into, so frames stay within 4 KiB.
pub const WRITE_CHUNK: usize = 4096;

/// A protocol violation on the trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxError {
    /// A frame announced more than [`MAX_FRAME`] bytes.
    FrameTooLarge {
        /// The logical connection named in the header.
        conn: u32,
        /// The announced length.
        len: u32,
    },
}

impl std::fmt::Display for MuxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MuxError::FrameTooLarge { conn, len } => write!(
                f,
                "mux frame for connection {conn} announces {len} bytes, more than the {MAX_FRAME} \
                 accepted"
            ),
        }
    }
}

impl std::error::Error for MuxError {}

/// Splits the bytes read from the trunk into per-connection fragments.
#[derive(Debug, Default)]
pub struct Demux {
    header: [u8; HEADER_LEN],
    have: usize,
    conn: u32,
    remaining: u32,
}

impl Demux {
    /// A demultiplexer at the start of a frame.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes read from the trunk; calls `sink(conn, fragment)` for each payload piece, in
    /// order. Empty frames produce no call.
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut sink: impl FnMut(u32, &[u8]),
    ) -> Result<(), MuxError> {
        while !data.is_empty() {
            if self.remaining == 0 {
                let take = (HEADER_LEN - self.have).min(data.len());
                self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                data = &data[take..];
                if self.have < HEADER_LEN {
                    return Ok(());
                }
                self.have = 0;
                let [c0, c1, c2, c3, l0, l1, l2, l3] = self.header;
                self.conn = u32::from_be_bytes([c0, c1, c2, c3]);
                let len = u32::from_be_bytes([l0, l1, l2, l3]);
                if len > MAX_FRAME {
                    return Err(MuxError::FrameTooLarge {
                        conn: self.conn,
                        len,
                    });
                }
                self.remaining = len;
                continue;
            }
            let take = (self.remaining as usize).min(data.len());
            sink(self.conn, &data[..take]);
            self.remaining -= take as u32;
            data = &data[take..];
        }
        Ok(())
    }

    /// Whether the trunk is between frames (an EOF here is a clean close).
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }
}

/// Writes `data` to logical connection `conn` as frames of at most [`WRITE_CHUNK`] bytes, in one
/// `write_all` call so that frames of two messages never interleave.
pub fn write_frames(w: &mut impl Write, conn: u32, data: &[u8]) -> io::Result<()> {
    let mut out = Vec::new();
    append_frames(&mut out, conn, data);
    w.write_all(&out)
}

/// Appends `data` for logical connection `conn` to `out` as frames of at most [`WRITE_CHUNK`]
/// bytes (the plugin queues its output and writes it without blocking).
pub fn append_frames(out: &mut Vec<u8>, conn: u32, data: &[u8]) {
    out.reserve(data.len() + HEADER_LEN * (data.len() / WRITE_CHUNK + 1));
    for chunk in data.chunks(WRITE_CHUNK) {
        out.extend_from_slice(&conn.to_be_bytes());
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(d: &mut Demux, data: &[u8]) -> Result<Vec<(u32, Vec<u8>)>, MuxError> {
        let mut out = Vec::new();
        d.feed(data, |c, b| out.push((c, b.to_vec())))?;
        Ok(out)
    }

    #[test]
    fn frames_round_trip_byte_by_byte() {
        let mut wire = Vec::new();
        write_frames(&mut wire, 1, &[7u8; 5000]).unwrap();
        write_frames(&mut wire, 2, b"abc").unwrap();
        assert_eq!(wire.len(), 5000 + 3 + 3 * HEADER_LEN);
        let mut d = Demux::new();
        let mut got: Vec<(u32, u8)> = Vec::new();
        for b in &wire {
            d.feed(std::slice::from_ref(b), |c, f| {
                got.extend(f.iter().map(|x| (c, *x)))
            })
            .unwrap();
        }
        assert!(d.at_boundary());
        assert_eq!(got.iter().filter(|(c, _)| *c == 1).count(), 5000);
        let two: Vec<u8> = got.iter().filter(|(c, _)| *c == 2).map(|x| x.1).collect();
        assert_eq!(two, b"abc");
    }

    #[test]
    fn oversized_frame_is_rejected_from_its_header() {
        let mut d = Demux::new();
        let mut wire = 1u32.to_be_bytes().to_vec();
        wire.extend_from_slice(&(MAX_FRAME + 1).to_be_bytes());
        assert_eq!(
            collect(&mut d, &wire).unwrap_err(),
            MuxError::FrameTooLarge {
                conn: 1,
                len: MAX_FRAME + 1
            }
        );
    }

    #[test]
    fn partial_header_is_not_a_boundary() {
        let mut d = Demux::new();
        assert!(collect(&mut d, &[0, 0, 0]).unwrap().is_empty());
        assert!(!d.at_boundary());
    }
}
