//! Shared helpers for the integration tests.
//!
//! Entry point: put `mod support;` at the top (crate root) of a test file in
//! `tests/`, then use `support::runtimes::...` and the `require!` macro:
//!
//! ```ignore
//! mod support;
//! use support::runtimes::{self, Release};
//!
//! #[test]
//! fn nri_enabled_in_dump() {
//!     let bin = require!(runtimes::containerd(Release::V2_1), "containerd 2.1 not found");
//!     let dump = runtimes::config_dump(&bin, config_path).unwrap();
//!     // ...
//! }
//! ```
//!
//! `mod support;` must be declared at the crate root of the test binary:
//! `require!` refers to `$crate::support::runtimes`.  (Cargo does not treat
//! `tests/support/` as a test target of its own.)
#![allow(
    dead_code,
    unused_macros,
    unused_imports,
    unreachable_pub,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

pub mod bin;
pub mod containerd;
pub mod cri;
pub mod runtimes;
pub mod values;

pub use bin::hook_bin;
