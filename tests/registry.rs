//! Push and pull of generations through a real OCI registry (issue 11): Debian's
//! `docker-registry` (distribution 2.8) started per test on 127.0.0.1 (`tests/common/registry.rs`),
//! with htpasswd auth and TLS variants, a proxy that cuts transfers at an exact byte, and
//! `skopeo` as the tool nobody here wrote.
//!
//! The first tests check the harness itself against skopeo alone, so a failure further down
//! is kbuild's, not the fixture's.

mod common;

use common::registry::*;
use common::*;

// ---------------------------------------------------------------------------------------------
// The harness, checked with skopeo alone
// ---------------------------------------------------------------------------------------------

#[test]
fn harness_skopeo_copies_a_hand_written_layout_to_and_from_a_plain_registry() {
    if skip() {
        return;
    }
    let reg = Registry::start();
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
    if skip() {
        return;
    }
    let reg = Registry::start_with(Options {
        auth: true,
        tls: true,
    });
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
    if skip() {
        return;
    }
    let mut reg = Registry::start();
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
    if skip() {
        return;
    }
    let reg = Registry::start();
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
