//! `kbuild gc`, `kbuild verify` and `kbuild diff`.

use anyhow::Context as _;
use kbuild::activate::Root;
use kbuild::build::Context;
use kbuild::store::Store;

use super::Terminal;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Without --keep no generation is removed: gc deletes only what no generation and no root
needs (objects of removed generations, leftovers of interrupted builds), and input archives
no generation pins. With --keep N the newest N generations stay, and the one each known root
is on always stays.

Examples:
  kbuild gc --dry-run --keep 3       # what would go; removes nothing
  kbuild gc --keep 3
  kbuild gc --drop-archives          # offline rebuilds will fetch again"
)]
pub struct GcArgs {
    /// Keep only the newest N generations of each profile (the active one of every known
    /// root is always kept)
    #[arg(long, value_name = "N")]
    keep: Option<usize>,
    /// Also delete every kept input archive (by default one stays while a remaining
    /// generation pins it, for offline rebuilds); later builds fetch them again
    #[arg(long)]
    drop_archives: bool,
    /// With `--keep`: drop old generations of this profile only
    #[arg(long, value_name = "NAME", requires = "keep", conflicts_with = "host",
          value_parser = super::parse_profile)]
    profile: Option<String>,
    /// With `--keep`: drop old generations of this host's profile only
    #[arg(long, value_name = "NAME", requires = "keep", value_parser = super::parse_profile)]
    host: Option<String>,
    /// List what would be removed (with or without --keep) and remove nothing
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON (schema: docs/json.md, "gc")
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kbuild verify                      # re-hash every store object, check the push cache
  kbuild verify --root /             # also report drift of the root's links
  kbuild verify --repair
  kbuild verify --json               # schema: docs/json.md")]
pub struct VerifyArgs {
    /// Repair what is found: a damaged object a generation uses is replaced, in one step, by
    /// a copy rebuilt from that generation's recipes and locked inputs (or left in place and
    /// reported when that is impossible); damaged objects no generation uses are deleted;
    /// push cache entries naming a wrong blob are dropped
    #[arg(long)]
    repair: bool,
    /// With `--repair`: read an input from another URL (a local copy) when rebuilding
    #[arg(long = "override-input", value_name = "NAME=URL", requires = "repair",
          value_parser = parse_pair)]
    overrides: Vec<(String, String)>,
    /// Print what was found as JSON (schema: docs/json.md, "verify"); exit code 1 when
    /// something was found, as without it
    #[arg(long, conflicts_with = "repair")]
    json: bool,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected NAME=URL, got `{s}`")),
    }
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kbuild diff                        # the root's active generation against the newest
  kbuild diff 2 3
  kbuild diff 2 3 --exit-code >/dev/null || echo differ
  kbuild diff --json                 # schema: docs/json.md")]
pub struct DiffArgs {
    /// From this generation [default: the root's active one, else the one before the newest]
    #[arg(value_name = "A")]
    from: Option<u64>,
    /// To this generation [default: the newest]
    #[arg(value_name = "B")]
    to: Option<u64>,
    #[command(flatten)]
    profile: super::ProfileArgs,
    /// Print the differences as JSON (schema: docs/json.md, "diff")
    #[arg(long)]
    json: bool,
    /// Exit with 1 when the generations differ (files or unit actions), 0 when they do not,
    /// as `git diff --exit-code` does
    #[arg(long)]
    exit_code: bool,
}

fn open(ctx: &Context) -> anyhow::Result<Store> {
    Store::open_existing(&ctx.store_dir)
        .with_context(|| format!("cannot open store `{}`", ctx.store_dir.display()))
}

