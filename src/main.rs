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

fn main() {
    let matches = <cli::Cli as clap::CommandFactory>::command().get_matches();
    let mut cli =
        <cli::Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
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
    // Output a script did not get is a failure, even when the command itself succeeded (a
    // closed pipe is not: the reader chose to stop reading).
    if let Some(e) = cli::stdout_failure() {
        errln!("error: cannot write to stdout: {e}");
        errln!("help: the command ran to its end; only its output was lost");
        code = 1;
    }
    std::process::exit(code);
}
