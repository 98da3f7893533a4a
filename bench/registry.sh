#!/usr/bin/env bash
# kbuild registry benchmark (issue 11, point 4): first-generation `kbuild push` and `kbuild pull`
# against `skopeo copy` of an OCI layout of the same size (kbuild's own export of that
# generation) to and from the same registry in the same run, and the bytes a second generation
# differing in one variable sends up and down. See bench/README.md.
#
#   bash bench/registry.sh              # 350 MiB fixture, RUNS=3
#   SIZE_MB=50 bash bench/registry.sh   # quick
#
# Knobs (environment):
#   SIZE_MB     compressed fixture size in MiB (default 350; shares bench/run.sh's fixtures)
#   SEED        fixture seed (default 0)
#   RUNS        timed runs of each transfer (default 3, min 2), each after 1 warm-up
#   VAR         recipe variable changed for the second generation (default IP)
#   KBUILD_BIN  use this kbuild binary instead of building target/release/kbuild
#
# Also: peak memory (GNU time's max RSS, /usr/bin/time) of one pull and one push, and the load
# average, since the machine may be shared.
#
# Needs: docker-registry (Debian's, distribution 2.8), skopeo and python3 (which also polls the
# registry until it answers). Everything lives in bench/work/registry/; the registry is
# started here on a free 127.0.0.1 port and stopped on exit.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
WORK="$BENCH_DIR/work"
R="$WORK/registry"

SIZE_MB=${SIZE_MB:-350}
SEED=${SEED:-0}
RUNS=${RUNS:-3}
VAR=${VAR:-IP}
KB=${KBUILD_BIN:-$ROOT/target/release/kbuild}
UPSTREAM_URL="https://dl.k8s.io/v1.6.0/kubernetes-server-linux-amd64.tar.gz"
INPUT=kubernetes-server
FIXTURE_DIR="$WORK/fixture-${SIZE_MB}mb-seed${SEED}"
FIXTURE="$FIXTURE_DIR/kubernetes-server-linux-amd64.tar.gz"
OUT="$WORK/registry-results.md"

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 2 ]] || die "RUNS must be an integer >= 2 (got '$RUNS')"
for tool in docker-registry skopeo python3; do
	command -v "$tool" >/dev/null || die "$tool is required (apt-get install docker-registry skopeo python3)"
done

wipe() {
	local d
	for d in "$@"; do
		if [[ -e $d ]]; then
			chmod -R u+w "$d" 2>/dev/null || true
			rm -rf "$d"
		fi
	done
}
q() { printf '%q' "$1"; }

# ---------------------------------------------------------------------------- kbuild, fixture
if [[ -z ${KBUILD_BIN:-} ]]; then
	log "cargo build --release"
	(cd "$ROOT" && cargo build --release)
fi
[[ -x $KB ]] || die "$KB is missing or not executable"
if [[ ! -f $FIXTURE ]]; then
	log "generating ${SIZE_MB} MiB fixture (seed $SEED)"
	mkdir -p "$FIXTURE_DIR"
	python3 "$BENCH_DIR/make-fixture.py" --size-mb "$SIZE_MB" --seed "$SEED" \
		--out "$FIXTURE" --info-json "$FIXTURE_DIR/fixture.json"
fi

wipe "$R"
mkdir -p "$R"
# Pinned recipes (as bench/run.sh makes them): the fixture's file:// URL and its sha256.
cp -R "$ROOT/recipes" "$R/recipes"
grep -rlF --include='*.toml' "$UPSTREAM_URL" "$R/recipes" | xargs sed -i "s|$UPSTREAM_URL|file://$FIXTURE|g"
python3 - "$R/flake-like.lock.json" "$INPUT" "file://$FIXTURE" "$(sha256sum "$FIXTURE" | cut -d' ' -f1)" "$(stat -c %s "$FIXTURE")" <<'EOF'
import json, sys
path, name, url, sha, size = sys.argv[1:]
doc = {"version": 1, "inputs": {name: {"urls": [url], "sha256": sha, "size": int(size)}}}
open(path, "w").write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
EOF
STORE="$R/store"
STORE_PULL="$R/store-pull"
k() { "$KB" --store "$STORE" --recipes "$R/recipes" "$@"; }
log "building generations 1 and 2 (the second with $VAR=10.72.84.170)"
k build master >"$R/build1.out" 2>"$R/build1.err" || { cat "$R/build1.err" >&2; die "build of generation 1 failed"; }
k build master --set "$VAR=10.72.84.170" >"$R/build2.out" 2>"$R/build2.err" || { cat "$R/build2.err" >&2; die "build of generation 2 failed"; }
# The OCI layout skopeo copies: kbuild's export of generation 1, so both tools move the very
# same blobs (same count, same sizes).
LAYOUT="$R/layout"
k export 1 --output "$LAYOUT" >"$R/export.out" 2>"$R/export.err" || { cat "$R/export.err" >&2; die "kbuild export failed"; }
LAYOUT_BYTES=$(du -cb --apparent-size "$LAYOUT/blobs/sha256" | tail -1 | cut -f1)
LAYOUT_BLOBS=$(find "$LAYOUT/blobs/sha256" -type f | wc -l)
echo "  layout: $LAYOUT_BLOBS blobs, $LAYOUT_BYTES bytes" >&2

