//! End-to-end `kbuild build`: the rootfs a user gets, byte for byte, and what the store and
//! the lock file look like around it.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use kbuild::store::Node;

// ---------------------------------------------------------------------------------------------
// The files a master gets, written out from the seed's values
// ---------------------------------------------------------------------------------------------

struct Vars<'a> {
    ip: &'a str,
    etcd2: &'a str,
    etcd3: &'a str,
    service_cidr: &'a str,
}

/// The seed guide's values.
const SEED: Vars<'static> = Vars {
    ip: "10.72.84.160",
    etcd2: "10.72.84.161",
    etcd3: "10.72.84.162",
    service_cidr: "10.254.0.0/16",
};

fn expected_config(v: &Vars) -> String {
    format!(
        r#"###
# kubernetes system config
#
# The following values are used to configure various aspects of all
# kubernetes services, including
#
#   kube-apiserver.service
#   kube-controller-manager.service
#   kube-scheduler.service
#   kubelet.service
#   kube-proxy.service
# logging to stderr means we get it in the systemd journal
KUBE_LOGTOSTDERR="--logtostderr=true"

# journal message level, 0 is debug (8 for troubleshooting)
KUBE_LOG_LEVEL="--v=0"

# Should this cluster be allowed to run privileged docker containers
KUBE_ALLOW_PRIV="--allow-privileged=true"

# How the controller-manager, scheduler, and proxy find the apiserver
KUBE_MASTER="--master=http://{ip}:8080"
"#,
        ip = v.ip
    )
}

fn expected_api_args() -> &'static str {
    concat!(
        r#"KUBE_API_ARGS=""#,
        "--authorization-mode=RBAC",
        " --runtime-config=rbac.authorization.k8s.io/v1beta1",
        " --kubelet-https=true",
        " --experimental-bootstrap-token-auth",
        " --token-auth-file=/etc/kubernetes/token.csv",
        " --service-node-port-range=30000-32767",
        " --tls-cert-file=/etc/kubernetes/ssl/kubernetes.pem",
        " --tls-private-key-file=/etc/kubernetes/ssl/kubernetes-key.pem",
        " --client-ca-file=/etc/kubernetes/ssl/ca.pem",
        " --service-account-key-file=/etc/kubernetes/ssl/ca-key.pem",
        " --etcd-cafile=/etc/kubernetes/ssl/ca.pem",
        " --etcd-certfile=/etc/kubernetes/ssl/kubernetes.pem",
        " --etcd-keyfile=/etc/kubernetes/ssl/kubernetes-key.pem",
        " --enable-swagger-ui=true",
        " --apiserver-count=3",
        " --audit-log-maxage=30",
        " --audit-log-maxbackup=3",
        " --audit-log-maxsize=100",
        " --audit-log-path=/var/lib/audit.log",
        " --event-ttl=1h",
        r#"""#,
    )
}

fn expected_apiserver(v: &Vars) -> String {
    format!(
        r#"###
## kubernetes system config
##
## The following values are used to configure the kube-apiserver
##
#
## The address on the local server to listen to.
KUBE_API_ADDRESS="--advertise-address={ip} --bind-address={ip} --insecure-bind-address={ip}"
#
## The port on the local server to listen on.
#KUBE_API_PORT="--port=8080"
#
## Port minions listen on
#KUBELET_PORT="--kubelet-port=10250"
#
## Comma separated list of nodes in the etcd cluster
KUBE_ETCD_SERVERS="--etcd-servers=https://{ip}:2379,https://{etcd2}:2379,https://{etcd3}:2379"
#
## Address range to use for services
KUBE_SERVICE_ADDRESSES="--service-cluster-ip-range={cidr}"
#
## default admission control policies
KUBE_ADMISSION_CONTROL="--admission-control=ServiceAccount,NamespaceLifecycle,NamespaceExists,LimitRanger,ResourceQuota"
#
## Add your own!
{args}
"#,
        ip = v.ip,
        etcd2 = v.etcd2,
        etcd3 = v.etcd3,
        cidr = v.service_cidr,
        args = expected_api_args(),
    )
}

fn expected_controller_manager(v: &Vars) -> String {
    format!(
        r#"###
# The following values are used to configure the kubernetes controller-manager

# defaults from config and apiserver should be adequate

# Add your own!
KUBE_CONTROLLER_MANAGER_ARGS="--address=127.0.0.1 --service-cluster-ip-range={cidr} --cluster-name=kubernetes --cluster-signing-cert-file=/etc/kubernetes/ssl/ca.pem --cluster-signing-key-file=/etc/kubernetes/ssl/ca-key.pem --service-account-private-key-file=/etc/kubernetes/ssl/ca-key.pem --root-ca-file=/etc/kubernetes/ssl/ca.pem --leader-elect=true"
"#,
        cidr = v.service_cidr
    )
}

const EXPECTED_SCHEDULER: &str = r#"###
# kubernetes scheduler config

# default config should be adequate

# Add your own!
KUBE_SCHEDULER_ARGS="--leader-elect=true --address=127.0.0.1"
"#;

const EXPECTED_APISERVER_UNIT: &str = r#"[Unit]
Description=Kubernetes API Service
Documentation=https://github.com/GoogleCloudPlatform/kubernetes
After=network.target
After=etcd.service

