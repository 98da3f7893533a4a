//! Errors of `export`, `import`, `push` and `pull` that say the true thing (review13 LOW-2,
//! LOW-3, LOW-11, LOW-12, LOW-13 and the registry-damaged blob): each refusal has its own
//! message and a `help:` that fits it, asserted as the whole stderr and exit code.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

use common::registry::{Options, Pushed, REPO, Registry, puller, pushed_gen1, registry};
use common::world::*;
use common::*;

/// `kbuild ARGS` in `dir` (a store, recipes and root of `w`, none of which these errors need).
fn in_dir(w: &World, dir: &Path, args: &[&str]) -> Run {
    let mut c = w.cmd(args);
    c.current_dir(dir);
    w.sb.run(c)
}

/// References copied from skopeo, podman or a browser (`docker://…`, `https://…`, `oci:DIR`)
/// are refused before any connection with a `help:` that shows the kbuild form; `http://`
/// also says `--plain-http`.
#[test]
fn references_in_other_tools_syntax_say_what_to_write() {
    let sb = Sandbox::new();
    let cases: [(&[&str], &str); 8] = [
        (
            &["pull", "docker://127.0.0.1:5613/k/m"],
            "error: `docker://127.0.0.1:5613/k/m` is not a registry reference\nhelp: drop `docker://` (skopeo's and podman's transport): write `127.0.0.1:5613/k/m`\n",
        ),
        (
            &["pull", "https://registry.example/k/m:master-1-2"],
            "error: `https://registry.example/k/m:master-1-2` is not a registry reference\nhelp: drop `https://` (a URL scheme; HTTPS is the default): write `registry.example/k/m:master-1-2`\n",
        ),
        (
            &["pull", "http://127.0.0.1:5000/k/m"],
            "error: `http://127.0.0.1:5000/k/m` is not a registry reference\nhelp: drop `http://` (a URL scheme) and add `--plain-http`: write `127.0.0.1:5000/k/m --plain-http`\n",
        ),
        (
            &["push", "1", "docker://127.0.0.1:5613/k/m"],
            "error: `docker://127.0.0.1:5613/k/m` is not a registry reference\nhelp: drop `docker://` (skopeo's and podman's transport): write `127.0.0.1:5613/k/m`\n",
        ),
        (
            // Still wrong without the prefix: the rule, and the prefix to drop.
            &["push", "docker://127.0.0.1:5613/K/M"],
            "error: `docker://127.0.0.1:5613/K/M` is not a registry reference\nhelp: drop `docker://` (skopeo's and podman's transport) and write `host[:port]/repository[:tag|@sha256:…]`\n",
        ),
        (
            &["pull", "oci:/media/usb/m1-3:m1-3"],
            "error: `oci:/media/usb/m1-3:m1-3` is not a registry reference\nhelp: `oci:` is skopeo's transport for a layout directory: for `/media/usb/m1-3` use `kbuild import /media/usb/m1-3` or `kbuild export --output /media/usb/m1-3`; a registry reference is `host[:port]/repository[:tag]`\n",
        ),
        (
            &["pull", "containers-storage:k/m"],
            "error: `containers-storage:k/m` is not a registry reference\nhelp: `containers-storage:` is skopeo's transport for a local container engine's images: write a registry reference, `host[:port]/repository[:tag|@sha256:…]`\n",
        ),
        (
            // A host named like a transport, with a port: a reference (refused for its case).
            &["pull", "oci:5000/K"],
            "error: `oci:5000/K` is not a registry reference\nhelp: the repository must be lowercase letters, digits, `.`, `_`, `-`, separated by `/`; write `host[:port]/repository[:tag|@sha256:…]`, e.g. `registry.example:5000/kbuild/masters:master-1-2`\n",
        ),
    ];
    for (args, expected) in cases {
        sb.kbuild(args).assert_error(expected);
    }
    assert!(!sb.store.exists(), "nothing made a store");
}

