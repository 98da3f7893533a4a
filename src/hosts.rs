//! The hosts file (`hosts.toml` beside `recipes/`): every host of a cluster described once —
//! its recipes, its address, whether it is an etcd member, its variables — with the values
//! all hosts share written once. `kbuild build --host NAME` / `--all-hosts` build each host
//! into its own profile (named after it), and templates read the list of hosts as `hosts`
//! (name, address, etcd, master), so cluster-wide flags (`--etcd-servers`,
//! `--apiserver-count`) come from the list instead of being typed per host.
//!
//! ```toml
//! recipes = ["master"]              # every host's, unless a host names its own
//! address_variable = "IP"           # the variable each host's address is given to
//! [variables]                       # shared by every host
//! SERVICE_CIDR = "10.254.0.0/16"
//! [hosts.master-1]
//! address = "10.72.84.160"
//! etcd = true
//! [hosts.master-1.variables]        # this host's own values
//! ```
//!
//! Every fault is reported at its line (`hosts.toml:12:1: …`) before anything is built.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::recipe::{Loc, RecipeError};

/// The name of the hosts file, at the repository root.
pub const FILE_NAME: &str = "hosts.toml";

/// What templates see of each host (`{% for h in hosts %}`), and what a generation built from
/// a hosts file records, so that it can be rebuilt exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub name: String,
    pub address: String,
    /// An etcd member (listed in `--etcd-servers`).
    pub etcd: bool,
    /// A control-plane master (counted in `--apiserver-count`).
    pub master: bool,
}

/// One host, resolved: what `kbuild build --host NAME` builds.
#[derive(Clone, Debug)]
pub struct Host {
    pub entry: HostEntry,
    pub recipes: Vec<String>,
    /// Shared values, then the host's own (and its address, under `address_variable`).
    pub variables: BTreeMap<String, String>,
    /// Where each variable was set (for errors about it).
    pub variable_locs: BTreeMap<String, Loc>,
    /// Where the host's recipes were named.
    pub recipes_loc: Loc,
    /// The variables this host sets for itself (its address, its own `variables`): a `--set`
    /// of one of them cannot apply to several hosts at once.
    pub own: BTreeSet<String>,
}

