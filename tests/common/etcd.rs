//! etcd in the real-systemd tier: what `tests/systemd.rs` and `tests/health_gate.rs` share.
//! A booted container (see [`super::container`]) with `/kb` bound from a temp dir on the host
//! (recipes, store, and `etcd.tar`, the data tar of Debian's `etcd-server` package) and the
//! kbuild under test at `/opt/kbuild/kbuild`; the recipe parts that run etcd as a unit; and
//! kbuild and `curl` run inside.

use std::path::PathBuf;

use super::container::{self, Container, Out};
use super::world::kbuild_bin;

/// kbuild inside the container, on root `/`, with the store and recipes under `/kb`.
pub const KB: &str = "/opt/kbuild/kbuild --store /kb/store --recipes /kb/recipes --root /";

/// etcd's usual peer URL; anything else that is not a URL (`bogus`) makes etcd exit at start.
pub const PEER: &str = "http://127.0.0.1:2380";

/// Whether the tier cannot run here: says why on stderr and returns `true` (the test then
/// passes); with `CI` set the tier must run, so this panics instead.
pub fn skipped() -> bool {
    let Some(why) = container::unavailable() else {
        return false;
    };
    assert!(
        std::env::var_os("CI").is_none(),
        "the real-systemd tier must run in CI, but: {why}"
    );
    eprintln!("skipped: the real-systemd tier cannot run here: {why}");
    true
}

/// A booted container with etcd's package data at `/kb/etcd.tar`; powered off when dropped
/// (the container first, then the temp dir holding its tree).
pub struct EtcdTier {
    pub c: Container,
    /// `/kb` on the host side.
    pub kbdir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl EtcdTier {
    /// Copies the cached base tree into a temp dir named `prefix…` under `/var/tmp`, writes
    /// `/kb/etcd.tar`, runs `host_setup` (a shell script, run in `/kb` on the host: more
    /// inputs) and boots the container as `name-PID`.
    pub fn boot(prefix: &str, name: &str, host_setup: &str) -> EtcdTier {
        let (base, deb) = container::prepare("etcd-server");
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/var/tmp")
            .unwrap();
        let kbdir = tmp.path().join("kb");
        std::fs::create_dir_all(kbdir.join("recipes")).unwrap();
        container::host_sh(&format!(
            "set -e; cd '{}'; dpkg-deb --fsys-tarfile '{}' > etcd.tar\n{host_setup}",
            kbdir.display(),
            deb.display()
        ));
        let tree = tmp.path().join("tree");
        container::host_sh(&format!("cp -a '{}' '{}'", base.display(), tree.display()));
        let binds = vec![
            format!("--bind={}:/kb", kbdir.display()),
            format!("--bind-ro={}:/opt/kbuild/kbuild", kbuild_bin().display()),
        ];
        let c = Container::boot(&tree, &format!("{name}-{}", std::process::id()), &binds);
        EtcdTier {
            c,
            kbdir,
            _tmp: tmp,
        }
    }

    /// Writes recipe `name` (`/kb/recipes/NAME.toml`).
    pub fn recipe(&self, name: &str, text: &str) {
        std::fs::write(self.kbdir.join(format!("recipes/{name}.toml")), text).unwrap();
    }

    /// Runs `kbuild ARGS` inside the container.
    pub fn kb(&self, args: &str) -> Out {
        self.c.sh(&format!("{KB} {args}"))
    }

    /// Builds recipe `name`, which must give generation `number`.
    #[track_caller]
    pub fn build(&self, name: &str, number: u64) {
        let o = self.kb(&format!("build {name}"));
        assert_eq!(o.code, Some(0), "build {name}: {o:?}");
        assert!(
            o.stderr.contains(&format!("Built generation {number}")),
            "expected generation {number}: {o:?}"
        );
    }

    /// etcd's health endpoint on `port` inside the container: `Some(body)`, or `None` when
    /// nothing listens (curl exit 7, connection refused); any other curl failure panics.
    pub fn health(&self, port: u16) -> Option<String> {
        let o = self.c.sh(&format!(
            "curl -sS --max-time 5 http://127.0.0.1:{port}/health"
        ));
        match o.code {
            Some(0) => Some(o.stdout),
            Some(7) => None,
            _ => panic!("curl on port {port}: {o:?}"),
        }
    }
}

/// The recipe text that runs etcd as `etcd.service`: the binary from input `input`
/// (`file:///kb/INPUT.tar`), its env file listening for clients on `port` (a number, or a
/// template such as `{{ PORT }}`) and for peers on `peer`, and the unit, `Type=notify` with
/// `Restart=on-failure`, with `service_extra` added to `[Service]` and `install_extra` to
/// `[Install]`. A test appends its other tables (variables, drop-ins, `[[health]]`).
pub fn etcd_recipe(
    input: &str,
    port: &str,
    peer: &str,
    service_extra: &str,
    install_extra: &str,
) -> String {
    let env = format!(
        "ETCD_NAME=kb\nETCD_DATA_DIR=/var/lib/kb-etcd\n\
         ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:{port}\n\
         ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:{port}\n\
         ETCD_LISTEN_PEER_URLS={peer}\n\
         ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:2380\n\
         ETCD_INITIAL_CLUSTER=kb=http://127.0.0.1:2380\n"
    );
    let unit = format!(
        "[Unit]\nDescription=etcd managed by kbuild\nAfter=network.target\n\n\
         [Service]\nType=notify\nEnvironmentFile=/etc/etcd/etcd.env\n\
         ExecStart=/usr/local/bin/etcd\nRestart=on-failure\n{service_extra}\n\
         [Install]\nWantedBy=multi-user.target\n{install_extra}"
    );
    format!(
        "[inputs.{input}]\nurl = \"file:///kb/{input}.tar\"\n\n\
         [files.\"/usr/local/bin/etcd\"]\ninput = \"{input}\"\nmember = \"usr/bin/etcd\"\nmode = \"0555\"\n\n\
         [files.\"/etc/etcd/etcd.env\"]\nformat = \"env\"\ntext = {env:?}\n\n\
         [files.\"/etc/systemd/system/etcd.service\"]\ntext = {unit:?}\n\n"
    )
}
