//! `kbuild build`.

use anyhow::Context as _;
use kbuild::build::{BuildRequest, Context};
use kbuild::generation::Recorded;

use super::Terminal;

#[derive(clap::Args, Debug)]
#[command(
    override_usage = "kbuild build [OPTIONS] <RECIPE>...\n       kbuild build [OPTIONS] --host <NAME>...\n       kbuild build [OPTIONS] --all-hosts"
)]
#[command(after_help = "Examples:
  kbuild build master
  kbuild build master --set IP=10.72.84.170 --set ETCD2=10.72.84.171
  kbuild build --all-hosts                 # every host of hosts.toml, each in its profile
  kbuild build --host master-2 --set SERVICE_CIDR=10.254.0.0/16
  kbuild build master --offline --override-input \\
      kubernetes-server=file:///srv/mirror/kubernetes-server-linux-amd64.tar.gz

The rootfs path is printed last on stdout; progress goes to stderr.")]
pub struct Args {
    /// Recipes to build (names of files in the recipes directory, without `.toml`)
    #[arg(required_unless_present_any = ["host", "all_hosts"], value_name = "RECIPE")]
    names: Vec<String>,
    /// Build this host of the hosts file into its profile (repeatable)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["names", "profile"])]
    host: Vec<String>,
    /// Build every host of the hosts file, each into its profile
    #[arg(long, conflicts_with_all = ["names", "profile", "host"])]
    all_hosts: bool,
    /// The hosts file [default: hosts.toml beside the recipes directory]
    #[arg(long, env = "KBUILD_HOSTS", value_name = "FILE")]
    hosts: Option<std::path::PathBuf>,
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
    /// Record the generation in this profile [default: `default`]
    #[arg(long, value_name = "NAME", value_parser = super::parse_profile)]
    profile: Option<String>,
}

pub(super) fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

pub fn run(ctx: &Context, args: Args, term: &Terminal) -> anyhow::Result<()> {
    if args.all_hosts || !args.host.is_empty() {
        return run_hosts(ctx, args, term);
    }
    let req = BuildRequest {
        recipes: args.names,
        sets: args.sets,
        overrides: args.overrides.into_iter().collect(),
        locked: args.locked,
        write_lock: args.write_lock,
        profile: args.profile.clone(),
        hosts: Vec::new(),
        read_overrides: Default::default(),
    };
    let outcome = kbuild::build::build(ctx, &req, term)
        .with_context(|| format!("cannot build {}", req.recipes.join(" ")))?;
    report(ctx, &req, outcome, term)
}

/// The hosts file: `--hosts`, else `hosts.toml` beside the recipes directory.
pub(super) fn hosts_path(ctx: &Context, given: Option<std::path::PathBuf>) -> std::path::PathBuf {
    given.unwrap_or_else(|| {
        let parent = ctx
            .recipes_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        parent.join(kbuild::hosts::FILE_NAME)
    })
}

