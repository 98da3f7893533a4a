#!/usr/bin/env bash
# kbuild activation benchmark: switch between two master generations, rollback, no-op switch
# (systemctl excluded: the root is a temp dir, so unit actions are only printed), and
# `kbuild verify` throughput against `b3sum` of the same files, in the same run.
#
#   bash bench/switch.sh          # after bench/run.sh (reuses its fixture and pinned recipes)
#
# Knobs: SIZE_MB, SEED (which fixture), FAST_RUNS (default 30), RUNS (default 5).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
WORK="$BENCH_DIR/work"
SIZE_MB=${SIZE_MB:-350}
SEED=${SEED:-0}
FAST_RUNS=${FAST_RUNS:-30}
RUNS=${RUNS:-5}
KB=${KBUILD_BIN:-$ROOT/target/release/kbuild}
RECIPES="$WORK/recipes"
STORE="$WORK/store-switch"
TROOT="$WORK/root-switch"
OUT="$WORK/switch-results.md"

die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
[[ -x $KB ]] || die "no kbuild binary at $KB (run bench/run.sh first, or cargo build --release)"
[[ -d $RECIPES && -f $WORK/flake-like.lock.json ]] || die "run bench/run.sh first (it writes $RECIPES and the pinned lock)"
command -v hyperfine >/dev/null || die "hyperfine is required (apt-get install hyperfine)"
if ! command -v b3sum >/dev/null; then
    [[ $(id -u) == 0 ]] && apt-get install -y -qq b3sum >/dev/null 2>&1 || true
fi

chmod -R u+w "$STORE" 2>/dev/null || true
rm -rf "$STORE" "$TROOT"
mkdir -p "$TROOT/etc/kubernetes/ssl"
touch "$TROOT/etc/kubernetes/token.csv"
for f in ca.pem ca-key.pem kubernetes.pem kubernetes-key.pem; do touch "$TROOT/etc/kubernetes/ssl/$f"; done

k() { "$KB" --store "$STORE" --recipes "$RECIPES" --root "$TROOT" "$@"; }
k build master >/dev/null 2>&1 || die "build of generation 1 failed"
k build master --set IP=10.72.84.170 >/dev/null 2>&1 || die "build of generation 2 failed"
k switch 1 >/dev/null 2>&1 || die "first switch failed"

q() { printf '%q ' "$KB" --store "$STORE" --recipes "$RECIPES" --root "$TROOT" "$@"; }
hf() { # name, prepare, command
    hyperfine -N --warmup 2 --runs "$FAST_RUNS" --export-json "$WORK/$1.json" \
        --prepare "$2" "$3" >/dev/null 2>&1 || die "hyperfine $1 failed"
}
hf switch "$(q switch 1)" "$(q switch 2)"
hf rollback "$(q switch 2)" "$(q rollback)"
hf noop-switch "$(q switch 2)" "$(q switch 2)"

# verify vs b3sum over the same distinct files, page cache warm.
mapfile -t FILES < <(find "$STORE" -path "$STORE/.kbuild" -prune -o -type f -printf '%i %p\n' | sort -u -k1,1 | cut -d' ' -f2-)
BYTES=$(du -cb --apparent-size "${FILES[@]}" | tail -1 | cut -f1)
cat "${FILES[@]}" >/dev/null
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$WORK/verify.json" "$(q verify)" >/dev/null 2>&1 || die "verify failed"
if command -v b3sum >/dev/null; then
    printf '%s\0' "${FILES[@]}" > "$WORK/b3sum.list"
    hyperfine --warmup 1 --runs "$RUNS" --export-json "$WORK/b3sum.json" \
        "xargs -0 b3sum < $WORK/b3sum.list" >/dev/null 2>&1 || die "b3sum failed"
fi

python3 - "$WORK" "$BYTES" "$OUT" <<'PY'
import json, os, sys
work, nbytes, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def r(name):
    p = os.path.join(work, name + ".json")
    if not os.path.exists(p):
        return None
    res = json.load(open(p))["results"][0]
    return res["mean"], res["stddev"] or 0.0, len(res["times"])
lines = ["| measurement | mean ± σ | runs | target |", "|---|---|---|---|"]
for name, label, tgt in (("switch", "switch 1 → 2", "< 10 ms"), ("rollback", "rollback 2 → 1", "< 10 ms"),
                         ("noop-switch", "no-op switch", "< 10 ms")):
    m = r(name)
    lines.append(f"| {label} | {m[0]*1e3:.2f} ± {m[1]*1e3:.2f} ms | {m[2]} | {tgt} |")
for name, label, tgt in (("verify", "`kbuild verify`", "≥ 3 GB/s"), ("b3sum", "`b3sum` of the same files", "")):
    m = r(name)
    if m is None:
        lines.append(f"| {label} | n/a | | {tgt} |")
        continue
    lines.append(f"| {label} | {m[0]:.3f} ± {m[1]:.3f} s = {nbytes / m[0] / 1e9:.2f} GB/s | {m[2]} | {tgt} |")
v, b = r("verify"), r("b3sum")
if v and b:
    lines.append(f"| verify / b3sum | {v[0] / b[0]:.2f}× | | |")
lines.append(f"\n{nbytes / 1e6:.0f} MB in {len(open(os.path.join(work, 'b3sum.list')).read().split(chr(0))) - 1 if os.path.exists(os.path.join(work, 'b3sum.list')) else '?'} distinct files.")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
PY
