//! Node-side tooling for Tetragon's runtime hooks: the core of `tetragon-oci-hook-setup`.
//!
//! The binary's `cli` parses the arguments and its `ops` (one module per command) orchestrate
//! this library, which knows no command line and prints nothing:
//!
//! - [`containerd`] and [`crio`]: pure, format-preserving edits of runtime configuration
//!   (`&mut DocumentMut` in, [`edit::Edit`] out, no I/O);
//! - [`text`]: the text-level pieces those edits need (line endings, line lookup);
//! - [`patch`]: reads a config, runs one edit, checks the result and turns it into a [`plan::Plan`];
//! - [`plan`]: a plan of file changes, its unified diff, its atomic application and undo;
//! - [`hook_invocation`]: how the runtime runs the hook, rendered by [`hook_json`] (the OCI
//!   hooks.d file format) and by the [`nri`] plugin's adjustment;
//! - [`install`]: planning `install`/`uninstall` (checks, binary copy, hook file, installer
//!   leases) and `print-config`;
//! - [`nri`]: the NRI plugin that `install --interface nri-hook` runs on containerd;
//! - [`layers`]: a runtime config as a main file and its drop-ins (later files win), read by
//!   [`nri_validator`] (does NRI's default validator reject OCI hooks?) and [`hooks_dirs`]
//!   (which hooks dirs cri-o or podman reads);
//! - [`status`]: the checks of `status` (is the hook set up and working on this node?) and the
//!   NRI plugin's state file;
//! - [`defaults`]: every default name and path, once; [`error`]: errors with a `help:` fix;
//! - [`sys`]: the OS calls (signals, `statvfs`, `flock`, ...), the only `unsafe` code.
//!
//! The hook itself (`tetragon-oci-hook`) is the workspace member `oci-hook/` (crate `oci_hook`):
//! this package uses it to validate hook arguments and share its defaults; it depends on
//! nothing here.
//!
//! Data flows one way: arguments -> ops -> (read, edit, verify) -> plan -> diff -> apply. Core
//! modules do no I/O except [`plan`] and [`sys`] (and the reads and checks [`patch`] and
//! [`install`] make through them).

#![warn(missing_docs)]

pub mod containerd;
pub mod crio;
pub mod defaults;
pub mod dropin;
pub mod edit;
pub mod effective;
pub mod error;
pub mod hook_invocation;
pub mod hook_json;
pub mod hooks_dirs;
pub mod install;
pub mod layers;
pub mod nri;
pub mod nri_validator;
pub mod patch;
pub mod plan;
pub mod status;
pub mod style;
pub mod sys;
pub mod text;
