//! The `kbuild` binary: parse arguments, run one command, print the error chain, exit.

#[macro_use]
mod cli;

/// Whether `--root` came from the command line or the environment (not the default),
/// looking into the subcommand's matches too since the option is global.
fn root_given(m: &clap::ArgMatches) -> bool {
    let explicit = |m: &clap::ArgMatches| {
        matches!(
            m.value_source("root"),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        )
    };
    explicit(m) || m.subcommand().is_some_and(|(_, sub)| explicit(sub))
}

/// Prints what clap has to say instead of running a command: `--help` and `--version` go to
/// stdout through [`cli::write_stdout`] (so `kbuild --help > /dev/full` fails as any other
/// output would), usage errors to stderr with exit code 2.
fn clap_exit(e: clap::Error) -> ! {
    if e.use_stderr() {
        e.exit();
    }
    let text = if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        e.render().ansi().to_string()
    } else {
        e.render().to_string()
    };
    out!("{text}");
    exit_with(e.exit_code())
}

/// Exits with `code`, or 1 when stdout could not be written (a closed pipe is not a failure:
/// the reader chose to stop reading).
fn exit_with(mut code: i32) -> ! {
    if let Some(e) = cli::stdout_failure() {
        errln!("error: cannot write to stdout: {e}");
        errln!("help: the command ran to its end; only its output was lost");
        code = 1;
    }
    std::process::exit(code);
}

fn main() {
    let matches = <cli::Cli as clap::CommandFactory>::command()
        .try_get_matches()
        .unwrap_or_else(|e| clap_exit(e));
    let mut cli = <cli::Cli as clap::FromArgMatches>::from_arg_matches(&matches)
        .unwrap_or_else(|e| clap_exit(e));
    cli.global.root_given = root_given(&matches);
    let term = cli::Terminal::new();
    let mut code = 0;
    if let Err(err) = cli.run(&term) {
        errln!("error: {err}");
        for cause in err.chain().skip(1) {
            errln!("  caused by: {cause}");
        }
        if let Some(help) = cli::help_for(&err) {
            errln!("help: {help}");
        }
        code = 1;
    }
    // Output a script did not get is a failure, even when the command itself succeeded.
    exit_with(code)
}
