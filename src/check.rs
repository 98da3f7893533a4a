//! Checks: rules a recipe declares about the values a build produces — its variables and the
//! flags in its rendered files — as data (`[[checks]]` in a recipe), so a recipe set for
//! another Kubernetes version brings its own rules. A build that breaks one fails, naming the
//! rule, the host and the value, with the reason the recipe gives.
//!
//! ```toml
//! [[checks]]
//! rule = "ServiceAccount"
//! flag = "--admission-control"      # or `variable = "IP"`; `file = "/etc/…"` narrows a flag
//! contains = "ServiceAccount"
//! reason = "without it, pods get no service account token …"
//! ```
//!
//! Predicates (one or more per check): `contains`, `equals`, `not_loopback`,
//! `network_cidr`, `not_containing` (addresses of `hosts`, of flags or variables),
//! `excludes` (flags that must not be set with it), `equals_count` (`masters` / `etcd` of the
//! hosts file), `unique` (a list naming nothing twice), `lists_all` (`etcd`: every etcd
//! member of the hosts file). `when` limits a check to builds where a flag contains a value
//! (`when = { flag = "--authorization-mode", contains = "RBAC" }`), to builds from a hosts file
//! (`hosts_file = true`), or to more than N masters (`masters_above = 1`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::hosts::HostEntry;
use crate::recipe::Loc;

/// One `[[checks]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// What the rule is about, as errors name it (`ServiceAccount`, `bind-address`).
    pub rule: String,
    /// Why (the guide's reason): the error's `help:`.
    pub reason: String,
    pub flag: Option<String>,
    pub variable: Option<String>,
    /// Only this rendered file's flags (its target path).
    pub file: Option<String>,
    pub contains: Option<String>,
    pub equals: Option<String>,
    #[serde(default)]
    pub not_loopback: bool,
    #[serde(default)]
    pub network_cidr: bool,
    #[serde(default)]
    pub not_containing: Vec<String>,
    #[serde(default)]
    pub excludes: Vec<String>,
    pub equals_count: Option<String>,
    #[serde(default)]
    pub unique: bool,
    pub lists_all: Option<String>,
    pub when: Option<When>,
}

/// When a check applies.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    pub flag: Option<String>,
    pub contains: Option<String>,
    #[serde(default)]
    pub hosts_file: bool,
    pub masters_above: Option<usize>,
}

impl Rule {
    /// Refuses a check that names no value or no predicate, or an unknown count.
    pub fn validate(&self) -> Result<(), String> {
        if self.flag.is_some() == self.variable.is_some() {
            return Err(format!(
                "check `{}` must name exactly one of `flag` and `variable`",
                self.rule
            ));
        }
        let predicates = [
            self.contains.is_some(),
            self.equals.is_some(),
            self.not_loopback,
            self.network_cidr,
            !self.not_containing.is_empty(),
            !self.excludes.is_empty(),
            self.equals_count.is_some(),
            self.unique,
            self.lists_all.is_some(),
        ];
        if !predicates.contains(&true) {
            return Err(format!(
                "check `{}` has no predicate (contains, equals, not_loopback, network_cidr, not_containing, excludes, equals_count, unique, lists_all)",
                self.rule
            ));
        }
        for c in self.equals_count.iter().chain(&self.lists_all) {
            if c != "masters" && c != "etcd" {
                return Err(format!(
                    "check `{}`: `{c}` is not a count of the hosts file (`masters` or `etcd`)",
                    self.rule
                ));
            }
        }
        Ok(())
    }
}

/// A check that failed.
#[derive(Debug, thiserror::Error)]
#[error("{loc}: check `{rule}` fails for {host}: {problem}")]
pub struct Failed {
    pub loc: Loc,
    pub rule: String,
    /// `host `master-2`` or `this build`.
    pub host: String,
    pub problem: String,
    pub reason: String,
}

