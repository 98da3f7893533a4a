//! systemd units in a rootfs: what each unit reads, and which units a switch must act on.
//!
//! A unit is restarted when its unit file **or any file it reads** changed: its drop-ins
//! (`NAME.d/*.conf`, the template's `NAME@.TYPE.d/`, prefix `foo-.service.d/` and type-level
//! `service.d/`), the `EnvironmentFile=`s of the unit and its drop-ins (`-` prefix, globs),
//! and the binaries of its `Exec*=` lines. That is what NixOS's switch-to-configuration misses
//! for config-only changes, and what an operator expects when editing
//! `/etc/kubernetes/apiserver`.
//!
//! Which units: service, socket, timer and path units directly in `/etc/systemd/system`, and
//! the instances of templates that the generation's `*.wants/`, `*.requires/` and
//! `*.upholds/` directories name. A bare template (`foo@.service`) is never acted on. A
//! service that a socket, timer or path unit of the generation triggers is left to its
//! trigger: never started directly; when it changed, a socket's service is stopped (the socket
//! starts the new one on demand) and a timer's or path's is restarted only if running.
//! A recipe can ask per service for a reload or for nothing instead of a restart
//! (`on_change`, recorded in the rootfs's `kbuild.json`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::Path;

use crate::fs::read_full;
use crate::recipe::OnChange;
use crate::unit_name::{self, DEPENDENCY_DIRS, NameKind, shell_line};
use std::os::unix::fs::MetadataExt;

/// Where unit files live in a rootfs (and in the root).
pub const UNIT_DIR: &str = "etc/systemd/system";

/// The unit types a switch starts, stops and restarts.
const ACTED_TYPES: &[&str] = &["service", "socket", "timer", "path"];

/// Files a unit reads, as absolute paths on the host (environment files may be globs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitInputs {
    pub environment_files: Vec<String>,
    pub executables: Vec<String>,
    /// An `ExecReload=` is set (and not reset by an empty one).
    pub exec_reload: bool,
    /// `Service=` of a socket, `Unit=` of a timer or path.
    pub triggers: Option<String>,
    /// `Accept=yes` of a socket: it starts instances of a template, one per connection.
    pub accept: bool,
}

/// The `KEY=VALUE` settings of a unit file in order, as systemd.syntax(7) reads them:
/// `#`/`;` comment lines, `[Section]` headers, a trailing `\` joining the next line (the
/// backslash read as a space; comment lines inside are skipped). Returns (section, key, value).
pub fn settings(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut logical: Option<String> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            let l = logical.get_or_insert_with(String::new);
            l.push_str(stripped);
            l.push(' ');
            continue;
        }
        let mut l = logical.take().unwrap_or_default();
        l.push_str(line);
        let l = l.trim();
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        if let Some((key, value)) = l.split_once('=') {
            out.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
    }
    // A continuation at the end of the file ends the setting there.
    if let Some((key, value)) = logical.as_deref().and_then(|l| l.trim().split_once('=')) {
        out.push((section, key.trim().to_owned(), value.trim().to_owned()));
    }
    out
}

/// Parses the parts of a unit file (and then its drop-ins, in order) that name files it
/// reads or units it triggers. `name` is the unit's name, for the specifiers `%n %N %p %i
/// %I %%` in paths.
pub fn parse_units(texts: &[&str], name: &str) -> UnitInputs {
    let mut out = UnitInputs::default();
    for text in texts {
        for (_, key, value) in settings(text) {
            let value = expand_specifiers(&value, name);
            match key.as_str() {
                // An empty assignment resets the list (systemd.exec(5)).
                "EnvironmentFile" if value.is_empty() => out.environment_files.clear(),
                "EnvironmentFile" => {
                    let path = value.strip_prefix('-').unwrap_or(&value);
                    if path.starts_with('/') {
                        out.environment_files.push(path.to_owned());
                    }
                }
                "ExecReload" => {
                    out.exec_reload = !value.is_empty();
                    out.executables.extend(executable(&value));
                }
                "Service" | "Unit" => out.triggers = Some(value.clone()),
                "Accept" => out.accept = matches!(value.as_str(), "yes" | "true" | "on" | "1"),
                k if k.starts_with("Exec") => out.executables.extend(executable(&value)),
                _ => {}
            }
        }
    }
    out
}

