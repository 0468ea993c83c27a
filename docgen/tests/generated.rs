//! What `docgen` writes works where it is used: bash completes the setup tool's subcommands and
//! flags from the generated script, and the man pages render with `man -l` and name every
//! subcommand and flag of the clap definitions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

// The setup tool's clap definitions: the lists below come from them, not from a copy.
#[allow(dead_code, unreachable_pub)]
#[path = "../../src/cli.rs"]
mod cli;

/// The one skip policy (`require!`/`skip!`), from the setup package's test harness; its macros
/// name it as `$crate::support::skip`.
#[allow(dead_code, unused_macros, unreachable_pub)]
#[path = "../../tests/support/skip.rs"]
#[macro_use]
mod skip;
mod support {
    pub(crate) use super::skip;
}

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory as _;

const BIN: &str = "tetragon-oci-hook-setup";

/// Runs `docgen all` into a new temporary dir.
fn generate() -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_docgen"))
        .arg("all")
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success(), "docgen failed: {status}");
    out
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// The completions bash offers for the command line `words` (the last word being completed),
/// with the generated script sourced.
fn bash_complete(script: &Path, words: &[&str]) -> (String, Vec<String>) {
    let list = words
        .iter()
        .map(|w| format!("'{w}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let line = words.join(" ");
    let prog = format!(
        "source '{}' || exit 9\n\
         complete -p {BIN}\n\
         COMP_WORDS=({list}); COMP_CWORD={cword}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}\n\
         func=$(complete -p {BIN} | sed -n 's/.*-F \\([^ ]*\\).*/\\1/p')\n\
         \"$func\" {BIN} '{cur}' '{prev}'\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        cword = words.len() - 1,
        cur = words[words.len() - 1],
        prev = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &prog])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bash: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    let spec = lines.next().unwrap_or_default().to_owned();
    (spec, lines.map(str::to_owned).collect())
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    require!(which("bash"), "bash not found");
    let out = generate();
    let script = out.path().join("bash").join(BIN);
    let (spec, subcommands) = bash_complete(&script, &[BIN, "patch-c"]);
    assert!(
        spec.starts_with("complete ") && spec.ends_with(BIN),
        "{spec}"
    );
    assert!(
        subcommands.contains(&"patch-containerd-conf".to_owned())
            && subcommands.contains(&"patch-crio-conf".to_owned())
            && !subcommands.contains(&"install".to_owned()),
        "{subcommands:?}"
    );
    let (_, flags) = bash_complete(&script, &[BIN, "install", "--local-in"]);
    assert_eq!(flags, ["--local-install-dir"]);
    let (_, values) = bash_complete(&script, &[BIN, "install", "--interface", ""]);
    assert_eq!(values, ["oci-hooks", "nri-hook"]);
    let (_, nested) = bash_complete(
        &script,
        &[BIN, "patch-containerd-conf", "add-oci-hook", "--runtime-s"],
    );
    assert_eq!(nested, ["--runtime-spec"]);
}

#[test]
fn zsh_and_fish_completions_name_every_subcommand() {
    let out = generate();
    for file in [
        out.path().join("zsh").join(format!("_{BIN}")),
        out.path().join("fish").join(format!("{BIN}.fish")),
    ] {
        let text = std::fs::read_to_string(&file).unwrap();
        for (path, _) in commands(&cli::Cli::command()) {
            let last = path.last().unwrap();
            assert!(text.contains(last.as_str()), "{}: {last}", file.display());
        }
    }
}

/// Every command (as the path of names below the root) with its long flags.
fn commands(cmd: &clap::Command) -> Vec<(Vec<String>, Vec<String>)> {
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, Vec<String>)>) {
        let flags = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        out.push((path.clone(), flags));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let mut p = path.clone();
            p.push(sub.get_name().to_owned());
            walk(sub, p, out);
        }
    }
    let mut cmd = cmd.clone();
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, vec![BIN.to_owned()], &mut out);
    out
}

/// `page` rendered by `man -l` as plain ASCII text; groff's warnings fail the test.
fn render(man: &Path, page: &Path) -> String {
    let rendered = Command::new(man)
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "200")
        .env("LC_ALL", "C")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&rendered.stderr);
    assert!(
        rendered.status.success() && stderr.trim().is_empty(),
        "{}: {stderr}",
        page.display()
    );
    String::from_utf8(rendered.stdout).unwrap()
}

