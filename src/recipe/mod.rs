//! Recipes: TOML files in the recipes directory (format in `docs/recipes.md`).
//!
//! Loading parses each file with spans, validates names, paths and types once (so inner
//! code never re-checks raw strings), follows `imports` depth-first with cycle detection and
//! merges everything into one [`RecipeSet`]. Every error points at `file:line:column`.

pub mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use types::{TargetPath, VarType};

/// Where unit files go; targets below it are checked as systemd will read them.
pub const UNIT_PREFIX: &str = "/etc/systemd/system/";

/// A position in a recipe or template file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

impl Loc {
    pub(crate) fn at(file: &Path, text: &str, offset: usize) -> Loc {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Loc {
            file: file.to_owned(),
            line,
            column,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{loc}: {message}")]
    At {
        loc: Loc,
        message: String,
        help: Option<String>,
    },
    #[error("no recipe `{name}` in `{}`", dir.display())]
    Unknown {
        name: String,
        dir: PathBuf,
        available: Vec<String>,
    },
    #[error("recipes directory `{}` does not exist", dir.display())]
    NoDirectory { dir: PathBuf },
    #[error("there is no hosts file `{}`", path.display())]
    NoHostsFile { path: PathBuf },
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RecipeError {
    pub(crate) fn at(loc: Loc, message: impl Into<String>) -> RecipeError {
        RecipeError::At {
            loc,
            message: message.into(),
            help: None,
        }
    }

    pub(crate) fn with_help(self, h: impl Into<String>) -> RecipeError {
        match self {
            RecipeError::At { loc, message, .. } => RecipeError::At {
                loc,
                message,
                help: Some(h.into()),
            },
            other => other,
        }
    }

    pub fn help(&self) -> Option<String> {
        match self {
            RecipeError::At { help, .. } => help.clone(),
            RecipeError::Unknown { available, .. } if available.is_empty() => {
                Some("the recipes directory has no `*.toml` files; pass `--recipes DIR`".into())
            }
            RecipeError::Unknown { available, .. } => {
                Some(format!("available recipes: {}", available.join(", ")))
            }
            RecipeError::NoHostsFile { .. } => Some(
                "write one (the repository's `hosts.toml` describes the guide's three masters), or name it with `--hosts FILE` (env KBUILD_HOSTS); `kbuild build master` builds without one".into(),
            ),
            RecipeError::NoDirectory { .. } => Some(
                "run kbuild from the repository root, or pass `--recipes DIR` (env KBUILD_RECIPES)"
                    .into(),
            ),
            RecipeError::Read { .. } => None,
        }
    }
}

// ---- the file format, as serde sees it ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    #[allow(dead_code)] // documentation for readers of the recipe; shown by nothing yet
    description: Option<String>,
    #[serde(default)]
    imports: Vec<Spanned<String>>,
    #[serde(default)]
    prerequisites: Vec<Spanned<String>>,
    #[serde(default)]
    inputs: BTreeMap<Spanned<String>, Spanned<RawInput>>,
    #[serde(default)]
    variables: BTreeMap<Spanned<String>, Spanned<RawVariable>>,
    #[serde(default)]
    files: BTreeMap<Spanned<String>, Spanned<RawFile>>,
    /// Rules a build must satisfy (see [`crate::check`]).
    #[serde(default)]
    checks: Vec<Spanned<crate::check::Rule>>,
    /// Health checks of the recipe's services (see [`crate::health`]).
    #[serde(default)]
    health: Vec<Spanned<RawHealth>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    unit: Spanned<String>,
    http: Option<Spanned<String>>,
    status: Option<Spanned<i64>>,
    body: Option<Spanned<String>>,
    tcp: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    ca: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    interval: Option<Spanned<String>>,
    settle: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    url: Option<Spanned<String>>,
    #[serde(default)]
    mirrors: Vec<Spanned<String>>,
    sha256: Option<Spanned<String>>,
    sha512: Option<Spanned<String>>,
    /// An SRI pin, `sha512-<base64>` or `sha256-<base64>` (as npm publishes them).
    hash: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Str(String),
    Int(i64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    #[serde(rename = "type")]
    ty: Option<Spanned<String>>,
    default: Option<Spanned<Scalar>>,
    #[serde(default)]
    required: bool,
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    input: Option<Spanned<String>>,
    member: Option<Spanned<String>>,
    template: Option<Spanned<String>>,
    text: Option<Spanned<String>>,
    mode: Option<Spanned<Scalar>>,
    format: Option<Spanned<String>>,
    on_change: Option<Spanned<String>>,
}

// ---- the validated model ----

/// A fetched input: URLs tried in order (the first is the primary, the rest mirrors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputDecl {
    pub name: String,
    pub urls: Vec<String>,
    /// Pin written in the recipe itself (`sha256`, `sha512` or `hash`; the lock may pin it
    /// instead).
    pub pin: Option<crate::pin::Pin>,
    /// Where the recipe writes [`InputDecl::pin`], and with which key.
    pub pin_at: Option<PinAt>,
    pub origin: Origin,
}

/// Where a recipe writes an input's pin: a wrong one is fixed there, not with `kbuild update`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinAt {
    /// `sha256`, `sha512` or `hash` (SRI).
    pub key: &'static str,
    pub loc: Loc,
}

impl PinAt {
    /// `pin` as this key writes it: hex for `sha256`/`sha512`, SRI for `hash`.
    pub fn written(&self, pin: &crate::pin::Pin) -> String {
        if self.key == "hash" {
            pin.sri()
        } else {
            pin.hex().to_owned()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarDecl {
    pub name: String,
    pub ty: VarType,
    pub default: Option<String>,
    pub required: bool,
    pub description: Option<String>,
    pub origin: Origin,
}

/// Where the content of a rootfs file comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileSource {
    /// A member of an input's archive.
    Member { input: String, member: String },
    /// A minijinja template; `name` is its path as shown to users (recipes dir joined).
    Template { name: String, source: String },
    /// Literal text (also rendered, so it may use variables).
    Text(String),
}

/// Extra checks on a rendered file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// Anything.
    Text,
    /// A systemd `EnvironmentFile=`: `KEY="value"` lines whose quotes close on the same line.
    Env,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDecl {
    pub target: TargetPath,
    pub source: FileSource,
    /// The recipe's `mode`: `Some(true)` for 0555, `Some(false)` for 0444, `None` when absent
    /// (text and templates are then 0444, archive members keep the archive's x bits).
    pub mode: Option<bool>,
    pub format: FileFormat,
    /// For a service unit file: what a switch does when the unit or a file it reads
    /// changed (`on_change`; restart when absent).
    pub on_change: Option<OnChange>,
    pub origin: Origin,
}

/// What a switch does to a running service whose unit or inputs changed (recipe key
/// `on_change`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum OnChange {
    /// `systemctl restart` (the default).
    Restart,
    /// `systemctl reload`: the unit must have `ExecReload=`.
    Reload,
    /// Nothing: the service keeps running the old files until restarted by hand (NixOS's
    /// `restartIfChanged = false`).
    None,
}

/// Which recipe declared something, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub recipe: String,
    pub loc: Loc,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "recipe `{}` ({})", self.recipe, self.loc)
    }
}

