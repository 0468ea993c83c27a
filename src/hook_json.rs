//! The OCI hooks.d file format of containers/common (`oci-hooks(5)`), read by cri-o and podman.
//!
//! [`HookConfig`] models schema 1.0.0, which is what we write: [`render`] gives pretty JSON with
//! a trailing newline. [`parse`] also reads the legacy 0.1.0 form (no `version`, a string
//! `hook`, `cmds`, ...) so that an existing file can be reported, but legacy files are never
//! written. [`tetragon_hook`] builds the one hook this tool installs. Nothing here touches the
//! file system.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hook_invocation::HookInvocation;

/// The schema version written by this tool.
pub const VERSION: &str = "1.0.0";

/// A hooks.d file in schema 1.0.0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookConfig {
    /// Schema version, `1.0.0`.
    pub version: String,
    /// The command to run.
    pub hook: Command,
    /// When to run it.
    pub when: When,
    /// The OCI stages to run it at (`prestart`, `createRuntime`, `poststop`, ...).
    pub stages: Vec<String>,
}

/// The command of a hook (the OCI runtime spec's `Hook`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Absolute path of the program, on the host.
    pub path: String,
    /// Its argv, `args[0]` included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Its environment, `KEY=value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Seconds before the runtime aborts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
}

/// Conditions for running a hook; any matching condition runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct When {
    /// Run for every container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always: Option<bool>,
    /// Annotation key regex to value regex.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Regexes matched against the container's command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
    /// Run when the container has bind mounts.
    #[serde(
        default,
        rename = "hasBindMounts",
        skip_serializing_if = "Option::is_none"
    )]
    pub has_bind_mounts: Option<bool>,
}

/// A hooks.d file in the legacy 0.1.0 schema (read only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyHookConfig {
    /// Path of the program.
    pub hook: String,
    /// Arguments after the program.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,
    /// The OCI stages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
    /// Command regexes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmds: Vec<String>,
    /// Annotation regexes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
    /// Run when the container has bind mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hasbindmounts: Option<bool>,
}

/// A hooks.d file as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookFile {
    /// Schema 1.0.0.
    Current(HookConfig),
    /// The legacy 0.1.0 schema.
    Legacy(LegacyHookConfig),
}

impl HookFile {
    /// The program the hook runs.
    pub fn path(&self) -> &str {
        match self {
            HookFile::Current(h) => &h.hook.path,
            HookFile::Legacy(h) => &h.hook,
        }
    }

    /// The schema version (`0.1.0` for a legacy file).
    pub fn version(&self) -> &str {
        match self {
            HookFile::Current(h) => &h.version,
            HookFile::Legacy(_) => "0.1.0",
        }
    }
}

/// Why a hooks.d file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line of the problem (0 when unknown).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: ", self.line, self.column)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

impl From<serde_json::Error> for ParseError {
    fn from(e: serde_json::Error) -> Self {
        // serde_json appends " at line L column C"; the location is kept separately.
        let full = e.to_string();
        let message = match full.rfind(" at line ") {
            Some(i) => full[..i].to_owned(),
            None => full,
        };
        Self {
            line: e.line(),
            column: e.column(),
            message,
        }
    }
}

/// Reads a hooks.d file: schema 1.0.0, or the legacy form when there is no `version`.
///
/// ```
/// let file = rthooks::hook_json::parse(r#"{"hook": "/bin/x", "stages": ["prestart"]}"#).unwrap();
/// assert_eq!(file.version(), "0.1.0");
/// ```
pub fn parse(text: &str) -> Result<HookFile, ParseError> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    let Some(object) = value.as_object() else {
        return Err(ParseError {
            line: 1,
            column: 1,
            message: "expected a JSON object".to_owned(),
        });
    };
    match object.get("version") {
        None => Ok(HookFile::Legacy(serde_json::from_str(text)?)),
        Some(serde_json::Value::String(v)) if v == VERSION => {
            Ok(HookFile::Current(serde_json::from_str(text)?))
        }
        Some(other) => Err(ParseError {
            line: 0,
            column: 0,
            message: format!("unsupported hook schema version {other}, expected \"{VERSION}\""),
        }),
    }
}

/// Pretty JSON (two-space indent) with a trailing newline.
pub fn render(hook: &HookConfig) -> String {
    // Serializing plain strings, maps and vectors cannot fail.
    let mut out = serde_json::to_string_pretty(hook).unwrap_or_default();
    out.push('\n');
    out
}

/// The hooks.d file of the Tetragon hook: `invocation` at its stage, always.
pub fn tetragon_hook(invocation: &HookInvocation) -> HookConfig {
    HookConfig {
        version: VERSION.to_owned(),
        hook: Command {
            path: invocation.path.clone(),
            args: invocation.args(),
            env: Vec::new(),
            timeout: invocation.timeout,
        },
        when: When {
            always: Some(true),
            ..When::default()
        },
        stages: vec![invocation.stage.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tetragon_hook_renders_schema_1_0_0() {
        let hook = tetragon_hook(&HookInvocation::new(
            "/opt/tetragon/tetragon-oci-hook",
            vec!["--grpc-address=unix:///var/run/tetragon/tetragon.sock".to_owned()],
        ));
        insta::assert_snapshot!(render(&hook), @r#"
        {
          "version": "1.0.0",
          "hook": {
            "path": "/opt/tetragon/tetragon-oci-hook",
            "args": [
              "/opt/tetragon/tetragon-oci-hook",
              "createRuntime",
              "--log-fname",
              "/opt/tetragon/tetragon-oci-hook.log",
              "--grpc-address=unix:///var/run/tetragon/tetragon.sock"
            ],
            "timeout": 62
          },
          "when": {
            "always": true
          },
          "stages": [
            "createRuntime"
          ]
        }
        "#);
    }

    #[test]
    fn parse_reads_what_render_writes() {
        let hook = tetragon_hook(&HookInvocation::in_dir("/run/tetragon/", "h", vec![]));
        assert_eq!(parse(&render(&hook)).unwrap(), HookFile::Current(hook));
    }

    #[test]
    fn parse_reads_legacy_form() {
        let file = parse(
            r#"{"hook": "/x", "arguments": ["a"], "cmds": ["^sh$"], "stages": ["prestart"]}"#,
        )
        .unwrap();
        let HookFile::Legacy(legacy) = &file else {
            panic!("{file:?}")
        };
        assert_eq!(legacy.arguments, ["a"]);
        assert_eq!(file.path(), "/x");
    }

    #[test]
    fn parse_errors_name_line_and_column() {
        let err = parse("{\n  \"version\": \"1.0.0\",\n  \"hook\": 3\n}\n").unwrap_err();
        insta::assert_snapshot!(err, @"3:11: invalid type: integer `3`, expected struct Command");
        let err = parse(r#"{"version": "2.0.0"}"#).unwrap_err();
        insta::assert_snapshot!(err, @r#"unsupported hook schema version "2.0.0", expected "1.0.0""#);
        let err = parse("[]").unwrap_err();
        insta::assert_snapshot!(err, @"1:1: expected a JSON object");
    }
}
