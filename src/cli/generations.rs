//! `kbuild generations`.

use std::collections::BTreeMap;

use anyhow::Context as _;
use kbuild::build::Context;
use kbuild::generation::Generation;
use kbuild::store::Store;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Each profile is one line of history (a host's, or `default` for plain \
builds); below each generation, the variables in which it differs from the one before.
`--json` prints every field (schema: docs/json.md, section \"generations\")."
)]
pub struct Args {
    /// Print JSON (an array of generation records with their profile, rootfs path, whether
    /// the root is on it, and the variables changed from the one before)
    #[arg(long)]
    json: bool,
    /// Every profile, not only the root's (or the one named)
    #[arg(long, conflicts_with_all = ["profile", "host"])]
    all: bool,
    #[command(flatten)]
    profile: super::ProfileArgs,
}

/// The variables in which `g` differs from `before` (all of them for a first generation):
/// name → (old, new), `None` where the variable is absent.
pub fn changed(
    before: Option<&Generation>,
    g: &Generation,
) -> BTreeMap<String, (Option<String>, Option<String>)> {
    let empty = BTreeMap::new();
    let old = before.map_or(&empty, |b| &b.variables);
    old.keys()
        .chain(g.variables.keys())
        .filter(|k| old.get(*k) != g.variables.get(*k))
        .map(|k| {
            (
                k.clone(),
                (old.get(k).cloned(), g.variables.get(k).cloned()),
            )
        })
        .collect()
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
    if let Some(h) = &args.profile.host {
        super::check_host(ctx, &store, h)?;
    }
    let profiles = if args.all {
        kbuild::generation::profiles(&store).context("cannot list profiles")?
    } else {
        vec![args.profile.resolve(&store, root)]
    };
    let store_dir = store.canonical_dir();
    let active = kbuild::activate::active_generation(&store, root);
    let is_active = |g: &Generation| active.as_ref() == Some(&(g.profile.clone(), g.number));
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    for profile in &profiles {
        let gens = kbuild::generation::list(&store, profile).context("cannot list generations")?;
        if args.json {
            for (i, g) in gens.iter().enumerate() {
                let mut v = serde_json::to_value(g).expect("generation serializes");
                // Per-file origins are `kbuild show`'s: they would swamp this list.
                if let Some(o) = v.as_object_mut() {
                    o.remove("origins");
                }
                v["schema"] = "kbuild-generations-v2".into();
                v["profile"] = profile.as_str().into();
                v["path"] = store_dir
                    .join(g.rootfs.as_str())
                    .display()
                    .to_string()
                    .into();
                v["active"] = is_active(g).into();
                v["size"] = kbuild::generation::closure_bytes(&store, g)
                    .context("cannot measure a generation")?
                    .into();
                let before = i.checked_sub(1).map(|j| &gens[j]);
                v["previous"] = before.map(|b| b.number).into();
                v["changed"] = changed(before, g)
                    .into_iter()
                    .map(|(k, (old, new))| (k, serde_json::json!({"from": old, "to": new})))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
                rows.push(v);
            }
            continue;
        }
        if gens.is_empty() {
            continue;
        }
        // The default profile alone (a store that never used hosts) reads as it always did.
        if profile != kbuild::generation::DEFAULT_PROFILE || profiles.len() > 1 {
            lines.push(format!("profile {profile}"));
        }
        lines.push(format!(
            "{:>5}  {:<20}  {:>10}  {:<16}  ROOTFS",
            "GEN", "CREATED", "SIZE", "RECIPES"
        ));
        for (i, g) in gens.iter().enumerate() {
            let mark = if is_active(g) { "*" } else { " " };
            let size = kbuild::generation::closure_bytes(&store, g)
                .context("cannot measure a generation")?;
            lines.push(format!(
                "{mark}{:>4}  {:<20}  {:>10}  {:<16}  {}",
                g.number,
                g.created,
                super::show::human_bytes(size),
                g.recipes.join(" "),
                store_dir.join(g.rootfs.as_str()).display()
            ));
            if i == 0 {
                continue;
            }
            let diff = changed(Some(&gens[i - 1]), g);
            if !diff.is_empty() {
                let parts: Vec<String> = diff
                    .iter()
                    .map(|(k, (old, new))| {
                        format!(
                            "{k}={} (was {})",
                            new.as_deref().unwrap_or("<unset>"),
                            old.as_deref().unwrap_or("<unset>")
                        )
                    })
                    .collect();
                lines.push(format!("       changed: {}", parts.join(", ")));
            }
        }
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if lines.is_empty() {
        match profiles.as_slice() {
            [p] if p != kbuild::generation::DEFAULT_PROFILE => errln!(
                "no generations in profile `{p}` yet; run `kbuild build --host {p}` (or `kbuild generations --all`)"
            ),
            _ => {
                // A store of host profiles only: point at them, not at a plain build.
                let others: Vec<String> = kbuild::generation::profiles(&store)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| kbuild::generation::newest_number(&store, p).is_ok_and(|n| n > 0))
                    .collect();
                if others.is_empty() {
                    errln!("no generations yet; run `kbuild build master`")
                } else {
                    errln!(
                        "no generations in profile `default`; profiles with generations: {} (`kbuild generations --all`, or `--profile NAME`)",
                        others.join(", ")
                    )
                }
            }
        }
        return Ok(());
    }
    for l in lines {
        outln!("{l}");
    }
    Ok(())
}
