//! Derivation keys: a hash of a specified encoding of a build step and its inputs
//! (documented in `docs/store-format.md`), never of a serde dump of a struct that may change.
//!
//! Only steps whose output cannot be computed cheaply need a key: *unpack* (fetch + select
//! members) is identified by the input's sha256 and the members kept, and its key indexes
//! the outputs so a rebuild never touches the network. *Render* and *rootfs* outputs are
//! addressed by their content directly (rendering takes microseconds and the rootfs digest
//! is a Merkle hash over its components' digests), so they need no index.

use crate::pin::Pin;
use crate::unpack::{ModeRule, Wanted};

/// Prefix of every derivation encoding; changing the encoding must change it.
pub const FORMAT: &str = "kbuild-drv-v1";

/// Writes the length-prefixed fields of one derivation into BLAKE3.
struct Encoder(blake3::Hasher);

impl Encoder {
    fn new(kind: &str) -> Encoder {
        let mut e = Encoder(blake3::Hasher::new());
        e.field(FORMAT.as_bytes());
        e.field(kind.as_bytes());
        e
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Encoder {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    fn finish(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

/// The key of unpacking `wanted` (in any order) from the archive with this pin. A sha256 pin
/// enters as its bare hex, as before other algorithms existed, so existing index entries
/// keep answering; a sha512 pin as `sha512:<hex>` (see [`Pin::key`]).
pub fn unpack_key(pin: &Pin, wanted: &[Wanted]) -> String {
    unpack_key_of(&pin.key(), wanted)
}

/// The path name part of the store object that keeps the archive pinned by `pin`: the first
/// 32 hex digits of the BLAKE3 of the encoding of ("fixed", algorithm, hex digest). Like a
/// Nix fixed-output path it depends on the pin only, so the archive is found without any
/// index, by any store holding it.
pub fn fixed_hash(pin: &Pin) -> String {
    fixed_digest(pin)[..32].to_owned()
}

/// The full digest [`fixed_hash`] is the start of (recorded as the kept object's `digest`).
pub fn fixed_digest(pin: &Pin) -> String {
    let mut e = Encoder::new("fixed");
    e.field(pin.algo().name().as_bytes())
        .field(pin.hex().as_bytes());
    e.finish()
}

fn unpack_key_of(sha256: &str, wanted: &[Wanted]) -> String {
    let mut sorted = wanted.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut e = Encoder::new("unpack");
    e.field(sha256.as_bytes())
        .field(&(sorted.len() as u64).to_le_bytes());
    for w in &sorted {
        // 0 and 1 are the recipe's explicit 0444/0555 (the only values before the archive's
        // bits were kept, so old index entries keep answering explicit modes correctly); 2
        // is "no `mode`: the archive's x bits", which no old entry can have been keyed by.
        let tag = match w.mode {
            ModeRule::Fixed(x) => u8::from(x),
            ModeRule::FromArchive => 2,
        };
        e.field(w.member.as_bytes()).field(&[tag]);
    }
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(m: &str, x: bool) -> Wanted {
        Wanted {
            member: m.into(),
            mode: ModeRule::Fixed(x),
        }
    }

    /// Golden key from the Python reference implementation in docs/store-format.md.
    #[test]
    fn golden_unpack_key_of_format_v1() {
        let key = unpack_key(
            &Pin::from_hex(
                crate::pin::Algo::Sha256,
                "3625b63d573aa4d28eaa30b291017f775f2ddc0523f40d25023ad1da9c30390e",
            )
            .unwrap(),
            &[
                w("kubernetes/server/bin/kubectl", true),
                w("kubernetes/LICENSES", false),
            ],
        );
        assert_eq!(
            key,
            "e11f702740c69113014bd6f9afa0fa89ebd212801a9713714a8a02267bdb9d3f"
        );
    }

    #[test]
    fn order_of_members_does_not_matter() {
        let a = unpack_key_of("ab", &[w("x", true), w("y", false)]);
        let b = unpack_key_of("ab", &[w("y", false), w("x", true)]);
        assert_eq!(a, b);
        assert_ne!(a, unpack_key_of("ab", &[w("x", false), w("y", false)]));
    }

    /// A member selected without `mode` never shares a key with an explicit 0444 or 0555,
    /// so an index entry written before the archive's bits were kept is never returned for it.
    #[test]
    fn archive_mode_has_its_own_key() {
        let archive = Wanted {
            member: "x".into(),
            mode: ModeRule::FromArchive,
        };
        let k = unpack_key_of("ab", std::slice::from_ref(&archive));
        assert_ne!(k, unpack_key_of("ab", &[w("x", false)]));
        assert_ne!(k, unpack_key_of("ab", &[w("x", true)]));
    }
}
