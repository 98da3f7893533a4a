//! Enablement computed at build time: the `[Install]` links of a generation's units.
//!
//! `systemctl enable` on a root kbuild manages resolves kbuild's link chain and writes a link
//! straight into one generation's store path: it bypasses the flip point, keeps pointing at
//! that generation after a switch, and dangles after gc; `systemctl disable` deletes kbuild's
//! own link to the unit file. So kbuild never runs either: it writes the links `systemctl
//! enable` would write into the rootfs itself, under `etc/systemd/system`, as relative
//! symlinks to the unit file beside them (`multi-user.target.wants/etcd.service →
//! ../etcd.service`). In the root they are managed paths like any other (links through
//! `etc/.kbuild/current`), so they change with the generation and never point at a store path
//! gc can delete.
//!
//! What is read (systemd.unit(5), "[Install] Section Options"): `WantedBy=`, `RequiredBy=`,
//! `UpheldBy=` (→ `<target>.wants/`, `.requires/`, `.upholds/`), `Alias=` (a link of another
//! name beside the unit), `Also=` (the named units are enabled too: they must be in the
//! generation) and `DefaultInstance=` (the instance a template is enabled as; a template
//! without one gets no links, as with `systemctl enable`). Specifiers `%n %N %p %i %j %%` are
//! expanded (in `DefaultInstance=` too, as systemd does); any other is refused naming it (the
//! machine's `%H`, `%m` are not known at build time), as is every name systemd could not load.

use std::collections::BTreeMap;

/// Where unit files live in a rootfs; the links are written below it.
pub const UNIT_DIR: &str = "etc/systemd/system";

/// One link of a rootfs: `path` (relative to the rootfs) → `target` (relative to the link's
/// directory).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstallLink {
    pub path: String,
    pub target: String,
}

/// A unit's `[Install]` section that the build cannot turn into links.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("unit `{unit}`: `{key}={value}` names no unit systemd can load: {why}")]
    BadName {
        unit: String,
        key: &'static str,
        value: String,
        why: String,
    },
    #[error(
        "unit `{unit}`: `{key}={value}` uses the specifier `%{spec}`, which kbuild does not support (it expands {SUPPORTED} in `[Install]`)"
    )]
    Specifier {
        unit: String,
        key: &'static str,
        value: String,
        spec: char,
    },
    #[error("unit `{unit}`: `Also={also}` names a unit this generation does not provide")]
    AlsoMissing { unit: String, also: String },
    #[error("unit `{unit}` is enabled through `/{path}`, but the recipes already put a file there")]
    Taken { unit: String, path: String },
    #[error(
        "`/{path}` would link to `{first}` and to `{second}` (two units' `[Install]` sections)"
    )]
    Clash {
        path: String,
        first: String,
        second: String,
    },
}

impl InstallError {
    /// What to change in the recipes.
    pub fn help(&self) -> String {
        match self {
            InstallError::BadName { unit, key, .. } => {
                let example = match *key {
                    "DefaultInstance" => format!(
                        "an instance string such as `main`, enabling `{}`",
                        unit.replacen("@.", "@main.", 1)
                    ),
                    "Alias" => format!(
                        "another name of the same type, such as `other{}`",
                        suffix(unit)
                    ),
                    _ => "a unit name such as `multi-user.target`".to_owned(),
                };
                format!(
                    "fix `{key}=` in the `[Install]` section of `{unit}` ({example}), then run `kbuild build` again"
                )
            }
            InstallError::Specifier {
                unit, key, spec, ..
            } => format!(
                "write the value of `%{spec}` out in `{key}=` of `{unit}` (or use one of {SUPPORTED}), then run `kbuild build` again"
            ),
            InstallError::AlsoMissing { also, unit } => format!(
                "add `/{UNIT_DIR}/{also}` to the recipes, or remove `Also={also}` from `{unit}`, then run `kbuild build` again"
            ),
            InstallError::Taken { path, .. } => format!(
                "remove the file `/{path}` from the recipes: kbuild writes enablement links itself, then run `kbuild build` again"
            ),
            InstallError::Clash { path, .. } => format!(
                "give the units different `Alias=` names (or drop one), so only one unit claims `/{path}`, then run `kbuild build` again"
            ),
        }
    }
}

/// The specifiers kbuild expands in `[Install]`, as messages list them.
const SUPPORTED: &str = "`%n`, `%N`, `%p`, `%i`, `%j` and `%%`";

/// The `[Install]` keys of one unit file, as systemd reads them (last `DefaultInstance=`
/// wins; an empty assignment empties a list).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Install {
    pub wanted_by: Vec<String>,
    pub required_by: Vec<String>,
    pub upheld_by: Vec<String>,
    pub alias: Vec<String>,
    pub also: Vec<String>,
    pub default_instance: Option<String>,
}