/// A parsed hosts file.
#[derive(Clone, Debug)]
pub struct Hosts {
    pub path: PathBuf,
    /// In file order.
    pub hosts: Vec<Host>,
    /// The first host table (named by errors about the file as a whole).
    first: Loc,
    /// The variable each host's address is given to (`address_variable`), if any.
    pub address_variable: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    recipes: Option<Spanned<Vec<String>>>,
    address_variable: Option<Spanned<String>>,
    #[serde(default)]
    variables: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    #[serde(default)]
    hosts: toml::map::Map<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    address: Spanned<String>,
    #[serde(default)]
    etcd: bool,
    #[serde(default = "yes")]
    master: bool,
    recipes: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    variables: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

fn yes() -> bool {
    true
}

/// A variable's value as written: strings as they are, numbers and booleans as TOML prints them.
fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

impl Hosts {
    /// Reads and checks `path` against the recipes directory: every named recipe exists, each
    /// host's address is an IP address used by no other host. (Variables are checked against
    /// the recipes by [`Host::check_variables`], once the recipes are loaded.)
    pub fn load(path: &Path, recipes_dir: &Path) -> Result<Hosts, RecipeError> {
        let text = fs_err::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                RecipeError::NoHostsFile {
                    path: path.to_owned(),
                }
            } else {
                RecipeError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let loc = |span: Range<usize>| Loc::at(path, &text, span.start);
        let err = |span: Range<usize>, msg: String, help: Option<String>| RecipeError::At {
            loc: loc(span),
            message: msg,
            help,
        };
        let raw: RawFile = toml::from_str(&text).map_err(|e| {
            err(
                e.span().unwrap_or(0..0),
                e.message().to_owned(),
                Some(
                    "see the hosts file format in `docs/recipes.md` (section \"Hosts\")".to_owned(),
                ),
            )
        })?;
        let mut shared = BTreeMap::new();
        let mut shared_locs = BTreeMap::new();
        for (k, v) in &raw.variables {
            let value = scalar(v.get_ref()).ok_or_else(|| {
                err(
                    v.span(),
                    format!(
                        "variable `{}` must be a string, number or boolean",
                        k.get_ref()
                    ),
                    None,
                )
            })?;
            shared.insert(k.get_ref().clone(), value);
            shared_locs.insert(k.get_ref().clone(), loc(k.span()));
        }
        let known_recipes = |names: &Spanned<Vec<String>>| -> Result<(), RecipeError> {
            for n in names.get_ref() {
                if !recipes_dir.join(format!("{n}.toml")).is_file() {
                    return Err(err(
                        names.span(),
                        format!("no recipe `{n}` in `{}`", recipes_dir.display()),
                        Some(format!(
                            "name a recipe of `{}` (a `NAME.toml` there), or add `{n}.toml`",
                            recipes_dir.display()
                        )),
                    ));
                }
            }
            Ok(())
        };
        if let Some(r) = &raw.recipes {
            known_recipes(r)?;
        }
        // The hosts table in file order: `toml::Value` tables are sorted, so the order is
        // read from where each `[hosts.NAME]` header stands.
        let mut names: Vec<(usize, String)> = raw
            .hosts
            .keys()
            .map(|n| (header_offset(&text, n).unwrap_or(usize::MAX), n.clone()))
            .collect();
        names.sort();
        let first = names.first().map_or(loc(0..0), |(o, _)| loc(*o..*o));
        let mut hosts = Vec::new();
        let mut addresses: BTreeMap<IpAddr, (String, Loc)> = BTreeMap::new();
        for (offset, name) in names {
            let at = offset.min(text.len());
            let host_err = |msg: String, help: Option<String>| err(at..at, msg, help);
            if !crate::generation::valid_profile(&name) {
                return Err(host_err(
                    format!("`{name}` cannot name a host: it names the host's profile"),
                    Some(
                        "use letters, digits, `.`, `_` and `-` (at most 64, not starting with `.`)"
                            .into(),
                    ),
                ));
            }
            // Re-read the host's table with spans, from its own text.
            let table = raw.hosts[&name].clone();
            let host: RawHost = host_table(&text, &name).ok_or_else(|| {
                host_err(format!("`hosts.{name}` must be a table"), None)
            }).and_then(|r| {
                r.map_err(|e| {
                    // Spans of a sub-document are relative to its header.
                    let span = e.span().map_or(at..at, |s| at + s.start..at + s.end);
                    err(span, e.message().to_owned(), Some("a host has `address`, and may have `etcd`, `master`, `recipes` and `[hosts.NAME.variables]`".into()))
                })
            })?;
            let _ = table;
            let shift = |s: Range<usize>| at + s.start..at + s.end;
            let address: IpAddr = host.address.get_ref().parse().map_err(|_| {
                err(
                    shift(host.address.span()),
                    format!(
                        "`{}` (address of host `{name}`) is not an IP address",
                        host.address.get_ref()
                    ),
                    None,
                )
            })?;
            let here = loc(shift(host.address.span()));
            if let Some((other, there)) = addresses.get(&address) {
                return Err(RecipeError::At {
                    loc: here,
                    message: format!(
                        "host `{name}` has address {address}, which host `{other}` has already (line {})",
                        there.line
                    ),
                    help: Some("every host needs its own address: correct one of them".into()),
                });
            }
            addresses.insert(address, (name.clone(), here));
            let (recipes, recipes_loc) = match (&host.recipes, &raw.recipes) {
                (Some(r), _) => {
                    let shifted = Spanned::new(shift(r.span()), r.get_ref().clone());
                    known_recipes(&shifted)?;
                    (r.get_ref().clone(), loc(shift(r.span())))
                }
                (None, Some(r)) => (r.get_ref().clone(), loc(r.span())),
                (None, None) => {
                    return Err(host_err(
                        format!("host `{name}` names no recipes"),
                        Some("add `recipes = [\"master\"]` to the host, or at the top of the file for every host".into()),
                    ));
                }
            };
            let mut variables = shared.clone();
            let mut variable_locs = shared_locs.clone();
            let mut own = BTreeSet::new();
            if let Some(v) = &raw.address_variable {
                own.insert(v.get_ref().clone());
                variables.insert(v.get_ref().clone(), address.to_string());
                variable_locs.insert(v.get_ref().clone(), loc(shift(host.address.span())));
            }
            for (k, v) in &host.variables {
                let value = scalar(v.get_ref()).ok_or_else(|| {
                    err(
                        shift(v.span()),
                        format!(
                            "variable `{}` must be a string, number or boolean",
                            k.get_ref()
                        ),
                        None,
                    )
                })?;
                variables.insert(k.get_ref().clone(), value);
                variable_locs.insert(k.get_ref().clone(), loc(shift(k.span())));
                own.insert(k.get_ref().clone());
            }
            hosts.push(Host {
                entry: HostEntry {
                    name: name.clone(),
                    address: address.to_string(),
                    etcd: host.etcd,
                    master: host.master,
                },
                recipes,
                variables,
                variable_locs,
                recipes_loc,
                own,
            });
        }
        if hosts.is_empty() {
            return Err(err(
                0..0,
                "the hosts file names no hosts".into(),
                Some("add a `[hosts.NAME]` table with its `address` per host".into()),
            ));
        }
        Ok(Hosts {
            path: path.to_owned(),
            hosts,
            first,
            address_variable: raw.address_variable.map(|v| v.into_inner()),
        })
    }