#[test]
fn man_pages_render_and_name_every_subcommand_and_flag() {
    let man = require!(which("man"), "man (man-db) not found");
    let out = generate();
    let dir = out.path().join("man1");
    let mut pages = std::collections::HashMap::new();
    let all = commands(&cli::Cli::command());
    for (path, flags) in &all {
        let name = path.join("-");
        let page = dir.join(format!("{name}.1"));
        let roff =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(
            roff.contains("\n.TH ") || roff.starts_with(".TH "),
            "{}",
            page.display()
        );
        let text = render(&man, &page);
        assert!(
            text.contains(&format!("{name}(1)")),
            "{}: {text}",
            page.display()
        );
        for flag in flags {
            assert!(
                text.contains(flag.as_str()),
                "{}: {flag}\n{text}",
                page.display()
            );
        }
        pages.insert(name, text);
    }
    // Each subcommand is listed, with its page, on its parent's page.
    for (path, _) in all.iter().filter(|(p, _)| p.len() > 1) {
        let parent = &pages[&path[..path.len() - 1].join("-")];
        let entry = format!("{}(1)", path.join("-"));
        assert!(
            parent.contains(&entry),
            "{entry} not on its parent's page:\n{parent}"
        );
    }
    assert!(
        pages[BIN].contains("Node-side tooling for Tetragon's runtime hooks"),
        "{}",
        pages[BIN]
    );
}

#[test]
fn install_script_puts_completions_and_man_pages_under_the_prefix() {
    let prefix = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-completions.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(prefix.path())
        .env("DOCGEN", env!("CARGO_BIN_EXE_docgen"))
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    let share = prefix.path().join("share");
    for file in [
        format!("bash-completion/completions/{BIN}"),
        format!("zsh/site-functions/_{BIN}"),
        format!("fish/vendor_completions.d/{BIN}.fish"),
        format!("man/man1/{BIN}.1"),
        format!("man/man1/{BIN}-install.1"),
        format!("man/man1/{BIN}-patch-containerd-conf-enable-nri.1"),
    ] {
        assert!(share.join(&file).is_file(), "{file} not installed");
    }
    // What bash-completion loads for the command is the fixed script.
    let (_, flags) = bash_complete(
        &share.join("bash-completion/completions").join(BIN),
        &[BIN, "uninstall", "--binary-n"],
    );
    assert_eq!(flags, ["--binary-name"]);
}

fn install_script(prefix: &Path) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-completions.sh");
    Command::new("bash")
        .arg(&script)
        .arg(prefix)
        .env("DOCGEN", env!("CARGO_BIN_EXE_docgen"))
        .output()
        .unwrap()
}

/// Every file under `dir` (links not followed) with its contents, or the link's target.
fn tree(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let body = if meta.is_dir() {
                stack.push(p.clone());
                Vec::new()
            } else if meta.is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                std::fs::read(&p).unwrap()
            };
            out.push((p.strip_prefix(dir).unwrap().to_path_buf(), body));
        }
    }
    out.sort();
    out
}

/// Run twice, the script leaves the same files (no temporary leftovers, no duplicates), and
/// says nothing but its one summary line.
#[test]
fn install_script_is_idempotent() {
    let prefix = tempfile::tempdir().unwrap();
    let first = install_script(prefix.path());
    assert!(first.status.success(), "{first:?}");
    let once = tree(prefix.path());
    let again = install_script(&prefix.path().join(""));
    assert!(again.status.success(), "{again:?}");
    assert_eq!(tree(prefix.path()), once);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("installed completions and "), "{stderr}");
}

/// A relative, root, dotted or non-directory prefix is refused (exit 2, `help:`), and so is a
/// prefix whose directories lead elsewhere through a link: nothing is written, in the prefix or
/// outside it. A link planted at a file's name is replaced, never written through.
#[test]
fn install_script_refuses_nonsense_prefixes_and_writes_only_under_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("outside")).unwrap();
    std::fs::write(d.join("file"), "x").unwrap();
    std::fs::create_dir_all(d.join("linked/share")).unwrap();
    std::os::unix::fs::symlink(d.join("outside"), d.join("linked/share/man")).unwrap();
    let before = tree(d);
    for bad in [
        Path::new("relative/prefix").to_path_buf(),
        Path::new("/").to_path_buf(),
        d.join("x/../y"),
        d.join("x/./y"),
        Path::new(&format!("{}//y", d.display())).to_path_buf(),
        d.join("file"),
        d.join("linked"),
    ] {
        let out = install_script(&bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{bad:?}: {stderr}");
        assert!(stderr.contains("\nhelp: "), "{bad:?}: {stderr}");
        assert_eq!(tree(d), before, "{bad:?}: something was written");
    }
    // A link at a man page's name, to a file outside: replaced by the page, the file untouched.
    let prefix = d.join("planted");
    std::fs::create_dir_all(prefix.join("share/man/man1")).unwrap();
    std::fs::write(d.join("outside/victim"), "keep").unwrap();
    std::os::unix::fs::symlink(
        d.join("outside/victim"),
        prefix.join(format!("share/man/man1/{BIN}.1")),
    )
    .unwrap();
    let out = install_script(&prefix);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(d.join("outside/victim")).unwrap(),
        "keep"
    );
    let page = prefix.join(format!("share/man/man1/{BIN}.1"));
    assert!(std::fs::symlink_metadata(&page).unwrap().is_file());
}
