//! Unary ttrpc over one logical connection: message framing and the request/response envelope.
//!
//! A ttrpc message is a 10-byte header `[length u32 BE][stream id u32 BE][type u8][flags u8]`
//! followed by `length` bytes: a protobuf `ttrpc.Request` (type 1) or `ttrpc.Response` (type 2).
//! [`Assembler`] turns a connection's byte stream, fed in arbitrary fragments, back into messages.
//! Streaming (type 3, data) is not supported: NRI uses unary calls only.
//!
//! A message longer than [`MAX_MESSAGE`] is skipped without being stored, as ttrpc itself does,
//! and reported as [`Message::Oversized`] so that the caller can answer `RESOURCE_EXHAUSTED`.

use prost::Message as _;

use crate::nri::proto::ttrpc::{Request, Response, Status};

/// Length of a ttrpc message header.
pub const HEADER_LEN: usize = 10;
/// The largest message stored (ttrpc's own limit is 4 MiB).
pub const MAX_MESSAGE: u32 = 16 << 20;
/// Message type of a request.
pub const TYPE_REQUEST: u8 = 1;
/// Message type of a response.
pub const TYPE_RESPONSE: u8 = 2;

/// gRPC status codes used in responses.
pub mod code {
    /// The request could not be decoded.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// The message was larger than [`super::MAX_MESSAGE`].
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// No such service or method.
    pub const UNIMPLEMENTED: i32 = 12;
    /// The handler failed.
    pub const INTERNAL: i32 = 13;
}

/// One reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A complete message.
    Complete {
        /// The stream (call) it belongs to; odd for client-initiated calls.
        stream_id: u32,
        /// [`TYPE_REQUEST`], [`TYPE_RESPONSE`] or another type.
        kind: u8,
        /// The header's flags.
        flags: u8,
        /// The protobuf payload.
        payload: Vec<u8>,
    },
    /// A message longer than [`MAX_MESSAGE`], skipped.
    Oversized {
        /// The stream it belongs to.
        stream_id: u32,
        /// Its announced length.
        len: u32,
    },
}

/// Reassembles ttrpc messages from a byte stream fed in fragments.
#[derive(Debug, Default)]
pub struct Assembler {
    header: [u8; HEADER_LEN],
    have: usize,
    /// Header parsed: (stream id, type, flags, length).
    current: Option<(u32, u8, u8, u32)>,
    payload: Vec<u8>,
    /// Bytes of an oversized message still to skip.
    skip: u32,
}

impl Assembler {
    /// An assembler at the start of a message.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds a fragment of the connection's stream; complete messages are pushed to `out`.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<Message>) {
        while !data.is_empty() {
            if self.skip > 0 {
                let take = (self.skip as usize).min(data.len());
                self.skip -= take as u32;
                data = &data[take..];
                continue;
            }
            let Some((stream_id, kind, flags, len)) = self.current else {
                let take = (HEADER_LEN - self.have).min(data.len());
                self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
                self.have += take;
                data = &data[take..];
                if self.have == HEADER_LEN {
                    self.have = 0;
                    self.start_message(out);
                }
                continue;
            };
            let want = len as usize - self.payload.len();
            let take = want.min(data.len());
            self.payload.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.payload.len() == len as usize {
                self.current = None;
                out.push(Message::Complete {
                    stream_id,
                    kind,
                    flags,
                    payload: std::mem::take(&mut self.payload),
                });
            }
        }
    }

    fn start_message(&mut self, out: &mut Vec<Message>) {
        let h = self.header;
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let stream_id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        let (kind, flags) = (h[8], h[9]);
        if len > MAX_MESSAGE {
            self.skip = len;
            out.push(Message::Oversized { stream_id, len });
        } else if len == 0 {
            out.push(Message::Complete {
                stream_id,
                kind,
                flags,
                payload: Vec::new(),
            });
        } else {
            // Grow as bytes arrive; the header's length alone reserves nothing big.
            self.payload = Vec::with_capacity((len as usize).min(64 << 10));
            self.current = Some((stream_id, kind, flags, len));
        }
    }

    /// Whether the stream is between messages.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.current.is_none() && self.skip == 0
    }
}

/// Encodes one ttrpc message: header and payload.
pub fn encode_message(stream_id: u32, kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(payload);
    out
}

/// A successful response carrying `payload` (an encoded reply message).
pub fn ok_response(stream_id: u32, payload: Vec<u8>) -> Vec<u8> {
    let resp = Response {
        status: None,
        payload,
    };
    encode_message(stream_id, TYPE_RESPONSE, 0, &resp.encode_to_vec())
}

/// An error response with a gRPC status code and message.
pub fn error_response(stream_id: u32, code: i32, message: String) -> Vec<u8> {
    let resp = Response {
        status: Some(Status { code, message }),
        payload: Vec::new(),
    };
    encode_message(stream_id, TYPE_RESPONSE, 0, &resp.encode_to_vec())
}

/// A request message for `service/method` with an encoded argument.
pub fn request(stream_id: u32, service: &str, method: &str, payload: Vec<u8>) -> Vec<u8> {
    let req = Request {
        service: service.to_owned(),
        method: method.to_owned(),
        payload,
        timeout_nano: 0,
        metadata: Vec::new(),
    };
    encode_message(stream_id, TYPE_REQUEST, 0, &req.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reassemble_from_any_split() {
        let mut wire = encode_message(1, TYPE_REQUEST, 0, &[9u8; 13_000]);
        wire.extend(encode_message(3, TYPE_REQUEST, 0, b""));
        wire.extend(encode_message(5, TYPE_RESPONSE, 2, b"xy"));
        for split in [1, 7, 4096, 9999, wire.len()] {
            let mut a = Assembler::new();
            let mut out = Vec::new();
            for chunk in wire.chunks(split) {
                a.feed(chunk, &mut out);
            }
            assert!(a.at_boundary());
            assert_eq!(out.len(), 3, "split {split}");
            assert!(
                matches!(&out[0], Message::Complete { stream_id: 1, payload, .. } if payload.len() == 13_000)
            );
            assert!(
                matches!(&out[2], Message::Complete { stream_id: 5, kind: TYPE_RESPONSE, flags: 2, payload } if payload == b"xy")
            );
        }
    }

    #[test]
    fn oversized_message_is_skipped_not_stored() {
        let mut a = Assembler::new();
        let mut out = Vec::new();
        let mut header = (MAX_MESSAGE + 1).to_be_bytes().to_vec();
        header.extend_from_slice(&7u32.to_be_bytes());
        header.extend_from_slice(&[TYPE_REQUEST, 0]);
        a.feed(&header, &mut out);
        assert_eq!(
            out,
            [Message::Oversized {
                stream_id: 7,
                len: MAX_MESSAGE + 1
            }]
        );
        a.feed(&vec![0u8; 1 << 20], &mut out);
        assert_eq!(a.payload.capacity(), 0);
        assert!(!a.at_boundary());
    }
}
