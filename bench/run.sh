#!/usr/bin/env bash
# kbuild benchmark: cold build / no-op rebuild / one-variable rebuild / peak RSS,
# measured in the same run as `igzip -dc`, `gzip -dc` and `sha256sum` of the same
# synthetic kubernetes-server tarball. See bench/README.md.
#
#   bash bench/run.sh                 # 350 MiB fixture
#   SIZE_MB=50 bash bench/run.sh      # quick
#
# Knobs (environment):
#   SIZE_MB    compressed fixture size in MiB (default 350)
#   RUNS       timed runs of the tarball-sized commands (default 5, min 2)
#   FAST_RUNS  timed runs of the no-op / one-variable rebuilds (default 30, min 2)
#   SEED       fixture seed (default 0)
#   KBUILD=0   skip cargo and every kbuild measurement (baselines only)
#   LOCK_NAME  lock file name, looked up in the parent of --recipes (default flake-like.lock.json)
#   VAR        recipe variable changed by the one-variable rebuild (default IP)
#   KBUILD_BIN use this kbuild binary instead of building target/release/kbuild
#   RECIPES    recipes directory (default recipes/ of the repository)
#   MULTI=0    skip the several-inputs and sha512 cold builds
#   SIZE2_MB   compressed size of the second input of the two-inputs build (default SIZE_MB/2)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
WORK="$BENCH_DIR/work"

SIZE_MB=${SIZE_MB:-350}
RUNS=${RUNS:-5}
FAST_RUNS=${FAST_RUNS:-30}
SEED=${SEED:-0}
KBUILD=${KBUILD:-1}
LOCK_NAME=${LOCK_NAME:-flake-like.lock.json}
VAR=${VAR:-IP}
MULTI=${MULTI:-1}
SIZE2_MB=${SIZE2_MB:-$((${SIZE_MB%.*} / 2))}

UPSTREAM_URL="https://dl.k8s.io/v1.6.0/kubernetes-server-linux-amd64.tar.gz"
INPUT=kubernetes-server
TARGET=master

# One directory per (size, seed) so quick and full runs do not regenerate each other's
# fixture; the file keeps the upstream basename.
FIXTURE_DIR="$WORK/fixture-${SIZE_MB}mb-seed${SEED}"
FIXTURE="$FIXTURE_DIR/kubernetes-server-linux-amd64.tar.gz"
FIXTURE_INFO="$FIXTURE_DIR/fixture.json"
RESULTS="$WORK/results.md"
KB=${KBUILD_BIN:-$ROOT/target/release/kbuild}
RECIPES=${RECIPES:-$ROOT/recipes}
STORE_COLD="$WORK/store-cold"
STORE_WARM="$WORK/store-warm"
PINNED_RECIPES="$WORK/recipes"
COUNTER="$WORK/onevar.counter"
VALUE="$WORK/onevar.value"

log() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

[[ $RUNS =~ ^[0-9]+$ && $RUNS -ge 2 ]] || die "RUNS must be an integer >= 2 (got '$RUNS')"
[[ $FAST_RUNS =~ ^[0-9]+$ && $FAST_RUNS -ge 2 ]] || die "FAST_RUNS must be an integer >= 2 (got '$FAST_RUNS')"
[[ $SIZE_MB =~ ^[0-9]+([.][0-9]+)?$ ]] || die "SIZE_MB must be a number (got '$SIZE_MB')"
[[ $SEED =~ ^[A-Za-z0-9_.-]+$ ]] || die "SEED must match [A-Za-z0-9_.-]+ (got '$SEED')"
command -v python3 >/dev/null || die "python3 is required"

mkdir -p "$WORK"
cd "$ROOT"

# Make store paths writable again (the store makes its files read-only) and delete them.
wipe() {
	local d
	for d in "$@"; do
		if [[ -e $d ]]; then
			chmod -R u+w "$d" 2>/dev/null || true
			rm -rf "$d"
		fi
	done
}

