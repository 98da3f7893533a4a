//! Hostile archives: a corpus of crafted tarballs, each run through `kbuild build` with a
//! recipe selecting members, via `--override-input kubernetes-server=file://…`.
//!
//! Every case states its exact outcome: the error (text and exit code 1), or the documented
//! safe normalization / success with the exact bytes and mode stored. For every case:
//!
//! * the sentinel directory (`/tmp/kbuild-sentinel-*`, which absolute names, `..` names and
//!   link targets aim at) is exactly as before (entries, bytes, modes, mtimes, inodes);
//! * the sandbox outside the store (recipes, lock file, archives) is unchanged;
//! * a failed build leaves the store exactly as before (the store already holds a benign
//!   build), and no build leaves a `.tmp-*` entry;
//! * a successful one adds only the expected objects and `kbuild verify` is clean.
//!
//! The case table (name, category, expected outcome) is `hostile::ARCHIVES`; the test
//! `the_case_table_lists_exactly_the_tests_of_this_file` keeps it and the tests in step, and
//! `tests/security_table.rs` counts it into the summary of `docs/security.md`.

mod common;
#[macro_use]
#[path = "hostile/mod.rs"]
mod hostile;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use hostile::*;

const KUBECTL: &str = "kubernetes/server/bin/kubectl";
const EVIL_URL: &str = "file://$SANDBOX/evil/kubernetes-server-linux-amd64.tar.gz";

/// A file the recipe takes from the archive.
struct Pick {
    target: &'static str,
    member: String,
    mode: &'static str,
}

fn kubectl_pick() -> Pick {
    Pick {
        target: "/usr/local/bin/kubectl",
        member: KUBECTL.into(),
        mode: "0555",
    }
}

