//! The fail policy: after a failed agent call, decide whether the container must not start.
//!
//! With `--fail-cel-expr`, the CEL expression decides (true means fail); it sees `annotations`
//! (map of string to string), `annotations_namespace_keys` (list of strings) and
//! `annotations_namespace_key` (the same list, for compatibility). It is compiled only here, after
//! a failed call, because compiling costs milliseconds. Otherwise the container is allowed when any
//! namespace key present in the annotations has a value in the allow list or matched by one of the
//! regexes (a substring match unless anchored); with no namespace key present it fails.
//! This module does not log; the caller logs the [`Decision`].

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::anyhow;

/// The inputs of the fail check, taken from the hook's configuration.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Annotation keys holding the pod namespace.
    pub namespace_keys: Vec<String>,
    /// Namespaces allowed to start when the agent is unreachable.
    pub allow_namespaces: Vec<String>,
    /// Regexes for allowed namespaces (source text).
    pub allow_regexes: Vec<String>,
    /// CEL expression that replaces the namespace rules when set.
    pub cel_expr: Option<String>,
}

/// The outcome of the fail check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// True when the container must be failed.
    pub fail: bool,
    /// Why, in a few words (logged).
    pub reason: String,
    /// A problem with the policy itself (bad CEL, bad regex) that was worked around.
    pub policy_error: Option<String>,
}

/// Longest `--fail-cel-expr` accepted, in bytes.
pub const CEL_MAX_LEN: usize = 4096;

/// Stack for compiling and evaluating CEL: the parser recurses once per nesting level, and a
/// stack overflow aborts the process (that would fail the container). Only touched pages cost.
const CEL_STACK: usize = 256 << 20;

/// Runs `f` on a thread with a stack large enough for any expression of [`CEL_MAX_LEN`] bytes.
fn on_big_stack<T: Send>(f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("cel".to_owned())
            .stack_size(CEL_STACK)
            .spawn_scoped(s, f)
            .map_err(|e| anyhow!("failed to start the CEL thread: {e}"))?
            .join()
            .map_err(|_| anyhow!("the CEL library panicked"))?
    })
}

fn compile(expr: &str) -> anyhow::Result<cel::Program> {
    if expr.len() > CEL_MAX_LEN {
        return Err(anyhow!(
            "the CEL expression is {} bytes long, more than {CEL_MAX_LEN}",
            expr.len()
        ));
    }
    cel::Program::compile(expr)
        .map_err(|e| anyhow!("failed to compile `{expr}`: {}", one_line(&e.to_string())))
}

