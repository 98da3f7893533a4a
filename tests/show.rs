//! `kbuild show` (issue 13 point 5): a generation's profile, recipes, variables and files with
//! their origins; `generations` with each generation's closure size.

mod common;

use common::world::World;

/// The `created` line's timestamp replaced (it is the build's wall-clock time).
fn masked(stdout: &str) -> String {
    stdout
        .lines()
        .map(|l| {
            if l.starts_with("created    ") {
                "created    <created>".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn world_with_extra() -> World {
    let w = World::new();
    w.master_plus("extra", &[("/etc/motd", "hello\n")]);
    w
}

#[test]
fn show_lists_the_newest_generation_with_origins() {
    let w = world_with_extra();
    w.build(&["extra"], &[], 1);
    let r = w.ok(&["show"]);
    let out = masked(&r.stdout());
    assert_eq!(out, EXPECTED_SHOW);
    assert_eq!(r.stderr, "");
}

const EXPECTED_SHOW: &str = "\
profile    default
generation 1
created    <created>
size       1.3 MiB
rootfs     $SANDBOX/store/e579ded74b0bf65c338413935394b75e-rootfs-extra
recipes    extra
variables
  ETCD2=10.72.84.161
  ETCD3=10.72.84.162
  IP=10.72.84.160
  SERVICE_CIDR=10.254.0.0/16
files
  dir                  /etc
  dir                  /etc/kubernetes
  file           1625  /etc/kubernetes/apiserver  from template templates/apiserver.j2
  file            681  /etc/kubernetes/config  from template templates/config.j2
  file            516  /etc/kubernetes/controller-manager  from template templates/controller-manager.j2
  file            150  /etc/kubernetes/scheduler  from template templates/scheduler.j2
  file              6  /etc/motd  from literal text
  dir                  /etc/systemd
  dir                  /etc/systemd/system
  file            647  /etc/systemd/system/kube-apiserver.service  from template templates/kube-apiserver.service.j2
  file            457  /etc/systemd/system/kube-controller-manager.service  from template templates/kube-controller-manager.service.j2
  file            428  /etc/systemd/system/kube-scheduler.service  from template templates/kube-scheduler.service.j2
  dir                  /etc/systemd/system/multi-user.target.wants
  symlink          25  /etc/systemd/system/multi-user.target.wants/kube-apiserver.service -> ../kube-apiserver.service  from [Install] link of kube-apiserver.service
  symlink          34  /etc/systemd/system/multi-user.target.wants/kube-controller-manager.service -> ../kube-controller-manager.service  from [Install] link of kube-controller-manager.service
  symlink          25  /etc/systemd/system/multi-user.target.wants/kube-scheduler.service -> ../kube-scheduler.service  from [Install] link of kube-scheduler.service
  file           1088  /kbuild.json  from kbuild manifest
  dir                  /usr
  dir                  /usr/local
  dir                  /usr/local/bin
  executable  1348599  /usr/local/bin/kube-apiserver  from input kubernetes-server member kubernetes/server/bin/kube-apiserver
  executable     1882  /usr/local/bin/kube-controller-manager  from input kubernetes-server member kubernetes/server/bin/kube-controller-manager
  executable     1388  /usr/local/bin/kube-proxy  from input kubernetes-server member kubernetes/server/bin/kube-proxy
  executable     1540  /usr/local/bin/kube-scheduler  from input kubernetes-server member kubernetes/server/bin/kube-scheduler
  executable     1274  /usr/local/bin/kubectl  from input kubernetes-server member kubernetes/server/bin/kubectl
  executable     1274  /usr/local/bin/kubelet  from input kubernetes-server member kubernetes/server/bin/kubelet";

#[test]
fn show_json_parses_with_version_1() {
    let w = world_with_extra();
    w.build(&["extra"], &[], 1);
    let r = w.ok(&["show", "1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["profile"], "default");
    assert_eq!(v["number"], 1);
    assert_eq!(v["recipes"], serde_json::json!(["extra"]));
    assert_eq!(v["variables"]["IP"], "10.72.84.160");
    assert_eq!(v["origins_recorded"], true);
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 26);
    let find = |p: &str| files.iter().find(|f| f["path"] == p).unwrap().clone();
    assert_eq!(
        find("etc/motd"),
        serde_json::json!({"path": "etc/motd", "kind": "file", "size": 6, "target": null,
            "origin": {"from": "text"}, "origin_text": "literal text"})
    );
    assert_eq!(
        find("usr/local/bin/kubelet"),
        serde_json::json!({"path": "usr/local/bin/kubelet", "kind": "executable", "size": 1274,
            "target": null,
            "origin": {"from": "input", "input": "kubernetes-server",
                       "member": "kubernetes/server/bin/kubelet"},
            "origin_text": "input kubernetes-server member kubernetes/server/bin/kubelet"})
    );
    assert_eq!(
        find("etc/systemd/system/multi-user.target.wants/kube-scheduler.service"),
        serde_json::json!({
            "path": "etc/systemd/system/multi-user.target.wants/kube-scheduler.service",
            "kind": "symlink", "size": 25, "target": "../kube-scheduler.service",
            "origin": {"from": "install", "unit": "kube-scheduler.service"},
            "origin_text": "[Install] link of kube-scheduler.service"})
    );
    assert_eq!(find("usr")["kind"], "dir");
    // The same closure size `generations --json` reports.
    let g: serde_json::Value =
        serde_json::from_str(&w.ok(&["generations", "--json"]).stdout).unwrap();
    assert_eq!(g[0]["size"], v["size"]);
    assert_eq!(
        g[0].get("origins"),
        None,
        "origins are show's, not generations'"
    );
    assert!(v["size"].as_u64().unwrap() > 1_348_599);
}

#[test]
fn show_defaults_to_the_roots_generation_and_rejects_unknown_numbers() {
    let w = world_with_extra();
    w.build(&["extra"], &[], 1);
    w.build(&["master"], &[], 2);
    let r = w.ok(&["show", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["number"], 2, "no switch yet: the newest");
    w.ok(&["switch", "1"]);
    let v: serde_json::Value = serde_json::from_str(&w.ok(&["show", "--json"]).stdout).unwrap();
    assert_eq!(v["number"], 1, "the root is on 1");
    assert_eq!(v["recipes"], serde_json::json!(["extra"]));

    let r = w.run(&["show", "7"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr(),
        "error: profile `default` has no generation 7; it has 1, 2\n\
         help: run `kbuild show 2` (or `kbuild generations`)\n"
    );
    let r = w.run(&["show", "--profile", "nope"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(
        r.stderr(),
        "error: profile `nope` has no generations\n\
         help: run `kbuild generations --all` to see the profiles that have some, or `kbuild build master` to make one\n"
    );
}

#[test]
fn generation_built_before_origins_says_unknown() {
    let w = world_with_extra();
    w.build(&["extra"], &[], 1);
    // What an older kbuild wrote: the same record without `origins`.
    let record = w.store().join(".kbuild/profiles/default/1.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert!(v.as_object_mut().unwrap().remove("origins").is_some());
    std::fs::write(&record, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let out = masked(&w.ok(&["show"]).stdout());
    let files: Vec<&str> = out.lines().skip_while(|l| *l != "files").collect();
    assert_eq!(
        files[7],
        "  file              6  /etc/motd  from unknown (built before kbuild recorded origins)"
    );
    assert_eq!(files[1], "  dir                  /etc");
    let v: serde_json::Value = serde_json::from_str(&w.ok(&["show", "--json"]).stdout).unwrap();
    assert_eq!(v["origins_recorded"], false);
    assert_eq!(v["files"][4]["origin"], serde_json::Value::Null);
    assert_eq!(
        v["files"][4]["origin_text"],
        "unknown (built before kbuild recorded origins)"
    );
}

#[test]
fn generations_shows_each_size_beside_its_date() {
    let w = world_with_extra();
    w.build(&["extra"], &[], 1);
    let r = w.ok(&["generations"]);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "  GEN  CREATED                     SIZE  RECIPES           ROOTFS"
    );
    assert_eq!(&lines[1][27..51], "     1.3 MiB  extra     ");
}