/// Recipes loaded with all their imports and merged.
#[derive(Clone, Debug, Default)]
pub struct RecipeSet {
    /// The recipes asked for, in the order given.
    pub roots: Vec<String>,
    /// Every recipe loaded, in load order.
    pub loaded: Vec<String>,
    pub inputs: BTreeMap<String, InputDecl>,
    pub variables: BTreeMap<String, VarDecl>,
    pub files: BTreeMap<TargetPath, FileDecl>,
    /// Host paths that must exist at switch time; checked, never copied.
    pub prerequisites: BTreeSet<String>,
    /// The recipes' checks, each with where it is declared.
    pub checks: Vec<(crate::check::Rule, Loc)>,
    /// The recipes' health checks, in load order; their values are still templates.
    pub health: Vec<HealthDecl>,
}

/// A `[[health]]` entry of a recipe: a [`crate::health::Check`] whose URL, address or
/// command words are templates, rendered with the build's variables by [`render_health`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthDecl {
    pub check: crate::health::Check,
    /// Where its `http`, `tcp` or `command` value is written (errors of the rendered value
    /// point there).
    pub value: Loc,
    /// Where its `unit` is written.
    pub unit: Loc,
    /// Where its `ca`, `cert` and `key` are written, those given (errors of the rendered
    /// path point there).
    pub files: Vec<(&'static str, Loc)>,
}

/// Recipes and templates are small; anything bigger is a mistake or an attack.
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// Reads a recipe or template, refusing files over [`MAX_FILE_SIZE`].
fn read_limited(path: &Path) -> std::io::Result<String> {
    let meta = fs_err::metadata(path)?;
    // A FIFO or device would block or never end.
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "`{}` is not a regular file",
            path.display()
        )));
    }
    let len = meta.len();
    if len > MAX_FILE_SIZE {
        return Err(std::io::Error::other(format!(
            "`{}` is {len} bytes; recipes and templates are limited to {MAX_FILE_SIZE} bytes",
            path.display()
        )));
    }
    fs_err::read_to_string(path)
}

/// Names of the recipes available in `dir`, sorted.
pub fn available(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".toml").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// Loads `roots` and everything they import from `dir`.
pub fn load(dir: &Path, roots: &[String]) -> Result<RecipeSet, RecipeError> {
    let mut loader = Loader {
        dir,
        set: RecipeSet {
            roots: roots.to_vec(),
            ..RecipeSet::default()
        },
        stack: Vec::new(),
        done: BTreeSet::new(),
        prerequisite_origins: BTreeMap::new(),
    };
    if !dir.is_dir() {
        return Err(RecipeError::NoDirectory {
            dir: dir.to_owned(),
        });
    }
    for name in roots {
        if types::check_name(name, "recipe").is_err() || !dir.join(format!("{name}.toml")).is_file()
        {
            return Err(RecipeError::Unknown {
                name: name.clone(),
                dir: dir.to_owned(),
                available: available(dir),
            });
        }
        loader.visit(name, None)?;
    }
    loader.check_references()?;
    loader.check_prerequisites()?;
    Ok(loader.set)
}

struct Loader<'a> {
    dir: &'a Path,
    set: RecipeSet,
    /// Recipes being loaded (for cycle detection), with the import that led to each.
    stack: Vec<String>,
    done: BTreeSet<String>,
    /// Where each prerequisite was first declared (for errors naming both sides).
    prerequisite_origins: BTreeMap<String, Origin>,
}

/// A parsed recipe file, for turning spans into locations.
struct Source {
    name: String,
    path: PathBuf,
    text: String,
}

impl Source {
    fn loc(&self, span: Range<usize>) -> Loc {
        Loc::at(&self.path, &self.text, span.start)
    }

    fn origin(&self, span: Range<usize>) -> Origin {
        Origin {
            recipe: self.name.clone(),
            loc: self.loc(span),
        }
    }

    fn err<T>(&self, span: Range<usize>, message: impl Into<String>) -> Result<T, RecipeError> {
        Err(RecipeError::at(self.loc(span), message))
    }
}

