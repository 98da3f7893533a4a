//! Inputs kept for offline work (issue 9, point 7): every fetched archive is kept in the store
//! as a fixed-output object named by its pin, written in the same pass as the unpack and
//! renamed in only once its hash matched. Adding a member, `verify --repair` and a build on a
//! host without network then need neither the network nor `--override-input`; gc keeps an
//! archive while a remaining generation pins it and says what they cost.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::world::{is_kept_archive, store_objects};
use common::*;

/// The stderr lines of reading the input from the archive the store keeps.
fn from_store() -> String {
    fetched(
        &format!("file://$SANDBOX/store/{}", kept_fixture()),
        fixture().gz.len(),
    )
}

fn build_master(sb: &Sandbox, extra: &[&str]) -> Run {
    let mut args = vec!["build", "master"];
    args.extend_from_slice(extra);
    sb.kbuild(&args)
}

/// A recipe `plus` importing master and selecting one more member, kubeadm.
fn write_plus(sb: &Sandbox) {
    sb.write_recipe(
        "plus",
        &format!(
            "imports = [\"master\"]\n\n[files.\"/usr/local/bin/kubeadm\"]\ninput = \"{INPUT}\"\nmember = \"{}\"\n",
            bin_member("kubeadm")
        ),
    );
}

/// `kbuild verify ARGS` of the sandbox's store, without a root (the sandbox's root does not
/// exist).
fn verify(sb: &Sandbox, args: &[&str]) -> Run {
    let mut c = sb.command(&[&["verify"], args].concat());
    c.env_remove("KBUILD_ROOT");
    sb.run(c)
}

fn no_tmp(store: &Path) -> Vec<String> {
    top_level(store)
        .into_iter()
        .filter(|n| n.starts_with(".tmp"))
        .collect()
}

#[test]
fn a_fetch_keeps_the_archive_named_by_its_pin() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    build_master(&sb, &[]).assert_success();
    let kept = sb.store.join(kept_fixture());
    assert_eq!(std::fs::read(&kept).unwrap(), fixture().gz);
    let m = std::fs::metadata(&kept).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o444, 1));
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            sb.store
                .join(".kbuild/meta")
                .join(format!("{}.json", kept_fixture())),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        meta["deriver"],
        format!("fixed:sha256:{}", fixture().sha256)
    );
    assert_eq!(
        meta["shape"],
        serde_json::json!({".": {"type": "file", "size": fixture().gz.len(), "executable": false}})
    );
    assert!(is_kept_archive(&sb.store, &kept_fixture()));
    assert_eq!(no_tmp(&sb.store), Vec::<String>::new());
    // `verify` checks it against its pin.
    let v = verify(&sb, &[]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "ok\n"), "{v:?}");
}

#[test]
fn adding_a_member_needs_no_network() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    build_master(&sb, &[]).assert_success();
    drop(server);
    write_plus(&sb);
    let r = sb.kbuild(&["build", "plus", "--offline", "--locked"]);
    r.assert_success();
    assert_eq!(
        r.stderr(),
        format!("{}       Built generation 2\n", from_store())
    );
    assert_eq!(
        std::fs::read(r.rootfs().join("usr/local/bin/kubeadm")).unwrap(),
        fixture().tarball.member(&bin_member("kubeadm"))
    );
}

#[test]
fn repair_rebuilds_a_damaged_object_with_the_server_gone() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let rootfs = build_master(&sb, &[]).rootfs();
    drop(server);
    let kubectl = object_name(
        &kbuild::store::Node::file(fixture().tarball.member(&bin_member("kubectl")), true),
        "kubectl",
    );
    flip_byte(&sb.store.join(&kubectl), 100);
    let v = verify(&sb, &["--repair"]);
    assert_eq!(v.code, Some(0), "{v:?}");
    let rootfs_name = rootfs.file_name().unwrap().to_str().unwrap().to_owned();
    let mut replaced: Vec<String> = v.stderr().lines().skip(1).map(str::to_owned).collect();
    let reading: Vec<String> = replaced.drain(..2).collect();
    assert_eq!(reading.join("\n") + "\n", from_store());
    replaced.sort();
    let mut expected = vec![
        format!("    Replaced {kubectl} (by a good copy rebuilt from generation 1's sources)"),
        format!("    Replaced {rootfs_name} (by a good copy rebuilt from generation 1's sources)"),
    ];
    expected.sort();
    assert_eq!(replaced, expected);
    assert_eq!(
        std::fs::read(sb.store.join(&kubectl)).unwrap(),
        fixture().tarball.member(&bin_member("kubectl"))
    );
    let again = verify(&sb, &[]);
    assert_eq!((again.code, again.stdout.as_str()), (Some(0), "ok\n"));
}