enum Expect {
    /// Fails with `caused by: input `kubernetes-server` from `URL`: MESSAGE`.
    Archive(String),
    /// Fails with this whole cause line and help line.
    Cause { cause: String, help: Option<String> },
    /// Succeeds; each target holds these bytes with this mode, and nothing else is in the
    /// rootfs but `kbuild.json`.
    Built(Vec<(&'static str, Vec<u8>, u32)>),
}

struct Crafted {
    /// The file as served (compressed or not).
    archive: Vec<u8>,
    picks: Vec<Pick>,
    env: Vec<(&'static str, String)>,
    expect: Expect,
    /// A successful build that changed something on the way (mode bits, a name, a duplicate).
    normalized: bool,
}

impl Crafted {
    fn new(archive: Vec<u8>, expect: Expect) -> Crafted {
        Crafted {
            archive,
            picks: vec![kubectl_pick()],
            env: vec![],
            expect,
            normalized: false,
        }
    }

    fn normalized(mut self) -> Crafted {
        self.normalized = true;
        self
    }

    fn picks(mut self, picks: Vec<Pick>) -> Crafted {
        self.picks = picks;
        self
    }
}

fn gz(t: &RawTar) -> Vec<u8> {
    compress(&t.finish(), Compression::Gzip)
}

/// gzip at the best ratio (zeros shrink ~1000 times).
fn gz_best(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn fixture_kubectl() -> Vec<u8> {
    fixture().tarball.member(KUBECTL).to_vec()
}

/// The real layout with the entry at `path` replaced by what `with` writes.
fn replacing(path: &str, with: impl Fn(&mut RawTar)) -> RawTar {
    let mut t = RawTar::new();
    let mut seen = false;
    t.layout(|e, t| {
        if e.path() == path {
            with(t);
            seen = true;
            return true;
        }
        false
    });
    assert!(seen, "no `{path}` in the layout");
    t
}

/// The real layout with `extra` written before everything.
fn prepending(extra: impl Fn(&mut RawTar)) -> RawTar {
    let mut t = RawTar::new();
    extra(&mut t);
    t.layout(|_, _| false);
    t
}

/// The real layout with `extra` written after everything.
fn appending(extra: impl Fn(&mut RawTar)) -> RawTar {
    let mut t = RawTar::new();
    t.layout(|_, _| false);
    extra(&mut t);
    t
}

fn archive_err(msg: impl Into<String>) -> Expect {
    Expect::Archive(msg.into())
}

fn built_kubectl(bytes: Vec<u8>) -> Expect {
    Expect::Built(vec![("/usr/local/bin/kubectl", bytes, 0o555)])
}

/// A PAX 0.1 sparse kubectl: `map` and `real` in the header, `data` the blocks' bytes.
fn sparse_01(t: &mut RawTar, map: &str, real: u64, data: &[u8]) {
    t.pax(&[
        ("GNU.sparse.size", real.to_string().as_bytes()),
        ("GNU.sparse.name", KUBECTL.as_bytes()),
        ("GNU.sparse.map", map.as_bytes()),
    ]);
    t.file(
        b"kubernetes/server/bin/GNUSparseFile.1/kubectl",
        0o755,
        data,
    );
}

/// An `ar` archive (a .deb's container) of `(name, bytes)` members.
fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, bytes) in members {
        out.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                0,
                0,
                0,
                100644,
                bytes.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(bytes);
        if bytes.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

fn not_regular(what: &str) -> Expect {
    archive_err(format!("member `{KUBECTL}` is {what}, not a regular file"))
}

/// A name longer than the 100 bytes of a tar header.
fn long_member(tag: &str) -> String {
    format!(
        "kubernetes/server/bin/{}{tag}/kubectl",
        "a-directory-name-well-past-the-ustar-limit-".repeat(3)
    )
}

/// Selects `member` as `/usr/local/bin/kubectl`.
fn pick(member: &str) -> Vec<Pick> {
    vec![Pick {
        target: "/usr/local/bin/kubectl",
        member: member.into(),
        mode: "0555",
    }]
}

/// 1.3 GB of zeros in one unselected member, more than the real v1.6.0 tarball's ~1.2 GB,
/// built from repeated gzip members so the test stays fast.
fn larger_than_the_real_tarball() -> (Vec<u8>, u64) {
    const HUGE: u64 = 2_539_063 * 512; // 1_300_000_256 bytes, a whole number of blocks
    let mut head = RawTar::new();
    head.dir(b"kubernetes/");
    let mut h = Hdr::new(b"kubernetes/huge-zeros.bin", b'0');
    h.size = HUGE;
    head.raw(&h, b"");
    let mut out = compress(&head.bytes, Compression::Gzip);
    let block = 64usize << 20;
    let zeros = gz_best(&vec![0u8; block]);
    let mut left = HUGE;
    while left >= block as u64 {
        out.extend_from_slice(&zeros);
        left -= block as u64;
    }
    out.extend_from_slice(&gz_best(&vec![0u8; left as usize]));
    let mut tail = RawTar::new();
    tail.layout(|e, _| e.path() == "kubernetes/");
    out.extend_from_slice(&compress(&tail.finish(), Compression::Gzip));
    (out, HUGE)
}

/// The corpus: what each case's archive is and what must happen.
fn craft(name: &str, s: &Sentinel) -> Crafted {
    let sent = s.path().display().to_string();
    let sent_b = sent.as_bytes().to_vec();
    let masked = format!("/tmp/{}", "$SENTINEL");
    match name {
        // ---- member names ----
        "absolute_name" => Crafted::new(
            gz(&appending(|t| {
                t.file(format!("{sent}/pwned").as_bytes(), 0o644, b"pwned\n");
            })),
            archive_err(format!("member `{masked}/pwned` has an absolute name")),
        ),
        "absolute_name_of_the_selected_member" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.file(b"/kubernetes/server/bin/kubectl", 0o755, b"#!evil\n");
            })),
            archive_err("member `/kubernetes/server/bin/kubectl` has an absolute name"),
        ),
        "dotdot_escaping_to_the_sentinel" => {
            let n = format!("kubernetes/{}tmp/{}/pwned", "../".repeat(12), s.name());
            Crafted::new(
                gz(&prepending(|t| {
                    t.file(n.as_bytes(), 0o644, b"pwned\n");
                })),
                archive_err(format!(
                    "member `kubernetes/{}tmp/$SENTINEL/pwned` contains `..`",
                    "../".repeat(12)
                )),
            )
        }
        "dotdot_leading" => Crafted::new(
            gz(&prepending(|t| {
                t.file(b"../pwned", 0o644, b"pwned\n");
            })),
            archive_err("member `../pwned` contains `..`"),
        ),
        "dotdot_resolving_inside_the_archive" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.file(b"kubernetes/server/../server/bin/kubectl", 0o755, b"#!x\n");
            })),
            archive_err("member `kubernetes/server/../server/bin/kubectl` contains `..`"),
        ),
        "dot_segments_and_double_slashes" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.file(b"./kubernetes//server/./bin/kubectl", 0o755, b"#!dotted\n");
            })),
            built_kubectl(b"#!dotted\n".to_vec()),
        )
        .normalized(),
        "trailing_slash_on_a_regular_file" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.file(b"kubernetes/server/bin/kubectl/", 0o755, b"#!slashed\n");
            })),
            built_kubectl(b"#!slashed\n".to_vec()),
        )
        .normalized(),
        "gnu_long_name_selected" => {
            let long = long_member("gnu");
            assert!(long.len() > 100);
            Crafted::new(
                gz(&appending(|t| {
                    t.gnu_long_name(long.as_bytes());
                    t.file(long.as_bytes(), 0o755, b"#!long gnu name\n");
                })),
                built_kubectl(b"#!long gnu name\n".to_vec()),
            )
            .picks(pick(&long))
        }
        "gnu_long_name_with_dotdot" => {
            let long = format!("kubernetes/{}/../../../../tmp/{}/pwned", "x".repeat(100), s.name());
            Crafted::new(
                gz(&appending(|t| {
                    t.gnu_long_name(long.as_bytes());
                    t.file(b"kubernetes/harmless", 0o644, b"pwned\n");
                })),
                archive_err(format!(
                    "member `kubernetes/{}/../../../../tmp/$SENTINEL/pwned` contains `..`",
                    "x".repeat(100)
                )),
            )
        }
        "pax_long_path_selected" => {
            let long = long_member("pax");
            Crafted::new(
                gz(&appending(|t| {
                    t.pax(&[("path", long.as_bytes())]);
                    t.file(long.as_bytes(), 0o755, b"#!long pax path\n");
                })),
                built_kubectl(b"#!long pax path\n".to_vec()),
            )
            .picks(pick(&long))
        }
        "pax_path_absolute" => Crafted::new(
            gz(&appending(|t| {
                t.pax(&[("path", format!("{sent}/pwned").as_bytes())]);
                t.file(b"kubernetes/harmless", 0o644, b"pwned\n");
            })),
            archive_err(format!("member `{masked}/pwned` has an absolute name")),
        ),
        "non_utf8_name_unselected" => Crafted::new(
            gz(&appending(|t| {
                t.file(b"kubernetes/server/bin/kube\xff\xfectl", 0o755, b"#!evil\n");
            })),
            built_kubectl(fixture_kubectl()),
        ),
        "non_utf8_absolute_name" => Crafted::new(
            gz(&appending(|t| {
                let mut n = sent_b.clone();
                n.extend_from_slice(b"/\xff\xfe");
                t.file(&n, 0o644, b"pwned\n");
            })),
            archive_err(format!(
                "member `{masked}/\u{FFFD}\u{FFFD}` has an absolute name"
            )),
        ),
        "non_utf8_name_never_matches_a_recipe_member" => {
            // `kube\xffctl` is not UTF-8; shown lossily it reads `kube�ctl`, which a recipe
            // can spell, but the two are different names.
            let wanted = "kubernetes/server/bin/kube\u{FFFD}ctl";
            Crafted::new(
                gz(&replacing(KUBECTL, |t| {
                    t.file(b"kubernetes/server/bin/kube\xffctl", 0o755, b"#!evil\n");
                })),
                Expect::Cause {
                    cause: format!("input `kubernetes-server` from `{EVIL_URL}` lacks `{wanted}`\n  `{wanted}`: closest in the archive: `kubernetes/server/bin/kubelet`, `kubernetes/server/bin/kube-proxy`, `kubernetes/server/bin/kubeadm`, `kubernetes/server/bin/hyperkube`, `kubernetes/server/bin/kube-proxy.tar`"),
                    help: Some(
                        "fix the `member` paths in the recipe; `kbuild inputs kubernetes-server --members` lists the archive's members"
                            .into(),
                    ),
                },
            )
            .picks(pick(wanted))
        }
        "member_hidden_after_the_end_of_archive" => {
            let mut t = RawTar::new();
            t.layout(|e, _| e.path() == KUBECTL);
            t.bytes.extend_from_slice(&[0u8; 1024]);
            t.file(KUBECTL.as_bytes(), 0o755, b"#!hidden\n");
            Crafted::new(
                gz(&t),
                Expect::Cause {
                    cause: format!("input `kubernetes-server` from `{EVIL_URL}` lacks `{KUBECTL}`\n  `{KUBECTL}`: closest in the archive: `kubernetes/server/bin/kubeadm`, `kubernetes/server/bin/kubelet`, `kubernetes/server/bin/kube-proxy`, `kubernetes/server/bin/hyperkube`, `kubernetes/server/bin/kube-scheduler`"),
                    help: Some(
                        "fix the `member` paths in the recipe; `kbuild inputs kubernetes-server --members` lists the archive's members"
                            .into(),
                    ),
                },
            )
        }

        // ---- links ----
        "symlink_dir_to_etc_then_member_through_it" => Crafted::new(
            gz(&through_link(b"/etc")),
            built_kubectl(b"#!written through a link\n".to_vec()),
        ),
        "symlink_dir_to_sentinel_then_member_through_it" => Crafted::new(
            gz(&through_link(&sent_b)),
            built_kubectl(b"#!written through a link\n".to_vec()),
        ),
        "symlink_dir_relative_escape_then_member_through_it" => {
            let target = format!("{}tmp/{}", "../".repeat(12), s.name());
            Crafted::new(
                gz(&through_link(target.as_bytes())),
                built_kubectl(b"#!written through a link\n".to_vec()),
            )
        }
        "symlink_to_outside_unselected" => Crafted::new(
            gz(&appending(|t| {
                t.symlink(b"kubernetes/passwd", b"../../../../../../../../etc/passwd");
                t.symlink(b"kubernetes/canary", format!("{sent}/canary").as_bytes());
            })),
            built_kubectl(fixture_kubectl()),
        ),
        "hardlink_to_outside_unselected" => Crafted::new(
            gz(&appending(|t| {
                t.hardlink(b"kubernetes/shadow", b"/etc/shadow");
                t.hardlink(b"kubernetes/canary", format!("{sent}/canary").as_bytes());
            })),
            built_kubectl(fixture_kubectl()),
        ),
        "hardlink_to_outside_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.hardlink(KUBECTL.as_bytes(), format!("{sent}/canary").as_bytes());
            })),
            archive_err(format!(
                "member `{KUBECTL}` is a hard link to `/tmp/$SENTINEL/canary`, outside the archive (links are followed only to other members)"
            )),
        ),
        "hardlink_inside_the_archive_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.hardlink(KUBECTL.as_bytes(), b"kubernetes/server/bin/hyperkube");
            })),
            {
                let hyperkube = fixture()
                    .tarball
                    .member("kubernetes/server/bin/hyperkube")
                    .to_vec();
                Expect::Built(vec![
                    ("/usr/local/bin/hyperkube", hyperkube.clone(), 0o555),
                    ("/usr/local/bin/kubectl", hyperkube, 0o555),
                ])
            },
        )
        // hyperkube comes first: selected too, both are read in one pass (the second pass
        // for an unselected earlier target is shown by tests/archives.rs).
        .picks(vec![
            kubectl_pick(),
            Pick {
                target: "/usr/local/bin/hyperkube",
                member: "kubernetes/server/bin/hyperkube".into(),
                mode: "0555",
            },
        ]),
        "hardlink_to_a_later_member_selected" => Crafted::new(
            gz(&{
                let mut t = replacing(KUBECTL, |t| {
                    t.hardlink(KUBECTL.as_bytes(), b"kubernetes/zz-later");
                });
                t.file(b"kubernetes/zz-later", 0o755, b"#!later\n");
                t
            }),
            archive_err(format!(
                "member `{KUBECTL}` is a hard link to `kubernetes/zz-later`, which is not a member before it (a hard link can only name an earlier member)"
            )),
        ),
        "symlink_climbing_out_of_the_archive_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.symlink(KUBECTL.as_bytes(), b"../../../../etc/shadow");
            })),
            archive_err(format!(
                "member `{KUBECTL}` is a symbolic link to `../../../../etc/shadow`, outside the archive (links are followed only to other members)"
            )),
        ),
        "symlink_to_a_later_member_selected" => Crafted::new(
            gz(&{
                let mut t = replacing(KUBECTL, |t| {
                    t.symlink(KUBECTL.as_bytes(), b"../../zz-later");
                });
                t.file(b"kubernetes/zz-later", 0o755, b"#!later\n");
                t
            }),
            built_kubectl(b"#!later\n".to_vec()),
        ),
        "symlink_dangling_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.symlink(KUBECTL.as_bytes(), b"nowhere");
            })),
            archive_err(format!(
                "member `{KUBECTL}` is a symbolic link to `nowhere`, and the archive has no member `kubernetes/server/bin/nowhere`"
            )),
        ),
        "symlink_to_a_directory_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.symlink(KUBECTL.as_bytes(), b".");
            })),
            archive_err(format!(
                "member `kubernetes/server/bin` is a directory, not a regular file (reached from member `{KUBECTL}`)"
            )),
        ),

        // ---- sparse members ----
        "sparse_pax_blocks_overlapping" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                sparse_01(t, "0,6,3,6", 20, b"#!evil#!evil");
            })),
            archive_err(format!(
                "member `{KUBECTL}` has a sparse map whose blocks overlap or run backwards (at offset 3)"
            )),
        ),
        "sparse_pax_map_past_the_real_size" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                sparse_01(t, "0,6,16,6", 20, b"#!evil#!evil");
            })),
            archive_err(format!(
                "member `{KUBECTL}` has a sparse map reaching past its size of 20 bytes"
            )),
        ),
        "sparse_pax_map_past_the_data" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                sparse_01(t, "0,6,10,9", 20, b"#!evil#!evil");
            })),
            archive_err(format!(
                "member `{KUBECTL}` has a sparse map listing 15 bytes of data, but it holds 12"
            )),
        ),
        "sparse_pax_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                sparse_01(t, "0,6,14,6", 20, b"#!evil#!evil");
            })),
            built_kubectl(b"#!evil\0\0\0\0\0\0\0\0#!evil".to_vec()),
        ),
        "sparse_expanding_past_the_limit" => {
            // 12 bytes of data expanding to 4 MiB: the expanded size counts against the limit.
            let mut c = Crafted::new(
                gz(&replacing(KUBECTL, |t| {
                    sparse_01(t, "0,6,4194298,6", 4 << 20, b"#!evil#!evil");
                })),
                archive_err(
                    "unpacks to more than 2097152 bytes (the limit; set KBUILD_MAX_UNPACKED_BYTES to raise it)",
                ),
            );
            c.env = vec![("KBUILD_MAX_UNPACKED_BYTES", "2097152".into())];
            c
        }

        // ---- Debian packages ----
        "deb_without_a_data_member" => Crafted::new(
            ar(&[("debian-binary", b"2.0\n"), ("control.tar.gz", &gz(&RawTar::new()))]),
            archive_err(
                "is an `ar` archive without a `data.tar.*` member, not a Debian package",
            ),
        ),
        "deb_with_a_bad_member_header" => Crafted::new(
            {
                let mut a = ar(&[("debian-binary", b"2.0\n")]);
                a.extend_from_slice(b"data.tar.gz/    0           0     0     100644  12x       `\n");
                a
            },
            archive_err(
                "the Debian package is corrupt: the `ar` header at byte 72 has a malformed size",
            ),
        ),
        "deb_member_larger_than_the_file" => Crafted::new(
            {
                let mut a = ar(&[("debian-binary", b"2.0\n")]);
                a.extend_from_slice(b"control.tar.gz  0           0     0     100644  999999    `\n");
                a.extend_from_slice(&[0u8; 100]);
                a
            },
            archive_err("the archive is truncated (unexpected end of data)"),
        ),
        "deb_data_in_an_unread_compression" => Crafted::new(
            ar(&[("debian-binary", b"2.0\n"), ("data.tar.bz2", b"BZh91AY&SY not really")]),
            archive_err(
                "the Debian package's `data.tar.bz2` is not a tar archive kbuild reads (gzip, zstd, xz or plain)",
            ),
        ),
        "deb_with_two_data_members" => Crafted::new(
            {
                let data = gz(&RawTar::new());
                ar(&[("debian-binary", b"2.0\n"), ("data.tar.gz", &data), ("data.tar.xz", &data)])
            },
            archive_err(
                "the Debian package is corrupt: it has two data members (`data.tar.gz` and `data.tar.xz`)",
            ),
        ),
        "symlink_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.symlink(KUBECTL.as_bytes(), format!("{sent}/canary").as_bytes());
            })),
            archive_err(format!(
                "member `{KUBECTL}` is a symbolic link to `/tmp/$SENTINEL/canary`, outside the archive (links are followed only to other members)"
            )),
        ),
        "symlink_chain_loop_unselected" => Crafted::new(
            gz(&appending(|t| {
                t.symlink(b"kubernetes/loop-a", b"loop-b");
                t.symlink(b"kubernetes/loop-b", b"loop-c");
                t.symlink(b"kubernetes/loop-c", b"loop-a");
            })),
            built_kubectl(fixture_kubectl()),
        ),
        "symlink_loop_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.symlink(KUBECTL.as_bytes(), b"kubectl");
            })),
            archive_err(format!(
                "member `{KUBECTL}` leads through more than 40 links (a loop?)"
            )),
        ),

        // ---- special files ----
        "char_device_unselected" => Crafted::new(
            gz(&appending(|t| {
                t.device(b"kubernetes/mem", b'3', 1, 1);
                t.device(b"kubernetes/null", b'3', 1, 3);
            })),
            built_kubectl(fixture_kubectl()),
        ),
        "block_device_unselected" => Crafted::new(
            gz(&appending(|t| {
                t.device(b"kubernetes/sda", b'4', 8, 0);
            })),
            built_kubectl(fixture_kubectl()),
        ),
        "fifo_unselected" => Crafted::new(
            gz(&appending(|t| {
                t.device(b"kubernetes/fifo", b'6', 0, 0);
            })),
            built_kubectl(fixture_kubectl()),
        ),
        "char_device_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.device(KUBECTL.as_bytes(), b'3', 1, 1);
            })),
            not_regular("a device node"),
        ),
        "block_device_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.device(KUBECTL.as_bytes(), b'4', 8, 0);
            })),
            not_regular("a device node"),
        ),
        "fifo_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.device(KUBECTL.as_bytes(), b'6', 0, 0);
            })),
            not_regular("a FIFO"),
        ),
        "directory_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.dir(b"kubernetes/server/bin/kubectl/");
            })),
            not_regular("a directory"),
        ),
        "unknown_entry_type_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.entry(Hdr::new(KUBECTL.as_bytes(), b'Z'), b"#!mystery\n");
            })),
            not_regular("a special entry"),
        ),
        "contiguous_file_selected" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                let mut h = Hdr::new(KUBECTL.as_bytes(), b'7');
                h.mode = 0o755;
                t.entry(h, b"#!contiguous\n");
            })),
            built_kubectl(b"#!contiguous\n".to_vec()),
        ),

        // ---- modes and owners ----
        "setuid_executable" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.file(KUBECTL.as_bytes(), 0o4755, b"#!setuid\n");
            })),
            built_kubectl(b"#!setuid\n".to_vec()),
        )
        .normalized(),
        "setgid_sticky_world_writable" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.file(KUBECTL.as_bytes(), 0o7777, b"#!all bits\n");
            })),
            built_kubectl(b"#!all bits\n".to_vec()),
        )
        .normalized(),
        "setuid_on_a_non_executable_target" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.file(KUBECTL.as_bytes(), 0o4755, b"#!setuid\n");
            })),
            Expect::Built(vec![("/usr/local/bin/kubectl", b"#!setuid\n".to_vec(), 0o444)]),
        )
        .picks(vec![Pick {
            target: "/usr/local/bin/kubectl",
            member: KUBECTL.into(),
            mode: "0444",
        }])
        .normalized(),
        "foreign_owner_and_future_mtime" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                let mut h = Hdr::new(KUBECTL.as_bytes(), b'0');
                h.mode = 0o755;
                h.uid = 4242;
                h.gid = 4242;
                h.mtime = 8_000_000_000; // year 2223
                t.entry(h, b"#!foreign\n");
            })),
            built_kubectl(b"#!foreign\n".to_vec()),
        )
        .normalized(),

        // ---- duplicates ----
        "duplicate_member_later_bytes_win" => Crafted::new(
            gz(&{
                let mut t = replacing(KUBECTL, |t| {
                    t.file(KUBECTL.as_bytes(), 0o755, b"#!earlier kubectl\n");
                });
                t.file(KUBECTL.as_bytes(), 0o755, b"#!later kubectl\n");
                t
            }),
            built_kubectl(b"#!later kubectl\n".to_vec()),
        )
        .normalized(),
        "duplicate_file_then_symlink" => Crafted::new(
            gz(&appending(|t| {
                t.symlink(KUBECTL.as_bytes(), b"hyperkube");
            })),
            archive_err(format!(
                "member `{KUBECTL}` appears twice, as a regular file and then as a symbolic link; kbuild cannot tell which one is meant"
            )),
        ),
        "duplicate_symlink_then_file" => Crafted::new(
            gz(&{
                let mut t = replacing(KUBECTL, |t| {
                    t.symlink(KUBECTL.as_bytes(), format!("{sent}/canary").as_bytes());
                });
                t.file(KUBECTL.as_bytes(), 0o755, b"#!later kubectl\n");
                t
            }),
            archive_err(format!(
                "member `{KUBECTL}` appears twice, as a symbolic link and then as a regular file; kbuild cannot tell which one is meant"
            )),
        ),

        // ---- PAX and GNU headers ----
        "pax_unknown_records_and_xattrs" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.pax(&[
                    // cap_setuid+ep, as `setcap` writes it
                    (
                        "SCHILY.xattr.security.capability",
                        b"\x01\x00\x00\x02\x80\x00\x00\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
                    ),
                    ("SCHILY.xattr.user.planted", b"1"),
                    ("LIBARCHIVE.xattr.user.planted2", b"MQ"),
                    ("SCHILY.acl.access", b"user::rwx,group::rwx,other::rwx"),
                    ("uname", b"mallory"),
                    ("mtime", b"1234567890.123456789"),
                    ("hdrcharset", b"BINARY"),
                    ("comment", b"\xff odd bytes \x00 and a NUL"),
                ]);
                t.file(KUBECTL.as_bytes(), 0o6755, b"#!capable\n");
            })),
            built_kubectl(b"#!capable\n".to_vec()),
        )
        .normalized(),
        "pax_malformed_path_record_ignored" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                // The length says 10; the record is longer: not a valid record.
                t.pax_raw(b'x', format!("10 path={sent}/pwned\n").as_bytes());
                t.file(KUBECTL.as_bytes(), 0o755, b"#!header name\n");
            })),
            built_kubectl(b"#!header name\n".to_vec()),
        )
        .normalized(),
        "pax_size_record" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                let data = b"#!size from the pax record\n";
                t.pax(&[("size", data.len().to_string().as_bytes())]);
                let mut h = Hdr::new(KUBECTL.as_bytes(), b'0');
                h.mode = 0o755;
                h.size = 0;
                t.raw(&h, data);
            })),
            built_kubectl(b"#!size from the pax record\n".to_vec()),
        ),
        "pax_global_header" => Crafted::new(
            gz(&prepending(|t| {
                t.pax_raw(
                    b'g',
                    &pax_records(&[
                        ("path", format!("{sent}/global").as_bytes()),
                        ("comment", b"global"),
                    ]),
                );
            })),
            built_kubectl(fixture_kubectl()),
        ),
        "pax_header_without_a_member" => Crafted::new(
            gz(&appending(|t| {
                t.pax(&[("path", b"kubernetes/nothing")]);
            })),
            archive_err(
                "the archive is corrupt: members found describing a future member but no future member found",
            ),
        ),
        "two_pax_headers_for_one_member" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.pax(&[("comment", b"one")]);
                t.pax(&[("path", format!("{sent}/pwned").as_bytes())]);
                t.file(KUBECTL.as_bytes(), 0o755, b"#!x\n");
            })),
            archive_err(
                "the archive is corrupt: two pax extensions entries describing the same member",
            ),
        ),
        "two_gnu_long_names_for_one_member" => Crafted::new(
            gz(&replacing(KUBECTL, |t| {
                t.gnu_long_name(long_member("one").as_bytes());
                t.gnu_long_name(format!("{sent}/pwned").as_bytes());
                t.file(KUBECTL.as_bytes(), 0o755, b"#!x\n");
            })),
            archive_err("the archive is corrupt: two long name entries describing the same member"),
        ),
        "bad_header_checksum" => {
            let mut tar = RawTar::new();
            tar.layout(|_, _| false);
            let mut bytes = tar.finish();
            let at = header_of(&bytes, KUBECTL);
            bytes[at + 100] = b'7'; // the mode field, without fixing the checksum
            Crafted::new(
                compress(&bytes, Compression::Gzip),
                archive_err("the archive is corrupt: archive header checksum mismatch"),
            )
        }

        // ---- compression and size ----
        "gzip_with_trailing_garbage" => {
            let mut bytes = gz(&appending(|_| {}));
            bytes.extend_from_slice(b"GARBAGE AFTER THE GZIP STREAM\n");
            Crafted::new(bytes, archive_err("the archive is corrupt: invalid gzip header"))
        }
        "gzip_truncated" => {
            let full = fixture().gz.clone();
            Crafted::new(
                full[..full.len() / 2].to_vec(),
                archive_err("the archive is truncated (unexpected end of data)"),
            )
        }
        "zstd_truncated" => {
            let full = fixture().tarball.build(Compression::Zstd);
            Crafted::new(
                full[..full.len() - 1200].to_vec(),
                archive_err("the archive is truncated (unexpected end of data)"),
            )
        }
        "xz_truncated" => {
            let full = fixture().tarball.build(Compression::Xz);
            Crafted::new(
                full[..full.len() - 1200].to_vec(),
                archive_err("the archive is truncated (unexpected end of data)"),
            )
        }
        "decompression_bomb_over_a_small_limit" => {
            let mut t = RawTar::new();
            t.file(b"kubernetes/zeros", 0o644, &vec![0u8; 64 << 20]);
            t.file(KUBECTL.as_bytes(), 0o755, &fixture_kubectl());
            let bomb = gz_best(&t.finish());
            assert!(bomb.len() < 100 << 10, "{} bytes", bomb.len());
            let mut c = Crafted::new(
                bomb,
                archive_err(
                    "the archive is corrupt: unpacks to more than 1048576 bytes (the limit; set KBUILD_MAX_UNPACKED_BYTES to raise it)",
                ),
            );
            c.env = vec![("KBUILD_MAX_UNPACKED_BYTES", "1048576".into())];
            c
        }
        "default_limit_is_above_the_real_tarball" => {
            let (bytes, huge) = larger_than_the_real_tarball();
            assert!(kbuild::unpack::DEFAULT_MAX_UNPACKED > huge + (64 << 20));
            Crafted::new(bytes, built_kubectl(fixture_kubectl()))
        }
        "not_an_archive" => Crafted::new(
            noise("not an archive", 4096),
            archive_err(
                "is neither a tar archive (gzip, zstd, xz or plain) nor a Debian package (.deb)",
            ),
        ),
        "more_members_than_the_limit" => {
            // One entry past the limit, each an empty file: ~512 MB of headers, a few MB
            // gzip'd. The listing kbuild keeps (for links and suggestions) stays bounded.
            use std::io::Write as _;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            for i in 0..=kbuild::unpack::MAX_MEMBERS {
                enc.write_all(&Hdr::new(format!("m/{i}").as_bytes(), b'0').bytes())
                    .unwrap();
            }
            enc.write_all(&[0u8; 1024]).unwrap();
            Crafted::new(
                enc.finish().unwrap(),
                archive_err("has more than 1000000 members (kbuild's limit on one archive)"),
            )
        }
        "empty_file" => Crafted::new(
            Vec::new(),
            archive_err(
                "is neither a tar archive (gzip, zstd, xz or plain) nor a Debian package (.deb)",
            ),
        ),
        other => panic!("no case `{other}` in the corpus"),
    }
}

