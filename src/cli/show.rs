//! `kbuild show`.

use anyhow::{Context as _, bail};
use kbuild::build::Context;
use kbuild::generation::{self, Generation};
use kbuild::store::Store;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Without GENERATION: the generation the root (`--root`) is on, else \
the newest of the profile. Each file's origin is where the recipes took it from: `input NAME \
member PATH`, `template PATH`, `literal text`, `[Install] link of UNIT`; generations built \
before kbuild recorded origins say `unknown (built before kbuild recorded origins)`.
`--json` prints every field (schema: docs/json.md, section \"show\").

Examples:
  kbuild show                      # the root's generation, or the newest
  kbuild show 3 --host m1          # generation 3 of host m1's profile
  kbuild show --json | jq '.files[] | select(.kind == \"executable\") | .path'"
)]
pub struct Args {
    /// The generation number [default: the root's, else the profile's newest]
    #[arg(value_name = "GENERATION")]
    generation: Option<u64>,
    /// Print JSON (schema: docs/json.md, section "show")
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    profile: super::ProfileArgs,
}

/// What `show` prints for an entry with no recorded origin.
const UNKNOWN: &str = "unknown (built before kbuild recorded origins)";

pub use kbuild::observe::human_bytes;

pub fn run(ctx: &Context, root: &kbuild::activate::Root, args: Args) -> anyhow::Result<()> {
    if !ctx.store_dir.exists() {
        bail!(
            "no generations yet: there is no store at `{}`\nhelp: run `kbuild build master` first",
            ctx.store_dir.display()
        );
    }
    let store = Store::open_existing(&ctx.store_dir)
        .with_context(|| format!("cannot open store `{}`", ctx.store_dir.display()))?;
    let profile = args.profile.resolve(&store, root);
    let g = pick(&store, root, &profile, args.generation)?;
    let entries = generation::entries(&store, &g).map_err(|e| {
        let message = format!(
            "cannot read the rootfs of generation {} of profile `{profile}`",
            g.number
        );
        // The store error's own help when it has one (a damaged object), else the general one.
        match Store::help(&e) {
            Some(_) => anyhow::Error::new(e).context(message),
            None => anyhow::Error::new(e).context(super::Refused {
                message,
                help: "run `kbuild verify --repair`: it re-creates a generation's missing rootfs"
                    .to_owned(),
            }),
        }
    })?;
    let size = generation::closure_bytes(&store, &g).context("cannot measure the closure")?;
    let path = store.canonical_dir().join(g.rootfs.as_str());
    let origin = |e: &generation::Entry| match (&e.origin, e.kind) {
        (Some(o), _) => o.to_string(),
        (None, generation::EntryKind::Dir) => "directory".to_owned(),
        (None, _) => UNKNOWN.to_owned(),
    };
    if args.json {
        let files: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "path": e.path,
                    "kind": e.kind,
                    "size": e.size,
                    "target": e.target,
                    "origin": e.origin,
                    "origin_text": origin(e),
                })
            })
            .collect();
        let v = serde_json::json!({
            "version": 1,
            "profile": g.profile,
            "number": g.number,
            "created": g.created,
            "rootfs": path.display().to_string(),
            "size": size,
            "recipes": g.recipes,
            "variables": g.variables,
            "inputs": g.inputs,
            "origins_recorded": !g.origins.is_empty(),
            "files": files,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!("profile    {}", g.profile);
    outln!("generation {}", g.number);
    outln!("created    {}", g.created);
    outln!("size       {}", human_bytes(size));
    outln!("rootfs     {}", path.display());
    outln!("recipes    {}", g.recipes.join(" "));
    if g.variables.is_empty() {
        outln!("variables  (none)");
    } else {
        outln!("variables");
        for (k, v) in &g.variables {
            outln!("  {k}={v}");
        }
    }
    outln!("files");
    // Kind and size in columns, the path after them (paths vary too much in length to pad).
    let size_w = entries
        .iter()
        .map(|e| e.size.to_string().len())
        .max()
        .unwrap_or(0);
    for e in &entries {
        match e.kind {
            generation::EntryKind::Dir => {
                outln!("  {:<10}  {:>size_w$}  {}", "dir", "", shown_path(e))
            }
            k => outln!(
                "  {:<10}  {:>size_w$}  {}  from {}",
                k.as_str(),
                e.size,
                shown_path(e),
                origin(e)
            ),
        }
    }
    Ok(())
}

/// The path as the root will have it, a symlink with its target.
fn shown_path(e: &generation::Entry) -> String {
    match &e.target {
        Some(t) => format!("/{} -> {t}", e.path),
        None => format!("/{}", e.path),
    }
}

/// The generation asked for: `number`, else the root's (when in `profile`), else the newest.
pub(super) fn pick(
    store: &Store,
    root: &kbuild::activate::Root,
    profile: &str,
    number: Option<u64>,
) -> anyhow::Result<Generation> {
    let all = generation::list(store, profile).context("cannot list generations")?;
    let numbers: Vec<String> = all.iter().map(|g| g.number.to_string()).collect();
    let wanted = match number {
        Some(n) => n,
        None => match kbuild::activate::active_generation(store, root) {
            Some((p, n)) if p == profile => n,
            _ => match all.last() {
                Some(g) => g.number,
                None => bail!(
                    "profile `{profile}` has no generations\nhelp: run `kbuild generations --all` to see the profiles that have some, or `kbuild build master` to make one"
                ),
            },
        },
    };
    match all.into_iter().find(|g| g.number == wanted) {
        Some(g) => Ok(g),
        None if numbers.is_empty() => bail!(
            "profile `{profile}` has no generation {wanted}: it has none\nhelp: run `kbuild generations --all` to see the profiles that have some"
        ),
        None => bail!(
            "profile `{profile}` has no generation {wanted}; it has {}\nhelp: run `kbuild show {}` (or `kbuild generations`)",
            numbers.join(", "),
            numbers.last().expect("not empty")
        ),
    }
}
