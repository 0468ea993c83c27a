//! Generated code for the trimmed agent API in `proto/tetragon.proto`.
#![allow(missing_docs, unreachable_pub, clippy::all)]
include!(concat!(env!("OUT_DIR"), "/tetragon.rs"));
