//! The hosts file (issue 10, points 1 and 6): three masters described once, built each into
//! its own profile, sharing every identical object; faults in the file reported at their line
//! with nothing written.

mod common;

use std::path::Path;

use common::world::*;
use common::*;

const HOSTS: &str = include_str!("../hosts.toml");

fn world_with(hosts: &str) -> World {
    let w = World::new();
    std::fs::write(w.sb.dir.join("hosts.toml"), hosts).unwrap();
    w
}

fn line_of(rootfs: &Path, file: &str, key: &str) -> String {
    std::fs::read_to_string(rootfs.join(file))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap()
        .to_owned()
}

/// Every store entry (objects and bookkeeping), for "nothing was written".
fn store_entries(store: &Path) -> Vec<String> {
    if !store.exists() {
        return Vec::new();
    }
    let mut out: Vec<String> = common::walk_any(store)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(store)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    out.sort();
    out
}

/// Object names (the store's top level, without bookkeeping).
fn objects(store: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    out
}

/// The shipped hosts file builds the guide's three masters, each into its profile: their
/// `--etcd-servers` and `--apiserver-count` come from the list, their addresses from their
/// entries; master-1's rootfs is the plain `build master`'s (the single-host default is the
/// seed's values), and the second and third host add only their rendered files and rootfs.
#[test]
fn all_hosts_builds_three_masters_sharing_objects() {
    let w = world_with(HOSTS);
    let plain = w.build(&["master"], &[], 1);
    let before = objects(&w.store());
    let r = w.ok(&["build", "--all-hosts"]);
    let built: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("Built generation"))
        .map(str::trim)
        .collect();
    assert_eq!(
        built,
        vec![
            "Built generation 1 of master-1",
            "Built generation 1 of master-2",
            "Built generation 1 of master-3"
        ]
    );
    let rootfs: Vec<std::path::PathBuf> = r.stdout.lines().map(std::path::PathBuf::from).collect();
    assert_eq!(rootfs.len(), 3);
    assert_eq!(
        rootfs[0], plain.rootfs,
        "master-1 is the seed's single-host master"
    );
    let etcd = "KUBE_ETCD_SERVERS=\"--etcd-servers=https://10.72.84.160:2379,https://10.72.84.161:2379,https://10.72.84.162:2379\"";
    for (r, ip) in rootfs
        .iter()
        .zip(["10.72.84.160", "10.72.84.161", "10.72.84.162"])
    {
        assert_eq!(
            line_of(r, "etc/kubernetes/apiserver", "KUBE_ETCD_SERVERS="),
            etcd
        );
        assert_eq!(
            line_of(r, "etc/kubernetes/apiserver", "KUBE_API_ADDRESS="),
            format!(
                "KUBE_API_ADDRESS=\"--advertise-address={ip} --bind-address={ip} --insecure-bind-address={ip}\""
            )
        );
        assert!(
            line_of(r, "etc/kubernetes/apiserver", "KUBE_API_ARGS=")
                .contains(" --apiserver-count=3 ")
        );
    }
    // master-2 and master-3 add: their apiserver and config files and their rootfs; nothing
    // else (the binaries and the shared files are stored once).
    let after = objects(&w.store());
    let mut added: Vec<String> = after
        .iter()
        .filter(|o| !before.contains(o))
        .map(|o| o[33..].to_owned())
        .collect();
    added.sort();
    assert_eq!(
        added,
        {
            let mut v = vec![
                "apiserver",
                "apiserver",
                "config",
                "config",
                "rootfs-master",
                "rootfs-master",
            ];
            v.sort();
            v
        },
        "{after:?}"
    );
    // A no-op: every host is fresh.
    let r = w.ok(&["build", "--all-hosts"]);
    let fresh: Vec<&str> = r.stderr.lines().map(str::trim).collect();
    assert_eq!(
        fresh,
        vec![
            "Fresh generation 1 of master-1 is up to date",
            "Fresh generation 1 of master-2 is up to date",
            "Fresh generation 1 of master-3 is up to date"
        ]
    );
}

