//! Shared helpers for the integration tests (and benches): the one test harness.
//!
//! Entry point: put `mod support;` at the top (crate root) of a test file in `tests/` (a bench
//! uses `#[path = "../tests/support/mod.rs"] mod support;`), then use the modules and the
//! `require!` / `skip!` macros of [`skip`]:
//!
//! ```ignore
//! mod support;
//! use support::runtimes::{self, Release};
//!
//! #[test]
//! fn nri_enabled_in_dump() {
//!     let bin = require!(runtimes::containerd(Release::V2_1), runtimes::missing(Release::V2_1));
//!     let dump = runtimes::config_dump(&bin, config_path).unwrap();
//!     // ...
//! }
//! ```
//!
//! - [`skip`]: the one skip policy (`E2E_REQUIRED=1` fails, else one visible `skipped:` line).
//! - [`child`]: the one way to stop a child process (SIGTERM, bounded wait, SIGKILL).
//! - [`cmd`]: running our setup binary, transcripts for snapshots, listings.
//! - [`podman`]: the one podman store and image.
//! - [`runtimes`], [`containerd`], [`cri`]: fetched containerd releases, a private containerd,
//!   a CRI client.
//! - [`fake_nri`]: the runtime side of NRI, for our plugin (tests and the `nri` bench).
//! - [`values`]: TOML values reduced to what they mean.
//!
//! `mod support;` must be declared at the crate root of the test binary: the macros refer to
//! `$crate::support::skip`. (Cargo does not treat `tests/support/` as a test target of its own.)
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
pub mod child;
pub mod cmd;
pub mod containerd;
pub mod cri;
pub mod fake_nri;
pub mod podman;
pub mod runtimes;
pub mod skip;
pub mod values;

pub use bin::hook_bin;
