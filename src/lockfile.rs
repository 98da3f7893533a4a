//! `flake-like.lock.json`: the pins of every input (URLs, a `sha256` or `sha512` digest, size).
//!
//! Versioned JSON with sorted keys, rewritten only when its content changes, atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::pin::{Algo, Pin};

pub const FILE_NAME: &str = "flake-like.lock.json";
const VERSION: u32 = 1;

/// One input's entry. On disk the digest is under its algorithm's name (`"sha256"` or
/// `"sha512"`, exactly one), so entries written before sha512 existed read and write back
/// byte for byte.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "EntryOnDisk", into = "EntryOnDisk")]
pub struct LockedInput {
    /// The URLs the pin was made from: primary first, then mirrors.
    pub urls: Vec<String>,
    pub pin: Pin,
    /// Size in bytes, once known (filled in by the first fetch). A download delivering more
    /// is cut off right after this many bytes.
    pub size: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryOnDisk {
    urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha512: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
}

impl TryFrom<EntryOnDisk> for LockedInput {
    type Error = String;
    fn try_from(e: EntryOnDisk) -> Result<LockedInput, String> {
        let (algo, hex) = match (e.sha256, e.sha512) {
            (Some(h), None) => (Algo::Sha256, h),
            (None, Some(h)) => (Algo::Sha512, h),
            (Some(_), Some(_)) => return Err("an entry has both `sha256` and `sha512`".into()),
            (None, None) => return Err("an entry needs `sha256` or `sha512`".into()),
        };
        // The file is written by kbuild: lowercase only, so every pin has one spelling.
        if hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("`{algo}` must be lowercase hexadecimal digits"));
        }
        let pin = Pin::from_hex(algo, &hex)?;
        Ok(LockedInput {
            urls: e.urls,
            pin,
            size: e.size,
        })
    }
}