/// A host without network that holds only the kept archive (every other object gone, no
/// index, no generation): the build reads the archive from the store.
#[test]
fn an_air_gapped_host_builds_from_the_kept_archive_alone() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let first = build_master(&sb, &[]).rootfs();
    drop(server);
    for o in store_objects(&sb.store) {
        if o != kept_fixture() {
            let p = sb.store.join(&o);
            crate_writable(&p);
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
            std::fs::remove_file(sb.store.join(".kbuild/meta").join(format!("{o}.json"))).unwrap();
        }
    }
    for d in ["index", "profiles"] {
        std::fs::remove_dir_all(sb.store.join(".kbuild").join(d)).unwrap();
        std::fs::create_dir(sb.store.join(".kbuild").join(d)).unwrap();
    }
    assert_eq!(
        store_objects(&sb.store),
        [kept_fixture()].into_iter().collect()
    );
    let r = build_master(&sb, &["--offline", "--locked"]);
    r.assert_success();
    assert_eq!(
        r.stderr(),
        format!("{}       Built generation 1\n", from_store())
    );
    assert_eq!(r.rootfs(), first, "the same rootfs as with the network");
}

fn crate_writable(p: &Path) {
    for e in common::walk_any(p).into_iter().flatten() {
        if e.file_type().is_dir() {
            std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

/// A kept archive damaged behind the store's back (a flipped byte, its mtime set back so
/// only the hash can tell) fails its pin: it is moved aside, the input is fetched again and
/// kept anew; `verify` had named it.
#[test]
fn a_damaged_kept_archive_is_set_aside_and_fetched_again() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    build_master(&sb, &[]).assert_success();
    let kept = sb.store.join(kept_fixture());
    flip_byte(&kept, 1000);
    set_mtime_1(&kept);
    let mut damaged = fixture().gz.clone();
    damaged[1000] ^= 0x20;
    let v = verify(&sb, &[]);
    assert_eq!(
        (v.code, v.stdout()),
        (
            Some(1),
            format!(
                "corrupt  {}: content sha256 is {}, its pin says {} (`kbuild verify --repair` repairs it)\n",
                kept_fixture(),
                sha256_hex(&damaged),
                fixture().sha256
            )
        ),
        "{v:?}"
    );
    // Make the build unpack: one member object gone.
    let kubectl = object_name(
        &kbuild::store::Node::file(fixture().tarball.member(&bin_member("kubectl")), true),
        "kubectl",
    );
    std::fs::remove_file(sb.store.join(&kubectl)).unwrap();
    let r = build_master(&sb, &[]);
    r.assert_success();
    assert_eq!(
        r.stderr(),
        format!(
            "{}{}     Rebuilt {} (the store's copy was incomplete or damaged: its sha256 is {})\n     Rebuilt {kubectl} (it was missing from the store)\n    Restored generation 1: its objects are complete again\n",
            from_store(),
            fetched(
                "$SERVER/kubernetes-server-linux-amd64.tar.gz",
                fixture().gz.len()
            ),
            kept_fixture(),
            sha256_hex(&damaged)
        )
    );
    assert_eq!(std::fs::read(&kept).unwrap(), fixture().gz);
    assert_eq!(server.request_count(), 2);
    let v = verify(&sb, &[]);
    assert_eq!((v.code, v.stdout.as_str()), (Some(0), "ok\n"), "{v:?}");
}

/// Our own case: a kept archive written to (its mtime changed) is not even read.
#[test]
fn a_modified_kept_archive_is_not_read() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    build_master(&sb, &[]).assert_success();
    flip_byte(&sb.store.join(kept_fixture()), 1000);
    write_plus(&sb);
    let r = sb.kbuild(&["build", "plus"]);
    r.assert_success();
    assert_eq!(
        r.stderr(),
        format!(
            "{}     Rebuilt {} (the store's copy was incomplete or damaged: its modification time changed)\n       Built generation 2\n",
            fetched(
                "$SERVER/kubernetes-server-linux-amd64.tar.gz",
                fixture().gz.len()
            ),
            kept_fixture(),
        )
    );
    assert_eq!(
        std::fs::read(sb.store.join(kept_fixture())).unwrap(),
        fixture().gz
    );
}

fn set_mtime_1(p: &Path) {
    let f = std::fs::File::open(p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))
        .unwrap();
}

/// The wrong file is never kept: the copy becomes visible only once its hash matched.
#[test]
fn a_wrong_file_leaves_no_kept_archive() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let other = Tarball::kubernetes_server()
        .with_changed(&bin_member("kubectl"), b"not kubectl\n")
        .build(Compression::Gzip);
    server.serve(TARBALL_PATH, &other);
    let r = build_master(&sb, &[]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr().contains("sha256 mismatch"), "{}", r.stderr());
    assert_eq!(store_objects(&sb.store), Default::default());
    assert_eq!(no_tmp(&sb.store), Vec::<String>::new());
}

