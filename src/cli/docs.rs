//! `kbuild completions` and `kbuild man`: shell completion scripts and roff man pages,
//! generated from the clap definitions so they cannot drift from the commands.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::CommandFactory as _;

/// A shell `kbuild completions` writes a script for.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Shell {
    /// Bash (bash-completion)
    Bash,
    /// Zsh (compsys)
    Zsh,
    /// Fish
    Fish,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kbuild completions bash > /etc/bash_completion.d/kbuild
  kbuild completions zsh > \"${fpath[1]}/_kbuild\"     # a directory on $fpath; then compinit
  kbuild completions fish > ~/.config/fish/completions/kbuild.fish
  source <(kbuild completions bash)                  # this bash session only")]
pub struct CompletionsArgs {
    /// Shell to write the completion script for
    #[arg(value_enum, value_name = "SHELL")]
    shell: Shell,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kbuild man | man -l -                              # read it now
  kbuild man --dir /usr/local/share/man/man1         # install: kbuild.1, kbuild-build.1, ...
  man kbuild-switch                                  # then, once installed")]
pub struct ManArgs {
    /// Write one page per command (kbuild.1, kbuild-build.1, ...) into DIR instead of printing
    /// the page of kbuild on stdout; DIR is created if missing, each page replaced atomically
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// The command tree the scripts and pages describe: `kbuild help` is left out, as
/// `kbuild --help` and `kbuild COMMAND --help` say the same.
fn command() -> clap::Command {
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Prints the completion script for `args.shell` on stdout.
pub fn run_completions(args: CompletionsArgs) -> anyhow::Result<()> {
    use clap_complete::Shell as S;
    let shell = match args.shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
    };
    let mut cmd = command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kbuild", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    Ok(())
}

/// Prints the man page of kbuild, or with `--dir` writes every command's page there.
pub fn run_man(args: ManArgs) -> anyhow::Result<()> {
    let Some(dir) = args.dir else {
        out!("{}", String::from_utf8_lossy(&render(command())?));
        return Ok(());
    };
    let mut pages = Vec::new();
    collect(command(), &mut pages)?;
    fs_err::create_dir_all(&dir)
        .with_context(|| format!("cannot create the man page directory {}", dir.display()))?;
    for (name, roff) in &pages {
        let path = dir.join(name);
        kbuild::fs::write_atomic(&path, roff)
            .with_context(|| format!("cannot write the man page {}", path.display()))?;
        outln!("{}", path.display());
    }
    Ok(())
}

/// The roff page of one (built) command.
fn render(cmd: clap::Command) -> anyhow::Result<Vec<u8>> {
    let mut roff = Vec::new();
    // Every page says it is from kbuild (clap_mangen would put the subcommand's name there).
    clap_mangen::Man::new(cmd)
        .source(format!("kbuild {}", env!("CARGO_PKG_VERSION")))
        .render(&mut roff)
        .context("cannot render the man page")?;
    Ok(roff)
}

/// `(file name, page)` of `cmd` and of each visible subcommand, recursively; a subcommand's
/// page is named after its display name (`kbuild-switch.1`), as `man kbuild-switch` expects.
fn collect(cmd: clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    let name = clap_mangen::Man::new(cmd.clone()).get_filename();
    // The file name comes from our own command names; checked anyway so a page can never be
    // written outside DIR.
    anyhow::ensure!(
        Path::new(&name).file_name() == Some(name.as_ref()),
        "man page name {name:?} is not a plain file name"
    );
    pages.push((name, render(cmd.clone())?));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub.clone(), pages)?;
    }
    Ok(())
}