/// Checks that a CEL expression compiles (for validating arguments), with a readable error.
pub fn check_cel(expr: &str) -> anyhow::Result<()> {
    on_big_stack(|| compile(expr).map(drop))
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Policy {
    /// Runs the fail check on the container's annotations.
    pub fn check(&self, annotations: &HashMap<String, String>) -> Decision {
        let mut policy_error = None;
        if let Some(expr) = &self.cel_expr {
            match self.run_cel(expr, annotations) {
                Ok(fail) => {
                    return Decision {
                        fail,
                        reason: format!("`--fail-cel-expr` evaluated to {fail}"),
                        policy_error: None,
                    };
                }
                Err(e) => {
                    // A broken expression must not decide by accident: fall back to the
                    // namespace rules, which are always defined, and report the problem.
                    policy_error = Some(format!("{e:#}; using the namespace rules instead"));
                }
            }
        }
        let mut d = self.check_namespaces(annotations, &mut policy_error);
        d.policy_error = policy_error;
        d
    }

    fn run_cel(&self, expr: &str, annotations: &HashMap<String, String>) -> anyhow::Result<bool> {
        on_big_stack(|| {
            let program = compile(expr)?;
            let mut ctx = cel::Context::default();
            ctx.add_variable_from_value("annotations", annotations.clone());
            let keys: Vec<cel::Value> = self
                .namespace_keys
                .iter()
                .map(|k| cel::Value::String(Arc::new(k.clone())))
                .collect();
            ctx.add_variable_from_value("annotations_namespace_keys", keys.clone());
            ctx.add_variable_from_value("annotations_namespace_key", keys);
            match program.execute(&ctx) {
                Ok(cel::Value::Bool(b)) => Ok(b),
                Ok(other) => Err(anyhow!("`--fail-cel-expr` gave {other:?}, not a boolean")),
                Err(e) => Err(anyhow!("`--fail-cel-expr` failed to evaluate: {e}")),
            }
        })
    }

    fn check_namespaces(
        &self,
        annotations: &HashMap<String, String>,
        policy_error: &mut Option<String>,
    ) -> Decision {
        let mut regexes = Vec::new();
        for src in &self.allow_regexes {
            match regex::Regex::new(src) {
                Ok(r) => regexes.push(r),
                Err(e) => {
                    let msg = format!(
                        "invalid `--fail-allow-namespaces-regex` `{src}`: {}",
                        one_line(&e.to_string())
                    );
                    *policy_error = Some(match policy_error.take() {
                        Some(prev) => format!("{prev}; {msg}"),
                        None => msg,
                    });
                }
            }
        }
        let mut seen = Vec::new();
        for key in &self.namespace_keys {
            let Some(ns) = annotations.get(key) else {
                continue;
            };
            if self.allow_namespaces.iter().any(|a| a == ns) {
                return allow(format!(
                    "namespace `{ns}` (`{key}`) is in `--fail-allow-namespaces`"
                ));
            }
            if let Some(r) = regexes.iter().find(|r| r.is_match(ns)) {
                return allow(format!(
                    "namespace `{ns}` (`{key}`) matches `{}`",
                    r.as_str()
                ));
            }
            seen.push(format!("`{ns}`"));
        }
        let reason = if seen.is_empty() {
            format!(
                "no namespace annotation ({}) found",
                self.namespace_keys.join(", ")
            )
        } else {
            format!(
                "namespace {} is not allowed to start without the agent",
                seen.join(", ")
            )
        };
        Decision {
            fail: true,
            reason,
            policy_error: None,
        }
    }
}

fn allow(reason: String) -> Decision {
    Decision {
        fail: false,
        reason,
        policy_error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn policy() -> Policy {
        Policy {
            namespace_keys: vec![
                "io.kubernetes.pod.namespace".into(),
                "io.kubernetes.cri.sandbox-namespace".into(),
            ],
            allow_namespaces: vec!["kube-system".into()],
            ..Policy::default()
        }
    }

    #[test]
    fn namespace_rules() {
        let p = policy();
        assert!(
            !p.check(&ann(&[("io.kubernetes.pod.namespace", "kube-system")]))
                .fail
        );
        assert!(
            !p.check(&ann(&[(
                "io.kubernetes.cri.sandbox-namespace",
                "kube-system"
            )]))
            .fail
        );
        assert!(
            p.check(&ann(&[("io.kubernetes.pod.namespace", "default")]))
                .fail
        );
        let d = p.check(&ann(&[]));
        assert!(d.fail);
        assert!(d.reason.contains("no namespace annotation"), "{}", d.reason);
        // Any key with an allowed value is enough.
        assert!(
            !p.check(&ann(&[
                ("io.kubernetes.pod.namespace", "default"),
                ("io.kubernetes.cri.sandbox-namespace", "kube-system")
            ]))
            .fail
        );
    }

    #[test]
    fn regexes_are_substring_unless_anchored() {
        let mut p = policy();
        p.allow_regexes = vec!["^team-[a-z]{1,3}$".into(), "infra".into()];
        assert!(
            !p.check(&ann(&[("io.kubernetes.pod.namespace", "team-abc")]))
                .fail
        );
        assert!(
            p.check(&ann(&[("io.kubernetes.pod.namespace", "team-abcd")]))
                .fail
        );
        assert!(
            !p.check(&ann(&[("io.kubernetes.pod.namespace", "my-infra-ns")]))
                .fail
        );
    }

    #[test]
    fn cel_decides_alone() {
        let mut p = policy();
        p.cel_expr = Some(r#"annotations["io.kubernetes.pod.namespace"] != "ns1""#.into());
        assert!(
            !p.check(&ann(&[("io.kubernetes.pod.namespace", "ns1")]))
                .fail
        );
        // kube-system is in the allow list, but CEL replaces the namespace rules.
        assert!(
            p.check(&ann(&[("io.kubernetes.pod.namespace", "kube-system")]))
                .fail
        );
        p.cel_expr = Some(
            r#"!annotations_namespace_keys.exists(k, k in annotations && annotations[k].startsWith("dev-"))"#.into(),
        );
        assert!(
            !p.check(&ann(&[("io.kubernetes.cri.sandbox-namespace", "dev-1")]))
                .fail
        );
        assert!(
            p.check(&ann(&[("io.kubernetes.cri.sandbox-namespace", "prod")]))
                .fail
        );
    }

    #[test]
    fn deep_or_long_cel_does_not_overflow_the_stack() {
        let n = CEL_MAX_LEN / 2 - 1;
        let parens = "(".repeat(n) + "1" + &")".repeat(n);
        let lists = "[".repeat(n) + &"]".repeat(n);
        let nots = "!".repeat(CEL_MAX_LEN - 4) + "true";
        let negs = "-".repeat(CEL_MAX_LEN - 1) + "1";
        for expr in [parens, lists, nots, negs] {
            // Compiling may succeed or fail; it must return.
            let _ = check_cel(&expr);
            let mut p = policy();
            p.cel_expr = Some(expr);
            let _ = p.check(&ann(&[("io.kubernetes.pod.namespace", "x")]));
        }
        let long = "true || ".repeat(CEL_MAX_LEN / 8) + "true";
        assert!(
            check_cel(&long)
                .unwrap_err()
                .to_string()
                .contains("more than 4096")
        );
    }

    #[test]
    fn bad_cel_falls_back_to_namespaces() {
        let mut p = policy();
        p.cel_expr = Some("annotations[".into());
        let d = p.check(&ann(&[("io.kubernetes.pod.namespace", "kube-system")]));
        assert!(!d.fail);
        assert!(d.policy_error.unwrap().contains("failed to compile"));
        p.cel_expr = Some(r#""not a bool""#.into());
        let d = p.check(&ann(&[("io.kubernetes.pod.namespace", "default")]));
        assert!(d.fail);
        assert!(d.policy_error.unwrap().contains("not a boolean"));
    }
}
