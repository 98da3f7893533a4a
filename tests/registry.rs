//! Push and pull of generations through a real OCI registry (issue 11): Debian's
//! `docker-registry` (distribution 2.8) started per test on 127.0.0.1 (`tests/common/registry.rs`),
//! with htpasswd (basic), bearer-token and TLS variants, a proxy that counts bytes and cuts
//! transfers at an exact byte, and `skopeo` as the tool nobody here wrote.
//!
//! The first tests check the harness itself against skopeo alone, so a failure further down
//! is kbuild's, not the fixture's. Then the Tests section: two generations pushed (the
//! second, one variable apart, adds at most 64 KiB to the registry and sends at most that),
//! pulled by a host with no recipes and switched, rolled back and verified with the registry
//! gone, byte-identical to the builder's root; corrupted blobs and hostile configs refused with
//! nothing added; credentials from the auth files docker, podman and skopeo use; TLS with
//! `--ca-file`; plain HTTP only with `--plain-http`; missing tags; transfers cut mid-way and
//! resumed; skopeo inspecting and copying what kbuild pushed, and pushing kbuild's export; the
//! same manifest digest from two stores.
//!
//! Needs `docker-registry`, `skopeo`, `htpasswd` (apache2-utils) and `openssl`: `.ci/run`
//! installs them; a test skips only when one is missing and neither `CI` is set nor the user is
//! root.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::registry::*;
use common::world::*;
use common::*;

/// The most a second generation that differs in one variable may send, either way (issue 11,
/// point 4).
const ONE_VARIABLE_BUDGET: u64 = 64 << 10;
/// The artifact type of a pushed generation (docs/registry.md).
const ARTIFACT_TYPE: &str = "application/vnd.kbuild.generation.v1+json";

// ---------------------------------------------------------------------------------------------
// The harness, checked with skopeo alone
// ---------------------------------------------------------------------------------------------

#[test]
fn harness_skopeo_copies_a_hand_written_layout_to_and_from_a_plain_registry() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (digest, manifest) = write_tiny_layout(&tmp.path().join("in"), "plain");
    let before = reg.blobs();
    assert!(before.is_empty(), "{before:?}");
    reg.skopeo_copy(
        &format!("oci:{}:latest", tmp.path().join("in").display()),
        &format!("docker://{}", reg.reference("tiny", "v1")),
    );
    // Layer, config and manifest, each under its digest, with its size.
    let blobs = reg.blobs();
    assert_eq!(blobs.len(), 3, "{blobs:?}");
    assert_eq!(blobs.get(&digest), Some(&(manifest.len() as u64)));
    assert_eq!(reg.manifest("tiny", "v1"), manifest);
    assert_eq!(reg.skopeo_inspect_raw("tiny:v1").into_bytes(), manifest);
    // And back into a layout: the same manifest.
    let out = tmp.path().join("out");
    reg.skopeo_copy(
        &format!("docker://{}", reg.reference("tiny", "v1")),
        &format!("oci:{}:copy", out.display()),
    );
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert_eq!(
        std::fs::read(out.join("blobs/sha256").join(hex)).unwrap(),
        manifest
    );
}

#[test]
fn harness_auth_and_tls_registry_refuses_anonymous_and_serves_skopeo_with_the_auth_file_and_ca() {
    let Some(reg) = registry(Options::AUTH_TLS) else {
        return;
    };
    assert!(reg.base().starts_with("https://"));
    // Anonymous: 401 with a basic challenge.
    let resp = reg
        .agent()
        .get(format!("{}/v2/", reg.base()))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"].to_str().unwrap(),
        "Basic realm=\"kbuild-test\""
    );
    assert_eq!(reg.get_status("/v2/"), Some(200));

    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("in");
    let (_, manifest) = write_tiny_layout(&layout, "auth-tls");
    let dest = format!("docker://{}", reg.reference("tiny", "v1"));
    // Without credentials skopeo is refused; without the CA, too.
    let out = reg.skopeo(&[
        "copy",
        &format!("--dest-cert-dir={}", reg.cert_dir().display()),
        &format!("oci:{}:latest", layout.display()),
        &dest,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("authentication required"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let auth = tmp.path().join("auth.json");
    write_auth_file(&auth, &[(&reg.host(), USER, PASSWORD)]);
    let out = reg.skopeo(&[
        "copy",
        &format!("--dest-authfile={}", auth.display()),
        &format!("oci:{}:latest", layout.display()),
        &dest,
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate signed by unknown authority"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    reg.skopeo_copy(&format!("oci:{}:latest", layout.display()), &dest);
    assert_eq!(reg.skopeo_inspect_raw("tiny:v1").into_bytes(), manifest);
}

#[test]
fn harness_proxy_counts_bytes_and_cuts_a_transfer_at_an_exact_byte() {
    let Some(mut reg) = registry(Options::PLAIN) else {
        return;
    };
    let proxy = Proxy::start(reg.port);
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("in");
    write_tiny_layout(&layout, "proxy");
    let via_proxy = format!("docker://{}/tiny:v1", proxy.host());

    proxy.cut_after(Way::Up, 100);
    let out = reg.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        "--retry-times=0",
        &format!("oci:{}:latest", layout.display()),
        &via_proxy,
    ]);
    assert!(!out.status.success());
    assert!(proxy.has_cut());
    assert_eq!(proxy.bytes(Way::Up), 100);
    assert!(reg.blobs().is_empty(), "{:?}", reg.blobs());

    proxy.reset();
    reg.skopeo_copy(&format!("oci:{}:latest", layout.display()), &via_proxy);
    assert!(!proxy.has_cut());
    let stored: u64 = reg.blobs().values().sum();
    assert!(proxy.bytes(Way::Up) > stored, "{}", proxy.bytes(Way::Up));

    // A restarted registry keeps its storage.
    let before = reg.blobs();
    reg.restart();
    assert_eq!(reg.blobs(), before);
    assert_eq!(reg.get_status("/v2/tiny/tags/list"), Some(200));
}

#[test]
fn harness_a_corrupted_blob_in_storage_is_served_and_skopeo_refuses_it() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("in");
    write_tiny_layout(&layout, "corrupt");
    reg.skopeo_copy(
        &format!("oci:{}:latest", layout.display()),
        &format!("docker://{}", reg.reference("tiny", "v1")),
    );
    let manifest: serde_json::Value = serde_json::from_slice(&reg.manifest("tiny", "v1")).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_owned();
    let size = reg.blobs()[&layer];
    reg.corrupt_blob(&layer);
    assert_eq!(reg.blobs()[&layer], size);
    let out = reg.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}", reg.reference("tiny", "v1")),
        &format!("oci:{}:copy", tmp.path().join("out").display()),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Digest did not match"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// What the tests check with (the hosts are in `tests/common/registry.rs`)
// ---------------------------------------------------------------------------------------------

/// master-1's generations 1 and 2, differing only in `SERVICE_CIDR`.
fn two_generations(w: &World) -> (Gen, Gen) {
    let g1 = build_gen(w, 1, &[]);
    let g2 = build_gen(w, 2, &["--set", "SERVICE_CIDR=10.253.0.0/16"]);
    assert_ne!(
        g1.bytes("/etc/kubernetes/apiserver"),
        g2.bytes("/etc/kubernetes/apiserver")
    );
    (g1, g2)
}

/// A failure of a registry command: exit 1, nothing on stdout, an `error:` naming `reference`
/// (and each of `also`).
#[track_caller]
fn assert_refused(r: &Run, reference: &str, also: &[&str]) {
    assert_eq!(
        r.code,
        Some(1),
        "expected exit code 1\n--- stdout\n{}--- stderr\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.stdout, "", "stdout of a failed run");
    assert!(r.stderr.starts_with("error: "), "stderr:\n{}", r.stderr);
    for needle in std::iter::once(&reference).chain(also) {
        assert!(
            r.stderr.contains(needle),
            "stderr does not name `{needle}`:\n{}",
            r.stderr
        );
    }
}

/// `r`, a pull by host `h`, was refused naming `reference` and each of `also` (see
/// [`assert_refused`]), and nothing from the registry reached `h`
/// ([`assert_nothing_pulled`]).
#[track_caller]
fn assert_pull_refused(h: &World, r: &Run, reference: &str, also: &[&str], when: &str) {
    assert_refused(r, reference, also);
    assert_nothing_pulled(h, when);
}

/// `kbuild push 1 REFERENCE --host master-1 EXTRA…` (see [`push1`]) to `reg` is refused
/// naming `reference` and each of `also` (see [`assert_refused`]), and `reg` holds no blob.
#[track_caller]
fn assert_push_refused(reg: &Registry, w: &World, reference: &str, extra: &[&str], also: &[&str]) {
    let r = push1(w, reference, extra, &[]);
    assert_refused(&r, reference, also);
    assert!(reg.blobs().is_empty(), "{:?}", reg.blobs());
}

/// Runs `run` (a push or pull of `reference` through `proxy`) while `proxy` cuts every
/// connection once `at` bytes went `way`: the cut must have happened and the run been
/// refused (see [`assert_refused`]). The run.
#[track_caller]
fn cut_and_refused(
    proxy: &Proxy,
    way: Way,
    at: u64,
    reference: &str,
    run: impl FnOnce() -> Run,
) -> Run {
    proxy.cut_after(way, at);
    let r = run();
    assert!(
        proxy.has_cut(),
        "the proxy did not cut after {at} bytes {way:?}"
    );
    assert_refused(&r, reference, &[]);
    r
}

/// The size of the largest layer of manifest `m`, in bytes.
fn largest_layer(m: &serde_json::Value) -> u64 {
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .max()
        .unwrap()
}

/// Nothing from a registry reached the host: no store object, no generation.
#[track_caller]
fn assert_nothing_pulled(w: &World, when: &str) {
    assert_eq!(
        store_objects(&w.sb.store),
        BTreeSet::new(),
        "{when}: store objects"
    );
    let r = w.run(&["generations", "--json"]);
    r.assert_success();
    assert_eq!(r.stdout.trim(), "[]", "{when}: generations recorded");
}

/// Blobs in `after` and not in `before`.
fn added(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter(|(d, _)| !before.contains_key(*d))
        .map(|(d, s)| (d.clone(), *s))
        .collect()
}

/// The manifest of `repository:tag` in `reg`, parsed.
fn manifest(reg: &Registry, repository: &str, tag: &str) -> serde_json::Value {
    serde_json::from_slice(&reg.manifest(repository, tag)).unwrap()
}

/// The state of a root without what names its store (`store`, `store_id`, and the rootfs
/// reduced to its object name, which must be the same on every host).
fn portable_state(root: &Path) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("etc/.kbuild/state.json")).unwrap())
            .unwrap();
    let o = v.as_object_mut().unwrap();
    o.remove("store");
    o.remove("store_id");
    let rootfs = o["rootfs"].as_str().unwrap();
    let name = Path::new(rootfs)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    o.insert("rootfs".into(), name.into());
    v
}

