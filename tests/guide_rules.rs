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

/// Finding 8: a check reads a flag however pflag reads it — `--flag value` as well as
/// `--flag=value` — and a boolean check takes every value Go's ParseBool takes.
#[test]
fn a_flag_spelled_with_a_space_or_a_go_boolean_is_read_as_the_component_reads_it() {
    let w = World::new();
    // The review's example: the space form no longer hides a loopback bind address.
    with_flags(
        &w,
        "--advertise-address=10.72.84.160 --bind-address 127.0.0.1",
    );
    expect(
        &w,
        &["build", "bad"],
        "bad",
        "kube-apiserver",
        "bind-address",
        "this build: `--bind-address` = `127.0.0.1` is a loopback address",
    );
    with_flags(&w, "--runtime-config batch/v2alpha1");
    expect(
        &w,
        &["build", "bad"],
        "bad",
        "kube-apiserver",
        "runtime-config",
        "this build: `--runtime-config` = `batch/v2alpha1` lacks `rbac.authorization.k8s.io/v1beta1`",
    );
    // A value flag given without a value cannot pass a value check.
    with_flags(&w, "--bind-address --secure-port=6443");
    expect(
        &w,
        &["build", "bad"],
        "bad",
        "kube-apiserver",
        "bind-address",
        "this build: `--bind-address` is given without a value (write `--bind-address=VALUE`)",
    );
    // Boolean checks: `=1` and `=T` are true, `=0` is false, `=yes` is no boolean, and the
    // space form gives the flag no value (pflag reads `--leader-elect` as true, `false` as an
    // argument).
    let hosts = HOSTS.replace("recipes = [\"master\"]", "recipes = [\"bad\"]");
    std::fs::write(w.sb.dir.join("hosts.toml"), hosts).unwrap();
    let scheduler = w.sb.recipes.join("templates/scheduler.j2");
    let text = std::fs::read_to_string(&scheduler).unwrap();
    let spell = |s: &str| {
        std::fs::write(
            &scheduler,
            text.replace("--leader-elect=true ", &format!("{s} ")),
        )
        .unwrap()
    };
    with_flags(&w, "--v=2");
    for ok in ["--leader-elect=1", "--leader-elect=T", "--leader-elect"] {
        spell(ok);
        w.ok(&["build", "--host", "master-3"]);
    }
    let fails = [
        (
            "--leader-elect=0",
            "`--leader-elect` = `false`, it must be `true`",
        ),
        (
            "--leader-elect=yes",
            "`--leader-elect=yes`: `yes` is not a boolean (write `--leader-elect=true` or `--leader-elect=false`)",
        ),
        (
            "--leader-elect false",
            "`--leader-elect false`: a boolean flag takes its value only after `=`; the component reads `--leader-elect` as `true` and `false` as a stray argument (write `--leader-elect=false`)",
        ),
    ];
    for (spelled, problem) in fails {
        spell(spelled);
        expect(
            &w,
            &["build", "--host", "master-3"],
            "host `master-3`",
            "kube-scheduler",
            "leader-elect",
            &format!("host `master-3`: {problem}"),
        );
    }
}
