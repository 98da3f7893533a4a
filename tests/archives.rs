//! Issue 9, points 1, 3 and 4: members as real archives hold them. Fixtures are made by the
//! real tools at test time (GNU tar with `--sparse` in gnu and posix 0.0/0.1/1.0 formats and
//! hard links, `xz`, `zstd`, `dpkg-deb --build`, `ar`), served from the local test server, and
//! every extracted member is compared byte for byte with what GNU tar (or `dpkg-deb -x`)
//! extracts. One test runs over real upstream archives (perl-base, etcd-server, an npm
//! tarball) cached outside the repository.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::world::World;
use common::{Sandbox, Server, noise, sha256_hex};

/// Runs a tool, which must succeed.
fn sh(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const TOOL_SIZE: usize = 300_000;

/// The files every fixture archive holds, in archive order (relative to `pkg/`'s parent).
/// `tool-hard` is a hard link to `tool` (written after it); `alias` a symlink to `tool`
/// (after it); `a/points-later` a symlink to `z/later`, which comes last.
const ORDER: [&str; 9] = [
    "pkg/a/points-later",
    "pkg/bin/tool",
    "pkg/bin/tool-hard",
    "pkg/bin/alias",
    "pkg/etc/conf",
    "pkg/etc/conf-link",
    "pkg/share/sparse",
    "pkg/share/sparse-tail",
    "pkg/z/later",
];

/// Writes the tree under `dir/pkg`.
fn tree(dir: &Path) {
    let p = |rel: &str| dir.join(rel);
    for d in ["pkg/a", "pkg/bin", "pkg/etc", "pkg/share", "pkg/z"] {
        std::fs::create_dir_all(p(d)).unwrap();
    }
    let write = |rel: &str, bytes: &[u8], mode: u32| {
        std::fs::write(p(rel), bytes).unwrap();
        std::fs::set_permissions(p(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    };
    write("pkg/bin/tool", &noise("tool", TOOL_SIZE), 0o755);
    std::fs::hard_link(p("pkg/bin/tool"), p("pkg/bin/tool-hard")).unwrap();
    std::os::unix::fs::symlink("tool", p("pkg/bin/alias")).unwrap();
    write("pkg/etc/conf", b"answer = 42\n", 0o644);
    std::os::unix::fs::symlink("../etc/./conf", p("pkg/etc/conf-link")).unwrap();
    write("pkg/z/later", b"#!/bin/sh\necho later\n", 0o755);
    std::os::unix::fs::symlink("../z/later", p("pkg/a/points-later")).unwrap();
    // 3 MiB with two 4 KiB islands of data; and 2 MiB whose data is only at the start, so
    // the hole runs to the end.
    let sparse = |rel: &str, len: u64, islands: &[u64]| {
        let mut f = std::fs::File::create(p(rel)).unwrap();
        f.set_len(len).unwrap();
        for (i, at) in islands.iter().enumerate() {
            f.seek(SeekFrom::Start(*at)).unwrap();
            f.write_all(&noise(&format!("{rel}{i}"), 4096)).unwrap();
        }
        std::fs::set_permissions(p(rel), std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    sparse("pkg/share/sparse", 3 << 20, &[1 << 20, 2_500_000]);
    sparse("pkg/share/sparse-tail", 2 << 20, &[0]);
}

/// A fixture archive: its file name and bytes, and the directory GNU tar (or dpkg-deb)
/// extracted it to, for comparison.
struct Made {
    file: String,
    bytes: Vec<u8>,
    reference: PathBuf,
    /// Members are named with this prefix (`./` in a .deb).
    prefix: &'static str,
}

/// Every tarball flavour: (file name, tar options).
const TARBALLS: [(&str, &[&str]); 5] = [
    ("gnu.tar.gz", &["--format=gnu", "-z"]),
    (
        "posix-0.0.tar.xz",
        &["--format=posix", "--sparse-version=0.0", "-J"],
    ),
    (
        "posix-0.1.tar.zst",
        &["--format=posix", "--sparse-version=0.1", "--zstd"],
    ),
    ("posix-1.0.tar", &["--format=posix", "--sparse-version=1.0"]),
    ("gnu-nosparse.tar.xz", &["--format=gnu", "-J"]),
];

fn make_tarball(work: &Path, file: &str, options: &[&str]) -> Made {
    let sparse = !file.contains("nosparse");
    let mut args: Vec<&str> = Vec::new();
    if sparse {
        args.push("--sparse");
    }
    args.extend_from_slice(options);
    args.extend_from_slice(&["--owner=0", "--group=0", "-cf", file]);
    args.extend_from_slice(&ORDER);
    sh(work, "tar", &args);
    let reference = work.join(format!("x-{file}"));
    std::fs::create_dir(&reference).unwrap();
    sh(
        work,
        "tar",
        &["-xf", file, "-C", reference.to_str().unwrap()],
    );
    Made {
        file: file.into(),
        bytes: std::fs::read(work.join(file)).unwrap(),
        reference,
        prefix: "",
    }
}

/// A .deb of the same tree (under `/pkg`), by `dpkg-deb --build -Z<compression>`.
fn make_deb(work: &Path, compression: &str) -> Made {
    let root = work.join(format!("deb-{compression}"));
    std::fs::create_dir(&root).unwrap();
    tree(&root);
    std::fs::create_dir(root.join("DEBIAN")).unwrap();
    std::fs::write(
        root.join("DEBIAN/control"),
        "Package: kbuild-fixture\nVersion: 1.0\nArchitecture: amd64\nMaintainer: kbuild tests <t@example.org>\nDescription: fixture\n",
    )
    .unwrap();
    let file = format!("fixture-{compression}.deb");
    sh(
        work,
        "dpkg-deb",
        &[
            "--root-owner-group",
            &format!("-Z{compression}"),
            "--build",
            root.to_str().unwrap(),
            &file,
        ],
    );
    let reference = work.join(format!("x-{file}"));
    sh(
        work,
        "dpkg-deb",
        &["-x", &file, reference.to_str().unwrap()],
    );
    Made {
        bytes: std::fs::read(work.join(&file)).unwrap(),
        file,
        reference,
        prefix: "./",
    }
}

/// A .deb put together with `ar` from a `tar --sparse` data member (dpkg-deb never writes
/// sparse members), gzip'd, with an odd-sized control member (a pad byte follows it).
fn make_ar_deb(work: &Path) -> Made {
    let dir = work.join("ar");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("debian-binary"), "2.0\n").unwrap();
    // An odd-sized control member, so a pad byte follows it.
    for n in 0.. {
        std::fs::write(
            dir.join("control"),
            format!("Package: x\nX-Pad: {}\n", "x".repeat(n)),
        )
        .unwrap();
        sh(&dir, "tar", &["-czf", "control.tar.gz", "control"]);
        if std::fs::metadata(dir.join("control.tar.gz")).unwrap().len() % 2 == 1 {
            break;
        }
    }
    let data = dir.join("data.tar.gz");
    let mut args = vec![
        "--sparse",
        "--format=posix",
        "--owner=0",
        "--group=0",
        "-czf",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(&ORDER);
    sh(work, "tar", &args);
    assert_eq!(
        std::fs::metadata(dir.join("control.tar.gz")).unwrap().len() % 2,
        1,
        "the control member should be odd-sized (to exercise the pad byte); adjust it"
    );
    sh(
        &dir,
        "ar",
        &[
            "rc",
            "fixture.deb",
            "debian-binary",
            "control.tar.gz",
            "data.tar.gz",
        ],
    );
    let reference = work.join("x-ar");
    std::fs::create_dir(&reference).unwrap();
    sh(
        work,
        "tar",
        &[
            "-xzf",
            data.to_str().unwrap(),
            "-C",
            reference.to_str().unwrap(),
        ],
    );
    Made {
        bytes: std::fs::read(dir.join("fixture.deb")).unwrap(),
        file: "ar-fixture.deb".into(),
        reference,
        prefix: "./",
    }
}

/// What a recipe selects from each fixture: (member, target file name, executable).
const PICKS: [(&str, &str, bool); 9] = [
    ("pkg/bin/tool", "tool", true),
    ("pkg/bin/tool-hard", "tool-hard", true),
    ("pkg/bin/alias", "alias", true),
    ("pkg/etc/conf", "conf", false),
    ("pkg/etc/conf-link", "conf-link", false),
    ("pkg/share/sparse", "sparse", false),
    ("pkg/share/sparse-tail", "sparse-tail", false),
    ("pkg/a/points-later", "points-later", true),
    ("pkg/z/later", "later", true),
];

fn input_name(file: &str) -> String {
    file.replace('.', "-")
}

/// A recipe taking every pick from every fixture into `/etc/fixtures/<input>/<name>`; the
/// .deb members alternately with and without the leading `./`.
fn recipe(server: &Server, made: &[Made]) -> String {
    let mut text = String::new();
    for m in made {
        let name = input_name(&m.file);
        text.push_str(&format!(
            "[inputs.{name}]\nurl = \"{}\"\nsha256 = \"{}\"\n\n",
            server.url(&format!("/{}", m.file)),
            sha256_hex(&m.bytes)
        ));
        for (i, (member, target, _)) in PICKS.iter().enumerate() {
            let prefix = if i % 2 == 0 { m.prefix } else { "" };
            text.push_str(&format!(
                "[files.\"/etc/fixtures/{name}/{target}\"]\ninput = \"{name}\"\nmember = \"{prefix}{member}\"\n\n"
            ));
        }
    }
    text
}

/// Exit code 1, nothing on stdout, and exactly `expected` on stderr, with the sandbox path
/// as `$SANDBOX` and the server's base URL as `$SERVER`.
fn assert_failed(r: &common::Run, server: &Server, expected: &str) {
    assert_eq!(r.code, Some(1), "stderr:\n{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert_eq!(r.stderr().replace(server.base(), "$SERVER"), expected);
}

fn bare_sandbox() -> Sandbox {
    let sb = Sandbox::new();
    for e in std::fs::read_dir(&sb.recipes).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    let _ = std::fs::remove_file(&sb.lock);
    sb
}

#[test]
fn every_format_extracts_what_gnu_tar_extracts() {
    let work = tempfile::tempdir().unwrap();
    tree(work.path());
    let mut made: Vec<Made> = TARBALLS
        .iter()
        .map(|(file, options)| make_tarball(work.path(), file, options))
        .collect();
    for c in ["gzip", "xz", "zstd"] {
        made.push(make_deb(work.path(), c));
    }
    made.push(make_ar_deb(work.path()));
    // The sparse archives hold no holes (else this would prove little): the plain one is
    // far smaller than the 5 MiB of sparse files.
    let plain = made.iter().find(|m| m.file == "posix-1.0.tar").unwrap();
    assert!(plain.bytes.len() < 1 << 20, "{} bytes", plain.bytes.len());

    let server = Server::start();
    for m in &made {
        server.serve(&format!("/{}", m.file), &m.bytes);
    }
    let sb = bare_sandbox();
    sb.write_recipe("fixtures", &recipe(&server, &made));
    let r = sb.kbuild(&["build", "fixtures"]);
    r.assert_success();
    let rootfs = r.rootfs();
    for m in &made {
        let name = input_name(&m.file);
        for (member, target, executable) in PICKS {
            let got = rootfs.join(format!("etc/fixtures/{name}/{target}"));
            let want = std::fs::read(m.reference.join(member)).unwrap();
            let bytes = std::fs::read(&got).unwrap();
            assert!(
                bytes == want,
                "{}: `{member}` differs from GNU tar's extraction ({} vs {} bytes)",
                m.file,
                bytes.len(),
                want.len()
            );
            let mode = std::fs::metadata(&got).unwrap().permissions().mode() & 0o7777;
            assert_eq!(
                mode,
                if executable { 0o555 } else { 0o444 },
                "{}: `{member}`",
                m.file
            );
        }
    }
    // The sizes GNU tar extracted, for the record: the sparse members expand fully.
    assert_eq!(
        std::fs::metadata(rootfs.join("etc/fixtures/gnu-tar-gz/sparse"))
            .unwrap()
            .len(),
        3 << 20
    );
    // Each archive was read once: no link here needs a second pass (each target is selected).
    let mut requests = server.requests();
    requests.sort();
    let mut expected: Vec<String> = made.iter().map(|m| format!("GET /{}", m.file)).collect();
    expected.sort();
    assert_eq!(requests, expected);

    // A rebuild gives the same rootfs, from the store alone.
    let again = sb.kbuild(&["build", "fixtures"]);
    again.assert_success();
    assert_eq!(again.rootfs(), rootfs);
    assert_eq!(server.request_count(), made.len());
}

/// A selected hard link whose target came earlier, unselected: a second pass reads the
/// archive again — the copy the build keeps in the store, not the network — and checks it
/// is the same file; then the link gets its target's bytes.
#[test]
fn a_link_to_an_earlier_unselected_member_takes_a_second_pass() {
    let work = tempfile::tempdir().unwrap();
    tree(work.path());
    let m = make_tarball(work.path(), "gnu.tar.gz", &["--format=gnu", "-z"]);
    let server = Server::start();
    server.serve("/gnu.tar.gz", &m.bytes);
    let sb = bare_sandbox();
    let url = server.url("/gnu.tar.gz");
    sb.write_recipe(
        "links",
        &format!(
            "[inputs.gnu]\nurl = \"{url}\"\nsha256 = \"{}\"\n\n\
             [files.\"/usr/local/bin/tool-hard\"]\ninput = \"gnu\"\nmember = \"pkg/bin/tool-hard\"\n\n\
             [files.\"/usr/local/bin/alias\"]\ninput = \"gnu\"\nmember = \"pkg/bin/alias\"\n",
            sha256_hex(&m.bytes)
        ),
    );
    let r = sb.kbuild(&["build", "links"]);
    r.assert_success();
    let mib = format!("{:.1}", m.bytes.len() as f64 / (1 << 20) as f64);
    assert_eq!(
        r.stderr().replace(server.base(), "$SERVER"),
        format!(
            "    Fetching gnu from $SERVER/gnu.tar.gz\n\
             \x20       Read gnu: {mib} MiB in $TIME\n\
             \x20  Rereading gnu from the copy kept of $SERVER/gnu.tar.gz (a selected link's target comes before the link)\n\
             \x20       Read gnu: {mib} MiB in $TIME\n\
             \x20    Locking gnu sha256 {}\n\
             \x20      Wrote `$SANDBOX/flake-like.lock.json`\n\
             \x20      Built generation 1\n",
            sha256_hex(&m.bytes)
        )
    );
    assert_eq!(server.requests(), vec!["GET /gnu.tar.gz".to_owned()]);
    let tool = std::fs::read(work.path().join("pkg/bin/tool")).unwrap();
    let rootfs = r.rootfs();
    assert_eq!(
        std::fs::read(rootfs.join("usr/local/bin/tool-hard")).unwrap(),
        tool
    );
    assert_eq!(
        std::fs::read(rootfs.join("usr/local/bin/alias")).unwrap(),
        tool
    );
}

/// Serves `bodies` in turn, one per connection, on 127.0.0.1; returns the base URL.
fn serve_in_turn(bodies: Vec<Vec<u8>>) -> String {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for (body, stream) in bodies.into_iter().zip(listener.incoming()) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                line.clear();
            }
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            let _ = stream.write_all(&body);
        }
    });
    base
}

/// The second pass reads the copy kept while the first pass read the network, never the
/// URL again: a source that serves another file on the next request cannot mix two files
/// into one build (the second request is never made).
#[test]
fn the_second_pass_reads_the_kept_copy_not_the_source_again() {
    let work = tempfile::tempdir().unwrap();
    tree(work.path());
    let first = make_tarball(work.path(), "a.tar.gz", &["--format=gnu", "-z"]);
    let tool = std::fs::read(work.path().join("pkg/bin/tool")).unwrap();
    std::fs::write(work.path().join("pkg/bin/tool"), b"#!/bin/sh\necho other\n").unwrap();
    let second = make_tarball(work.path(), "b.tar.gz", &["--format=gnu", "-z"]);
    assert_ne!(first.bytes, second.bytes);
    let base = serve_in_turn(vec![first.bytes.clone(), second.bytes.clone()]);
    let sb = bare_sandbox();
    sb.write_recipe(
        "links",
        &format!(
            "[inputs.gnu]\nurl = \"{base}/gnu.tar.gz\"\n\n\
             [files.\"/usr/local/bin/tool-hard\"]\ninput = \"gnu\"\nmember = \"pkg/bin/tool-hard\"\n"
        ),
    );
    let r = sb.kbuild(&["build", "links"]);
    r.assert_success();
    assert!(
        r.stderr.contains("Rereading gnu from the copy kept of "),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read(r.rootfs().join("usr/local/bin/tool-hard")).unwrap(),
        tool
    );
    assert!(
        sb.lock_bytes()
            .is_some_and(|l| String::from_utf8_lossy(&l).contains(&sha256_hex(&first.bytes))),
        "the lock pins the file read"
    );
}

/// The faults of a link, each with its exact message. The first row is the issue's own
/// example: a hard link to a file that is not in the archive (GNU tar wrote the link, then
/// `tar --delete` removed its target).
#[test]
fn links_leaving_the_archive_are_refused_with_their_target() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    std::fs::create_dir_all(d.join("pkg/bin")).unwrap();
    std::fs::write(d.join("pkg/bin/tool"), b"#!/bin/sh\n").unwrap();
    std::fs::write(d.join("outside-file"), b"secret\n").unwrap();
    std::fs::hard_link(d.join("outside-file"), d.join("pkg/bin/hard-out")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", d.join("pkg/bin/abs")).unwrap();
    std::os::unix::fs::symlink("../../../outside", d.join("pkg/bin/climb")).unwrap();
    std::os::unix::fs::symlink("gone", d.join("pkg/bin/dangling")).unwrap();
    std::os::unix::fs::symlink("loop-b", d.join("pkg/bin/loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", d.join("pkg/bin/loop-b")).unwrap();
    std::os::unix::fs::symlink("..", d.join("pkg/bin/dir")).unwrap();
    sh(
        d,
        "tar",
        &[
            "--no-recursion",
            "-cf",
            "links.tar",
            "pkg",
            "outside-file",
            "pkg/bin/hard-out",
        ],
    );
    sh(
        d,
        "tar",
        &[
            "--no-recursion",
            "-rf",
            "links.tar",
            "pkg/bin",
            "pkg/bin/tool",
            "pkg/bin/abs",
            "pkg/bin/climb",
            "pkg/bin/dangling",
            "pkg/bin/loop-a",
            "pkg/bin/loop-b",
            "pkg/bin/dir",
        ],
    );
    sh(d, "tar", &["--delete", "-f", "links.tar", "outside-file"]);
    sh(d, "gzip", &["-n", "links.tar"]);
    let bytes = std::fs::read(d.join("links.tar.gz")).unwrap();
    let server = Server::start();
    server.serve("/links.tar.gz", &bytes);
    let url = server.url("/links.tar.gz");
    let cases = [
        (
            "pkg/bin/hard-out",
            "member `pkg/bin/hard-out` is a hard link to `outside-file`, which is not a member before it (a hard link can only name an earlier member)",
        ),
        (
            "pkg/bin/abs",
            "member `pkg/bin/abs` is a symbolic link to `/etc/shadow`, outside the archive (links are followed only to other members)",
        ),
        (
            "pkg/bin/climb",
            "member `pkg/bin/climb` is a symbolic link to `../../../outside`, outside the archive (links are followed only to other members)",
        ),
        (
            "pkg/bin/dangling",
            "member `pkg/bin/dangling` is a symbolic link to `gone`, and the archive has no member `pkg/bin/gone`",
        ),
        (
            "pkg/bin/loop-a",
            "member `pkg/bin/loop-a` leads through more than 40 links (a loop?)",
        ),
        (
            "pkg/bin/dir",
            "member `pkg` is a directory, not a regular file (reached from member `pkg/bin/dir`)",
        ),
    ];
    for (member, message) in cases {
        let sb = bare_sandbox();
        sb.write_recipe(
            "links",
            &format!(
                "[inputs.links]\nurl = \"{url}\"\nsha256 = \"{}\"\n\n[files.\"/usr/local/bin/x\"]\ninput = \"links\"\nmember = \"{member}\"\n",
                sha256_hex(&bytes)
            ),
        );
        let r = sb.kbuild(&["build", "links"]);
        assert_failed(
            &r,
            &server,
            &format!(
                "    Fetching links from $SERVER/links.tar.gz\n        Read links: 0.0 MiB in $TIME\nerror: cannot build links\n  caused by: input `links` from `$SERVER/links.tar.gz`: {message}\n"
            ),
        );
        assert_eq!(
            common::top_level(&sb.store),
            [".kbuild"],
            "{member}: nothing kept"
        );
    }
}

/// The faults of a sparse member GNU tar wrote, made by editing its map: each is refused.
#[test]
fn damaged_sparse_maps_from_gnu_tar_are_refused() {
    let work = tempfile::tempdir().unwrap();
    tree(work.path());
    let m = make_tarball(
        work.path(),
        "p01.tar",
        &["--format=posix", "--sparse-version=0.1"],
    );
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let map_at = |bytes: &[u8]| {
        let key = b"GNU.sparse.map=";
        bytes
            .windows(key.len())
            .position(|w| w == key)
            .expect("a 0.1 map")
    };
    // The map of pkg/share/sparse: `1048576,4096,2498560,…` (block-aligned by GNU tar).
    let original = {
        let at = map_at(&m.bytes) + "GNU.sparse.map=".len();
        let end = m.bytes[at..].iter().position(|b| *b == b'\n').unwrap() + at;
        text(&m.bytes[at..end])
    };
    let numbers: Vec<u64> = original.split(',').map(|n| n.parse().unwrap()).collect();
    assert_eq!(numbers.len(), 6, "{original}");
    // Same-length edits keep the PAX record lengths right.
    let edit = |new: String| -> Vec<u8> {
        assert_eq!(new.len(), original.len(), "{new}");
        let mut b = m.bytes.clone();
        let at = map_at(&b) + "GNU.sparse.map=".len();
        b[at..at + new.len()].copy_from_slice(new.as_bytes());
        b
    };
    let (o1, n1, o2, n2) = (numbers[0], numbers[1], numbers[2], numbers[3]);
    let width = |v: u64, like: u64| format!("{v:0w$}", w = like.to_string().len());
    let cases = [
        // The second block starts inside the first.
        (
            edit(format!(
                "{o1},{n1},{},{n2},{},{}",
                width(o1 + 1, o2),
                numbers[4],
                numbers[5]
            )),
            format!(
                "member `pkg/share/sparse` has a sparse map whose blocks overlap or run backwards (at offset {})",
                o1 + 1
            ),
        ),
        // The last block ends past the real size.
        (
            edit(format!("{o1},{n1},{o2},{n2},{},{}", numbers[4], {
                let v = numbers[5] + 7;
                assert_eq!(v.to_string().len(), numbers[5].to_string().len());
                v
            })),
            "member `pkg/share/sparse` has a sparse map reaching past its size of 3145728 bytes"
                .to_owned(),
        ),
        // The blocks list more data than the member holds.
        (
            edit(format!(
                "{o1},{},{o2},{n2},{},{}",
                n1 - 1,
                numbers[4],
                numbers[5]
            )),
            format!(
                "member `pkg/share/sparse` has a sparse map listing {} bytes of data, but it holds {}",
                n1 - 1 + n2,
                n1 + n2
            ),
        ),
    ];
    let server = Server::start();
    for (i, (bytes, message)) in cases.iter().enumerate() {
        let path = format!("/bad-{i}.tar");
        server.serve(&path, bytes);
        let url = server.url(&path);
        let sb = bare_sandbox();
        sb.write_recipe(
            "sparse",
            &format!(
                "[inputs.sparse]\nurl = \"{url}\"\nsha256 = \"{}\"\n\n[files.\"/etc/sparse\"]\ninput = \"sparse\"\nmember = \"pkg/share/sparse\"\n",
                sha256_hex(bytes)
            ),
        );
        let r = sb.kbuild(&["build", "sparse"]);
        let u = format!("$SERVER{path}");
        let mib = format!("{:.1}", bytes.len() as f64 / (1 << 20) as f64);
        assert_failed(
            &r,
            &server,
            &format!(
                "    Fetching sparse from {u}\n        Read sparse: {mib} MiB in $TIME\nerror: cannot build sparse\n  caused by: input `sparse` from `{u}`: {message}\n"
            ),
        );
    }
}

/// A sparse member counts its expanded size against the unpack limit (a few KB of data can
/// claim terabytes of holes).
#[test]
fn a_sparse_member_expanding_past_the_limit_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    std::fs::create_dir(d.join("pkg")).unwrap();
    let f = std::fs::File::create(d.join("pkg/huge")).unwrap();
    f.set_len(1 << 40).unwrap();
    drop(f);
    sh(
        d,
        "tar",
        &[
            "--sparse",
            "--format=gnu",
            "-czf",
            "huge.tar.gz",
            "pkg/huge",
        ],
    );
    let bytes = std::fs::read(d.join("huge.tar.gz")).unwrap();
    assert!(bytes.len() < 4096, "{} bytes", bytes.len());
    let server = Server::start();
    server.serve("/huge.tar.gz", &bytes);
    let sb = bare_sandbox();
    sb.write_recipe(
        "huge",
        &format!(
            "[inputs.huge]\nurl = \"{}\"\nsha256 = \"{}\"\n\n[files.\"/etc/huge\"]\ninput = \"huge\"\nmember = \"pkg/huge\"\n",
            server.url("/huge.tar.gz"),
            sha256_hex(&bytes)
        ),
    );
    let r = sb.kbuild(&["build", "huge"]);
    assert_failed(
        &r,
        &server,
        "    Fetching huge from $SERVER/huge.tar.gz\n        Read huge: 0.0 MiB in $TIME\nerror: cannot build huge\n  caused by: input `huge` from `$SERVER/huge.tar.gz`: unpacks to more than 34359738368 bytes (the limit; set KBUILD_MAX_UNPACKED_BYTES to raise it)\n",
    );
}

/// A missing member lists the closest names, and the help names a command that works on
/// every format (never `tar tzf` on a .tar.xz).
#[test]
fn a_missing_member_gets_the_closest_names_and_a_help_that_works() {
    let work = tempfile::tempdir().unwrap();
    tree(work.path());
    let m = make_tarball(work.path(), "t.tar.xz", &["--format=gnu", "-J"]);
    let server = Server::start();
    server.serve("/t.tar.xz", &m.bytes);
    let sb = bare_sandbox();
    sb.write_recipe(
        "t",
        &format!(
            "[inputs.t]\nurl = \"{}\"\nsha256 = \"{}\"\n\n\
             [files.\"/usr/local/bin/tool\"]\ninput = \"t\"\nmember = \"bin/tool\"\n\n\
             [files.\"/etc/conf\"]\ninput = \"t\"\nmember = \"pkg/etc/cnof\"\n",
            server.url("/t.tar.xz"),
            sha256_hex(&m.bytes)
        ),
    );
    let r = sb.kbuild(&["build", "t"]);
    let mib = format!("{:.1}", m.bytes.len() as f64 / (1 << 20) as f64);
    assert_failed(
        &r,
        &server,
        &format!(
            "    Fetching t from $SERVER/t.tar.xz\n        Read t: {mib} MiB in $TIME\nerror: cannot build t\n  caused by: input `t` from `$SERVER/t.tar.xz` lacks `bin/tool`, `pkg/etc/cnof`\n  \
         `bin/tool`: closest in the archive: `pkg/bin/tool`, `pkg/etc/conf`, `pkg/bin/alias`, `pkg/bin/tool-hard`, `pkg/z/later`\n  \
         `pkg/etc/cnof`: closest in the archive: `pkg/etc/conf`, `pkg/bin/tool`, `pkg/bin/alias`, `pkg/z/later`, `pkg/share/sparse`\n\
         help: fix the `member` paths in the recipe; `kbuild inputs t --members` lists the archive's members\n"
        ),
    );
    // The command the help names works on this .tar.xz.
    let listed = sb.kbuild(&["inputs", "t", "--members"]);
    listed.assert_success();
    assert!(
        listed.stdout.contains(" pkg/bin/tool\n"),
        "{}",
        listed.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// Real upstream archives
// ---------------------------------------------------------------------------------------------

const CACHE: &str = "/var/cache/kbuild-test";
const PERL_DEB: &str = "perl-base";
const ESBUILD: &str = "@esbuild/linux-x64@0.25.0";
const ESBUILD_FILE: &str = "esbuild-linux-x64-0.25.0.tgz";
const BIOME: &str = "@biomejs/cli-linux-x64@1.9.4";
const BIOME_FILE: &str = "biomejs-cli-linux-x64-1.9.4.tgz";

/// Whether the real-archive test may run: as root (CI runs as root) or with CI=1, it must.
fn may_fetch_real_archives() -> bool {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let ci = std::env::var("CI").is_ok_and(|v| v == "1" || v == "true");
    if !root && !ci {
        println!("skipped: fetching real upstream archives into {CACHE} needs root (or CI=1)");
        return false;
    }
    true
}

/// The cached file in `dir` whose name starts with `prefix`, fetched with `fetch` if none.
fn cached(dir: &str, prefix: &str, suffix: &str, fetch: &[&str]) -> PathBuf {
    let dir = Path::new(CACHE).join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let find = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with(prefix) && n.ends_with(suffix)
            })
    };
    if let Some(p) = find() {
        return p;
    }
    // One fetch at a time on the machine (another test run, or the systemd tier's
    // `container::prepare`, may be filling the same directory: it takes the same lock), into
    // a temp dir whose files are then renamed into place, so that nobody finds a file
    // half-written.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(CACHE).join(".lock"))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    if let Some(p) = find() {
        return p;
    }
    let tmp = tempfile::Builder::new()
        .prefix(".tmp.")
        .tempdir_in(&dir)
        .unwrap();
    // apt-get downloads as user `_apt`, which must be able to write there.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    sh(tmp.path(), fetch[0], &fetch[1..]);
    for e in std::fs::read_dir(tmp.path()).unwrap() {
        let e = e.unwrap();
        std::fs::rename(e.path(), dir.join(e.file_name())).unwrap();
    }
    find().unwrap_or_else(|| panic!("{fetch:?} left no {prefix}*{suffix} in {}", dir.display()))
}