[Service]
EnvironmentFile=-/etc/kubernetes/config
EnvironmentFile=-/etc/kubernetes/apiserver
ExecStart=/usr/local/bin/kube-apiserver \
        $KUBE_LOGTOSTDERR \
        $KUBE_LOG_LEVEL \
        $KUBE_ETCD_SERVERS \
        $KUBE_API_ADDRESS \
        $KUBE_API_PORT \
        $KUBELET_PORT \
        $KUBE_ALLOW_PRIV \
        $KUBE_SERVICE_ADDRESSES \
        $KUBE_ADMISSION_CONTROL \
        $KUBE_API_ARGS
Restart=on-failure
Type=notify
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"#;

const EXPECTED_CONTROLLER_MANAGER_UNIT: &str = r#"[Unit]
Description=Kubernetes Controller Manager
Documentation=https://github.com/GoogleCloudPlatform/kubernetes

[Service]
EnvironmentFile=-/etc/kubernetes/config
EnvironmentFile=-/etc/kubernetes/controller-manager
ExecStart=/usr/local/bin/kube-controller-manager \
        $KUBE_LOGTOSTDERR \
        $KUBE_LOG_LEVEL \
        $KUBE_MASTER \
        $KUBE_CONTROLLER_MANAGER_ARGS
Restart=on-failure
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"#;

const EXPECTED_SCHEDULER_UNIT: &str = r#"[Unit]
Description=Kubernetes Scheduler Plugin
Documentation=https://github.com/GoogleCloudPlatform/kubernetes

[Service]
EnvironmentFile=-/etc/kubernetes/config
EnvironmentFile=-/etc/kubernetes/scheduler
ExecStart=/usr/local/bin/kube-scheduler \
        $KUBE_LOGTOSTDERR \
        $KUBE_LOG_LEVEL \
        $KUBE_MASTER \
        $KUBE_SCHEDULER_ARGS
Restart=on-failure
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"#;

/// The master rootfs's `kbuild.json`: its prerequisites and its three health checks (the
/// apiserver's at the host's address).
fn expected_manifest(v: &Vars) -> String {
    let check = |unit: &str, url: &str| {
        format!(
            r#"    {{
      "interval_ms": 1000,
      "probe": {{
        "body": "ok",
        "kind": "http",
        "status": 200,
        "url": "{url}"
      }},
      "settle_ms": 3000,
      "timeout_ms": 60000,
      "unit": "{unit}"
    }}"#
        )
    };
    format!(
        r#"{{
  "health": [
{},
{},
{}
  ],
  "prerequisites": [
    "/etc/kubernetes/ssl/ca-key.pem",
    "/etc/kubernetes/ssl/ca.pem",
    "/etc/kubernetes/ssl/kubernetes-key.pem",
    "/etc/kubernetes/ssl/kubernetes.pem",
    "/etc/kubernetes/token.csv"
  ],
  "version": 1
}}
"#,
        check(
            "kube-apiserver.service",
            &format!("http://{}:8080/healthz", v.ip)
        ),
        check(
            "kube-controller-manager.service",
            "http://127.0.0.1:10252/healthz"
        ),
        check("kube-scheduler.service", "http://127.0.0.1:10251/healthz"),
    )
}

/// Every rendered file of a master rootfs: relative path → bytes.
fn expected_rendered(v: &Vars) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("etc/kubernetes/apiserver", expected_apiserver(v)),
        ("etc/kubernetes/config", expected_config(v)),
        (
            "etc/kubernetes/controller-manager",
            expected_controller_manager(v),
        ),
        ("etc/kubernetes/scheduler", EXPECTED_SCHEDULER.to_owned()),
        (
            "etc/systemd/system/kube-apiserver.service",
            EXPECTED_APISERVER_UNIT.to_owned(),
        ),
        (
            "etc/systemd/system/kube-controller-manager.service",
            EXPECTED_CONTROLLER_MANAGER_UNIT.to_owned(),
        ),
        (
            "etc/systemd/system/kube-scheduler.service",
            EXPECTED_SCHEDULER_UNIT.to_owned(),
        ),
    ])
}

/// The whole expected rootfs: (path, kind, mode, content blake3) for every entry.
fn expected_rootfs_shape(v: &Vars) -> Vec<(String, Kind, u32, String)> {
    let mut files: BTreeMap<String, (u32, Vec<u8>)> = expected_rendered(v)
        .into_iter()
        .map(|(p, t)| (p.to_owned(), (0o444, t.into_bytes())))
        .collect();
    files.insert(
        "kbuild.json".into(),
        (0o444, expected_manifest(v).into_bytes()),
    );
    for b in MASTER_BINARIES {
        files.insert(
            format!("usr/local/bin/{b}"),
            (0o555, fixture().tarball.member(&bin_member(b)).to_vec()),
        );
    }
    let dirs = [
        ".",
        "etc",
        "etc/kubernetes",
        "etc/systemd",
        "etc/systemd/system",
        "etc/systemd/system/multi-user.target.wants",
        "usr",
        "usr/local",
        "usr/local/bin",
    ];
    // Each unit's `WantedBy=multi-user.target`, as the link `systemctl enable` would make.
    let links = common::world::UNITS.iter().map(|u| {
        (
            format!("etc/systemd/system/multi-user.target.wants/{u}"),
            Kind::Symlink,
            0o777,
            format!("../{u}"),
        )
    });
    let mut out: Vec<(String, Kind, u32, String)> = dirs
        .iter()
        .map(|d| (d.to_string(), Kind::Dir, 0o555, String::new()))
        .chain(
            files
                .into_iter()
                .map(|(p, (mode, bytes))| (p, Kind::File, mode, blake3_hex(&bytes))),
        )
        .chain(links)
        .collect();
    // walkdir's order: by file name within each directory, parents first.
    out.sort_by(|a, b| {
        let key = |p: &str| -> Vec<String> {
            if p == "." {
                vec![]
            } else {
                p.split('/').map(str::to_owned).collect()
            }
        };
        key(&a.0).cmp(&key(&b.0))
    });
    out
}

