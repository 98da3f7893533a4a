//! The guide's rules as checks (issue 10, point 5): data in the recipes (`[[checks]]`), each
//! failing a build with the rule, the host and the value, and writing nothing.

mod common;

use common::world::*;

const HOSTS: &str = include_str!("../hosts.toml");

/// `recipes/NAME.toml:LINE:1`, the `[[checks]]` header of rule `rule`.
fn at(w: &World, recipe: &str, rule: &str) -> String {
    let text = std::fs::read_to_string(w.sb.recipes.join(format!("{recipe}.toml"))).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .iter()
        .position(|l| *l == format!("rule = \"{rule}\""))
        .unwrap_or_else(|| panic!("no rule {rule} in {recipe}"));
    let header = (0..i).rev().find(|j| lines[*j] == "[[checks]]").unwrap();
    format!("$SANDBOX/recipes/{recipe}.toml:{}:1", header + 1)
}

/// The reason line the recipe gives for `rule`.
fn reason(w: &World, recipe: &str, rule: &str) -> String {
    let text = std::fs::read_to_string(w.sb.recipes.join(format!("{recipe}.toml"))).unwrap();
    let after = &text[text.find(&format!("rule = \"{rule}\"")).unwrap()..];
    let line = after.lines().find(|l| l.starts_with("reason = ")).unwrap();
    let quoted = &line["reason = ".len()..];
    quoted[1..quoted.len() - 1].replace("\\\"", "\"")
}

fn expect(w: &World, args: &[&str], what: &str, recipe: &str, rule: &str, problem: &str) {
    let before = std::fs::read_dir(&w.sb.store)
        .map(|d| d.count())
        .unwrap_or(0);
    let r = w.run(args);
    r.assert_error(&format!(
        "error: cannot build {what}\n  caused by: {}: check `{rule}` fails for {problem}\nhelp: {} (rule `{rule}`); correct the value (`--set`, the hosts file or the recipe) and build again\n",
        at(w, recipe, rule),
        reason(w, recipe, rule)
    ));
    let after = std::fs::read_dir(&w.sb.store)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(before, after, "{rule}: nothing written");
}

/// A recipe `bad` = master plus a file holding `flags` (checks read every rendered file).
fn with_flags(w: &World, flags: &str) {
    w.master_plus(
        "bad",
        &[("/etc/kubernetes/extra", &format!("EXTRA=\"{flags}\"\n"))],
    );
}

#[test]
fn each_rule_of_the_guide_fails_a_plain_build() {
    let w = World::new();
    with_flags(&w, "--admission-control=NamespaceLifecycle,LimitRanger");
    expect(
        &w,
        &["build", "bad"],
        "bad",
        "kube-apiserver",
        "ServiceAccount",
        "this build: `--admission-control` = `NamespaceLifecycle,LimitRanger` lacks `ServiceAccount`",
    );
    expect(
        &w,
        &["build", "master", "--set", "IP=127.0.0.1"],
        "master",
        "kube-apiserver",
        "bind-address",
        "this build: `--bind-address` = `127.0.0.1` is a loopback address",
    );
    with_flags(&w, "--insecure-bind-address=::1");
    expect(
        &w,
        &["build", "bad"],
        "bad",
        "kube-apiserver",
        "insecure-bind-address",
        "this build: `--insecure-bind-address` = `::1` is a loopback address",
    );
    expect(
        &w,
        &["build", "master", "--set", "SERVICE_CIDR=10.72.84.0/24"],
        "master",
        "kube-apiserver",
        "service-cluster-ip-range",
        "this build: `--service-cluster-ip-range` = `10.72.84.0/24` contains 10.72.84.160 (of `--etcd-servers`)",
    );
    with_flags(&w, "--service-cluster-ip-range=10.254.0.1/16");
    expect(
        &w,
        &["build", "bad"],
        "bad",
        "kube-apiserver",
        "service-cluster-ip-range",
        "this build: `--service-cluster-ip-range` = `10.254.0.1/16` is not a network CIDR (an address with its host bits zero, `/` and a prefix length)",
    );
    with_flags(
        &w,
        "--kubelet-client-certificate=/etc/kubernetes/ssl/kubelet.pem",
    );
    expect(
        &w,
        &["build", "bad"],
        "bad",
        "kube-apiserver",
        "kubelet TLS bootstrap",
        "this build: `--experimental-bootstrap-token-auth` is set together with `--kubelet-client-certificate`",
    );
    with_flags(&w, "--runtime-config=batch/v2alpha1");
    expect(
        &w,
        &["build", "bad"],
        "bad",
        "kube-apiserver",
        "runtime-config",
        "this build: `--runtime-config` = `batch/v2alpha1` lacks `rbac.authorization.k8s.io/v1beta1`",
    );
    expect(
        &w,
        &["build", "master", "--set", "ETCD3=10.72.84.161"],
        "master",
        "kube-apiserver",
        "etcd-servers",
        "this build: `--etcd-servers` = `https://10.72.84.160:2379,https://10.72.84.161:2379,https://10.72.84.161:2379` names 10.72.84.161 twice",
    );
    // The seed's values pass every rule.
    w.build(&["master"], &[], 1);
}

#[test]
fn the_hosts_file_rules_name_the_host() {
    let w = World::new();
    let hosts = |recipe: &str| {
        HOSTS.replace(
            "recipes = [\"master\"]",
            &format!("recipes = [\"{recipe}\"]"),
        )
    };
    std::fs::write(w.sb.dir.join("hosts.toml"), hosts("bad")).unwrap();
    with_flags(&w, "--apiserver-count=2");
    expect(
        &w,
        &["build", "--all-hosts"],
        "host `master-1`",
        "kube-apiserver",
        "apiserver-count",
        "host `master-1`: `--apiserver-count` = `2`, but the hosts file has 3 masters",
    );
    with_flags(
        &w,
        "--etcd-servers=https://10.72.84.160:2379,https://10.72.84.162:2379",
    );
    expect(
        &w,
        &["build", "--host", "master-2"],
        "host `master-2`",
        "kube-apiserver",
        "etcd-servers",
        "host `master-2`: `--etcd-servers` = `https://10.72.84.160:2379,https://10.72.84.162:2379` misses 10.72.84.161 (member `master-2` of the hosts file)",
    );
    // Three masters need leader election; one master alone (the plain build) does not.
    std::fs::write(w.sb.dir.join("hosts.toml"), hosts("master")).unwrap();
    let scheduler = w.sb.recipes.join("templates/scheduler.j2");
    let text = std::fs::read_to_string(&scheduler).unwrap();
    std::fs::write(&scheduler, text.replace("--leader-elect=true ", "")).unwrap();
    expect(
        &w,
        &["build", "--host", "master-3"],
        "host `master-3`",
        "kube-scheduler",
        "leader-elect",
        "host `master-3`: `--leader-elect` is not set",
    );
    w.build(&["master"], &[], 1);
    // A fault in the last host writes nothing for the first ones either.
    std::fs::write(&scheduler, text).unwrap();
    std::fs::write(
        w.sb.dir.join("hosts.toml"),
        HOSTS.replace("address = \"10.72.84.162\"", "address = \"10.254.0.9\""),
    )
    .unwrap();
    expect(
        &w,
        &["build", "--all-hosts"],
        "host `master-1`",
        "kube-apiserver",
        "service-cluster-ip-range",
        "host `master-1`: `--service-cluster-ip-range` = `10.254.0.0/16` contains 10.254.0.9 (of host `master-3`)",
    );
    assert!(!w.sb.store.join(".kbuild/profiles/master-1").exists());
}