# ---------------------------------------------------------------------------- registry
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
HOST="127.0.0.1:$PORT"
cat >"$R/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $R/storage
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $HOST
  secret: kbuild-bench
EOF
printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' >"$R/policy.json"
# `fresh.sh`: the registry restarted on an empty storage (hyperfine-style --prepare step).
# `start.sh` keeps the storage. The access log (combined format, response sizes) goes to
# registry.log, which the byte count of the second pull reads.
cat >"$R/start.sh" <<EOF
#!/usr/bin/env bash
set -eu
if [[ -f $R/registry.pid ]]; then
	kill \$(cat $R/registry.pid) 2>/dev/null || true
	while kill -0 \$(cat $R/registry.pid) 2>/dev/null; do sleep 0.02; done
fi
[[ \${1:-} == fresh ]] && rm -rf $R/storage
docker-registry serve $R/config.yml >>$R/registry.log 2>&1 &
echo \$! >$R/registry.pid
python3 - <<'PY'
import time, urllib.request
for _ in range(400):
    try:
        urllib.request.urlopen("http://$HOST/v2/", timeout=1)
        break
    except Exception:
        time.sleep(0.025)
else:
    raise SystemExit("docker-registry did not answer on $HOST")
PY
EOF
chmod +x "$R/start.sh"
printf '#!/usr/bin/env bash\nexec %q fresh\n' "$R/start.sh" >"$R/fresh.sh"
chmod +x "$R/fresh.sh"
stop_registry() {
	if [[ -f $R/registry.pid ]]; then
		kill "$(cat "$R/registry.pid")" 2>/dev/null || true
	fi
}
trap stop_registry EXIT
"$R/fresh.sh"

# skopeo with its own HOME per run: no credentials of the machine, and no blob-info cache
# that could let it mount or skip blobs between runs.
SKOPEO="HOME=$(q "$R/skopeo-home") skopeo --policy $(q "$R/policy.json")"
SKOPEO_HOME_RESET="rm -rf $(q "$R/skopeo-home"); mkdir -p $(q "$R/skopeo-home")"
bash -c "$SKOPEO_HOME_RESET"

# measure NAME PREPARE COMMAND: RUNS timed runs after 1 warm-up, each after PREPARE;
# writes $WORK/registry-NAME.json in hyperfine's --export-json shape.
measure() {
	local name=$1 prepare=$2 cmd=$3 json="$WORK/registry-$1.json"
	rm -f "$json"
	if command -v hyperfine >/dev/null; then
		hyperfine --runs "$RUNS" --warmup 1 --prepare "$prepare" --export-json "$json" \
			--command-name "$name" "$cmd" >&2
	else
		local i t0 t1 times=()
		for ((i = 0; i < 1 + RUNS; i++)); do
			bash -c "$prepare" >/dev/null 2>&1 || die "$name: prepare failed: $prepare"
			t0=$(date +%s%N)
			bash -c "$cmd" >"$R/$name.out" 2>"$R/$name.err" || { cat "$R/$name.err" >&2; die "$name failed: $cmd"; }
			t1=$(date +%s%N)
			((i >= 1)) && times+=("$(((t1 - t0) / 1000))")
		done
		python3 - "$json" "$name" "${times[@]}" <<'EOF'
import json, statistics, sys
path, name, *us = sys.argv[1:]
t = [int(x) / 1e6 for x in us]
res = {"command": name, "mean": statistics.fmean(t), "stddev": statistics.stdev(t),
       "median": statistics.median(t), "min": min(t), "max": max(t), "times": t}
json.dump({"results": [res]}, open(path, "w"), indent=2)
print(f"  {name}: {res['mean']:.3f} s ± {res['stddev']:.3f} s ({len(t)} runs)", file=sys.stderr)
EOF
	fi
}