/// Two roots on the same generation from two stores: the same paths with the same link texts
/// and directories, every path reads the same bytes with the same mode through its link, and
/// the state names the same rootfs object.
#[track_caller]
fn assert_same_root(a: &World, b: &World, when: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let strip = |l: Listing| -> Listing {
        Listing(
            l.0.into_iter()
                .filter(|(p, _)| p != "etc/.kbuild/current" && p != "etc/.kbuild/state.json")
                .collect(),
        )
    };
    let (la, lb) = (strip(a.listing()), strip(b.listing()));
    assert_listing(&lb, &la, when);
    for (p, item) in &la.0 {
        if let Item::Link(_) = item {
            let (pa, pb) = (a.root.join(p), b.root.join(p));
            let ra = std::fs::read(&pa).map_err(|e| e.kind());
            assert_eq!(std::fs::read(&pb).map_err(|e| e.kind()), ra, "{when}: {p}");
            if ra.is_ok() {
                assert_eq!(
                    std::fs::metadata(&pb).unwrap().permissions().mode(),
                    std::fs::metadata(&pa).unwrap().permissions().mode(),
                    "{when}: mode of {p}"
                );
            }
        }
    }
    assert_eq!(portable_state(&b.root), portable_state(&a.root), "{when}");
}

// ---------------------------------------------------------------------------------------------
// The Tests section
// ---------------------------------------------------------------------------------------------

/// Push generation 1, then generation 2 (one variable changed): the registry stores at most
/// 64 KiB more for it, and at most that goes up; a host that never built pulls both (at most
/// 64 KiB down for the second), and with the registry gone switches, rolls back and verifies
/// to roots byte-identical to the builder's.
#[test]
fn push_two_generations_then_a_second_host_pulls_them_and_switches_offline() {
    let Some(mut reg) = registry(Options::PLAIN) else {
        return;
    };
    let proxy = Proxy::start(reg.port);
    let w = builder();
    let (g1, g2) = two_generations(&w);

    let ref1 = proxy.reference(REPO, "gen1");
    let r = push1(&w, &ref1, &["--plain-http"], &[]);
    let d1 = pushed_digest(&r, &ref1);
    assert_eq!(
        format!("sha256:{}", sha256_hex(&reg.manifest(REPO, "gen1"))),
        d1
    );
    assert!(r.stderr.contains("uploaded "), "stderr:\n{}", r.stderr);
    let after1 = reg.blobs();
    let up1 = proxy.bytes(Way::Up);

    proxy.reset();
    let ref2 = proxy.reference(REPO, "gen2");
    let r = push_plain(&w, &["2", &ref2, "--host", "master-1"]);
    let d2 = pushed_digest(&r, &ref2);
    assert_ne!(d1, d2);
    let new = added(&after1, &reg.blobs());
    let stored: u64 = new.values().sum();
    assert!(
        stored <= ONE_VARIABLE_BUDGET,
        "generation 2 added {stored} bytes to the registry (budget {ONE_VARIABLE_BUDGET}): {new:?}"
    );
    assert!(
        proxy.bytes(Way::Up) <= ONE_VARIABLE_BUDGET,
        "pushing generation 2 sent {} bytes (generation 1: {up1})",
        proxy.bytes(Way::Up)
    );
    assert!(
        r.stderr.contains("already in the registry"),
        "stderr:\n{}",
        r.stderr
    );

    // The second host pulls both, through the proxy.
    let h = puller();
    proxy.reset();
    let r = pull_plain(&h, &ref1);
    r.assert_success();
    assert_eq!(r.stdout, format!("{ref1}@{d1}\n"));
    assert!(
        r.stderr.contains("profile master-1, generation 1"),
        "stderr:\n{}",
        r.stderr
    );
    let down1 = proxy.bytes(Way::Down);
    assert!(down1 > 1 << 20, "generation 1 came down in {down1} bytes");
    proxy.reset();
    let r = pull_plain(&h, &ref2);
    r.assert_success();
    assert_eq!(r.stdout, format!("{ref2}@{d2}\n"));
    assert!(
        r.stderr.contains("profile master-1, generation 2"),
        "stderr:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("already in the store"),
        "stderr:\n{}",
        r.stderr
    );
    assert!(
        proxy.bytes(Way::Down) <= ONE_VARIABLE_BUDGET,
        "pulling generation 2 received {} bytes (generation 1: {down1})",
        proxy.bytes(Way::Down)
    );

    // No registry from here on, and the host has no recipes or inputs.
    drop(proxy);
    reg.stop();
    w.ok(&["switch", "--profile", "master-1"]);
    h.ok(&["switch", "--profile", "master-1"]);
    assert_same_root(&w, &h, "both on generation 2");
    assert_eq!(
        std::fs::read(h.root.join("etc/kubernetes/apiserver")).unwrap(),
        g2.bytes("/etc/kubernetes/apiserver")
    );
    w.ok(&["rollback"]);
    let r = h.ok(&["rollback"]);
    assert_eq!(
        r.stderr(),
        "    Switched root `$SANDBOX/host` to generation 1\n"
    );
    assert_same_root(&w, &h, "both rolled back to generation 1");
    assert_eq!(
        std::fs::read(h.root.join("etc/kubernetes/apiserver")).unwrap(),
        g1.bytes("/etc/kubernetes/apiserver")
    );
    let r = h.ok(&["verify"]);
    assert!(!r.stdout.contains("damaged"), "{}", r.stdout);
}

/// A blob whose bytes no longer match its digest in the registry's storage: pull refuses,
/// naming the reference and the digest, and the store and profile stay empty.
#[test]
fn pull_refuses_a_blob_corrupted_in_the_registry_and_adds_nothing() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let Pushed { reference, .. } = pushed_gen1(&reg);
    // The largest object blob (kube-apiserver's): surely one the pull needs.
    let m = manifest(&reg, REPO, "gen1");
    let layer = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    reg.corrupt_blob(&layer);

    let h = puller();
    let r = pull_plain(&h, &reference);
    assert_pull_refused(&h, &r, &reference, &[&layer], "after the refused pull");
    // And again: a rerun does not take what it staged for good.
    let r = pull_plain(&h, &reference);
    assert_pull_refused(
        &h,
        &r,
        &reference,
        &[&layer],
        "after the second refused pull",
    );
}

/// The config blob too: kbuild refuses it before reading anything it says.
#[test]
fn pull_refuses_a_corrupted_config_blob() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let Pushed { reference, .. } = pushed_gen1(&reg);
    let m = manifest(&reg, REPO, "gen1");
    let config = m["config"]["digest"].as_str().unwrap().to_owned();
    reg.corrupt_blob(&config);
    let h = puller();
    assert_pull_refused(
        &h,
        &pull_plain(&h, &reference),
        &reference,
        &[&config],
        "after the refused pull",
    );
}