pub fn run_gc(ctx: &Context, args: GcArgs, term: &Terminal) -> anyhow::Result<()> {
    // No store yet: nothing to collect (never an error racing the first build).
    if Store::is_unused(&ctx.store_dir) {
        if args.json {
            super::json::print(&gc_json(&kbuild::gc::Report::default(), args.dry_run));
        } else {
            outln!(
                "nothing to collect: no store at `{}` yet",
                ctx.store_dir.display()
            );
        }
        return Ok(());
    }
    let store = open(ctx)?;
    let archives = if args.drop_archives {
        kbuild::gc::Archives::DropAll
    } else {
        kbuild::gc::Archives::WhilePinned
    };
    if let Some(h) = &args.host {
        super::check_host(ctx, &store, h)?;
    }
    let only = args.profile.as_deref().or(args.host.as_deref());
    let report = kbuild::gc::gc(&store, args.keep, only, archives, args.dry_run, term)
        .context("garbage collection failed")?;
    if args.json {
        super::json::print(&gc_json(&report, args.dry_run));
        return Ok(());
    }
    // A dry run says the same in the conditional ("would"), on stdout: it is the answer.
    let (removed, deleted, forgot) = if args.dry_run {
        ("Would remove", "Would delete", "Would forget")
    } else {
        ("Removed", "Deleted", "Forgot")
    };
    // With several profiles every removal names its profile, `default` too, so that no line
    // reads as if it were about another profile; a store of one line of history keeps the
    // short form.
    let several = kbuild::generation::profiles(&store).map_or(true, |p| p.len() > 1);
    for (p, n) in &report.generations_removed {
        if p == kbuild::generation::DEFAULT_PROFILE && !several {
            term.status(removed, &format!("generation {n}"));
        } else {
            term.status(removed, &format!("generation {n} of profile `{p}`"));
        }
    }
    for o in &report.objects_removed {
        term.status(deleted, o.as_str());
    }
    for r in &report.roots_forgotten {
        term.status(
            forgot,
            &format!(
                "root `{}` (gone, or managed from another store)",
                r.display()
            ),
        );
    }
    let n = |count: usize, one: &str, many: &str| {
        format!("{count} {}", if count == 1 { one } else { many })
    };
    let (verb, freed) = if args.dry_run {
        (
            "would be removed",
            "would be freed (nothing was removed: --dry-run)",
        )
    } else {
        ("removed", "freed")
    };
    outln!(
        "{}, {} and {} {verb}, {} {freed}",
        n(
            report.generations_removed.len(),
            "generation",
            "generations"
        ),
        n(report.objects_removed.len(), "object", "objects"),
        n(report.temp_removed, "temporary entry", "temporary entries"),
        super::show::human_bytes(report.bytes_freed)
    );
    if args.dry_run {
        return Ok(());
    }
    if report.archives_kept == 0 && report.archives_removed > 0 {
        outln!("0 input archives kept for offline builds (builds fetch them again)");
    } else if report.archives_kept > 0 {
        outln!(
            "{} kept for offline builds ({}, pinned by the remaining generations; `kbuild gc --drop-archives` deletes them)",
            n(report.archives_kept, "input archive", "input archives"),
            super::show::human_bytes(report.archive_bytes)
        );
    }
    Ok(())
}

fn gc_json(r: &kbuild::gc::Report, dry_run: bool) -> super::json::Gc {
    super::json::Gc {
        version: super::json::VERSION,
        dry_run,
        generations_removed: r
            .generations_removed
            .iter()
            .map(|(profile, generation)| super::json::Removed {
                profile: profile.clone(),
                generation: *generation,
            })
            .collect(),
        objects_removed: r.objects_removed.iter().map(|o| o.to_string()).collect(),
        temporary_entries_removed: r.temp_removed,
        bytes_freed: r.bytes_freed,
        roots_forgotten: r
            .roots_forgotten
            .iter()
            .map(|p| p.display().to_string())
            .collect(),
        archives_kept: r.archives_kept,
        archive_bytes: r.archive_bytes,
        archives_removed: r.archives_removed,
    }
}