/// `kubernetes/server/bin` as a symlink to `target`, then the binaries "inside" it.
fn through_link(target: &[u8]) -> RawTar {
    let mut t = RawTar::new();
    t.layout(|e, t| {
        if e.path() == "kubernetes/server/bin/" {
            t.symlink(b"kubernetes/server/bin", target);
            return true;
        }
        if e.path() == KUBECTL {
            t.file(KUBECTL.as_bytes(), 0o755, b"#!written through a link\n");
            return true;
        }
        false
    });
    t
}

/// Offset of the header naming `name` in a plain tar stream.
fn header_of(tar: &[u8], name: &str) -> usize {
    (0..tar.len())
        .step_by(512)
        .find(|&i| tar[i..].starts_with(name.as_bytes()) && tar[i + name.len()] == 0)
        .unwrap_or_else(|| panic!("no header for `{name}`"))
}

fn recipe(picks: &[Pick]) -> String {
    let mut s = String::from(
        "[inputs.kubernetes-server]\n# Never fetched: every build here overrides the input.\nurl = \"http://127.0.0.1:9/never-fetched.tar.gz\"\n",
    );
    for p in picks {
        s.push_str(&format!(
            "\n[files.\"{}\"]\ninput = \"kubernetes-server\"\nmember = {}\nmode = \"{}\"\n",
            p.target,
            toml_str(&p.member),
            p.mode
        ));
    }
    s
}

