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

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    let store = Store::open(&ctx.store_dir)
        .with_context(|| format!("cannot open store `{}`", ctx.store_dir.display()))?;
    let gens = kbuild::generation::list(&store).context("cannot list generations")?;
    let store_dir = std::path::absolute(store.dir()).unwrap_or_else(|_| store.dir().to_owned());
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
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if gens.is_empty() {
        eprintln!("no generations yet; run `kbuild build master`");
        return Ok(());
    }
    println!("{:>4}  {:<20}  {:<16}  ROOTFS", "GEN", "CREATED", "RECIPES");
    for g in &gens {
        println!(
            "{:>4}  {:<20}  {:<16}  {}",
            g.number,
            g.created,
            g.recipes.join(" "),
            store_dir.join(g.rootfs.as_str()).display()
        );
    }
    Ok(())
}