/// Two hosts in the file: `--apiserver-count` and `--etcd-servers` follow the list (only etcd
/// members are listed), `--set` applies to every host built, and `--host` builds only the
/// hosts named.
#[test]
fn templates_read_the_list_and_set_applies_to_every_host() {
    let w = world_with(
        "recipes = [\"master\"]\naddress_variable = \"IP\"\n\n[hosts.a]\naddress = \"10.0.0.1\"\netcd = true\n\n[hosts.b]\naddress = \"10.0.0.2\"\n",
    );
    let r = w.ok(&[
        "build",
        "--host",
        "b",
        "--host",
        "a",
        "--set",
        "SERVICE_CIDR=10.99.0.0/16",
    ]);
    let rootfs: Vec<std::path::PathBuf> = r.stdout.lines().map(std::path::PathBuf::from).collect();
    assert_eq!(rootfs.len(), 2);
    for r in &rootfs {
        assert_eq!(
            line_of(r, "etc/kubernetes/apiserver", "KUBE_ETCD_SERVERS="),
            "KUBE_ETCD_SERVERS=\"--etcd-servers=https://10.0.0.1:2379\""
        );
        assert!(
            line_of(r, "etc/kubernetes/apiserver", "KUBE_API_ARGS=")
                .contains(" --apiserver-count=2 ")
        );
        assert_eq!(
            line_of(r, "etc/kubernetes/apiserver", "KUBE_SERVICE_ADDRESSES="),
            "KUBE_SERVICE_ADDRESSES=\"--service-cluster-ip-range=10.99.0.0/16\""
        );
    }
    // In the order named: b first.
    assert!(
        line_of(&rootfs[0], "etc/kubernetes/apiserver", "KUBE_API_ADDRESS=").contains("=10.0.0.2 ")
    );
    let profiles: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(w.store().join(".kbuild/profiles"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(profiles, vec!["a", "b"]);
    // `generations` names the host's profile.
    let r = w.ok(&["generations", "--host", "a"]);
    assert!(
        r.stdout.starts_with("profile a\n  GEN  CREATED"),
        "{}",
        r.stdout
    );
}

/// `--hosts FILE` and KBUILD_HOSTS name another file.
#[test]
fn another_hosts_file() {
    let w = World::new();
    std::fs::write(w.sb.dir.join("cluster.toml"), HOSTS).unwrap();
    let r = w.run(&["build", "--host", "master-2"]);
    r.assert_error("error: cannot read hosts file `$SANDBOX/hosts.toml`\n  caused by: there is no hosts file `$SANDBOX/hosts.toml`\nhelp: write one (the repository's `hosts.toml` describes the guide's three masters), or name it with `--hosts FILE` (env KBUILD_HOSTS); `kbuild build master` builds without one\n");
    w.ok(&["build", "--host", "master-2", "--hosts", "cluster.toml"]);
    let r = w.run_env(
        &["build", "--host", "master-3"],
        &[("KBUILD_HOSTS", "cluster.toml")],
    );
    r.assert_success();
    assert!(
        r.stderr.contains("Built generation 1 of master-3"),
        "{}",
        r.stderr
    );
}

/// Each fault of the hosts file is named at its line, with the fix, and nothing is written
/// (no store is even created).
#[test]
fn faults_in_the_hosts_file_name_their_line_and_write_nothing() {
    let cases: [(&str, &str, &[&str], &str); 5] = [
        (
            "unknown host",
            HOSTS,
            &["--host", "master-9"],
            "error: cannot read hosts file `$SANDBOX/hosts.toml`\n  caused by: $SANDBOX/hosts.toml:14:1: no host `master-9` in the hosts file\nhelp: hosts: master-1, master-2, master-3; add a `[hosts.master-9]` table, or pass another file with `--hosts FILE`\n",
        ),
        (
            "missing recipe",
            "recipes = [\"master\"]\n\n[hosts.a]\naddress = \"10.0.0.1\"\nrecipes = [\"master\", \"worker\"]\n",
            &["--all-hosts"],
            "error: cannot read hosts file `$SANDBOX/hosts.toml`\n  caused by: $SANDBOX/hosts.toml:5:11: no recipe `worker` in `$SANDBOX/recipes`\nhelp: name a recipe of `$SANDBOX/recipes` (a `NAME.toml` there), or add `worker.toml`\n",
        ),
        (
            "undeclared variable",
            "recipes = [\"master\"]\n\n[hosts.a]\naddress = \"10.0.0.1\"\n\n[hosts.a.variables]\nIP = \"10.0.0.1\"\nETCD_PORT = \"2379\"\n",
            &["--host", "a"],
            "error: cannot build host `a`\n  caused by: $SANDBOX/hosts.toml:8:1: variable `ETCD_PORT` is set for host `a`, but no recipe it builds (master) declares it\nhelp: remove it, or declare it in a recipe; declared: ETCD2, ETCD3, IP, SERVICE_CIDR\n",
        ),
        (
            "same address twice",
            "recipes = [\"master\"]\n\n[hosts.a]\naddress = \"10.0.0.1\"\n\n[hosts.b]\naddress = \"10.0.0.1\"\n",
            &["--host", "a"],
            "error: cannot read hosts file `$SANDBOX/hosts.toml`\n  caused by: $SANDBOX/hosts.toml:7:11: host `b` has address 10.0.0.1, which host `a` has already (line 4)\nhelp: every host needs its own address: correct one of them\n",
        ),
        (
            "not an address",
            "recipes = [\"master\"]\n\n[hosts.a]\naddress = \"master-1.local\"\n",
            &["--all-hosts"],
            "error: cannot read hosts file `$SANDBOX/hosts.toml`\n  caused by: $SANDBOX/hosts.toml:4:11: `master-1.local` (address of host `a`) is not an IP address\n",
        ),
    ];
    for (what, file, args, expected) in cases {
        let w = world_with(file);
        let mut a = vec!["build"];
        a.extend_from_slice(args);
        let r = w.run(&a);
        assert_eq!(r.stderr(), expected, "{what}");
        assert_eq!(r.code, Some(1), "{what}");
        assert_eq!(
            store_entries(&w.store()),
            Vec::<String>::new(),
            "{what}: nothing written"
        );
    }
}

/// An `--override-input` file is read once for all the hosts of one command (it is the same
/// file), on a cold store: the first host reads it, the others reuse what it unpacked.
#[test]
fn an_override_is_read_once_for_all_hosts() {
    let w = world_with(HOSTS);
    let url = write_fixture(&w.sb, "mirror", &fixture().gz);
    let r = w.ok(&[
        "build",
        "--all-hosts",
        "--override-input",
        &format!("kubernetes-server={url}"),
    ]);
    let reads: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("Reading "))
        .collect();
    assert_eq!(reads.len(), 1, "stderr:\n{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 3);
}

/// Finding 2: `--set` of a variable the hosts file sets per host (the address) is refused
/// for several hosts at once, naming where it is set per host; for one host, a `--set`
/// address that another host has is refused naming both; nothing is written either way.
#[test]
fn set_of_a_per_host_variable_is_refused_for_several_hosts_or_a_taken_address() {
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "all hosts, the address",
            &["--all-hosts", "--set", "IP=10.72.84.170"],
            "error: cannot build hosts master-1, master-2, master-3\n  caused by: $SANDBOX/hosts.toml:15:11: `--set IP=…` would give every host built (master-1, master-2, master-3) the same `IP`, which the hosts file sets per host (here for host `master-1`)\nhelp: build one host with `kbuild build --host NAME --set IP=…`, or edit `$SANDBOX/hosts.toml`\n",
        ),
        (
            "two hosts, the address",
            &[
                "--host",
                "master-3",
                "--host",
                "master-2",
                "--set",
                "IP=10.72.84.170",
            ],
            "error: cannot build hosts master-3, master-2\n  caused by: $SANDBOX/hosts.toml:23:11: `--set IP=…` would give every host built (master-3, master-2) the same `IP`, which the hosts file sets per host (here for host `master-3`)\nhelp: build one host with `kbuild build --host NAME --set IP=…`, or edit `$SANDBOX/hosts.toml`\n",
        ),
        (
            "one host, another host's address",
            &["--host", "master-2", "--set", "IP=10.72.84.160"],
            "error: cannot build host `master-2`\n  caused by: $SANDBOX/hosts.toml:15:11: `--set IP=10.72.84.160` gives host `master-2` the address 10.72.84.160, which host `master-1` has\nhelp: every host needs its own address: set another one, or edit `$SANDBOX/hosts.toml`\n",
        ),
    ];
    for (what, args, expected) in cases {
        let w = world_with(HOSTS);
        let mut a = vec!["build"];
        a.extend_from_slice(args);
        let r = w.run(&a);
        assert_eq!(r.stderr(), expected, "{what}");
        assert_eq!(r.code, Some(1), "{what}");
        assert_eq!(
            store_entries(&w.store()),
            Vec::<String>::new(),
            "{what}: nothing written"
        );
    }
    // A shared variable still applies to every host, and one host may take a new address.
    let w = world_with(HOSTS);
    w.ok(&["build", "--all-hosts", "--set", "SERVICE_CIDR=10.99.0.0/16"]);
    let r = w.ok(&["build", "--host", "master-2", "--set", "IP=10.72.84.170"]);
    let rootfs = std::path::PathBuf::from(r.stdout.trim());
    assert!(
        line_of(&rootfs, "etc/kubernetes/apiserver", "KUBE_API_ADDRESS=")
            .contains("=10.72.84.170 ")
    );
    // The hosts list agrees: master-2's etcd member is at its new address.
    assert_eq!(
        line_of(&rootfs, "etc/kubernetes/apiserver", "KUBE_ETCD_SERVERS="),
        "KUBE_ETCD_SERVERS=\"--etcd-servers=https://10.72.84.160:2379,https://10.72.84.170:2379,https://10.72.84.162:2379\""
    );
}
