//! `kbuild build`.

use anyhow::Context as _;
use kbuild::build::{BuildRequest, Context};
use kbuild::generation::Recorded;

use super::Terminal;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kbuild build master
  kbuild build master --set IP=10.72.84.170 --set ETCD2=10.72.84.171
  kbuild build master --offline --override-input \\
      kubernetes-server=file:///srv/mirror/kubernetes-server-linux-amd64.tar.gz

The rootfs path is printed last on stdout; progress goes to stderr.")]
pub struct Args {
    /// Recipes to build (names of files in the recipes directory, without `.toml`)
    #[arg(required = true, value_name = "RECIPE")]
    names: Vec<String>,
    /// Set a recipe variable (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_pair)]
    sets: Vec<(String, String)>,
    /// Fetch an input from another URL (a local copy, a mirror); its pin then comes from the
    /// file actually read, and the lock file is left alone
    #[arg(long = "override-input", value_name = "NAME=URL", value_parser = parse_pair)]
    overrides: Vec<(String, String)>,
    /// Fail instead of changing the lock file
    #[arg(long, conflicts_with = "write_lock")]
    locked: bool,
    /// Also pin overridden inputs in the lock file: the sha256 and size of the file actually
    /// read, under the recipe's URLs (e.g. after checking a new tarball on a local mirror)
    #[arg(long, requires = "overrides")]
    write_lock: bool,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

pub fn run(ctx: &Context, args: Args, term: &Terminal) -> anyhow::Result<()> {
    let req = BuildRequest {
        recipes: args.names,
        sets: args.sets,
        overrides: args.overrides.into_iter().collect(),
        locked: args.locked,
        write_lock: args.write_lock,
    };
    let outcome = kbuild::build::build(ctx, &req, term)
        .with_context(|| format!("cannot build {}", req.recipes.join(" ")))?;
    for (verb, message) in &outcome.lock_changes {
        term.status(verb, message);
    }
    if outcome.lock_written {
        term.status("Wrote", &format!("`{}`", ctx.lock_path.display()));
    }
    let changes = &outcome.changes;
    for (object, what) in &changes.set_aside {
        term.status(
            "Rebuilt",
            &format!("{object} (the store's copy was incomplete or damaged: {what})"),
        );
    }
    // Objects re-created for a generation that already existed were missing: say so rather
    // than "up to date".
    let recreated: Vec<_> = changes
        .added
        .iter()
        .filter(|p| !changes.set_aside.iter().any(|(a, _)| a == *p))
        .collect();
    match outcome.generation {
        Recorded::New(n) => {
            // An added object an earlier generation needs was missing (removed by hand, or a
            // damaged one moved aside): re-created, not merely new.
            for object in needed_by_others(ctx, n, &recreated) {
                term.status(
                    "Rebuilt",
                    &format!("{object} (it was missing from the store)"),
                );
            }
            term.status("Built", &format!("generation {n}"))
        }
        Recorded::Unchanged(n) if recreated.is_empty() && changes.set_aside.is_empty() => {
            term.status("Fresh", &format!("generation {n} is up to date"))
        }
        Recorded::Unchanged(n) => {
            for object in &recreated {
                term.status(
                    "Rebuilt",
                    &format!("{object} (it was missing from the store)"),
                );
            }
            term.status(
                "Restored",
                &format!("generation {n}: its objects are complete again"),
            )
        }
    }
    let path = std::path::absolute(&outcome.rootfs_path).unwrap_or(outcome.rootfs_path);
    outln!("{}", path.display());
    Ok(())
}

/// The objects of `added` that a generation other than `new` needs (the rootfs or what it
/// references): they were missing before this build re-created them.
fn needed_by_others<'a>(
    ctx: &Context,
    new: u64,
    added: &[&'a kbuild::store::StorePath],
) -> Vec<&'a kbuild::store::StorePath> {
    let Ok(store) = kbuild::store::Store::open_existing(&ctx.store_dir) else {
        return Vec::new();
    };
    let mut needed = std::collections::BTreeSet::new();
    for g in kbuild::generation::list(&store).unwrap_or_default() {
        if g.number != new
            && let Ok(c) = kbuild::store::verify::closure(&store, &g.rootfs)
        {
            needed.extend(c);
        }
    }
    added
        .iter()
        .copied()
        .filter(|p| needed.contains(*p))
        .collect()
}
