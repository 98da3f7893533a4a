//! `kbuild inputs`: the recipes' inputs, and what an input archive holds.

use anyhow::Context as _;
use kbuild::build::Context;
use kbuild::unpack::MemberKind;

use super::Terminal;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  kbuild inputs
  kbuild inputs etcd-server --members
  kbuild inputs etcd-server --members | grep usr/bin/
  kbuild inputs kubernetes-server --members --offline \\
      --override-input kubernetes-server=file:///srv/mirror/kubernetes-server-linux-amd64.tar.gz

Without NAME: one line per input of the recipes: name, whether its archive is kept in the
store, pin, URL (mirrors after it). With --members: one line per member of the input's
archive: type (file, sparse, dir, symlink, hardlink, device, fifo, other), mode, size in
bytes, name, as a recipe's `member` names it (for a .deb, `./usr/bin/x` is `usr/bin/x`),
and a link's target. The archive is read from the store when kept there, else fetched (and
checked against its pin), as a build would.")]
pub struct Args {
    /// Show only this input
    #[arg(value_name = "NAME")]
    name: Option<String>,
    /// List the members of the input's archive (type, mode, size, name)
    #[arg(long, requires = "name")]
    members: bool,
    /// Fetch the input from another URL (a local copy, a mirror), as `kbuild build` does
    #[arg(long = "override-input", value_name = "NAME=URL", value_parser = super::build::parse_pair)]
    overrides: Vec<(String, String)>,
}

pub fn run(ctx: &Context, args: Args, term: &Terminal) -> anyhow::Result<()> {
    let name = match args.name {
        Some(n) if args.members => n,
        other => return list(ctx, other.as_deref()),
    };
    let overrides = args.overrides.into_iter().collect();
    let members = kbuild::inputs::members(ctx, &name, &overrides, term)
        .with_context(|| format!("cannot list the members of input `{name}`"))?;
    let width = members
        .iter()
        .map(|m| m.size.to_string().len())
        .max()
        .unwrap_or(1);
    for m in &members {
        let mode = m
            .mode
            .map_or_else(|| "????".to_owned(), |v| format!("{:04o}", v & 0o7777));
        let link = match &m.kind {
            MemberKind::Symlink(t) => format!(" -> {t}"),
            MemberKind::HardLink(t) => format!(" link to {t}"),
            _ => String::new(),
        };
        outln!(
            "{:<8} {mode} {:>width$} {}{link}",
            m.kind.label(),
            m.size,
            m.name
        );
    }
    Ok(())
}

fn list(ctx: &Context, only: Option<&str>) -> anyhow::Result<()> {
    let inputs = kbuild::inputs::list(ctx).context("cannot list the inputs")?;
    if let Some(n) = only
        && !inputs.iter().any(|i| i.name == n)
    {
        return Err(kbuild::build::BuildError::UnknownInput {
            name: n.to_owned(),
            known: inputs.iter().map(|i| i.name.clone()).collect(),
        })
        .context("cannot list the inputs");
    }
    let shown: Vec<_> = inputs
        .iter()
        .filter(|i| only.is_none_or(|n| n == i.name))
        .collect();
    let width = shown.iter().map(|i| i.name.len()).max().unwrap_or(4).max(4);
    // `sha256:<hex>`, as a recipe's `hash` would name it (minus SRI's base64).
    let pins: Vec<String> = shown
        .iter()
        .map(|i| {
            i.pin.as_ref().map_or_else(
                || "unpinned".to_owned(),
                |p| format!("{}:{}", p.algo(), p.hex()),
            )
        })
        .collect();
    let pin_width = pins.iter().map(String::len).max().unwrap_or(3).max(3);
    outln!(
        "{:<width$}  {:<8}  {:<pin_width$}  URL",
        "NAME",
        "STORE",
        "PIN"
    );
    for (i, pin) in shown.iter().zip(&pins) {
        let kept = if i.kept.is_some() { "kept" } else { "not kept" };
        outln!(
            "{:<width$}  {kept:<8}  {pin:<pin_width$}  {}",
            i.name,
            i.urls.join(" ")
        );
    }
    Ok(())
}