/// `import` of what is no layout directory says what it is: missing (and `oci:DIR` written
/// as skopeo does), a file, an archive of a layout, or what a killed export left (review13
/// LOW-3, LOW-12).
#[test]
fn import_of_no_layout_directory_says_what_it_is() {
    let sb = Sandbox::new();
    let d = &sb.dir;
    sb.kbuild(&["import", "/nonexistent"]).assert_error(
        "error: cannot import `/nonexistent`\n  caused by: layout directory `/nonexistent` does not exist\nhelp: give the directory `kbuild export --output` wrote (or `skopeo copy … oci:DIR` made)\n",
    );
    let full = d.join("full");
    std::fs::create_dir(&full).unwrap();
    let mut c = sb.bare();
    c.args(["import", "oci:full:m1-3"]).current_dir(d);
    sb.run(c).assert_error(
        "error: cannot import `oci:full:m1-3`\n  caused by: layout directory `oci:full:m1-3` does not exist\nhelp: drop skopeo's `oci:` transport: write `kbuild import full`\n",
    );
    std::fs::write(d.join("notes.txt"), "hello").unwrap();
    sb.kbuild(&["import", d.join("notes.txt").to_str().unwrap()])
        .assert_error(
            "error: cannot import `$SANDBOX/notes.txt`\n  caused by: `$SANDBOX/notes.txt` is a file, not an OCI layout directory\nhelp: give the directory `kbuild export --output` wrote (or `skopeo copy … oci:DIR` made)\n",
        );
    std::fs::write(full.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for (name, flags, kind) in [
        ("full.tar", "-cf", "a tar archive"),
        ("full.tar.gz", "-czf", "a gzip-compressed file"),
    ] {
        let status = std::process::Command::new("tar")
            .args([flags, name, "full"])
            .current_dir(d)
            .status()
            .unwrap();
        assert!(status.success());
        let path = d.join(name);
        sb.kbuild(&["import", path.to_str().unwrap()]).assert_error(&format!(
            "error: cannot import `$SANDBOX/{name}`\n  caused by: `$SANDBOX/{name}` is {kind}, not an OCI layout directory\nhelp: unpack it first (`mkdir layout && tar -xf $SANDBOX/{name} -C layout`), then import the layout directory it holds\n"
        ));
    }
    // What a killed export leaves: `DIR.kbuild-tmp` beside a missing DIR, `DIR/.kbuild-tmp`
    // alone in an existing one.
    std::fs::create_dir_all(d.join("usb.kbuild-tmp/blobs")).unwrap();
    sb.kbuild(&["import", d.join("usb").to_str().unwrap()]).assert_error(
        "error: cannot import `$SANDBOX/usb`\n  caused by: `$SANDBOX/usb` is no OCI layout: an export to it was interrupted (it left `$SANDBOX/usb.kbuild-tmp`)\nhelp: run the export again (`kbuild export --output $SANDBOX/usb` where the generation is): it reuses what was left, and `$SANDBOX/usb` appears only once complete\n",
    );
    std::fs::create_dir_all(d.join("stick/.kbuild-tmp/blobs")).unwrap();
    sb.kbuild(&["import", d.join("stick").to_str().unwrap()]).assert_error(
        "error: cannot import `$SANDBOX/stick`\n  caused by: `$SANDBOX/stick` is no OCI layout: an export to it was interrupted (it left `$SANDBOX/stick/.kbuild-tmp`)\nhelp: run the export again (`kbuild export --output $SANDBOX/stick` where the generation is): it reuses what was left, and `$SANDBOX/stick` appears only once complete\n",
    );
    // An empty directory is no layout, and nothing else.
    std::fs::create_dir(d.join("empty")).unwrap();
    sb.kbuild(&["import", d.join("empty").to_str().unwrap()]).assert_error(
        "error: cannot import `$SANDBOX/empty`\n  caused by: `$SANDBOX/empty` is not a kbuild OCI layout: it has no `oci-layout` file\nhelp: give the directory `kbuild export --output` wrote (or `skopeo copy … oci:DIR` made)\n",
    );
    assert!(!sb.store.exists(), "nothing made a store");
}

/// Export outputs that cannot be written, each with its own message (review13 LOW-11, LOW-2):
/// skopeo's `oci:DIR`, a parent that is a file, a file where the staging directory goes, a
/// symbolic link to a directory that is not empty.
#[test]
fn export_outputs_that_cannot_be_written_say_why() {
    let w = World::new();
    w.build(&["master"], &[], 1);
    let d = &w.sb.dir;
    in_dir(&w, d, &["export", "--output", "oci:usb"]).assert_error(
        "error: cannot export generation 1 of profile `default` to `oci:usb`\n  caused by: export directory `oci:usb` is written as skopeo's `oci:` transport\nhelp: drop `oci:`: write `--output usb` (a directory really named so: `--output ./oci:usb`)\n",
    );
    std::fs::write(d.join("afile"), "x").unwrap();
    in_dir(&w, d, &["export", "--output", "afile/x/y"]).assert_error(
        "error: cannot export generation 1 of profile `default` to `afile/x/y`\n  caused by: the parent `afile` of export directory `afile/x/y` is not a directory\nhelp: choose another directory (`afile` is a file)\n",
    );
    std::fs::write(d.join("usb.kbuild-tmp"), "x").unwrap();
    in_dir(&w, d, &["export", "--output", "usb"]).assert_error(
        "error: cannot export generation 1 of profile `default` to `usb`\n  caused by: `usb.kbuild-tmp`, where the export to `usb` is staged, is not a directory\nhelp: remove it if nothing of yours is in it (`rm usb.kbuild-tmp`), or choose another directory\n",
    );
    assert!(!d.join("usb").exists() && !d.join("oci:usb").exists());
    // A symbolic link to a directory that is not empty: said, and no `rm -r LINK` help
    // (which would remove the link, not what it holds).
    std::fs::create_dir_all(d.join("mnt/old")).unwrap();
    std::os::unix::fs::symlink("mnt", d.join("lnk")).unwrap();
    in_dir(&w, d, &["export", "--output", "lnk"]).assert_error(
        "error: cannot export generation 1 of profile `default` to `lnk`\n  caused by: export directory `lnk` already exists and is not empty (it is a symbolic link to `mnt`, which holds `old`)\nhelp: choose another directory: a new or empty one\n",
    );
    assert!(d.join("lnk").is_symlink() && d.join("mnt/old").is_dir());
    // `./oci:usb` is a directory of that name, as the help says.
    in_dir(&w, d, &["export", "--output", "./oci:usb"]).assert_success();
    assert!(d.join("oci:usb/index.json").is_file());
}

/// Spawns `kbuild ARGS` paused at the fault point `pause` and returns once it says so.
fn spawn_paused(w: &World, args: &[&str], pause: &str) -> Child {
    let mut c = w.std_command(&kbuild_bin(), args);
    c.env("KBUILD_FAULT_PAUSE", pause)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "kbuild ended before pausing at `{pause}`"
        );
        if line == format!("kbuild: paused at `{pause}`\n") {
            break;
        }
    }
    // Keep reading (and dropping) its stderr so that it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    child
}

