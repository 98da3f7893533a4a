//! Property tests of the canonical encodings (store digests, derivation keys, the lock file),
//! of variable types, and of recipe parsing on arbitrary input.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use kbuild::derivation::unpack_key;
use kbuild::lockfile::{LockFile, LockedInput};
use kbuild::recipe::VarType;
use kbuild::store::Node;
use kbuild::unpack::{ModeRule, Wanted};
use proptest::prelude::*;

/// Modest case counts; no regression files written into the source tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Store nodes
// ---------------------------------------------------------------------------------------------

/// A directory entry name: any bytes but `/` and NUL.
fn name() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
        1..12,
    )
}

/// Distinct names with file contents and executable bits, in some order.
fn entries() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>, bool)>> {
    prop::collection::btree_map(
        name(),
        (prop::collection::vec(any::<u8>(), 0..48), any::<bool>()),
        1..8,
    )
    .prop_map(|m| m.into_iter().map(|(n, (c, x))| (n, c, x)).collect())
}

fn dir_from(entries: &[(Vec<u8>, Vec<u8>, bool)]) -> Node {
    let mut map = BTreeMap::new();
    for (n, c, x) in entries {
        map.insert(n.clone(), Node::file(c, *x));
    }
    Node::Directory(map)
}

/// `etc/<entries>` and `bin/<entries>` under one root, built in the given order.
fn tree_from(entries: &[(Vec<u8>, Vec<u8>, bool)]) -> Node {
    let mut root = BTreeMap::new();
    for sub in [b"etc".to_vec(), b"bin".to_vec()] {
        root.insert(sub, dir_from(entries));
    }
    Node::Directory(root)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn node_digest_is_independent_of_insertion_order(
        (original, shuffled) in entries().prop_flat_map(|e| (Just(e.clone()), Just(e).prop_shuffle()))
    ) {
        prop_assert_eq!(dir_from(&original).digest(), dir_from(&shuffled).digest());
        prop_assert_eq!(tree_from(&original).digest(), tree_from(&shuffled).digest());
        // Building the map by repeated inserts in reverse gives the same node too.
        let mut rev = BTreeMap::new();
        for (n, c, x) in shuffled.iter().rev() {
            rev.insert(n.clone(), Node::file(c, *x));
        }
        prop_assert_eq!(Node::Directory(rev).digest(), dir_from(&original).digest());
    }

    #[test]
    fn node_digest_changes_with_any_byte(
        e in entries(), pick in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), xor in 1u8..
    ) {
        let before = tree_from(&e).digest();
        let mut changed = e.clone();
        let i = pick.index(changed.len());
        let content = &mut changed[i].1;
        if content.is_empty() {
            content.push(xor);
        } else {
            let j = at.index(content.len());
            content[j] ^= xor;
        }
        prop_assert_ne!(tree_from(&changed).digest(), before);
        prop_assert_ne!(dir_from(&changed).digest(), dir_from(&e).digest());
    }

    #[test]
    fn node_digest_changes_with_any_name(
        e in entries(), pick in any::<prop::sample::Index>(), new_name in name()
    ) {
        let i = pick.index(e.len());
        prop_assume!(e.iter().all(|(n, _, _)| *n != new_name));
        let mut changed = e.clone();
        changed[i].0 = new_name;
        prop_assert_ne!(dir_from(&changed).digest(), dir_from(&e).digest());
        prop_assert_ne!(tree_from(&changed).digest(), tree_from(&e).digest());
    }

    #[test]
    fn node_digest_changes_with_the_executable_bit(
        e in entries(), pick in any::<prop::sample::Index>()
    ) {
        let i = pick.index(e.len());
        let mut changed = e.clone();
        changed[i].2 = !changed[i].2;
        prop_assert_ne!(dir_from(&changed).digest(), dir_from(&e).digest());
        prop_assert_ne!(tree_from(&changed).digest(), tree_from(&e).digest());
    }

    #[test]
    fn node_digest_distinguishes_kinds_and_places(e in entries(), pick in any::<prop::sample::Index>()) {
        let i = pick.index(e.len());
        let (n, c, _) = &e[i];
        // A symlink whose target is the file's bytes is not the file.
        let mut as_link = match dir_from(&e) { Node::Directory(m) => m, _ => unreachable!() };
        as_link.insert(n.clone(), Node::Symlink { target: c.clone() });
        prop_assert_ne!(Node::Directory(as_link).digest(), dir_from(&e).digest());
        // Moving an entry one directory down changes the root.
        let mut moved = match dir_from(&e) { Node::Directory(m) => m, _ => unreachable!() };
        let node = moved.remove(n).unwrap();
        moved.insert(n.clone(), Node::Directory(BTreeMap::from([(n.clone(), node)])));
        prop_assert_ne!(Node::Directory(moved).digest(), dir_from(&e).digest());
    }

    /// Names and contents are length-prefixed: moving bytes from one name to the next, or
    /// from a name into a content, never gives the same digest.
    #[test]
    fn node_encoding_is_unambiguous(a in name(), b in name(), split in any::<prop::sample::Index>()) {
        let joined: Vec<u8> = a.iter().chain(&b).copied().collect();
        let k = 1 + split.index(joined.len() - 1);
        let (a2, b2) = joined.split_at(k);
        prop_assume!(a2 != a.as_slice());
        let x = Node::file(b"x", false);
        let one = Node::Directory(BTreeMap::from([(a.clone(), x.clone()), (b.clone(), x.clone())]));
        let two = Node::Directory(BTreeMap::from([(a2.to_vec(), x.clone()), (b2.to_vec(), x.clone())]));
        prop_assert_ne!(one.digest(), two.digest());
    }
}

