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
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let text = if cli::colour(color_choice(), tty) {
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

/// `--color WHEN` as given on the command line (last one wins), read before clap parses so
/// that clap's own help and errors follow it too.
fn color_choice() -> cli::ColorChoice {
    let mut choice = cli::ColorChoice::Auto;
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let a = a.to_string_lossy().into_owned();
        if a == "--" {
            break;
        }
        let value = match a.strip_prefix("--color") {
            Some("") => args.next().map(|v| v.to_string_lossy().into_owned()),
            Some(v) => v.strip_prefix('=').map(str::to_owned),
            None => None,
        };
        match value.as_deref() {
            Some("always") => choice = cli::ColorChoice::Always,
            Some("never") => choice = cli::ColorChoice::Never,
            Some("auto") => choice = cli::ColorChoice::Auto,
            _ => {}
        }
    }
    choice
}

/// Ctrl-C (and SIGTERM, SIGHUP): clear the progress line, remove the temporary entries this
/// process made in the store (scratch directories, temp files; see `kbuild::interrupt`) and
/// exit 130 as shells expect of a command stopped by SIGINT. The handler runs on a thread of
/// its own while the command's threads stop where they are.
fn interrupt_handler(term: &std::sync::Arc<cli::Terminal>) {
    let term = std::sync::Arc::clone(term);
    let installed = ctrlc::set_handler(move || {
        term.clear();
        // Children in process groups of their own (health checks, credential helpers) got
        // no SIGINT from a signal sent to kbuild alone.
        kbuild::interrupt::kill_tracked_groups();
        let removed = kbuild::interrupt::remove_tracked();
        let what = if removed == 1 { "entry" } else { "entries" };
        errln!("error: interrupted; removed {removed} temporary {what} this command had made");
        if let Some(left) = kbuild::interrupt::left() {
            errln!("help: {left}");
        }
        std::process::exit(130);
    });
    if let Err(e) = installed {
        errln!(
            "warning: cannot handle Ctrl-C ({e}); an interrupted build leaves temporary entries for `kbuild gc`"
        );
    }
}

/// An error message as one line of the chain: a server's body, carried in a cause, often
/// ends in a newline (Go's "Client sent an HTTP request to an HTTPS server.\n"), which
/// would print as a blank line before the next.
fn one_message(text: &str) -> &str {
    text.trim_end()
}

fn main() {
    let clap_color = match color_choice() {
        cli::ColorChoice::Always => clap::ColorChoice::Always,
        cli::ColorChoice::Never => clap::ColorChoice::Never,
        // clap's own stream detection already honours NO_COLOR.
        cli::ColorChoice::Auto => clap::ColorChoice::Auto,
    };
    let matches = <cli::Cli as clap::CommandFactory>::command()
        .color(clap_color)
        .try_get_matches()
        .unwrap_or_else(|e| clap_exit(e));
    let mut cli = <cli::Cli as clap::FromArgMatches>::from_arg_matches(&matches)
        .unwrap_or_else(|e| clap_exit(e));
    cli.global.root_given = root_given(&matches);
    let term = std::sync::Arc::new(cli::Terminal::new(cli.global.color));
    interrupt_handler(&term);
    let mut code = 0;
    if let Err(err) = cli.run(&term) {
        if let Some(cli::Quiet(c)) = err.downcast_ref::<cli::Quiet>() {
            exit_with(*c);
        }
        errln!("error: {}", one_message(&err.to_string()));
        for cause in err.chain().skip(1) {
            errln!("  caused by: {}", one_message(&cause.to_string()));
        }
        if let Some(help) = cli::help_for(&err) {
            errln!("help: {help}");
        }
        code = err.downcast_ref::<cli::Coded>().map_or(1, |c| c.code);
    }
    // Output a script did not get is a failure, even when the command itself succeeded.
    exit_with(code)
}