/// Ctrl-C of an export removes its staging directory only while it holds it: an export that
/// published (and let go) and is interrupted after does not remove the staging a newer export
/// to the same DIR is writing (`DIR.kbuild-tmp` is one fixed name); the newer one, interrupted,
/// removes its own.
#[test]
fn ctrl_c_of_an_export_removes_only_the_staging_it_holds() {
    let w = World::new();
    w.build(&["master"], &[], 1);
    let out = w.sb.dir.join("usb");
    let staging = w.sb.dir.join("usb.kbuild-tmp");
    let output = out.to_str().unwrap();
    let mut first = spawn_paused(&w, &["export", "--output", output], "export: published");
    assert!(out.join("index.json").is_file() && !staging.exists());
    std::fs::remove_dir_all(&out).unwrap();
    let mut second = spawn_paused(
        &w,
        &["export", "--output", output],
        "export: a blob written",
    );
    let blobs = || std::fs::read_dir(staging.join("blobs/sha256")).map_or(0, |d| d.count());
    assert!(blobs() > 0, "the second export's staging holds a blob");
    let interrupt = |child: &mut Child| {
        let pid = rustix::process::Pid::from_child(child);
        rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
        child.wait().unwrap().code()
    };
    assert_eq!(interrupt(&mut first), Some(130));
    assert!(
        blobs() > 0,
        "the first export's Ctrl-C removed the second's staging"
    );
    assert_eq!(interrupt(&mut second), Some(130));
    assert!(
        !staging.exists(),
        "the second export's Ctrl-C left its staging"
    );
    assert!(!out.exists());
}

/// `--plain-http` to a registry that speaks HTTPS: the help says to drop it (not "check that
/// the registry is up"), and the server's body ends no cause line with a blank line. The
/// reverse, HTTPS to a plain-HTTP registry, says to add it.
#[test]
fn plain_http_and_https_mixed_up_say_which_flag() {
    let Some(tls) = registry(Options::TLS) else {
        return;
    };
    let h = puller();
    let reference = tls.reference("k/m", "default-1");
    let r = h.run(&["pull", &reference, "--plain-http"]);
    r.assert_error(&format!(
        "error: cannot pull `{reference}`\n  caused by: pull: the request to the registry of `{reference}` failed\n  caused by: Server error: url http://{}/v2/k/m/manifests/default-1, code: 400, message: Client sent an HTTP request to an HTTPS server.\nhelp: the registry speaks HTTPS: drop `--plain-http` (and give its CA with `--ca-file` if a private CA signed its certificate)\n",
        tls.host()
    ));
    let plain = Registry::start_with(Options::PLAIN);
    let reference = plain.reference("k/m", "default-1");
    h.run(&["pull", &reference]).assert_error(&format!(
        "error: cannot pull `{reference}`\n  caused by: pull: the request to the registry of `{reference}` failed\n  caused by: error sending request for url (https://{host}/v2/)\n  caused by: client error (Connect)\n  caused by: received corrupt message of type InvalidContentType\nhelp: the registry seems to speak plain HTTP: add `--plain-http` if that is expected\n",
        host = plain.host()
    ));
}