/// A registry that serves a generation someone altered, with a config and manifest that match
/// their digests: a rootfs path escaping the rootfs, an object name that is no store name, a
/// blob declared absurdly large. Each refused with an error naming the reference, before
/// anything is written outside the staging area and before the absurd blob is downloaded;
/// nothing enters the store.
#[test]
fn pull_refuses_hostile_configs_and_absurd_sizes() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let proxy = Proxy::start(reg.port);
    pushed_gen1(&reg);
    let manifest0 = manifest(&reg, REPO, "gen1");
    let config0: serde_json::Value =
        serde_json::from_slice(&reg.blob(REPO, manifest0["config"]["digest"].as_str().unwrap()))
            .unwrap();
    // Publishes `config` with `manifest0`'s layers (edited by `layers`) as `tag`.
    let publish =
        |tag: &str, config: &serde_json::Value, layers: &dyn Fn(&mut Vec<serde_json::Value>)| {
            let bytes = serde_json::to_vec(config).unwrap();
            let digest = reg.put_blob(REPO, &bytes);
            let mut m = manifest0.clone();
            m["config"]["digest"] = digest.into();
            m["config"]["size"] = bytes.len().into();
            layers(m["layers"].as_array_mut().unwrap());
            reg.put_manifest(REPO, tag, &serde_json::to_vec(&m).unwrap());
            format!("{}/{REPO}:{tag}", proxy.host())
        };

    let mut escaping = config0.clone();
    escaping["rootfs"]["tree"]["../../../escaped"] =
        serde_json::json!({"type": "text", "text": "pwned\n", "executable": false});
    let mut bad_name = config0.clone();
    bad_name["objects"][0]["name"] = "../../escaped-object".into();
    let absurd = 1u64 << 50;
    let mut huge = config0.clone();
    huge["objects"][0]["size"] = absurd.into();
    let cases = [
        (
            "escaping-path",
            publish("escaping-path", &escaping, &|_| {}),
        ),
        (
            "bad-object-name",
            publish("bad-object-name", &bad_name, &|_| {}),
        ),
        ("huge-object", publish("huge-object", &huge, &|_| {})),
        (
            "huge-layer",
            publish("huge-layer", &config0, &|layers| {
                layers[0]["size"] = absurd.into();
            }),
        ),
    ];
    let largest = largest_layer(&manifest0);
    let h = puller();
    for (what, reference) in &cases {
        proxy.reset();
        let r = pull_plain(&h, reference);
        assert_pull_refused(&h, &r, reference, &[], what);
        for escaped in ["escaped", "escaped-object"] {
            for dir in [
                h.sb.dir.clone(),
                h.sb.store.clone(),
                h.sb.dir.parent().unwrap().to_owned(),
            ] {
                assert!(
                    !dir.join(escaped).exists(),
                    "{what}: {}",
                    dir.join(escaped).display()
                );
            }
        }
        if what.starts_with("huge") {
            assert!(
                proxy.bytes(Way::Down) < largest,
                "{what}: {} bytes downloaded before refusing",
                proxy.bytes(Way::Down)
            );
        }
    }
}

/// A "registry" (the tests' tiny HTTP server) that answers with an absurd manifest: refused by
/// its `Content-Length` before the body is read, or, sent without one, cut off past the 16 MiB
/// cap; either way no store is made.
#[test]
fn pull_refuses_an_absurd_manifest_without_reading_it_whole() {
    const CAP: u64 = 16 << 20;
    let server = Server::start();
    let host = server.base().trim_start_matches("http://").to_owned();
    let h = puller();
    for (tag, size, no_length) in [
        ("announced", CAP + 1, false),
        ("unannounced", 3 * CAP, true),
    ] {
        let body = vec![b' '; usize::try_from(size).unwrap()];
        server.serve(&format!("/v2/kbuild/huge/manifests/{tag}"), &body);
        server
            .stats
            .no_length
            .store(no_length, std::sync::atomic::Ordering::SeqCst);
        let before = server.stats.sent();
        let reference = format!("{host}/kbuild/huge:{tag}");
        let r = pull_plain(&h, &reference);
        let why = if no_length {
            format!("its manifest is more than {CAP} bytes")
        } else {
            format!("its manifest is {size} bytes (at most {CAP})")
        };
        assert_refused(&r, &reference, &[&format!("`{reference}` refused: {why}")]);
        let sent = server.stats.sent() - before;
        assert!(
            sent < size,
            "{tag}: the whole manifest was sent ({sent} bytes)"
        );
        assert!(!h.sb.store.exists(), "{tag}: a store was made");
    }
}

// ---------------------------------------------------------------------------------------------
// Registries as people run them: credentials, TLS, plain HTTP, missing tags
// ---------------------------------------------------------------------------------------------

/// With htpasswd auth and TLS: no credentials is a 401 that names the reference and the files
/// consulted; credentials from `--authfile`, `REGISTRY_AUTH_FILE` and `~/.docker/config.json`
/// each work, with the CA from `--ca-file`.
#[test]
fn credentials_come_from_the_auth_files_docker_podman_and_skopeo_use() {
    let Some(reg) = registry(Options::AUTH_TLS) else {
        return;
    };
    let ca = reg.ca_file();
    let ca = ca.to_str().unwrap();
    let w = built_gen1();
    let reference = reg.reference(REPO, "gen1");

    assert_push_refused(&reg, &w, &reference, &["--ca-file", ca], &["401", "help: "]);

    // A wrong password is refused too.
    let wrong = w.sb.dir.join("wrong-auth.json");
    write_auth_file(&wrong, &[(&reg.host(), USER, "not-the-password")]);
    let r = push1(
        &w,
        &reference,
        &["--ca-file", ca, "--authfile", wrong.to_str().unwrap()],
        &[],
    );
    assert_refused(&r, &reference, &[wrong.to_str().unwrap()]);

    // REGISTRY_AUTH_FILE.
    let auth = w.sb.dir.join("auth.json");
    write_auth_file(&auth, &[(&reg.host(), USER, PASSWORD)]);
    let r = push1(
        &w,
        &reference,
        &["--ca-file", ca],
        &[("REGISTRY_AUTH_FILE", auth.to_str().unwrap())],
    );
    let digest = pushed_digest(&r, &reference);

    // ~/.docker/config.json, on a host that pulls.
    let h = puller();
    let r = h.run(&["pull", &reference, "--ca-file", ca]);
    let docker_config = h.sb.home.join(".docker/config.json");
    assert_pull_refused(
        &h,
        &r,
        &reference,
        &[docker_config.to_str().unwrap()],
        "after the 401",
    );
    write_docker_config(&h.sb.home, &reg);
    let r = h.run(&["pull", &reference, "--ca-file", ca]);
    r.assert_success();
    r.assert_stderr_has("profile master-1, generation 1");
    // --authfile, by digest.
    let h2 = puller();
    let by_digest = reg.reference(REPO, &format!("@{digest}"));
    h2.ok(&[
        "pull",
        &by_digest,
        "--ca-file",
        ca,
        "--authfile",
        auth.to_str().unwrap(),
    ]);
    h2.ok(&["switch", "--profile", "master-1"]);
}

/// Bearer-token auth (the registry sends the client to a token server): refused without
/// credentials, pushed and pulled with them from `REGISTRY_AUTH_FILE`; the token server saw
/// the repository's scope.
#[test]
fn bearer_token_auth_gets_a_token_with_the_auth_file_credentials() {
    let Some(reg) = registry(Options::TOKEN) else {
        return;
    };
    let w = built_gen1();
    let reference = reg.reference(REPO, "gen1");
    assert_push_refused(&reg, &w, &reference, &["--plain-http"], &[]);
    let auth = w.sb.dir.join("auth.json");
    write_auth_file(&auth, &[(&reg.host(), USER, PASSWORD)]);
    let env = [("REGISTRY_AUTH_FILE", auth.to_str().unwrap())];
    pushed_digest(&push1(&w, &reference, &["--plain-http"], &env), &reference);
    let asked = reg
        .token_server
        .as_ref()
        .unwrap()
        .requests
        .lock()
        .unwrap()
        .clone();
    assert!(
        asked
            .iter()
            .any(|q| q.contains("kbuild%2Fmaster") || q.contains("kbuild/master")),
        "{asked:?}"
    );

    let h = puller();
    h.run_env(&["pull", &reference, "--plain-http"], &env)
        .assert_success();
    h.ok(&["switch", "--profile", "master-1"]);
}