/// (path, kind, mode, content) of the sandbox outside the store.
fn outside_store(sb: &Sandbox) -> Vec<(String, Kind, u32, String)> {
    shape(&listing(&sb.dir))
        .into_iter()
        .filter(|(p, ..)| p != "store" && !p.starts_with("store/"))
        .collect()
}

fn xattrs(path: &Path) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    let n = rustix::fs::listxattr(path, &mut buf[..]).unwrap_or(0);
    buf[..n].to_vec()
}

/// How a stored file looks to `ls -l` and `getfattr`, for the summary.
fn describe_stored(path: &Path) -> String {
    let m = std::fs::symlink_metadata(path).unwrap();
    let mode = m.mode() & 0o7777;
    let rwx: String = (0..9)
        .map(|i| {
            let bit = 0o400 >> i;
            if mode & bit == 0 {
                '-'
            } else {
                ['r', 'w', 'x'][i % 3]
            }
        })
        .collect();
    let xattrs = if xattrs(path).is_empty() {
        "no xattrs".to_owned()
    } else {
        format!("xattrs {:?}", String::from_utf8_lossy(&xattrs(path)))
    };
    format!("stored {rwx} (0{mode:o}), mtime {}, {xattrs}", m.mtime())
}

/// A store holding one benign build of the fixture (generation 1), made once per test
/// binary under cargo's target tmp dir and copied into each case's sandbox.
fn benign_store() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // Templates of earlier runs.
        for e in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with("hostile-archives-store-")
            {
                let _ = std::process::Command::new("chmod")
                    .args(["-R", "u+w"])
                    .arg(e.path())
                    .status();
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let sb = Sandbox::new();
        sb.write_recipe("benign", &recipe(&[kubectl_pick()]));
        let url = write_archive(&sb, "benign", &fixture().gz);
        sb.kbuild(&[
            "build",
            "benign",
            "--override-input",
            &format!("kubernetes-server={url}"),
        ])
        .assert_success();
        let dir = tmp.join(format!("hostile-archives-store-{}", std::process::id()));
        copy_store(&sb.store, &dir);
        dir
    })
}

