//! `kbuild export`, `import`, `push` and `pull`: thin calls into `kbuild::registry`.

use std::path::PathBuf;

use anyhow::Context as _;
use kbuild::build::Context;
use kbuild::generation::Recorded;
use kbuild::registry::{self, Reference, RemoteOptions, Transfer};
use kbuild::store::Store;

use super::Terminal;
use super::show::human_bytes;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Writes an OCI image layout (oci-layout, index.json, blobs/sha256/…): \
the generation's record and one zstd blob per store object its rootfs needs (format: \
docs/registry.md). The same generation gives the same manifest digest from any store. \
The layout is written as DIR.kbuild-tmp and renamed to DIR when complete, so DIR never \
holds half an export; an interrupted export's DIR.kbuild-tmp is reused by the next one. \
Prints the manifest digest on stdout.

Examples:
  kbuild export --output /media/usb/m1-3 3 --host m1
  skopeo copy oci:/media/usb/m1-3 docker://registry.example/kbuild/m1:m1-3"
)]
pub struct ExportArgs {
    /// The generation number [default: the root's, else the profile's newest]
    #[arg(value_name = "GENERATION")]
    generation: Option<u64>,
    /// Directory to write the layout into (created; must be new or empty)
    #[arg(long, short, value_name = "DIR")]
    output: PathBuf,
    #[command(flatten)]
    profile: super::ProfileArgs,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Checks every object against its name before it becomes visible in \
the store, rebuilds the rootfs from its objects, then records the generation in the profile \
it was exported from (or --profile). Switch, rollback and verify then work with no network \
and no recipes. Prints the rootfs store path on stdout.

Examples:
  kbuild import /media/usb/m1-3
  kbuild import /media/usb/m1-3 --profile m1-staging"
)]
pub struct ImportArgs {
    /// The OCI layout directory (from `kbuild export` or `skopeo copy … oci:DIR`; the
    /// directory itself, without `oci:`)
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Record the generation in this profile [default: the one it was exported from]
    #[arg(long, value_name = "NAME", value_parser = super::parse_profile)]
    profile: Option<String>,
}

/// Options shared by push and pull.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Speak plain HTTP to the registry (never without this flag)
    #[arg(long)]
    plain_http: bool,
    /// Trust the CA certificates in this PEM file besides the system's
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Credentials file, with the credential helpers it names [default: $REGISTRY_AUTH_FILE,
    /// $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json,
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json]
    #[arg(long, value_name = "FILE")]
    authfile: Option<PathBuf>,
}

impl RemoteArgs {
    fn options(&self, ctx: &Context) -> RemoteOptions {
        RemoteOptions {
            offline: ctx.offline,
            plain_http: self.plain_http,
            ca_file: self.ca_file.clone(),
            authfile: self.authfile.clone(),
        }
    }
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "REF is host[:port]/repository[:tag|@digest]; without a tag the \
generation is tagged <profile>-<generation>. Only blobs the registry lacks are uploaded. \
Prints REF@sha256:… on stdout, and on stderr how many blobs were uploaded and how many the \
registry had.

Examples:
  kbuild push registry.example/kbuild/masters --host m1
  kbuild push 2 127.0.0.1:5000/kbuild/masters:candidate --plain-http"
)]
pub struct PushArgs {
    /// [GENERATION] REF: the generation number [default: the root's, else the profile's
    /// newest], then host[:port]/repository[:tag|@digest]
    #[arg(value_name = "ARGS", num_args = 1..=2, required = true)]
    args: Vec<String>,
    #[command(flatten)]
    profile: super::ProfileArgs,
    #[command(flatten)]
    remote: RemoteArgs,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Downloads only the objects the store lacks, checks each against its \
name, rebuilds the rootfs, then records the generation in the profile it was pushed from (or \
--profile); `kbuild switch` then works offline. Each blob is decoded and checked as it \
arrives; an interrupted pull keeps the objects that arrived whole and downloads only the \
others when run again. Prints REF@sha256:… on stdout.

Examples:
  kbuild pull registry.example/kbuild/masters:m1-3
  kbuild pull 127.0.0.1:5000/kbuild/masters:m1-3 --plain-http --profile m1"
)]
pub struct PullArgs {
    /// host[:port]/repository[:tag|@digest], without `docker://` or `https://`
    #[arg(value_name = "REF")]
    reference: String,
    /// Record the generation in this profile [default: the one it was pushed from]
    #[arg(long, value_name = "NAME", value_parser = super::parse_profile)]
    profile: Option<String>,
    #[command(flatten)]
    remote: RemoteArgs,
}

fn open_existing(ctx: &Context) -> anyhow::Result<Store> {
    Store::open_existing(&ctx.store_dir)
        .with_context(|| format!("cannot open store `{}`", ctx.store_dir.display()))
}