impl Loader<'_> {
    fn visit(&mut self, name: &str, imported_at: Option<Loc>) -> Result<(), RecipeError> {
        if self.done.contains(name) {
            return Ok(());
        }
        if let Some(pos) = self.stack.iter().position(|n| n == name) {
            let mut cycle = self.stack[pos..].to_vec();
            cycle.push(name.to_owned());
            let loc = imported_at.expect("a cycle is always entered through an import");
            return Err(
                RecipeError::at(loc, format!("import cycle: {}", cycle.join(" → "))).with_help(
                    "remove one of these imports; shared parts belong in a recipe both import",
                ),
            );
        }
        let path = self.dir.join(format!("{name}.toml"));
        let text = read_limited(&path).map_err(|source| RecipeError::Read {
            path: path.clone(),
            source,
        })?;
        let src = Source {
            name: name.to_owned(),
            path,
            text,
        };
        let raw: RawRecipe = toml::from_str(&src.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let err = RecipeError::at(src.loc(span.clone()), e.message().trim_end().to_owned());
            if in_health_entry(&src.text, span.start) {
                err.with_help(HEALTH_HELP)
            } else {
                err
            }
        })?;

        self.stack.push(name.to_owned());
        for imp in &raw.imports {
            let loc = src.loc(imp.span());
            let target = imp.get_ref();
            if types::check_name(target, "recipe").is_err()
                || !self.dir.join(format!("{target}.toml")).is_file()
            {
                return Err(RecipeError::at(
                    loc,
                    format!(
                        "imports `{target}`, which is not a recipe in `{}`",
                        self.dir.display()
                    ),
                )
                .with_help(format!(
                    "available recipes: {}",
                    available(self.dir).join(", ")
                )));
            }
            self.visit(target, Some(loc))?;
        }
        self.stack.pop();

        self.merge(&src, raw)?;
        self.done.insert(name.to_owned());
        self.set.loaded.push(name.to_owned());
        Ok(())
    }

    fn merge(&mut self, src: &Source, raw: RawRecipe) -> Result<(), RecipeError> {
        for c in raw.checks {
            let loc = src.loc(c.span());
            if let Err(m) = c.get_ref().validate() {
                return src.err(c.span(), m);
            }
            self.set.checks.push((c.into_inner(), loc));
        }
        for h in raw.health {
            let decl = parse_health(src, h)?;
            self.set.health.push(decl);
        }
        for p in raw.prerequisites {
            let path = p.get_ref();
            if !path.starts_with('/') {
                return src.err(
                    p.span(),
                    format!("prerequisite `{path}` is not an absolute path"),
                );
            }
            if let Err(m) = types::check_components(path, "prerequisite") {
                return src.err(p.span(), m);
            }
            if path == "/etc/.kbuild" || path.starts_with("/etc/.kbuild/") {
                return src.err(
                    p.span(),
                    format!("prerequisite `{path}` is inside kbuild's own state directory"),
                );
            }
            self.prerequisite_origins
                .entry(path.clone())
                .or_insert_with(|| src.origin(p.span()));
            self.set.prerequisites.insert(path.clone());
        }
        for (name, input) in raw.inputs {
            let decl = parse_input(src, &name, input)?;
            insert_unique(&mut self.set.inputs, decl.name.clone(), decl, "input")?;
        }
        for (name, var) in raw.variables {
            let decl = parse_variable(src, &name, var)?;
            insert_unique(&mut self.set.variables, decl.name.clone(), decl, "variable")?;
        }
        for (target, file) in raw.files {
            let decl = self.parse_file(src, &target, file)?;
            if let Some(old) = self.set.files.get(&decl.target) {
                if old.source != decl.source
                    || old.mode != decl.mode
                    || old.format != decl.format
                    || old.on_change != decl.on_change
                {
                    return Err(RecipeError::at(
                        decl.origin.loc.clone(),
                        format!(
                            "target `{}` is given different contents by {} and {}",
                            decl.target, old.origin, decl.origin
                        ),
                    )
                    .with_help(
                        "declare the file in one recipe only, or make both declarations identical",
                    ));
                }
                continue;
            }
            self.set.files.insert(decl.target.clone(), decl);
        }
        Ok(())
    }

    fn parse_file(
        &self,
        src: &Source,
        target: &Spanned<String>,
        file: Spanned<RawFile>,
    ) -> Result<FileDecl, RecipeError> {
        let target_path =
            TargetPath::parse(target.get_ref()).or_else(|m| src.err(target.span(), m))?;
        let unit_rel = target_path.as_str().strip_prefix(UNIT_PREFIX);
        if let Some(rel) = unit_rel {
            crate::unit_name::check_unit_path(rel).map_err(|m| {
                RecipeError::at(src.loc(target.span()), m).with_help(
                    "rename the target in the recipe, then run `kbuild build` again (systemd.unit(5) names units)",
                )
            })?;
        }
        let span = file.span();
        let f = file.into_inner();
        let sources = [f.member.is_some(), f.template.is_some(), f.text.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            return src.err(
                span,
                format!("file `{target_path}` needs exactly one of `member` (with `input`), `template` or `text`"),
            );
        }
        let source = if let Some(member) = f.member {
            let Some(input) = &f.input else {
                return src.err(member.span(), "`member` needs `input = \"<input name>\"`");
            };
            let m = member.get_ref();
            if m.is_empty() || m.starts_with('/') || m.split('/').any(|c| c == "..") {
                return src.err(
                    member.span(),
                    format!("archive member `{m}` must be a relative path without `..`"),
                );
            }
            // Normalized as archive names are: `./a//b` is `a/b`.
            let normalized: Vec<&str> = m
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect();
            if normalized.is_empty() {
                return src.err(member.span(), format!("archive member `{m}` names no file"));
            }
            FileSource::Member {
                input: input.get_ref().clone(),
                member: normalized.join("/"),
            }
        } else if let Some(t) = f.template {
            let (name, source) = self.read_template(src, &t)?;
            FileSource::Template { name, source }
        } else {
            if let Some(i) = f.input {
                return src.err(i.span(), "`input` only makes sense with `member`");
            }
            FileSource::Text(f.text.map(Spanned::into_inner).unwrap_or_default())
        };
        if let (Some(i), FileSource::Template { .. }) = (&f.input, &source) {
            return src.err(i.span(), "`input` only makes sense with `member`");
        }
        let mode = match f.mode {
            None => None,
            Some(m) => Some({
                let mode = match m.get_ref() {
                    Scalar::Str(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
                    Scalar::Int(i) => u32::try_from(*i).ok(),
                };
                match mode {
                    Some(0o444) => false,
                    Some(0o555) => true,
                    _ => {
                        return Err(RecipeError::at(
                            src.loc(m.span()),
                            "`mode` must be \"0444\" or \"0555\"",
                        )
                        .with_help("store files are read-only; only the executable bit is kept"));
                    }
                }
            }),
        };
        let format = match f.format.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
            None | Some(("text", _)) => FileFormat::Text,
            Some(("env", _)) => FileFormat::Env,
            Some((other, span)) => {
                return src.err(
                    span,
                    format!("unknown format `{other}` (expected `text` or `env`)"),
                );
            }
        };
        let on_change = match f
            .on_change
            .as_ref()
            .map(|o| (o.get_ref().as_str(), o.span()))
        {
            None => None,
            Some((value, span)) => {
                let service = unit_rel.is_some_and(|r| !r.contains('/') && r.ends_with(".service"));
                if !service {
                    return src.err(
                        span,
                        format!("`on_change` applies to service units (`{UNIT_PREFIX}NAME.service`), not to `{target_path}`"),
                    );
                }
                Some(match value {
                    "restart" => OnChange::Restart,
                    "reload" => OnChange::Reload,
                    "none" => OnChange::None,
                    other => {
                        return src.err(
                            span,
                            format!("unknown on_change `{other}` (expected `restart`, `reload` or `none`)"),
                        );
                    }
                })
            }
        };
        Ok(FileDecl {
            target: target_path,
            source,
            mode,
            format,
            on_change,
            origin: src.origin(target.span()),
        })
    }

    /// Reads a template named relative to the recipe; it must stay inside the recipes dir.
    fn read_template(
        &self,
        src: &Source,
        t: &Spanned<String>,
    ) -> Result<(String, String), RecipeError> {
        let rel = t.get_ref();
        if rel.starts_with('/') || rel.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(RecipeError::at(
                src.loc(t.span()),
                format!(
                    "template `{rel}` must be a relative path inside the recipes directory, without `..`"
                ),
            ));
        }
        let path = self.dir.join(rel);
        // A symlink could still lead outside: compare canonical paths.
        let inside = match (path.canonicalize(), self.dir.canonicalize()) {
            (Ok(p), Ok(d)) => p.starts_with(d),
            _ => {
                return Err(RecipeError::at(
                    src.loc(t.span()),
                    format!("template `{}` does not exist", path.display()),
                ));
            }
        };
        if !inside {
            return src.err(
                t.span(),
                format!("template `{rel}` resolves outside the recipes directory"),
            );
        }
        let text = read_limited(&path).map_err(|e| {
            RecipeError::at(src.loc(t.span()), format!("cannot read template: {e}"))
        })?;
        Ok((path.display().to_string(), text))
    }

    /// Checks what can only be checked once every recipe is in: inputs named by files exist.
    fn check_references(&self) -> Result<(), RecipeError> {
        for f in self.set.files.values() {
            if let FileSource::Member { input, .. } = &f.source
                && !self.set.inputs.contains_key(input)
            {
                let known: Vec<&str> = self.set.inputs.keys().map(String::as_str).collect();
                return Err(RecipeError::at(
                        f.origin.loc.clone(),
                        format!("file `{}` takes a member of input `{input}`, which no loaded recipe declares", f.target),
                    )
                    .with_help(if known.is_empty() {
                        "declare it under `[inputs.NAME]`".to_owned()
                    } else {
                        format!("declared inputs: {}", known.join(", "))
                    }));
            }
        }
        Ok(())
    }
}

