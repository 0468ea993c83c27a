//! The hook's command line and its defaults file, compatible with the upstream Go hook and the
//! Helm chart.
//!
//! Accepted forms: `--flag value`, `--flag=value` (one or two dashes), boolean flags without a
//! value (`--disable-grpc`, or `--disable-grpc=false`), and `--` to end the flags. Single-value
//! flags: the last one wins. List flags: a flag given explicitly replaces the default, repeats add
//! up, and names are split on commas; regex values are never split (`a{1,3}` is one regex).
//!
//! Defaults may also come from `tetragon-oci-hook.json` beside the binary ([`DEFAULTS_FILE`]):
//! a JSON object whose keys are flag names (with `-` or `_`) and whose values are strings, booleans
//! or (for list flags) arrays of strings. Flags on the command line win over it.
//!
//! Parsing is lenient for the hook and strict for the installer: [`parse`] collects every problem
//! as a [`Diagnostic`] and keeps the default for the value in error, so that a typo is logged
//! instead of failing every container on the node; [`validate_args`] turns any problem into an
//! error, so that `tetragon-oci-hook-setup install` refuses a bad `hook-args` up front. This
//! module does no I/O except reading the defaults file in [`load_defaults_file`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::log::Level;

/// Name of the defaults file looked up beside the (symlink-resolved) binary.
pub const DEFAULTS_FILE: &str = "tetragon-oci-hook.json";

/// Largest defaults file read (it holds a few flags): a regular file, read without blocking.
pub const DEFAULTS_LIMIT: u64 = 1 << 20;

/// Name of the log file created beside the binary when `--log-fname` is not given.
pub const DEFAULT_LOG_FILE: &str = "tetragon-oci-hook.log";

/// Default agent address.
pub const DEFAULT_GRPC_ADDRESS: &str = "unix:///var/run/tetragon/tetragon.sock";

/// Default `--grpc-timeout`.
pub const DEFAULT_GRPC_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest `--grpc-timeout` accepted (60 s): [`validate_args`] rejects more, and at hook time a
/// larger value (from the defaults file, say) is clamped to it and the clamp logged. A
/// `createRuntime` run ends within this plus [`crate::GRACE`], so the setup tool can set the
/// runtime's own hook timeout from it.
pub const MAX_GRPC_TIMEOUT: Duration = Duration::from_secs(60);

/// Default `--fail-cel-timeout`: how long `--fail-cel-expr` may run.
pub const DEFAULT_CEL_TIMEOUT: Duration = Duration::from_millis(200);

/// Default `--annotations-namespace-key` list.
pub const DEFAULT_NAMESPACE_KEYS: [&str; 2] = [
    "io.kubernetes.pod.namespace",
    "io.kubernetes.cri.sandbox-namespace",
];

/// Default `--fail-allow-namespaces` list.
pub const DEFAULT_ALLOW_NAMESPACES: [&str; 1] = ["kube-system"];

/// The hook's resolved configuration (defaults, then the defaults file, then flags).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// `--log-fname`: the JSON log file.
    pub log_fname: PathBuf,
    /// `--log-level`.
    pub log_level: Level,
    /// `--grpc-address`: `unix:///path`, `unix:/path` or `host:port`.
    pub grpc_address: String,
    /// `--grpc-timeout`.
    #[serde(serialize_with = "serialize_duration")]
    pub grpc_timeout: Duration,
    /// `--disable-grpc`: do not contact the agent at all.
    pub disable_grpc: bool,
    /// `--just-print-config`: print this configuration and exit.
    pub just_print_config: bool,
    /// `--annotations-namespace-key`: annotations that hold the pod namespace.
    #[serde(rename = "annotations-namespace-key")]
    pub annotations_namespace_keys: Vec<String>,
    /// `--fail-cel-expr`: when set, decides alone whether a container fails after a failed call.
    pub fail_cel_expr: Option<String>,
    /// `--fail-cel-timeout`: longest evaluation of `--fail-cel-expr`; past it, the namespace
    /// rules decide (as for a broken expression).
    #[serde(serialize_with = "serialize_duration")]
    pub fail_cel_timeout: Duration,
    /// `--fail-allow-namespaces`: namespaces whose containers start even if the call failed.
    pub fail_allow_namespaces: Vec<String>,
    /// `--fail-allow-namespaces-regex`: regexes (substring match unless anchored) for the same.
    pub fail_allow_namespaces_regex: Vec<String>,
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

impl Config {
    /// The built-in defaults; `log_fname` goes into `binary_dir`.
    pub fn defaults(binary_dir: &Path) -> Self {
        Self {
            log_fname: binary_dir.join(DEFAULT_LOG_FILE),
            log_level: Level::Info,
            grpc_address: DEFAULT_GRPC_ADDRESS.to_owned(),
            grpc_timeout: DEFAULT_GRPC_TIMEOUT,
            disable_grpc: false,
            just_print_config: false,
            annotations_namespace_keys: DEFAULT_NAMESPACE_KEYS.map(String::from).to_vec(),
            fail_cel_expr: None,
            fail_cel_timeout: DEFAULT_CEL_TIMEOUT,
            fail_allow_namespaces: DEFAULT_ALLOW_NAMESPACES.map(String::from).to_vec(),
            fail_allow_namespaces_regex: Vec::new(),
        }
    }
}

/// A problem found while parsing; the hook logs it, the installer refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where the problem is: `command line` or the defaults file path.
    pub source: String,
    /// What is wrong, naming the flag or key in backticks.
    pub message: String,
    /// What the hook uses instead, when that is not the lower layer's value (`60s` for a
    /// `--grpc-timeout` over the maximum): the hook's log says it, a refusal does not.
    pub using: Option<String>,
    /// How to fix it (without the `help: ` prefix).
    pub help: Option<String>,
}