/// Parses one unit file (see [`parse_units`]).
pub fn parse_unit(text: &str) -> UnitInputs {
    parse_units(&[text], "")
}

/// The binary of an `Exec*=` command line: prefixes `@ - : + !` stripped
/// (systemd.service(5), "Command lines"), the first word (unquoted). A bare name is looked
/// up as systemd does, first in `/usr/local/sbin` and `/usr/local/bin`: kbuild manages the
/// latter.
fn executable(value: &str) -> Vec<String> {
    let cmd = value
        .trim_start_matches(['-', '@', ':', '+', '!'])
        .trim_start();
    let word = match cmd.chars().next() {
        Some(q @ ('"' | '\'')) => cmd[1..].split(q).next().unwrap_or_default(),
        _ => cmd.split_whitespace().next().unwrap_or_default(),
    };
    if word.starts_with('/') {
        vec![word.to_owned()]
    } else if !word.is_empty() && !word.contains('/') && !word.contains('$') {
        vec![
            format!("/usr/local/sbin/{word}"),
            format!("/usr/local/bin/{word}"),
        ]
    } else {
        Vec::new()
    }
}

/// Expands the unit specifiers that name files (systemd.unit(5), "Specifiers"); one this
/// reader does not know is left as written.
fn expand_specifiers(value: &str, name: &str) -> String {
    if !value.contains('%') || name.is_empty() {
        return value.to_owned();
    }
    let expanded = crate::unit_name::expand_specifiers(value, |c| {
        Ok::<_, std::convert::Infallible>(match c {
            // `%j` is not read here (as before); `%I` is the instance, unescaped.
            Some('j') => "%j".to_owned(),
            Some('I') => crate::unit_name::name_specifier('i', name).unwrap_or_default(),
            Some(c) => crate::unit_name::name_specifier(c, name).unwrap_or_else(|| format!("%{c}")),
            None => "%".to_owned(),
        })
    });
    match expanded {
        Ok(v) => v,
        Err(never) => match never {},
    }
}

/// What a switch does to one unit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum UnitAction {
    /// New in the generation: start. Kept as systemd would have it after `systemctl start`:
    /// started whether or not the generation enables it (its `[Install]` links, see
    /// [`crate::install`], are part of the generation), and the plan says when it is not, since
    /// then boot starts it only if another unit pulls it in.
    Start {
        unit: String,
        /// A `.wants/`, `.requires/` or `.upholds/` link of the generation names it. (Absent
        /// in journals written before this was recorded: read as enabled, which they claimed.)
        #[serde(default = "enabled_by_default")]
        enabled: bool,
    },
    /// Gone from the generation: stop. (Its links went with the generation.)
    Stop { unit: String },
    /// Its unit file or a file it reads changed.
    Restart { unit: String, because: Vec<String> },
    /// Changed, and its recipe asks for `on_change = "reload"`.
    Reload { unit: String, because: Vec<String> },
    /// Changed, and its recipe asks for `on_change = "none"`: nothing is done.
    Keep { unit: String, because: Vec<String> },
    /// A changed service a socket starts on demand: stopped, so that the next connection
    /// starts the new one (and a restarted socket can take its listening sockets back).
    StopTriggered {
        unit: String,
        because: Vec<String>,
        trigger: String,
    },
    /// A changed service a timer or path unit starts: restarted only if it is running.
    TryRestart {
        unit: String,
        because: Vec<String>,
        trigger: String,
    },
}

fn enabled_by_default() -> bool {
    true
}

impl UnitAction {
    /// The action that undoes this one (a switch undone after a crash owes these).
    pub fn reversed(&self) -> UnitAction {
        match self {
            UnitAction::Start { unit, .. } => UnitAction::Stop { unit: unit.clone() },
            // Restarting a unit the undone generation had: its enablement is that generation's.
            UnitAction::Stop { unit } => UnitAction::Start {
                unit: unit.clone(),
                enabled: true,
            },
            // Going back changes the same files back: the same treatment applies.
            _ => self.clone(),
        }
    }