/// What a build produced, as checks see it.
pub struct Build<'a> {
    pub variables: &'a BTreeMap<String, String>,
    /// Rendered files: target → text.
    pub files: &'a BTreeMap<String, String>,
    pub hosts: &'a [HostEntry],
    /// The host being built (its profile), if built from the hosts file.
    pub host: Option<&'a str>,
}

/// How a flag is written, as the Kubernetes components' flag parser (pflag) reads it.
#[derive(Clone, Debug, PartialEq)]
enum Given {
    /// `--name=value`: read so by every flag.
    Eq(String),
    /// `--name value`: a non-boolean flag reads `value`; a boolean one is `true` and
    /// `value` a stray argument (which the components refuse).
    Space(String),
    /// `--name` alone: `true` for a boolean flag; a non-boolean one has no value.
    Bare,
}

impl Given {
    /// The value a non-boolean flag gets (`None`: none given).
    fn value(&self) -> Option<&str> {
        match self {
            Given::Eq(v) | Given::Space(v) => Some(v),
            Given::Bare => None,
        }
    }

    /// How the flag is spelled in the file, for messages.
    fn spelled(&self, name: &str) -> String {
        match self {
            Given::Eq(v) => format!("{name}={v}"),
            Given::Space(v) => format!("{name} {v}"),
            Given::Bare => name.to_owned(),
        }
    }
}

/// Go's `strconv.ParseBool`, which pflag uses for boolean flags.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// The flags in the non-comment lines of `text`: `--name=value`, `--name value` (the next word
/// of the same quoted or unquoted stretch, when it is not itself a flag) and a bare `--name`.
/// A single-dash `-name` is not read: pflag takes it as shorthand letters and the component
/// refuses to start, so it cannot carry a value past a check.
fn flags(text: &str) -> Vec<(String, Given)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        // Quotes delimit stretches: a value never comes from the next variable's quotes.
        for stretch in line.split(['"', '\'']) {
            let words: Vec<&str> = stretch.split_whitespace().collect();
            let mut i = 0;
            while i < words.len() {
                let Some(rest) = words[i].strip_prefix("--").filter(|r| !r.is_empty()) else {
                    i += 1;
                    continue;
                };
                let (name, given) = match rest.split_once('=') {
                    Some((n, v)) => (n, Given::Eq(v.to_owned())),
                    None => match words.get(i + 1).filter(|w| !w.starts_with('-')) {
                        Some(v) => {
                            i += 1;
                            (rest, Given::Space((*v).to_owned()))
                        }
                        None => (rest, Given::Bare),
                    },
                };
                out.push((format!("--{name}"), given));
                i += 1;
            }
        }
    }
    out
}

/// The IP addresses in a value: a list of addresses, URLs (`https://10.0.0.1:2379`) or both.
fn addresses(value: &str) -> Vec<IpAddr> {
    value
        .split(',')
        .filter_map(|item| {
            let item = item.trim();
            let host = item.split_once("://").map_or(item, |(_, r)| r);
            let host = host.split('/').next().unwrap_or(host);
            if let Some(v6) = host.strip_prefix('[') {
                return v6.split(']').next()?.parse().ok();
            }
            host.parse()
                .ok()
                .or_else(|| host.rsplit_once(':')?.0.parse().ok())
        })
        .collect()
}