/// Verifies the store, and with an explicit `--root`, the root's links.
pub fn run_verify(
    ctx: &Context,
    root: Option<&Root>,
    args: VerifyArgs,
    term: &Terminal,
) -> anyhow::Result<()> {
    let store = open(ctx)?;
    if args.repair {
        store
            .require_writable_layout()
            .context("cannot repair the store")?;
    }
    // Shared, like a build: gc cannot delete objects while they are being checked. Repairing
    // deletes objects, so it excludes builds as gc does.
    let mode = if args.repair {
        kbuild::store::LockMode::Exclusive
    } else {
        kbuild::store::LockMode::Shared
    };
    let _lock = store.lock(mode, term)?;
    let started = std::time::Instant::now();
    let report = kbuild::store::verify::verify(&store).context("cannot verify the store")?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let mut found = Vec::new();
    term.status(
        "Verified",
        &format!(
            "{} objects, {:.1} MiB in {:.2}s ({:.2} GB/s)",
            report.objects,
            report.bytes as f64 / (1 << 20) as f64,
            secs,
            report.bytes as f64 / secs / 1e9
        ),
    );
    let mut problems = 0;
    // Without `--repair`, every store problem names the command that repairs it; with it,
    // what the repair did follows.
    let fix = if args.repair {
        ""
    } else {
        " (`kbuild verify --repair` repairs it)"
    };
    for c in &report.corrupt {
        if args.json {
            found.push(super::json::Problem::Corrupt {
                object: c.path.to_string(),
                problem: c.problem.clone(),
            });
        } else {
            outln!("corrupt  {}: {}{fix}", c.path, c.problem);
        }
        problems += 1;
    }
    // Push cache entries: compressing each object again is the only proof an entry is right.
    let started = std::time::Instant::now();
    let cache = kbuild::registry::cache::check(&store).context("cannot check the push cache")?;
    if cache.entries > 0 || !cache.bad.is_empty() {
        term.status(
            "Checked",
            &format!(
                "{} push cache {} ({:.1} MiB compressed again in {:.2}s)",
                cache.entries,
                if cache.entries == 1 {
                    "entry"
                } else {
                    "entries"
                },
                cache.bytes as f64 / (1 << 20) as f64,
                started.elapsed().as_secs_f64()
            ),
        );
    }
    let cache_fix = if args.repair {
        ""
    } else {
        " (`kbuild verify --repair` drops it)"
    };
    for b in &cache.bad {
        if args.json {
            found.push(super::json::Problem::PushCache {
                entry: b.path.display().to_string(),
                problem: b.problem.clone(),
            });
        } else {
            outln!("cache    {}: {}{cache_fix}", b.path.display(), b.problem);
        }
        problems += 1;
    }
    if args.repair && !cache.bad.is_empty() {
        kbuild::registry::cache::drop_entries(&cache.bad, |b| {
            term.status(
                "Dropped",
                &format!(
                    "{} (the next push compresses its object again)",
                    b.path.display()
                ),
            );
        })
        .context("cannot drop the push cache entries")?;
        problems -= cache.bad.len();
    }
    // Generations whose rootfs is gone can no longer be switched to.
    let missing = missing_rootfs(&store)?;
    for g in &missing {
        if args.json {
            found.push(super::json::Problem::Missing {
                generation: g.number,
                rootfs: g.rootfs.to_string(),
            });
        } else {
            outln!(
                "missing  generation {}: rootfs {} is not in the store{fix}",
                g.number,
                g.rootfs
            );
        }
        problems += 1;
    }
    let mut left = 0;
    let mut failed = Vec::new();
    if args.repair && (!report.corrupt.is_empty() || !missing.is_empty()) {
        let overrides: std::collections::BTreeMap<String, String> =
            args.overrides.into_iter().collect();
        let mut rebuild =
            |g: &kbuild::generation::Generation,
             damaged: &std::collections::BTreeSet<kbuild::store::StorePath>| {
                kbuild::build::rebuild(ctx, &store, g, damaged, &overrides, term)
                    .map(|changes| [changes.replaced, changes.added].concat())
                    .map_err(|e| {
                        anyhow::Error::from(e)
                            .chain()
                            .map(|c| c.to_string())
                            .collect::<Vec<_>>()
                            .join(": ")
                    })
            };
        let roots_use = kbuild::activate::in_use(&store)
            .context("cannot tell what the store's roots use")?
            .objects;
        let done = kbuild::store::verify::repair(&store, &report.corrupt, &roots_use, &mut rebuild)
            .context("cannot repair the store")?;
        for p in &done.permissions {
            term.status("Repaired", &format!("{p} (read-only again)"));
        }
        for (p, n) in &done.replaced {
            term.status(
                "Replaced",
                &format!("{p} (by a good copy rebuilt from generation {n}'s sources)"),
            );
        }
        for (p, n) in &done.recreated {
            term.status(
                "Rebuilt",
                &format!("{p} (it was missing; rebuilt from generation {n}'s sources)"),
            );
        }
        for p in &done.deleted {
            term.status(
                "Deleted",
                &format!("{p} (damaged, and no generation uses it)"),
            );
        }
        for (n, why) in &done.failed {
            outln!("failed   generation {n}: cannot rebuild its damaged objects: {why}");
        }

        // Only what verifies now counts as repaired.
        let after = kbuild::store::verify::verify(&store).context("cannot verify the store")?;
        for c in &after.corrupt {
            outln!("broken   {}: {} (left in place)", c.path, c.problem);
        }
        let still_missing = missing_rootfs(&store)?;
        for g in &still_missing {
            outln!(
                "broken   generation {}: rootfs {} is still not in the store",
                g.number,
                g.rootfs
            );
        }
        left = after.corrupt.len() + still_missing.len();
        // The generations still broken: those needing an object left damaged or missing.
        let broken: std::collections::BTreeSet<_> =
            after.corrupt.iter().map(|c| c.path.clone()).collect();
        for g in kbuild::generation::list_all(&store)? {
            let needs = kbuild::store::verify::closure(&store, &g.rootfs)?;
            if !store.contains(&g.rootfs) || needs.iter().any(|p| broken.contains(p)) {
                failed.push((g.profile, g.number));
            }
        }
        problems -= report.corrupt.len() + missing.len();
    }
    if let Some(root) = root {
        // First: a store that moved leaves every link dangling, and one switch mends them all.
        let moved = kbuild::activate::moved_store(&store, root).map(|d| d.to_string());
        let drift = kbuild::activate::drift(&store, root).context("cannot inspect the root")?;
        for d in moved.into_iter().chain(drift.iter().map(|d| d.to_string())) {
            if args.json {
                found.push(super::json::Problem::Drift {
                    root: root.dir().display().to_string(),
                    problem: d,
                });
            } else {
                outln!("drift    {}: {d}", root.dir().display());
            }
            problems += 1;
        }
    }
    if args.json {
        super::json::print(&super::json::Verify {
            version: super::json::VERSION,
            ok: problems == 0,
            objects: report.objects,
            bytes: report.bytes,
            problems: found,
        });
    }
    if left > 0 {
        let mut help = "make the generation's inputs readable again (at their locked URLs, or \
                        with `kbuild verify --repair --override-input NAME=URL`) and run `kbuild \
                        verify --repair` again"
            .to_owned();
        for (p, n) in &failed {
            help.push_str(&format!(
                "; if generation {n}{} cannot be rebuilt (its recipes changed since): {}",
                of_profile(p),
                drop_generation(&store, p, *n)?
            ));
        }
        return Err(kbuild::store::StoreError::Unrepaired { count: left, help }.into());
    }
    if problems > 0 {
        let store_problems = !args.repair
            && (!report.corrupt.is_empty() || !missing.is_empty() || !cache.bad.is_empty());
        if store_problems {
            return Err(VerifyFailed { problems }.into());
        }
        anyhow::bail!("verification found {problems} problem(s)");
    }
    if !args.json {
        outln!("ok");
    }
    Ok(())
}

