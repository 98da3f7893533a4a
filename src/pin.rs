//! Content pins as upstream publishes them: a sha256 or sha512 digest, written in hex
//! (`sha256 = "…"`, `sha512 = "…"`) or as an SRI string (`hash = "sha512-<base64>"`).
//!
//! Kubernetes changelogs since about v1.12 publish sha512 only, npm publishes SRI sha512:
//! a recipe copies the pin it is given instead of re-hashing the file itself.

use std::fmt;

use sha2::Digest as _;

/// A digest algorithm a pin may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algo {
    /// The default: what a pin made by kbuild itself uses unless the recipe says otherwise.
    #[default]
    Sha256,
    Sha512,
}

impl Algo {
    /// The name in recipes, lock files and SRI strings.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Algo::Sha256 => 32,
            Algo::Sha512 => 64,
        }
    }

    /// A fresh hasher for this algorithm.
    pub fn hasher(self) -> Hasher {
        match self {
            Algo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    fn from_name(name: &str) -> Option<Algo> {
        match name {
            "sha256" => Some(Algo::Sha256),
            "sha512" => Some(Algo::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A running hash of one of the [`Algo`]s.
#[derive(Clone)]
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The pin of everything hashed.
    pub fn finish(self) -> Pin {
        let (algo, hex) = match self {
            Hasher::Sha256(h) => (Algo::Sha256, hex(&h.finalize())),
            Hasher::Sha512(h) => (Algo::Sha512, hex(&h.finalize())),
        };
        Pin { algo, hex }
    }
}

/// A verified-shape pin: an algorithm and its digest as lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pin {
    algo: Algo,
    hex: String,
}

impl Pin {
    /// A pin from hex digits (either case); the message says what is wrong.
    pub fn from_hex(algo: Algo, hex: &str) -> Result<Pin, String> {
        let want = algo.digest_len() * 2;
        if hex.len() != want || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("`{algo}` must be {want} hexadecimal digits"));
        }
        Ok(Pin {
            algo,
            hex: hex.to_ascii_lowercase(),
        })
    }

    /// A pin from a Subresource Integrity string, `sha256-<base64>` or `sha512-<base64>`.
    pub fn from_sri(sri: &str) -> Result<Pin, String> {
        let sri = sri.trim();
        if sri.split_whitespace().count() > 1 {
            return Err("`hash` holds several hashes; give one (`sha512-…` or `sha256-…`)".into());
        }
        let Some((name, b64)) = sri.split_once('-') else {
            return Err(format!(
                "`hash` must be an SRI hash `sha512-<base64>` or `sha256-<base64>`, not `{sri}`"
            ));
        };
        let Some(algo) = Algo::from_name(name) else {
            return Err(format!(
                "`hash` uses the algorithm `{name}`; kbuild accepts `sha256-…` and `sha512-…`"
            ));
        };
        // SRI options (`sha512-…?opt`) carry nothing kbuild uses; a digest never has `?`.
        let b64 = b64.split_once('?').map_or(b64, |(d, _)| d);
        let bytes =
            base64_decode(b64).ok_or_else(|| format!("`hash`: `{b64}` is not valid base64"))?;
        if bytes.len() != algo.digest_len() {
            return Err(format!(
                "`hash`: a {algo} digest is {} bytes ({} base64 characters), this one has {} bytes",
                algo.digest_len(),
                algo.digest_len().div_ceil(3) * 4,
                bytes.len()
            ));
        }
        Ok(Pin {
            algo,
            hex: hex(&bytes),
        })
    }

    pub fn algo(&self) -> Algo {
        self.algo
    }

    /// The digest, lowercase hex.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The pin as a Subresource Integrity string, `sha512-<base64>` (as `hash = "…"` holds it).
    pub fn sri(&self) -> String {
        let bytes: Vec<u8> = (0..self.hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&self.hex[2 * i..2 * i + 2], 16).ok())
            .collect();
        format!("{}-{}", self.algo, base64_encode(&bytes))
    }

    /// The pin in derivation keys and generation records: the bare hex for sha256 (as before
    /// other algorithms existed, so existing keys and records stay valid), `sha512:<hex>`
    /// otherwise (a sha256 hex never holds `:`, so the two never meet).
    pub fn key(&self) -> String {
        match self.algo {
            Algo::Sha256 => self.hex.clone(),
            Algo::Sha512 => format!("sha512:{}", self.hex),
        }
    }

    /// The inverse of [`Pin::key`].
    pub fn from_key(key: &str) -> Option<Pin> {
        match key.split_once(':') {
            None => Pin::from_hex(Algo::Sha256, key).ok(),
            Some((name, hex)) => Pin::from_hex(Algo::from_name(name)?, hex).ok(),
        }
    }
}

impl fmt::Display for Pin {
    /// `sha256 <hex>`, as status lines and errors show a pin.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algo, self.hex)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Standard base64 (RFC 4648 §4, as SRI uses), padded.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (RFC 4648 §4, as SRI uses), padding optional; `None` when malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let body = s.trim_end_matches('=');
    let padding = s.len() - body.len();
    if padding > 2 || (padding > 0 && !s.len().is_multiple_of(4)) || body.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in body.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero: otherwise two strings would decode to one digest.
    (acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sri_round_trips() {
        let s = "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==";
        assert_eq!(Pin::from_sri(s).unwrap().sri(), s);
        let s = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(Pin::from_sri(s).unwrap().sri(), s);
    }

    #[test]
    fn sri_of_empty_input() {
        // `printf '' | openssl dgst -sha512 -binary | base64`
        let p = Pin::from_sri("sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==").unwrap();
        let mut h = Algo::Sha512.hasher();
        h.update(b"");
        assert_eq!(h.finish(), p);
        let p = Pin::from_sri("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=").unwrap();
        assert_eq!(
            p.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Pin::from_key(&p.key()), Some(p));
    }

    #[test]
    fn base64_is_strict() {
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YQ").unwrap(), b"a");
        assert!(base64_decode("YR==").is_none());
        assert!(base64_decode("Y===").is_none());
        assert!(base64_decode("Y!==").is_none());
    }
}