    pub fn unit(&self) -> &str {
        match self {
            UnitAction::Start { unit, .. }
            | UnitAction::Stop { unit }
            | UnitAction::Restart { unit, .. }
            | UnitAction::Reload { unit, .. }
            | UnitAction::Keep { unit, .. }
            | UnitAction::StopTriggered { unit, .. }
            | UnitAction::TryRestart { unit, .. } => unit,
        }
    }

    /// The systemctl commands that carry it out. Never `enable` or `disable`: `enable` would
    /// link straight into one generation's store path, `disable` would delete kbuild's links.
    pub fn commands(&self) -> Vec<Vec<String>> {
        let c = |verb: &str, unit: &str| vec![verb.to_owned(), unit.to_owned()];
        match self {
            UnitAction::Start { unit, .. } => vec![c("start", unit)],
            UnitAction::Stop { unit } => vec![c("stop", unit)],
            UnitAction::Restart { unit, .. } => vec![c("restart", unit)],
            UnitAction::Reload { unit, .. } => vec![c("reload", unit)],
            UnitAction::Keep { .. } => Vec::new(),
            UnitAction::StopTriggered { unit, .. } => vec![c("stop", unit)],
            UnitAction::TryRestart { unit, .. } => vec![c("try-restart", unit)],
        }
    }

    /// The order among the actions after the flip: stop services behind sockets first (a
    /// socket cannot be restarted while its service holds it), then restart and reload,
    /// then start.
    pub fn phase(&self) -> u8 {
        match self {
            UnitAction::Stop { .. } | UnitAction::StopTriggered { .. } => 0,
            UnitAction::Start { .. } => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for UnitAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let changed = |because: &[String]| format!("{} changed", because.join(", "));
        match self {
            UnitAction::Start {
                unit,
                enabled: true,
            } => write!(f, "start   {unit} (new)"),
            UnitAction::Start {
                unit,
                enabled: false,
            } => write!(
                f,
                "start   {unit} (new; not enabled: boot starts it only if another unit pulls it in)"
            ),
            UnitAction::Stop { unit } => write!(f, "stop    {unit} (removed)"),
            UnitAction::Restart { unit, because } => {
                write!(f, "restart {unit} ({})", changed(because))
            }
            // Everything a unit is acted on for (its unit file, drop-ins, environment files,
            // binaries) is what a reload does not give the running process.
            UnitAction::Reload { unit, because } => write!(
                f,
                "reload  {unit} ({}; on_change = \"reload\": a reload does not give the running process a new `ExecStart=`, environment or binary, `{}` does)",
                changed(because),
                shell_line(&["systemctl", "restart", unit])
            ),
            UnitAction::Keep { unit, because } => write!(
                f,
                "keep    {unit} running the old files ({}; on_change = \"none\": `{}` applies them)",
                changed(because),
                shell_line(&["systemctl", "restart", unit])
            ),
            UnitAction::StopTriggered {
                unit,
                because,
                trigger,
            } => write!(
                f,
                "stop    {unit} ({}; {trigger} starts it again on demand)",
                changed(because)
            ),
            UnitAction::TryRestart {
                unit,
                because,
                trigger,
            } => write!(
                f,
                "try-restart {unit} ({}; {trigger} starts it, so it is restarted only if running)",
                changed(because)
            ),
        }
    }
}

/// The units of one rootfs.
struct Generation<'a> {
    root: &'a Path,
    /// Unit files directly in the unit directory (not aliases, which are symlinks).
    files: BTreeSet<String>,
    /// Drop-in files: directory name → `.conf` file names.
    dropins: BTreeMap<String, BTreeSet<String>>,
    /// Units started directly: plain units and the instances the dependency directories name.
    direct: BTreeSet<String>,
    /// Services a socket, timer or path of the generation starts: service → trigger.
    triggered: BTreeMap<String, String>,
    /// `on_change` of the recipes, by unit file name.
    on_change: BTreeMap<String, OnChange>,
    /// The units the dependency directories (`*.wants/`, …) name: enabled at boot.
    enabled: BTreeSet<String>,
}

fn acted(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, t)| ACTED_TYPES.contains(&t))
}