# run_checked NAME CMD...: run once, keep stdout/stderr in $WORK/NAME.{out,err};
# on failure print the command and its stderr and exit non-zero.
run_checked() {
	local name=$1 rc=0
	shift
	"$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || rc=$?
	if ((rc != 0)); then
		printf 'bench: %s failed (exit %d):\n  %s\n--- stderr (%s) ---\n' \
			"$name" "$rc" "$(printf '%q ' "$@")" "$WORK/$name.err" >&2
		cat "$WORK/$name.err" >&2
		printf -- '--- stdout (last 20 lines) ---\n' >&2
		tail -n 20 "$WORK/$name.out" >&2
		exit 1
	fi
}

# measure NAME RUNS WARMUP PREPARE(or '') SHELL(default|none) COMMAND
# Writes $WORK/NAME.json in hyperfine's --export-json format.
measure() {
	local name=$1 runs=$2 warmup=$3 prepare=$4 shell=$5 cmd=$6
	local json="$WORK/$name.json"
	rm -f "$json"
	if command -v hyperfine >/dev/null; then
		local args=(--runs "$runs" --warmup "$warmup" --export-json "$json" --command-name "$name")
		[[ -n $prepare ]] && args+=(--prepare "$prepare")
		[[ $shell == none ]] && args+=(--shell=none)
		hyperfine "${args[@]}" "$cmd"
	else
		# Fallback: bash loop; includes ~1 ms of `bash -c` start-up per run.
		local i t0 t1 times=()
		for ((i = 0; i < warmup + runs; i++)); do
			[[ -n $prepare ]] && bash -c "$prepare"
			t0=$(date +%s%N)
			bash -c "$cmd" >/dev/null || die "$name: command failed: $cmd"
			t1=$(date +%s%N)
			((i >= warmup)) && times+=("$(((t1 - t0) / 1000))")
		done
		python3 - "$json" "$name" "${times[@]}" <<'EOF'
import json, statistics, sys
path, name, *us = sys.argv[1:]
t = [int(x) / 1e6 for x in us]
res = {"command": name, "mean": statistics.fmean(t), "stddev": statistics.stdev(t),
       "median": statistics.median(t), "min": min(t), "max": max(t), "times": t}
json.dump({"results": [res]}, open(path, "w"), indent=2)
print(f"  {name}: {res['mean']:.4f} s ± {res['stddev']:.4f} s ({len(t)} runs)")
EOF
	fi
}

q() { printf '%q' "$1"; }

# ---------------------------------------------------------------------------- build
if [[ $KBUILD != 0 && -z ${KBUILD_BIN:-} ]]; then
	log "cargo build --release"
	cargo build --release
fi
if [[ $KBUILD != 0 ]]; then
	[[ -x $KB ]] || die "$KB is missing or not executable"
	[[ -d $RECIPES ]] || die "recipes directory $RECIPES not found"
	RECIPES=$(cd "$RECIPES" && pwd)
	[[ $RECIPES != "$PINNED_RECIPES" ]] || die "RECIPES must not be $PINNED_RECIPES (the bench's own copy)"
fi

# ---------------------------------------------------------------------------- fixture
GEN_SHA=$(sha256sum "$BENCH_DIR/make-fixture.py" | cut -d' ' -f1)
fixture_ok() {
	[[ -f $FIXTURE && -f $FIXTURE_INFO ]] || return 1
	python3 - "$FIXTURE_INFO" "$SIZE_MB" "$SEED" "$GEN_SHA" "$(stat -c %s "$FIXTURE")" <<'EOF'
import json, sys
info = json.load(open(sys.argv[1]))
ok = (float(info["size_mb"]) == float(sys.argv[2]) and info["seed"] == sys.argv[3]
      and info["generator_sha256"] == sys.argv[4] and info["compressed_bytes"] == int(sys.argv[5]))
sys.exit(0 if ok else 1)
EOF
}
if fixture_ok; then
	log "reusing fixture $FIXTURE ($SIZE_MB MiB, seed $SEED)"