impl From<LockedInput> for EntryOnDisk {
    fn from(l: LockedInput) -> EntryOnDisk {
        let hex = Some(l.pin.hex().to_owned());
        let (sha256, sha512) = match l.pin.algo() {
            Algo::Sha256 => (hex, None),
            Algo::Sha512 => (None, hex),
        };
        EntryOnDisk {
            urls: l.urls,
            sha256,
            sha512,
            size: l.size,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockFile {
    pub inputs: BTreeMap<String, LockedInput>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    inputs: BTreeMap<String, LockedInput>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read lock file `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: invalid lock file: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("lock file `{}` has version {found}; this kbuild reads version {VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write lock file `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A position editors can go to (lines and columns from 1). serde_json reports column 0 for
/// the start of a line (an unexpected end of file after the last newline): that is the end of
/// the line before it.
fn position(text: &str, line: usize, column: usize) -> (usize, usize) {
    if column > 0 || line == 0 {
        return (line.max(1), column.max(1));
    }
    if line == 1 {
        return (1, 1);
    }
    let before = text.lines().nth(line - 2).unwrap_or_default();
    (line - 1, before.chars().count() + 1)
}

impl LockError {
    pub fn help(&self) -> Option<String> {
        match self {
            LockError::Parse { .. } => Some(
                "fix the file by hand at that line and column, or delete it and pin the inputs again: `kbuild lock` (without the network: `kbuild lock --override-input NAME=file:///path/to/file`)"
                    .into(),
            ),
            _ => None,
        }
    }
}

/// `NAME sha256 OLD -> NEW`, or `NAME sha256 OLD -> sha512 NEW` when the algorithm changed.
pub fn update_line(name: &str, old: &Pin, new: &Pin) -> String {
    if old.algo() == new.algo() {
        format!("{name} {old} -> {}", new.hex())
    } else {
        format!("{name} {old} -> {new}")
    }
}

impl LockFile {
    /// Reads the lock file; a missing file is an empty lock.
    pub fn load(path: &Path) -> Result<LockFile, LockError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LockFile::default()),
            Err(source) => {
                return Err(LockError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        LockFile::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<LockFile, LockError> {
        let parse_err = |e: serde_json::Error| {
            let (line, column) = position(text, e.line(), e.column());
            // serde_json appends " at line L column C"; the prefix already says where.
            let message = e.to_string();
            let message = match message.rfind(" at line ") {
                Some(i) => message[..i].to_owned(),
                None => message,
            };
            LockError::Parse {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        };
        // Check the version before the shape, so a future format gets the right message.
        let value: serde_json::Value = serde_json::from_str(text).map_err(parse_err)?;
        let found = value.get("version").and_then(serde_json::Value::as_u64);
        if found != Some(u64::from(VERSION)) {
            return Err(LockError::Version {
                path: path.to_owned(),
                found: found.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
            });
        }
        let disk: OnDisk = serde_json::from_str(text).map_err(parse_err)?;
        Ok(LockFile {
            inputs: disk.inputs,
        })
    }

    /// Whether both pin the same inputs to the same URLs and hashes (sizes aside).
    pub fn same_pins(&self, other: &LockFile) -> bool {
        self.inputs.len() == other.inputs.len()
            && self.inputs.iter().all(|(k, a)| {
                other
                    .inputs
                    .get(k)
                    .is_some_and(|b| a.urls == b.urls && a.pin == b.pin)
            })
    }

    /// The changes from `old` to this lock, as (verb, message) status lines.
    pub fn changes_from(&self, old: &LockFile) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, new) in &self.inputs {
            match old.inputs.get(name) {
                None => out.push(("Locking".into(), format!("{name} {}", new.pin))),
                Some(o) if o.pin != new.pin => {
                    out.push(("Updating".into(), update_line(name, &o.pin, &new.pin)));
                }
                Some(o) if o.urls != new.urls => out.push((
                    "Updating".into(),
                    format!(
                        "{name} URLs to {} ({} unchanged)",
                        new.urls.join(", "),
                        new.pin.algo()
                    ),
                )),
                Some(_) => {}
            }
        }
        for name in old.inputs.keys().filter(|k| !self.inputs.contains_key(*k)) {
            out.push(("Removing".into(), format!("{name} (no recipe declares it)")));
        }
        out
    }

    /// The exact bytes written: 2-space indented, keys sorted, trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let disk = OnDisk {
            version: VERSION,
            inputs: self.inputs.clone(),
        };
        // Through `Value`, whose maps are sorted: every key in the file is in sorted order.
        let value = serde_json::to_value(&disk).expect("lock serializes");
        let mut out = serde_json::to_vec_pretty(&value).expect("lock serializes");
        out.push(b'\n');
        out
    }

    /// Writes the lock if its bytes differ from the file's. Returns whether it wrote. An
    /// empty lock is not created where none exists.
    pub fn save(&self, path: &Path) -> Result<bool, LockError> {
        if self.inputs.is_empty() && !path.exists() {
            return Ok(false);
        }
        crate::fs::write_if_changed(path, &self.to_bytes()).map_err(|source| LockError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_stable() {
        let mut lock = LockFile::default();
        lock.inputs.insert(
            "b".into(),
            LockedInput {
                urls: vec!["https://x/b".into()],
                pin: Pin::from_hex(Algo::Sha256, &"0".repeat(64)).unwrap(),
                size: Some(3),
            },
        );
        lock.inputs.insert(
            "a".into(),
            LockedInput {
                urls: vec!["https://x/a".into()],
                pin: Pin::from_hex(Algo::Sha512, &"1".repeat(128)).unwrap(),
                size: None,
            },
        );
        let bytes = lock.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.find("\"a\"").unwrap() < text.find("\"b\"").unwrap());
        assert_eq!(LockFile::parse(Path::new("l"), &text).unwrap(), lock);
        assert_eq!(
            LockFile::parse(Path::new("l"), &text).unwrap().to_bytes(),
            bytes
        );
    }

    #[test]
    fn future_version_is_refused_by_name() {
        let err = LockFile::parse(Path::new("l"), r#"{"version": 2, "inputs": {}}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "lock file `l` has version 2; this kbuild reads version 1"
        );
    }
}