// ---------------------------------------------------------------------------------------------
// Derivation keys
// ---------------------------------------------------------------------------------------------

fn sha() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}"
}

fn member() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,8}(/[a-z0-9._-]{1,8}){0,3}"
}

/// The three ways a member's executable bit is chosen, by their key tag (0, 1, 2).
fn rule(tag: u8) -> ModeRule {
    match tag % 3 {
        0 => ModeRule::Fixed(false),
        1 => ModeRule::Fixed(true),
        _ => ModeRule::FromArchive,
    }
}

/// A sha256 pin of 64 hex digits.
fn pin256(hex: &str) -> kbuild::pin::Pin {
    kbuild::pin::Pin::from_hex(kbuild::pin::Algo::Sha256, hex).unwrap()
}

fn wanted() -> impl Strategy<Value = Vec<Wanted>> {
    prop::collection::btree_set((member(), 0u8..3), 1..10).prop_map(|s| {
        s.into_iter()
            .map(|(member, tag)| Wanted {
                member,
                mode: rule(tag),
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn unpack_key_is_independent_of_member_order(
        sha in sha(),
        (w, shuffled) in wanted().prop_flat_map(|w| (Just(w.clone()), Just(w).prop_shuffle())),
        dup in any::<prop::sample::Index>(),
    ) {
        let key = unpack_key(&pin256(&sha), &w);
        prop_assert_eq!(key.len(), 64);
        prop_assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        prop_assert_eq!(&unpack_key(&pin256(&sha), &shuffled), &key);
        // Asking for a member twice is asking for it once.
        let mut twice = shuffled.clone();
        twice.push(w[dup.index(w.len())].clone());
        prop_assert_eq!(&unpack_key(&pin256(&sha), &twice), &key);
    }

    #[test]
    fn unpack_key_changes_with_what_is_unpacked(
        sha in sha(), other_sha in sha(), w in wanted(), pick in any::<prop::sample::Index>(),
        extra in member(), step in 1u8..3,
    ) {
        let key = unpack_key(&pin256(&sha), &w);
        prop_assume!(sha != other_sha);
        prop_assert_ne!(&unpack_key(&pin256(&other_sha), &w), &key);
        let i = pick.index(w.len());
        let mut flipped = w.clone();
        // Any other rule for one member (0444 ↔ 0555 ↔ the archive's) is another key.
        let tag = match flipped[i].mode {
            ModeRule::Fixed(x) => u8::from(x),
            ModeRule::FromArchive => 2,
        };
        flipped[i].mode = rule(tag + step);
        prop_assume!(!w.contains(&flipped[i]));
        prop_assert_ne!(&unpack_key(&pin256(&sha), &flipped), &key);
        let mut fewer = w.clone();
        fewer.remove(i);
        prop_assert_ne!(&unpack_key(&pin256(&sha), &fewer), &key);
        let mut more = w.clone();
        let add = Wanted { member: extra, mode: ModeRule::Fixed(false) };
        prop_assume!(!w.contains(&add));
        more.push(add);
        prop_assert_ne!(&unpack_key(&pin256(&sha), &more), &key);
    }

    #[test]
    fn unpack_key_encoding_is_unambiguous(a in member(), b in member(), split in any::<prop::sample::Index>()) {
        let joined = format!("{a}{b}");
        let k = 1 + split.index(joined.len() - 1);
        prop_assume!(joined.is_char_boundary(k) && k != a.len());
        // The key is of the set of members: a split that gives the same two members in the
        // other order (a="__", b="_" split at 1) is the same set, rightly the same key.
        prop_assume!(!(joined[..k] == b && joined[k..] == a));
        let w = |m: &str| Wanted { member: m.to_owned(), mode: ModeRule::Fixed(false) };
        let sha = "0".repeat(64);
        prop_assert_ne!(
            unpack_key(&pin256(&sha), &[w(&a), w(&b)]),
            unpack_key(&pin256(&sha), &[w(&joined[..k]), w(&joined[k..])])
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Lock file
// ---------------------------------------------------------------------------------------------

fn locked_input() -> impl Strategy<Value = LockedInput> {
    (
        prop::collection::vec("\\PC{0,30}", 0..4),
        sha(),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(urls, hex, size)| LockedInput {
            urls,
            // Half the entries sha512 (their digest: the hex twice), half sha256.
            pin: if hex.as_bytes()[0] % 2 == 0 {
                pin256(&hex)
            } else {
                kbuild::pin::Pin::from_hex(kbuild::pin::Algo::Sha512, &hex.repeat(2)).unwrap()
            },
            size,
        })
}

fn lock_file() -> impl Strategy<Value = LockFile> {
    prop::collection::btree_map("\\PC{1,20}", locked_input(), 0..5)
        .prop_map(|inputs| LockFile { inputs })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn lock_file_round_trips_and_is_stable(lock in lock_file()) {
        let bytes = lock.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        prop_assert!(text.ends_with("}\n"), "no final newline");
        let parsed = LockFile::parse(Path::new("flake-like.lock.json"), &text).unwrap();
        prop_assert_eq!(&parsed, &lock);
        prop_assert_eq!(parsed.to_bytes(), bytes.clone());
        // Every key is sorted: re-serializing through a sorted map changes nothing.
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut again = serde_json::to_vec_pretty(&value).unwrap();
        again.push(b'\n');
        prop_assert_eq!(again, bytes);
    }
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn lock_file_save_then_load(lock in lock_file()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flake-like.lock.json");
        let wrote = lock.save(&path).unwrap();
        // An empty lock is not created where none exists.
        prop_assert_eq!(wrote, !lock.inputs.is_empty());
        prop_assert_eq!(path.exists(), !lock.inputs.is_empty());
        prop_assert_eq!(LockFile::load(&path).unwrap(), lock.clone());
        prop_assert!(!lock.save(&path).unwrap(), "an unchanged lock was rewritten");
    }
}

// ---------------------------------------------------------------------------------------------
// Variable types
// ---------------------------------------------------------------------------------------------

fn v4_mask(len: u32) -> u32 {
    if len == 0 { 0 } else { u32::MAX << (32 - len) }
}

fn v6_mask(len: u32) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn every_ip_address_is_accepted(v4 in any::<u32>(), v6 in any::<u128>()) {
        let a = Ipv4Addr::from(v4).to_string();
        prop_assert_eq!(VarType::Ip.check(&a), Ok(()), "{}", a);
        let b = Ipv6Addr::from(v6).to_string();
        prop_assert_eq!(VarType::Ip.check(&b), Ok(()), "{}", b);
        // The uncompressed form too.
        let segs = Ipv6Addr::from(v6).segments();
        let long = segs.iter().map(|s| format!("{s:x}")).collect::<Vec<_>>().join(":");
        prop_assert_eq!(VarType::Ip.check(&long), Ok(()), "{}", long);
        // An IP is a string too.
        prop_assert_eq!(VarType::String.check(&a), Ok(()));
    }

    #[test]
    fn every_network_is_a_cidr(v4 in any::<u32>(), l4 in 0u32..=32, v6 in any::<u128>(), l6 in 0u32..=128) {
        let n4 = format!("{}/{l4}", Ipv4Addr::from(v4 & v4_mask(l4)));
        prop_assert_eq!(VarType::Cidr.check(&n4), Ok(()), "{}", n4);
        let n6 = format!("{}/{l6}", Ipv6Addr::from(v6 & v6_mask(l6)));
        prop_assert_eq!(VarType::Cidr.check(&n6), Ok(()), "{}", n6);
    }

    #[test]
    fn cidr_with_host_bits_names_the_network(v4 in any::<u32>(), l4 in 0u32..32) {
        prop_assume!(v4 & !v4_mask(l4) != 0);
        let value = format!("{}/{l4}", Ipv4Addr::from(v4));
        let net = Ipv4Addr::from(v4 & v4_mask(l4));
        prop_assert_eq!(
            VarType::Cidr.check(&value),
            Err(format!("`{value}` has host bits set; the network is `{net}/{l4}`"))
        );
    }

    #[test]
    fn cidr_prefix_longer_than_the_address(v4 in any::<u32>(), extra in 33u32..=999) {
        let value = format!("{}/{extra}", Ipv4Addr::from(v4));
        prop_assert_eq!(
            VarType::Cidr.check(&value),
            Err(format!("`{value}`: prefix length {extra} is longer than 32"))
        );
    }

    #[test]
    fn every_port_is_accepted(p in 1u16..) {
        prop_assert_eq!(VarType::Port.check(&p.to_string()), Ok(()));
    }

    #[test]
    fn out_of_range_ports_are_rejected(p in prop_oneof![Just(0u64), 65_536u64..10_000_000]) {
        let value = p.to_string();
        prop_assert_eq!(
            VarType::Port.check(&value),
            Err(format!("`{value}` is not a port number (1-65535)"))
        );
    }

    #[test]
    fn mutated_ipv4_is_rejected(v4 in any::<u32>(), which in 0usize..4, how in 0u8..7, big in 256u32..1000) {
        let mut octets: Vec<String> = Ipv4Addr::from(v4).octets().iter().map(u8::to_string).collect();
        let value = match how {
            0 => { octets[which] = big.to_string(); octets.join(".") }
            1 => { octets.remove(which); octets.join(".") }
            2 => { octets.push("1".into()); octets.join(".") }
            3 => format!("{}.", octets.join(".")),
            4 => format!(" {}", octets.join(".")),
            5 => format!("{}/32", octets.join(".")),
            _ => { octets[which].push('x'); octets.join(".") }
        };
        prop_assert_eq!(
            VarType::Ip.check(&value),
            Err(format!("`{value}` is not an IP address (e.g. 10.72.84.160)"))
        );
    }

    #[test]
    fn mutated_cidr_is_rejected(v4 in any::<u32>(), len in 0u32..=32, how in 0u8..5) {
        let net = Ipv4Addr::from(v4 & v4_mask(len));
        let value = match how {
            0 => net.to_string(),
            1 => format!("{net}/"),
            2 => format!("{net}/{len}x"),
            3 => format!("{net}/-{len}"),
            _ => format!("{net}//{len}"),
        };
        prop_assert_eq!(
            VarType::Cidr.check(&value),
            Err(format!("`{value}` is not a CIDR block (e.g. 10.254.0.0/16)"))
        );
    }

    #[test]
    fn mutated_port_is_rejected(p in 1u16.., how in 0u8..4) {
        let value = match how {
            0 => format!("{p}x"),
            1 => format!(" {p}"),
            2 => format!("{p}.0"),
            _ => format!("-{p}"),
        };
        prop_assert_eq!(
            VarType::Port.check(&value),
            Err(format!("`{value}` is not a port number (1-65535)"))
        );
    }

    /// A port is rendered as written: `+443` or `0443` would reach a config file verbatim,
    /// where Go's flag parsing reads `0443` as octal (291). Only the canonical form is a port.
    #[test]
    fn non_canonical_port_is_rejected(p in 1u16.., how in 0u8..2) {
        let value = match how {
            0 => format!("+{p}"),
            _ => format!("0{p}"),
        };
        prop_assert_eq!(
            VarType::Port.check(&value),
            Err(format!("`{value}` is not a port number (1-65535)"))
        );
    }

    #[test]
    fn strings_refuse_newlines_and_nul(a in "\\PC{0,10}", b in "\\PC{0,10}", nul in any::<bool>()) {
        let value = format!("{a}{}{b}", if nul { '\0' } else { '\n' });
        prop_assert_eq!(
            VarType::String.check(&value),
            Err("a string variable may not contain a newline or NUL".to_owned())
        );
        prop_assert_eq!(VarType::String.check(&format!("{a}{b}")), Ok(()));
    }
}

// ---------------------------------------------------------------------------------------------
// Recipe parsing never panics
// ---------------------------------------------------------------------------------------------

/// Loads `text` as recipe `r` from a fresh directory (which also holds `t.j2` and recipe
/// `s`); any outcome but a panic is fine, and an error names `r.toml`'s location.
fn load_text(text: &str) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("r.toml"), text).unwrap();
    std::fs::write(dir.path().join("s.toml"), "imports = [\"r\"]\n").unwrap();
    std::fs::write(dir.path().join("t.j2"), "X={{ IP }}\n").unwrap();
    match kbuild::recipe::load(dir.path(), &["r".to_owned()]) {
        Ok(set) => {
            prop_assert_eq!(set.roots, vec!["r".to_owned()]);
            prop_assert!(set.loaded.contains(&"r".to_owned()));
        }
        Err(e) => {
            let shown = e.to_string();
            let _ = e.help();
            prop_assert!(!shown.is_empty());
            if let kbuild::recipe::RecipeError::At { loc, .. } = &e {
                prop_assert!(loc.line >= 1 && loc.column >= 1, "{}", shown);
                prop_assert!(
                    shown.starts_with(&dir.path().display().to_string()),
                    "{}",
                    shown
                );
            }
        }
    }
    Ok(())
}

/// Lines a recipe is made of, valid and not.
fn recipe_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("description = \"x\"".to_owned()),
        Just("imports = [\"r\"]".to_owned()),
        Just("imports = [\"s\"]".to_owned()),
        Just("imports = [\"nope\"]".to_owned()),
        Just("prerequisites = [\"/etc/kubernetes/token.csv\"]".to_owned()),
        Just("prerequisites = [\"relative\"]".to_owned()),
        Just("[inputs.k]".to_owned()),
        Just("url = \"https://example.invalid/k.tar.gz\"".to_owned()),
        Just("url = \"ftp://x\"".to_owned()),
        Just("mirrors = [\"file:///srv/k.tar.gz\"]".to_owned()),
        Just("sha256 = \"abc\"".to_owned()),
        Just(format!("sha256 = \"{}\"", "A".repeat(64))),
        Just("[variables.IP]".to_owned()),
        Just("[variables.9bad]".to_owned()),
        Just("type = \"ip\"".to_owned()),
        Just("type = \"cidr\"".to_owned()),
        Just("type = \"port\"".to_owned()),
        Just("type = \"float\"".to_owned()),
        Just("default = \"10.0.0.1\"".to_owned()),
        Just("default = 8080".to_owned()),
        Just("default = -1".to_owned()),
        Just("required = true".to_owned()),
        Just("[files.\"/etc/x\"]".to_owned()),
        Just("[files.\"/usr/local/bin/k\"]".to_owned()),
        Just("[files.\"/usr/bin/k\"]".to_owned()),
        Just("[files.\"/etc/.kbuild/x\"]".to_owned()),
        Just("text = \"A=\\\"{{ IP }}\\\"\\n\"".to_owned()),
        Just("template = \"t.j2\"".to_owned()),
        Just("template = \"../t.j2\"".to_owned()),
        Just("template = \"missing.j2\"".to_owned()),
        Just("input = \"k\"".to_owned()),
        Just("member = \"kubernetes/server/bin/kubectl\"".to_owned()),
        Just("member = \"../x\"".to_owned()),
        Just("mode = \"0555\"".to_owned()),
        Just("mode = 365".to_owned()),
        Just("mode = \"rwx\"".to_owned()),
        Just("format = \"env\"".to_owned()),
        Just("format = \"yaml\"".to_owned()),
        Just("[[files]]".to_owned()),
        Just("é = \"ü\"".to_owned()),
        "\\PC{0,20}",
        "[a-z_]{1,6} = \"[^\"\\\\]{0,8}\"",
    ]
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn recipe_parsing_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        load_text(&text)?;
    }

    #[test]
    fn recipe_parsing_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.toml"), &bytes).unwrap();
        let r = kbuild::recipe::load(dir.path(), &["r".to_owned()]);
        if let Err(e) = r {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn recipe_parsing_never_panics_on_recipe_like_text(
        lines in prop::collection::vec(recipe_line(), 0..16)
    ) {
        load_text(&lines.join("\n"))?;
    }
}

// ---------------------------------------------------------------------------------------------
// systemd environment files (src/envfile.rs)
// ---------------------------------------------------------------------------------------------

/// A character that matters to systemd's env-file reader, or a plain one.
fn env_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select(vec![
            '"', '\'', '\\', '$', '`', ' ', '\t', '#', ';', '=', '\n', '\r', '\u{7}',
        ]),
        2 => prop::sample::select(vec!['a', 'Z', '0', '_', '-', '/', 'é', '€']),
    ]
}

