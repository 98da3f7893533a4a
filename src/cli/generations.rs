//! `kbuild generations`.

use anyhow::Context as _;
use kbuild::build::Context;
use kbuild::store::Store;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON (an array of generation records with their rootfs paths)
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, root: &kbuild::activate::Root, args: Args) -> anyhow::Result<()> {
    // A store that does not exist yet has no generations; it is not created just to say so.
    if !ctx.store_dir.exists() {
        if args.json {
            outln!("[]");
        } else {
            errln!(
                "no generations yet (no store at `{}`); run `kbuild build master`",
                ctx.store_dir.display()
            );
        }
        return Ok(());
    }
    let store = Store::open_existing(&ctx.store_dir)
        .with_context(|| format!("cannot open store `{}`", ctx.store_dir.display()))?;
    let gens = kbuild::generation::list(&store).context("cannot list generations")?;
    let store_dir = store.canonical_dir();
    let active = kbuild::activate::active_generation(&store, root);
    if args.json {
        let rows: Vec<serde_json::Value> = gens
            .iter()
            .map(|g| {
                let mut v = serde_json::to_value(g).expect("generation serializes");
                v["path"] = store_dir
                    .join(g.rootfs.as_str())
                    .display()
                    .to_string()
                    .into();
                v["active"] = (active == Some(g.number)).into();
                v
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if gens.is_empty() {
        errln!("no generations yet; run `kbuild build master`");
        return Ok(());
    }
    outln!("{:>5}  {:<20}  {:<16}  ROOTFS", "GEN", "CREATED", "RECIPES");
    for g in &gens {
        let mark = if active == Some(g.number) { "*" } else { " " };
        outln!(
            "{mark}{:>4}  {:<20}  {:<16}  {}",
            g.number,
            g.created,
            g.recipes.join(" "),
            store_dir.join(g.rootfs.as_str()).display()
        );
    }
    Ok(())
}