/// `cp -a`: modes, mtimes and hardlinks as they are.
fn copy_store(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn run_case(name: &str) {
    let s = Sentinel::new();
    let c = craft(name, &s);
    let sb = Sandbox::new();
    sb.write_recipe("hostile", &recipe(&c.picks));

    // The store already holds a benign build: a failure must leave it exactly so.
    copy_store(benign_store(), &sb.store);

    let url = write_archive(&sb, "evil", &c.archive);
    let store_before = store_shape(&sb.store);
    let objects_before = objects(&sb.store);
    let outside_before = outside_store(&sb);
    let sentinel_before = s.snapshot();
    let etc_kubectl = Path::new("/etc/kubectl").exists();

    let env: Vec<(&str, &str)> = c.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = kbuild_env(
        &sb,
        &env,
        &[
            "build",
            "hostile",
            "--override-input",
            &format!("kubernetes-server={url}"),
        ],
    );
    let stderr = s.mask(&r.stderr());
    let mut output = stderr.clone();
    let head = transfer(EVIL_URL, c.archive.len());

    match &c.expect {
        Expect::Archive(_) | Expect::Cause { .. } => {
            let (cause, help) = match &c.expect {
                Expect::Archive(m) => (
                    format!("input `kubernetes-server` from `{EVIL_URL}`: {m}"),
                    None,
                ),
                Expect::Cause { cause, help } => (cause.clone(), help.clone()),
                Expect::Built(_) => unreachable!(),
            };
            let help = help.map(|h| format!("help: {h}\n")).unwrap_or_default();
            assert_eq!(
                (r.code, r.stdout.as_str(), stderr.as_str()),
                (
                    Some(1),
                    "",
                    format!("{head}error: cannot build hostile\n  caused by: {cause}\n{help}")
                        .as_str()
                ),
                "case `{name}`"
            );
            assert_eq!(
                store_shape(&sb.store),
                store_before,
                "case `{name}`: the failed build changed the store"
            );
        }
        Expect::Built(files) => {
            assert_eq!(
                (r.code, stderr.as_str()),
                (
                    Some(0),
                    format!("{head}       Built generation 2\n").as_str()
                ),
                "case `{name}`\n--- stdout\n{}",
                r.stdout
            );
            let rootfs = r.rootfs();
            let mut expected = std::collections::BTreeMap::new();
            expected.insert(
                "kbuild.json".to_owned(),
                b"{\n  \"prerequisites\": [],\n  \"version\": 1\n}\n".to_vec(),
            );
            for (target, bytes, _) in files {
                expected.insert(target.trim_start_matches('/').to_owned(), bytes.clone());
            }
            assert_eq!(tree_bytes(&rootfs), expected, "case `{name}`: the rootfs");
            let owner = std::fs::metadata(&sb.dir).unwrap().uid();
            for (target, _, mode) in files {
                let p = rootfs.join(target.trim_start_matches('/'));
                let m = std::fs::metadata(&p).unwrap();
                assert_eq!(m.mode() & 0o7777, *mode, "case `{name}`: mode of {target}");
                assert_eq!(m.mtime(), 1, "case `{name}`: mtime of {target}");
                assert_eq!(m.uid(), owner, "case `{name}`: owner of {target}");
                assert_eq!(xattrs(&p), b"", "case `{name}`: xattrs of {target}");
                output.push_str(&describe_stored(&p));
                output.push('\n');
            }
            // Only the new member objects, the kept archive and the new rootfs were added.
            let contents: Vec<&Vec<u8>> = files.iter().map(|(_, b, _)| b).collect();
            for o in objects(&sb.store).difference(&objects_before) {
                let p = sb.store.join(o);
                if o.ends_with("-rootfs-hostile") {
                    assert_eq!(p, rootfs, "case `{name}`");
                } else if o.ends_with("-never-fetched.tar.gz") {
                    assert_eq!(
                        std::fs::read(&p).unwrap(),
                        c.archive,
                        "case `{name}`: kept archive"
                    );
                } else {
                    let bytes = std::fs::read(&p).unwrap();
                    assert!(
                        contents.contains(&&bytes),
                        "case `{name}`: unexpected new object {o}"
                    );
                }
            }
            let v = verify(&sb);
            assert_eq!((v.code, v.stdout.as_str()), (Some(0), "ok\n"), "{v:?}");
        }
    }
    assert_no_tmp(&sb.store);
    s.assert_untouched(&sentinel_before);
    assert_eq!(
        outside_store(&sb),
        outside_before,
        "case `{name}`: the sandbox changed"
    );
    assert_eq!(
        Path::new("/etc/kubectl").exists(),
        etc_kubectl,
        "case `{name}`: /etc/kubectl"
    );
    check_case(ARCHIVES, name, outcome_of(&r, c.normalized), &output);
}

macro_rules! archive_cases {
    ($($name:ident),+ $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_case(stringify!($name));
            }
        )+
        cases_tested!(ARCHIVES; $($name),+);
    };
}

