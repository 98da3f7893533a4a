//! Command-line definitions. Each command is a thin `run` over one library operation; this
//! module and `main.rs` are the only code that writes to the terminal.

/// Writes to stdout; a closed pipe (`kbuild generations | head`) is not an error and never a
/// panic, a failed write is reported at exit (see [`write_stdout`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(&format!($($arg)*))
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => {
        $crate::cli::write_stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// A line on stderr that never panics (see [`write_stderr`]): every message goes through it.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::write_stderr(&format!("{}\n", format_args!($($arg)*)))
    };
}

mod build;
mod check;
mod docs;
mod generations;
mod inputs;
mod json;
mod lock;
mod maint;
mod ship;
mod show;
mod switch;
mod term;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use term::{ColorChoice, Terminal, colour};

#[derive(Parser, Debug)]
#[command(
    name = "kbuild",
    version,
    about = "Reproducible, content-addressed builds of Kubernetes control-plane hosts",
    long_about = "Builds recipes (recipes/*.toml) into an immutable rootfs in a content-addressed store, \
records it as a numbered generation, and pins every input in flake-like.lock.json.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted before or after the subcommand (listed apart in `--help`).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Store directory
    #[arg(
        long,
        global = true,
        env = "KBUILD_STORE",
        default_value = "store",
        value_name = "DIR"
    )]
    pub store: PathBuf,
    /// Recipes directory
    #[arg(
        long,
        global = true,
        env = "KBUILD_RECIPES",
        default_value = "recipes",
        value_name = "DIR"
    )]
    pub recipes: PathBuf,
    /// Root filesystem that `switch` and `rollback` act on
    #[arg(
        long,
        global = true,
        env = "KBUILD_ROOT",
        default_value = "/",
        value_name = "DIR"
    )]
    pub root: PathBuf,
    /// Set after parsing: whether `--root`/KBUILD_ROOT was given (verify checks drift then).
    #[arg(skip)]
    pub root_given: bool,
    /// Lock file [default: flake-like.lock.json beside the recipes directory]
    #[arg(long, global = true, env = "KBUILD_LOCK_FILE", value_name = "PATH")]
    pub lock_file: Option<PathBuf>,
    /// Never use the network; inputs must be in the store or at file:// URLs
    #[arg(long, global = true)]
    pub offline: bool,
    /// When to colour output: auto (a terminal, unless NO_COLOR is set), always, never
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    pub color: ColorChoice,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build recipes into a rootfs in the store and record a generation
    Build(build::Args),
    /// Pin every input that lacks a pin in the lock file (fetching it once)
    Lock(lock::LockArgs),
    /// Re-resolve inputs (all, or the ones named) and rewrite their pins
    Update(lock::UpdateArgs),
    /// List the recorded generations (the active one of `--root` marked `*`)
    #[command(after_help = "Examples:
  kbuild generations
  kbuild generations --root /srv/m1     # mark the generation that root is on")]
    Generations(generations::Args),
    /// List a generation: its profile, recipes, variables, and every file with where it came from
    Show(show::Args),
    /// Activate a generation on the root: atomic, crash-safe, reversible
    Switch(switch::SwitchArgs),
    /// Switch the root back to the generation before the active one
    Rollback(switch::RollbackArgs),
    /// Run the active generation's health checks on the root (`--json` too)
    Check(check::Args),
    /// Show what differs between two generations, and the unit actions a switch would take
    Diff(maint::DiffArgs),
    /// List the recipes' inputs (URL, pin, kept in the store), or an input's archive members
    Inputs(inputs::Args),
    /// Delete old generations (with --keep) and every object no kept generation needs
    Gc(maint::GcArgs),
    /// Re-hash every store object and check the push cache; with --root, also report drift
    Verify(maint::VerifyArgs),
    /// Write a generation and the objects it needs as an OCI image layout directory
    Export(ship::ExportArgs),
    /// Check and add a generation from an OCI image layout directory (offline install)
    Import(ship::ImportArgs),
    /// Send a generation to an OCI registry (only the blobs it lacks)
    #[command(override_usage = "kbuild push [OPTIONS] [GENERATION] <REF>")]
    Push(ship::PushArgs),
    /// Fetch a generation from an OCI registry (only the objects the store lacks)
    Pull(ship::PullArgs),
    /// Print the shell completion script for bash, zsh or fish
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff), or write one page per command with --dir
    Man(docs::ManArgs),
}