KB_PUSH="$(q "$KB") --store $(q "$STORE") --recipes $(q "$R/recipes") push 1 $HOST/bench/kbuild:gen1 --plain-http"
SK_PUSH="$SKOPEO copy --quiet --dest-tls-verify=false oci:$(q "$LAYOUT") docker://$HOST/bench/skopeo:gen1"
KB_PULL="$(q "$KB") --store $(q "$STORE_PULL") pull $HOST/bench/kbuild:gen1 --plain-http"
SK_PULL="$SKOPEO copy --quiet --src-tls-verify=false docker://$HOST/bench/skopeo:gen1 oci:$(q "$R/pulled"):gen1"

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "first-generation push: kbuild vs skopeo, each into an empty registry (load average $LOAD_START)"
measure push-kbuild "$R/fresh.sh" "$KB_PUSH"
measure push-skopeo "$R/fresh.sh; $SKOPEO_HOME_RESET" "$SK_PUSH"

log "first-generation pull: kbuild into an empty store vs skopeo into an empty layout"
"$R/fresh.sh"
bash -c "$KB_PUSH" >/dev/null 2>"$R/push1.err" || { cat "$R/push1.err" >&2; die "push failed"; }
bash -c "$SK_PUSH" || die "skopeo push failed"
measure pull-kbuild "chmod -R u+w $(q "$STORE_PULL") 2>/dev/null; rm -rf $(q "$STORE_PULL")" "$KB_PULL"
measure pull-skopeo "rm -rf $(q "$R/pulled"); $SKOPEO_HOME_RESET" "$SK_PULL"

log "peak memory (GNU time's max RSS): one pull into an empty store, one push into an empty registry"
# rss NAME PREPARE COMMAND: max RSS in KiB of one run of COMMAND (the largest process: GNU
# time reads wait4, whose max RSS covers the shell and what it ran).
rss() {
	bash -c "$2" >/dev/null 2>&1 || die "$1: prepare failed: $2"
	/usr/bin/time -f %M -o "$R/$1.rss" bash -c "$3" >/dev/null 2>"$R/$1.rss.err" \
		|| { cat "$R/$1.rss.err" >&2; die "$1 failed: $3"; }
	tail -n 1 "$R/$1.rss"
}
RSS_PULL_KB=$(rss pull-kbuild "chmod -R u+w $(q "$STORE_PULL") 2>/dev/null; rm -rf $(q "$STORE_PULL")" "$KB_PULL")
RSS_PULL_SK=$(rss pull-skopeo "rm -rf $(q "$R/pulled"); $SKOPEO_HOME_RESET" "$SK_PULL")
RSS_PUSH_KB=$(rss push-kbuild "$R/fresh.sh" "$KB_PUSH")
echo "  max RSS: kbuild pull $RSS_PULL_KB KiB, skopeo pull $RSS_PULL_SK KiB, kbuild push $RSS_PUSH_KB KiB" >&2

log "second generation ($VAR changed): bytes up and down"
"$R/fresh.sh"
bash -c "$KB_PUSH" >/dev/null 2>&1 || die "push of generation 1 failed"
blob_sizes() { find "$R/storage/docker/registry/v2/blobs" -name data -printf '%s %h\n' 2>/dev/null | sort; }
blob_sizes >"$R/blobs-gen1"
"$KB" --store "$STORE" --recipes "$R/recipes" push 2 "$HOST/bench/kbuild:gen2" --plain-http \
	>"$R/push2.out" 2>"$R/push2.err" || { cat "$R/push2.err" >&2; die "push of generation 2 failed"; }
blob_sizes >"$R/blobs-gen2"
UP_BYTES=$(comm -13 "$R/blobs-gen1" "$R/blobs-gen2" | awk '{s += $1} END {print s + 0}')
wipe "$STORE_PULL"
"$KB" --store "$STORE_PULL" pull "$HOST/bench/kbuild:gen1" --plain-http >/dev/null 2>"$R/pull1.err" \
	|| { cat "$R/pull1.err" >&2; die "pull of generation 1 failed"; }