fn env_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(env_char(), 0..max).prop_map(|v| v.into_iter().collect())
}

fn read_env(text: &str) -> Vec<(String, String)> {
    kbuild::envfile::read(text)
        .assignments
        .into_iter()
        .map(|a| (a.key, a.value))
        .collect()
}

/// Renders `template` with `V = value` and checks it as `format = "env"`: the file, if
/// accepted.
fn render_env(template: &str, value: &str) -> Option<String> {
    let vars: BTreeMap<String, String> = [("V".to_owned(), value.to_owned())].into();
    let r = kbuild::render::render_traced("t.j2", template, &vars).ok()?;
    kbuild::render::check_format(
        "t.j2",
        "/etc/x",
        &r,
        template,
        &vars,
        kbuild::recipe::FileFormat::Env,
    )
    .ok()?;
    Some(r.text)
}

/// Templates a value can go into: double quotes, single quotes, bare, with blanks around,
/// between literal parts, and kbuild's own quoting.
const ENV_TEMPLATES: [&str; 6] = [
    "A=\"{{ V }}\"\nB=1\n",
    "A='{{ V }}'\nB=1\n",
    "A={{ V }}\nB=1\n",
    "A = \"{{ V }}\" \nB=1\n",
    "A=\"x{{ V }}y\"\nB=1\n",
    "A={{ V | env_quote }}\nB=1\n",
];

