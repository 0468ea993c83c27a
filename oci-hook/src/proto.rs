//! Generated messages and client of the trimmed agent API in `proto/tetragon.proto` (the tests'
//! stand-in server is generated in the dev-only `test-agent` crate).
#![allow(missing_docs, unreachable_pub, clippy::all)]
include!(concat!(env!("OUT_DIR"), "/tetragon.rs"));