/// HTTPS from a CA the system does not trust: refused without `--ca-file` (naming the
/// reference), pushed and pulled with it.
#[test]
fn tls_with_a_private_ca_needs_ca_file() {
    let Some(reg) = registry(Options::TLS) else {
        return;
    };
    let ca = reg.ca_file();
    let ca = ca.to_str().unwrap();
    let w = built_gen1();
    let reference = reg.reference(REPO, "gen1");
    assert_push_refused(&reg, &w, &reference, &[], &["--ca-file"]);
    let r = push1(&w, &reference, &["--ca-file", ca], &[]);
    pushed_digest(&r, &reference);

    let h = puller();
    assert_pull_refused(
        &h,
        &h.run(&["pull", &reference]),
        &reference,
        &[],
        "after the refused pull",
    );
    h.ok(&["pull", &reference, "--ca-file", ca]);
    h.ok(&["switch", "--profile", "master-1"]);
}

/// A registry that speaks only plain HTTP: refused without `--plain-http` (kbuild does not
/// fall back to HTTP on its own), with a `help:` naming the flag.
#[test]
fn plain_http_only_with_plain_http() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let w = built_gen1();
    let reference = reg.reference(REPO, "gen1");
    assert_push_refused(&reg, &w, &reference, &[], &["--plain-http"]);
    push_gen1(&w, &reference);
    let h = puller();
    assert_pull_refused(
        &h,
        &h.run(&["pull", &reference]),
        &reference,
        &["--plain-http"],
        "after the refused pull",
    );
}

/// A tag the registry does not have, and a repository it does not have: a clear error naming
/// the reference, nothing pulled.
#[test]
fn a_missing_tag_is_a_clear_error() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    pushed_gen1(&reg);
    let h = puller();
    for missing in [
        reg.reference(REPO, "gen9"),
        reg.reference("nobody/here", "gen1"),
    ] {
        let r = pull_plain(&h, &missing);
        assert_refused(&r, &missing, &[]);
        let expected = format!(
            "error: cannot pull `{missing}`\n  caused by: pull: no `{missing}` in the registry (manifest unknown)\nhelp: check the repository and tag"
        );
        assert!(r.stderr.starts_with(&expected), "stderr:\n{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 3, "stderr:\n{}", r.stderr);
        assert_nothing_pulled(&h, &missing);
    }
}

/// `--offline` ("never use the network") refuses push and pull before any connection, with
/// a help line (review 11 finding 1: both went to the registry).
#[test]
fn offline_push_and_pull_refuse_without_touching_the_registry() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let proxy = Proxy::start(reg.port);
    let w = built_gen1();
    let reference = proxy.reference(REPO, "gen1");
    let help = "help: drop `--offline`; to install with no network, run `kbuild export --output DIR` where the generation is and `kbuild import DIR` here";

    let r = push1(&w, &reference, &["--plain-http", "--offline"], &[]);
    assert_refused(&r, &reference, &[]);
    assert_eq!(
        r.stderr,
        format!(
            "error: cannot push generation 1 of profile `master-1` to `{reference}`\n  caused by: `{reference}` is a registry on the network, and `--offline` was given\n{help}\n"
        )
    );
    assert_eq!(proxy.bytes(Way::Up), 0, "push --offline sent bytes");

    // Pushed for real, so that a pull would have something to take.
    push_gen1(&w, &reference);
    proxy.reset();
    let h = puller();
    let r = h.run(&["pull", &reference, "--plain-http", "--offline"]);
    assert_refused(&r, &reference, &[]);
    assert_eq!(
        r.stderr,
        format!(
            "error: cannot pull `{reference}`\n  caused by: `{reference}` is a registry on the network, and `--offline` was given\n{help}\n"
        )
    );
    assert_eq!(proxy.bytes(Way::Up), 0, "pull --offline sent bytes");
    assert_nothing_pulled(&h, "pull --offline");
}

/// A registry that accepts connections and then says nothing: the client gives up after
/// `KBUILD_HTTP_TIMEOUT` seconds, as fetches do (review 11 finding 2: it waited 5 minutes).
#[test]
fn a_silent_registry_times_out_after_kbuild_http_timeout() {
    // No registry needed: a listener that never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        // Accept and keep every connection open, silent.
        let mut open = Vec::new();
        for c in silent.incoming().take(4) {
            open.push(c);
        }
        std::thread::sleep(std::time::Duration::from_secs(60));
        drop(open);
    });
    let h = puller();
    let reference = format!("127.0.0.1:{port}/{REPO}:gen1");
    let mut c = h.std_command(&kbuild_bin(), &["pull", &reference, "--plain-http"]);
    c.env("KBUILD_HTTP_TIMEOUT", "2")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    // Far above 2 s (a loaded machine may add some), far below the 300 s it used to wait.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    if status.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        status.is_some(),
        "still waiting 60 s into a 2 s KBUILD_HTTP_TIMEOUT; stderr:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.starts_with(&format!("error: cannot pull `{reference}`\n")),
        "stderr:\n{stderr}"
    );
    assert_nothing_pulled(&h, "a silent registry");
    drop(held);
}

/// Without a tag, push tags `<profile>-<generation>`.
#[test]
fn push_without_a_tag_tags_profile_dash_generation() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let w = builder();
    two_generations(&w);
    let untagged = reg.reference(REPO, "");
    let r = push_plain(&w, &[&untagged, "--host", "master-1"]);
    let tagged = reg.reference(REPO, "master-1-2");
    let digest = pushed_digest(&r, &tagged);
    assert_eq!(
        format!("sha256:{}", sha256_hex(&reg.manifest(REPO, "master-1-2"))),
        digest
    );
    let r = push1(&w, &untagged, &["--plain-http"], &[]);
    pushed_digest(&r, &reg.reference(REPO, "master-1-1"));
}

// ---------------------------------------------------------------------------------------------
// A registry that dies mid-transfer
// ---------------------------------------------------------------------------------------------

/// The registry dies during the first push, once before its end (the proxy cuts every
/// connection at an exact byte, 4 KiB before what a whole push sends, so most blobs have
/// arrived and the manifest has not): refused, naming the reference; the rerun sends only
/// what had not arrived, and says how many blobs were already there.
#[test]
fn a_push_cut_before_its_end_resumes_without_resending_what_arrived() {
    if skip() {
        return;
    }
    let w = built_gen1();
    // What a whole push sends, on a registry of its own.
    let full = {
        let reg = Registry::start();
        let proxy = Proxy::start(reg.port);
        let reference = proxy.reference(REPO, "gen1");
        push_gen1(&w, &reference);
        proxy.bytes(Way::Up)
    };

    let reg = Registry::start();
    let proxy = Proxy::start(reg.port);
    let reference = proxy.reference(REPO, "gen1");
    cut_and_refused(&proxy, Way::Up, full - 4096, &reference, || {
        push1(&w, &reference, &["--plain-http"], &[])
    });
    let arrived = reg.blobs();
    assert!(!arrived.is_empty(), "nothing arrived before the cut");
    let arrived_bytes: u64 = arrived.values().sum();
    assert!(
        reg.get_status(&format!("/v2/{REPO}/manifests/gen1")) == Some(404),
        "the manifest arrived"
    );

    proxy.reset();
    let r = push1(&w, &reference, &["--plain-http"], &[]);
    pushed_digest(&r, &reference);
    let resent = proxy.bytes(Way::Up);
    assert!(
        resent + arrived_bytes <= full + (8 << 10),
        "the rerun sent {resent} bytes, though {arrived_bytes} of a {full}-byte push had arrived"
    );
    assert!(
        r.stderr
            .contains(&format!("{} already in the registry", arrived.len())),
        "{} blobs had arrived; stderr:\n{}",
        arrived.len(),
        r.stderr
    );
}

/// A cut in the middle of the first push: refused, and the rerun completes a push another
/// host pulls.
#[test]
fn a_push_cut_halfway_is_refused_and_the_rerun_completes() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let w = built_gen1();
    let proxy = Proxy::start(reg.port);
    let reference = proxy.reference(REPO, "gen1");
    // A generation is more than 1 MiB up (kube-apiserver alone); half of that.
    cut_and_refused(&proxy, Way::Up, 600 << 10, &reference, || {
        push1(&w, &reference, &["--plain-http"], &[])
    });
    proxy.reset();
    push_gen1(&w, &reference);
    let h = puller();
    pull_plain(&h, &reg.reference(REPO, "gen1")).assert_success();
    h.ok(&["switch", "--profile", "master-1"]);
}

/// Generation 1 pushed to `reg`, a proxy in front of `reg`, the reference to the generation
/// through it, and how many bytes a whole pull of it receives (a new puller's, through the
/// proxy).
fn pulled_once_through_a_proxy(reg: &Registry) -> (Proxy, String, u64) {
    pushed_gen1(reg);
    let proxy = Proxy::start(reg.port);
    let reference = proxy.reference(REPO, "gen1");
    pull_plain(&puller(), &reference).assert_success();
    let full = proxy.bytes(Way::Down);
    (proxy, reference, full)
}