fn in_cidr(net: IpAddr, len: u32, a: IpAddr) -> bool {
    match (net, a) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// `a.b.c.d/n` with no host bits set.
fn network(value: &str) -> Option<(IpAddr, u32)> {
    let (a, n) = value.split_once('/')?;
    let a: IpAddr = a.parse().ok()?;
    let n: u32 = n.parse().ok()?;
    let max = if a.is_ipv4() { 32 } else { 128 };
    (n <= max && in_cidr(a, n, a) && {
        // Host bits zero: the address is its own network.
        match a {
            IpAddr::V4(v) => {
                let mask = if n == 0 { 0 } else { u32::MAX << (32 - n) };
                u32::from(v) & !mask == 0
            }
            IpAddr::V6(v) => {
                let mask = if n == 0 { 0 } else { u128::MAX << (128 - n) };
                u128::from(v) & !mask == 0
            }
        }
    })
    .then_some((a, n))
}

impl Build<'_> {
    /// Every occurrence of flag `name` (in `file` only, if given).
    fn flag_given(&self, name: &str, file: Option<&str>) -> Vec<Given> {
        self.files
            .iter()
            .filter(|(t, _)| file.is_none_or(|f| f == t.as_str()))
            .flat_map(|(_, text)| flags(text))
            .filter(|(n, _)| n == name)
            .map(|(_, g)| g)
            .collect()
    }

    /// The values flag `name` is given (a bare flag read as `true`, as `when` needs it).
    fn flag_values(&self, name: &str, file: Option<&str>) -> Vec<String> {
        self.flag_given(name, file)
            .iter()
            .map(|g| g.value().unwrap_or("true").to_owned())
            .collect()
    }

    fn count(&self, what: &str) -> usize {
        self.hosts
            .iter()
            .filter(|h| if what == "etcd" { h.etcd } else { h.master })
            .count()
    }

    /// The addresses a `not_containing` entry names.
    fn named_addresses(&self, r: &str) -> Vec<(IpAddr, String)> {
        if r == "hosts" {
            return self
                .hosts
                .iter()
                .filter_map(|h| Some((h.address.parse().ok()?, format!("host `{}`", h.name))))
                .collect();
        }
        let values = if r.starts_with("--") {
            self.flag_values(r, None)
        } else {
            self.variables.get(r).cloned().into_iter().collect()
        };
        values
            .iter()
            .flat_map(|v| addresses(v))
            .map(|a| (a, format!("`{r}`")))
            .collect()
    }

    fn applies(&self, w: &When) -> bool {
        if w.hosts_file && self.hosts.is_empty() {
            return false;
        }
        if let Some(n) = w.masters_above
            && self.count("masters").max(1) <= n
        {
            return false;
        }
        if let Some(f) = &w.flag {
            let values = self.flag_values(f, None);
            let hit = match &w.contains {
                Some(c) => values.iter().any(|v| v.split(',').any(|i| i.trim() == c)),
                None => !values.is_empty(),
            };
            if !hit {
                return false;
            }
        }
        true
    }

    /// The first failed check, if any.
    pub fn check(&self, rules: &[(Rule, Loc)]) -> Result<(), Box<Failed>> {
        for (rule, loc) in rules {
            if let Some(problem) = self.problem(rule) {
                return Err(Box::new(Failed {
                    loc: loc.clone(),
                    rule: rule.rule.clone(),
                    host: self
                        .host
                        .map_or("this build".to_owned(), |h| format!("host `{h}`")),
                    problem,
                    reason: rule.reason.clone(),
                }));
            }
        }
        Ok(())
    }

    fn problem(&self, r: &Rule) -> Option<String> {
        if let Some(w) = &r.when
            && !self.applies(w)
        {
            return None;
        }
        // A check whose `equals` is `true` or `false` is about a boolean flag: pflag reads
        // its value with ParseBool, and only after `=`.
        let boolean = r.flag.is_some()
            && r.equals
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case("true") || e.eq_ignore_ascii_case("false"));
        let valued = r.contains.is_some()
            || r.equals.is_some()
            || r.not_loopback
            || r.network_cidr
            || !r.not_containing.is_empty()
            || r.equals_count.is_some()
            || r.unique
            || r.lists_all.is_some();
        let (name, values) = match (&r.flag, &r.variable) {
            (Some(f), _) => {
                let mut values = Vec::new();
                for g in self.flag_given(f, r.file.as_deref()) {
                    let value = match (&g, boolean) {
                        (Given::Bare, true) => "true".to_owned(),
                        (Given::Eq(v), true) => match parse_bool(v) {
                            Some(b) => b.to_string(),
                            None => {
                                return Some(format!(
                                    "`{}`: `{v}` is not a boolean (write `{f}=true` or `{f}=false`)",
                                    g.spelled(f)
                                ));
                            }
                        },
                        (Given::Space(v), true) => {
                            return Some(format!(
                                "`{}`: a boolean flag takes its value only after `=`; the component reads `{f}` as `true` and `{v}` as a stray argument (write `{f}={v}`)",
                                g.spelled(f)
                            ));
                        }
                        (_, false) => match g.value() {
                            Some(v) => v.to_owned(),
                            // A check about presence alone (`excludes`) is met by a bare flag.
                            None if !valued => "true".to_owned(),
                            None => {
                                return Some(format!(
                                    "`{f}` is given without a value (write `{f}=VALUE`)"
                                ));
                            }
                        },
                    };
                    values.push(value);
                }
                (format!("`{f}`"), values)
            }
            (None, Some(v)) => (
                format!("variable `{v}`"),
                self.variables.get(v).cloned().into_iter().collect(),
            ),
            (None, None) => return None,
        };
        let needs_value = r.contains.is_some() || r.equals.is_some() || r.equals_count.is_some();
        if values.is_empty() {
            if needs_value && (r.equals_count.is_none() || !self.hosts.is_empty()) {
                return Some(format!("{name} is not set"));
            }
            return None;
        }
        for value in &values {
            if let Some(c) = &r.contains
                && !value.split(',').any(|i| i.trim() == c)
            {
                return Some(format!("{name} = `{value}` lacks `{c}`"));
            }
            if let Some(e) = &r.equals
                && value != e
                && !(boolean && value.eq_ignore_ascii_case(e))
            {
                return Some(format!("{name} = `{value}`, it must be `{e}`"));
            }
            if r.not_loopback
                && let Ok(a) = value.parse::<IpAddr>()
                && a.is_loopback()
            {
                return Some(format!("{name} = `{value}` is a loopback address"));
            }
            if r.network_cidr || !r.not_containing.is_empty() {
                let Some((net, len)) = network(value) else {
                    return Some(format!(
                        "{name} = `{value}` is not a network CIDR (an address with its host bits zero, `/` and a prefix length)"
                    ));
                };
                for n in &r.not_containing {
                    if let Some((a, whose)) = self
                        .named_addresses(n)
                        .into_iter()
                        .find(|(a, _)| in_cidr(net, len, *a))
                    {
                        return Some(format!("{name} = `{value}` contains {a} (of {whose})"));
                    }
                }
            }
            if let Some(x) = r
                .excludes
                .iter()
                .find(|x| !self.flag_values(x, None).is_empty())
            {
                return Some(format!("{name} is set together with `{x}`"));
            }
            if let Some(c) = &r.equals_count
                && !self.hosts.is_empty()
                && value.parse::<usize>().ok() != Some(self.count(c))
            {
                return Some(format!(
                    "{name} = `{value}`, but the hosts file has {} {c}",
                    self.count(c)
                ));
            }
            let listed = addresses(value);
            if r.unique {
                for (i, a) in listed.iter().enumerate() {
                    if listed[..i].contains(a) {
                        return Some(format!("{name} = `{value}` names {a} twice"));
                    }
                }
            }
            if let Some(what) = &r.lists_all
                && let Some(h) = self.hosts.iter().find(|h| {
                    (if what == "etcd" { h.etcd } else { h.master })
                        && h.address
                            .parse::<IpAddr>()
                            .is_ok_and(|a| !listed.contains(&a))
                })
            {
                return Some(format!(
                    "{name} = `{value}` misses {} (member `{}` of the hosts file)",
                    h.address, h.name
                ));
            }
        }
        None
    }
}