proptest! {
    #![proptest_config(config(512))]

    /// The documented quoting rule (double quotes, a backslash before `"`, `\`, `` ` ``,
    /// `$`) is read back as the value, for every value without a control character.
    #[test]
    fn env_quoted_values_read_back_exactly(value in env_text(16)) {
        let value: String = value.chars().filter(|c| !c.is_control() || *c == '\t').collect();
        let text = format!("K={}\nNEXT=1\n", kbuild::envfile::quote(&value));
        let r = kbuild::envfile::read(&text);
        prop_assert_eq!(r.faults, vec![]);
        prop_assert_eq!(
            read_env(&text),
            vec![("K".to_owned(), value), ("NEXT".to_owned(), "1".to_owned())]
        );
    }

    /// What the systemd tier cross-checks: a value `--set` into an env file either is
    /// refused at build, or systemd reads exactly that value (and the next line's variable
    /// is still set).
    #[test]
    fn an_accepted_value_is_read_as_written(value in env_text(12), which in 0usize..ENV_TEMPLATES.len()) {
        // `--set` refuses newlines and NUL for string variables before rendering.
        prop_assume!(!value.contains('\n') && !value.contains('\0'));
        let template = ENV_TEMPLATES[which];
        if let Some(text) = render_env(template, &value) {
            let expected = if which == 4 { format!("x{value}y") } else { value.clone() };
            prop_assert_eq!(
                read_env(&text),
                vec![("A".to_owned(), expected), ("B".to_owned(), "1".to_owned())],
                "{:?}", text
            );
        }
    }

    /// Values of letters, digits and blanks in the middle are accepted in every template
    /// (so the property above is not satisfied by refusing everything).
    #[test]
    fn plain_values_are_accepted(value in "[a-zA-Z0-9_/.:-]([a-zA-Z0-9_/.:, -]{0,10}[a-zA-Z0-9_/.:-])?") {
        for template in ENV_TEMPLATES {
            prop_assert!(render_env(template, &value).is_some(), "{} {:?}", template, value);
        }
    }

    /// The reader is total: one flag per byte, every kept name valid, and a file without
    /// faults means the environment kbuild's quoting writes back.
    #[test]
    fn the_env_reader_is_total_and_rewrites_faithfully(text in env_text(40), key in "[A-Z_][A-Z0-9_]{0,3}") {
        for text in [text.clone(), format!("{key}={text}"), format!("{key}=\"{text}\"\n")] {
            let r = kbuild::envfile::read(&text);
            prop_assert_eq!(r.literal.len(), text.len());
            for a in &r.assignments {
                prop_assert!(kbuild::envfile::is_valid_name(&a.key));
            }
            if r.faults.is_empty() {
                let again: String = r
                    .assignments
                    .iter()
                    .map(|a| format!("{}={}\n", a.key, kbuild::envfile::quote(&a.value)))
                    .collect();
                prop_assert_eq!(kbuild::envfile::read(&again).environment(), r.environment());
            }
        }
    }
}