/// The registry dies during a pull, 4 KiB before its end (so every blob but the last has
/// arrived whole; the proxy cuts every connection at an exact byte): refused, nothing enters
/// the store or the profile; the rerun takes the blobs that had arrived from its staging area
/// (and says so) and downloads less than a whole pull.
#[test]
fn a_pull_cut_before_its_end_adds_nothing_and_resumes_without_downloading_what_arrived() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let (proxy, reference, full) = pulled_once_through_a_proxy(&reg);
    let m = manifest(&reg, REPO, "gen1");
    let largest = largest_layer(&m);

    for cut in [full / 2, full - 4096] {
        let h = puller();
        proxy.reset();
        cut_and_refused(&proxy, Way::Down, cut, &reference, || {
            pull_plain(&h, &reference)
        });
        assert_nothing_pulled(&h, &format!("after a cut at {cut} of {full} bytes"));

        proxy.reset();
        let r = pull_plain(&h, &reference);
        r.assert_success();
        let again = proxy.bytes(Way::Down);
        // What arrived whole before the cut is not downloaded again: at most the blob the cut
        // fell in (and the manifest, config and headers) comes twice.
        assert!(
            again + cut <= full + largest + (16 << 10),
            "the rerun downloaded {again} bytes, though {cut} of a {full}-byte pull had arrived"
        );
        if cut == full - 4096 {
            // Every blob but the last had arrived: the rerun found them staged.
            assert!(
                r.stderr.contains(" staged by an earlier pull)"),
                "stderr:\n{}",
                r.stderr
            );
            assert!(
                again + 1024 <= full,
                "the rerun downloaded {again} bytes, a whole pull {full}"
            );
        }
        h.ok(&["switch", "--profile", "master-1"]);
    }
}

/// A pull decodes and checks each object as its blob arrives and keeps the checked objects in
/// its staging (not in the store) when the registry dies: the rerun downloads exactly the blobs
/// of the objects that had not arrived — its summary names their count and bytes, and how many
/// it found staged — and nothing half-decoded is left behind by the cut.
#[test]
fn a_pull_cut_mid_way_reruns_downloading_exactly_the_blobs_whose_objects_had_not_arrived() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let (proxy, reference, full) = pulled_once_through_a_proxy(&reg);
    let m = manifest(&reg, REPO, "gen1");
    let config: serde_json::Value =
        serde_json::from_slice(&reg.blob(REPO, m["config"]["digest"].as_str().unwrap())).unwrap();

    // 4 KiB before the end: the blobs downloaded at once with the largest are through by
    // then (which ones is up to the race; the expectations below come from what arrived).
    let h = puller();
    proxy.reset();
    cut_and_refused(&proxy, Way::Down, full - 4096, &reference, || {
        pull_plain(&h, &reference)
    });
    assert_nothing_pulled(&h, "after the cut");
    // What the cut left: whole, checked objects under their names, no partial file.
    let staging: Vec<_> = std::fs::read_dir(&h.sb.store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(".tmp-pull-")
        })
        .collect();
    assert_eq!(staging.len(), 1, "{staging:?}");
    let staged: BTreeSet<String> = std::fs::read_dir(staging[0].join("objects"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        staged.iter().all(|n| !n.starts_with('.')),
        "partial files left: {staged:?}"
    );
    // The blobs the rerun must download: those of the objects not staged, each once.
    let mut want = BTreeMap::new();
    let mut found = BTreeSet::new();
    for o in config["objects"].as_array().unwrap() {
        let blob = o["blob"].as_str().unwrap().to_owned();
        if staged.contains(o["name"].as_str().unwrap()) {
            found.insert(blob);
        } else {
            want.insert(blob, o["blob_size"].as_u64().unwrap());
        }
    }
    assert!(!want.is_empty(), "every object had arrived before the cut");
    let bytes: u64 = want.values().sum();

    proxy.reset();
    let r = pull_plain(&h, &reference);
    r.assert_success();
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("downloaded "))
        .unwrap_or_else(|| panic!("no summary line:\n{}", r.stderr));
    let resumed = match found.len() {
        0 => String::new(),
        n => format!(" ({n} staged by an earlier pull)"),
    };
    assert_eq!(
        line,
        format!(
            "downloaded {} {} ({}){resumed}, 0 already in the store; profile master-1, \
             generation 1",
            want.len(),
            if want.len() == 1 { "blob" } else { "blobs" },
            human_bytes(bytes),
        )
    );
    // And the wire agrees: those blobs, the manifest and config, and headers.
    let down = proxy.bytes(Way::Down);
    assert!(
        down >= bytes && down <= bytes + (64 << 10),
        "the rerun received {down} bytes for {bytes} bytes of blobs"
    );
    assert!(!staging[0].exists(), "the staging stays after the rerun");
    h.ok(&["switch", "--profile", "master-1"]);
}

/// Two pulls of one reference into one store at once (two shells, automation): both succeed,
/// the later one waiting for the earlier's staging (review 11 finding 11: they shared one
/// staging directory and `.part` files, and one failed renaming a file the other had moved).
#[test]
fn two_concurrent_pulls_of_one_reference_both_succeed() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let Pushed { reference, .. } = pushed_gen1(&reg);
    // Several rounds: the race needs both to be staging at once.
    for round in 0..3 {
        let h = puller();
        let a = h.spawn(&["pull", &reference, "--plain-http"]);
        let b = h.spawn(&["pull", &reference, "--plain-http"]);
        for (name, child) in [("first", a), ("second", b)] {
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}, {name} pull; stderr:\n{stderr}"
            );
            assert!(
                String::from_utf8_lossy(&out.stdout).starts_with(&format!("{reference}@sha256:")),
                "round {round}, {name} pull; stdout: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let staging: Vec<_> = std::fs::read_dir(&h.sb.store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp"))
            .collect();
        assert!(staging.is_empty(), "round {round}: left behind {staging:?}");
        let r = h.ok(&["switch", "--profile", "master-1"]);
        assert!(
            r.stderr.contains("generation 1"),
            "round {round}: stderr:\n{}",
            r.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Interoperability (point 7) and determinism (point 3)
// ---------------------------------------------------------------------------------------------

/// `skopeo inspect --raw` reads what kbuild pushed: an OCI image manifest with kbuild's
/// artifact type, a config blob and one zstd layer per object, the digest kbuild printed.
#[test]
fn skopeo_inspects_what_kbuild_pushed() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let Pushed { digest, .. } = pushed_gen1(&reg);
    let raw = reg.skopeo_inspect_raw(&format!("{REPO}:gen1"));
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), digest);
    let m: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["artifactType"], ARTIFACT_TYPE);
    assert_eq!(m["config"]["mediaType"], ARTIFACT_TYPE, "{raw}");
    let layers = m["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for l in layers {
        assert!(
            l["mediaType"]
                .as_str()
                .is_some_and(|t| t.starts_with("application/vnd.kbuild.") && t.ends_with("+zstd")),
            "layer media type in {raw}"
        );
    }
    // One blob per object: no two layers with the same digest.
    let digests: BTreeSet<&str> = layers
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), layers.len());
    // No timestamps among the annotations.
    let text = raw.to_lowercase();
    assert!(!text.contains("created"), "{raw}");
}

/// `skopeo copy` to an OCI layout and back to another repository: the same manifest digest,
/// and kbuild pulls the copy and switches to it.
#[test]
fn skopeo_copies_a_pushed_generation_through_an_oci_layout_and_kbuild_pulls_the_copy() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let Pushed {
        w,
        reference,
        digest,
    } = pushed_gen1(&reg);
    let layout = w.sb.dir.join("copied-layout");
    reg.skopeo_copy(
        &format!("docker://{reference}"),
        &format!("oci:{}:gen1", layout.display()),
    );
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert!(layout.join("blobs/sha256").join(hex).is_file());
    reg.skopeo_copy(
        &format!("oci:{}:gen1", layout.display()),
        &format!("docker://{}", reg.reference("other/copy", "gen1")),
    );
    assert_eq!(
        format!("sha256:{}", sha256_hex(&reg.manifest("other/copy", "gen1"))),
        digest
    );
    let h = puller();
    let r = pull_plain(&h, &reg.reference("other/copy", "gen1"));
    r.assert_success();
    r.assert_stderr_has("profile master-1, generation 1");
    h.ok(&["switch", "--profile", "master-1"]);
    w.ok(&["switch", "--profile", "master-1"]);
    assert_same_root(&w, &h, "a pull of skopeo's copy");
}