impl Loader<'_> {
    /// Checks that no file kbuild installs is also a prerequisite, or on the way to one.
    ///
    /// A prerequisite is a host file kbuild only checks (a token, a key). Installing the same
    /// path would put the secret into the world-readable store and, with `--adopt`, move the
    /// host's own file aside; a target above a prerequisite (or below one) cannot be both a
    /// file and a directory.
    fn check_prerequisites(&self) -> Result<(), RecipeError> {
        for (prerequisite, p_origin) in &self.prerequisite_origins {
            for f in self.set.files.values() {
                let target = f.target.as_str();
                let message = if target == prerequisite {
                    format!(
                        "target `{target}` is also a prerequisite (declared by {p_origin}); kbuild would copy the host's file into the world-readable store and move the original aside"
                    )
                } else if target.starts_with(&format!("{prerequisite}/")) {
                    format!(
                        "target `{target}` is inside prerequisite `{prerequisite}` (declared by {p_origin}), which must be a file, not a directory"
                    )
                } else if prerequisite.starts_with(&format!("{target}/")) {
                    format!(
                        "prerequisite `{prerequisite}` (declared by {p_origin}) is inside target `{target}`, a file kbuild installs, so it could never exist"
                    )
                } else {
                    continue;
                };
                return Err(RecipeError::at(f.origin.loc.clone(), message).with_help(
                    "a prerequisite is a host file kbuild only checks and never installs: remove the file or the prerequisite from the recipe, then run `kbuild build` again",
                ));
            }
        }
        Ok(())
    }
}