fn list(dir: &Path) -> io::Result<Vec<(String, std::fs::FileType)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(crate::fs::annotate(e, "list", dir)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.file_type()?,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

impl<'a> Generation<'a> {
    fn read(root: &'a Path) -> io::Result<Generation<'a>> {
        let dir = root.join(UNIT_DIR);
        let mut g = Generation {
            root,
            files: BTreeSet::new(),
            dropins: BTreeMap::new(),
            direct: BTreeSet::new(),
            triggered: BTreeMap::new(),
            on_change: read_on_change(root),
            enabled: BTreeSet::new(),
        };
        let mut enabled = BTreeSet::new();
        for (name, ty) in list(&dir)? {
            if ty.is_file() && unit_name::check(&name).is_ok() {
                g.files.insert(name);
            } else if ty.is_dir() {
                if name.ends_with(".d") {
                    let confs: BTreeSet<String> = list(&dir.join(&name))?
                        .into_iter()
                        .filter(|(n, _)| n.ends_with(".conf"))
                        .map(|(n, _)| n)
                        .collect();
                    g.dropins.insert(name, confs);
                } else if DEPENDENCY_DIRS.iter().any(|k| name.ends_with(k)) {
                    // Whatever the entry is (a link to the template, to the unit), its name
                    // is the unit systemd pulls in.
                    enabled.extend(list(&dir.join(&name))?.into_iter().map(|(n, _)| n));
                }
            }
        }
        for name in &g.files {
            if acted(name) && unit_name::check(name) == Ok(NameKind::Plain) {
                g.direct.insert(name.clone());
            }
        }
        g.enabled.clone_from(&enabled);
        for name in enabled {
            if acted(&name)
                && unit_name::check(&name) == Ok(NameKind::Instance)
                && g.unit_file(&name).is_some()
            {
                g.direct.insert(name);
            }
        }
        // Services their sockets, timers and paths start.
        for trigger in g.direct.clone() {
            let Some((stem, ty)) = trigger.rsplit_once('.') else {
                continue;
            };
            if !matches!(ty, "socket" | "timer" | "path") {
                continue;
            }
            let inputs = g.inputs(&trigger)?;
            if ty == "socket" && inputs.accept {
                continue; // instances per connection, started by systemd alone
            }
            let service = inputs.triggers.unwrap_or_else(|| format!("{stem}.service"));
            if g.unit_file(&service).is_some()
                && unit_name::check(&service).is_ok_and(|k| k != NameKind::Template)
            {
                g.direct.remove(&service);
                g.triggered.insert(service, trigger);
            }
        }
        Ok(g)
    }

    /// The unit file systemd loads for `name`: its own, or its template's.
    fn unit_file(&self, name: &str) -> Option<String> {
        if self.files.contains(name) {
            return Some(name.to_owned());
        }
        unit_name::template_of(name).filter(|t| self.files.contains(t))
    }

    /// The drop-in files that apply to `name`, as paths relative to the unit directory, in
    /// the order systemd reads them.
    fn dropins_of(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for d in dropin_dirs(name) {
            if let Some(confs) = self.dropins.get(&d) {
                out.extend(confs.iter().map(|c| format!("{d}/{c}")));
            }
        }
        out
    }

    fn read_unit_text(&self, rel: &str) -> io::Result<String> {
        let p = self.root.join(UNIT_DIR).join(rel);
        Ok(String::from_utf8_lossy(&fs_err::read(p)?).into_owned())
    }

    /// What `name` reads, from its unit file and drop-ins.
    fn inputs(&self, name: &str) -> io::Result<UnitInputs> {
        let mut texts = Vec::new();
        if let Some(f) = self.unit_file(name) {
            texts.push(self.read_unit_text(&f)?);
        }
        for d in self.dropins_of(name) {
            texts.push(self.read_unit_text(&d)?);
        }
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        Ok(parse_units(&refs, name))
    }

    fn policy(&self, name: &str) -> OnChange {
        self.on_change
            .get(name)
            .or_else(|| unit_name::template_of(name).and_then(|t| self.on_change.get(&t)))
            .copied()
            .unwrap_or(OnChange::Restart)
    }

    fn has(&self, name: &str) -> bool {
        self.direct.contains(name) || self.triggered.contains_key(name)
    }
}

/// The drop-in directories (relative to the unit directory) that apply to unit `name`, in
/// the order systemd reads them: the type level (`service.d`), each prefix up to a `-`
/// (`foo-.service.d`), the template's (`foo@.service.d`), the unit's own.
pub fn dropin_dirs(name: &str) -> Vec<String> {
    let mut dirs = Vec::new();
    if let Some((stem, ty)) = name.rsplit_once('.') {
        dirs.push(format!("{ty}.d"));
        let parts: Vec<&str> = stem.split('-').collect();
        for k in 1..parts.len() {
            dirs.push(format!("{}-.{ty}.d", parts[..k].join("-")));
        }
    }
    if let Some(t) = unit_name::template_of(name) {
        dirs.push(format!("{t}.d"));
    }
    dirs.push(format!("{name}.d"));
    dirs
}

/// The `units` table of a rootfs's `kbuild.json`: unit file name → `on_change`.
fn read_on_change(root: &Path) -> BTreeMap<String, OnChange> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        #[serde(default)]
        units: BTreeMap<String, UnitManifest>,
    }
    #[derive(serde::Deserialize)]
    struct UnitManifest {
        on_change: OnChange,
    }
    std::fs::read(root.join("kbuild.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .map(|m| m.units.into_iter().map(|(k, v)| (k, v.on_change)).collect())
        .unwrap_or_default()
}

/// The files under `root` matching the glob `pattern` (absolute; `*`, `?`, `[…]` within one
/// component, as glob(3) that systemd uses for `EnvironmentFile=`).
fn glob_in(root: &Path, pattern: &str) -> io::Result<Vec<String>> {
    let mut found = vec![String::new()];
    for comp in pattern.trim_start_matches('/').split('/') {
        let mut next = Vec::new();
        for base in &found {
            if !comp.contains(['*', '?', '[']) {
                next.push(format!("{base}/{comp}"));
                continue;
            }
            let dir = root.join(base.trim_start_matches('/'));
            for (name, _) in list(&dir).unwrap_or_default() {
                if !name.starts_with('.') && glob_match(comp.as_bytes(), name.as_bytes()) {
                    next.push(format!("{base}/{name}"));
                }
            }
        }
        found = next;
    }
    Ok(found
        .into_iter()
        .filter(|p| root.join(p.trim_start_matches('/')).is_file())
        .collect())
}

/// Matches one path component against a glob component.
fn glob_match(pat: &[u8], name: &[u8]) -> bool {
    match (pat.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pat[1..], name) || (!name.is_empty() && glob_match(pat, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pat[1..], &name[1..]),
        (Some(b'['), Some(&c)) => {
            let Some(end) = pat.iter().skip(2).position(|&b| b == b']').map(|p| p + 2) else {
                return c == b'[' && glob_match(&pat[1..], &name[1..]);
            };
            let class = &pat[1..end];
            let (negate, class) = match class.first() {
                Some(b'!' | b'^') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob_match(&pat[end + 1..], &name[1..])
        }
        (Some(&p), Some(&c)) => p == c && glob_match(&pat[1..], &name[1..]),
        _ => false,
    }
}

/// Whether the file at `rel` differs between two rootfs (missing in both: not ours, e.g. a
/// host file).
fn differs(old: &Path, new: &Path, rel: &str) -> io::Result<bool> {
    let rel = rel.trim_start_matches('/');
    let (a, b) = (old.join(rel), new.join(rel));
    Ok(match (a.is_file(), b.is_file()) {
        (false, false) => false,
        (true, true) => !same_file(&a, &b)?,
        _ => true,
    })
}

/// Why `unit` must be acted on: the files it reads that changed between `old` and `new`.
fn changes(old: &Generation, new: &Generation, unit: &str) -> io::Result<Vec<String>> {
    let mut because = Vec::new();
    let mut add = |s: String| {
        if !because.contains(&s) {
            because.push(s);
        }
    };
    let (of, nf) = (old.unit_file(unit), new.unit_file(unit));
    if let Some(f) = &nf
        && (of.as_ref() != Some(f) || differs(old.root, new.root, &format!("{UNIT_DIR}/{f}"))?)
    {
        add(format!("/{UNIT_DIR}/{f}"));
    }
    // In the order systemd reads them, then the ones the new generation lacks.
    let mut dropins = new.dropins_of(unit);
    for d in old.dropins_of(unit) {
        if !dropins.contains(&d) {
            dropins.push(d);
        }
    }
    for d in dropins {
        if differs(old.root, new.root, &format!("{UNIT_DIR}/{d}"))? {
            add(format!("drop-in {d}"));
        }
    }
    let (oi, ni) = (old.inputs(unit)?, new.inputs(unit)?);
    let mut files = BTreeSet::new();
    for pattern in oi.environment_files.iter().chain(&ni.environment_files) {
        if pattern.contains(['*', '?', '[']) {
            files.extend(glob_in(old.root, pattern)?);
            files.extend(glob_in(new.root, pattern)?);
        } else {
            files.insert(pattern.clone());
        }
    }
    let mut ordered: Vec<String> = ni
        .environment_files
        .iter()
        .filter(|p| files.contains(*p))
        .cloned()
        .collect();
    ordered.extend(
        files
            .into_iter()
            .filter(|f| !ni.environment_files.contains(f)),
    );
    ordered.extend(ni.executables.iter().chain(&oi.executables).cloned());
    for file in ordered {
        if differs(old.root, new.root, &file)? {
            add(file);
        }
    }
    Ok(because)
}

/// The unit actions that moving from `old` to `new` (rootfs directories) needs.
pub fn plan(old: Option<&Path>, new: &Path) -> io::Result<Vec<UnitAction>> {
    let empty = no_rootfs();
    let new_g = Generation::read(new)?;
    let old_g = match old {
        Some(o) => Generation::read(o)?,
        None => Generation::read(&empty)?,
    };
    let mut actions = Vec::new();
    let units: BTreeSet<&String> = new_g.direct.iter().chain(new_g.triggered.keys()).collect();
    let mut restarted_sockets = Vec::new();
    for unit in units {
        let trigger = new_g.triggered.get(unit);
        if !old_g.has(unit) {
            if trigger.is_none() {
                actions.push(UnitAction::Start {
                    unit: unit.clone(),
                    enabled: new_g.enabled.contains(unit),
                });
            }
            continue;
        }
        let because = changes(&old_g, &new_g, unit)?;
        let newly_direct = trigger.is_none() && !old_g.direct.contains(unit);
        if because.is_empty() {
            if newly_direct {
                actions.push(UnitAction::Start {
                    unit: unit.clone(),
                    enabled: new_g.enabled.contains(unit),
                });
            }
            continue;
        }
        let unit = unit.clone();
        let action = match (new_g.policy(&unit), trigger) {
            (OnChange::None, _) => UnitAction::Keep { unit, because },
            (OnChange::Reload, _) => UnitAction::Reload { unit, because },
            (OnChange::Restart, Some(t)) if t.ends_with(".socket") => UnitAction::StopTriggered {
                unit,
                because,
                trigger: t.clone(),
            },
            (OnChange::Restart, Some(t)) => UnitAction::TryRestart {
                unit,
                because,
                trigger: t.clone(),
            },
            (OnChange::Restart, None) => {
                if unit.ends_with(".socket") {
                    restarted_sockets.push(unit.clone());
                }
                UnitAction::Restart { unit, because }
            }
        };
        actions.push(action);
    }
    // A restarted socket: its service is stopped first (it holds the socket; the restarted
    // socket starts the new one on demand).
    for socket in restarted_sockets {
        for (service, t) in &new_g.triggered {
            if *t == socket && old_g.has(service) && !actions.iter().any(|a| a.unit() == service) {
                actions.push(UnitAction::StopTriggered {
                    unit: service.clone(),
                    because: vec![format!("{socket}")],
                    trigger: socket.clone(),
                });
            }
        }
    }
    let old_units: BTreeSet<&String> = old_g.direct.iter().chain(old_g.triggered.keys()).collect();
    for unit in old_units {
        if !new_g.has(unit) {
            actions.push(UnitAction::Stop { unit: unit.clone() });
        }
    }
    Ok(actions)
}

/// A path that holds no rootfs (the "before" of a first switch).
fn no_rootfs() -> std::path::PathBuf {
    std::path::PathBuf::from("/nonexistent/kbuild-empty-rootfs")
}

/// Whether two files have the same bytes: hardlinks to one store object are recognised
/// without reading them. A link of a rootfs (an enablement link, see [`crate::install`]) is
/// the same when it names the same file: what that file holds is its unit's change.
pub fn same_file(a: &Path, b: &Path) -> io::Result<bool> {
    let (la, lb) = (fs_err::symlink_metadata(a)?, fs_err::symlink_metadata(b)?);
    if la.is_symlink() || lb.is_symlink() {
        return Ok(la.is_symlink()
            && lb.is_symlink()
            && fs_err::read_link(a)? == fs_err::read_link(b)?);
    }
    let (ma, mb) = (fs_err::metadata(a)?, fs_err::metadata(b)?);
    if ma.dev() == mb.dev() && ma.ino() == mb.ino() {
        return Ok(true);
    }
    if ma.len() != mb.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (fs_err::File::open(a)?, fs_err::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_environment_files_and_binaries() {
        let unit = "[Service]\nEnvironmentFile=-/etc/kubernetes/config\nEnvironmentFile=/etc/kubernetes/apiserver\nExecStart=/usr/local/bin/kube-apiserver \\\n        $KUBE_LOGTOSTDERR \\\n        $KUBE_API_ARGS\nExecStartPre=-/bin/true\nRestart=on-failure\n";
        assert_eq!(
            parse_unit(unit),
            UnitInputs {
                environment_files: vec![
                    "/etc/kubernetes/config".into(),
                    "/etc/kubernetes/apiserver".into()
                ],
                executables: vec!["/usr/local/bin/kube-apiserver".into(), "/bin/true".into()],
                ..UnitInputs::default()
            }
        );
    }

    #[test]
    fn exec_prefixes_specifiers_and_resets() {
        let unit = "[Service]\nEnvironmentFile=/etc/a\nEnvironmentFile=\nEnvironmentFile=-/etc/etcd/%i.env\nExecStartPre=+!-/usr/local/bin/pre x\nExecStart=@\"/usr/local/bin/my d\" arg\nExecReload=kill -HUP $MAINPID\n";
        let got = parse_units(&[unit], "etcd@a.service");
        assert_eq!(got.environment_files, vec!["/etc/etcd/a.env".to_owned()]);
        assert_eq!(
            got.executables,
            vec![
                "/usr/local/bin/pre".to_owned(),
                "/usr/local/bin/my d".to_owned(),
                "/usr/local/sbin/kill".to_owned(),
                "/usr/local/bin/kill".to_owned()
            ]
        );
        assert!(got.exec_reload);
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"*.env", b"a.env"));
        assert!(!glob_match(b"*.env", b"a.conf"));
        assert!(glob_match(b"a[0-9]?", b"a1x"));
        assert!(!glob_match(b"a[!0-9]", b"a1"));
    }

    /// A rootfs with `files` (relative paths) and symlinks `(path, target)`.
    fn rootfs(files: &[(&str, &str)], links: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        for (path, target) in links {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, p).unwrap();
        }
        dir
    }

    const TEMPLATE: &str = "etc/systemd/system/etcd-member@.service";
    const WANTS: &str = "etc/systemd/system/multi-user.target.wants";

    fn member(unit: &str, extra: &[(&str, &str)], instances: &[&str]) -> tempfile::TempDir {
        let mut files = vec![
            (TEMPLATE, unit),
            ("etc/etcd/a.env", "A=1\n"),
            ("etc/etcd/b.env", "B=1\n"),
        ];
        files.extend_from_slice(extra);
        let links: Vec<(String, &str)> = instances
            .iter()
            .map(|i| {
                (
                    format!("{WANTS}/etcd-member@{i}.service"),
                    "../etcd-member@.service",
                )
            })
            .collect();
        let links: Vec<(&str, &str)> = links.iter().map(|(p, t)| (p.as_str(), *t)).collect();
        rootfs(&files, &links)
    }

    const UNIT: &str =
        "[Service]\nEnvironmentFile=/etc/etcd/%i.env\nExecStart=/usr/local/bin/etcd --name %i\n";

    fn names(actions: &[UnitAction]) -> Vec<String> {
        actions.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn instances_named_by_the_generation_links_are_started_never_the_template() {
        let g = member(UNIT, &[], &["a", "b"]);
        let actions = plan(None, g.path()).unwrap();
        assert_eq!(
            names(&actions),
            vec![
                "start   etcd-member@a.service (new)",
                "start   etcd-member@b.service (new)"
            ]
        );
        // Enabled by the links already: only started.
        assert_eq!(
            actions[0].commands(),
            vec![vec!["start".to_owned(), "etcd-member@a.service".to_owned()]]
        );
        // Without links: nothing at all.
        let bare = member(UNIT, &[], &[]);
        assert_eq!(plan(None, bare.path()).unwrap(), vec![]);
    }

    #[test]
    fn a_changed_template_restarts_its_enabled_instances() {
        let old = member(UNIT, &[], &["a", "b"]);
        let changed = format!("{UNIT}Nice=5\n");
        let new = member(&changed, &[], &["a", "b"]);
        assert_eq!(
            names(&plan(Some(old.path()), new.path()).unwrap()),
            vec![
                "restart etcd-member@a.service (/etc/systemd/system/etcd-member@.service changed)",
                "restart etcd-member@b.service (/etc/systemd/system/etcd-member@.service changed)"
            ]
        );
    }

    #[test]
    fn an_instance_reads_its_own_specifier_files_and_drop_ins() {
        let old = member(UNIT, &[], &["a", "b"]);
        let new = member(
            UNIT,
            &[
                ("etc/etcd/a.env", "A=2\n"),
                (
                    "etc/systemd/system/etcd-member@b.service.d/x.conf",
                    "[Service]\nNice=1\n",
                ),
            ],
            &["a", "b"],
        );
        assert_eq!(
            names(&plan(Some(old.path()), new.path()).unwrap()),
            vec![
                "restart etcd-member@a.service (/etc/etcd/a.env changed)",
                "restart etcd-member@b.service (drop-in etcd-member@b.service.d/x.conf changed)"
            ]
        );
        // A template-level drop-in applies to every instance.
        let new = member(
            UNIT,
            &[(
                "etc/systemd/system/etcd-member@.service.d/x.conf",
                "[Service]\nNice=1\n",
            )],
            &["a"],
        );
        let actions = plan(Some(old.path()), new.path()).unwrap();
        assert_eq!(
            names(&actions),
            vec![
                "restart etcd-member@a.service (drop-in etcd-member@.service.d/x.conf changed)",
                "stop    etcd-member@b.service (removed)"
            ]
        );
        // Its link is gone, not its template: stopped, never `systemctl disable`d.
        assert_eq!(
            actions[1].commands(),
            vec![vec!["stop".to_owned(), "etcd-member@b.service".to_owned()]]
        );
    }

    #[test]
    fn on_change_of_a_template_applies_to_its_instances() {
        let old = member(UNIT, &[], &["a"]);
        let manifest = r#"{"units": {"etcd-member@.service": {"on_change": "reload"}}}"#;
        let new = member(
            UNIT,
            &[("etc/etcd/a.env", "A=2\n"), ("kbuild.json", manifest)],
            &["a"],
        );
        assert_eq!(
            names(&plan(Some(old.path()), new.path()).unwrap()),
            vec![
                "reload  etcd-member@a.service (/etc/etcd/a.env changed; on_change = \"reload\": a reload does not give the running process a new `ExecStart=`, environment or binary, `systemctl restart etcd-member@a.service` does)"
            ]
        );
    }

    #[test]
    fn aliases_are_not_units_of_their_own() {
        let g = rootfs(
            &[("etc/systemd/system/etcd.service", UNIT)],
            &[("etc/systemd/system/etcd2.service", "etcd.service")],
        );
        assert_eq!(
            names(&plan(None, g.path()).unwrap()),
            vec![
                "start   etcd.service (new; not enabled: boot starts it only if another unit pulls it in)"
            ]
        );
    }
}
