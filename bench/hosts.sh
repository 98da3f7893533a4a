#!/usr/bin/env bash
# Three masters from one description (issue 10), measured in one run with hyperfine:
#   * `build --all-hosts` on a warm store: no-op, and after changing one shared variable;
#   * a cold build of all three hosts against one cold single-host build (`build master`);
#   * the store growth of the second and third host (bytes, `du --apparent-size` and disk).
#
#   bash bench/hosts.sh                # 50 MiB fixture
#   SIZE_MB=350 bash bench/hosts.sh    # the real tarball's size
#
# Knobs: SIZE_MB (50), RUNS (5, cold builds), FAST_RUNS (30), KBUILD_BIN (default: build
# target/release/kbuild). Results: bench/work/hosts-*.json (hyperfine --export-json).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
WORK="$BENCH_DIR/work/hosts"
SIZE_MB=${SIZE_MB:-50}
RUNS=${RUNS:-5}
FAST_RUNS=${FAST_RUNS:-30}

if [ -z "${KBUILD_BIN:-}" ]; then
	(cd "$ROOT" && cargo build --release --locked)
	KBUILD_BIN="$ROOT/target/release/kbuild"
fi
rm -rf "$WORK"
mkdir -p "$WORK"
FIXTURE="$WORK/kubernetes-server-linux-amd64.tar.gz"
python3 "$BENCH_DIR/make-fixture.py" --size-mb "$SIZE_MB" --out "$FIXTURE" >/dev/null
cp -r "$ROOT/recipes" "$WORK/recipes"
cp "$ROOT/hosts.toml" "$WORK/hosts.toml"
cp "$ROOT/flake-like.lock.json" "$WORK/flake-like.lock.json"
cd "$WORK"
export KBUILD_STORE="$WORK/store" KBUILD_RECIPES="$WORK/recipes"
K="$KBUILD_BIN"
OVR="--override-input kubernetes-server=file://$FIXTURE"
# Pin the fixture so warm builds need neither the network nor the file.
$K build master --offline $OVR --write-lock >/dev/null 2>&1

hf() { # NAME, hyperfine args…
	local name=$1
	shift
	hyperfine --style basic --export-json "$WORK/hosts-$name.json" "$@"
}
hf cold-single --runs "$RUNS" --prepare "rm -rf $WORK/store" \
	"$K build master --offline $OVR"
hf cold-all-hosts --runs "$RUNS" --prepare "rm -rf $WORK/store" \
	"$K build --all-hosts --offline $OVR"
# The single-host no-op, same run: what machine noise does to a few-ms command.
hf warm-noop-single --runs "$FAST_RUNS" --warmup 2 "$K build master --offline --locked"
hf warm-noop --runs "$FAST_RUNS" --warmup 2 "$K build --all-hosts --offline --locked"
echo 0 >"$WORK/n"
# A new value of a shared variable on every run: three new generations each time.
hf warm-one-shared-variable --runs "$FAST_RUNS" \
	"i=\$(cat $WORK/n); echo \$((i+1)) >$WORK/n; $K build --all-hosts --offline --locked --set SERVICE_CIDR=172.16.\$((i % 250)).0/24"

# Store growth of the second and third host, on a fresh store.
size() { du -s --apparent-size --block-size=1 "$WORK/store" | cut -f1; }
disk() { du -s --block-size=1 "$WORK/store" | cut -f1; }
rm -rf "$WORK/store"
$K build --host master-1 --offline $OVR >/dev/null 2>&1
a1=$(size) d1=$(disk)
$K build --host master-2 --offline --locked >/dev/null 2>&1
a2=$(size) d2=$(disk)
$K build --host master-3 --offline --locked >/dev/null 2>&1
a3=$(size) d3=$(disk)
echo "store growth, second host: $((a2 - a1)) bytes apparent, $((d2 - d1)) bytes on disk"
echo "store growth, third host:  $((a3 - a2)) bytes apparent, $((d3 - d2)) bytes on disk"