    /// Refuses `--set` values that cannot hold for the hosts chosen: a variable the file sets
    /// per host given to several hosts at once (they would all get the same value, e.g. one
    /// address for three masters), and an address given to one host that another host has.
    pub fn check_sets(
        &self,
        chosen: &[&Host],
        sets: &[(String, String)],
    ) -> Result<(), RecipeError> {
        for (name, value) in sets {
            if chosen.len() > 1
                && let Some(h) = chosen.iter().find(|h| h.own.contains(name))
            {
                return Err(RecipeError::At {
                    loc: h.variable_locs[name].clone(),
                    message: format!(
                        "`--set {name}=…` would give every host built ({}) the same `{name}`, which the hosts file sets per host (here for host `{}`)",
                        chosen
                            .iter()
                            .map(|h| h.entry.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        h.entry.name
                    ),
                    help: Some(format!(
                        "build one host with `kbuild build --host NAME --set {name}=…`, or edit `{}`",
                        self.path.display()
                    )),
                });
            }
            if self.address_variable.as_deref() == Some(name.as_str()) {
                let Ok(address) = value.parse::<IpAddr>() else {
                    continue;
                };
                for h in chosen {
                    if let Some(other) = self.hosts.iter().find(|o| {
                        o.entry.name != h.entry.name
                            && o.entry.address.parse::<IpAddr>().ok() == Some(address)
                    }) {
                        return Err(RecipeError::At {
                            loc: other.variable_locs[name].clone(),
                            message: format!(
                                "`--set {name}={value}` gives host `{}` the address {address}, which host `{}` has",
                                h.entry.name, other.entry.name
                            ),
                            help: Some(format!(
                                "every host needs its own address: set another one, or edit `{}`",
                                self.path.display()
                            )),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// What templates read as `hosts`.
    pub fn entries(&self) -> Vec<HostEntry> {
        self.hosts.iter().map(|h| h.entry.clone()).collect()
    }

    /// The hosts named (in the order given, each once), or an error naming the unknown one.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Host>, RecipeError> {
        let mut out: Vec<&Host> = Vec::new();
        for n in names {
            let Some(h) = self.hosts.iter().find(|h| &h.entry.name == n) else {
                return Err(RecipeError::At {
                    loc: self.first.clone(),
                    message: format!("no host `{n}` in the hosts file"),
                    help: Some(format!(
                        "hosts: {}; add a `[hosts.{n}]` table, or pass another file with `--hosts FILE`",
                        self.hosts
                            .iter()
                            .map(|h| h.entry.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                });
            };
            if !out.iter().any(|o| o.entry.name == *n) {
                out.push(h);
            }
        }
        Ok(out)
    }
}

impl Host {
    /// Refuses a variable set for this host that none of its recipes declares.
    pub fn check_variables(&self, declared: &BTreeSet<String>) -> Result<(), RecipeError> {
        for (name, loc) in &self.variable_locs {
            if !declared.contains(name) {
                return Err(RecipeError::At {
                    loc: loc.clone(),
                    message: format!(
                        "variable `{name}` is set for host `{}`, but no recipe it builds ({}) declares it",
                        self.entry.name,
                        self.recipes.join(", ")
                    ),
                    help: Some(format!(
                        "remove it, or declare it in a recipe; declared: {}",
                        declared.iter().cloned().collect::<Vec<_>>().join(", ")
                    )),
                });
            }
        }
        Ok(())
    }
}

/// The byte offset of `[hosts.NAME]` (or `[hosts."NAME"]`) in `text`.
fn header_offset(text: &str, name: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t == format!("[hosts.{name}]") || t == format!("[hosts.\"{name}\"]") {
            return Some(offset + (line.len() - line.trim_start().len()));
        }
        offset += line.len();
    }
    None
}

/// The host's table `[hosts.NAME]` parsed from its own lines (up to the next header that is
/// not one of its sub-tables), so that spans are relative to the header.
fn host_table(text: &str, name: &str) -> Option<Result<RawHost, toml::de::Error>> {
    let start = header_offset(text, name)?;
    let rest = &text[start..];
    let mut end = rest.len();
    let mut offset = 0;
    for (i, line) in rest.split_inclusive('\n').enumerate() {
        let t = line.trim();
        if i > 0 && t.starts_with('[') {
            let sub = t.trim_start_matches('[').trim_end_matches(']');
            let own = sub.starts_with(&format!("hosts.{name}."))
                || sub.starts_with(&format!("hosts.\"{name}\"."));
            if !own {
                end = offset;
                break;
            }
        }
        offset += line.len();
    }
    // The header itself is dropped; sub-tables `[hosts.NAME.variables]` become `[variables]`.
    let body = &rest[..end];
    let first_nl = body.find('\n').map_or(body.len(), |i| i + 1);
    let mut doc = " ".repeat(first_nl);
    for line in body[first_nl..].split_inclusive('\n') {
        let t = line.trim_start();
        let prefixes = [format!("[hosts.{name}."), format!("[hosts.\"{name}\".")];
        match prefixes.iter().find(|p| t.starts_with(p.as_str())) {
            Some(p) => {
                // Keep byte offsets: pad the removed prefix with spaces after the `[`.
                let indent = line.len() - t.len();
                doc.push_str(&" ".repeat(indent));
                doc.push('[');
                doc.push_str(&" ".repeat(p.len() - 1));
                doc.push_str(&t[p.len()..]);
            }
            None => doc.push_str(line),
        }
    }
    Some(toml::from_str(&doc))
}