impl Diagnostic {
    fn new(source: &str, message: String, help: Option<String>) -> Self {
        Self {
            source: source.to_owned(),
            message,
            using: None,
            help,
        }
    }
}

/// One line for the hook's log: `source: message[; using X][; help: fix]`.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.message)?;
        if let Some(using) = &self.using {
            write!(f, "; using {using}")?;
        }
        if let Some(help) = &self.help {
            write!(f, "; help: {help}")?;
        }
        Ok(())
    }
}

/// An error in hook arguments and, when there is one, its fix as a field: `Display` shows the
/// message only, and the setup tool prints the fix last (`help: ...`, after any causes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    /// What is wrong.
    pub message: String,
    /// How to fix it (without the `help: ` prefix).
    pub help: Option<String>,
}

impl ArgError {
    /// An error with its fix.
    pub fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            help: Some(help.into()),
        }
    }
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ArgError {}

/// The fix of the outermost [`ArgError`] in `err`, if any.
fn help_in(err: &anyhow::Error) -> Option<String> {
    err.chain()
        .find_map(|e| e.downcast_ref::<ArgError>())
        .and_then(|a| a.help.clone())
        .or_else(|| err.downcast_ref::<ArgError>().and_then(|a| a.help.clone()))
}

/// Result of [`parse`]: the configuration, the positional arguments and the problems found.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The resolved configuration.
    pub config: Config,
    /// `--help` or `-h` was given.
    pub help: bool,
    /// `--version` was given.
    pub version: bool,
    /// Positional arguments: the first is the hook name (`createRuntime`, ...).
    pub positionals: Vec<String>,
    /// Problems found; each one left the affected setting at its lower-layer value.
    pub diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    /// The hook name, if any.
    pub fn hook(&self) -> Option<&str> {
        self.positionals.first().map(String::as_str)
    }
}

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A single string value; the last one wins.
    Value,
    /// A boolean; no separate value (`--flag` or `--flag=true|false`).
    Bool,
    /// A list of names split on commas; repeats add up.
    List,
    /// A list of regexes, one per occurrence.
    RegexList,
}

/// Every flag of the hook, with how it takes its value.
const FLAGS: [(&str, Kind); 11] = [
    ("log-fname", Kind::Value),
    ("log-level", Kind::Value),
    ("grpc-address", Kind::Value),
    ("grpc-timeout", Kind::Value),
    ("disable-grpc", Kind::Bool),
    ("just-print-config", Kind::Bool),
    ("annotations-namespace-key", Kind::List),
    ("fail-cel-expr", Kind::Value),
    ("fail-cel-timeout", Kind::Value),
    ("fail-allow-namespaces", Kind::List),
    ("fail-allow-namespaces-regex", Kind::RegexList),
];

fn kind_of(name: &str) -> Option<Kind> {
    FLAGS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

/// One flag occurrence, before it is applied to a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting {
    name: &'static str,
    value: String,
}

fn canonical(name: &str) -> Option<&'static str> {
    let name = name.replace('_', "-");
    FLAGS.iter().map(|(n, _)| *n).find(|n| *n == name)
}

/// Splits the command line into settings, positionals and problems (no value checks yet).
fn scan(args: &[String]) -> (Vec<Setting>, Vec<String>, bool, bool, Vec<Diagnostic>) {
    let mut settings = Vec::new();
    let mut positionals = Vec::new();
    let mut diags = Vec::new();
    let (mut help, mut version) = (false, false);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            positionals.extend(iter.by_ref().cloned());
            break;
        }
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            positionals.push(arg.clone());
            continue;
        };
        if body.is_empty() {
            positionals.push(arg.clone());
            continue;
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        match name {
            "h" | "help" => {
                help = true;
                continue;
            }
            "version" | "V" => {
                version = true;
                continue;
            }
            _ => {}
        }
        let Some(canon) = canonical(name) else {
            let near = nearest(name, FLAGS.iter().map(|(n, _)| *n));
            let help = match near {
                Some(near) => format!("did you mean `--{near}`?"),
                None => format!("known flags are {}", known_flags()),
            };
            // A typo of a flag that takes a value (`--grpc-timout 1s`): its value goes with
            // it, rather than becoming the hook name.
            if inline.is_none() && near.and_then(kind_of).is_some_and(|k| k != Kind::Bool) {
                if let Some(next) = iter.as_slice().first() {
                    if !next.starts_with('-') {
                        iter.next();
                    }
                }
            }
            diags.push(Diagnostic::new(
                "command line",
                format!("unknown flag `{arg}`"),
                Some(help),
            ));
            continue;
        };
        let kind = kind_of(canon).unwrap_or(Kind::Value);
        let value = match (kind, inline) {
            (_, Some(v)) => v,
            (Kind::Bool, None) => "true".to_owned(),
            (_, None) => match iter.next() {
                Some(v) => v.clone(),
                None => {
                    diags.push(Diagnostic::new(
                        "command line",
                        format!("flag `--{canon}` needs a value"),
                        None,
                    ));
                    continue;
                }
            },
        };
        settings.push(Setting { name: canon, value });
    }
    (settings, positionals, help, version, diags)
}

/// The hook names the hook acts on or accepts, with what each does (`--help` lists them).
pub const HOOKS: [(&str, &str); 4] = [
    (
        CREATE_RUNTIME,
        "send the container to the agent, apply the fail policy if that fails",
    ),
    (
        "createContainer",
        "nothing to do (accepted for older installs)",
    ),
    ("poststop", "nothing to do"),
    ("server-version", "ask the agent for its version"),
];