/// `--host NAME…` / `--all-hosts`: every host is checked (its recipes, its variables) before
/// any is built, so a fault in the hosts file writes nothing; then each host is built into
/// its own profile, sharing every identical object.
fn run_hosts(ctx: &Context, args: Args, term: &Terminal) -> anyhow::Result<()> {
    let path = hosts_path(ctx, args.hosts.clone());
    let hosts = kbuild::hosts::Hosts::load(&path, &ctx.recipes_dir)
        .with_context(|| format!("cannot read hosts file `{}`", path.display()))?;
    let chosen = if args.all_hosts {
        hosts.hosts.iter().collect()
    } else {
        hosts
            .select(&args.host)
            .with_context(|| format!("cannot read hosts file `{}`", path.display()))?
    };
    hosts
        .check_sets(&chosen, &args.sets)
        .with_context(|| format!("cannot build {}", describe(&chosen)))?;
    let mut requests = Vec::new();
    for h in &chosen {
        let set = kbuild::recipe::load(&ctx.recipes_dir, &h.recipes)
            .with_context(|| format!("cannot build host `{}`", h.entry.name))?;
        h.check_variables(&set.variables.keys().cloned().collect())
            .with_context(|| format!("cannot build host `{}`", h.entry.name))?;
        // `--set` applies to every host built, over the file's values.
        let mut vars = h.variables.clone();
        vars.extend(args.sets.iter().cloned());
        requests.push((
            h.entry.name.clone(),
            BuildRequest {
                recipes: h.recipes.clone(),
                sets: vars.into_iter().collect(),
                overrides: args.overrides.iter().cloned().collect(),
                locked: args.locked,
                write_lock: args.write_lock,
                profile: Some(h.entry.name.clone()),
                hosts: entries_with_sets(&hosts, &h.entry.name, &args.sets),
                read_overrides: Default::default(),
            },
        ));
    }
    // Every host rendered and checked before any is built: a fault writes nothing.
    for (name, req) in &requests {
        kbuild::build::check_only(ctx, req)
            .with_context(|| format!("cannot build host `{name}`"))?;
    }
    // An `--override-input` file is read by the first host that needs it; the others use
    // what that read found (the same file, in the same command).
    let mut read = std::collections::BTreeMap::new();
    for (name, mut req) in requests {
        req.read_overrides = read.clone();
        let outcome = kbuild::build::build(ctx, &req, term)
            .with_context(|| format!("cannot build host `{name}`"))?;
        if let Ok(store) = kbuild::store::Store::open_existing(&ctx.store_dir)
            && let Ok(Some(g)) = kbuild::generation::get(&store, &name, outcome.generation.number())
        {
            for (input, sha) in g.inputs {
                if req.overrides.contains_key(&input) {
                    read.insert(input, sha);
                }
            }
        }
        report(ctx, &req, outcome, term)?;
    }
    Ok(())
}

/// The list templates read, with the host's address replaced by a `--set` of the address
/// variable (allowed for one host only), so that the cluster-wide flags (`--etcd-servers`)
/// name the address the host binds.
fn entries_with_sets(
    hosts: &kbuild::hosts::Hosts,
    host: &str,
    sets: &[(String, String)],
) -> Vec<kbuild::hosts::HostEntry> {
    let mut entries = hosts.entries();
    let address = sets
        .iter()
        .rev()
        .find(|(k, _)| hosts.address_variable.as_deref() == Some(k.as_str()))
        .map(|(_, v)| v.clone());
    if let Some(address) = address {
        for e in entries.iter_mut().filter(|e| e.name == host) {
            e.address = address.clone();
        }
    }
    entries
}

/// "host `a`" or "hosts a, b" for errors about the hosts chosen.
fn describe(chosen: &[&kbuild::hosts::Host]) -> String {
    match chosen {
        [one] => format!("host `{}`", one.entry.name),
        many => format!(
            "hosts {}",
            many.iter()
                .map(|h| h.entry.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Reports one build: lock changes, objects re-created, the generation, the rootfs path.
fn report(
    ctx: &Context,
    req: &BuildRequest,
    outcome: kbuild::build::BuildOutcome,
    term: &Terminal,
) -> anyhow::Result<()> {
    // A host's generation is named with its profile.
    let of = match req.profile.as_deref() {
        Some(p) if p != kbuild::generation::DEFAULT_PROFILE => format!(" of {p}"),
        _ => String::new(),
    };
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
            for object in needed_by_others(ctx, req.profile.as_deref(), n, &recreated) {
                term.status(
                    "Rebuilt",
                    &format!("{object} (it was missing from the store)"),
                );
            }
            term.status("Built", &format!("generation {n}{of}"))
        }
        Recorded::Unchanged(n) if recreated.is_empty() && changes.set_aside.is_empty() => {
            term.status("Fresh", &format!("generation {n}{of} is up to date"))
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
                &format!("generation {n}{of}: its objects are complete again"),
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
    profile: Option<&str>,
    new: u64,
    added: &[&'a kbuild::store::StorePath],
) -> Vec<&'a kbuild::store::StorePath> {
    let Ok(store) = kbuild::store::Store::open_existing(&ctx.store_dir) else {
        return Vec::new();
    };
    let mut needed = std::collections::BTreeSet::new();
    let profile = profile.unwrap_or(kbuild::generation::DEFAULT_PROFILE);
    for g in kbuild::generation::list_all(&store).unwrap_or_default() {
        if (g.profile != profile || g.number != new)
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
