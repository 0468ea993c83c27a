//! Node-side tooling for Tetragon's runtime hooks.
//!
//! The library holds everything the `tetragon-oci-hook-setup` binary does, so that tests can
//! drive it without a process in between:
//!
//! - [`containerd`] and [`crio`]: pure, format-preserving edits of runtime configuration
//!   (`&mut DocumentMut` in, [`edit::Edit`] out, no I/O);
//! - [`text`]: the text-level pieces those edits need (line endings, line lookup);
//! - [`patch`]: reads a config, runs one edit, checks the result and turns it into a [`plan::Plan`];
//! - [`plan`]: a plan of file changes, its unified diff, and its atomic application;
//! - [`hook_json`]: the OCI hooks.d file format (schema 1.0.0, legacy 0.1.0 read only);
//! - [`install`]: `install`, `uninstall` and `print-config` for the `oci-hooks` interface;
//! - [`nri`]: the NRI plugin that `install --interface nri-hook` runs on containerd.
//!
//! The hook itself (`tetragon-oci-hook`) is the workspace member `oci-hook/` (crate `oci_hook`):
//! this package uses it to validate hook arguments and share its defaults; it depends on
//! nothing here.
//!
//! Data flows one way: arguments, then a plan built in memory, then its diff, then (unless the
//! caller stops there) an atomic apply.

#![warn(missing_docs)]

pub mod containerd;
pub mod crio;
pub mod edit;
pub mod hook_json;
pub mod install;
pub mod nri;
pub mod patch;
pub mod plan;
pub mod style;
pub mod text;
