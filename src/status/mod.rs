//! `status`: is Tetragon's runtime hook set up on this node, and is it working?
//!
//! Each check (one module per family: [`nri`], [`oci_hooks`], [`binary`], [`agent`],
//! [`hook_log`]) takes explicit inputs, reads what it needs (bounded, never through a link it
//! did not choose) and returns a [`Check`]: a result, the evidence and, when not ok, the fix.
//! Nothing here writes, locks or prints; [`Report`] orders the checks (worst first) and renders
//! them as text or as the JSON of [`SCHEMA_VERSION`]. The orchestration (which checks, with
//! which inputs, within `--timeout`) is the binary's `ops::status`.

use std::time::Duration;

use serde::Serialize;

pub mod agent;
pub mod binary;
pub mod hook_log;
pub mod nri;
pub mod oci_hooks;
pub mod state;

/// Every check's id, as in [`Check::id`] and `status --skip`.
pub const CHECK_IDS: [&str; 8] = [
    "runtime-config",
    "nri-socket",
    "nri-plugin",
    "hook-file",
    "binary",
    "agent",
    "hook-log",
    "danger",
];

/// The checks `status --probe` leaves out: what a readiness probe must not depend on.
pub const PROBE_SKIPS: [&str; 3] = ["agent", "danger", "hook-log"];

/// The version of the JSON output's schema (`status --output json`).
pub const SCHEMA_VERSION: u32 = 1;

/// How a check came out. Ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Not run: what it needs is not there to look at (a config not mounted here, say).
    Skip,
    /// Fine.
    Ok,
    /// Works, but something needs attention.
    Warn,
    /// Broken: hooks do not fire, or containers will be refused.
    Fail,
}

impl Verdict {
    /// The upper-case word of the text output.
    pub fn word(self) -> &'static str {
        match self {
            Self::Skip => "SKIP",
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable id: `danger`, `runtime-config`, `nri-socket`, `nri-plugin`, `hook-file`,
    /// `binary`, `agent`, `hook-log`.
    pub id: &'static str,
    /// The result.
    pub result: Verdict,
    /// One line saying what was found.
    pub summary: String,
    /// What it was found from: `file:line: key = value`, socket path, pid, version.
    pub evidence: Vec<String>,
    /// The fix, as a command or a config line (set when not ok).
    pub help: Option<String>,
}

impl Check {
    /// A check with `result` and `summary`, no evidence or help yet.
    pub fn new(id: &'static str, result: Verdict, summary: impl Into<String>) -> Self {
        Self {
            id,
            result,
            summary: summary.into(),
            evidence: Vec::new(),
            help: None,
        }
    }

    /// Adds a line of evidence.
    #[must_use]
    pub fn evidence(mut self, line: impl Into<String>) -> Self {
        self.evidence.push(line.into());
        self
    }

    /// Sets the fix.
    #[must_use]
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Every check of one run, worst first.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The interface checked: `nri-hook` or `oci-hooks`.
    pub interface: &'static str,
    /// Why that interface (given, or what `auto` found).
    pub interface_from: String,
    /// The worst result.
    pub result: Verdict,
    /// The process's exit code: 0 all ok, 1 warnings only (0 with `--ignore-warnings` or
    /// `--probe`), 2 a failure.
    pub exit_code: u8,
    /// Wall time of the run, in milliseconds.
    pub elapsed_ms: u64,
    /// The checks, worst first (in their own order within a result).
    pub checks: Vec<Check>,
}

impl Report {
    /// Orders `checks` worst first (stable: `danger` comes first among failures when given
    /// first) and computes the result and exit code.
    pub fn new(
        interface: &'static str,
        interface_from: String,
        mut checks: Vec<Check>,
        elapsed: Duration,
    ) -> Self {
        checks.sort_by_key(|c| std::cmp::Reverse(c.result));
        let result = checks.first().map_or(Verdict::Ok, |c| c.result);
        Self {
            schema_version: SCHEMA_VERSION,
            interface,
            interface_from,
            result,
            exit_code: exit_code(result),
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            checks,
        }
    }

    /// The text output: one line per check, then for each not-ok check its evidence and
    /// `help:` lines, indented. `color`: ANSI colours for the result words.
    pub fn text(&self, color: bool) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let word = format!("{:<4}", c.result.word());
            let word = if color {
                let code = match c.result {
                    Verdict::Fail => "1;31",
                    Verdict::Warn => "1;33",
                    Verdict::Ok => "32",
                    Verdict::Skip => "2",
                };
                format!("\x1b[{code}m{word}\x1b[0m")
            } else {
                word
            };
            out.push_str(&format!("{word} {:<14} {}\n", c.id, printable(&c.summary)));
            if matches!(c.result, Verdict::Warn | Verdict::Fail) {
                for e in &c.evidence {
                    out.push_str(&format!("     {:<14} evidence: {}\n", "", printable(e)));
                }
                if let Some(h) = &c.help {
                    out.push_str(&format!("     {:<14} help: {}\n", "", printable(h)));
                }
            }
        }
        out
    }

    /// The JSON output (pretty, trailing newline).
    pub fn json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            format!("{{\"schema_version\": {SCHEMA_VERSION}, \"error\": \"{e}\"}}")
        });
        s.push('\n');
        s
    }
}