impl Cli {
    pub fn run(self, term: &Terminal) -> anyhow::Result<()> {
        let ctx = self.global.context();
        match self.command {
            Command::Build(a) => build::run(&ctx, a, term),
            Command::Lock(a) => lock::run_lock(&ctx, a, term),
            Command::Update(a) => lock::run_update(&ctx, a, term),
            Command::Generations(a) => generations::run(&ctx, &self.global.root_dir(), a),
            Command::Show(a) => show::run(&ctx, &self.global.root_dir(), a),
            Command::Switch(a) => switch::run_switch(&ctx, &self.global.root_dir(), a, term),
            Command::Rollback(a) => switch::run_rollback(&ctx, &self.global.root_dir(), a, term),
            Command::Check(a) => check::run(&self.global.root_dir(), a, term),
            Command::Diff(a) => maint::run_diff(&ctx, &self.global.root_dir(), a),
            Command::Inputs(a) => inputs::run(&ctx, a, term),
            Command::Gc(a) => maint::run_gc(&ctx, a, term),
            Command::Verify(a) => {
                // Drift is checked only for a root named explicitly (flag or KBUILD_ROOT).
                let root = self.global.root_given.then(|| self.global.root_dir());
                maint::run_verify(&ctx, root.as_ref(), a, term)
            }
            Command::Export(a) => ship::run_export(&ctx, &self.global.root_dir(), a, term),
            Command::Import(a) => ship::run_import(&ctx, a, term),
            Command::Push(a) => ship::run_push(&ctx, &self.global.root_dir(), a, term),
            Command::Pull(a) => ship::run_pull(&ctx, a, term),
            Command::Completions(a) => docs::run_completions(a),
            Command::Man(a) => docs::run_man(a),
        }
    }
}

impl Global {
    fn root_dir(&self) -> kbuild::activate::Root {
        kbuild::activate::Root::new(&self.root)
    }

    fn context(&self) -> kbuild::build::Context {
        let lock_path = self.lock_file.clone().unwrap_or_else(|| {
            let parent = self
                .recipes
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            parent.join(kbuild::lockfile::FILE_NAME)
        });
        let max_unpacked = std::env::var("KBUILD_MAX_UNPACKED_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(kbuild::unpack::DEFAULT_MAX_UNPACKED);
        kbuild::build::Context {
            store_dir: self.store.clone(),
            recipes_dir: self.recipes.clone(),
            lock_path,
            lock_path_derived: self.lock_file.is_none(),
            offline: self.offline,
            max_unpacked,
        }
    }
}

/// `--profile NAME` / `--host NAME`: the profile a command reads generation numbers in.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ProfileArgs {
    /// Read generation numbers in this profile [default: the root's profile, else `default`]
    #[arg(long, value_name = "NAME", conflicts_with = "host", value_parser = parse_profile)]
    pub profile: Option<String>,
    /// Read generation numbers in this host's profile (hosts' profiles are named after them)
    #[arg(long, value_name = "NAME", value_parser = parse_profile)]
    pub host: Option<String>,
}

impl ProfileArgs {
    /// What a switch makes of the flags.
    pub fn choice(&self) -> kbuild::activate::Choice {
        use kbuild::activate::Choice;
        match (&self.profile, &self.host) {
            (Some(p), _) => Choice::Profile(p.clone()),
            (None, Some(h)) => Choice::Host(h.clone()),
            (None, None) => Choice::Root,
        }
    }

    /// The profile named, else the root's (when it is managed from this store), else
    /// `default`: what read-only commands (`generations`, `diff`, `gc --keep`) read numbers in.
    pub fn resolve(&self, store: &kbuild::store::Store, root: &kbuild::activate::Root) -> String {
        self.profile
            .clone()
            .or_else(|| self.host.clone())
            .or_else(|| kbuild::activate::active_generation(store, root).map(|(p, _)| p))
            .unwrap_or_else(|| kbuild::generation::DEFAULT_PROFILE.to_owned())
    }
}

