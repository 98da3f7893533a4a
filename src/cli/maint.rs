//! `kbuild gc`, `kbuild verify` and `kbuild diff`.

use anyhow::Context as _;
use kbuild::activate::Root;
use kbuild::build::Context;
use kbuild::store::Store;

use super::Terminal;

#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// Keep only the newest N generations (the active one of every known root is always kept)
    #[arg(long, value_name = "N")]
    keep: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Delete the corrupt objects found, so that the next build re-creates them (a root whose
    /// active rootfs is removed resolves again once that same generation is rebuilt)
    #[arg(long)]
    repair: bool,
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// From this generation [default: the root's active one, else the one before the newest]
    #[arg(value_name = "A")]
    from: Option<u64>,
    /// To this generation [default: the newest]
    #[arg(value_name = "B")]
    to: Option<u64>,
}

fn open(ctx: &Context) -> anyhow::Result<Store> {
    Store::open_existing(&ctx.store_dir)
        .with_context(|| format!("cannot open store `{}`", ctx.store_dir.display()))
}

pub fn run_gc(ctx: &Context, args: GcArgs, term: &Terminal) -> anyhow::Result<()> {
    // No store yet: nothing to collect (never an error racing the first build).
    if Store::is_unused(&ctx.store_dir) {
        outln!(
            "nothing to collect: no store at `{}` yet",
            ctx.store_dir.display()
        );
        return Ok(());
    }
    let store = open(ctx)?;
    let report = kbuild::gc::gc(&store, args.keep, term).context("garbage collection failed")?;
    for n in &report.generations_removed {
        term.status("Removed", &format!("generation {n}"));
    }
    for o in &report.objects_removed {
        term.status("Deleted", o.as_str());
    }
    for r in &report.roots_forgotten {
        term.status(
            "Forgot",
            &format!(
                "root `{}` (gone, or managed from another store)",
                r.display()
            ),
        );
    }
    let n = |count: usize, one: &str, many: &str| {
        format!("{count} {}", if count == 1 { one } else { many })
    };
    outln!(
        "{}, {} and {} removed, {:.1} MiB freed",
        n(
            report.generations_removed.len(),
            "generation",
            "generations"
        ),
        n(report.objects_removed.len(), "object", "objects"),
        n(report.temp_removed, "temporary entry", "temporary entries"),
        report.bytes_freed as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// Verifies the store, and with an explicit `--root`, the root's links.
pub fn run_verify(
    ctx: &Context,
    root: Option<&Root>,
    args: VerifyArgs,
    term: &Terminal,
) -> anyhow::Result<()> {
    let store = open(ctx)?;
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
    for c in &report.corrupt {
        outln!("corrupt  {}: {}", c.path, c.problem);
        problems += 1;
    }
    // Generations whose rootfs is gone can no longer be switched to.
    for g in kbuild::generation::list(&store)? {
        if !store.contains(&g.rootfs) {
            outln!(
                "missing  generation {}: rootfs {} is not in the store",
                g.number,
                g.rootfs
            );
            problems += 1;
        }
    }
    if args.repair && !report.corrupt.is_empty() {
        for p in kbuild::store::verify::repair(&store, &report.corrupt)
            .context("cannot repair the store")?
        {
            term.status(
                "Repaired",
                &format!("{p} (removed objects are re-created by the next build)"),
            );
        }
        // What --repair fixed is no longer a problem; the next build completes the repair.
        problems -= report.corrupt.len();
    }
    if let Some(root) = root {
        // First: a store that moved leaves every link dangling, and one switch mends them all.
        if let Some(d) = kbuild::activate::moved_store(&store, root) {
            outln!("drift    {}: {d}", root.dir().display());
            problems += 1;
        }
        for d in kbuild::activate::drift(&store, root).context("cannot inspect the root")? {
            outln!("drift    {}: {d}", root.dir().display());
            problems += 1;
        }
    }
    if problems > 0 {
        anyhow::bail!("verification found {problems} problem(s)");
    }
    outln!("ok");
    Ok(())
}

pub fn run_diff(ctx: &Context, root: &Root, args: DiffArgs) -> anyhow::Result<()> {
    let store = open(ctx)?;
    let to = match args.to {
        Some(n) => n,
        None => kbuild::activate::newest(&store)?,
    };
    let from = match args.from {
        Some(n) => n,
        None => match kbuild::activate::active_generation(&store, root) {
            Some(a) => a,
            None => kbuild::generation::list(&store)?
                .iter()
                .map(|g| g.number)
                .filter(|n| *n < to)
                .max()
                .ok_or_else(|| {
                    anyhow::anyhow!("there is only one generation; name two to compare")
                })?,
        },
    };
    let diff = kbuild::diff::diff(&store, from, to).context("cannot compare generations")?;
    out!("{diff}");
    Ok(())
}