/// `text` with every control character (C0, DEL, C1: what a terminal acts on) written as
/// `\u{..}`: evidence quotes files, paths and log lines other users may have shaped, and the
/// text output goes to a terminal. JSON escapes them itself.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| {
                if c.is_control() {
                    format!("\\u{{{:x}}}", u32::from(c))
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// 0 all ok (or skipped), 1 warnings only, 2 any failure.
pub fn exit_code(worst: Verdict) -> u8 {
    match worst {
        Verdict::Skip | Verdict::Ok => 0,
        Verdict::Warn => 1,
        Verdict::Fail => 2,
    }
}

/// `text` cut to `max` bytes at a character boundary, with `…` when cut; newlines become `⏎`.
pub fn cut(text: &str, max: usize) -> String {
    let text = text.replace('\n', "⏎");
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_puts_the_worst_first_and_maps_exit_codes() {
        let checks = vec![
            Check::new("binary", Verdict::Ok, "fine"),
            Check::new("agent", Verdict::Warn, "slow"),
            Check::new("danger", Verdict::Fail, "bad").help("fix it"),
            Check::new("hook-log", Verdict::Skip, "absent"),
            Check::new("nri-plugin", Verdict::Fail, "gone"),
        ];
        let r = Report::new("nri-hook", "given".into(), checks, Duration::ZERO);
        let ids: Vec<_> = r.checks.iter().map(|c| c.id).collect();
        assert_eq!(ids, ["danger", "nri-plugin", "agent", "binary", "hook-log"]);
        assert_eq!((r.result, r.exit_code), (Verdict::Fail, 2));
        let text = r.text(false);
        assert!(text.starts_with("FAIL danger         bad\n"), "{text}");
        assert!(text.contains("help: fix it"), "{text}");
        assert!(!r.text(false).contains('\x1b') && r.text(true).contains("\x1b[1;31m"));
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["schema_version"], 1);
        assert_eq!(v["checks"][0]["result"], "fail");
        assert_eq!(v["checks"][4]["result"], "skip");
        let warn_only = Report::new(
            "oci-hooks",
            String::new(),
            vec![
                Check::new("a", Verdict::Warn, ""),
                Check::new("b", Verdict::Skip, ""),
            ],
            Duration::ZERO,
        );
        assert_eq!(warn_only.exit_code, 1);
        let ok = Report::new("oci-hooks", String::new(), vec![], Duration::ZERO);
        assert_eq!(ok.exit_code, 0);
    }

    #[test]
    fn text_output_never_passes_terminal_control_characters_through() {
        let c = Check::new("hook-log", Verdict::Warn, "a\x1b[2Jb\u{9b}31mc")
            .evidence("e\x07\x7f")
            .help("h\r");
        let r = Report::new("oci-hooks", String::new(), vec![c], Duration::ZERO);
        let text = r.text(false);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("a\\u{1b}[2Jb\\u{9b}31mc"), "{text}");
        assert!(
            text.contains("e\\u{7}\\u{7f}") && text.contains("h\\u{d}"),
            "{text}"
        );
        // JSON keeps the text, escaped by JSON itself.
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["checks"][0]["summary"], "a\x1b[2Jb\u{9b}31mc");
    }

    #[test]
    fn cut_keeps_char_boundaries_and_one_line() {
        assert_eq!(cut("a\nb", 10), "a⏎b");
        assert_eq!(cut("ééé", 3), "é…");
    }
}

/// The hook's configuration from its argv (`args[0]` the program, then the stage and flags, as
/// in the hooks.d file or the NRI state) over its defaults file's text, if any.
pub fn hook_config(
    args: &[String],
    defaults: Option<(&std::path::Path, &str)>,
) -> oci_hook::args::Config {
    let bin_dir = args
        .first()
        .and_then(|p| std::path::Path::new(p).parent())
        .unwrap_or(std::path::Path::new("/"))
        .to_owned();
    oci_hook::args::parse(args.get(1..).unwrap_or_default(), &bin_dir, defaults).config
}

