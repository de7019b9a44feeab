#!/usr/bin/env python3
"""How long `tether inspect` takes on a large (>= 50 MB) Go binary, beside `go tool nm`.

Generates a Go program with many functions and a large embedded blob (deterministic, cached),
builds it with the newest Go toolchain, then times in one run:
  - the analysis in-process (best and first of several runs),
  - `tether inspect --no-cache` as a command, cold analysis,
  - `tether inspect` served from the plan cache,
  - `go tool nm` on the same binary, for scale.

    python3 bench/inspect_speed.py [--functions 30000] [--blob-mb 40] [--runs 5]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import go_toolchains  # noqa: E402

from tether.analysis.plan import analyse  # noqa: E402

PER_FILE = 1000


def generate(src: Path, functions: int, blob_mb: int) -> None:
    src.mkdir(parents=True)
    (src / "go.mod").write_text("module tether.bench/big\n\ngo 1.19\n")
    rng = random.Random(1)
    (src / "blob.bin").write_bytes(rng.randbytes(blob_mb << 20))
    for start in range(0, functions, PER_FILE):
        body = ["package main\n"]
        for i in range(start, min(start + PER_FILE, functions)):
            cases = "".join(f"\tcase {k}:\n\t\tx = x*{rng.randrange(3, 99)} + {rng.randrange(1 << 20)}\n"
                            for k in range(8))
            body.append(f"func f{i}(x int) int {{\n\tswitch x % 8 {{\n{cases}\t}}\n\treturn x ^ {i}\n}}\n")
        (src / f"gen{start // PER_FILE:03}.go").write_text("".join(body))
    table = ", ".join(f"f{i}" for i in range(functions))
    (src / "main.go").write_text(
        'package main\n\nimport (\n\t_ "embed"\n\t"fmt"\n\t"net"\n\t"os"\n)\n\n'
        "//go:embed blob.bin\nvar blob []byte\n\n"
        f"var table = []func(int) int{{{table}}}\n\n"
        "func main() {\n\tn := len(os.Args)\n\t_, err := net.LookupPort(\"tcp\", \"http\")\n"
        "\tfmt.Println(table[n](n), blob[n], err == nil)\n}\n")


def big_binary(functions: int, blob_mb: int) -> Path:
    version = go_toolchains.selected_versions()[-1]
    go_toolchains.ensure(version)
    key = hashlib.sha256(f"{functions}:{blob_mb}:{go_toolchains.PINNED[version]}:1".encode()).hexdigest()[:16]
    out = go_toolchains.cache_dir() / "bench" / f"big-{key}"
    exe = out / "big"
    if exe.is_file():
        return exe
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        generate(src, functions, blob_mb)
        print(f"building a {functions}-function Go {version} program (once, then cached)...", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "build", "-buildvcs=false", "-o", str(exe) + ".tmp", "."], cwd=src,
                       env=go_toolchains.go_env(version), check=True)
        os.replace(str(exe) + ".tmp", exe)
    return exe


def timed(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--functions", type=int, default=30000)
    ap.add_argument("--blob-mb", type=int, default=40)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    exe = big_binary(args.functions, args.blob_mb)
    size_mb = exe.stat().st_size / 1e6
    version = go_toolchains.selected_versions()[-1]
    env = go_toolchains.go_env(version)

    inproc = []
    for _ in range(args.runs):
        t = time.perf_counter()
        analyse(exe)
        inproc.append(time.perf_counter() - t)
    tether = [sys.executable, "-m", "tether", "inspect", "--json"]
    with tempfile.TemporaryDirectory() as cache:
        cenv = dict(os.environ, TETHER_CACHE=cache)
        cold = [timed([*tether, "--no-cache", str(exe)], cenv) for _ in range(args.runs)]
        timed([*tether, str(exe)], cenv)  # fill the cache
        cached = [timed([*tether, str(exe)], cenv) for _ in range(args.runs)]
        startup = [timed([sys.executable, "-m", "tether", "--version"], cenv) for _ in range(args.runs)]
    nm = [timed(["go", "tool", "nm", str(exe)], env) for _ in range(args.runs)]

    med = statistics.median
    print(f"binary: {exe} ({size_mb:.1f} MB, Go {version}, {args.functions} generated functions)")
    print(f"analysis in-process      first {inproc[0] * 1e3:7.1f} ms   median {med(inproc) * 1e3:7.1f} ms")
    print(f"tether inspect --no-cache        median {med(cold) * 1e3:7.1f} ms")
    print(f"tether inspect (cached)          median {med(cached) * 1e3:7.1f} ms")
    print(f"tether --version (start-up)      median {med(startup) * 1e3:7.1f} ms")
    print(f"go tool nm (reference)           median {med(nm) * 1e3:7.1f} ms")
    print(f"ratio inspect --no-cache / go tool nm: {med(cold) / med(nm):.2f}")
    print(f"ratio inspect cached / --no-cache:     {med(cached) / med(cold):.2f}")
    return 0 if med(cold) < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
