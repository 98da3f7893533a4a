//! The `kbuild` binary: parse arguments, run one command, print the error chain, exit.

mod cli;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
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