fn read(p: &Path) -> String {
    String::from_utf8(std::fs::read(p).unwrap()).unwrap()
}

/// Checks that `rootfs` is exactly the master rootfs for `v`, and that every file in it is a
/// hardlink to the store object holding its content.
fn assert_master_rootfs(store: &Path, rootfs: &Path, v: &Vars) {
    // The printed path: `<store>/<32 hex>-rootfs-master`, named by the digest of its tree.
    assert_eq!(rootfs.parent().unwrap(), store);
    let name = rootfs.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        name,
        object_name(&tree_node(rootfs), "rootfs-master"),
        "the rootfs name is not the digest of its contents"
    );

    // Rendered files, byte for byte (first, for readable diffs).
    for (rel, text) in expected_rendered(v) {
        assert_eq!(read(&rootfs.join(rel)), text, "{rel}");
    }
    assert_eq!(read(&rootfs.join("kbuild.json")), expected_manifest(v));
    for b in MASTER_BINARIES {
        assert!(
            std::fs::read(rootfs.join("usr/local/bin").join(b)).unwrap()
                == fixture().tarball.member(&bin_member(b)),
            "usr/local/bin/{b} differs from the archive's member"
        );
    }
    // Then the complete tree: no file more, none less, every mode.
    assert_eq!(shape(&listing(rootfs)), expected_rootfs_shape(v));

    // Binaries and rendered files are hardlinks to their store objects.
    let mut objects: Vec<(String, String)> = MASTER_BINARIES
        .iter()
        .map(|b| {
            let bytes = fixture().tarball.member(&bin_member(b));
            (
                format!("usr/local/bin/{b}"),
                object_name(&Node::file(bytes, true), b),
            )
        })
        .collect();
    for (rel, text) in expected_rendered(v) {
        let base = rel.rsplit('/').next().unwrap();
        objects.push((
            rel.to_owned(),
            object_name(&Node::file(text.as_bytes(), false), base),
        ));
    }
    for (rel, object) in objects {
        let in_rootfs = std::fs::metadata(rootfs.join(&rel)).unwrap();
        let in_store = std::fs::metadata(store.join(&object))
            .unwrap_or_else(|e| panic!("store object {object} for {rel}: {e}"));
        assert_eq!(
            in_rootfs.ino(),
            in_store.ino(),
            "{rel} is not a hardlink to {object}"
        );
        assert!(in_rootfs.nlink() >= 2, "{rel}: nlink {}", in_rootfs.nlink());
    }
}

/// The top-level store entries a master build creates: the six binaries, the seven rendered
/// files, the rootfs and `.kbuild`.
fn expected_store_objects(rootfs: &Path, v: &Vars) -> Vec<String> {
    let mut names = vec![".kbuild".to_owned()];
    for b in MASTER_BINARIES {
        names.push(object_name(
            &Node::file(fixture().tarball.member(&bin_member(b)), true),
            b,
        ));
    }
    for (rel, text) in expected_rendered(v) {
        names.push(object_name(
            &Node::file(text.as_bytes(), false),
            rel.rsplit('/').next().unwrap(),
        ));
    }
    names.push(rootfs.file_name().unwrap().to_str().unwrap().to_owned());
    // The archive itself, kept for offline rebuilds.
    names.push(kept_fixture());
    names.sort();
    names
}