/// A blob whose bytes the registry serves no longer match its digest (damaged in its
/// storage): the help says the registry's copy is damaged and what fixes it, not only that
/// the sender should push again; the same damage in a layout directory says to copy it again.
#[test]
fn a_blob_damaged_in_the_registry_or_a_layout_says_whose_copy_is_bad() {
    let Some(reg) = registry(Options::PLAIN) else {
        return;
    };
    let Pushed { w, reference, .. } = pushed_gen1(&reg);
    let m: serde_json::Value = serde_json::from_slice(&reg.manifest(REPO, "gen1")).unwrap();
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
    let actual = format!(
        "sha256:{}",
        sha256_hex(&std::fs::read(reg.blob_path(&layer)).unwrap())
    );
    let object = object_of(&reg, &m, &layer);
    let store2 = w.sb.dir.join("store2");
    let r = w.run_store(&store2, &["pull", &reference, "--plain-http"]);
    r.assert_error(&format!(
        "error: cannot pull `{reference}`\n  caused by: blob `{layer}` of object `{object}` of `{reference}` does not match its digest (got `{actual}`)\nhelp: nothing was added to the store; the registry's copy of `{layer}` is damaged (it checked the bytes when they were pushed), or something between altered them: ask the registry's admin to remove that blob from its storage, then push the generation again (a push sends the blobs a registry lacks)\n"
    ));

    let out = w.sb.dir.join("usb");
    w.ok(&[
        "export",
        "1",
        "--output",
        out.to_str().unwrap(),
        "--host",
        "master-1",
    ]);
    let blob = out.join("blobs/sha256").join(&layer["sha256:".len()..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&blob, &bytes).unwrap();
    let actual = format!("sha256:{}", sha256_hex(&bytes));
    w.run_store(&store2, &["import", out.to_str().unwrap()]).assert_error(&format!(
        "error: cannot import `$SANDBOX/usb`\n  caused by: blob `{layer}` of object `{object}` of layout `$SANDBOX/usb` does not match its digest (got `{actual}`)\nhelp: nothing was added to the store; the layout was damaged after the export (a bad copy or medium): copy it again, or export again\n"
    ));
}

/// The store name of the (first) object whose blob is `digest`, from the config `m` names in
/// `reg`.
fn object_of(reg: &Registry, m: &serde_json::Value, digest: &str) -> String {
    let config = reg.blob_path(m["config"]["digest"].as_str().unwrap());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(config).unwrap()).unwrap();
    config["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["blob"] == digest)
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// An export whose staging directory cannot be made (a read-only mount, a directory of
/// someone else's) says it cannot write the export, naming the path, with a `help:` about
/// where to export — not the store's "cannot be written" help. As root (CI): `DIR`'s parent
/// is a read-only bind mount in a private mount namespace (`EROFS`); otherwise its mode is
/// 0555 (`EACCES`).
#[test]
fn an_export_that_cannot_write_says_so_not_the_store() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let w = World::new();
    w.build(&["master"], &[], 1);
    let ro = w.sb.dir.join("ro");
    std::fs::create_dir(&ro).unwrap();
    let out = ro.join("usb");
    let args = ["export", "--output", out.to_str().unwrap()];
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let (r, cause) = if root {
        let script = r#"mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@""#;
        let wrap: Vec<&std::ffi::OsStr> = vec![
            "unshare".as_ref(),
            "--mount".as_ref(),
            "--propagation".as_ref(),
            "private".as_ref(),
            "sh".as_ref(),
            "-c".as_ref(),
            script.as_ref(),
            ro.as_os_str(),
        ];
        let c = w.command_line(&wrap, &kbuild_bin(), &w.sb.store, true, &args);
        (
            w.sb.run(assert_cmd::Command::from_std(c)),
            "Read-only file system (os error 30)",
        )
    } else {
        let mode = std::fs::metadata(&ro).unwrap().mode();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let r = w.run(&args);
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(mode)).unwrap();
        (r, "Permission denied (os error 13)")
    };
    r.assert_error(&format!(
        "error: cannot export generation 1 of profile `default` to `$SANDBOX/ro/usb`\n  caused by: cannot write the export to `$SANDBOX/ro/usb`\n  caused by: failed to create directory `$SANDBOX/ro/usb.kbuild-tmp`: {cause}\nhelp: export where you can write: a new directory in a writable one, or an empty one of yours; nothing of this export was left at `$SANDBOX/ro/usb`\n"
    ));
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);
}