archive_cases!(
    absolute_name,
    absolute_name_of_the_selected_member,
    dotdot_escaping_to_the_sentinel,
    dotdot_leading,
    dotdot_resolving_inside_the_archive,
    dot_segments_and_double_slashes,
    trailing_slash_on_a_regular_file,
    gnu_long_name_selected,
    gnu_long_name_with_dotdot,
    pax_long_path_selected,
    pax_path_absolute,
    non_utf8_name_unselected,
    non_utf8_absolute_name,
    non_utf8_name_never_matches_a_recipe_member,
    member_hidden_after_the_end_of_archive,
    symlink_dir_to_etc_then_member_through_it,
    symlink_dir_to_sentinel_then_member_through_it,
    symlink_dir_relative_escape_then_member_through_it,
    symlink_to_outside_unselected,
    hardlink_to_outside_unselected,
    hardlink_to_outside_selected,
    hardlink_inside_the_archive_selected,
    symlink_selected,
    symlink_chain_loop_unselected,
    symlink_loop_selected,
    hardlink_to_a_later_member_selected,
    symlink_climbing_out_of_the_archive_selected,
    symlink_to_a_later_member_selected,
    symlink_dangling_selected,
    symlink_to_a_directory_selected,
    sparse_pax_blocks_overlapping,
    sparse_pax_map_past_the_real_size,
    sparse_pax_map_past_the_data,
    sparse_pax_selected,
    sparse_expanding_past_the_limit,
    deb_without_a_data_member,
    deb_with_a_bad_member_header,
    deb_member_larger_than_the_file,
    deb_data_in_an_unread_compression,
    deb_with_two_data_members,
    char_device_unselected,
    block_device_unselected,
    fifo_unselected,
    char_device_selected,
    block_device_selected,
    fifo_selected,
    directory_selected,
    unknown_entry_type_selected,
    contiguous_file_selected,
    setuid_executable,
    setgid_sticky_world_writable,
    setuid_on_a_non_executable_target,
    foreign_owner_and_future_mtime,
    duplicate_member_later_bytes_win,
    duplicate_file_then_symlink,
    duplicate_symlink_then_file,
    pax_unknown_records_and_xattrs,
    pax_malformed_path_record_ignored,
    pax_size_record,
    pax_global_header,
    pax_header_without_a_member,
    two_pax_headers_for_one_member,
    two_gnu_long_names_for_one_member,
    bad_header_checksum,
    gzip_with_trailing_garbage,
    gzip_truncated,
    zstd_truncated,
    xz_truncated,
    decompression_bomb_over_a_small_limit,
    default_limit_is_above_the_real_tarball,
    not_an_archive,
    more_members_than_the_limit,
    empty_file,
);

/// The duplicate case's earlier copy never becomes an object.
#[test]
fn the_overridden_duplicate_is_not_stored() {
    let s = Sentinel::new();
    let c = craft("duplicate_member_later_bytes_win", &s);
    let sb = Sandbox::new();
    sb.write_recipe("hostile", &recipe(&c.picks));
    let url = write_archive(&sb, "evil", &c.archive);
    sb.kbuild(&[
        "build",
        "hostile",
        "--override-input",
        &format!("kubernetes-server={url}"),
    ])
    .assert_success();
    let stored: Vec<Vec<u8>> = objects(&sb.store)
        .iter()
        .map(|o| sb.store.join(o))
        .filter(|p| p.is_file())
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(stored.contains(&b"#!later kubectl\n".to_vec()));
    assert!(!stored.contains(&b"#!earlier kubectl\n".to_vec()));
}