fn generations_json(sb: &Sandbox) -> Vec<serde_json::Value> {
    let r = sb.kbuild(&["generations", "--json"]);
    r.assert_success();
    serde_json::from_str(&r.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. End-to-end builds
// ---------------------------------------------------------------------------------------------

#[test]
fn override_input_builds_master_without_touching_the_lock_file() {
    let server = Server::start();
    server.serve(TARBALL_PATH, &fixture().gz);
    // The repository's recipes and lock file (pinning dl.k8s.io), copied.
    let sb = Sandbox::new();
    let lock_before = sb.lock_bytes().unwrap();
    let url = server.url(TARBALL_PATH);

    let r = sb.kbuild(&[
        "build",
        "master",
        &format!("--override-input={INPUT}={url}"),
    ]);
    r.assert_success();

    let rootfs = r.rootfs();
    assert_eq!(r.stdout, format!("{}\n", rootfs.display()));
    assert_master_rootfs(&sb.store, &rootfs, &SEED);
    assert_eq!(
        r.stderr(),
        format!(
            "{}       Built generation 1\n",
            fetched(&url, fixture().gz.len())
        )
    );
    assert_eq!(
        sb.lock_bytes().unwrap(),
        lock_before,
        "an --override-input build changed the lock file"
    );
    assert_eq!(
        server.requests(),
        vec![format!("GET {TARBALL_PATH}")],
        "one download"
    );
    // The generation records what was actually used: the fixture's hash.
    let gens = generations_json(&sb);
    assert_eq!(gens.len(), 1);
    assert_eq!(
        gens[0]["inputs"],
        serde_json::json!({ INPUT: fixture().sha256 })
    );
    assert_eq!(gens[0]["path"], rootfs.display().to_string());
}

#[test]
fn pinned_build_produces_the_master_rootfs_and_keeps_the_lock() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let lock_before = sb.lock_bytes().unwrap();

    let r = sb.kbuild(&["build", "master"]);
    r.assert_success();
    let rootfs = r.rootfs();
    assert_eq!(r.stdout, format!("{}\n", rootfs.display()));
    assert!(rootfs.is_absolute());
    assert_master_rootfs(&sb.store, &rootfs, &SEED);
    assert_eq!(
        r.stderr(),
        format!(
            "{}       Built generation 1\n",
            fetched(
                "$SERVER/kubernetes-server-linux-amd64.tar.gz",
                fixture().gz.len()
            )
        )
    );
    assert_eq!(sb.lock_bytes().unwrap(), lock_before);
    assert_eq!(top_level(&sb.store), expected_store_objects(&rootfs, &SEED));

    // Override and pin give the same rootfs: only content counts, not where it came from.
    let other = Sandbox::new();
    let r2 = other.kbuild(&[
        "build",
        "master",
        "--override-input",
        &format!("{INPUT}={}", server.url(TARBALL_PATH)),
    ]);
    r2.assert_success();
    assert_eq!(r2.rootfs().file_name(), rootfs.file_name());
}

#[test]
fn relative_store_path_prints_an_absolute_rootfs_path() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let mut c = sb.bare();
    c.args([
        "--store",
        "store",
        "--recipes",
        "recipes",
        "build",
        "master",
    ]);
    let r = sb.run(c);
    r.assert_success();
    let rootfs = r.rootfs();
    assert_eq!(rootfs.parent().unwrap(), sb.dir.join("store"));
    assert_master_rootfs(&sb.store, &rootfs, &SEED);
}

// ---------------------------------------------------------------------------------------------
// 2. Variables
// ---------------------------------------------------------------------------------------------

#[test]
fn set_variables_are_substituted_everywhere() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let rootfs = sb.build_ok(&[
        "--set",
        "IP=10.0.0.5",
        "--set",
        "ETCD2=10.0.0.6",
        "--set=ETCD3=10.0.0.7",
        "--set",
        "SERVICE_CIDR=10.96.0.0/12",
    ]);
    let v = Vars {
        ip: "10.0.0.5",
        etcd2: "10.0.0.6",
        etcd3: "10.0.0.7",
        service_cidr: "10.96.0.0/12",
    };
    assert_master_rootfs(&sb.store, &rootfs, &v);
    let apiserver = read(&rootfs.join("etc/kubernetes/apiserver"));
    assert!(apiserver.contains(
        "KUBE_ETCD_SERVERS=\"--etcd-servers=https://10.0.0.5:2379,https://10.0.0.6:2379,https://10.0.0.7:2379\"\n"
    ));
    assert!(!apiserver.contains("10.72.84."));
    assert!(
        read(&rootfs.join("etc/kubernetes/config"))
            .contains("KUBE_MASTER=\"--master=http://10.0.0.5:8080\"\n")
    );
    // Both components get the same service range.
    assert!(apiserver.contains("--service-cluster-ip-range=10.96.0.0/12\""));
    assert!(
        read(&rootfs.join("etc/kubernetes/controller-manager"))
            .contains(" --service-cluster-ip-range=10.96.0.0/12 ")
    );
    // The generation records the values used.
    let gens = generations_json(&sb);
    assert_eq!(
        gens[0]["variables"],
        serde_json::json!({
            "ETCD2": "10.0.0.6",
            "ETCD3": "10.0.0.7",
            "IP": "10.0.0.5",
            "SERVICE_CIDR": "10.96.0.0/12",
        })
    );
}

#[test]
fn ipv6_service_cidr_of_one_address() {
    // A /128 is a valid CIDR block (a single IPv6 address).
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let r = sb.kbuild(&["build", "master", "--set", "SERVICE_CIDR=fd00::1/128"]);
    r.assert_success();
    let rootfs = r.rootfs();
    assert!(
        read(&rootfs.join("etc/kubernetes/apiserver"))
            .contains("KUBE_SERVICE_ADDRESSES=\"--service-cluster-ip-range=fd00::1/128\"\n")
    );
    assert!(
        read(&rootfs.join("etc/kubernetes/controller-manager"))
            .contains(" --service-cluster-ip-range=fd00::1/128 ")
    );
}

/// IPv6 addresses are bracketed where they are the host part of a URL, bare elsewhere.
#[test]
fn ipv6_addresses_in_urls_are_bracketed() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let r = sb.kbuild(&[
        "build",
        "master",
        "--set",
        "IP=fd00::10",
        "--set",
        "ETCD2=fd00::11",
    ]);
    r.assert_success();
    let rootfs = r.rootfs();
    assert!(
        read(&rootfs.join("etc/kubernetes/config"))
            .contains("KUBE_MASTER=\"--master=http://[fd00::10]:8080\"\n")
    );
    let apiserver = read(&rootfs.join("etc/kubernetes/apiserver"));
    assert!(apiserver.contains(
        "--etcd-servers=https://[fd00::10]:2379,https://[fd00::11]:2379,https://10.72.84.162:2379\""
    ));
    assert!(apiserver.contains("--advertise-address=fd00::10 --bind-address=fd00::10 "));
}

