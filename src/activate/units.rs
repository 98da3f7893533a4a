//! systemd units in a rootfs: what each unit reads, and which units a switch must act on.
//!
//! A unit is restarted when its unit file **or any file it reads** changed: its
//! `EnvironmentFile=`s and the binaries of its `Exec*=` lines. That is what NixOS's
//! switch-to-configuration misses for config-only changes, and what an operator expects when
//! editing `/etc/kubernetes/apiserver`.

use std::collections::BTreeMap;
use std::fmt;
use std::io;

use crate::fs::read_full;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Where unit files live in a rootfs (and in the root).
pub const UNIT_DIR: &str = "etc/systemd/system";

/// Files a unit reads, as absolute paths on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitInputs {
    pub environment_files: Vec<String>,
    pub executables: Vec<String>,
}

/// Parses the parts of a unit file that name files it reads. Continuation lines (`\` at the
/// end) are joined, as systemd does.
pub fn parse_unit(text: &str) -> UnitInputs {
    let mut out = UnitInputs::default();
    let mut logical = String::new();
    for line in text.lines() {
        if let Some(stripped) = line.strip_suffix('\\') {
            logical.push_str(stripped);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let l = std::mem::take(&mut logical);
        let l = l.trim();
        let Some((key, value)) = l.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "EnvironmentFile" => {
                let path = value.trim_start_matches('-');
                if path.starts_with('/') {
                    out.environment_files.push(path.to_owned());
                }
            }
            k if k.starts_with("Exec") => {
                // Prefixes: - @ : + ! (systemd.service(5), "Command lines").
                let cmd = value.trim_start_matches(['-', '@', ':', '+', '!']);
                if let Some(bin) = cmd.split_whitespace().next()
                    && bin.starts_with('/')
                {
                    out.executables.push(bin.to_owned());
                }
            }
            _ => {}
        }
    }
    out
}

/// What a switch does to one unit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum UnitAction {
    /// New in the generation: enable and start.
    Start { unit: String },
    /// Gone from the generation: stop and disable.
    Stop { unit: String },
    /// Its unit file or a file it reads changed.
    Restart { unit: String, because: Vec<String> },
}

impl UnitAction {
    /// The action that undoes this one (a switch undone after a crash owes these).
    pub fn reversed(&self) -> UnitAction {
        match self {
            UnitAction::Start { unit } => UnitAction::Stop { unit: unit.clone() },
            UnitAction::Stop { unit } => UnitAction::Start { unit: unit.clone() },
            UnitAction::Restart { .. } => self.clone(),
        }
    }

    pub fn unit(&self) -> &str {
        match self {
            UnitAction::Start { unit }
            | UnitAction::Stop { unit }
            | UnitAction::Restart { unit, .. } => unit,
        }
    }

    /// The systemctl commands that carry it out.
    pub fn commands(&self) -> Vec<Vec<String>> {
        let c = |args: &[&str], unit: &str| {
            let mut v: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
            v.push(unit.to_owned());
            v
        };
        match self {
            UnitAction::Start { unit } => vec![c(&["enable"], unit), c(&["start"], unit)],
            UnitAction::Stop { unit } => vec![c(&["stop"], unit), c(&["disable"], unit)],
            UnitAction::Restart { unit, .. } => vec![c(&["restart"], unit)],
        }
    }
}

impl fmt::Display for UnitAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitAction::Start { unit } => write!(f, "start   {unit} (new)"),
            UnitAction::Stop { unit } => write!(f, "stop    {unit} (removed)"),
            UnitAction::Restart { unit, because } => {
                write!(f, "restart {unit} ({} changed)", because.join(", "))
            }
        }
    }
}

/// Unit files (`*.service`) of a rootfs: name → unit file path.
fn units_of(rootfs: &Path) -> io::Result<BTreeMap<String, std::path::PathBuf>> {
    let dir = rootfs.join(UNIT_DIR);
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(crate::fs::annotate(e, "list", &dir)),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".service") {
            out.insert(name, entry.path());
        }
    }
    Ok(out)
}

/// The unit actions that moving from `old` to `new` (rootfs directories) needs.
pub fn plan(old: Option<&Path>, new: &Path) -> io::Result<Vec<UnitAction>> {
    let new_units = units_of(new)?;
    let old_units = match old {
        Some(o) => units_of(o)?,
        None => BTreeMap::new(),
    };
    let mut actions = Vec::new();
    for (unit, path) in &new_units {
        let Some(old_root) = old.filter(|_| old_units.contains_key(unit)) else {
            actions.push(UnitAction::Start { unit: unit.clone() });
            continue;
        };
        let mut because = Vec::new();
        let unit_rel = format!("{UNIT_DIR}/{unit}");
        if !same_file(&old_root.join(&unit_rel), path)? {
            because.push(format!("/{unit_rel}"));
        }
        let text = fs_err::read_to_string(path)?;
        let inputs = parse_unit(&text);
        for file in inputs.environment_files.iter().chain(&inputs.executables) {
            let rel = file.trim_start_matches('/');
            let (a, b) = (old_root.join(rel), new.join(rel));
            // Files the rootfs does not manage (host files) are not ours to compare.
            let changed = match (a.exists(), b.exists()) {
                (false, false) => false,
                (true, true) => !same_file(&a, &b)?,
                _ => true,
            };
            if changed && !because.contains(file) {
                because.push(file.clone());
            }
        }
        if !because.is_empty() {
            actions.push(UnitAction::Restart {
                unit: unit.clone(),
                because,
            });
        }
    }
    for unit in old_units.keys() {
        if !new_units.contains_key(unit) {
            actions.push(UnitAction::Stop { unit: unit.clone() });
        }
    }
    Ok(actions)
}

/// Whether two files have the same bytes: hardlinks to one store object are recognised
/// without reading them.
pub fn same_file(a: &Path, b: &Path) -> io::Result<bool> {
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
            }
        );
    }
}
