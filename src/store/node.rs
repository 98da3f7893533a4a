//! The canonical serialization of store objects (format `kbuild-v1`), specified in
//! `docs/store-format.md` and pinned by golden tests.
//!
//! A store object is a tree of [`Node`]s. Each node's digest is BLAKE3 over a tagged,
//! length-prefixed encoding; a directory's encoding holds its children's digests (a Merkle
//! tree, as in tvix/snix castore). That lets the rootfs be hashed from its components'
//! digests without re-reading hundreds of megabytes of binaries. Only the entry names, the
//! type, the executable bit, sizes, bytes and symlink targets enter the hash: never mtimes,
//! owners or other mode bits.

use std::collections::BTreeMap;
use std::fmt;

/// Prefix of every encoding; a format change must change it (and the golden tests).
pub const FORMAT: &str = "kbuild-v1";

/// A BLAKE3 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn to_hex(self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    pub fn from_hex(s: &str) -> Option<Digest> {
        blake3::Hash::from_hex(s)
            .ok()
            .map(|h| Digest(*h.as_bytes()))
    }

    /// The hash part of a store path name: the first 32 hex digits (128 bits).
    pub fn store_hash(self) -> String {
        self.to_hex()[..32].to_owned()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One entry of a store object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A regular file, described by its size and the plain BLAKE3 of its bytes.
    File {
        executable: bool,
        size: u64,
        contents: Digest,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// Children by name; `BTreeMap` keeps them in the byte order the encoding requires.
    Directory(BTreeMap<Vec<u8>, Node>),
}

impl Node {
    /// A file node for `bytes` held in memory.
    pub fn file(bytes: &[u8], executable: bool) -> Node {
        Node::File {
            executable,
            size: bytes.len() as u64,
            contents: Digest(*blake3::hash(bytes).as_bytes()),
        }
    }

    /// The node's digest (BLAKE3 of its encoding, see the module docs).
    pub fn digest(&self) -> Digest {
        let mut h = blake3::Hasher::new();
        match self {
            Node::File {
                executable,
                size,
                contents,
            } => {
                tag(&mut h, "file");
                h.update(&[u8::from(*executable)]);
                h.update(&size.to_le_bytes());
                h.update(&contents.0);
            }
            Node::Symlink { target } => {
                tag(&mut h, "symlink");
                bytes(&mut h, target);
            }
            Node::Directory(entries) => {
                tag(&mut h, "directory");
                h.update(&(entries.len() as u64).to_le_bytes());
                for (name, child) in entries {
                    bytes(&mut h, name);
                    h.update(&child.digest().0);
                }
            }
        }
        Digest(*h.finalize().as_bytes())
    }
}

fn tag(h: &mut blake3::Hasher, kind: &str) {
    h.update(FORMAT.as_bytes());
    h.update(b":");
    h.update(kind.as_bytes());
    h.update(&[0]);
}

fn bytes(h: &mut blake3::Hasher, b: &[u8]) {
    h.update(&(b.len() as u64).to_le_bytes());
    h.update(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(entries: Vec<(&str, Node)>) -> Node {
        Node::Directory(
            entries
                .into_iter()
                .map(|(n, c)| (n.as_bytes().to_vec(), c))
                .collect(),
        )
    }

    /// Golden digests, computed independently by the Python reference implementation in
    /// docs/store-format.md. If one of these changes, the store format changed: bump `FORMAT`,
    /// document the new version, then update the values.
    #[test]
    fn golden_digests_of_format_v1() {
        let file = Node::file(b"hello\n", false);
        let exec = Node::file(b"#!/bin/sh\n", true);
        let link = Node::Symlink {
            target: b"../bin/x".to_vec(),
        };
        let cases = [
            (
                &file,
                "80b192294aa20e6db589c8d413c1a65bc5c4ab48b744bb238b6058456c59753f",
            ),
            (
                &exec,
                "da93b5c1b6a579b15a8e6771c9a7760c7a6dfe73aef266636a3dc75cd8a3032f",
            ),
            (
                &link,
                "97c39e9d8b90aec3d2f2795b8b939c0e742f992373569cbbecf2a75ff4f0f156",
            ),
        ];
        for (node, hex) in cases {
            assert_eq!(node.digest().to_hex(), hex, "{node:?}");
        }
        assert_eq!(
            dir(vec![]).digest().to_hex(),
            "69ef3da454171ec783e1b9efb377ed8367be443c16e5790163edb9ed30dc9fb7"
        );
        let tree = dir(vec![
            ("etc", dir(vec![("config", file)])),
            (
                "bin",
                dir(vec![
                    ("x", exec),
                    (
                        "y",
                        Node::Symlink {
                            target: b"x".to_vec(),
                        },
                    ),
                ]),
            ),
        ]);
        assert_eq!(
            tree.digest().to_hex(),
            "b3ac0027bb7765944e4771efdcd8e73296ad367734e348d70310c6e8b7e16afc"
        );
        assert_eq!(
            tree.digest().store_hash(),
            "b3ac0027bb7765944e4771efdcd8e732"
        );
    }

    #[test]
    fn executable_bit_and_name_order_matter_but_insertion_order_does_not() {
        let a = Node::file(b"x", false);
        let b = Node::file(b"x", true);
        assert_ne!(a.digest(), b.digest());
        let d1 = dir(vec![("a", a.clone()), ("b", b.clone())]);
        let d2 = dir(vec![("b", b), ("a", a)]);
        assert_eq!(d1.digest(), d2.digest());
    }
}