#[test]
fn apiserver_tls_paths_are_unbroken() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let rootfs = sb.build_ok(&[]);
    let apiserver = read(&rootfs.join("etc/kubernetes/apiserver"));
    let args = apiserver
        .lines()
        .find(|l| l.starts_with("KUBE_API_ARGS="))
        .expect("KUBE_API_ARGS line");
    assert!(args.ends_with('"'), "KUBE_API_ARGS does not close: {args}");
    assert!(args.contains(" --tls-cert-file=/etc/kubernetes/ssl/kubernetes.pem "));
    assert!(args.contains(" --etcd-certfile=/etc/kubernetes/ssl/kubernetes.pem "));
    assert!(!apiserver.contains("/etc/ku\n") && !apiserver.contains("/etc/\n"));
    // systemd's own variables reach the unit file literally.
    let unit = read(&rootfs.join("etc/systemd/system/kube-apiserver.service"));
    assert!(unit.contains("        $KUBE_API_ARGS\nRestart=on-failure\n"));
}

#[test]
fn recipe_subsets_and_text_files() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    sb.write_recipe(
        "health",
        "description = \"a health check script\"\n\
         imports = [\"kube-common\"]\n\n\
         [files.\"/usr/local/bin/kube-health\"]\n\
         mode = \"0555\"\n\
         text = \"\"\"\n#!/bin/sh\nexec curl -fsS http://{{ IP }}:8080/healthz\n\"\"\"\n",
    );
    let r = sb.kbuild(&["build", "kube-scheduler", "health", "--set", "IP=10.1.2.3"]);
    r.assert_success();
    let rootfs = r.rootfs();
    let name = rootfs.file_name().unwrap().to_str().unwrap();
    // Recipe names in sorted order: `build health kube-scheduler` is the same build.
    assert_eq!(
        name,
        object_name(&tree_node(&rootfs), "rootfs-health+kube-scheduler")
    );
    let again = sb.kbuild(&[
        "build",
        "health",
        "kube-scheduler",
        "kube-scheduler",
        "--set",
        "IP=10.1.2.3",
    ]);
    again.assert_success();
    assert_eq!(again.rootfs(), rootfs);
    assert!(
        again.stderr().contains("Fresh generation 1 is up to date"),
        "{}",
        again.stderr()
    );
    let v = Vars {
        ip: "10.1.2.3",
        ..SEED
    };
    let script = b"#!/bin/sh\nexec curl -fsS http://10.1.2.3:8080/healthz\n";
    // kube-scheduler's health check comes with its recipe.
    let manifest = "{\n  \"health\": [\n    {\n      \"interval_ms\": 1000,\n      \"probe\": {\n        \"body\": \"ok\",\n        \"kind\": \"http\",\n        \"status\": 200,\n        \"url\": \"http://127.0.0.1:10251/healthz\"\n      },\n      \"settle_ms\": 3000,\n      \"timeout_ms\": 60000,\n      \"unit\": \"kube-scheduler.service\"\n    }\n  ],\n  \"prerequisites\": [],\n  \"version\": 1\n}\n";
    let d = |p: &str| (p.to_owned(), Kind::Dir, 0o555, String::new());
    let f = |p: &str, mode: u32, bytes: &[u8]| (p.to_owned(), Kind::File, mode, blake3_hex(bytes));
    let bin = |b: &str| {
        f(
            &format!("usr/local/bin/{b}"),
            0o555,
            fixture().tarball.member(&bin_member(b)),
        )
    };
    let expected = vec![
        d("."),
        d("etc"),
        d("etc/kubernetes"),
        f(
            "etc/kubernetes/config",
            0o444,
            expected_config(&v).as_bytes(),
        ),
        f(
            "etc/kubernetes/scheduler",
            0o444,
            EXPECTED_SCHEDULER.as_bytes(),
        ),
        d("etc/systemd"),
        d("etc/systemd/system"),
        f(
            "etc/systemd/system/kube-scheduler.service",
            0o444,
            EXPECTED_SCHEDULER_UNIT.as_bytes(),
        ),
        d("etc/systemd/system/multi-user.target.wants"),
        (
            "etc/systemd/system/multi-user.target.wants/kube-scheduler.service".to_owned(),
            Kind::Symlink,
            0o777,
            "../kube-scheduler.service".to_owned(),
        ),
        f("kbuild.json", 0o444, manifest.as_bytes()),
        d("usr"),
        d("usr/local"),
        d("usr/local/bin"),
        f("usr/local/bin/kube-health", 0o555, script),
        bin("kube-proxy"),
        bin("kube-scheduler"),
        bin("kubectl"),
        bin("kubelet"),
    ];
    assert_eq!(shape(&listing(&rootfs)), expected);
    assert_eq!(read(&rootfs.join("kbuild.json")), manifest);
    let gens = generations_json(&sb);
    assert_eq!(
        gens[0]["recipes"],
        serde_json::json!(["health", "kube-scheduler"])
    );
}