/// `kbuild export` writes a layout skopeo pushes as it is; kbuild pulls it, and the manifest
/// is the one `kbuild push` makes of the same generation.
#[test]
fn an_export_pushed_by_skopeo_is_pulled_by_kbuild() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let w = built_gen1();
    let layout = w.sb.dir.join("export");
    w.ok(&[
        "export",
        "1",
        "--output",
        layout.to_str().unwrap(),
        "--host",
        "master-1",
    ]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{index}");
    let exported = manifests[0]["digest"].as_str().unwrap().to_owned();
    // `oci:DIR` with no tag: the layout's only manifest.
    reg.skopeo_copy(
        &format!("oci:{}", layout.display()),
        &format!("docker://{}", reg.reference("from/skopeo", "gen1")),
    );
    assert_eq!(
        format!(
            "sha256:{}",
            sha256_hex(&reg.manifest("from/skopeo", "gen1"))
        ),
        exported
    );
    let reference = reg.reference(REPO, "gen1");
    let pushed = push_gen1(&w, &reference);
    assert_eq!(pushed, exported, "export and push make different manifests");

    let h = puller();
    let r = pull_plain(&h, &reg.reference("from/skopeo", "gen1"));
    r.assert_success();
    h.ok(&["switch", "--profile", "master-1"]);
    w.ok(&["switch", "--profile", "master-1"]);
    assert_same_root(&w, &h, "a pull of skopeo's push of an export");
}

/// Two stores that built the same recipes push the same manifest digest (no timestamps, fixed
/// compression), and the second push finds every blob already there.
#[test]
fn two_stores_push_the_same_manifest_digest() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let (a, b) = (built_gen1(), built_gen1());
    let ra = reg.reference("store/a", "gen1");
    let rb = reg.reference("store/b", "gen1");
    let da = pushed_digest(&push1(&a, &ra, &["--plain-http"], &[]), &ra);
    let blobs = reg.blobs();
    let r = push1(&b, &rb, &["--plain-http"], &[]);
    let db = pushed_digest(&r, &rb);
    assert_eq!(da, db);
    assert_eq!(
        reg.blobs(),
        blobs,
        "the second store's push stored new blobs"
    );
    assert_eq!(
        reg.manifest("store/a", "gen1"),
        reg.manifest("store/b", "gen1")
    );
}

#[test]
fn harness_token_auth_registry_serves_skopeo_with_a_bearer_token() {
    let Some(reg) = registry(Options::TOKEN) else {
        return;
    };
    let resp = reg
        .agent()
        .get(format!("{}/v2/", reg.base()))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer realm="), "{challenge}");
    assert_eq!(reg.get_status("/v2/"), Some(200));
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("in");
    let (_, manifest) = write_tiny_layout(&layout, "token");
    reg.skopeo_copy(
        &format!("oci:{}:latest", layout.display()),
        &format!("docker://{}", reg.reference("tiny", "v1")),
    );
    assert_eq!(reg.skopeo_inspect_raw("tiny:v1").into_bytes(), manifest);
    let asked = reg
        .token_server
        .as_ref()
        .unwrap()
        .requests
        .lock()
        .unwrap()
        .clone();
    assert!(
        asked
            .iter()
            .any(|q| q.contains("scope=repository%3Atiny%3Apull%2Cpush")
                || q.contains("scope=repository:tiny:pull,push")),
        "{asked:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// A stale push cache, Ctrl-C during a pull, gc during a pull (issue 11, helper exportsafe)
// ---------------------------------------------------------------------------------------------

/// The push cache (`.kbuild/oci/blobs/<object>.json`) remembers each object's blob digest so
/// that a push compresses only what the registry lacks. A stale entry (a digest the object
/// does not compress to) made the push fail; a damaged one was ignored without a word. Now
/// both are dropped with a `warning:` line, the object is compressed again, and the registry
/// gets the right blob under the same manifest a sound cache gives.
#[test]
fn a_stale_or_damaged_push_cache_entry_is_dropped_and_the_push_sends_the_right_blob() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let Pushed {
        w, digest: sound, ..
    } = Pushed::to(reg.reference("kbuild/first", "gen1"));
    let (stale, mut json) = cache_entry(&w, "kube-apiserver");
    let right = json["blob"].as_str().unwrap().to_owned();
    let wrong = format!("sha256:{}", "0".repeat(64));
    json["blob"] = wrong.clone().into();
    std::fs::write(&stale, serde_json::to_vec(&json).unwrap()).unwrap();
    let (damaged, _) = cache_entry(&w, "kube-scheduler");
    std::fs::write(&damaged, "{\"version\": 2, \"blob\": tru").unwrap();

    // Another repository: the stale digest is in no repository, so it must be sent.
    let reference = reg.reference(REPO, "gen1");
    let r = push1(&w, &reference, &["--plain-http"], &[]);
    assert_eq!(pushed_digest(&r, &reference), sound, "{}", r.stderr);
    let object = stale.file_stem().unwrap().to_str().unwrap();
    let stderr = r.stderr();
    let expected = format!(
        "warning: dropped the push cache entry `$SANDBOX/store/.kbuild/oci/blobs/{object}.json`: it names blob `{wrong}`, but object `{object}` compresses to `{right}`; sending that one\n"
    );
    assert!(stderr.contains(&expected), "{stderr}");
    let scheduler = damaged.file_stem().unwrap().to_str().unwrap();
    assert!(
        stderr.contains(&format!(
            "warning: dropped the push cache entry `$SANDBOX/store/.kbuild/oci/blobs/{scheduler}.json`: it is not a cache entry ("
        )) && stderr.contains(&format!("; compressing object `{scheduler}` again\n")),
        "{stderr}"
    );
    // The entries are right again: a third push warns no more.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&stale).unwrap()).unwrap();
    assert_eq!(json["blob"], right.as_str());
    let r = push1(
        &w,
        &reg.reference("kbuild/third", "gen1"),
        &["--plain-http"],
        &[],
    );
    r.assert_success();
    assert!(!r.stderr.contains("warning:"), "{}", r.stderr);

    // What the registry holds is right: a second host pulls, checks and switches it.
    let h = puller();
    pull_plain(&h, &reference).assert_success();
    h.ok(&["verify"]);
    h.ok(&["switch", "--profile", "master-1"]);
}

/// Ctrl-C (SIGINT) while a pull is mid-transfer (held there by the proxy): exit code 130,
/// no generation, no object in the store (only the staging area a rerun resumes from), and
/// the rerun completes a generation that switches.
#[test]
fn ctrl_c_mid_pull_exits_130_adds_nothing_and_the_rerun_completes() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    pushed_gen1(&reg);
    let proxy = Proxy::start(reg.port);
    let reference = proxy.reference(REPO, "gen1");

    let h = puller();
    // Past the manifest and config, inside the object blobs (kube-apiserver's is > 1 MiB).
    proxy.stall_after(Way::Down, 256 << 10);
    let child = h.spawn(&["pull", &reference, "--plain-http"]);
    proxy.wait_stalled();
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{stderr}");
    assert_nothing_pulled(&h, "after Ctrl-C");
    let top: Vec<String> = std::fs::read_dir(&h.sb.store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".kbuild" && !n.starts_with(".tmp-pull-"))
        .collect();
    assert_eq!(
        top,
        Vec::<String>::new(),
        "left in the store besides the staging"
    );

    proxy.release();
    let r = pull_plain(&h, &reference);
    r.assert_success();
    r.assert_stderr_has("profile master-1, generation 1");
    h.ok(&["switch", "--profile", "master-1"]);
}

/// `kbuild gc` while a pull is mid-transfer: gc waits for the pull's shared store lock
/// (saying so) instead of deleting its staging area or the objects it adds, runs once the
/// pull is done, and the pulled generation then switches with the registry gone.
#[test]
fn gc_during_a_pull_waits_for_it_and_deletes_nothing_it_needs() {
    let Some(mut reg) = registry(Options::PLAIN) else {
        return;
    };
    pushed_gen1(&reg);
    let proxy = Proxy::start(reg.port);
    let reference = proxy.reference(REPO, "gen1");

    let h = puller();
    proxy.stall_after(Way::Down, 256 << 10);
    let pull = h.spawn(&["pull", &reference, "--plain-http"]);
    proxy.wait_stalled();
    let mut gc = h.spawn(&["gc"]);
    // gc cannot finish while the pull holds the store: it says it waits, and waits.
    let mut gc_stderr = StderrLines::of(&mut gc);
    gc_stderr.wait_for("Blocking waiting for file lock on store `");
    assert!(
        gc.try_wait().unwrap().is_none(),
        "gc did not wait for the pull"
    );
    let staging: Vec<_> = std::fs::read_dir(&h.sb.store)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-pull-"))
        .collect();
    assert_eq!(staging.len(), 1, "the pull's staging area is there");

    proxy.release();
    let out = pull.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let out = gc.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", gc_stderr.all());
    // The registry is gone: the host has everything.
    reg.stop();
    drop(proxy);
    h.ok(&["verify"]);
    h.ok(&["switch", "--profile", "master-1"]);
}

