#!/usr/bin/env bash
# kbuild live switch benchmark: inside a Debian 12 container with systemd 252 as PID 1 (the
# real-systemd tier's container, see tests/common/container.rs), switch between two
# generations of etcd that differ in its EnvironmentFile only, so each switch restarts one
# unit. Reports the switch's wall time beside the time its systemctl calls take
# (daemon-reload + restart, timed by a wrapper `systemctl` first on PATH), and kbuild's own
# share (the difference); then the same switches with systemctl stubbed out (`exit 0`), which
# is what kbuild itself takes, its process spawns included.
#
#   sudo bash bench/switch-live.sh          # root, systemd-nspawn, debootstrap, dpkg-deb
#
# Knobs: RUNS (default 20), KBUILD_BIN (default target/release/kbuild, else target/debug),
# KBUILD_TEST_CACHE (default /var/cache/kbuild-test: base tree and .deb, made once).
set -euo pipefail

# shellcheck source=bench/lib/container.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/container.sh"
RUNS=${RUNS:-20}
OUT="$BENCH_DIR/work/switch-live-results.md"

ct_prepare kbuild-live-bench
# A `systemctl` first on PATH that logs how long each real call takes.
mkdir -p "$WORK/kb/shim"
cat >"$WORK/kb/shim/systemctl" <<'EOF'
#!/bin/sh
# KB_STUB=1: stand-in for systemctl that does nothing (kbuild's own time, spawns included),
# but answers the health gate's `systemctl show` for real (stubbed, it says nothing, and the
# gate fails: systemd cannot be asked).
[ -n "${KB_STUB:-}" ] && [ "$1" != show ] && exit 0
t0=$(date +%s%N)
/usr/bin/systemctl "$@"
rc=$?
t1=$(date +%s%N)
echo "$1 $((t1 - t0))" >>/kb/systemctl.log
exit $rc
EOF
chmod +x "$WORK/kb/shim/systemctl"

recipe() { etcd_recipe "$1" </dev/null; } # port

ct_boot kbbench

recipe 2379; in_ct sh -c "$K build etcd" >/dev/null 2>&1 || die "build 1 failed"
recipe 2479; in_ct sh -c "$K build etcd" >/dev/null 2>&1 || die "build 2 failed"
in_ct sh -c "$K switch 1" >/dev/null 2>&1 || die "first switch failed"

# The loop runs inside the container: no nsenter in the measured time.
in_ct env PATH=/kb/shim:/usr/sbin:/usr/bin:/sbin:/bin RUNS="$RUNS" K="$K" sh -c '
    rm -f /kb/systemctl.log /kb/times
    for i in $(seq "$RUNS"); do
        for n in 2 1; do
            t0=$(date +%s%N)
            $K switch $n >/dev/null 2>&1 || { echo "switch $n failed" >&2; exit 1; }
            t1=$(date +%s%N)
            echo "$((t1 - t0))" >>/kb/times
            systemctl is-active --quiet etcd.service || { echo "etcd is not active" >&2; exit 1; }
        done
    done
    # The same switches with systemctl stubbed out: what kbuild itself takes.
    rm -f /kb/times-stub
    for i in $(seq "$RUNS"); do
        for n in 2 1; do
            t0=$(date +%s%N)
            KB_STUB=1 $K switch $n >/dev/null 2>&1 || { echo "stubbed switch $n failed" >&2; exit 1; }
            t1=$(date +%s%N)
            echo "$((t1 - t0))" >>/kb/times-stub
        done
    done' || die "the switch loop failed"

python3 - "$WORK/kb" "$OUT" "$KB" <<'PY'
import statistics as st, sys, os
kb, out, binary = sys.argv[1], sys.argv[2], sys.argv[3]
times = [int(l) / 1e6 for l in open(os.path.join(kb, "times"))]
calls = {}
for line in open(os.path.join(kb, "systemctl.log")):
    verb, ns = line.split()
    calls.setdefault(verb, []).append(int(ns) / 1e6)
stub = [int(l) / 1e6 for l in open(os.path.join(kb, "times-stub"))]
n = len(times)
# Per switch: one daemon-reload and one restart (is-active between switches is not counted).
reload, restart = calls.get("daemon-reload", []), calls.get("restart", [])
assert len(reload) == n and len(restart) == n, (len(reload), len(restart), n)
sysctl = [a + b for a, b in zip(reload, restart)]
own = [t - s for t, s in zip(times, sysctl)]
f = lambda xs: f"{st.mean(xs):.1f} ± {st.stdev(xs):.1f} ms" if len(xs) > 1 else f"{xs[0]:.1f} ms"
lines = [
    f"Live switch, systemd 252 in a container, {n} switches (each restarts etcd.service, Type=notify); binary `{binary}`",
    "",
    "| measurement | mean ± σ |",
    "|---|---|",
    f"| `kbuild switch` wall time | {f(times)} |",
    f"| of which `systemctl daemon-reload` | {f(reload)} |",
    f"| of which `systemctl restart etcd.service` | {f(restart)} |",
    f"| kbuild's own share (wall − systemctl) | {f(own)} |",
    f"| `kbuild switch` with systemctl stubbed (`exit 0`) | {f(stub)} |",
    "",
    f"kbuild's share of the switch: {100 * st.mean(own) / st.mean(times):.1f} %.",
]
text = "\n".join(lines) + "\n"
os.makedirs(os.path.dirname(out), exist_ok=True)
open(out, "w").write(text)
print(text)
PY