/// The commands that drop generation `n` (whose damaged objects cannot be rebuilt) so that
/// `kbuild verify --repair` can delete them: roots on it switch away first; gc drops it once
/// a newer generation exists (`--keep` counts the newer ones).
fn drop_generation(store: &Store, profile: &str, n: u64) -> anyhow::Result<String> {
    let newer = kbuild::generation::list(store, profile)?
        .iter()
        .filter(|g| g.number > n)
        .count();
    let mut steps = Vec::new();
    if newer == 0 {
        steps.push("build a newer generation first (`kbuild build RECIPE`)".to_owned());
    }
    for r in kbuild::activate::roots_on(store, profile, n) {
        steps.push(format!(
            "switch root `{}` away from it (`kbuild switch --root {}` goes to the newest)",
            r.display(),
            kbuild::unit_name::shell_quote(&r.display().to_string())
        ));
    }
    let only = if profile == kbuild::generation::DEFAULT_PROFILE {
        String::new()
    } else {
        format!(" --profile {profile}")
    };
    steps.push(format!(
        "`kbuild gc --keep {}{only}` drops it (with the older generations no root is on), then `kbuild verify --repair`",
        newer.max(1)
    ));
    Ok(steps.join(", then "))
}

/// " of profile `P`" for a profile other than `default` (whose messages are as before).
pub fn of_profile(profile: &str) -> String {
    if profile == kbuild::generation::DEFAULT_PROFILE {
        String::new()
    } else {
        format!(" of profile `{profile}`")
    }
}