fn parse_input(
    src: &Source,
    name: &Spanned<String>,
    input: Spanned<RawInput>,
) -> Result<InputDecl, RecipeError> {
    types::check_name(name.get_ref(), "input").or_else(|m| src.err(name.span(), m))?;
    let span = input.span();
    let raw = input.into_inner();
    let Some(url) = raw.url else {
        return src.err(
            span,
            format!("input `{}` needs `url = \"…\"`", name.get_ref()),
        );
    };
    let mut urls = Vec::new();
    for u in std::iter::once(&url).chain(&raw.mirrors) {
        crate::fetch::check_url(u.get_ref()).or_else(|m| src.err(u.span(), m))?;
        urls.push(u.get_ref().clone());
    }
    use crate::pin::{Algo, Pin};
    // Exactly one pin form: two could disagree, and which one counts would be a guess.
    let forms = [
        ("sha256", raw.sha256),
        ("sha512", raw.sha512),
        ("hash", raw.hash),
    ];
    let mut given: Vec<(&str, Spanned<String>)> = forms
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    // In the file's order: the error points at the second one written.
    given.sort_by_key(|(_, v)| v.span().start);
    if let [(first, _), (second, s), ..] = given.as_slice() {
        return Err(RecipeError::at(
            src.loc(s.span()),
            format!(
                "input `{}` has both `{first}` and `{second}`; give one pin",
                name.get_ref()
            ),
        )
        .with_help(
            "keep the pin upstream publishes (`sha512 = \"…\"`, or `hash = \"sha512-…\"`) and delete the other, then run `kbuild build` again",
        ));
    }
    let (pin, pin_at) = match given.into_iter().next() {
        None => (None, None),
        Some((key, s)) => {
            let parsed = match key {
                "sha256" => Pin::from_hex(Algo::Sha256, s.get_ref()),
                "sha512" => Pin::from_hex(Algo::Sha512, s.get_ref()),
                _ => Pin::from_sri(s.get_ref()),
            };
            let at = PinAt {
                key,
                loc: src.loc(s.span()),
            };
            (Some(parsed.or_else(|m| src.err(s.span(), m))?), Some(at))
        }
    };
    Ok(InputDecl {
        name: name.get_ref().clone(),
        urls,
        pin,
        pin_at,
        origin: src.origin(name.span()),
    })
}

fn parse_variable(
    src: &Source,
    name: &Spanned<String>,
    var: Spanned<RawVariable>,
) -> Result<VarDecl, RecipeError> {
    let n = name.get_ref();
    if !n
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return src.err(
            name.span(),
            format!(
                "variable name `{n}` must be letters, digits and `_`, not starting with a digit"
            ),
        );
    }
    let raw = var.into_inner();
    let ty = match &raw.ty {
        None => VarType::String,
        Some(t) => VarType::parse(t.get_ref()).ok_or_else(|| {
            RecipeError::at(
                src.loc(t.span()),
                format!(
                    "unknown variable type `{}` (expected string, ip, cidr or port)",
                    t.get_ref()
                ),
            )
        })?,
    };
    let default = match raw.default {
        None => None,
        Some(d) => {
            let v = match d.get_ref() {
                Scalar::Str(s) => s.clone(),
                Scalar::Int(i) => i.to_string(),
            };
            ty.check(&v)
                .or_else(|m| src.err(d.span(), format!("default of `{n}`: {m}")))?;
            Some(v)
        }
    };
    if raw.required && default.is_some() {
        return src.err(
            name.span(),
            format!("variable `{n}` is `required` and has a `default`; keep one"),
        );
    }
    Ok(VarDecl {
        name: n.clone(),
        ty,
        default,
        required: raw.required,
        description: raw.description,
        origin: src.origin(name.span()),
    })
}

/// Something declared by a recipe, compared without regard to where it was declared.
trait Declared: Clone + PartialEq {
    fn origin_mut(&mut self) -> &mut Origin;
}

impl Declared for InputDecl {
    fn origin_mut(&mut self) -> &mut Origin {
        &mut self.origin
    }
}

impl Declared for VarDecl {
    fn origin_mut(&mut self) -> &mut Origin {
        &mut self.origin
    }
}

/// Inserts a declaration; the same name declared twice must be declared identically.
fn insert_unique<T: Declared>(
    map: &mut BTreeMap<String, T>,
    key: String,
    mut value: T,
    what: &str,
) -> Result<(), RecipeError> {
    if let Some(old) = map.get_mut(&key) {
        let new_origin = std::mem::replace(value.origin_mut(), old.origin_mut().clone());
        if *old != value {
            let old_origin = old.origin_mut().clone();
            return Err(RecipeError::at(
                new_origin.loc.clone(),
                format!("{what} `{key}` is declared differently by {old_origin} and {new_origin}"),
            )
            .with_help(format!("declare the {what} once, in a recipe both import")));
        }
        return Ok(());
    }
    map.insert(key, value);
    Ok(())
}

/// The help of every mistake in a `[[health]]` entry: what an entry holds.
const HEALTH_HELP: &str = "a `[[health]]` entry has `unit`, one of `http = \"URL\"` (with `status`, default 200, `body`, and for https:// `ca`, `cert` and `key`), `tcp = \"HOST:PORT\"` or `command = [\"/path\", \"arg\"…]`, and optional `timeout`, `interval`, `settle` (docs/recipes.md, \"Health checks\")";

/// Whether byte `at` of a recipe's text lies in one of its `[[health]]` entries (a recipe
/// that is not valid TOML has none): a value of the wrong type there, which serde reports
/// before [`parse_health`] sees the entry, gets the same help as the entry's other mistakes.
fn in_health_entry(text: &str, at: usize) -> bool {
    type Entry = BTreeMap<String, Spanned<toml::Value>>;
    #[derive(Deserialize)]
    struct Entries {
        #[serde(default)]
        health: Vec<Spanned<Entry>>,
    }
    // An entry's span is its `[[health]]` header (or its inline table): it reaches to the end
    // of its last value, which covers its keys too.
    toml::from_str::<Entries>(text).is_ok_and(|e| {
        e.health.iter().any(|h| {
            let end = h.get_ref().values().map(|v| v.span().end).max();
            (h.span().start..end.unwrap_or(0).max(h.span().end)).contains(&at)
        })
    })
}

