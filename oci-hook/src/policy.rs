//! The fail policy: after a failed agent call, decide whether the container must not start.
//!
//! With `--fail-cel-expr`, the CEL expression decides (true means fail); it sees `annotations`
//! (map of string to string), `annotations_namespace_keys` (list of strings) and
//! `annotations_namespace_key` (the same list, for compatibility). It is compiled only here, after
//! a failed call, because compiling costs milliseconds. Otherwise the container is allowed when any
//! namespace key present in the annotations has a value in the allow list or matched by one of the
//! regexes (a substring match unless anchored); with no namespace key present it fails.
//! This module does not log; the caller logs the [`Decision`].
//!
//! A CEL expression can run for minutes or allocate gigabytes (nested `.all()` / `.map()`), and
//! an evaluation on a thread can be neither stopped nor capped in memory. So the hook evaluates
//! it in a child process ([`eval_cel_isolated`]: the hook binary itself, hidden command
//! [`EVAL_CEL`]) with an address-space cap ([`CEL_MEMORY`] beyond the evaluation thread's stack)
//! and a CPU-time cap of `--fail-cel-timeout`, which the child enforces on itself (a thread
//! watching `CLOCK_PROCESS_CPUTIME_ID`, so that spawning it and waiting for a CPU under load do
//! not count). The parent only bounds the wall time by what is left of the hook's overall
//! budget. Past any bound it is a CEL error: the namespace rules decide, and the [`Decision`]
//! says which bound was hit. This runs only after a failed agent call, so the child's cost
//! (about a millisecond) is not on the normal path.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use serde::{Deserialize, Serialize};

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
    /// How to evaluate `cel_expr`: in this process, or in a bounded child process.
    pub cel_eval: CelEval,
}

/// Where the CEL expression is evaluated.
#[derive(Debug, Clone, Default)]
pub enum CelEval {
    /// In this process, unbounded (unit tests, and the child process itself).
    #[default]
    InProcess,
    /// In a child process running `exe` with the hidden command [`EVAL_CEL`], stopped past
    /// `cpu` of CPU time, at `deadline`, or at the [`CEL_MEMORY`] cap.
    Isolated {
        /// The hook binary (`/proc/self/exe`).
        exe: PathBuf,
        /// Most CPU time the child may use (`--fail-cel-timeout`), enforced by the child.
        cpu: Duration,
        /// When the parent stops waiting and kills the child (the hook's overall budget).
        deadline: Instant,
    },
}

/// The hidden command of the hook binary that evaluates a CEL expression read from stdin
/// ([`eval_cel_child`]).
pub const EVAL_CEL: &str = "eval-cel";

/// Heap and other memory the CEL child may map beyond its evaluation thread's stack
/// (`CEL_STACK`) and its own image (`RLIMIT_AS` is set to the sum plus `CEL_BASE`).
pub const CEL_MEMORY: u64 = 256 << 20;

/// Address space of the child before evaluation starts (binary, main stack, allocator arenas).
const CEL_BASE: u64 = 128 << 20;

/// Most bytes of input (expression, annotations) the child reads: a `config.json` is at most
/// [`crate::spec::CONFIG_LIMIT`].
const CEL_INPUT_LIMIT: u64 = 2 * crate::spec::CONFIG_LIMIT;

/// Largest input written to the child without a writer thread (well under a pipe's buffer).
const CEL_INLINE_INPUT: usize = 16 << 10;

/// The exit status of the CEL child when it used up its CPU time (`--fail-cel-timeout`).
const CPU_CAP_EXIT: i32 = 3;

/// How often the CEL child looks at its CPU time at most (the cap's granularity).
const CPU_CAP_TICK: Duration = Duration::from_millis(2);

/// Most bytes of the child's answer read back.
const CEL_OUTPUT_LIMIT: u64 = 64 << 10;

/// What the parent sends the CEL child on its stdin.
#[derive(Debug, Serialize, Deserialize)]
struct CelInput {
    expr: String,
    annotations: HashMap<String, String>,
    namespace_keys: Vec<String>,
    timeout_ms: u64,
}