/// Several builds racing into one empty store all succeed with the same rootfs, and that
/// rootfs is made of the store's objects (hardlinks), whichever process won each rename.
/// The race is timing-dependent, so a few rounds are run.
#[test]
fn concurrent_builds_into_one_store_agree() {
    let server = Server::start();
    for _round in 0..4 {
        let sb = Sandbox::pinned(&server);
        // With the binaries already in the store, the racers go straight to assembling.
        sb.build_ok(&["--set", "IP=10.9.9.9"]);
        let before = top_level(&sb.store);
        let children: Vec<_> = (0..4).map(|_| sb.spawn(&["build", "master"])).collect();
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        for o in &outputs {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert_eq!(o.stdout, outputs[0].stdout);
        }
        let rootfs =
            Path::new(std::str::from_utf8(&outputs[0].stdout).unwrap().trim_end()).to_owned();
        assert_master_rootfs(&sb.store, &rootfs, &SEED);
        // Each object once, nothing left over.
        let mut expected = expected_store_objects(&rootfs, &SEED);
        expected.extend(before.iter().cloned());
        expected.sort();
        expected.dedup();
        assert_eq!(top_level(&sb.store), expected);
        assert_eq!(generations_json(&sb).len(), 2, "one new generation");
    }
}

#[test]
fn lost_store_object_is_recreated_from_the_kept_archive() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let rootfs = sb.build_ok(&[]);
    let kubectl = object_name(
        &Node::file(fixture().tarball.member(&bin_member("kubectl")), true),
        "kubectl",
    );
    std::fs::remove_file(sb.store.join(&kubectl)).unwrap();
    let r = sb.kbuild(&["build", "master"]);
    r.assert_success();
    assert_eq!(r.rootfs(), rootfs);
    assert_eq!(
        server.request_count(),
        1,
        "the kept archive was read, not fetched again"
    );
    assert_eq!(
        r.stderr(),
        format!(
            "{}     Rebuilt {kubectl} (it was missing from the store)\n    Restored generation 1: its objects are complete again\n",
            fetched(
                &format!("file://$SANDBOX/store/{}", kept_fixture()),
                fixture().gz.len()
            )
        )
    );
    assert_eq!(
        std::fs::read(sb.store.join(&kubectl)).unwrap(),
        fixture().tarball.member(&bin_member("kubectl"))
    );
    assert_eq!(top_level(&sb.store), expected_store_objects(&rootfs, &SEED));
}

// ---------------------------------------------------------------------------------------------
// 3. Reproducibility
// ---------------------------------------------------------------------------------------------

/// A store listing comparable across stores: generation records without their timestamp,
/// and without the store's id.
fn comparable_store(store: &Path) -> Vec<(String, Kind, u32, String)> {
    shape(&listing(store))
        .into_iter()
        .map(|(path, kind, mode, content)| {
            if path.starts_with(".kbuild/profiles/default/") && path.ends_with(".json") {
                let mut g: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(store.join(&path)).unwrap()).unwrap();
                g["created"] = "<created>".into();
                (path, kind, mode, g.to_string())
            } else if path == ".kbuild/id" {
                // Random by design: each store is its own (see docs/store-format.md).
                (path, kind, mode, "<store id>".into())
            } else {
                (path, kind, mode, content)
            }
        })
        .collect()
}

#[test]
fn two_stores_get_identical_rootfs_and_objects() {
    // Two servers (different URLs), two sandboxes (different paths), two stores.
    let (s1, s2) = (Server::start(), Server::start());
    let (a, b) = (Sandbox::pinned(&s1), Sandbox::pinned(&s2));
    assert_ne!(a.dir, b.dir);
    let ra = a.build_ok(&[]);
    let rb = b.build_ok(&[]);
    assert_eq!(ra.file_name(), rb.file_name());
    assert_eq!(shape(&listing(&ra)), shape(&listing(&rb)));
    assert_eq!(comparable_store(&a.store), comparable_store(&b.store));
}

#[rstest::rstest]
#[case::zstd(Compression::Zstd)]
#[case::xz(Compression::Xz)]
#[case::plain_tar(Compression::None)]
fn compression_does_not_change_the_rootfs(#[case] c: Compression) {
    let server = Server::start();
    let reference = Sandbox::pinned(&server);
    let expected = reference.build_ok(&[]);

    let path = "/kubernetes-server-linux-amd64.tar.other";
    server.serve(path, &fixture().tarball.build(c));
    let sb = Sandbox::new();
    let rootfs = sb.build_ok(&["--override-input", &format!("{INPUT}={}", server.url(path))]);
    assert_eq!(rootfs.file_name(), expected.file_name());
    assert_master_rootfs(&sb.store, &rootfs, &SEED);
}

#[test]
fn file_url_override_reads_a_local_copy() {
    let sb = Sandbox::new();
    let copy = sb
        .dir
        .join("mirror dir/kubernetes-server-linux-amd64.tar.gz");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::write(&copy, &fixture().gz).unwrap();
    let url = format!("file://{}", copy.display().to_string().replace(' ', "%20"));
    let r = sb.kbuild(&[
        "build",
        "master",
        "--override-input",
        &format!("{INPUT}={url}"),
    ]);
    r.assert_success();
    assert_eq!(
        r.stderr(),
        format!(
            "{}       Built generation 1\n",
            fetched(
                "file://$SANDBOX/mirror%20dir/kubernetes-server-linux-amd64.tar.gz",
                fixture().gz.len()
            )
        )
    );
    assert_master_rootfs(&sb.store, &r.rootfs(), &SEED);
}

