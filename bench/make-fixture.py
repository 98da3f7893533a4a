#!/usr/bin/env python3
"""Write a synthetic stand-in for Kubernetes' kubernetes-server-linux-amd64.tar.gz (v1.6.0).

The archive has the real layout of the v1.6.0 server tarball (directories, file
names, modes, docker-save image tarballs with the binary inside a layer, a
gzip'd source tarball, LICENSES, an addon image) and content that compresses
like real Go binaries: gzip -6 brings it to ~0.30 of its size, and igzip / GNU
gzip inflate it at about the same speed as a real Go binary (see
bench/README.md for the measurements).

How binary content is made (fast, stdlib only):
  * per binary, a vocabulary of random "instruction" tokens (lengths ~exponential,
    bytes drawn from a skewed alphabet like x86 code) and a vocabulary of longer
    "string/table" tokens; a 4 MiB pool is generated as segments of Zipf-weighted
    token draws mixed with ~3% fully random spans (embedded compressed data,
    hashes), in fixed proportions so the ratio does not depend on the seed;
  * the file body is assembled from random 16-96 KiB slices of the pool, each
    passed through one of 256 byte permutations (bytes.translate) that only swap
    bytes of neighbouring frequency rank. Inside a slice the repeat structure is
    intact (what gzip's 32 KiB window sees); across slices the bytes differ, so
    there are no long exact repeats that a large-window compressor (zstd, xz) or
    deduplicating store could exploit and a real binary would not offer.
  * the gzip stream is produced pigz-style: 1 MiB blocks deflated at level 6 in
    a thread pool (zlib releases the GIL) with the previous 32 KiB as preset
    dictionary and a sync flush, concatenated into a single gzip member.
Output is deterministic for a given --seed, --size-mb and zlib version.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import itertools
import json
import math
import os
import random
import struct
import sys
import tarfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

MiB = 1 << 20
VERSION = "v1.6.0"
MTIME = 1490659200  # 2017-03-28, the v1.6.0 release date
REGISTRY = "gcr.io/google_containers"

# Uncompressed sizes in MiB of the real-ish v1.6.0 contents; everything is scaled
# so that the compressed tarball lands on --size-mb.
BINARIES = {
    "cloud-controller-manager": 97,
    "hyperkube": 142,
    "kube-aggregator": 55,
    "kube-apiserver": 128,
    "kube-controller-manager": 113,
    "kube-proxy": 48,
    "kube-scheduler": 61,
    "kubeadm": 68,
    "kubectl": 70,
    "kubefed": 64,
    "kubelet": 138,
}
# Images shipped as docker-save tarballs: binary -> (base layer model, base layer MiB).
IMAGES = {
    "kube-aggregator": ("busybox", 1.1),
    "kube-apiserver": ("busybox", 1.1),
    "kube-controller-manager": ("busybox", 1.1),
    "kube-proxy": ("debian-iptables", 42.0),
    "kube-scheduler": ("busybox", 1.1),
}
SRC_TGZ_MIB = 16.0  # compressed size of kubernetes-src.tar.gz
LICENSES_MIB = 1.0
PAUSE_MIB = 0.7
ADDON_PAUSE = "gcr.io~google_containers~pause-amd64:3.0.tar"

# Generator tuning (see module docstring). Measured with gzip -6 on this model:
# ratio ~0.31, igzip ~0.9 GB/s and GNU gzip ~0.23 GB/s of output, matching a real
# kubectl (Go) binary: 0.313, 0.88 GB/s, 0.22 GB/s.
POOL_BYTES = 4 * MiB
CODE_VOCAB, CODE_MEAN_LEN, CODE_ZIPF = 3000, 6.0, 1.3
STR_VOCAB, STR_MEAN_LEN, STR_ZIPF = 1500, 14.0, 1.3
BYTE_ZIPF = 1.0
P_CODE, P_RAND = 0.60, 0.03  # the rest is string/table data
SEGMENT_MEAN = 4096
SLICE_MIN, SLICE_MAX = 16 * 1024, 96 * 1024
N_TABLES = 256
BLOCK = 1 * MiB
WINDOW = 32 * 1024
GOLDEN = 0.6180339887498949


def sub_seed(seed: str, *parts: str) -> int:
    h = hashlib.sha256("\0".join((seed,) + parts).encode())
    return int.from_bytes(h.digest()[:16], "big")


# --------------------------------------------------------------------------- content models


def _vocab(rng: random.Random, n: int, mean: float, lo: int, hi: int, zipf: float, alphabet, bcum):
    # Token lengths are exponential quantiles spread over the ranks by a golden-ratio
    # sequence, so the heavy (top-ranked) tokens get a seed-independent mix of lengths.
    lens = [min(hi, lo + int(-mean * math.log(1.0 - ((i + 1) * GOLDEN % 1.0)))) for i in range(n)]
    toks = [bytes(rng.choices(alphabet, cum_weights=bcum, k=length)) for length in lens]
    cum = list(itertools.accumulate(1.0 / (i + 1) ** zipf for i in range(n)))
    return toks, cum, sum(lens) / n


class BinaryModel:
    """Go-binary-like byte stream; the same model + size always yields the same bytes."""

    def __init__(self, seed: int):
        self.seed = seed
        rng = random.Random(seed)
        alphabet = list(range(256))
        rng.shuffle(alphabet)  # alphabet[r] = byte value of frequency rank r
        bcum = list(itertools.accumulate(1.0 / (i + 1) ** BYTE_ZIPF for i in range(256)))
        code = _vocab(rng, CODE_VOCAB, CODE_MEAN_LEN, 1, 16, CODE_ZIPF, alphabet, bcum)
        strs = _vocab(rng, STR_VOCAB, STR_MEAN_LEN, 4, 80, STR_ZIPF, alphabet, bcum)
        target = {"rand": P_RAND, "code": P_CODE, "str": 1.0 - P_CODE - P_RAND}
        made = dict.fromkeys(target, 0)
        out: list[bytes] = []
        n = 0
        while n < POOL_BYTES:
            # error diffusion keeps the three kinds at their exact byte fractions
            kind = max(target, key=lambda k: target[k] * (n + 1) - made[k])
            seg = int(rng.expovariate(1.0 / SEGMENT_MEAN)) + 64
            if kind == "rand":
                b = rng.randbytes(seg)
            else:
                toks, cum, avg = code if kind == "code" else strs
                b = b"".join(rng.choices(toks, cum_weights=cum, k=max(1, int(seg / avg))))
            out.append(b)
            n += len(b)
            made[kind] += len(b)
        self.pool = b"".join(out)[:POOL_BYTES]
        # Byte permutations that swap bytes of neighbouring frequency rank.
        self.tables = []
        for _ in range(N_TABLES):
            perm = list(range(256))
            for r in range(0, 256, 2):
                if rng.random() < 0.5:
                    a, b2 = alphabet[r], alphabet[r + 1]
                    perm[a], perm[b2] = b2, a
            self.tables.append(bytes(perm))

    def chunks(self, size: int, header: bytes = b"") -> Iterator[bytes]:
        rng = random.Random(self.seed ^ size)
        head = header[:size]
        if head:
            yield head
        n = len(head)
        last_table = -1
        recent: collections.deque[tuple[int, int]] = collections.deque(maxlen=4)
        pool_len = len(self.pool)
        while n < size:
            length = min(rng.randint(SLICE_MIN, SLICE_MAX), size - n)
            for _ in range(8):  # avoid re-using a pool range that is still in the window
                off = rng.randrange(0, pool_len - length + 1)
                if all(off + length <= o or off >= o + ln for o, ln in recent):
                    break
            recent.append((off, length))
            t = rng.randrange(N_TABLES - 1)
            t = t + 1 if t >= last_table else t
            last_table = t
            yield self.pool[off : off + length].translate(self.tables[t])
            n += length


class TextModel:
    """License/source-like text (used for LICENSES and inside kubernetes-src.tar.gz)."""

    def __init__(self, seed: int):
        self.seed = seed
        rng = random.Random(seed)
        letters = "etaoinshrdlcumwfgypbvkjxqz"
        lcum = list(itertools.accumulate(1.0 / (i + 1) ** 0.9 for i in range(len(letters))))
        words = []
        for i in range(6000):
            length = 1 + int(-4.0 * math.log(1.0 - ((i + 1) * GOLDEN % 1.0)))
            words.append("".join(rng.choices(letters, cum_weights=lcum, k=min(length, 14))))
        wcum = list(itertools.accumulate(1.0 / (i + 1) ** 1.05 for i in range(len(words))))
        lines, n = [], 0
        while n < 2 * MiB:
            k = rng.randint(6, 14)
            indent = "\t" * rng.choice((0, 0, 1, 1, 2, 3))
            line = indent + " ".join(rng.choices(words, cum_weights=wcum, k=k)) + rng.choice(
                (".", ",", " {", "}", "", "", ";", "()")
            )
            lines.append(line)
            n += len(line) + 1
        self.pool = ("\n".join(lines) + "\n").encode()

    def chunks(self, size: int, salt: int = 0) -> Iterator[bytes]:
        rng = random.Random(self.seed ^ size ^ (salt << 64))
        n = 0
        while n < size:
            length = min(rng.randint(SLICE_MIN, SLICE_MAX), size - n)
            off = rng.randrange(0, len(self.pool) - length + 1)
            yield self.pool[off : off + length]
            n += length


def elf_header(seed: int) -> bytes:
    rng = random.Random(seed)
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    return ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # ET_EXEC
        0x3E,  # x86-64
        1,
        0x450000 + rng.randrange(0x10000) * 16,  # entry
        64,  # phoff
        0,  # shoff: no section headers (like a stripped binary)
        0,
        64,
        56,
        7,
        64,
        0,
        0,
    )


def ratio_of(chunks: Iterable[bytes]) -> float:
    data = b"".join(chunks)
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return len(c.compress(data) + c.flush()) / len(data)


# --------------------------------------------------------------------------- tar writer


class Member:
    __slots__ = ("name", "mode", "size", "isdir", "content")

    def __init__(self, name: str, mode: int, size: int = 0, content: Callable[[], Iterable[bytes]] | None = None,
                 isdir: bool = False):
        self.name, self.mode, self.size, self.content, self.isdir = name, mode, size, content, isdir

    def header(self) -> bytes:
        ti = tarfile.TarInfo(self.name)
        ti.type = tarfile.DIRTYPE if self.isdir else tarfile.REGTYPE
        ti.mode = self.mode
        ti.size = 0 if self.isdir else self.size
        ti.mtime = MTIME
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        return ti.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def d(name: str) -> Member:
    return Member(name, 0o755, isdir=True)


def blob(name: str, data: bytes, mode: int = 0o644) -> Member:
    return Member(name, mode, len(data), lambda: (data,))


def pad512(n: int) -> int:
    return -n % 512


def tar_size(members: list[Member]) -> int:
    n = sum(len(m.header()) + m.size + pad512(m.size) for m in members) + 1024
    return n + (-n % tarfile.RECORDSIZE)


def tar_chunks(members: list[Member]) -> Iterator[bytes]:
    total = 0
    for m in members:
        h = m.header()
        yield h
        total += len(h)
        if not m.isdir:
            got = 0
            for c in m.content():
                got += len(c)
                yield c
            if got != m.size:
                raise AssertionError(f"{m.name}: produced {got} bytes, declared {m.size}")
            total += got
            p = pad512(got)
            if p:
                yield bytes(p)
                total += p
    end = 1024 + (-(total + 1024) % tarfile.RECORDSIZE)
    yield bytes(end)


# --------------------------------------------------------------------------- docker images


def docker_image_members(seed: str, repo: str, layers: list[tuple[str, list[Member]]]) -> list[Member]:
    """A docker-save (v1.2 manifest) archive: <id>/layer.tar per layer, config, manifest, repositories."""
    ids = [hashlib.sha256(f"{seed}/{repo}/{name}".encode()).hexdigest() for name, _ in layers]
    config_id = hashlib.sha256(f"{seed}/{repo}/config".encode()).hexdigest()
    out: list[Member] = []
    parent = ""
    for (name, members), lid in zip(layers, ids):
        inner = list(members)
        size = tar_size(inner)
        legacy = {"id": lid, "created": "2017-03-28T00:00:00Z", "container_config": {"Cmd": None}, "os": "linux"}
        if parent:
            legacy["parent"] = parent
        out += [
            d(f"{lid}/"),
            blob(f"{lid}/VERSION", b"1.0"),
            blob(f"{lid}/json", json.dumps(legacy, sort_keys=True).encode()),
            Member(f"{lid}/layer.tar", 0o644, size, lambda inner=inner: tar_chunks(inner)),
        ]
        parent = lid
    config = {
        "architecture": "amd64",
        "created": "2017-03-28T00:00:00Z",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{i}" for i in ids]},
    }
    tag = f"{repo}:{VERSION}"
    manifest = [{"Config": f"{config_id}.json", "RepoTags": [tag], "Layers": [f"{i}/layer.tar" for i in ids]}]
    out += [
        blob(f"{config_id}.json", json.dumps(config, sort_keys=True).encode()),
        blob("manifest.json", json.dumps(manifest).encode()),
        blob("repositories", json.dumps({repo: {VERSION: ids[-1]}}).encode() + b"\n"),
    ]
    return out


def base_layer(kind: str, model: BinaryModel, size: int) -> list[Member]:
    if kind == "busybox":
        small = [("etc/group", b"root:x:0:\nnogroup:x:65534:\n"), ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")]
        return [d("bin/"), Member("bin/busybox", 0o755, size, lambda: model.chunks(size, elf_header(model.seed))),
                d("etc/")] + [blob(n, c) for n, c in small]
    # debian-iptables: one big blob standing for the distro's files
    return [d("usr/"), d("usr/lib/"), Member("usr/lib/x86_64-linux-gnu.bundle", 0o644, size,
                                            lambda: model.chunks(size))]


# --------------------------------------------------------------------------- parallel gzip


class GzipWriter:
    """Single-member gzip stream compressed pigz-style in a thread pool."""

    def __init__(self, f, level: int = 6, jobs: int | None = None):
        self.f, self.level = f, level
        self.pool = ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2)
        self.inflight: collections.deque = collections.deque()
        self.max_inflight = 2 * (jobs or os.cpu_count() or 2) + 2
        self.crc = 0
        self.size = 0
        self.dict = b""
        self.buf: list[bytes] = []
        self.buf_len = 0
        self.written = 0
        f.write(b"\x1f\x8b\x08\x00" + bytes(4) + b"\x00\x03")  # no name, mtime 0, OS=Unix
        self.written += 10

    def _deflate(self, data: bytes, zdict: bytes) -> bytes:
        if zdict:
            c = zlib.compressobj(self.level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, zdict)
        else:
            c = zlib.compressobj(self.level, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)

    def _drain(self, keep: int) -> None:
        while len(self.inflight) > keep:
            out = self.inflight.popleft().result()
            self.f.write(out)
            self.written += len(out)

    def _submit(self, data: bytes) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.size += len(data)
        self.inflight.append(self.pool.submit(self._deflate, data, self.dict))
        self.dict = data[-WINDOW:]
        self._drain(self.max_inflight)

    def write(self, chunk: bytes) -> None:
        self.buf.append(chunk)
        self.buf_len += len(chunk)
        if self.buf_len >= BLOCK:
            data = b"".join(self.buf)
            self.buf, self.buf_len = [], 0
            self._submit(data)

    def close(self) -> None:
        if self.buf_len:
            self._submit(b"".join(self.buf))
        self._drain(0)
        self.pool.shutdown()
        tail = zlib.compressobj(self.level, zlib.DEFLATED, -15).flush()  # empty final block
        tail += struct.pack("<II", self.crc & 0xFFFFFFFF, self.size & 0xFFFFFFFF)
        self.f.write(tail)
        self.written += len(tail)


# --------------------------------------------------------------------------- layout


def build(args) -> None:
    t0 = time.monotonic()
    seed = str(args.seed)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))

    models: dict[str, BinaryModel] = {}
    for name in list(BINARIES) + ["busybox", "debian-iptables", "pause"]:
        models[name] = BinaryModel(sub_seed(seed, "binary", name))
    text = TextModel(sub_seed(seed, "text"))
    ratios = {n: ratio_of(m.chunks(2 * MiB)) for n, m in models.items()}
    text_ratio = ratio_of(text.chunks(2 * MiB))
    log(f"models ready in {time.monotonic() - t0:.1f}s; gzip -6 ratio of binary content "
        f"{min(ratios.values()):.3f}..{max(ratios.values()):.3f}")

    # Solve the scale so that the compressed total hits the target.
    comp_per_unit = sum(BINARIES[b] * ratios[b] for b in BINARIES)
    comp_per_unit += sum(BINARIES[b] * ratios[b] + base * ratios[kind] for b, (kind, base) in IMAGES.items())
    comp_per_unit += SRC_TGZ_MIB + LICENSES_MIB * text_ratio + PAUSE_MIB * ratios["pause"]
    target = args.size_mb * MiB
    scale = target / (comp_per_unit * MiB)  # MiB-of-table -> MiB-of-output

    def sz(mib: float) -> int:
        return max(4096, int(mib * scale * MiB))

    # kubernetes-src.tar.gz: a real gzip of a tar of source-like text.
    src_target = sz(SRC_TGZ_MIB)
    src_raw = int(src_target / text_ratio)
    nfiles = 24
    src_members = [d("pkg/"), d("pkg/generated/")]
    for i in range(nfiles):
        size = src_raw // nfiles
        src_members.append(Member(f"pkg/generated/zz_generated.{i:02d}.go", 0o644, size,
                                  lambda size=size, i=i: text.chunks(size, salt=i)))
    src_tgz = _gzip_bytes(tar_chunks(src_members))

    def binary(name: str) -> Member:
        m, size = models[name], sz(BINARIES[name])
        return Member(f"kubernetes/server/bin/{name}", 0o755, size, lambda: m.chunks(size, elf_header(m.seed)))

    def image(name: str) -> list[Member]:
        kind, base_mib = IMAGES[name]
        bm, bsize = models[kind], sz(base_mib)
        m, size = models[name], sz(BINARIES[name])
        layers = [
            ("base", base_layer(kind, bm, bsize)),
            ("bin", [d("usr/"), d("usr/local/"), d("usr/local/bin/"),
                     Member(f"usr/local/bin/{name}", 0o755, size, lambda: m.chunks(size, elf_header(m.seed)))]),
        ]
        inner = docker_image_members(seed, f"{REGISTRY}/{name}", layers)
        return [
            Member(f"kubernetes/server/bin/{name}.tar", 0o644, tar_size(inner), lambda: tar_chunks(inner)),
            blob(f"kubernetes/server/bin/{name}.docker_tag", f"{VERSION}\n".encode()),
        ]

    pm, psize = models["pause"], sz(PAUSE_MIB)
    pause_inner = docker_image_members(seed, f"{REGISTRY}/pause-amd64", [
        ("bin", [Member("pause", 0o755, psize, lambda: pm.chunks(psize, elf_header(pm.seed)))]),
    ])
    lic_size = sz(LICENSES_MIB)

    members = [d("kubernetes/"), d("kubernetes/server/"), d("kubernetes/server/bin/")]
    for name in sorted(set(BINARIES) | set(IMAGES)):
        if name in BINARIES:
            members.append(binary(name))
        if name in IMAGES:
            members += image(name)
    members += [
        blob("kubernetes/kubernetes-src.tar.gz", src_tgz),
        Member("kubernetes/LICENSES", 0o644, lic_size, lambda: text.chunks(lic_size)),
        d("kubernetes/addons/"),
        Member(f"kubernetes/addons/{ADDON_PAUSE}", 0o644, tar_size(pause_inner), lambda: tar_chunks(pause_inner)),
    ]

    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        gz = GzipWriter(f, jobs=args.jobs)
        for chunk in tar_chunks(members):
            gz.write(chunk)
        gz.close()
    os.replace(tmp, args.out)
    dt = time.monotonic() - t0
    comp = gz.written
    log(f"wrote {args.out}: {comp / MiB:.1f} MiB compressed (target {args.size_mb} MiB), "
        f"{gz.size / MiB:.1f} MiB uncompressed, ratio {comp / gz.size:.3f}, {dt:.1f}s")
    if args.info_json:
        with open(__file__, "rb") as src:
            gen_sha = hashlib.sha256(src.read()).hexdigest()
        info = {
            "size_mb": args.size_mb,
            "seed": seed,
            "generator_sha256": gen_sha,
            "zlib": zlib.ZLIB_RUNTIME_VERSION,
            "compressed_bytes": comp,
            "uncompressed_bytes": gz.size,
            "ratio": round(comp / gz.size, 4),
            "seconds": round(dt, 1),
        }
        with open(args.info_json, "w") as f:
            f.write(json.dumps(info, indent=2, sort_keys=True) + "\n")
    if args.manifest:
        for m in members:
            kind = "d" if m.isdir else "f"
            print(f"{kind} {m.mode:04o} {m.size:>11} {m.name}")


def _gzip_bytes(chunks: Iterable[bytes]) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container, mtime 0
    return b"".join(c.compress(x) for x in chunks) + c.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=350, help="target compressed size in MiB (default 350)")
    ap.add_argument("--out", required=True, help="output path (.tar.gz)")
    ap.add_argument("--seed", default="0", help="seed; same seed + size => identical bytes (default 0)")
    ap.add_argument("--jobs", type=int, default=None, help="compression threads (default: CPU count)")
    ap.add_argument("--info-json", metavar="PATH", help="also write sizes/ratio/timing as JSON here")
    ap.add_argument("--manifest", action="store_true", help="print the member list on stdout")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    if args.size_mb <= 0:
        ap.error("--size-mb must be positive")
    build(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