fn recorded(profile: &str, r: Recorded) -> String {
    match r {
        Recorded::New(n) => format!("profile {profile}, generation {n}"),
        Recorded::Unchanged(n) => {
            format!("profile {profile}, generation {n} (unchanged: it was the newest already)")
        }
    }
}

fn blobs(n: usize) -> &'static str {
    if n == 1 { "blob" } else { "blobs" }
}

pub fn run_export(
    ctx: &Context,
    root: &kbuild::activate::Root,
    args: ExportArgs,
    term: &Terminal,
) -> anyhow::Result<()> {
    let store = open_existing(ctx)?;
    if let Some(h) = &args.profile.host {
        super::check_host(ctx, &store, h)?;
    }
    let profile = args.profile.resolve(&store, root);
    let g = super::show::pick(&store, root, &profile, args.generation)?;
    let e = registry::export(&store, &g, &args.output, term).with_context(|| {
        format!(
            "cannot export generation {} of profile `{profile}` to `{}`",
            g.number,
            args.output.display()
        )
    })?;
    term.status(
        "Exported",
        &format!(
            "generation {} of profile {profile} as `{}` ({} objects, {}) to `{}`",
            g.number,
            e.tag,
            e.objects,
            human_bytes(e.bytes),
            args.output.display()
        ),
    );
    outln!("{}", e.digest);
    Ok(())
}

pub fn run_import(ctx: &Context, args: ImportArgs, term: &Terminal) -> anyhow::Result<()> {
    let (store, i) = registry::import(&ctx.store_dir, &args.dir, args.profile.as_deref(), term)
        .with_context(|| format!("cannot import `{}`", args.dir.display()))?;
    term.status(
        "Imported",
        &format!(
            "{} new objects, {} already in the store; {}",
            i.added,
            i.present,
            recorded(&i.profile, i.recorded)
        ),
    );
    outln!(
        "{}",
        store.canonical_dir().join(i.rootfs.as_str()).display()
    );
    Ok(())
}

pub fn run_push(
    ctx: &Context,
    root: &kbuild::activate::Root,
    args: PushArgs,
    term: &Terminal,
) -> anyhow::Result<()> {
    let (number, reference) = match args.args.as_slice() {
        [r] => (None, r),
        [n, r] => {
            let n = n.parse::<u64>().map_err(|_| super::Refused {
                message: format!("`{n}` is not a generation number"),
                help: "write `kbuild push [GENERATION] REF`, e.g. `kbuild push 3 registry.example/kbuild/masters`".to_owned(),
            })?;
            (Some(n), r)
        }
        _ => unreachable!("clap takes one or two"),
    };
    let reference = Reference::parse(reference)?;
    let store = open_existing(ctx)?;
    if let Some(h) = &args.profile.host {
        super::check_host(ctx, &store, h)?;
    }
    let profile = args.profile.resolve(&store, root);
    let g = super::show::pick(&store, root, &profile, number)?;
    let reference = reference.or_tag(&registry::default_tag(&g));
    let report = registry::remote::push(&store, &g, &reference, &args.remote.options(ctx), term)
        .with_context(|| {
            format!(
                "cannot push generation {} of profile `{profile}` to `{reference}`",
                g.number
            )
        })?;
    let t: Transfer = report.transfer;
    let mounted = if t.mounted_blobs > 0 {
        format!(", {} mounted from other repositories", t.mounted_blobs)
    } else {
        String::new()
    };
    errln!(
        "uploaded {} {} ({}), {} already in the registry{mounted}",
        t.sent_blobs,
        blobs(t.sent_blobs),
        human_bytes(t.sent_bytes),
        t.present_blobs
    );
    let mut name = report.reference.clone();
    name.digest = None;
    outln!("{name}@{}", report.digest);
    Ok(())
}

pub fn run_pull(ctx: &Context, args: PullArgs, term: &Terminal) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.reference)?;
    let report = registry::remote::pull(
        &ctx.store_dir,
        &reference,
        args.profile.as_deref(),
        &args.remote.options(ctx),
        term,
    )
    .with_context(|| format!("cannot pull `{reference}`"))?;
    let t = report.transfer;
    let resumed = if report.resumed > 0 {
        format!(" ({} staged by an earlier pull)", report.resumed)
    } else {
        String::new()
    };
    errln!(
        "downloaded {} {} ({}){resumed}, {} already in the store; {}",
        t.sent_blobs,
        blobs(t.sent_blobs),
        human_bytes(t.sent_bytes),
        t.present_blobs,
        recorded(&report.imported.profile, report.imported.recorded)
    );
    let mut name = reference.clone();
    name.digest = None;
    outln!("{name}@{}", report.digest);
    Ok(())
}