/// Pulling a generation a store already has (every object, the rootfs, the profile's newest
/// generation) needs no write access: into a read-only store it succeeds as a no-op (only
/// the manifest and config are fetched, into memory), and the store is left as it was.
#[test]
fn pull_into_a_read_only_store_that_has_the_generation_is_a_no_op() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let Pushed { reference, .. } = pushed_gen1(&reg);
    let h = puller();
    pull_plain(&h, &reference).assert_success();
    let before = full_listing(&h.sb.store);
    let r = h.run_read_only_store(&h.sb.store, &["pull", &reference, "--plain-http"]);
    r.assert_success();
    assert!(
        r.stderr.contains("downloaded 0 blobs")
            && r.stderr
                .contains("profile master-1, generation 1 (unchanged: it was the newest already)"),
        "{}",
        r.stderr
    );
    assert_eq!(full_listing(&h.sb.store), before, "the store changed");
}

// ---------------------------------------------------------------------------------------------
// Review 13: a push cache entry that lies (MED-9), temporary entries of killed runs (LOW-10)
// ---------------------------------------------------------------------------------------------

/// The push cache entry of the object named `…-object`, and its JSON.
fn cache_entry(w: &World, object: &str) -> (std::path::PathBuf, serde_json::Value) {
    let cache = w.sb.store.join(".kbuild/oci/blobs");
    let mut found: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .ends_with(&format!("-{object}.json"))
        })
        .collect();
    assert_eq!(found.len(), 1, "{object}: {found:?}");
    let path = found.pop().unwrap();
    let json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    (path, json)
}

/// review13 MED-9: kube-apiserver's push cache entry names kube-scheduler's blob, which the
/// registry has. `kbuild verify` finds it by compressing the object again (exit 1, one
/// `cache` line naming the entry and the fix, and in `--json`); a push does not use it,
/// since another object of the generation names the same blob with another size (both
/// entries dropped with a warning, the sound manifest pushed), nor an entry naming a blob
/// larger than its object can compress to; `kbuild verify --repair` drops it, after which
/// verify passes and a push warns about nothing and pushes the sound manifest again.
#[test]
fn a_push_cache_entry_naming_another_objects_blob_is_found_by_verify_and_not_used_by_push() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let Pushed {
        w, digest: sound, ..
    } = Pushed::to(reg.reference("kbuild/first", "gen1"));
    let (apiserver, a) = cache_entry(&w, "kube-apiserver");
    let (scheduler, s) = cache_entry(&w, "kube-scheduler");
    let scheduler_object = scheduler.file_stem().unwrap().to_str().unwrap().to_owned();
    let apiserver_object = apiserver.file_stem().unwrap().to_str().unwrap().to_owned();
    let blob = |j: &serde_json::Value| j["blob"].as_str().unwrap().to_owned();
    // `path`'s entry made to name the blob of `other`'s.
    let poison = |path: &Path, own: &serde_json::Value, other: &serde_json::Value| {
        let mut lie = own.clone();
        lie["blob"] = other["blob"].clone();
        lie["size"] = other["size"].clone();
        std::fs::write(path, serde_json::to_vec(&lie).unwrap()).unwrap();
    };
    poison(&apiserver, &a, &s);
    let shown = format!("$SANDBOX/store/.kbuild/oci/blobs/{apiserver_object}.json");
    let problem = format!(
        "it names blob `{}` ({} bytes), but object `{apiserver_object}` compresses to `{}` ({} bytes)",
        blob(&s),
        s["size"],
        blob(&a),
        a["size"]
    );

    let r = w.run(&["verify"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(
        r.stdout(),
        format!("cache    {shown}: {problem} (`kbuild verify --repair` drops it)\n")
    );
    assert!(
        r.stderr.contains("push cache entries (")
            && r.stderr
                .ends_with("drops wrong push cache entries; then `kbuild verify` again\n"),
        "{}",
        r.stderr
    );
    let r = w.run(&["verify", "--json"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        json["problems"],
        serde_json::json!([{
            "kind": "push-cache",
            "entry": apiserver.display().to_string(),
            "problem": problem,
        }])
    );

    // A push into another repository (the registry has kube-scheduler's blob: a mount or a
    // HEAD would "succeed") uses neither of the two entries naming it.
    let reference = reg.reference("kbuild/second", "gen1");
    let r = push1(&w, &reference, &["--plain-http"], &[]);
    assert_eq!(pushed_digest(&r, &reference), sound, "{}", r.stderr);
    let stderr = r.stderr();
    for object in [&scheduler_object, &apiserver_object] {
        assert!(
            stderr.contains(&format!(
                "warning: dropped the push cache entry `$SANDBOX/store/.kbuild/oci/blobs/{object}.json`: objects `"
            )) && stderr.contains(&format!(
                "both name blob `{}`, which holds one content; compressing object `{object}` again\n",
                blob(&s)
            )),
            "{stderr}"
        );
    }
    // Rewritten right by that push: verify passes.
    assert_eq!(cache_entry(&w, "kube-apiserver").1, a);
    w.ok(&["verify"]);

    // The small kube-scheduler naming kube-apiserver's blob: larger than it can compress to.
    poison(&scheduler, &s, &a);
    let reference = reg.reference("kbuild/third", "gen1");
    let r = push1(&w, &reference, &["--plain-http"], &[]);
    assert_eq!(pushed_digest(&r, &reference), sound, "{}", r.stderr);
    assert!(
        r.stderr().contains(&format!(
            "warning: dropped the push cache entry `$SANDBOX/store/.kbuild/oci/blobs/{scheduler_object}.json`: it names a blob of {} bytes, more than object `{scheduler_object}` (",
            a["size"]
        )),
        "{}",
        r.stderr
    );
    assert_eq!(cache_entry(&w, "kube-scheduler").1, s);

    poison(&apiserver, &a, &s);
    let r = w.ok(&["verify", "--repair"]);
    assert_eq!(r.stdout(), format!("cache    {shown}: {problem}\nok\n"));
    assert!(
        r.stderr().contains(&format!(
            "Dropped {shown} (the next push compresses its object again)"
        )),
        "{}",
        r.stderr
    );
    assert!(!apiserver.exists());
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");
    let reference = reg.reference("kbuild/fourth", "gen1");
    let r = push1(&w, &reference, &["--plain-http"], &[]);
    assert_eq!(pushed_digest(&r, &reference), sound, "{}", r.stderr);
    assert!(!r.stderr.contains("warning:"), "{}", r.stderr);
    assert_eq!(cache_entry(&w, "kube-apiserver").1, a);
}

/// review18 MED-11 / LOW-1: push cache entries kbuild cannot read as entries (a directory,
/// a symlink to `/dev/zero`, a FIFO) and a directory not named after an object. `verify`
/// reports each (exit 1) without following the symlink or waiting on the FIFO; `--repair`
/// drops every one, directories too, with a `Dropped` line each; and a push drops such an
/// entry with a `warning:` and pushes the sound manifest instead of failing.
#[test]
fn a_push_cache_entry_kbuild_cannot_read_is_found_by_verify_and_dropped() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let Pushed {
        w, digest: sound, ..
    } = Pushed::to(reg.reference("kbuild/first", "gen1"));
    let cache = w.sb.store.join(".kbuild/oci/blobs");
    let (apiserver, _) = cache_entry(&w, "kube-apiserver");
    let (scheduler, _) = cache_entry(&w, "kube-scheduler");
    let (manager, _) = cache_entry(&w, "kube-controller-manager");
    let stray = cache.join("subdir");
    let damage = || {
        std::fs::remove_file(&scheduler).unwrap();
        std::fs::create_dir(&scheduler).unwrap();
        std::fs::write(scheduler.join("inside"), b"x").unwrap();
        std::fs::remove_file(&apiserver).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &apiserver).unwrap();
        std::fs::remove_file(&manager).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&manager)
            .status()
            .unwrap();
        assert!(made.success());
    };
    damage();
    std::fs::create_dir(&stray).unwrap();
    let shown = |p: &Path| {
        format!(
            "$SANDBOX/store/.kbuild/oci/blobs/{}",
            p.file_name().unwrap().to_str().unwrap()
        )
    };
    let mut expected = vec![
        (&apiserver, "it is a symlink, not an entry file"),
        (&scheduler, "it is a directory, not an entry file"),
        (&manager, "it is not a regular file"),
        (&stray, "it is not named after a store object"),
    ];
    expected.sort();
    let lines = |fix: &str| -> String {
        expected
            .iter()
            .map(|(p, why)| format!("cache    {}: {why}{fix}\n", shown(p)))
            .collect()
    };

    let r = w.run(&["verify"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert_eq!(r.stdout(), lines(" (`kbuild verify --repair` drops it)"));

    let r = w.ok(&["verify", "--repair"]);
    assert_eq!(r.stdout(), format!("{}ok\n", lines("")));
    for (p, _) in &expected {
        assert!(
            r.stderr().contains(&format!(
                "Dropped {} (the next push compresses its object again)\n",
                shown(p)
            )),
            "{}",
            r.stderr
        );
        assert!(p.symlink_metadata().is_err(), "{} stayed", p.display());
    }
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");

    // A push meets the same damage: each entry dropped with a warning, the sound manifest.
    push_gen1(&w, &reg.reference("kbuild/second", "gen1"));
    damage();
    let reference = reg.reference("kbuild/third", "gen1");
    let r = push_plain(&w, &["1", &reference, "--host", "master-1"]);
    assert_eq!(pushed_digest(&r, &reference), sound, "{}", r.stderr);
    for (p, why) in &expected[..3] {
        let object = p.file_stem().unwrap().to_str().unwrap();
        assert!(
            r.stderr().contains(&format!(
                "warning: dropped the push cache entry `{}`: {why}; compressing object `{object}` again\n",
                shown(p)
            )),
            "{}",
            r.stderr
        );
    }
    assert_eq!(w.ok(&["verify"]).stdout, "ok\n");
}

/// review18 MED-5: a push cache entry with the right digest and a wrong size makes a push
/// publish a manifest declaring that size (a documented limit of the push). The pull
/// refuses it and says what is wrong: the size, not the digest; nothing is pulled.
#[test]
fn a_pull_names_a_blob_of_the_wrong_size_as_such() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let Pushed { w, .. } = Pushed::to(reg.reference("kbuild/first", "gen1"));
    let (apiserver, mut json) = cache_entry(&w, "kube-apiserver");
    let size = json["size"].as_u64().unwrap();
    json["size"] = (size + 1).into();
    std::fs::write(&apiserver, serde_json::to_vec(&json).unwrap()).unwrap();
    let reference = reg.reference("kbuild/second", "gen1");
    push_plain(&w, &["1", &reference, "--host", "master-1"]).assert_success();

    let h = puller();
    let r = pull_plain(&h, &reference);
    assert_refused(
        &r,
        &reference,
        &[&format!(
            "\n  caused by: blob `{}` of `{reference}` is {size} bytes (the registry's Content-Length), not the {} bytes its manifest declares\nhelp: nothing was added to the store; if the sending store is at fault, run `kbuild verify --repair` there",
            json["blob"].as_str().unwrap(),
            size + 1
        )],
    );
    assert_nothing_pulled(&h, "a blob of the wrong size");
    // The sender's verify finds the entry.
    let v = w.run(&["verify"]);
    assert_eq!(v.code, Some(1), "{}", v.stderr);
}