/// What the CEL child prints: the expression's value, or why there is none.
#[derive(Debug, Serialize, Deserialize)]
enum CelOutput {
    #[serde(rename = "value")]
    Value(bool),
    #[serde(rename = "error")]
    Error(String),
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

/// Evaluates `expr` in this process (on a big stack), without time or memory bounds.
pub fn eval_cel(
    expr: &str,
    annotations: &HashMap<String, String>,
    namespace_keys: &[String],
) -> anyhow::Result<bool> {
    on_big_stack(|| {
        let program = compile(expr)?;
        let mut ctx = cel::Context::default();
        ctx.add_variable_from_value("annotations", annotations.clone());
        let keys: Vec<cel::Value> = namespace_keys
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

/// Evaluates `expr` in a child process (`exe` [`EVAL_CEL`]) that stops itself past `cpu` of
/// CPU time, with its memory capped ([`CEL_MEMORY`]); the child is killed at `deadline` (wall
/// time). Returns by `deadline` plus the time to kill and reap it.
pub fn eval_cel_isolated(
    exe: &Path,
    cpu: Duration,
    deadline: Instant,
    expr: &str,
    annotations: &HashMap<String, String>,
    namespace_keys: &[String],
) -> anyhow::Result<bool> {
    let timeout = cpu;
    let wall = deadline.saturating_duration_since(Instant::now());
    let input = serde_json::to_vec(&CelInput {
        expr: expr.to_owned(),
        annotations: annotations.clone(),
        namespace_keys: namespace_keys.to_vec(),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    })
    .context("failed to encode the CEL input")?;
    // One pipe for the child's stdout and stderr: the answer, or why it died (an allocation
    // over the cap prints "memory allocation of N bytes failed" before aborting).
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .context("failed to create a pipe")?;
    let writer = std::fs::File::from(writer);
    let mut cmd = Command::new(exe);
    cmd.arg(EVAL_CEL)
        .stdin(Stdio::piped())
        .stdout(writer.try_clone().context("failed to dup a pipe")?)
        .stderr(writer);
    let spawned = cmd.spawn();
    // Our copies of the write end must be gone for the reader to see the end of the output.
    drop(cmd);
    let mut child =
        spawned.with_context(|| format!("failed to start `{} {EVAL_CEL}`", exe.display()))?;
    // A small input fits in the fresh pipe's buffer (64 KiB for root), so writing it cannot
    // block. A bigger one is written from a thread, so that a child that stops reading cannot
    // stall the deadline; once the child is gone the write fails (EPIPE) and the thread ends.
    let writer = child.stdin.take().and_then(|mut w| {
        if input.len() <= CEL_INLINE_INPUT {
            let _ = w.write_all(&input);
            None
        } else {
            Some(std::thread::spawn(move || {
                let _ = w.write_all(&input);
            }))
        }
    });
    let reader = std::fs::File::from(reader);
    let mut bytes = Vec::new();
    let read = read_until(&reader, &mut bytes, deadline, CEL_OUTPUT_LIMIT);
    let status = wait_until(&mut child, deadline);
    if let Some(w) = writer {
        let _ = w.join();
    }
    let Some(status) = status else {
        return Err(anyhow!(
            "`--fail-cel-expr` did not finish within the {} left of the hook's time budget (`--grpc-timeout` + {}) and was stopped",
            crate::args::format_duration(wall),
            crate::args::format_duration(crate::GRACE),
        ));
    };
    // The child is gone: what it wrote is in the pipe. Read it without waiting (the deadline
    // may have passed while it was being written).
    if let Ok(false) = read {
        let _ = read_until(&reader, &mut bytes, Instant::now(), CEL_OUTPUT_LIMIT);
    }
    use std::os::unix::process::ExitStatusExt;
    if status.code() == Some(CPU_CAP_EXIT) {
        return Err(anyhow!(
            "`--fail-cel-expr` used more than {} of CPU time (`--fail-cel-timeout`) and was stopped",
            crate::args::format_duration(timeout)
        ));
    }
    if let Some(sig) = status.signal() {
        let said = String::from_utf8_lossy(&bytes);
        let why = if said.contains("memory allocation of") {
            format!(
                "ran out of its memory cap ({} MiB) and was stopped",
                CEL_MEMORY >> 20
            )
        } else if sig == 24 || sig == 9 {
            // SIGXCPU, then SIGKILL: `RLIMIT_CPU`, the backstop of the child's own CPU check.
            format!(
                "hit its CPU-time cap (`--fail-cel-timeout` {}, rounded up to whole seconds) and was stopped",
                crate::args::format_duration(timeout)
            )
        } else {
            format!("crashed (signal {sig}): {}", one_line(&said))
        };
        return Err(anyhow!("`--fail-cel-expr` {why}"));
    }
    match serde_json::from_slice::<CelOutput>(&bytes) {
        Ok(CelOutput::Value(b)) => Ok(b),
        Ok(CelOutput::Error(e)) => Err(anyhow!(e)),
        Err(_) => Err(anyhow!(
            "the CEL evaluator gave no result (exit status {status}): {}",
            one_line(&String::from_utf8_lossy(&bytes))
        )),
    }
}

/// Reads `r` into `buf` to its end, at most `limit` bytes in all, until `deadline`: `Ok(true)`
/// at the end of the data, `Ok(false)` at the deadline. What is readable at once is read even
/// past the deadline (a `deadline` in the past drains the pipe without waiting).
fn read_until(
    mut r: &std::fs::File,
    buf: &mut Vec<u8>,
    deadline: Instant,
    limit: u64,
) -> anyhow::Result<bool> {
    use rustix::event::{PollFd, PollFlags, poll};
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = rustix::event::Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let fd = std::os::fd::AsFd::as_fd(r);
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
        let n = match r.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Ok(true);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() as u64 > limit {
            return Err(anyhow!("more than {limit} bytes"));
        }
    }
}

/// Waits for `child` until `deadline`; past it, kills and reaps it and returns `None`.
fn wait_until(
    child: &mut std::process::Child,
    deadline: Instant,
) -> Option<std::process::ExitStatus> {
    let mut pause = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {}
            Err(_) => break,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The CEL child ([`EVAL_CEL`]): caps its own memory and CPU time, reads a `CelInput` from
/// stdin, evaluates it and prints a `CelOutput` (JSON) on stdout.
pub fn eval_cel_child() -> String {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let out = (|| -> anyhow::Result<bool> {
        // Dies with the hook, whatever happens to it.
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
            .context("failed to set the parent death signal")?;
        let cap = CEL_STACK as u64 + CEL_MEMORY + CEL_BASE;
        setrlimit(
            Resource::As,
            Rlimit {
                current: Some(cap),
                maximum: Some(cap),
            },
        )
        .context("failed to cap the memory")?;
        let mut text = Vec::new();
        std::io::stdin()
            .take(CEL_INPUT_LIMIT + 1)
            .read_to_end(&mut text)
            .context("failed to read the CEL input")?;
        if text.len() as u64 > CEL_INPUT_LIMIT {
            return Err(anyhow!("more than {CEL_INPUT_LIMIT} bytes of CEL input"));
        }
        let input: CelInput = serde_json::from_slice(&text).context("invalid CEL input")?;
        drop(text);
        // The CPU-time cap, checked by a thread: `setitimer`/`timer_create` would need
        // `unsafe` (not in rustix) and `RLIMIT_CPU` counts whole seconds only (kept below as
        // the backstop). CPU time counts only while the child runs, so a loaded node does not
        // turn a waiting child into a timed-out one.
        let limit = Duration::from_millis(input.timeout_ms);
        std::thread::Builder::new()
            .name("cpu-cap".to_owned())
            .stack_size(64 << 10)
            .spawn(move || {
                loop {
                    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
                    let used = Duration::new(
                        u64::try_from(t.tv_sec).unwrap_or(0),
                        u32::try_from(t.tv_nsec).unwrap_or(0),
                    );
                    if used >= limit {
                        std::process::exit(CPU_CAP_EXIT);
                    }
                    std::thread::sleep((limit - used).min(CPU_CAP_TICK));
                }
            })
            .context("failed to start the CPU-time check")?;
        let cpu = input.timeout_ms.div_ceil(1000).max(1);
        setrlimit(
            Resource::Cpu,
            Rlimit {
                current: Some(cpu),
                maximum: Some(cpu + 1),
            },
        )
        .context("failed to cap the CPU time")?;
        eval_cel(&input.expr, &input.annotations, &input.namespace_keys)
    })();
    let out = match out {
        Ok(b) => CelOutput::Value(b),
        Err(e) => CelOutput::Error(format!("{e:#}")),
    };
    serde_json::to_string(&out).unwrap_or_default()
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
        match &self.cel_eval {
            CelEval::InProcess => eval_cel(expr, annotations, &self.namespace_keys),
            CelEval::Isolated { exe, cpu, deadline } => eval_cel_isolated(
                exe,
                *cpu,
                *deadline,
                expr,
                annotations,
                &self.namespace_keys,
            ),
        }
    }

    /// The namespace rules alone (what decides when the CEL expression cannot): cheap, for
    /// the watchdog to know the decision before the agent call.
    pub fn namespace_decision(&self, annotations: &HashMap<String, String>) -> Decision {
        let mut policy_error = None;
        let mut d = self.check_namespaces(annotations, &mut policy_error);
        d.policy_error = policy_error;
        d
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