/// gc keeps an archive while a remaining generation pins it, says what the kept ones cost,
/// and `--drop-archives` deletes them all; the next build fetches again.
#[test]
fn gc_keeps_archives_pinned_by_remaining_generations() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    build_master(&sb, &[]).assert_success();
    // Generation 2 reads another archive (one binary changed), pinned by its own sha256.
    let other = Tarball::kubernetes_server()
        .with_changed(&bin_member("kubectl"), b"another kubectl\n")
        .build(Compression::Gzip);
    server.serve("/other.tar.gz", &other);
    let override_arg = format!("{INPUT}={}", server.url("/other.tar.gz"));
    build_master(&sb, &["--override-input", &override_arg]).assert_success();
    let kept_other = kept_name(
        "sha256",
        &sha256_hex(&other),
        "kubernetes-server-linux-amd64.tar.gz",
    );
    assert!(sb.store.join(&kept_other).is_file());

    let g = sb.kbuild(&["gc"]);
    g.assert_success();
    assert_eq!(
        g.stdout,
        format!(
            "0 generations, 0 objects and 0 temporary entries removed, 0 B freed\n{}",
            gc_archives_line(2, fixture().gz.len() + other.len())
        )
    );

    // Generation 1 goes: its archive (pinned by no remaining generation) goes with it.
    let before = store_objects(&sb.store);
    let g = sb.kbuild(&["gc", "--keep", "1"]);
    g.assert_success();
    let after = store_objects(&sb.store);
    let gone: Vec<String> = before.difference(&after).cloned().collect();
    assert!(gone.contains(&kept_fixture()), "{gone:?}");
    assert!(after.contains(&kept_other));
    assert!(
        g.stderr
            .contains(&format!("     Deleted {}\n", kept_fixture()))
    );
    assert_eq!(
        g.stdout.lines().nth(1).map(|l| format!("{l}\n")),
        Some(gc_archives_line(1, other.len()))
    );

    // All of them.
    let g = sb.kbuild(&["gc", "--drop-archives"]);
    g.assert_success();
    assert_eq!(
        (g.stdout.as_str(), g.stderr.as_str()),
        (
            format!(
                "0 generations, 1 object and 0 temporary entries removed, {} freed\n{}",
                human_bytes(other.len() as u64),
                gc_archives_line(0, 0)
            )
            .as_str(),
            format!("     Deleted {kept_other}\n").as_str()
        )
    );
    assert!(
        store_objects(&sb.store)
            .iter()
            .all(|o| !is_kept_archive(&sb.store, o))
    );
    // Without its archive, adding a member fetches again (and keeps it again).
    write_plus(&sb);
    let r = sb.kbuild(&["build", "plus", "--override-input", &override_arg]);
    r.assert_success();
    assert!(sb.store.join(&kept_other).is_file());
}

/// `verify --repair` deletes a damaged kept archive (no rootfs needs it), and the next build
/// that needs the input fetches and keeps it again.
#[test]
fn repair_deletes_a_damaged_kept_archive_and_a_build_keeps_it_again() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    build_master(&sb, &[]).assert_success();
    let kept = sb.store.join(kept_fixture());
    flip_byte(&kept, 1000);
    set_mtime_1(&kept);
    let v = verify(&sb, &["--repair"]);
    let mut damaged = fixture().gz.clone();
    damaged[1000] ^= 0x20;
    assert_eq!(
        (v.code, v.stdout()),
        (
            Some(0),
            format!(
                "corrupt  {}: content sha256 is {}, its pin says {}\nok\n",
                kept_fixture(),
                sha256_hex(&damaged),
                fixture().sha256
            )
        ),
        "{v:?}"
    );
    assert!(!kept.exists(), "{v:?}");
    let again = verify(&sb, &[]);
    assert_eq!((again.code, again.stdout.as_str()), (Some(0), "ok\n"));
    write_plus(&sb);
    let r = sb.kbuild(&["build", "plus"]);
    r.assert_success();
    assert_eq!(
        r.stderr(),
        format!(
            "{}       Built generation 2\n",
            fetched(
                "$SERVER/kubernetes-server-linux-amd64.tar.gz",
                fixture().gz.len()
            )
        )
    );
    assert_eq!(std::fs::read(&kept).unwrap(), fixture().gz);
}

/// Review finding 13: a member the kept archive lacks is reported against the input's URL (what
/// the recipe names), not the store's copy it was read from.
#[test]
fn a_missing_member_of_a_kept_archive_names_the_upstream_url() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    build_master(&sb, &[]).assert_success();
    drop(server);
    sb.write_recipe(
        "plus",
        &format!(
            "imports = [\"master\"]\n\n[files.\"/usr/local/bin/kubeadm\"]\ninput = \"{INPUT}\"\nmember = \"kubeadm\"\n"
        ),
    );
    let r = sb.kbuild(&["build", "plus", "--offline", "--locked"]);
    r.assert_error(&format!(
        "{}error: cannot build plus\n\
         \x20 caused by: input `{INPUT}` from `$SERVER/kubernetes-server-linux-amd64.tar.gz` lacks `kubeadm`\n\
         \x20 `kubeadm`: closest in the archive: `kubernetes/server/bin/kubeadm`, `kubernetes/server/bin/kubectl`, `kubernetes/server/bin/kubelet`, `kubernetes/server/bin/kube-proxy`, `kubernetes/LICENSES`\n\
         help: fix the `member` paths in the recipe; `kbuild inputs {INPUT} --members` lists the archive's members\n",
        from_store(),
    ));
}