/// `--host NAME` must name a host: one whose profile has generations in the store (the hosts
/// file may have changed since), or one the hosts file lists (env KBUILD_HOSTS, else
/// `hosts.toml` beside the recipes directory). An unknown name is an error naming the file
/// and its hosts, not advice to build a host that does not exist.
pub fn check_host(
    ctx: &kbuild::build::Context,
    store: &kbuild::store::Store,
    host: &str,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if kbuild::generation::newest_number(store, host).unwrap_or(0) > 0 {
        return Ok(());
    }
    let path = build::hosts_path(ctx, std::env::var_os("KBUILD_HOSTS").map(Into::into));
    let hosts = kbuild::hosts::Hosts::load(&path, &ctx.recipes_dir).with_context(|| {
        format!(
            "`--host {host}`: cannot read hosts file `{}`",
            path.display()
        )
    })?;
    if hosts.hosts.iter().any(|h| h.entry.name == host) {
        return Ok(());
    }
    Err(Refused {
        message: format!(
            "no host `{host}` in `{}`, and no profile `{host}` with generations in the store",
            path.display()
        ),
        help: format!(
            "hosts: {}; `kbuild generations --all` lists the store's profiles",
            hosts
                .hosts
                .iter()
                .map(|h| h.entry.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    .into())
}

/// A refusal decided by the command line itself, with its `help:` line.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    pub message: String,
    pub help: String,
}

/// A profile name: what is safe as a directory name in the store.
pub fn parse_profile(s: &str) -> Result<String, String> {
    if kbuild::generation::valid_profile(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a profile name: use letters, digits, `.`, `_` and `-` (at most 64, not starting with `.`)"
        ))
    }
}

/// Why stdout could not be written (not a closed pipe), once it failed.
static STDOUT_FAILURE: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
/// Set once stdout is closed or failed: further output is dropped.
static STDOUT_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes to stdout. Once the reader is gone (`kbuild generations | head`) further output is
/// dropped quietly, as ripgrep does; any other failure (`> /dev/full`) is kept for
/// [`stdout_failure`], which makes the exit code non-zero. Either way the command runs to its
/// end: a switch must still carry out its unit actions.
pub fn write_stdout(text: &str) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_DONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        STDOUT_DONE.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let mut failure = STDOUT_FAILURE.lock().unwrap_or_else(|e| e.into_inner());
            failure.get_or_insert_with(|| e.to_string());
        }
    }
}

/// The error of a failed write to stdout, if one failed for another reason than a closed pipe.
pub fn stdout_failure() -> Option<String> {
    STDOUT_FAILURE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Writes to stderr, ignoring every error: with stderr closed (`kbuild build 2>&1 | head -1`)
/// messages are lost, but the command neither panics nor stops early.
pub fn write_stderr(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// An error with its own exit code: a failed health gate (3: rolled back to the last good
/// generation; 4: the root is left on a generation that failed its gate) or checks not run
/// (5: `kbuild check` where it cannot run them). README lists them.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    pub code: i32,
    pub message: String,
    pub help: Option<String>,
}

/// An exit code given without an error message (`diff --exit-code` finding differences).
#[derive(Debug, thiserror::Error)]
#[error("exit code {0}")]
pub struct Quiet(pub i32);

/// Finds a `help:` line for an error anywhere in the chain.
pub fn help_for(err: &anyhow::Error) -> Option<String> {
    use kbuild::build::BuildError;
    if let Some(c) = err.downcast_ref::<Coded>() {
        return c.help.clone();
    }
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<BuildError>()
            && let Some(h) = e.help()
        {
            return Some(h);
        }
        if let Some(e) = cause.downcast_ref::<kbuild::activate::SwitchError>()
            && let Some(h) = e.help()
        {
            return Some(h);
        }
        if let Some(e) = cause.downcast_ref::<kbuild::store::StoreError>()
            && let Some(h) = kbuild::store::Store::help(e)
        {
            return Some(h);
        }
        if let Some(e) = cause.downcast_ref::<kbuild::registry::RegistryError>()
            && let Some(h) = e.help()
        {
            return Some(h);
        }
        if let Some(e) = cause.downcast_ref::<Refused>() {
            return Some(e.help.clone());
        }
        if cause.downcast_ref::<maint::VerifyFailed>().is_some() {
            return Some(
                "`kbuild verify --repair` replaces damaged objects with good copies rebuilt from their sources, re-creates missing ones and drops wrong push cache entries; then `kbuild verify` again".to_owned(),
            );
        }
        if let Some(e) = cause.downcast_ref::<kbuild::recipe::RecipeError>()
            && let Some(h) = e.help()
        {
            return Some(h);
        }
    }
    None
}
