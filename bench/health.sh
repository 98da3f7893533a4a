#!/usr/bin/env bash
# kbuild health-gate benchmark: inside a Debian 12 container with systemd 252 as PID 1 (the
# real-systemd tier's container, see tests/common/container.rs). Generation 1 runs etcd on
# port 2379 with a health check of its `/health`; generation 2 moves etcd to port 2479 but
# keeps checking 2379, so its check fails (connection refused) until its timeout, and the
# switch rolls back to generation 1 on its own (exit code 3).
#
# Measured, in the same run:
#   rollback   from the moment the failed check gives up (kbuild's `Unhealthy generation 2
#              failed its health gate` line, timestamped as it is written) to etcd answering on
#              2379 again (`curl /health` polled every 10 ms);
#   by hand    the reference: the root on generation 2 (`switch 2 --no-rollback`), then
#              `kbuild switch 1` started by hand, to etcd answering on 2379 — the same way
#              back without the gate;
#   restart    the floor: `systemctl restart etcd.service` to etcd answering.
# Reported as means and as the ratio rollback / by hand.
#
#   sudo bash bench/health.sh          # root, systemd-nspawn, debootstrap, dpkg-deb
#
# Knobs: RUNS (default 10), KBUILD_BIN (default target/release/kbuild, else target/debug),
# KBUILD_TEST_CACHE (default /var/cache/kbuild-test: base tree and .deb, made once).
set -euo pipefail

# shellcheck source=bench/lib/container.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/container.sh"
RUNS=${RUNS:-10}
OUT="$BENCH_DIR/work/health-results.md"

ct_prepare kbuild-health-bench

recipe() { # client port, checked port
    etcd_recipe "$1" <<EOR

[[health]]
unit = "etcd.service"
http = "http://127.0.0.1:$2/health"
body = "true"
timeout = "2s"
interval = "100ms"
settle = "500ms"
EOR
}

ct_boot kbhealth

recipe 2379 2379; in_ct sh -c "$K build etcd" >/dev/null 2>&1 || die "build 1 failed"
recipe 2479 2379; in_ct sh -c "$K build etcd" >/dev/null 2>&1 || die "build 2 failed"
in_ct sh -c "$K switch 1" >/dev/null 2>&1 || die "the first switch (generation 1) failed its gate"

# The loop runs inside the container: no nsenter in the measured time.
in_ct env PATH=/usr/sbin:/usr/bin:/sbin:/bin RUNS="$RUNS" K="$K" sh -c '
    up() { until curl -s --max-time 1 http://127.0.0.1:2379/health 2>/dev/null | grep -q true; do sleep 0.01; done; }
    rm -f /kb/rollback /kb/byhand /kb/restart
    for i in $(seq "$RUNS"); do
        rm -f /kb/t_fail
        # kbuild stderr, each line timestamped as it arrives; stdout dropped.
        ( $K switch 2 2>&1 >/dev/null; echo "exit $?" ) | while IFS= read -r l; do
            case $l in
                *"Unhealthy generation 2 failed its health gate") date +%s%N >/kb/t_fail ;;
                "exit "*) echo "$l" >/kb/t_exit ;;
            esac
        done &
        while [ ! -s /kb/t_fail ]; do sleep 0.005; done
        up
        t1=$(date +%s%N); echo "$((t1 - $(cat /kb/t_fail)))" >>/kb/rollback
        wait
        grep -qx "exit 3" /kb/t_exit || { echo "switch 2 did not exit 3: $(cat /kb/t_exit)" >&2; exit 1; }

        # By hand: onto generation 2 (kept), then `kbuild switch 1` to etcd answering.
        $K switch 2 --no-rollback >/dev/null 2>&1 && { echo "switch 2 passed its gate" >&2; exit 1; }
        t0=$(date +%s%N)
        $K switch 1 >/dev/null 2>&1 &
        up
        t1=$(date +%s%N); echo "$((t1 - t0))" >>/kb/byhand
        wait $! || { echo "switch 1 failed" >&2; exit 1; }

        # The floor: a restart of the same unit to etcd answering.
        t0=$(date +%s%N)
        systemctl restart etcd.service
        up
        t1=$(date +%s%N); echo "$((t1 - t0))" >>/kb/restart
    done' || die "the measurement loop failed"

python3 - "$WORK/kb" "$OUT" "$KB" <<'PY'
import statistics as st, sys, os
kb, out, binary = sys.argv[1], sys.argv[2], sys.argv[3]
read = lambda n: [int(l) / 1e6 for l in open(os.path.join(kb, n))]
rb, hand, restart = read("rollback"), read("byhand"), read("restart")
f = lambda xs: f"{st.mean(xs):.1f} ± {st.stdev(xs):.1f} ms" if len(xs) > 1 else f"{xs[0]:.1f} ms"
lines = [
    f"Health gate, systemd 252 in a container, {len(rb)} rollbacks of etcd.service (Type=notify); binary `{binary}`",
    "",
    "| measurement | mean ± σ |",
    "|---|---|",
    f"| failed check's timeout → old etcd answers (automatic rollback) | {f(rb)} |",
    f"| `kbuild switch 1` by hand → old etcd answers (reference) | {f(hand)} |",
    f"| `systemctl restart etcd.service` → etcd answers (floor) | {f(restart)} |",
    "",
    f"rollback / by hand: {st.mean(rb) / st.mean(hand):.2f}×; rollback / restart: {st.mean(rb) / st.mean(restart):.2f}×.",
]
text = "\n".join(lines) + "\n"
os.makedirs(os.path.dirname(out), exist_ok=True)
open(out, "w").write(text)
print(text)
PY