else
	log "generating ${SIZE_MB} MiB fixture (seed $SEED)"
	rm -f "$FIXTURE" "$FIXTURE_INFO"
	mkdir -p "$FIXTURE_DIR"
	python3 "$BENCH_DIR/make-fixture.py" --size-mb "$SIZE_MB" --seed "$SEED" \
		--out "$FIXTURE" --info-json "$FIXTURE_INFO"
fi
FIXTURE_BYTES=$(stat -c %s "$FIXTURE")
FIXTURE_SHA=$(sha256sum "$FIXTURE" | cut -d' ' -f1)
FIXTURE_URL="file://$FIXTURE"

# ---------------------------------------------------------------------------- kbuild setup
# Done before the baselines so a broken kbuild fails fast.
rm -f "$WORK/cold.json" "$WORK/noop.json" "$WORK/onevar.json" "$WORK/cold.rss"
if [[ $KBUILD != 0 ]]; then
	# Pinned recipes: a copy of recipes/ whose kubernetes-server URL is the fixture,
	# with a lock next to it (the lock lives in the parent of the recipes directory)
	# giving its sha256, so rebuilds need not re-read the tarball.
	log "pinned recipes in $PINNED_RECIPES"
	wipe "$PINNED_RECIPES"
	cp -R "$RECIPES" "$PINNED_RECIPES"
	mapfile -t url_files < <(grep -rlF --include='*.toml' "$UPSTREAM_URL" "$PINNED_RECIPES" || true)
	((${#url_files[@]} > 0)) || die "no recipes/**/*.toml mentions $UPSTREAM_URL; cannot pin the fixture"
	url_re=$(printf '%s' "$UPSTREAM_URL" | sed 's/[].[\*^$/|]/\\&/g')
	url_repl=$(printf '%s' "$FIXTURE_URL" | sed 's/[&|\\]/\\&/g')
	sed -i "s|$url_re|$url_repl|g" "${url_files[@]}"
	printf '  pinned URL in: %s\n' "${url_files[@]#"$WORK/"}" >&2
	python3 - "$WORK/$LOCK_NAME" "$INPUT" "$FIXTURE_URL" "$FIXTURE_SHA" "$FIXTURE_BYTES" <<'EOF'
import json, sys
path, name, url, sha, size = sys.argv[1:]
doc = {"version": 1, "inputs": {name: {"urls": [url], "sha256": sha, "size": int(size)}}}
with open(path, "w") as f:
    f.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")
EOF

	# Cold build: fresh empty store each run; --override-input re-reads the tarball.
	# --lock-file keeps kbuild from creating flake-like.lock.json beside the repository's
	# recipes/ (an overridden input is never pinned, so the lock plays no part here).
	COLD=("$KB" --store "$STORE_COLD" --recipes "$RECIPES" --lock-file "$WORK/cold.lock.json"
		build "$TARGET" --override-input "$INPUT=$FIXTURE_URL")
	COLD_CMD=$(printf '%q ' "${COLD[@]}")
	WIPE_COLD="chmod -R u+w $(q "$STORE_COLD") 2>/dev/null; rm -rf $(q "$STORE_COLD"); sync"

	# Peak RSS of one cold build; doubles as the smoke test that prints kbuild's stderr.
	if [[ ! -x /usr/bin/time ]] && command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
		log "installing GNU time"
		apt-get install -y time >&2 || true
	fi
	log "cold build (smoke run + peak RSS)"
	wipe "$STORE_COLD"
	sync
	if [[ -x /usr/bin/time ]]; then
		run_checked cold-smoke /usr/bin/time -f %M -o "$WORK/cold.rss" "${COLD[@]}"
		echo "  peak RSS: $(tail -n 1 "$WORK/cold.rss") KiB" >&2
	else
		echo "bench: /usr/bin/time (GNU time) not available; peak RSS not measured" >&2
		run_checked cold-smoke "${COLD[@]}"
	fi
	wipe "$STORE_COLD"

	WARM=("$KB" --store "$STORE_WARM" --recipes "$PINNED_RECIPES" build "$TARGET")
	WARM_CMD=$(printf '%q ' "${WARM[@]}")
	log "warm store: first build with the pinned recipes, then a no-op smoke run"
	wipe "$STORE_WARM"
	run_checked warm-first "${WARM[@]}"
	run_checked noop-smoke "${WARM[@]}"
fi

# ---------------------------------------------------------------------------- baselines
# Hot page cache for everything: one warm-up run each, and the fixture was just read.
log "baselines"
if command -v igzip >/dev/null; then
	measure igzip "$RUNS" 1 "" default "igzip -dc $(q "$FIXTURE") > /dev/null"
else
	echo "bench: igzip not found (ISA-L: apt-get install isal); skipping" >&2
	rm -f "$WORK/igzip.json"
fi
measure gzip "$RUNS" 1 "" default "gzip -dc $(q "$FIXTURE") > /dev/null"
measure sha256sum "$RUNS" 1 "" default "sha256sum $(q "$FIXTURE") > /dev/null"
# coreutils sha256sum has no SHA-NI code path; OpenSSL (like the sha2 crate) uses it.
if command -v openssl >/dev/null; then
	measure openssl-sha256 "$RUNS" 1 "" default "openssl dgst -sha256 $(q "$FIXTURE") > /dev/null"
else
	rm -f "$WORK/openssl-sha256.json"
fi

# ---------------------------------------------------------------------------- kbuild
if [[ $KBUILD != 0 ]]; then
	log "cold build"
	measure cold "$RUNS" 1 "$WIPE_COLD" default "$COLD_CMD"
	wipe "$STORE_COLD"

	if [[ $MULTI != 0 ]]; then
		# Several inputs at once: a recipe with two inputs (the fixture, and a second one of
		# SIZE2_MB with another seed) against one with the slower input alone, and the same
		# single input pinned with sha512 instead of sha256. Each selects kube-apiserver,
		# pinned in the recipe; a fresh store and lock for every run.
		FIXTURE2_DIR="$WORK/fixture-${SIZE2_MB}mb-seed${SEED}b"
		FIXTURE2="$FIXTURE2_DIR/kubernetes-server-linux-amd64.tar.gz"
		if [[ ! -f $FIXTURE2 ]]; then
			log "generating ${SIZE2_MB} MiB second fixture (seed ${SEED}b)"
			mkdir -p "$FIXTURE2_DIR"
			python3 "$BENCH_DIR/make-fixture.py" --size-mb "$SIZE2_MB" --seed "${SEED}b" --out "$FIXTURE2" -q
		fi
		FIXTURE2_SHA=$(sha256sum "$FIXTURE2" | cut -d' ' -f1)
		FIXTURE_SHA512=$(sha512sum "$FIXTURE" | cut -d' ' -f1)
		MULTI_RECIPES="$WORK/multi-recipes"
		STORE_MULTI="$WORK/store-multi"
		wipe "$MULTI_RECIPES"
		mkdir -p "$MULTI_RECIPES"
		input() { # NAME URL PIN-LINE
			printf '[inputs.%s]\nurl = "%s"\n%s\n\n[files."/usr/local/bin/%s"]\ninput = "%s"\nmember = "kubernetes/server/bin/kube-apiserver"\n\n' \
				"$1" "$2" "$3" "$1" "$1"
		}
		input a "$FIXTURE_URL" "sha256 = \"$FIXTURE_SHA\"" >"$MULTI_RECIPES/one.toml"
		input a "$FIXTURE_URL" "sha512 = \"$FIXTURE_SHA512\"" >"$MULTI_RECIPES/one512.toml"
		{
			input a "$FIXTURE_URL" "sha256 = \"$FIXTURE_SHA\""
			input b "file://$FIXTURE2" "sha256 = \"$FIXTURE2_SHA\""
		} >"$MULTI_RECIPES/pair.toml"
		WIPE_MULTI="chmod -R u+w $(q "$STORE_MULTI") 2>/dev/null; rm -rf $(q "$STORE_MULTI") $(q "$WORK/multi.lock.json"); sync"
		multi_cmd() {
			printf '%q ' "$KB" --store "$STORE_MULTI" --recipes "$MULTI_RECIPES" \
				--lock-file "$WORK/multi.lock.json" build "$1"
		}
		for r in one one512 pair; do
			bash -c "$WIPE_MULTI"
			run_checked "multi-$r-smoke" bash -c "$(multi_cmd "$r")"
		done
		log "cold build, two inputs at once vs the slower alone, and sha512 vs sha256"
		measure multi-one "$RUNS" 1 "$WIPE_MULTI" default "$(multi_cmd one)"
		measure multi-pair "$RUNS" 1 "$WIPE_MULTI" default "$(multi_cmd pair)"
		measure multi-one512 "$RUNS" 1 "$WIPE_MULTI" default "$(multi_cmd one512)"
		bash -c "$WIPE_MULTI"
	fi

	log "no-op rebuild"
	measure noop "$FAST_RUNS" 3 "" none "$WARM_CMD"

	# One-variable rebuild: every run (warm-ups included) sets $VAR to a value never
	# built before. hyperfine's --prepare bumps a counter and writes the next value,
	# the command reads it with the shell builtin `read` (no extra process) and execs
	# kbuild; hyperfine subtracts the shell's start-up time.
	# Values: 10.72.(n/250).(n%250+1) for n = 1, 2, ...: the store is fresh for every
	# bench run and n stays far below 84*250, so 10.72.84.x is never produced.
	log "one-variable rebuild ($VAR=10.72.x.y, fresh value per run)"
	echo 0 >"$COUNTER"
	BUMP="read -r n < $(q "$COUNTER"); n=\$((n + 1)); echo \$n > $(q "$COUNTER");"
	BUMP+=" echo 10.72.\$((n / 250)).\$((n % 250 + 1)) > $(q "$VALUE")"
	bash -c "$BUMP"
	read -r first_value <"$VALUE"
	run_checked onevar-smoke "${WARM[@]}" --set "$VAR=$first_value"
	ONEVAR_CMD="read -r v < $(q "$VALUE") && exec $WARM_CMD --set $VAR=\"\$v\""
	measure onevar "$FAST_RUNS" 2 "$BUMP" default "$ONEVAR_CMD"
	read -r last_n <"$COUNTER"
	((last_n >= FAST_RUNS + 3)) || die "one-variable counter only reached $last_n; values were re-used"
	read -r last_value <"$VALUE"
	echo "  $last_n distinct $VAR values built ($first_value .. $last_value)" >&2
	# Cross-check with the store: every one-variable run must have produced a new rootfs.
	if "$KB" --store "$STORE_WARM" --recipes "$PINNED_RECIPES" generations --json >"$WORK/generations.json" 2>/dev/null; then
		distinct=$(python3 -c 'import json, sys; print(len({g["rootfs"] for g in json.load(open(sys.argv[1]))}))' "$WORK/generations.json")
		echo "  store: $distinct distinct rootfs generations (expected $((last_n + 1)))" >&2
		((distinct >= last_n + 1)) || die "one-variable runs did not all build a new rootfs ($distinct < $((last_n + 1)))"
	else
		echo "  (kbuild generations --json unavailable; store cross-check skipped)" >&2
	fi
	wipe "$STORE_WARM"
fi

# ---------------------------------------------------------------------------- summary
log "summary"
python3 - "$WORK" "$RESULTS" "$FIXTURE_INFO" "$RUNS" "$FAST_RUNS" "$VAR" "$KBUILD" <<'EOF'
import json, os, platform, subprocess, sys, time

work, out, info_path, runs, fast_runs, var, kbuild = sys.argv[1:]
info = json.load(open(info_path))


def res(name):
    p = os.path.join(work, name + ".json")
    if not os.path.exists(p):
        return None
    return json.load(open(p))["results"][0]


def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_rev():
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        rev = r.stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "no commit"


def fmt(r, unit):
    if r is None:
        return "n/a"
    k = 1000.0 if unit == "ms" else 1.0
    return f"{r['mean'] * k:.{1 if unit == 'ms' else 3}f} ± {r['stddev'] * k:.{1 if unit == 'ms' else 3}f} {unit}"


rows = [
    ("igzip", "`igzip -dc` (ISA-L)", "s"),
    ("gzip", "`gzip -dc` (GNU)", "s"),
    ("sha256sum", "`sha256sum` (coreutils)", "s"),
    ("openssl-sha256", "`openssl dgst -sha256` (SHA-NI when available)", "s"),
    ("cold", "kbuild cold build (empty store, `--override-input`)", "s"),
    ("noop", "kbuild no-op rebuild (warm store, pinned lock)", "ms"),
    ("onevar", f"kbuild one-variable rebuild (`--set {var}=<fresh>`)", "ms"),
    ("multi-one", "kbuild cold build, one input (the fixture, sha256 pin, one member)", "s"),
    ("multi-pair", "kbuild cold build, two inputs at once (the fixture + a second one)", "s"),
    ("multi-one512", "kbuild cold build, one input pinned with sha512", "s"),
]
R = {k: res(k) for k, _, _ in rows}
lines = []
lines.append(f"Fixture: {info['compressed_bytes'] / 2**20:.1f} MiB compressed, "
             f"{info['uncompressed_bytes'] / 2**20:.1f} MiB uncompressed (ratio {info['ratio']:.3f}), seed {info['seed']}")
lines.append(f"Machine: {cpu()}, {os.cpu_count()} CPUs, Linux {platform.release()}; kbuild {git_rev()}; "
             f"{time.strftime('%Y-%m-%d %H:%M %Z')}")
lines.append("")
lines.append("| measurement | mean ± σ | runs |")
lines.append("|---|---|---|")
for k, label, unit in rows:
    r = R[k]
    n = len(r["times"]) if r else "-"
    if r is None and k in ("cold", "noop", "onevar") and kbuild == "0":
        lines.append(f"| {label} | skipped (KBUILD=0) | - |")
    else:
        lines.append(f"| {label} | {fmt(r, unit)} | {n} |")
lines.append("")
lines.append("| figure | value | target |")
lines.append("|---|---|---|")
cold = R["cold"]


def ratio(base, target=""):
    b = R[base]
    if cold is None or b is None:
        return None
    return f"| cold / {base} | {cold['mean'] / b['mean']:.2f}× | {target} |"


for base, tgt in (("igzip", "≤ 1.5×"), ("gzip", ""), ("sha256sum", ""), ("openssl-sha256", "")):
    line = ratio(base, tgt)
    lines.append(line if line else f"| cold / {base} | n/a | {tgt} |")
for k, label, tgt in (("noop", "no-op rebuild", "< 10 ms"), ("onevar", "one-variable rebuild", "< 20 ms")):
    r = R[k]
    lines.append(f"| {label} | {r['mean'] * 1000:.1f} ms (median {r['median'] * 1000:.1f})" if r else f"| {label} | n/a")
    lines[-1] += f" | {tgt} |"
for a, b, label, tgt in (
    ("multi-pair", "multi-one", "two inputs at once / the slower alone", "≈ 1× when fetching; CPU-bound here"),
    ("multi-one512", "multi-one", "sha512 pin / sha256 pin", "≈ 1×"),
):
    if R[a] and R[b]:
        lines.append(f"| {label} | {R[a]['mean'] / R[b]['mean']:.2f}× | {tgt} |")
rss_path = os.path.join(work, "cold.rss")
if os.path.exists(rss_path):
    kib = int(open(rss_path).read().split()[-1])
    lines.append(f"| peak RSS, cold build | {kib / 1024:.1f} MiB | < 64 MiB |")
else:
    lines.append("| peak RSS, cold build | n/a | < 64 MiB |")
text = "\n".join(lines) + "\n"
with open(out, "w") as f:
    f.write(text)
print(text)
print(f"(written to {out})")
EOF