/// `danger`: the hook is installed, the agent is unreachable, and the hook's fail policy
/// refuses containers: which ones will fail to start. `None` when nothing is in danger.
pub fn danger(config: &oci_hook::args::Config, address: &str) -> Option<Check> {
    if config.disable_grpc {
        return None;
    }
    // A regex that plainly matches every namespace (the setup tool links no regex engine: the
    // usual spellings of "anything" are recognised; any other regex is listed as allowed).
    let allows_all = config
        .fail_allow_namespaces_regex
        .iter()
        .any(|r| matches_every_name(r));
    let who = if let Some(expr) = &config.fail_cel_expr {
        format!(
            "containers for which `--fail-cel-expr` `{}` is true",
            cut(expr, 200)
        )
    } else if allows_all {
        return None;
    } else {
        let mut outside: Vec<String> = config.fail_allow_namespaces.clone();
        outside.extend(
            config
                .fail_allow_namespaces_regex
                .iter()
                .map(|r| format!("namespaces matching `{r}`")),
        );
        if outside.is_empty() {
            "containers in every namespace".to_owned()
        } else {
            format!("containers outside {}", outside.join(", "))
        }
    };
    let mut flags = Vec::new();
    if !config.fail_allow_namespaces.is_empty() {
        flags.push(format!(
            "--fail-allow-namespaces {}",
            config.fail_allow_namespaces.join(",")
        ));
    }
    for r in &config.fail_allow_namespaces_regex {
        flags.push(format!("--fail-allow-namespaces-regex {r}"));
    }
    if let Some(e) = &config.fail_cel_expr {
        flags.push(format!("--fail-cel-expr {}", cut(e, 200)));
    }
    Some(
        Check::new(
            "danger",
            Verdict::Fail,
            format!("{who} will fail to start: the agent is unreachable and the hook's fail policy refuses them"),
        )
        .evidence(format!("agent address {address}"))
        .evidence(format!(
            "hook policy: {}",
            if flags.is_empty() {
                "(defaults)".to_owned()
            } else {
                flags.join(" ")
            }
        ))
        .help(
            "bring the Tetragon agent back (see the `agent` check); to let more namespaces \
             start meanwhile, add them to `--fail-allow-namespaces` in the hook's `hook-args` \
             (Helm: `rthooks.failAllowNamespaces`)",
        ),
    )
}

/// Whether `regex` matches every namespace name, for the spellings of "anything" people use:
/// namespaces are never empty, and an unanchored regex matches anywhere in the name (`.` already
/// matches every name), so `""`, `.`, `.*`, `.+`, `^.*$`, `^.+$`, `(?s).*` and the like. A regex
/// this does not recognise counts as allowing only some namespaces (the safe side for a danger
/// report).
fn matches_every_name(regex: &str) -> bool {
    let r = regex.trim_start_matches("(?s)").trim_start_matches("(?i)");
    let (anchored_start, r) = r.strip_prefix('^').map_or((false, r), |r| (true, r));
    let (anchored_end, r) = r.strip_suffix('$').map_or((false, r), |r| (true, r));
    match r {
        "" => !anchored_start && !anchored_end,
        "." | ".?" | ".*?" => !anchored_start && !anchored_end,
        ".*" | ".+" | ".+?" | "[\\s\\S]*" | "[\\s\\S]+" => true,
        _ => false,
    }
}

#[cfg(test)]
mod danger_tests {
    use super::*;

    fn config(flags: &[&str]) -> oci_hook::args::Config {
        let mut args = vec![
            "/opt/t/tetragon-oci-hook".to_owned(),
            "createRuntime".to_owned(),
        ];
        args.extend(flags.iter().map(|s| (*s).to_owned()));
        hook_config(&args, None)
    }

    #[test]
    fn danger_names_the_allowed_namespaces_or_says_none_is_in_danger() {
        let c = danger(
            &config(&["--fail-allow-namespaces", "kube-system,ns1"]),
            "unix:///a",
        )
        .unwrap();
        assert!(
            c.summary
                .starts_with("containers outside kube-system, ns1 will fail"),
            "{c:?}"
        );
        let c = danger(&config(&[]), "a").unwrap();
        assert!(c.summary.contains("outside kube-system"), "{c:?}");
        let c = danger(&config(&["--fail-allow-namespaces-regex", "^team-"]), "a").unwrap();
        assert!(c.summary.contains("matching `^team-`"), "{c:?}");
        assert!(danger(&config(&["--fail-allow-namespaces-regex", ".*"]), "a").is_none());
        assert!(danger(&config(&["--disable-grpc"]), "a").is_none());
        let c = danger(&config(&["--fail-cel-expr", "true"]), "a").unwrap();
        assert!(c.summary.contains("`--fail-cel-expr` `true`"), "{c:?}");
    }

    #[test]
    fn only_regexes_that_match_every_namespace_remove_the_danger() {
        for every in ["", ".", ".*", ".+", "^.*$", "^.+$", "(?s).*", "^.*", ".*$"] {
            assert!(matches_every_name(every), "{every:?}");
            assert!(
                danger(&config(&["--fail-allow-namespaces-regex", every]), "a").is_none(),
                "{every:?}"
            );
        }
        for some in ["^$", "^team-", "kube", "^.$", "^a.*", "x|.*y", "^"] {
            assert!(!matches_every_name(some), "{some:?}");
        }
    }
}