MARK=$(wc -l <"$R/registry.log")
"$KB" --store "$STORE_PULL" pull "$HOST/bench/kbuild:gen2" --plain-http >"$R/pull2.out" 2>"$R/pull2.err" \
	|| { cat "$R/pull2.err" >&2; die "pull of generation 2 failed"; }
# Response bodies the registry sent for the second pull, from its access log
# (`"GET /v2/… HTTP/1.1" 200 BYTES`).
DOWN_BYTES=$(tail -n +"$((MARK + 1))" "$R/registry.log" | sed -n 's/.*"GET \/v2\/[^"]*" [0-9]* \([0-9]*\) .*/\1/p' | awk '{s += $1} END {print s + 0}')
PUSH2_SUMMARY=$(grep -i 'uploaded' "$R/push2.err" | tail -n 1 || true)
PULL2_SUMMARY=$(grep -i 'downloaded' "$R/pull2.err" | tail -n 1 || true)
wipe "$STORE_PULL" "$R/pulled"

# ---------------------------------------------------------------------------- summary
python3 - "$WORK" "$OUT" "$LAYOUT_BYTES" "$LAYOUT_BLOBS" "$UP_BYTES" "$DOWN_BYTES" "$VAR" \
	"$PUSH2_SUMMARY" "$PULL2_SUMMARY" "$SIZE_MB" "$RSS_PULL_KB" "$RSS_PULL_SK" "$RSS_PUSH_KB" "$LOAD_START" <<'EOF'
import json, os, sys, time
(work, out, layout_bytes, layout_blobs, up, down, var, push2, pull2, size_mb,
 rss_pull, rss_pull_skopeo, rss_push, load_start) = sys.argv[1:]
def r(name):
    p = os.path.join(work, f"registry-{name}.json")
    return json.load(open(p))["results"][0] if os.path.exists(p) else None
R = {n: r(n) for n in ("push-kbuild", "push-skopeo", "pull-kbuild", "pull-skopeo")}
mib = int(layout_bytes) / 2**20
lines = [
    f"Generation 1: {layout_blobs} blobs, {mib:.1f} MiB (kbuild's export of it is skopeo's layout); "
    f"fixture {size_mb} MiB; {time.strftime('%Y-%m-%d %H:%M %Z')}",
    "",
    "| measurement | mean ± σ | throughput | runs |",
    "|---|---|---|---|",
]
for n, label in (("push-kbuild", "`kbuild push` generation 1, empty registry"),
                 ("push-skopeo", "`skopeo copy oci:LAYOUT docker://…`, empty registry"),
                 ("pull-kbuild", "`kbuild pull` generation 1, empty store"),
                 ("pull-skopeo", "`skopeo copy docker://… oci:DIR`, empty layout")):
    x = R[n]
    lines.append(f"| {label} | {x['mean']:.3f} ± {x['stddev']:.3f} s | {mib / x['mean']:.0f} MiB/s | {len(x['times'])} |")
lines += ["", "| figure | value | target |", "|---|---|---|"]
for a, b, label in (("push-kbuild", "push-skopeo", "push: kbuild throughput / skopeo's"),
                    ("pull-kbuild", "pull-skopeo", "pull: kbuild throughput / skopeo's")):
    lines.append(f"| {label} | {R[b]['mean'] / R[a]['mean']:.2f} | ≥ 0.50 |")
lines.append(f"| generation 2 ({var} changed): blobs the registry stored | {int(up) / 1024:.1f} KiB | ≤ 64 KiB |")
lines.append(f"| generation 2: response bytes of its pull (access log) | {int(down) / 1024:.1f} KiB | ≤ 64 KiB |")
lines.append(f"| peak RSS: `kbuild pull` / `skopeo copy docker://… oci:DIR` / `kbuild push` | "
             f"{int(rss_pull) / 1024:.1f} / {int(rss_pull_skopeo) / 1024:.1f} / {int(rss_push) / 1024:.1f} MiB | |")
lines.append(f"| load average (1, 5, 15 min) before the timings / at the end | {load_start} / "
             + " ".join(f"{x:.2f}" for x in os.getloadavg()) + " | |")
lines += ["", f"kbuild's push of generation 2: `{push2.strip()}`", f"kbuild's pull of generation 2: `{pull2.strip()}`"]
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
print(f"(written to {out})")
EOF
