# Shared by bench/health.sh and bench/switch-live.sh (sourced, not run): the real-systemd
# tier's container (see tests/common/container.rs) with etcd from Debian's `etcd-server`
# package. Sets `BENCH_DIR` (bench/), `ROOT` (the repository), `CACHE`, `KB`
# (the kbuild binary: KBUILD_BIN, else target/release/kbuild, else target/debug/kbuild) and
# `K` (kbuild's command line inside the container), and defines:
#
#   die MESSAGE...        print `bench: MESSAGE` and exit 1
#   ct_prepare NAME       check root and tools; make the cached base tree and .deb (once,
#                         under the test tier's lock); a fresh `$WORK` (/var/tmp/NAME.XXXXXX,
#                         removed on exit) with `$WORK/kb/etcd.tar` and the tree to boot
#   ct_boot NAME          boot the container (`/kb` bound from `$WORK/kb`, kbuild at
#                         /opt/kbuild/kbuild) and wait until systemd says `running`; powered
#                         off on exit
#   in_ct COMMAND...      run a command inside the container
#   etcd_recipe PORT      write `$WORK/kb/recipes/etcd.toml`: etcd listening for clients on
#                         PORT as `etcd.service`, with stdin appended (more tables)
#
# Knob: KBUILD_TEST_CACHE (default /var/cache/kbuild-test: base tree and .deb, made once).

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
CACHE=${KBUILD_TEST_CACHE:-/var/cache/kbuild-test}
KB=${KBUILD_BIN:-$ROOT/target/release/kbuild}
[[ -x $KB ]] || KB=$ROOT/target/debug/kbuild
K="/opt/kbuild/kbuild --store /kb/store --recipes /kb/recipes --root /"
WORK=
NSPAWN=
PID1=

die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

in_ct() { nsenter -t "$PID1" -a -- "$@"; }

ct_cleanup() {
    if [[ -n $NSPAWN ]] && kill -0 "$NSPAWN" 2>/dev/null; then
        in_ct systemctl poweroff >/dev/null 2>&1 || true
        for _ in $(seq 100); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.1; done
        kill "$NSPAWN" 2>/dev/null || true
        wait "$NSPAWN" 2>/dev/null || true
    fi
    [[ -z $WORK ]] || rm -rf "$WORK"
}

ct_prepare() {
    [[ $(id -u) == 0 ]] || die "run as root (systemd-nspawn needs it)"
    [[ -x $KB ]] || die "no kbuild binary (cargo build --release)"
    for t in systemd-nspawn nsenter debootstrap dpkg-deb flock; do
        command -v "$t" >/dev/null || die "$t is required (apt-get install systemd-container debootstrap)"
    done
    # The cached base tree and etcd package, as the test tier makes them (under the same lock).
    mkdir -p "$CACHE/debs"
    (
        flock 9
        if [[ ! -x $CACHE/bookworm/usr/lib/systemd/systemd ]]; then
            rm -rf "$CACHE"/bookworm.tmp.* "$CACHE/bookworm"
            T=$(mktemp -d "$CACHE/bookworm.tmp.XXXXXX")
            chmod 755 "$T" # the container's `/`: mktemp's 0700 would shut out dbus
            debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,curl bookworm "$T" \
                http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 || die "debootstrap failed (see $CACHE/debootstrap.log)"
            mv -T "$T" "$CACHE/bookworm"
        fi
        if ! ls "$CACHE"/debs/etcd-server_*.deb >/dev/null 2>&1; then
            (cd "$CACHE/debs" && apt-get download etcd-server >/dev/null 2>&1) || die "apt-get download etcd-server failed"
        fi
    ) 9>"$CACHE/.lock"
    local deb
    deb=$(ls "$CACHE"/debs/etcd-server_*.deb | head -n1)
    WORK=$(mktemp -d "/var/tmp/$1.XXXXXX")
    trap ct_cleanup EXIT
    mkdir -p "$WORK/kb/recipes"
    dpkg-deb --fsys-tarfile "$deb" >"$WORK/kb/etcd.tar"
    cp -a "$CACHE/bookworm" "$WORK/tree"
}

ct_boot() {
    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn --boot --register=no --keep-unit --private-network \
        -D "$WORK/tree" -M "$1-$$" --bind="$WORK/kb:/kb" --bind-ro="$KB:/opt/kbuild/kbuild" \
        >"$WORK/nspawn.log" 2>&1 </dev/null &
    NSPAWN=$!
    for _ in $(seq 300); do
        PID1=$(cat /proc/"$NSPAWN"/task/*/children 2>/dev/null | awk '{print $1; exit}')
        [[ -n $PID1 ]] && in_ct systemctl is-system-running 2>/dev/null | grep -qx running && break
        sleep 0.1
    done
    [[ $(in_ct systemctl is-system-running 2>/dev/null) == running ]] || die "the container did not boot: $(cat "$WORK/nspawn.log")"
}

etcd_recipe() {
    {
        cat <<EOR
[inputs.etcd]
url = "file:///kb/etcd.tar"

[files."/usr/local/bin/etcd"]
input = "etcd"
member = "usr/bin/etcd"
mode = "0555"

[files."/etc/etcd/etcd.env"]
format = "env"
text = """
ETCD_NAME=kb
ETCD_DATA_DIR=/var/lib/kb-etcd
ETCD_LISTEN_CLIENT_URLS=http://127.0.0.1:$1
ETCD_ADVERTISE_CLIENT_URLS=http://127.0.0.1:$1
ETCD_LISTEN_PEER_URLS=http://127.0.0.1:2380
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://127.0.0.1:2380
ETCD_INITIAL_CLUSTER=kb=http://127.0.0.1:2380
"""

[files."/etc/systemd/system/etcd.service"]
text = """
[Unit]
Description=etcd managed by kbuild

[Service]
Type=notify
EnvironmentFile=/etc/etcd/etcd.env
ExecStart=/usr/local/bin/etcd
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""
EOR
        cat
    } >"$WORK/kb/recipes/etcd.toml"
}
