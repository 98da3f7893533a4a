#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each). Needs cargo-fuzz
# (`cargo install cargo-fuzz`); on a stable toolchain RUSTC_BOOTSTRAP=1 lets it use the
# sanitizer flags. Crashes land in fuzz/artifacts/<target>/; copy each one to
# fuzz/regressions/<target>/<what-it-is> and add its row (expected outcome) to
# tests/fuzz_regressions.rs. CI runs those tests, not the fuzzers.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${SECS:-60}
export RUSTC_BOOTSTRAP=1
# Seeds for the archive target: small real-layout tarballs, plain and gzip'd.
if [ ! -d corpus/unpack ] || [ -z "$(ls -A corpus/unpack 2>/dev/null)" ]; then
    mkdir -p corpus/unpack corpus/recipe corpus/template corpus/lockfile corpus/envfile
    python3 - <<'PY'
import gzip, io, tarfile
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
    for name, data in (("kubernetes/server/bin/kubectl", b"#!fake kubectl\n"), ("a", b"x")):
        info = tarfile.TarInfo(name); info.size = len(data); info.mode = 0o755
        t.addfile(info, io.BytesIO(data))
raw = buf.getvalue()
open("corpus/unpack/plain.tar", "wb").write(raw)
open("corpus/unpack/seed.tar.gz", "wb").write(gzip.compress(raw))
# A .deb seed for the `deb` target: the bytes after the `!<arch>\n` magic it prepends.
def ar_member(name, data):
    h = ("%-16s%-12d%-6d%-6d%-8s%-10d" % (name, 0, 0, 0, "100644", len(data))).encode() + b"`\n"
    return h + data + (b"\n" if len(data) % 2 else b"")
import os
os.makedirs("corpus/deb", exist_ok=True)
open("corpus/deb/seed", "wb").write(
    ar_member("debian-binary", b"2.0\n")
    + ar_member("control.tar.gz", gzip.compress(b""))
    + ar_member("data.tar.gz", gzip.compress(raw)))
PY
    cp ../recipes/*.toml corpus/recipe/
    cp ../recipes/templates/*.j2 corpus/template/
    cp ../flake-like.lock.json corpus/lockfile/
    cp regressions/envfile/* corpus/envfile/
fi
mkdir -p corpus/deb
cp regressions/deb/* corpus/deb/ 2>/dev/null || true
for t in recipe template envfile lockfile unpack deb; do
    echo "== $t ($SECS s)"
    cargo fuzz run "$t" -- -max_total_time="$SECS" -rss_limit_mb=1024 -timeout=10
done