/// Validates one `[[health]]` entry (values stay templates; see [`render_health`]).
fn parse_health(src: &Source, h: Spanned<RawHealth>) -> Result<HealthDecl, RecipeError> {
    use crate::health::{Check, Probe};
    let span = h.span();
    let h = h.into_inner();
    let help = HEALTH_HELP;
    let unit = h.unit.get_ref();
    let unit_at = src.loc(h.unit.span());
    if let Err(m) = crate::unit_name::check(unit) {
        return Err(RecipeError::at(
            src.loc(h.unit.span()),
            format!("health check unit `{unit}` is not a unit name: {m}"),
        )
        .with_help(
            "name the systemd unit the check belongs to, such as `kube-apiserver.service`",
        ));
    }
    if unit.contains("@.") {
        return Err(RecipeError::at(
            src.loc(h.unit.span()),
            format!("health check unit `{unit}` is a template: systemd never runs it as such"),
        )
        .with_help("name an instance of it, such as `etcd-member@a.service`"));
    }
    let given = [h.http.is_some(), h.tcp.is_some(), h.command.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(RecipeError::at(
            src.loc(span),
            "a health check needs exactly one of `http`, `tcp` and `command`",
        )
        .with_help(help));
    }
    if h.http.is_none()
        && let Some(k) = h
            .status
            .as_ref()
            .map(|s| s.span())
            .or(h.body.as_ref().map(|b| b.span()))
    {
        return Err(
            RecipeError::at(src.loc(k), "`status` and `body` belong to an `http` check")
                .with_help(help),
        );
    }
    let files: Vec<(&'static str, &Spanned<String>)> =
        [("ca", &h.ca), ("cert", &h.cert), ("key", &h.key)]
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.as_ref()?)))
            .collect();
    if h.http.is_none()
        && let Some((k, v)) = files.first()
    {
        return Err(RecipeError::at(
            src.loc(v.span()),
            format!("`{k}` belongs to an `http` check of an https:// URL"),
        )
        .with_help(help));
    }
    if let (Some(one), None) | (None, Some(one)) = (&h.cert, &h.key) {
        let (has, lacks) = if h.cert.is_some() {
            ("cert", "key")
        } else {
            ("key", "cert")
        };
        return Err(RecipeError::at(
            src.loc(one.span()),
            format!("`{has}` is given without `{lacks}`: a client certificate needs both"),
        )
        .with_help("set `cert` to the PEM client certificate and `key` to its private key (paths on the host, such as \"/etc/kubernetes/ssl/etcd-client.pem\" and \"/etc/kubernetes/ssl/etcd-client-key.pem\")"));
    }
    let files_at: Vec<(&'static str, Loc)> =
        files.iter().map(|(k, v)| (*k, src.loc(v.span()))).collect();
    let (probe, value) = if let Some(url) = h.http {
        let status = match h.status {
            None => 200,
            Some(s) => match u16::try_from(*s.get_ref()) {
                Ok(v) if (100..=599).contains(&v) => v,
                _ => {
                    return Err(RecipeError::at(
                        src.loc(s.span()),
                        format!(
                            "`status = {}` is not an HTTP status (100 to 599)",
                            s.get_ref()
                        ),
                    )
                    .with_help(help));
                }
            },
        };
        (
            Probe::Http {
                url: url.get_ref().clone(),
                status,
                body: h.body.map(Spanned::into_inner),
                tls: crate::health::TlsFiles {
                    ca: h.ca.map(Spanned::into_inner),
                    cert: h.cert.map(Spanned::into_inner),
                    key: h.key.map(Spanned::into_inner),
                },
            },
            src.loc(url.span()),
        )
    } else if let Some(address) = h.tcp {
        (
            Probe::Tcp {
                address: address.get_ref().clone(),
            },
            src.loc(address.span()),
        )
    } else {
        let argv = h.command.expect("one of the three is given");
        if argv.get_ref().is_empty() {
            return Err(RecipeError::at(src.loc(argv.span()), "`command` is empty").with_help(help));
        }
        (
            Probe::Command {
                argv: argv.get_ref().clone(),
            },
            src.loc(argv.span()),
        )
    };
    let time = |d: Option<Spanned<String>>, default, key: &str| -> Result<u64, RecipeError> {
        let Some(d) = d else {
            return Ok(u64::try_from(std::time::Duration::as_millis(&default)).unwrap_or(u64::MAX));
        };
        let parsed = crate::health::parse_duration(d.get_ref()).map_err(|m| {
            RecipeError::at(src.loc(d.span()), format!("`{key}`: {m}")).with_help(help)
        })?;
        if parsed.is_zero() && key != "settle" {
            return Err(
                RecipeError::at(src.loc(d.span()), format!("`{key}` must be more than 0"))
                    .with_help(help),
            );
        }
        if parsed > std::time::Duration::from_secs(3600) {
            return Err(
                RecipeError::at(src.loc(d.span()), format!("`{key}` is over an hour"))
                    .with_help(help),
            );
        }
        Ok(u64::try_from(parsed.as_millis()).unwrap_or(u64::MAX))
    };
    use crate::health::{DEFAULT_INTERVAL, DEFAULT_SETTLE, DEFAULT_TIMEOUT};
    // Where a time is written, or the entry when it is left to its default.
    let at = |d: &Option<Spanned<String>>| src.loc(d.as_ref().map_or(span.clone(), |d| d.span()));
    let (settle_at, interval_at) = (at(&h.settle), at(&h.interval));
    let check = Check {
        unit: unit.clone(),
        probe,
        timeout_ms: time(h.timeout, DEFAULT_TIMEOUT, "timeout")?,
        interval_ms: time(h.interval, DEFAULT_INTERVAL, "interval")?,
        settle_ms: time(h.settle, DEFAULT_SETTLE, "settle")?,
    };
    let h = |d: std::time::Duration| humantime::format_duration(d).to_string();
    if check.settle_ms >= check.timeout_ms {
        return Err(RecipeError::at(
            settle_at,
            format!(
                "`settle` ({}) is not shorter than `timeout` ({}): the unit could never settle in time",
                h(check.settle()),
                h(check.timeout())
            ),
        )
        .with_help(help));
    }
    if check.interval_ms > check.timeout_ms {
        return Err(RecipeError::at(
            interval_at,
            format!(
                "`interval` ({}) is longer than `timeout` ({}): the check would be tried once",
                h(check.interval()),
                h(check.timeout())
            ),
        )
        .with_help(help));
    }
    Ok(HealthDecl {
        check,
        value,
        unit: unit_at,
        files: files_at,
    })
}

