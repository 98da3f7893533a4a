//! The `kbuild` binary: parse arguments, run one command, print the error chain, exit.

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
    if let Err(err) = cli.run(&term) {
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        if let Some(help) = cli::help_for(&err) {
            eprintln!("help: {help}");
        }
        std::process::exit(1);
    }
}
