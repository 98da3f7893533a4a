//! Any bytes after the `ar` magic, as a Debian package: listing (the decoder extraction
//! uses) must return Ok or an error, never panic, never allocate by a header's word; and the
//! header parser must accept or refuse every 60 bytes.
#![no_main]

use kbuild::unpack::{list_members, parse_ar_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(h) = data.get(..60).and_then(|h| <&[u8; 60]>::try_from(h).ok()) {
        if let Ok(parsed) = parse_ar_header(h) {
            assert!(!parsed.name.is_empty() && !parsed.name.contains('/'));
        }
    }
    let mut deb = b"!<arch>\n".to_vec();
    deb.extend_from_slice(data);
    if let Ok(members) = list_members(&deb[..], 64 << 20) {
        for m in &members {
            assert!(!m.name.starts_with('/') && !m.name.split('/').any(|c| c == ".." || c.is_empty()));
        }
    }
});