/// The recipes' health checks with their values rendered from `vars` and checked: an HTTP
/// check's URL must be `http://` or `https://` with a host, a TCP check's address `HOST:PORT`,
/// a command's program an absolute path. Errors point at the value in the recipe.
pub fn render_health(
    set: &RecipeSet,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<crate::health::Check>, RecipeError> {
    use crate::health::Probe;
    let render = |d: &HealthDecl, text: &str| -> Result<String, RecipeError> {
        crate::render::render("health", text, vars).map_err(|e| {
            let message = match &e {
                crate::render::RenderError::Undefined { name, .. } => {
                    format!("undefined variable `{name}`")
                }
                crate::render::RenderError::Template { message, .. } => message.clone(),
                other => other.to_string(),
            };
            let err = RecipeError::at(
                d.value.clone(),
                format!("health check of `{}`: {message}", d.check.unit),
            );
            match e.help() {
                Some(h) => err.with_help(h),
                None => err,
            }
        })
    };
    let bad = |d: &HealthDecl, m: String, h: &str| {
        Err(RecipeError::at(
            d.value.clone(),
            format!("health check of `{}`: {m}", d.check.unit),
        )
        .with_help(h))
    };
    // The generation's own units (`/etc/systemd/system/NAME`): a check of another unit
    // could never be waited for by the gate kbuild runs on what it switched.
    let units: BTreeSet<&str> = set
        .files
        .keys()
        .filter_map(|p| p.as_str().strip_prefix("/etc/systemd/system/"))
        .filter(|n| !n.contains('/'))
        .collect();
    let mut out = Vec::new();
    for d in &set.health {
        let unit = d.check.unit.as_str();
        let template = unit
            .split_once('@')
            .and_then(|(p, rest)| Some(format!("{p}@.{}", rest.rsplit_once('.')?.1)));
        if !units.contains(unit) && !template.is_some_and(|t| units.contains(t.as_str())) {
            return Err(RecipeError::at(
                d.unit.clone(),
                format!("health check unit `{unit}` is not a unit of this generation"),
            )
            .with_help(
                "name a unit the recipes install in /etc/systemd/system (`[files.\"/etc/systemd/system/NAME\"]`); a host's own unit is not gated",
            ));
        }
        let mut c = d.check.clone();
        match &mut c.probe {
            Probe::Http { url, body, tls, .. } => {
                *url = render(d, url)?;
                // A scheme is case-insensitive (RFC 3986 §3.1): `HTTPS://` is `https://`,
                // recorded in lower case, the form the probe and the checks below match.
                if let Some((scheme, rest)) = url.split_once("://")
                    && ["http", "https"]
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(scheme))
                {
                    *url = format!("{}://{rest}", scheme.to_ascii_lowercase());
                }
                if let Some(b) = body {
                    *b = render(d, b)?;
                }
                let paths = [
                    ("ca", &mut tls.ca),
                    ("cert", &mut tls.cert),
                    ("key", &mut tls.key),
                ];
                for (key, path) in paths {
                    let Some(path) = path else { continue };
                    let at = d
                        .files
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map_or(d.value.clone(), |(_, l)| l.clone());
                    let at_value = HealthDecl {
                        value: at.clone(),
                        ..d.clone()
                    };
                    *path = render(&at_value, path)?;
                    let p = std::path::Path::new(path.as_str());
                    let up = p.components().any(|c| c == std::path::Component::ParentDir);
                    // A control character (a newline from a template, say) cannot be meant,
                    // and would break the lines that show the path; a trailing `/` names a
                    // directory, never a PEM file.
                    let why = if path.chars().any(char::is_control) {
                        Some(format!(
                            "{path:?} holds a control character (a newline?), which no file name of the host is meant to"
                        ))
                    } else if !p.is_absolute() || up {
                        Some(format!(
                            "`{path}` is not an absolute path{}",
                            if up { " without `..`" } else { "" }
                        ))
                    } else if path.ends_with('/') {
                        Some(format!(
                            "`{path}` names a directory (it ends in `/`), not a file"
                        ))
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        return Err(RecipeError::at(
                            at,
                            format!("health check of `{}`: `{key}` {why}", d.check.unit),
                        )
                        .with_help(
                            "name the PEM file on the host by its absolute path, such as \"/etc/kubernetes/ssl/ca.pem\" (it is read at each check, never copied into the store)",
                        ));
                    }
                    if !url.starts_with("https://") {
                        return Err(RecipeError::at(
                            at,
                            format!(
                                "health check of `{}`: `{key}` is set but `{url}` is not an https:// URL",
                                d.check.unit
                            ),
                        )
                        .with_help("write the https:// URL the service answers on, or remove `ca`, `cert` and `key`"));
                    }
                    // The files are prerequisites (checked on the host before a switch): one
                    // the generation installs is not, unless it is a private key, which would
                    // sit in the world-readable store; one inside (or around) an installed
                    // file could never exist.
                    let clash = set.files.keys().map(TargetPath::as_str).find_map(|t| {
                        if t == path.as_str() {
                            (key == "key").then(|| format!(
                                "`{path}` is a file this generation installs: the private key would be in the world-readable store"
                            ))
                        } else if path.starts_with(&format!("{t}/")) {
                            Some(format!("`{path}` is inside `{t}`, a file this generation installs, so it could never exist"))
                        } else if t.starts_with(&format!("{path}/")) {
                            Some(format!("`{path}` holds `{t}`, a file this generation installs, so it is a directory, not a file"))
                        } else {
                            None
                        }
                    });
                    if let Some(why) = clash {
                        return Err(RecipeError::at(
                            at,
                            format!("health check of `{}`: `{key}` {why}", d.check.unit),
                        )
                        .with_help("a check's `ca`, `cert` and `key` are host files, checked before a switch and never copied into the store: keep a private key out of `[files]`, and name files the generation does not install over"));
                    }
                }
                let authority = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"))
                    .map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
                if authority.is_none_or(str::is_empty) || url.chars().any(char::is_whitespace) {
                    return bad(
                        d,
                        format!("`{url}` is not an http:// or https:// URL"),
                        "write the URL the service answers on, such as \"http://{{ IP }}:8080/healthz\"",
                    );
                }
                let authority = authority.unwrap_or_default();
                if authority.contains('@') {
                    // The URL is not repeated: it holds a secret, which must not enter the
                    // store (nor the terminal).
                    return bad(
                        d,
                        "the URL carries a user and password (`USER:PASSWORD@`), which would be written into the world-readable store".to_owned(),
                        "use a `command` check that reads the credentials from a file on the host, such as `command = [\"/usr/bin/curl\", \"-fsS\", \"--netrc-file\", \"/etc/kb/netrc\", \"URL\"]`",
                    );
                }
                if let Err(m) = host_port(authority, false) {
                    return bad(
                        d,
                        format!("`{url}`: {m}"),
                        "write the URL the service answers on, such as \"http://127.0.0.1:8080/healthz\" (IPv6 in brackets: \"http://[::1]:8080/healthz\")",
                    );
                }
            }
            Probe::Tcp { address } => {
                *address = render(d, address)?;
                if let Err(m) = host_port(address, true) {
                    return bad(
                        d,
                        format!("`{address}` is not HOST:PORT: {m}"),
                        "write the address the service listens on, such as \"127.0.0.1:10251\" (IPv6 in brackets: \"[::1]:10251\")",
                    );
                }
            }
            Probe::Command { argv } => {
                for a in argv.iter_mut() {
                    *a = render(d, a)?;
                }
                if !argv[0].starts_with('/') {
                    return bad(
                        d,
                        format!(
                            "the command's program `{}` is not an absolute path",
                            argv[0]
                        ),
                        "name the program by its absolute path (no shell runs the command, and no PATH is searched)",
                    );
                }
            }
        }
        out.push(c);
    }
    Ok(out)
}