/// review18 MED-10 (the pull's staging): a `.tmp-pull-<digest>` entry that is a symlink to a
/// directory outside the store is unlinked, not written through; the pull completes.
#[test]
fn a_pull_never_stages_through_a_symlink() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let w = builder();
    two_generations(&w);
    push_gen1(&w, &reg.reference(REPO, "gen1"));
    let reference = reg.reference(REPO, "gen2");
    let r = push_plain(&w, &["2", &reference, "--host", "master-1"]);
    let digest = pushed_digest(&r, &reference);
    let hex = digest.strip_prefix("sha256:").unwrap();
    // A store (made by the pull of generation 1) for the link to be planted in.
    let h = puller();
    pull_plain(&h, &reg.reference(REPO, "gen1")).assert_success();
    let victim = h.sb.dir.join("victim");
    std::fs::create_dir(&victim).unwrap();
    let link = h.sb.store.join(format!(".tmp-pull-{}", &hex[..32]));
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    pull_plain(&h, &reference).assert_success();
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "written through the link"
    );
    assert!(link.symlink_metadata().is_err(), "the link stayed");
    h.ok(&["verify"]);
}

/// The scratch entries (`.tmp-work-*`) in `store`, with their sizes in bytes.
fn scratch_entries(store: &Path) -> BTreeMap<String, u64> {
    top_level(store)
        .into_iter()
        .filter(|n| n.starts_with(".tmp-work-"))
        .map(|n| {
            let bytes = common::walk_any(store.join(&n))
                .into_iter()
                .map(|e| e.unwrap().metadata().unwrap())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum();
            (n, bytes)
        })
        .collect()
}

/// review13 LOW-10: a push killed with SIGKILL mid-upload leaves its scratch entry (its
/// staged blobs); a build and a pull meanwhile never remove the scratch of the live push
/// (held by the proxy), and the next writer after the kill removes it and says so in one line. A pull
/// that dies in its import (the fault injection aborts it as `kill -9` would, with its rootfs
/// assembled in a scratch entry) leaves one too; the rerun removes it and the pull's staging,
/// and leaves no temporary entry.
#[test]
fn the_scratch_of_a_killed_run_is_removed_by_the_next_writer_and_a_live_ones_never() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let w = built_gen1();
    // Another registry to pull from while the push below is held (the one behind the proxy
    // must lack the blobs, so that the push uploads).
    let other = Registry::start();
    let other_ref = other.reference(REPO, "gen1");
    push_gen1(&w, &other_ref);
    let proxy = Proxy::start(reg.port);
    proxy.stall_after(Way::Up, 256 << 10);
    let reference = proxy.reference(REPO, "gen1");
    let mut push = w.spawn(&[
        "push",
        "1",
        &reference,
        "--host",
        "master-1",
        "--plain-http",
    ]);
    proxy.wait_stalled();
    let live = scratch_entries(&w.sb.store);
    assert_eq!(live.len(), 1, "{live:?}");

    // A build and a pull (writers under the store lock) while the push is alive leave its
    // entry.
    let r = w.ok(&["build", "--host", "master-1"]);
    assert!(!r.stderr.contains("Removed"), "{}", r.stderr);
    let r = w.ok(&["pull", &other_ref, "--profile", "copy", "--plain-http"]);
    assert!(
        !r.stderr.contains("Removed") && r.stderr.contains("profile copy, generation 1"),
        "{}",
        r.stderr
    );
    assert_eq!(
        scratch_entries(&w.sb.store).keys().collect::<Vec<_>>(),
        live.keys().collect::<Vec<_>>()
    );

    push.kill().unwrap(); // SIGKILL
    push.wait().unwrap();
    let left = scratch_entries(&w.sb.store);
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        live.keys().collect::<Vec<_>>()
    );
    let bytes = *left.values().next().unwrap();
    assert!(bytes > 0, "the killed push staged nothing");
    proxy.release();
    let r = w.ok(&["build", "--host", "master-1"]);
    assert!(
        r.stderr().contains(&format!(
            "Removed 1 temporary entry a killed kbuild left, {} freed\n",
            human_bytes(bytes)
        )),
        "{}",
        r.stderr
    );
    assert_eq!(scratch_entries(&w.sb.store), BTreeMap::new());

    // A pull that dies while it assembles the rootfs.
    let reference = reg.reference(REPO, "gen1");
    push_gen1(&w, &reference);
    let h = puller();
    let r = h.run_env(
        &["pull", &reference, "--plain-http"],
        &[("KBUILD_FAULT_AT", "1")],
    );
    r.assert_stderr_has("fault injected at step 1 (import: rootfs assembled in a scratch entry)");
    assert_eq!(scratch_entries(&h.sb.store).len(), 1);
    let r = pull_plain(&h, &reference);
    r.assert_success();
    r.assert_stderr_has("Removed 1 temporary entry a killed kbuild left, ");
    let temporary: Vec<String> = top_level(&h.sb.store)
        .into_iter()
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert_eq!(temporary, Vec::<String>::new());
    h.ok(&["verify"]);

    // What such a pull leaves, `kbuild gc` removes too (every `.tmp-*` entry, the staging of
    // the manifest included).
    let h = puller();
    let r = h.run_env(
        &["pull", &reference, "--plain-http"],
        &[("KBUILD_FAULT_AT", "1")],
    );
    r.assert_stderr_has("fault injected at step 1");
    let temporary: Vec<String> = top_level(&h.sb.store)
        .into_iter()
        .filter(|n| n.starts_with(".tmp"))
        .collect();
    assert!(
        temporary.iter().any(|n| n.starts_with(".tmp-work-")),
        "{temporary:?}"
    );
    let r = h.ok(&["gc"]);
    assert!(
        r.stdout.contains(&format!(
            "and {} removed",
            if temporary.len() == 1 {
                "1 temporary entry".to_owned()
            } else {
                format!("{} temporary entries", temporary.len())
            }
        )),
        "{}",
        r.stdout
    );
    assert!(
        top_level(&h.sb.store)
            .iter()
            .all(|n| !n.starts_with(".tmp")),
        "{:?}",
        top_level(&h.sb.store)
    );
}