/// The candidate closest to `given` by edit distance (ignoring case, `_` read as `-`), if it
/// is close enough to be a typo of it: at most 2 edits, and fewer than half its length. Only
/// candidates within 2 chars of `given`'s length are compared (others are more than 2 edits
/// away), so a huge argument costs one pass over it, not one per candidate and char.
pub fn nearest<'a>(given: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    const MAX_EDITS: usize = 2;
    let len = given.chars().count();
    let mut candidates = candidates
        .filter(|c| c.chars().count().abs_diff(len) <= MAX_EDITS)
        .peekable();
    candidates.peek()?;
    let given = given.to_ascii_lowercase().replace('_', "-");
    candidates
        .map(|c| (edit_distance(&given, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= MAX_EDITS && *d * 2 < c.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance over chars (inputs are a few dozen chars: O(n*m) is nothing).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diag + usize::from(ca != *cb));
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn known_flags() -> String {
    FLAGS
        .iter()
        .map(|(n, _)| format!("`--{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits a list-flag value on commas, trimming blanks and dropping empty names.
fn split_names(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Applies one layer of settings to `config`. Within a layer list flags add up; a layer that
/// names a list flag replaces whatever the lower layers gave it.
fn apply(config: &mut Config, settings: &[Setting], source: &str, diags: &mut Vec<Diagnostic>) {
    let mut replaced: Vec<&str> = Vec::new();
    for Setting { name, value } in settings {
        let name = *name;
        let err = |message: String| Diagnostic::new(source, message, None);
        let fix =
            |message: String, help: &str| Diagnostic::new(source, message, Some(help.to_owned()));
        if matches!(kind_of(name), Some(Kind::List | Kind::RegexList)) && !replaced.contains(&name)
        {
            replaced.push(name);
            match name {
                "annotations-namespace-key" => config.annotations_namespace_keys.clear(),
                "fail-allow-namespaces" => config.fail_allow_namespaces.clear(),
                _ => config.fail_allow_namespaces_regex.clear(),
            }
        }
        match name {
            "log-fname" => {
                if value.is_empty() {
                    diags.push(err("`--log-fname` is empty".to_owned()));
                } else {
                    config.log_fname = PathBuf::from(value);
                }
            }
            "log-level" => match Level::parse(value) {
                Some(level) => config.log_level = level,
                None => diags.push(fix(
                    format!("invalid `--log-level` `{value}`"),
                    &format!("use one of {}", Level::NAMES.join(", ")),
                )),
            },
            "grpc-address" => {
                // Kept even when invalid: the call then fails with a clear error and the fail
                // policy decides, rather than silently talking to the default socket.
                config.grpc_address = value.clone();
                if let Err(e) = crate::address::Address::parse(value) {
                    diags.push(err(format!("invalid `--grpc-address`: {e:#}")));
                }
            }
            "grpc-timeout" => match parse_duration(value) {
                Ok(d) if d > MAX_GRPC_TIMEOUT => {
                    config.grpc_timeout = MAX_GRPC_TIMEOUT;
                    let max = format_duration(MAX_GRPC_TIMEOUT);
                    diags.push(Diagnostic {
                        using: Some(max.clone()),
                        ..fix(
                            format!("`--grpc-timeout` `{value}` is more than the maximum {max}"),
                            &format!(
                                "every container start waits for the hook, give at most {max}"
                            ),
                        )
                    });
                }
                Ok(d) => config.grpc_timeout = d,
                Err(e) => diags.push(Diagnostic::new(
                    source,
                    format!("invalid `--grpc-timeout`: {e:#}"),
                    help_in(&e),
                )),
            },
            "fail-cel-timeout" => match parse_duration(value) {
                Ok(d) if !d.is_zero() => config.fail_cel_timeout = d,
                Ok(_) => diags.push(fix(
                    "`--fail-cel-timeout` is zero".to_owned(),
                    "give a duration such as 200ms",
                )),
                Err(e) => diags.push(Diagnostic::new(
                    source,
                    format!("invalid `--fail-cel-timeout`: {e:#}"),
                    help_in(&e),
                )),
            },
            "disable-grpc" | "just-print-config" => match parse_bool(value) {
                Some(b) if name == "disable-grpc" => config.disable_grpc = b,
                Some(b) => config.just_print_config = b,
                None => diags.push(fix(
                    format!("invalid value `{value}` for `--{name}`"),
                    "use true or false",
                )),
            },
            "fail-cel-expr" => {
                if value.trim().is_empty() {
                    config.fail_cel_expr = None;
                } else {
                    config.fail_cel_expr = Some(value.clone());
                }
            }
            "annotations-namespace-key" => {
                config.annotations_namespace_keys.extend(split_names(value))
            }
            "fail-allow-namespaces" => config.fail_allow_namespaces.extend(split_names(value)),
            _ => match regex_error(value) {
                None => config.fail_allow_namespaces_regex.push(value.clone()),
                Some(e) => diags.push(fix(
                    format!(
                        "invalid `--fail-allow-namespaces-regex` `{value}`: {}",
                        first_line(&e)
                    ),
                    "the value is a regex (RE2 syntax, as upstream's): put `\\` before `(`, `[`, \
                     `{`, `.` or `*` meant literally, or list plain names with \
                     `--fail-allow-namespaces`",
                )),
            },
        }
    }
}

/// Why `value` is not a regex the fail check can use, compiled as the fail check compiles it.
#[cfg(feature = "client")]
fn regex_error(value: &str) -> Option<String> {
    regex::Regex::new(value).err().map(|e| e.to_string())
}

/// Without `client` (the setup tool, which links no regex engine) a regex is not checked here:
/// `tetragon-oci-hook-setup install` has the hook binary it installs check it (with
/// `--fail-cel-expr`, by the hidden `check-cel` command), so the hook that will use it judges it.
#[cfg(not(feature = "client"))]
fn regex_error(_value: &str) -> Option<String> {
    None
}

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" => Some(true),
        "0" | "f" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// Parses the defaults file's text into settings; a malformed file yields an error, an unknown
/// key or a value of the wrong type yields a diagnostic and is skipped.
fn defaults_settings(text: &str, source: &str) -> anyhow::Result<(Vec<Setting>, Vec<Diagnostic>)> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| anyhow::anyhow!("line {}, column {}: {e}", e.line(), e.column()))?;
    let serde_json::Value::Object(map) = value else {
        bail!("expected a JSON object of flag names and values");
    };
    let mut settings = Vec::new();
    let mut diags = Vec::new();
    for (key, value) in map {
        let err = |message: String| Diagnostic::new(source, message, None);
        let bare = key.trim_start_matches('-');
        let Some(name) = canonical(bare) else {
            diags.push(Diagnostic::new(
                source,
                format!("unknown key `{key}` ignored"),
                Some("keys are flag names".to_owned()),
            ));
            continue;
        };
        let mut push = |v: &serde_json::Value| -> bool {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => return false,
            };
            settings.push(Setting { name, value: s });
            true
        };
        let ok = match (&value, kind_of(name)) {
            (serde_json::Value::Array(items), Some(Kind::List | Kind::RegexList)) => {
                if items.is_empty() {
                    settings.push(Setting {
                        name,
                        value: String::new(),
                    });
                    true
                } else {
                    items.iter().all(&mut push)
                }
            }
            (v, _) => push(v),
        };
        if !ok {
            diags.push(err(format!(
                "key `{key}` has a value of the wrong type; ignored"
            )));
        }
    }
    Ok((settings, diags))
}

/// Reads the defaults file; a missing file is not a problem, an unreadable or malformed one is
/// reported as a diagnostic (and ignored).
pub fn load_defaults_file(path: &Path) -> (Option<String>, Vec<Diagnostic>) {
    // No file is the usual case: answered without building an error (which captures a
    // backtrace when `RUST_BACKTRACE` is set: about 0.1 ms on every container start).
    if rustix::fs::stat(path).err() == Some(rustix::io::Errno::NOENT) {
        return (None, Vec::new());
    }
    let read = crate::file::read_regular(path, DEFAULTS_LIMIT, "a defaults file")
        .and_then(|b| String::from_utf8(b).map_err(|_| anyhow::anyhow!("not UTF-8")));
    match read {
        Ok(text) => (Some(text), Vec::new()),
        Err(e)
            if e.downcast_ref::<std::io::Error>().map(std::io::Error::kind)
                == Some(std::io::ErrorKind::NotFound) =>
        {
            (None, Vec::new())
        }
        Err(e) => (
            None,
            vec![Diagnostic::new(
                &path.display().to_string(),
                format!("failed to read `{}`: {e:#}; ignored", path.display()),
                None,
            )],
        ),
    }
}

/// Parses the hook's arguments (without the program name) over the built-in defaults and the
/// text of the defaults file, if any. Never fails: problems are returned in
/// [`Parsed::diagnostics`] and leave the affected setting at its lower-layer value.
pub fn parse(args: &[String], binary_dir: &Path, defaults_file: Option<(&Path, &str)>) -> Parsed {
    let mut config = Config::defaults(binary_dir);
    let mut diagnostics = Vec::new();
    if let Some((path, text)) = defaults_file {
        let source = path.display().to_string();
        match defaults_settings(text, &source) {
            Ok((settings, diags)) => {
                diagnostics.extend(diags);
                apply(&mut config, &settings, &source, &mut diagnostics);
            }
            Err(e) => diagnostics.push(Diagnostic::new(
                &source,
                format!("malformed defaults file, ignored: {e:#}"),
                None,
            )),
        }
    }
    let (settings, positionals, help, version, diags) = scan(args);
    diagnostics.extend(diags);
    apply(&mut config, &settings, "command line", &mut diagnostics);
    Parsed {
        config,
        help,
        version,
        positionals,
        diagnostics,
    }
}

/// The OCI stage the hook is installed at, and the hook name the runtime then passes: the one
/// definition (the setup tool's `defaults::STAGE` is this).
pub const CREATE_RUNTIME: &str = "createRuntime";

/// Hook names the runtime may pass.
pub const HOOK_NAMES: [&str; 4] = [
    CREATE_RUNTIME,
    "createContainer",
    "poststop",
    "server-version",
];

#[cfg(feature = "client")]
/// Strictly validates hook arguments (as given in `hook-args`, without the program name):
/// unknown flags, missing values, bad log levels, durations, addresses, regexes and CEL
/// expressions are errors, as are a `--grpc-timeout` over [`MAX_GRPC_TIMEOUT`], `--help`, `-h`,
/// `--version`, `--just-print-config` (they would make the hook a silent no-op) and any
/// positional argument (the runtime's invocation supplies the hook name).
///
/// ```
/// use oci_hook::args::validate_args;
/// let ok = ["--fail-allow-namespaces", "kube-system,ns1", "--grpc-timeout=2s"];
/// assert!(validate_args(&ok.map(String::from)).is_ok());
/// assert!(validate_args(&["--grpc-timout=2s".to_owned()]).is_err());
/// assert!(validate_args(&["--help".to_owned()]).is_err());
/// assert!(validate_args(&["poststop".to_owned()]).is_err());
/// ```
pub fn validate_args(args: &[String]) -> anyhow::Result<()> {
    let cel = validate_args_but_cel(args)?;
    if let Some(expr) = cel {
        if let Err(e) = crate::policy::check_cel(&expr) {
            bail!("invalid hook arguments:\ninvalid `--fail-cel-expr`: {e:#}");
        }
    }
    Ok(())
}

/// [`validate_args`] without compiling the CEL expression, which it returns (when one is given)
/// for the caller to check. The setup tool uses this and has the hook binary it installs check
/// the expression (`tetragon-oci-hook --fail-cel-expr EXPR check-cel`): the CEL engine is over
/// half of the hook's size, and the installed hook is the one whose CEL dialect matters.
pub fn validate_args_but_cel(args: &[String]) -> anyhow::Result<Option<String>> {
    let parsed = parse(args, Path::new("/"), None);
    let mut problems: Vec<(String, Option<String>)> = parsed
        .diagnostics
        .iter()
        .map(|d| (d.message.clone(), d.help.clone()))
        .collect();
    // These make the hook print something and exit 0 without calling the agent or applying
    // the fail policy: in `hook-args` they would let every container start, silently.
    for (given, flag) in [
        (parsed.help, "--help"),
        (parsed.version, "--version"),
        (parsed.config.just_print_config, "--just-print-config"),
    ] {
        if given {
            problems.push((
                format!("`{flag}` is not allowed in hook arguments"),
                Some(format!(
                    "`{flag}` makes the hook print and exit without contacting the agent or \
                     applying the fail policy; remove it"
                )),
            ));
        }
    }
    for p in &parsed.positionals {
        problems.push((
            format!("unexpected argument `{p}`"),
            Some(format!(
                "hook arguments are flags only; the runtime passes the hook name \
                 ({CREATE_RUNTIME}) itself"
            )),
        ));
    }
    if problems.is_empty() {
        return Ok(parsed.config.fail_cel_expr.clone());
    }
    let message = problems
        .iter()
        .map(|(m, _)| m.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let mut helps: Vec<&str> = Vec::new();
    for h in problems.iter().filter_map(|(_, h)| h.as_deref()) {
        if !helps.contains(&h) {
            helps.push(h);
        }
    }
    Err(ArgError {
        message: format!("invalid hook arguments:\n{message}"),
        help: (!helps.is_empty()).then(|| helps.join("; ")),
    }
    .into())
}

/// Parses a Go-style duration (`10s`, `1.5s`, `500ms`, `1m30s`, `2h`); it must be positive.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let orig = s;
    let s = s.trim();
    if s.is_empty() {
        return Err(ArgError::new(
            "empty duration",
            "write a number and a unit, such as `10s` or `500ms`",
        )
        .into());
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        let n: f64 = num.parse().with_context(|| {
            ArgError::new(
                format!("`{orig}` is not a duration"),
                "write a number and a unit, such as `10s` or `500ms`",
            )
        })?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => {
                return Err(ArgError::new(
                    format!("missing unit in duration `{orig}`"),
                    format!("write `{orig}s` for seconds"),
                )
                .into());
            }
            other => {
                return Err(ArgError::new(
                    format!("unknown unit `{other}` in duration `{orig}`"),
                    "use ns, us, ms, s, m or h",
                )
                .into());
            }
        };
        total += n * scale;
        rest = tail;
    }
    if !(total > 0.0 && total.is_finite() && total < 1e9) {
        bail!("duration `{orig}` must be positive");
    }
    Ok(Duration::from_secs_f64(total))
}

/// Formats a duration the way Go prints it for the common cases (`10s`, `1.5s`, `500ms`).
pub fn format_duration(d: Duration) -> String {
    if d.as_nanos() % 1_000_000_000 == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos() % 1_000_000 == 0 && d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// The hooks, one per line, as `--help` and [`short_usage`] list them.
fn hook_lines() -> String {
    HOOKS
        .iter()
        .map(|(name, what)| format!("  {name:<20}{what}\n"))
        .collect()
}

/// What a person who ran the hook by hand is told (on stderr) after what went wrong: what the
/// hook is, how a runtime runs it, the hooks, and where the flags are explained.
pub fn short_usage() -> String {
    format!(
        "\
Usage: tetragon-oci-hook [FLAGS] HOOK

The container runtime runs this hook at `{CREATE_RUNTIME}` with the container's OCI state on
stdin; `tetragon-oci-hook-setup install` sets that up. Run by hand, it is most useful as
`tetragon-oci-hook server-version` (is the agent answering?).

Hooks:
{hooks}
See `tetragon-oci-hook --help` for the flags.
",
        hooks = hook_lines()
    )
}

/// The `--help` text.
pub fn usage() -> String {
    let hooks = hook_lines();
    let levels = Level::NAMES.join(", ");
    format!(
        "\
Usage: tetragon-oci-hook [FLAGS] HOOK

Tells the Tetragon agent about a container that is about to start (OCI hook).

Hooks:
{hooks}
Flags (`--flag value` or `--flag=value`; defaults also from `{DEFAULTS_FILE}` beside the binary):
  --log-fname PATH                    log file (default: `{DEFAULT_LOG_FILE}` beside the binary)
  --log-level LEVEL                   {levels} (default: info)
  --grpc-address ADDR                 agent address (default: {DEFAULT_GRPC_ADDRESS})
  --grpc-timeout DURATION             agent call timeout (default: 10s, at most 60s)
  --disable-grpc                      do not contact the agent
  --just-print-config                 print the resolved configuration and exit (without HOOK)
  --annotations-namespace-key KEYS    annotations holding the pod namespace (comma-separated)
  --fail-cel-expr EXPR                CEL expression deciding whether to fail (true = fail)
  --fail-cel-timeout DURATION         most CPU time that expression may use (default: 200ms)
  --fail-allow-namespaces NAMES       namespaces allowed to start without the agent (default: kube-system)
  --fail-allow-namespaces-regex RE    regex for such namespaces (repeatable)
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn cfg(a: &[&str]) -> Parsed {
        parse(&args(a), Path::new("/opt/tetragon"), None)
    }

    #[test]
    fn defaults() {
        let p = cfg(&["createRuntime"]);
        assert!(p.diagnostics.is_empty());
        assert_eq!(p.hook(), Some("createRuntime"));
        let c = p.config;
        assert_eq!(
            c.log_fname,
            PathBuf::from("/opt/tetragon/tetragon-oci-hook.log")
        );
        assert_eq!(c.log_level, Level::Info);
        assert_eq!(c.grpc_address, "unix:///var/run/tetragon/tetragon.sock");
        assert_eq!(c.grpc_timeout, Duration::from_secs(10));
        assert!(!c.disable_grpc && !c.just_print_config);
        assert_eq!(c.annotations_namespace_keys, DEFAULT_NAMESPACE_KEYS);
        assert_eq!(c.fail_allow_namespaces, ["kube-system"]);
        assert!(c.fail_allow_namespaces_regex.is_empty() && c.fail_cel_expr.is_none());
    }

    #[test]
    fn value_forms_and_last_wins() {
        let p = cfg(&[
            "--log-level",
            "debug",
            "-log-level=warn",
            "--grpc-timeout=2s",
            "--grpc-timeout",
            "1.5s",
            "--grpc-address=unix:/a.sock",
            "--disable-grpc",
            "createRuntime",
        ]);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        assert_eq!(p.config.log_level, Level::Warn);
        assert_eq!(p.config.grpc_timeout, Duration::from_millis(1500));
        assert_eq!(p.config.grpc_address, "unix:/a.sock");
        assert!(p.config.disable_grpc);
        assert_eq!(p.positionals, ["createRuntime"]);
        let p = cfg(&["--disable-grpc=false", "--just-print-config=true"]);
        assert!(!p.config.disable_grpc && p.config.just_print_config);
    }

    #[test]
    fn list_flags_replace_the_default_and_add_up() {
        let p = cfg(&["--fail-allow-namespaces", "kube-system,ns1"]);
        assert_eq!(p.config.fail_allow_namespaces, ["kube-system", "ns1"]);
        let p = cfg(&[
            "--fail-allow-namespaces=ns1",
            "--fail-allow-namespaces",
            " ns2 , ,ns3",
        ]);
        assert_eq!(p.config.fail_allow_namespaces, ["ns1", "ns2", "ns3"]);
        let p = cfg(&["--fail-allow-namespaces="]);
        assert!(p.config.fail_allow_namespaces.is_empty());
        let p = cfg(&[
            "--annotations-namespace-key=a",
            "--annotations-namespace-key=b,c",
        ]);
        assert_eq!(p.config.annotations_namespace_keys, ["a", "b", "c"]);
    }

    #[test]
    fn regexes_are_not_split_on_commas() {
        let p = cfg(&[
            "--fail-allow-namespaces-regex",
            "^a{1,3}$",
            "--fail-allow-namespaces-regex=b,c",
        ]);
        assert!(p.diagnostics.is_empty());
        assert_eq!(p.config.fail_allow_namespaces_regex, ["^a{1,3}$", "b,c"]);
    }

    #[test]
    fn problems_are_collected_and_defaults_kept() {
        let p = cfg(&[
            "--grpc-timout=1s",
            "--log-level=loud",
            "--grpc-timeout=5",
            "--fail-allow-namespaces-regex=(",
            "--disable-grpc=maybe",
            "--grpc-address",
        ]);
        let msgs: Vec<String> = p.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 6, "{msgs:#?}");
        assert!(msgs[0].starts_with("command line: unknown flag `--grpc-timout=1s`"));
        assert!(msgs.iter().any(|m| m.contains("needs a value")));
        assert!(
            msgs.iter()
                .any(|m| m.contains("missing unit in duration `5`"))
        );
        assert_eq!(p.config, Config::defaults(Path::new("/opt/tetragon")));
    }

    #[test]
    fn an_unknown_flag_names_the_nearest_known_one_and_takes_its_value() {
        let p = cfg(&["--grpc-timout", "1s", "createRuntime"]);
        assert_eq!(p.positionals, ["createRuntime"]);
        assert_eq!(p.diagnostics.len(), 1);
        assert_eq!(p.diagnostics[0].message, "unknown flag `--grpc-timout`");
        assert_eq!(
            p.diagnostics[0].help.as_deref(),
            Some("did you mean `--grpc-timeout`?")
        );
        // A boolean's typo takes no value; case and `_` do not count as typos.
        let p = cfg(&["--disable-grcp", "createRuntime"]);
        assert_eq!(p.positionals, ["createRuntime"]);
        assert_eq!(
            p.diagnostics[0].help.as_deref(),
            Some("did you mean `--disable-grpc`?")
        );
        assert_eq!(
            nearest("Fail_Allow_Namespace", FLAGS.iter().map(|(n, _)| *n)),
            Some("fail-allow-namespaces")
        );
        // Nothing close: every flag is listed.
        let p = cfg(&["--verbose", "createRuntime"]);
        assert_eq!(p.positionals, ["createRuntime"]);
        assert!(
            p.diagnostics[0]
                .help
                .as_deref()
                .is_some_and(|h| h.starts_with("known flags are `--log-fname`")),
            "{:?}",
            p.diagnostics
        );
        assert_eq!(
            nearest("createRuntme", HOOKS.iter().map(|(h, _)| *h)),
            Some("createRuntime")
        );
        assert_eq!(nearest("prestart", HOOKS.iter().map(|(h, _)| *h)), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    /// Whatever a runtime or a person gives (empty, one dash, `--=`, non-ASCII, invalid UTF-8
    /// read lossily, an argument of the kernel's maximum size), the flag scan and the nearest
    /// name neither panic nor take the value of a flag that does not take one.
    #[test]
    fn odd_flags_never_panic_and_name_no_nearest_flag() {
        let huge = format!("--{}", "a".repeat(128 * 1024));
        let lossy = String::from_utf8_lossy(b"--\xff\xfe").into_owned();
        for odd in [
            "--=",
            "--=x",
            "---",
            "-\u{e9}",
            "--\u{e9}",
            "--\u{1f600}\u{e9}",
            &lossy,
            &huge,
        ] {
            let p = cfg(&[odd, "createRuntime"]);
            assert_eq!(p.hook(), Some("createRuntime"), "{odd:.20}");
            assert!(
                p.diagnostics.iter().all(|d| d
                    .help
                    .as_deref()
                    .is_none_or(|h| !h.starts_with("did you mean"))),
                "{odd:.20}: {:?}",
                p.diagnostics
            );
            assert_eq!(
                nearest(odd, HOOKS.iter().map(|(h, _)| *h)),
                None,
                "{odd:.20}"
            );
        }
        // `-` and `` are positionals (the hook name, then unknown: nothing to do).
        assert_eq!(cfg(&["-"]).hook(), Some("-"));
        assert_eq!(cfg(&[""]).hook(), Some(""));
        assert_eq!(nearest("", HOOKS.iter().map(|(h, _)| *h)), None);
        assert_eq!(nearest("-", HOOKS.iter().map(|(h, _)| *h)), None);
        assert_eq!(nearest("", FLAGS.iter().map(|(n, _)| *n)), None);
        // Non-ASCII next to a known name is still one edit away.
        assert_eq!(
            nearest("poststop\u{e9}", HOOKS.iter().map(|(h, _)| *h)),
            Some("poststop")
        );
    }

    #[test]
    fn double_dash_ends_flags() {
        let p = cfg(&["--", "--log-level", "createRuntime"]);
        assert_eq!(p.positionals, ["--log-level", "createRuntime"]);
        assert_eq!(p.config.log_level, Level::Info);
    }

    #[test]
    fn defaults_file_layers_under_flags() {
        let file = r#"{"fail_allow_namespaces": "a,b", "grpc-timeout": "3s", "disable_grpc": "true",
                      "fail-allow-namespaces-regex": ["x{1,2}", "y"], "log-level": "debug"}"#;
        let p = parse(
            &args(&["--log-level=error", "--fail-allow-namespaces=c"]),
            Path::new("/d"),
            Some((Path::new("/d/f.json"), file)),
        );
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let c = p.config;
        assert_eq!(c.fail_allow_namespaces, ["c"]);
        assert_eq!(c.fail_allow_namespaces_regex, ["x{1,2}", "y"]);
        assert_eq!(c.grpc_timeout, Duration::from_secs(3));
        assert!(c.disable_grpc);
        assert_eq!(c.log_level, Level::Error);
    }

    #[test]
    fn defaults_file_problems_are_reported_not_fatal() {
        let p = parse(
            &[],
            Path::new("/d"),
            Some((Path::new("/d/f.json"), "{\"log-level\": ")),
        );
        assert_eq!(p.config, Config::defaults(Path::new("/d")));
        assert!(
            p.diagnostics[0]
                .to_string()
                .starts_with("/d/f.json: malformed defaults file, ignored: line 1")
        );
        let p = parse(
            &[],
            Path::new("/d"),
            Some((
                Path::new("/d/f.json"),
                r#"{"nope": 1, "log-level": ["x"], "grpc-timeout": "1s"}"#,
            )),
        );
        assert_eq!(p.diagnostics.len(), 2, "{:?}", p.diagnostics);
        assert_eq!(p.config.grpc_timeout, Duration::from_secs(1));
    }

    #[test]
    fn validate_args_is_strict() {
        let ok = args(&[
            "--fail-allow-namespaces",
            "kube-system,ns1",
            "--grpc-timeout=500ms",
            "--log-level",
            "debug",
            "--fail-allow-namespaces-regex",
            "^team-[a-z]{1,3}$",
            "--fail-cel-expr",
            r#"annotations["io.kubernetes.pod.namespace"] != "x""#,
        ]);
        validate_args(&ok).unwrap();
        for bad in [
            &["--grpc-timout=2s"][..],
            &["--grpc-timeout=2"],
            &["--grpc-address=dns:///x"],
            &["--fail-allow-namespaces-regex=("],
            &["--fail-cel-expr=annotations["],
            &["--log-level"],
            &["createruntime"],
        ] {
            let err = validate_args(&args(bad)).unwrap_err();
            assert!(
                format!("{err:#}").starts_with("invalid hook arguments:"),
                "{bad:?}"
            );
        }
        let err = validate_args(&args(&["--grpc-timeout=2"])).unwrap_err();
        insta::assert_snapshot!(format!("{err:#}"), @r"
        invalid hook arguments:
        invalid `--grpc-timeout`: missing unit in duration `2`
        ");
        assert_eq!(help_in(&err).as_deref(), Some("write `2s` for seconds"));
    }

    #[test]
    fn a_refusal_lists_the_problems_then_one_help_kept_out_of_the_message() {
        let err =
            validate_args_but_cel(&args(&["--grpc-timeout=5m", "--log-level=bad"])).unwrap_err();
        let msg = format!("{err:#}");
        assert_eq!(
            msg,
            "invalid hook arguments:\n\
             `--grpc-timeout` `5m` is more than the maximum 60s\n\
             invalid `--log-level` `bad`"
        );
        assert!(!msg.contains("help:") && !msg.contains("using"), "{msg}");
        assert_eq!(
            help_in(&err).as_deref(),
            Some(
                "every container start waits for the hook, give at most 60s; \
                 use one of trace, debug, info, warn, error"
            )
        );
        // The same problems in the hook's log: one line each, with what it uses and the fix.
        let p = cfg(&["--grpc-timeout=5m"]);
        assert_eq!(
            p.diagnostics[0].to_string(),
            "command line: `--grpc-timeout` `5m` is more than the maximum 60s; using 60s; \
             help: every container start waits for the hook, give at most 60s"
        );
        // A duration's own fix comes out of parse_duration as a field too.
        let p = cfg(&["--fail-cel-timeout=3"]);
        assert_eq!(
            p.diagnostics[0].help.as_deref(),
            Some("write `3s` for seconds")
        );
        assert!(!p.diagnostics[0].message.contains("help:"));
    }

    #[test]
    fn fail_cel_timeout_defaults_to_200ms_and_is_checked() {
        assert_eq!(cfg(&[]).config.fail_cel_timeout, Duration::from_millis(200));
        let p = cfg(&["--fail-cel-timeout=1s"]);
        assert_eq!(p.config.fail_cel_timeout, Duration::from_secs(1));
        assert!(p.diagnostics.is_empty());
        assert!(validate_args(&args(&["--fail-cel-timeout", "50ms"])).is_ok());
        for bad in ["--fail-cel-timeout=0s", "--fail-cel-timeout=soon"] {
            let p = cfg(&[bad]);
            assert_eq!(p.config.fail_cel_timeout, DEFAULT_CEL_TIMEOUT, "{bad}");
            assert!(
                p.diagnostics[0].message.contains("`--fail-cel-timeout`"),
                "{bad}"
            );
            assert!(validate_args(&args(&[bad])).is_err(), "{bad}");
        }
        assert!(usage().contains("--fail-cel-timeout DURATION"));
    }

    #[test]
    fn usage_lists_every_log_level_the_hook_accepts() {
        let usage = usage();
        let line = usage
            .lines()
            .find(|l| l.trim_start().starts_with("--log-level"))
            .unwrap();
        for name in Level::NAMES {
            assert!(line.contains(name), "{name} missing from {line:?}");
            assert!(cfg(&["--log-level", name]).diagnostics.is_empty(), "{name}");
        }
    }

    #[test]
    fn hook_args_reject_flags_that_make_the_hook_a_no_op_and_positionals() {
        for bad in [
            &["--help"][..],
            &["-h"],
            &["--version"],
            &["-version"],
            &["--just-print-config"],
            &["--just-print-config=true"],
            &["poststop"],
            &["createRuntime"],
            &["--grpc-timeout=2s", "--", "--help"],
        ] {
            let err = validate_args_but_cel(&args(bad)).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.starts_with("invalid hook arguments:"), "{bad:?}: {msg}");
            assert!(help_in(&err).is_some(), "{bad:?}: {msg}");
        }
        let err = validate_args_but_cel(&args(&["--version"])).unwrap_err();
        insta::assert_snapshot!(format!("{err:#}"), @r"
        invalid hook arguments:
        `--version` is not allowed in hook arguments
        ");
        assert_eq!(
            help_in(&err).as_deref(),
            Some(
                "`--version` makes the hook print and exit without contacting the agent or \
                 applying the fail policy; remove it"
            )
        );
        let err = validate_args_but_cel(&args(&["poststop"])).unwrap_err();
        insta::assert_snapshot!(format!("{err:#}"), @r"
        invalid hook arguments:
        unexpected argument `poststop`
        ");
        assert_eq!(
            help_in(&err).as_deref(),
            Some(
                "hook arguments are flags only; the runtime passes the hook name \
                 (createRuntime) itself"
            )
        );
        validate_args_but_cel(&args(&["--just-print-config=false"])).unwrap();
    }

    #[test]
    fn grpc_timeout_is_capped_at_max_grpc_timeout() {
        assert_eq!(MAX_GRPC_TIMEOUT, Duration::from_secs(60));
        validate_args(&args(&["--grpc-timeout=60s"])).unwrap();
        for bad in ["--grpc-timeout=61s", "--grpc-timeout=100000h"] {
            let err = validate_args(&args(&[bad])).unwrap_err();
            assert!(
                format!("{err:#}").contains("more than the maximum 60s"),
                "{bad}"
            );
            // At hook time the value is clamped, not reset to the default.
            let p = cfg(&[bad]);
            assert_eq!(p.config.grpc_timeout, MAX_GRPC_TIMEOUT, "{bad}");
            assert_eq!(p.diagnostics.len(), 1, "{bad}");
        }
        let p = parse(
            &[],
            Path::new("/d"),
            Some((Path::new("/d/f.json"), r#"{"grpc-timeout": "100000h"}"#)),
        );
        assert_eq!(p.config.grpc_timeout, MAX_GRPC_TIMEOUT);
        assert!(p.diagnostics[0].to_string().contains("; using 60s"));
    }

    #[test]
    fn durations() {
        for (s, ms) in [
            ("10s", 10_000),
            ("1.5s", 1500),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("2h", 7_200_000),
        ] {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_millis(ms), "{s}");
        }
        for s in ["", "10", "s", "-1s", "0s", "1x", "1..2s"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
        assert_eq!(format_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }
}