// ---------------------------------------------------------------------------------------------
// 4. A no-op rebuild writes nothing
// ---------------------------------------------------------------------------------------------

#[test]
fn identical_rebuild_writes_nothing_and_fetches_nothing() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let first = sb.kbuild(&["build", "master"]);
    first.assert_success();
    assert_eq!(server.request_count(), 1);

    let store_before = listing(&sb.store);
    let lock_before = sb.lock_bytes().unwrap();
    let lock_mtime = std::fs::metadata(&sb.lock).unwrap().mtime_nsec();

    let second = sb.kbuild(&["build", "master"]);
    second.assert_success();
    assert_eq!(second.stdout, first.stdout);
    assert_eq!(second.stderr(), "       Fresh generation 1 is up to date\n");
    assert_eq!(
        server.request_count(),
        1,
        "the rebuild contacted the server"
    );
    assert_eq!(
        listing(&sb.store),
        store_before,
        "the rebuild changed the store"
    );
    assert_eq!(sb.lock_bytes().unwrap(), lock_before);
    assert_eq!(
        std::fs::metadata(&sb.lock).unwrap().mtime_nsec(),
        lock_mtime
    );

    let gens = generations_json(&sb);
    assert_eq!(gens.len(), 1);
    assert_eq!(gens[0]["number"], 1);
    assert_eq!(gens[0]["path"], first.rootfs().display().to_string());
    // `generations` only reads, too.
    assert_eq!(listing(&sb.store), store_before);
}

#[test]
fn rebuild_after_the_server_is_gone_works_from_the_store() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let first = sb.build_ok(&[]);
    server.serve(TARBALL_PATH, b"gone");
    drop(server);
    let r = sb.kbuild(&["build", "master", "--offline", "--locked"]);
    r.assert_success();
    assert_eq!(r.rootfs(), first);
    assert_eq!(r.stderr(), "       Fresh generation 1 is up to date\n");
}

// ---------------------------------------------------------------------------------------------
// 5. One variable changed
// ---------------------------------------------------------------------------------------------

#[test]
fn changing_ip_makes_a_new_rootfs_sharing_unchanged_objects() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let gen1 = sb.build_ok(&[]);
    let before = listing(&sb.store);
    let objects_before = top_level(&sb.store);

    let r = sb.kbuild(&["build", "master", "--set", "IP=10.72.84.170"]);
    r.assert_success();
    assert_eq!(r.stderr(), "       Built generation 2\n");
    assert_eq!(server.request_count(), 1, "binaries come from the store");
    let gen2 = r.rootfs();
    assert_ne!(gen1, gen2);
    let v = Vars {
        ip: "10.72.84.170",
        ..SEED
    };
    assert_master_rootfs(&sb.store, &gen2, &v);
    // Generation 1 is intact.
    assert_master_rootfs(&sb.store, &gen1, &SEED);

    // Exactly three new objects: the two files that mention IP, and the rootfs.
    let new: Vec<String> = top_level(&sb.store)
        .into_iter()
        .filter(|n| !objects_before.contains(n))
        .collect();
    let mut expected_new = vec![
        gen2.file_name().unwrap().to_str().unwrap().to_owned(),
        object_name(
            &Node::file(expected_apiserver(&v).as_bytes(), false),
            "apiserver",
        ),
        object_name(&Node::file(expected_config(&v).as_bytes(), false), "config"),
    ];
    expected_new.sort();
    assert_eq!(new, expected_new);

    // Everything else in the new rootfs is the very same inode as in the old one.
    for e in listing(&gen2).iter().filter(|e| e.kind == Kind::File) {
        let old = std::fs::metadata(gen1.join(&e.path)).unwrap();
        let changed = ["etc/kubernetes/apiserver", "etc/kubernetes/config"];
        if changed.contains(&e.path.as_str()) {
            assert_ne!(e.ino, old.ino(), "{} should be a new object", e.path);
        } else if e.path != "kbuild.json" {
            assert_eq!(e.ino, old.ino(), "{} should be shared", e.path);
        }
    }
    // Old objects untouched.
    let after = listing(&sb.store);
    for old in &before {
        if old.path == "." || old.path.starts_with(".kbuild") {
            continue;
        }
        let now = after.iter().find(|e| e.path == old.path).unwrap();
        assert_eq!(
            (&now.content, now.mode, now.mtime, now.ino),
            (&old.content, old.mode, old.mtime, old.ino),
            "{}",
            old.path
        );
    }

    // Both generations are listed.
    let gens = generations_json(&sb);
    let summary: Vec<(u64, String, String)> = gens
        .iter()
        .map(|g| {
            (
                g["number"].as_u64().unwrap(),
                g["variables"]["IP"].as_str().unwrap().to_owned(),
                g["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "10.72.84.160".into(), gen1.display().to_string()),
            (2, "10.72.84.170".into(), gen2.display().to_string()),
        ]
    );
    let table = sb.kbuild(&["generations"]);
    table.assert_success();
    let lines: Vec<String> = table.stdout.lines().map(mask_created).collect();
    assert_eq!(
        lines,
        vec![
            "  GEN  CREATED                     SIZE  RECIPES           ROOTFS".to_owned(),
            format!(
                "    1  <created>                1.3 MiB  master            {}",
                gen1.display()
            ),
            format!(
                "    2  <created>                1.3 MiB  master            {}",
                gen2.display()
            ),
            "       changed: IP=10.72.84.170 (was 10.72.84.160)".to_owned(),
        ]
    );
    assert_eq!(table.stderr, "");

    // Going back to the old value is generation 3 with generation 1's rootfs.
    let r = sb.kbuild(&["build", "master"]);
    r.assert_success();
    assert_eq!(r.rootfs(), gen1);
    assert_eq!(r.stderr(), "       Built generation 3\n");
}

/// Replaces an RFC 3339 UTC timestamp (`2025-11-26T23:11:00Z`) at columns 7..27 by `<created>`.
fn mask_created(line: &str) -> String {
    if line.len() > 27 && line.as_bytes()[26] == b'Z' && line.as_bytes()[17] == b'T' {
        let ts = &line[7..27];
        let ok = ts.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
        if ok {
            return format!("{}<created>           {}", &line[..7], &line[27..]);
        }
    }
    line.to_owned()
}

#[test]
fn generations_on_an_empty_store() {
    let sb = Sandbox::new();
    let r = sb.kbuild(&["generations"]);
    r.assert_success();
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr(),
        "no generations yet (no store at `$SANDBOX/store`); run `kbuild build master`\n"
    );
    // Asking did not create a store.
    assert!(!sb.store.exists());
    let r = sb.kbuild(&["generations", "--json"]);
    r.assert_success();
    assert_eq!(r.stdout, "[]\n");
}