/// Reads the `[Install]` section of a unit file (comments, continuation lines, repeated
/// keys and empty assignments as in systemd.syntax(7)).
pub fn install_section(text: &str) -> Install {
    let mut out = Install::default();
    let mut in_install = false;
    let mut logical = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if logical.is_empty() && (trimmed.starts_with('#') || trimmed.starts_with(';')) {
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            logical.push_str(stripped);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let l = std::mem::take(&mut logical);
        let l = l.trim();
        if l.starts_with('[') {
            in_install = l == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        let Some((key, value)) = l.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let list = match key.trim() {
            "WantedBy" => &mut out.wanted_by,
            "RequiredBy" => &mut out.required_by,
            "UpheldBy" => &mut out.upheld_by,
            "Alias" => &mut out.alias,
            "Also" => &mut out.also,
            "DefaultInstance" => {
                out.default_instance = (!value.is_empty()).then(|| value.to_owned());
                continue;
            }
            _ => continue,
        };
        if value.is_empty() {
            list.clear();
        } else {
            list.extend(value.split_whitespace().map(str::to_owned));
        }
    }
    out
}

/// The links enabling every unit of `units` (unit file name → its text: the unit files
/// directly in `etc/systemd/system` of a rootfs). `taken` says whether the recipes put a file
/// at a path (relative to the rootfs). Sorted by path.
pub fn links(
    units: &BTreeMap<String, String>,
    taken: &dyn Fn(&str) -> bool,
) -> Result<Vec<InstallLink>, InstallError> {
    let mut out: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (unit, text) in units {
        if check_name(unit).is_err() {
            // Not a unit file systemd loads (a README, a backup): nothing to enable.
            continue;
        }
        let install = install_section(text);
        for also in &install.also {
            let also = expand(unit, unit, "Also", also)?;
            if !units.contains_key(&also) {
                return Err(InstallError::AlsoMissing {
                    unit: unit.clone(),
                    also,
                });
            }
        }
        for (path, target) in unit_links(unit, &install)? {
            if taken(&path) {
                return Err(InstallError::Taken {
                    unit: unit.clone(),
                    path,
                });
            }
            match out.get(&path) {
                Some((t, _)) if *t == target => {}
                Some((_, first)) => {
                    return Err(InstallError::Clash {
                        path,
                        first: first.clone(),
                        second: unit.clone(),
                    });
                }
                None => {
                    out.insert(path, (target, unit.clone()));
                }
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(path, (target, _))| InstallLink { path, target })
        .collect())
}

/// The links of one unit: (path relative to the rootfs, link target).
fn unit_links(unit: &str, install: &Install) -> Result<Vec<(String, String)>, InstallError> {
    let template = unit.contains("@.");
    // The name the unit is enabled under: a template only through its default instance.
    let enabled_as = if template {
        match &install.default_instance {
            Some(raw) => {
                // systemd expands specifiers here too, as for the template itself.
                let i = specifiers(unit, unit, "DefaultInstance", raw)?;
                let name = unit.replacen("@.", &format!("@{i}."), 1);
                check_name(&name).map_err(|why| InstallError::BadName {
                    unit: unit.to_owned(),
                    key: "DefaultInstance",
                    value: raw.clone(),
                    why,
                })?;
                Some(name)
            }
            None => None,
        }
    } else {
        Some(unit.to_owned())
    };
    let mut out = Vec::new();
    let kinds = [
        ("WantedBy", &install.wanted_by, "wants"),
        ("RequiredBy", &install.required_by, "requires"),
        ("UpheldBy", &install.upheld_by, "upholds"),
    ];
    for (key, values, dir) in kinds {
        for v in values {
            // Specifiers name the unit being enabled: a template's default instance.
            let by = expand(unit, enabled_as.as_deref().unwrap_or(unit), key, v)?;
            if let Some(name) = &enabled_as {
                out.push((
                    format!("{UNIT_DIR}/{by}.{dir}/{name}"),
                    format!("../{unit}"),
                ));
            }
        }
    }
    for a in &install.alias {
        let alias = expand(unit, unit, "Alias", a)?;
        let bad = |why: &str| InstallError::BadName {
            unit: unit.to_owned(),
            key: "Alias",
            value: a.clone(),
            why: why.to_owned(),
        };
        if suffix(&alias) != suffix(unit) {
            return Err(bad("an alias has the unit's own type suffix"));
        }
        if alias.contains("@.") != template {
            return Err(bad(
                "an alias of a template is a template, and only of a template",
            ));
        }
        if alias != unit {
            out.push((format!("{UNIT_DIR}/{alias}"), unit.to_owned()));
        }
    }
    Ok(out)
}

/// `value` of `unit`'s `key` with the specifiers systemd expands in `[Install]` replaced (for
/// `name`, the name being enabled: a template's default instance), checked to be a unit name.
fn expand(unit: &str, name: &str, key: &'static str, value: &str) -> Result<String, InstallError> {
    let out = specifiers(unit, name, key, value)?;
    check_name(&out).map_err(|why| InstallError::BadName {
        unit: unit.to_owned(),
        key,
        value: value.to_owned(),
        why,
    })?;
    Ok(out)
}

/// `value` with the specifiers kbuild supports expanded for `name`; any other is refused.
fn specifiers(
    unit: &str,
    name: &str,
    key: &'static str,
    value: &str,
) -> Result<String, InstallError> {
    let bad = |why: String| InstallError::BadName {
        unit: unit.to_owned(),
        key,
        value: value.to_owned(),
        why,
    };
    crate::unit_name::expand_specifiers(value, |c| match c {
        Some(spec) => {
            crate::unit_name::name_specifier(spec, name).ok_or_else(|| InstallError::Specifier {
                unit: unit.to_owned(),
                key,
                value: value.to_owned(),
                spec,
            })
        }
        None => Err(bad("it ends in a lone `%`".into())),
    })
}

fn suffix(name: &str) -> &str {
    name.rfind('.').map_or("", |i| &name[i..])
}

/// Whether systemd can load a unit of this name ([`crate::unit_name::check`]).
fn check_name(name: &str) -> Result<(), String> {
    crate::unit_name::check(name).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links_of(units: &[(&str, &str)]) -> Result<Vec<(String, String)>, InstallError> {
        let map = units
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        Ok(links(&map, &|_| false)?
            .into_iter()
            .map(|l| (l.path, l.target))
            .collect())
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn every_install_key_becomes_its_link() {
        let etcd = "[Unit]\nDescription=etcd\n[Service]\nExecStart=/usr/local/bin/etcd\n\
                    WantedBy=ignored.target\n[Install]\n# WantedBy=commented.target\n\
                    WantedBy=multi-user.target \\\n  graphical.target\nRequiredBy=a.target\n\
                    UpheldBy=b.target\nAlias=kv.service\nAlso=member@.service\n";
        let member = "[Install]\nWantedBy=cluster.target\nWantedBy=\nWantedBy=%p.target\n\
                      RequiredBy=%p-%i.target\nDefaultInstance=one\nAlias=m@.service\n";
        let bare = "[Install]\nWantedBy=multi-user.target\n";
        assert_eq!(
            links_of(&[
                ("etcd.service", etcd),
                ("member@.service", member),
                ("bare@.service", bare),
                ("static.service", "[Service]\nExecStart=/bin/true\n"),
            ])
            .unwrap(),
            pairs(&[
                (
                    "etc/systemd/system/a.target.requires/etcd.service",
                    "../etcd.service"
                ),
                (
                    "etc/systemd/system/b.target.upholds/etcd.service",
                    "../etcd.service"
                ),
                (
                    "etc/systemd/system/graphical.target.wants/etcd.service",
                    "../etcd.service"
                ),
                ("etc/systemd/system/kv.service", "etcd.service"),
                ("etc/systemd/system/m@.service", "member@.service"),
                (
                    "etc/systemd/system/member-one.target.requires/member@one.service",
                    "../member@.service"
                ),
                (
                    "etc/systemd/system/member.target.wants/member@one.service",
                    "../member@.service"
                ),
                (
                    "etc/systemd/system/multi-user.target.wants/etcd.service",
                    "../etcd.service"
                ),
            ])
        );
    }

    #[test]
    fn refuses_what_systemd_could_not_load() {
        let cases = [
            (
                "WantedBy=../../../usr/local/bin/x.target",
                "`/` is not allowed in a unit name",
            ),
            ("WantedBy=multi-user", "it has no unit type suffix"),
            (
                "WantedBy=%H.target",
                "uses the specifier `%H`, which kbuild does not support",
            ),
            ("Alias=kv.socket", "an alias has the unit's own type suffix"),
        ];
        for (line, why) in cases {
            let text = format!("[Install]\n{line}\n");
            let e = links_of(&[("etcd.service", &text)])
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("unit `etcd.service`: `"), "{e}");
            assert!(e.contains(why), "{line}: {e}");
        }
        let e = links_of(&[("etcd.service", "[Install]\nAlso=gone.service\n")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unit `etcd.service`: `Also=gone.service` names a unit this generation does not provide"
        );
        let map = [(
            "a.service".to_owned(),
            "[Install]\nWantedBy=multi-user.target\n".to_owned(),
        )]
        .into_iter()
        .collect();
        let taken = |p: &str| p == "etc/systemd/system/multi-user.target.wants/a.service";
        assert_eq!(
            links(&map, &taken).unwrap_err().to_string(),
            "unit `a.service` is enabled through `/etc/systemd/system/multi-user.target.wants/a.service`, but the recipes already put a file there"
        );
        let e = links_of(&[
            ("a.service", "[Install]\nAlias=x.service\n"),
            ("b.service", "[Install]\nAlias=x.service\n"),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/etc/systemd/system/x.service` would link to `a.service` and to `b.service` (two units' `[Install]` sections)"
        );
    }
}