/// perl-base's `usr/bin/perl5.36.0` is a hard link to `usr/bin/perl`: selected alone, it
/// builds byte-exact with `dpkg-deb -x`, runs from the switched root, and rebuilds to the
/// same store path. etcd-server's etcd, etcd-client's etcdctl, kubernetes-client's kubectl and
/// npm's `@biomejs/cli-linux-x64` biome the same way (each byte-exact and run from the root);
/// an npm tarball's `bin/esbuild` gets the suggestion `package/bin/esbuild`.
#[test]
fn real_debian_packages_and_an_npm_tarball() {
    if !may_fetch_real_archives() {
        return;
    }
    let perl = cached(
        "debs",
        "perl-base_",
        ".deb",
        &["apt-get", "download", PERL_DEB],
    );
    let etcd = cached(
        "debs",
        "etcd-server_",
        ".deb",
        &["apt-get", "download", "etcd-server"],
    );
    let etcdctl = cached(
        "debs",
        "etcd-client_",
        ".deb",
        &["apt-get", "download", "etcd-client"],
    );
    let kubectl = cached(
        "debs",
        "kubernetes-client_",
        ".deb",
        &["apt-get", "download", "kubernetes-client"],
    );
    let esbuild = cached("npm", ESBUILD_FILE, "", &["npm", "pack", ESBUILD]);
    let biome = cached("npm", BIOME_FILE, "", &["npm", "pack", BIOME]);

    let server = Server::start();
    let w = World::bare();
    let mut text = String::new();
    for (name, path) in [
        ("perl-base", &perl),
        ("etcd-server", &etcd),
        ("etcd-client", &etcdctl),
        ("kubernetes-client", &kubectl),
        ("biome", &biome),
    ] {
        let bytes = std::fs::read(path).unwrap();
        let url_path = format!("/{}", path.file_name().unwrap().to_string_lossy());
        server.serve(&url_path, &bytes);
        text.push_str(&format!(
            "[inputs.{name}]\nurl = \"{}\"\nsha256 = \"{}\"\n\n",
            server.url(&url_path),
            sha256_hex(&bytes)
        ));
    }
    text.push_str(
        "[files.\"/usr/local/bin/perl\"]\ninput = \"perl-base\"\nmember = \"./usr/bin/perl5.36.0\"\n\n\
         [files.\"/usr/local/bin/etcd\"]\ninput = \"etcd-server\"\nmember = \"usr/bin/etcd\"\n\n\
         [files.\"/usr/local/bin/etcdctl\"]\ninput = \"etcd-client\"\nmember = \"./usr/bin/etcdctl\"\n\n\
         [files.\"/usr/local/bin/kubectl\"]\ninput = \"kubernetes-client\"\nmember = \"usr/bin/kubectl\"\n\n\
         [files.\"/usr/local/bin/biome\"]\ninput = \"biome\"\nmember = \"package/biome\"\n",
    );
    w.sb.write_recipe("upstream", &text);
    let g = w.build(&["upstream"], &[], 1);

    let x = tempfile::tempdir().unwrap();
    for deb in [&perl, &etcd, &etcdctl, &kubectl] {
        sh(x.path(), "dpkg-deb", &["-x", deb.to_str().unwrap(), "."]);
    }
    sh(x.path(), "tar", &["-xzf", biome.to_str().unwrap()]);
    for (ours, theirs) in [
        ("etcdctl", "usr/bin/etcdctl"),
        ("kubectl", "usr/bin/kubectl"),
        ("biome", "package/biome"),
    ] {
        assert!(
            std::fs::read(g.rootfs.join("usr/local/bin").join(ours)).unwrap()
                == std::fs::read(x.path().join(theirs)).unwrap(),
            "{ours} differs from {theirs}"
        );
    }
    assert_eq!(
        std::fs::read(g.rootfs.join("usr/local/bin/perl")).unwrap(),
        std::fs::read(x.path().join("usr/bin/perl")).unwrap()
    );
    assert_eq!(
        std::fs::read(g.rootfs.join("usr/local/bin/etcd")).unwrap(),
        std::fs::read(x.path().join("usr/bin/etcd")).unwrap()
    );

    w.ok(&["switch"]);
    let out = Command::new(w.root.join("usr/local/bin/perl"))
        .args(["-e", "print 1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"1");
    let out = Command::new(w.root.join("usr/local/bin/etcd"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("etcd Version: 3."));
    for (bin, args, expected) in [
        ("etcdctl", &["version"][..], "etcdctl version: 3.4.23"),
        (
            "kubectl",
            &["version", "--client"][..],
            "GitVersion:\"v1.20.2",
        ),
        ("biome", &["--version"][..], "Version: 1.9.4"),
    ] {
        let out = Command::new(w.root.join("usr/local/bin").join(bin))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{bin}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(expected), "{bin}: {stdout}");
    }

    // A rebuild in another store gives the same rootfs path.
    let other = w.sb.dir.join("store2");
    let r = w.run_store(&other, &["build", "upstream"]);
    r.assert_success();
    assert_eq!(
        r.rootfs().file_name(),
        g.rootfs.file_name(),
        "the rebuild reached another store path"
    );

    // npm: the recipe names `bin/esbuild`; the package holds `package/bin/esbuild`.
    let bytes = std::fs::read(&esbuild).unwrap();
    server.serve(&format!("/{ESBUILD_FILE}"), &bytes);
    let sb = bare_sandbox();
    sb.write_recipe(
        "esbuild",
        &format!(
            "[inputs.esbuild]\nurl = \"{}\"\nsha256 = \"{}\"\n\n[files.\"/usr/local/bin/esbuild\"]\ninput = \"esbuild\"\nmember = \"bin/esbuild\"\n",
            server.url(&format!("/{ESBUILD_FILE}")),
            sha256_hex(&bytes)
        ),
    );
    let r = sb.kbuild(&["build", "esbuild"]);
    let mib = format!("{:.1}", bytes.len() as f64 / (1 << 20) as f64);
    assert_failed(
        &r,
        &server,
        &format!(
            "    Fetching esbuild from $SERVER/{ESBUILD_FILE}\n        Read esbuild: {mib} MiB in $TIME\nerror: cannot build esbuild\n  caused by: input `esbuild` from `$SERVER/{ESBUILD_FILE}` lacks `bin/esbuild`\n  \
         `bin/esbuild`: closest in the archive: `package/bin/esbuild`, `package/README.md`, `package/package.json`\n\
         help: fix the `member` paths in the recipe; `kbuild inputs esbuild --members` lists the archive's members\n"
        ),
    );
}

/// A content fault in an intact kept archive (a link leaving it) is reported from the kept
/// copy: the archive stays kept and is not fetched again, since a fresh download would fail the
/// same way. Only a copy whose hash no longer matches is set aside.
#[test]
fn a_link_fault_in_a_kept_archive_keeps_it_and_fetches_nothing() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    std::fs::create_dir_all(d.join("pkg/bin")).unwrap();
    std::fs::write(d.join("pkg/bin/tool"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", d.join("pkg/bin/abs")).unwrap();
    sh(d, "tar", &["-czf", "links.tar.gz", "pkg"]);
    let bytes = std::fs::read(d.join("links.tar.gz")).unwrap();
    let server = Server::start();
    server.serve("/links.tar.gz", &bytes);
    let url = server.url("/links.tar.gz");
    let sb = bare_sandbox();
    let write = |member: &str| {
        sb.write_recipe(
            "links",
            &format!(
                "[inputs.links]\nurl = \"{url}\"\nsha256 = \"{}\"\n\n[files.\"/usr/local/bin/x\"]\ninput = \"links\"\nmember = \"{member}\"\n",
                sha256_hex(&bytes)
            ),
        )
    };
    write("pkg/bin/tool");
    sb.kbuild(&["build", "links"]).assert_success();
    assert_eq!(server.request_count(), 1);
    let kept: Vec<String> = common::top_level(&sb.store)
        .into_iter()
        .filter(|n| n.ends_with("links.tar.gz"))
        .collect();
    assert_eq!(kept.len(), 1, "the archive is kept");

    write("pkg/bin/abs");
    let r = sb.kbuild(&["build", "links"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr().contains(
            "member `pkg/bin/abs` is a symbolic link to `/etc/shadow`, outside the archive (links are followed only to other members)"
        ),
        "{}",
        r.stderr()
    );
    assert_eq!(server.request_count(), 1, "nothing fetched again");
    assert!(!r.stderr().contains("set aside"), "{}", r.stderr());
    assert!(sb.store.join(&kept[0]).exists(), "the kept archive stays");
}