// ---------------------------------------------------------------------------------------------
// Changed inputs
// ---------------------------------------------------------------------------------------------

#[test]
fn changed_member_changes_only_that_binary() {
    let server = Server::start();
    let sb = Sandbox::pinned(&server);
    let gen1 = sb.build_ok(&[]);

    let new_apiserver = b"#!fake kube-apiserver v1.6.1\n".to_vec();
    let changed = fixture()
        .tarball
        .clone()
        .with_changed(&bin_member("kube-apiserver"), &new_apiserver);
    let path = "/kubernetes-server-linux-amd64-patched.tar.gz";
    server.serve(path, &changed.build(Compression::Gzip));
    let objects_before = top_level(&sb.store);
    let lock_before = sb.lock_bytes().unwrap();

    let gen2 = sb.build_ok(&["--override-input", &format!("{INPUT}={}", server.url(path))]);
    assert_ne!(gen1, gen2);
    assert_eq!(
        std::fs::read(gen2.join("usr/local/bin/kube-apiserver")).unwrap(),
        new_apiserver
    );
    let new: Vec<String> = top_level(&sb.store)
        .into_iter()
        .filter(|n| !objects_before.contains(n))
        .collect();
    let changed_gz = changed.build(Compression::Gzip);
    let mut expected_new = vec![
        gen2.file_name().unwrap().to_str().unwrap().to_owned(),
        object_name(&Node::file(&new_apiserver, true), "kube-apiserver"),
        // The overridden archive is kept too, under its own pin.
        kept_name(
            "sha256",
            &sha256_hex(&changed_gz),
            "kubernetes-server-linux-amd64.tar.gz",
        ),
    ];
    expected_new.sort();
    assert_eq!(new, expected_new);
    for b in MASTER_BINARIES.iter().filter(|b| **b != "kube-apiserver") {
        let rel = format!("usr/local/bin/{b}");
        assert_eq!(
            std::fs::metadata(gen1.join(&rel)).unwrap().ino(),
            std::fs::metadata(gen2.join(&rel)).unwrap().ino(),
            "{rel}"
        );
    }
    assert_eq!(sb.lock_bytes().unwrap(), lock_before);
    let gens = generations_json(&sb);
    assert_eq!(
        gens[1]["inputs"][INPUT],
        sha256_hex(&changed.build(Compression::Gzip))
    );
}

#[test]
fn unpinned_build_pins_the_input_in_the_default_lock_file() {
    let server = Server::start();
    server.serve(TARBALL_PATH, &fixture().gz);
    let sb = Sandbox::local(&server);
    // No --lock-file: the default is beside the recipes directory.
    let mut c = sb.bare();
    c.arg("--store")
        .arg(&sb.store)
        .arg("--recipes")
        .arg(&sb.recipes)
        .args(["build", "master"]);
    let r = sb.run(c);
    r.assert_success();
    assert_eq!(
        r.stderr(),
        format!(
            "{}     Locking kubernetes-server sha256 {}\n       Wrote `$SANDBOX/flake-like.lock.json`\n       Built generation 1\n",
            fetched(
                "$SERVER/kubernetes-server-linux-amd64.tar.gz",
                fixture().gz.len()
            ),
            fixture().sha256
        )
    );
    let url = server.url(TARBALL_PATH);
    assert_eq!(
        String::from_utf8(sb.lock_bytes().unwrap()).unwrap(),
        lock_json(&[(
            INPUT,
            &[&url],
            &fixture().sha256,
            Some(fixture().gz.len() as u64)
        )])
    );
    assert_master_rootfs(&sb.store, &r.rootfs(), &SEED);
}