/// Checks `HOST[:PORT]` (`HOST:PORT` when `port_required`): a host, an IPv6 address in
/// brackets, a port from 1 to 65535.
fn host_port(authority: &str, port_required: bool) -> Result<(), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err("an IPv6 address without its closing `]`".to_owned());
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`[{v6}]` is not an IPv6 address"));
        }
        match after {
            "" => (v6, None),
            p => match p.strip_prefix(':') {
                Some(p) => (v6, Some(p)),
                None => return Err(format!("`{after}` after `]` is not `:PORT`")),
            },
        }
    } else if authority.matches(':').count() > 1 {
        return Err("an IPv6 address must be in brackets, such as `[::1]:8080`".to_owned());
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("no host".to_owned());
    }
    match port {
        None if port_required => Err("no port".to_owned()),
        None => Ok(()),
        Some(p) => match p.parse::<u16>() {
            Ok(0) => Err("port 0 is not a port a service listens on".to_owned()),
            Ok(_) => Ok(()),
            Err(_) => Err(format!("port `{p}` is not a number from 1 to 65535")),
        },
    }
}

/// Resolves the final variable values: defaults, then `--set` overrides, all type-checked.
pub fn resolve_variables(
    set: &RecipeSet,
    overrides: &[(String, String)],
) -> Result<BTreeMap<String, String>, VariableError> {
    let mut values = BTreeMap::new();
    for (key, value) in overrides {
        if values.contains_key(key) {
            return Err(VariableError::Twice { name: key.clone() });
        }
        let Some(decl) = set.variables.get(key) else {
            return Err(VariableError::Unknown {
                name: key.clone(),
                known: set.variables.keys().cloned().collect(),
            });
        };
        decl.ty
            .check(value)
            .map_err(|message| VariableError::Invalid {
                name: key.clone(),
                message,
                origin: decl.origin.clone(),
            })?;
        values.insert(key.clone(), value.clone());
    }
    for (name, decl) in &set.variables {
        if values.contains_key(name) {
            continue;
        }
        match &decl.default {
            Some(d) => {
                values.insert(name.clone(), d.clone());
            }
            None if decl.required => {
                return Err(VariableError::Missing {
                    name: name.clone(),
                    origin: decl.origin.clone(),
                });
            }
            None => {
                values.insert(name.clone(), String::new());
            }
        }
    }
    Ok(values)
}

#[derive(Debug, thiserror::Error)]
pub enum VariableError {
    #[error("`--set {name}=…`: no loaded recipe declares a variable `{name}`")]
    Unknown { name: String, known: Vec<String> },
    #[error("`--set {name}=…`: {message}")]
    Invalid {
        name: String,
        message: String,
        origin: Origin,
    },
    #[error("`--set {name}=…` is given twice")]
    Twice { name: String },
    #[error("variable `{name}` is required and has no value (declared in {origin})")]
    Missing { name: String, origin: Origin },
}

impl VariableError {
    pub fn help(&self) -> Option<String> {
        Some(match self {
            VariableError::Unknown { known, .. } if known.is_empty() => {
                "these recipes declare no variables".to_owned()
            }
            VariableError::Unknown { known, .. } => {
                format!("known variables: {}", known.join(", "))
            }
            VariableError::Invalid { name, origin, .. } => {
                format!("`{name}` is declared in {origin}")
            }
            VariableError::Missing { name, .. } => format!("pass `--set {name}=VALUE`"),
            VariableError::Twice { name } => format!("keep one `--set {name}=…`"),
        })
    }
}