/// `verify` found damaged or missing objects (and maybe drift): its help names the repair.
#[derive(Debug, thiserror::Error)]
#[error("verification found {problems} problem(s)")]
pub struct VerifyFailed {
    problems: usize,
}

/// Generations whose rootfs is not in the store.
fn missing_rootfs(store: &Store) -> anyhow::Result<Vec<kbuild::generation::Generation>> {
    Ok(kbuild::generation::list_all(store)?
        .into_iter()
        .filter(|g| !store.contains(&g.rootfs))
        .collect())
}

pub fn run_diff(ctx: &Context, root: &Root, args: DiffArgs) -> anyhow::Result<()> {
    let store = open(ctx)?;
    if let Some(h) = &args.profile.host {
        super::check_host(ctx, &store, h)?;
    }
    let profile = args.profile.resolve(&store, root);
    // Without A, A is the root's active generation: of another profile than the one named,
    // that is a move between profiles, which a diff of one profile cannot show (a switch's
    // dry run does).
    if args.from.is_none()
        && let Some((p, a)) = kbuild::activate::active_generation(&store, root)
        && p != profile
    {
        return Err(super::Refused {
            message: format!(
                "root `{}` is on generation {a}{}, not on a generation of profile `{profile}`: `diff` compares two generations of one profile",
                root.dir().display(),
                of_profile(&p),
            ),
            help: format!(
                "`kbuild switch --profile {profile} --root {} --dry-run` shows what moving the root to `{profile}` changes; `kbuild diff A B --profile {profile}` compares two of its generations",
                root.dir().display(),
            ),
        }
        .into());
    }
    let to = match args.to {
        Some(n) => n,
        None => kbuild::activate::newest(&store, &profile)?,
    };
    let from = match args.from {
        Some(n) => n,
        None => {
            match kbuild::activate::active_generation(&store, root).filter(|(p, _)| *p == profile) {
                Some((_, a)) => a,
                None => kbuild::generation::list(&store, &profile)?
                    .iter()
                    .map(|g| g.number)
                    .filter(|n| *n < to)
                    .max()
                    .ok_or_else(|| {
                        anyhow::anyhow!("there is only one generation; name two to compare")
                    })?,
            }
        }
    };
    let diff =
        kbuild::diff::diff(&store, &profile, from, to).context("cannot compare generations")?;
    if args.json {
        super::json::print(&super::json::Diff::new(&diff));
    } else {
        out!("{diff}");
    }
    if args.exit_code && !(diff.changes.is_empty() && diff.units.is_empty()) {
        return Err(super::Quiet(1).into());
    }
    Ok(())
}
