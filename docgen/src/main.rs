//! `docgen`: writes the shell completions (bash, zsh, fish) and the man pages of
//! `tetragon-oci-hook-setup`, generated from the setup tool's own clap definitions.
//!
//! Dev-only (a workspace member outside the default members): `clap_complete` and
//! `clap_mangen` never reach the shipped binary. The definitions are the setup tool's
//! `src/cli.rs` itself, compiled here as a module (that file holds clap types only), so what is
//! generated cannot drift from what the binary parses.
//!
//! ```text
//! cargo run -p docgen -- completions OUTDIR   # OUTDIR/{bash,zsh,fish}/...
//! cargo run -p docgen -- man OUTDIR           # OUTDIR/man1/*.1, one page per command
//! cargo run -p docgen -- all OUTDIR           # both
//! ```
//! `scripts/install-completions.sh` runs it and installs the result under a prefix.

// The setup tool's clap definitions, unchanged; this crate only reads them.
#[allow(dead_code, unreachable_pub)]
#[path = "../../src/cli.rs"]
mod cli;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::CommandFactory as _;
use clap_complete::Shell;

/// The setup binary's name, as installed.
const BIN: &str = "tetragon-oci-hook-setup";

/// The setup tool's command, with the `about` its binary shows (its `about` comes from its own
/// package's description, which cargo gives to that package only).
fn command() -> clap::Command {
    cli::Cli::command().about(setup_description())
}

/// The `description` of the setup package's `Cargo.toml` (`[package]` table).
fn setup_description() -> String {
    let manifest = include_str!("../../Cargo.toml");
    let package = manifest
        .split("\n[")
        .find(|table| table.starts_with("package]"))
        .unwrap_or_default();
    package
        .lines()
        .find_map(|l| l.strip_prefix("description = "))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .unwrap_or_default()
}

/// Where each shell's completion file goes under the output dir, and its name there (the
/// names each shell looks for: bash-completion loads by command name, zsh by `_command`).
fn completion_files() -> [(Shell, &'static str, String); 3] {
    [
        (Shell::Bash, "bash", BIN.to_owned()),
        (Shell::Zsh, "zsh", format!("_{BIN}")),
        (Shell::Fish, "fish", format!("{BIN}.fish")),
    ]
}

fn write_completions(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (shell, dir, name) in completion_files() {
        let dir = out.join(dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create `{}`", dir.display()))?;
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut command(), BIN, &mut buf);
        if shell == Shell::Bash {
            buf = fix_bash_case_labels(&buf);
        }
        let path = dir.join(name);
        std::fs::write(&path, buf)
            .with_context(|| format!("failed to write `{}`", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Works around clap-rs/clap#6421 (open in clap_complete 4.6.12): for a binary name with a
/// hyphen, the bash script's loop spells the state of `BIN install` as
/// `tetragon__oci__hook__setup__subcmd__install` but its `case` arms as
/// `tetragon__subcmd__oci__subcmd__hook__subcmd__setup__subcmd__install`, so no flag of any
/// subcommand is ever completed. The arms are respelled as the loop spells them; once fixed
/// upstream the wrong spelling is absent and this changes nothing.
fn fix_bash_case_labels(script: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(script);
    let wrong = BIN.replace('-', "__subcmd__");
    let right = BIN.replace('-', "__");
    text.replace(&wrong, &right).into_bytes()
}

/// One page per command and subcommand (`tetragon-oci-hook-setup-install.1`, ...).
fn write_man(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = out.join("man1");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    let mut written = Vec::new();
    let mut cmd = command();
    cmd.build();
    write_pages(&cmd, &dir, &mut written)?;
    Ok(written)
}

fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    // The page of a subcommand is named after its whole path, as git's are.
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned();
    let page = clap_mangen::Man::new(cmd.clone().name(name.clone()));
    let mut buf = Vec::new();
    page.render(&mut buf)
        .with_context(|| format!("failed to render the page of `{name}`"))?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf).with_context(|| format!("failed to write `{}`", path.display()))?;
    written.push(path);
    // clap's generated `help` subcommands get no page: `--help` and these pages say it all.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}

fn run(args: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let [what, out] = args else {
        bail!("usage: docgen completions|man|all OUTDIR");
    };
    let out = Path::new(out);
    match what.as_str() {
        "completions" => write_completions(out),
        "man" => write_man(out),
        "all" => {
            let mut written = write_completions(out)?;
            written.extend(write_man(out)?);
            Ok(written)
        }
        other => bail!("unknown target `{other}`: use completions, man or all"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(written) => {
            let mut err = std::io::stderr().lock();
            for path in written {
                let _ = writeln!(err, "wrote `{}`", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(2)
        }
    }
}
