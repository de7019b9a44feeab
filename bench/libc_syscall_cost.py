#!/usr/bin/env python3
"""What a libc call costs when the layer stands in for it: 1-byte reads from /dev/zero.

tests/native/libc_probe (`reads N`) times N read() calls itself and prints ns per call, so
process start-up is not measured. Modes, interleaved in rounds (order rotating) so machine
noise hits all alike; each figure is the median over rounds, and each ratio is also given as
the geometric mean of per-round ratios (a run over the native run of its own round):

    native   the program alone: glibc's read()
    hooked   LD_PRELOAD=libtether.so, no session: layer/libc/io.c's read() -> the dispatcher
             -> a raw syscall (goal: hooked/native <= 1.10)
    trace    tether trace -o /dev/null: every call recorded in the trace ring and decoded by the
             session (the same N: fewer calls would time the ring's first lap, page faults
             and all)

    python3 bench/libc_syscall_cost.py [--rounds 7] [--n 2000000]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

import gobuild  # noqa: E402

from tether.layer import preload_env  # noqa: E402


def ns_per_read(argv: list[str], env: dict[str, str] | None = None) -> float:
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0 or not r.stdout.endswith("ns/op\n"):
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): {r.stdout} {r.stderr}")
    return float(r.stdout.split()[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=2_000_000)
    args = ap.parse_args()
    probe = str(gobuild.build_c("libc_probe", ("-O2", "-Wall", "-Wextra", "-D_FORTIFY_SOURCE=2", "-pthread")))
    modes = {
        "native": lambda: ns_per_read([probe, "reads", str(args.n)]),
        "hooked": lambda: ns_per_read([probe, "reads", str(args.n)], preload_env(dict(os.environ))),
        "trace": lambda: ns_per_read([sys.executable, "-m", "tether", "trace", "-o", os.devnull, "--",
                                      probe, "reads", str(args.n)]),
    }
    results: dict[str, list[float]] = {m: [] for m in modes}
    names = list(modes)
    for rnd in range(args.rounds):
        for m in names[rnd % len(names):] + names[:rnd % len(names)]:
            results[m].append(modes[m]())
    med = {m: statistics.median(v) for m, v in results.items()}
    print(f"1-byte read() from /dev/zero, {args.rounds} rounds, medians (native spread "
          f"{min(results['native']):.0f}-{max(results['native']):.0f} ns)")
    for m in names:
        # Each run against the native run of its own round: noise that moves a whole round cancels.
        paired = statistics.geometric_mean([a / b for a, b in zip(results[m], results["native"], strict=True)])
        print(f"{m:<8}{med[m]:>9.1f} ns   {m}/native = {med[m] / med['native']:.3f} (medians), "
              f"{paired:.3f} (geometric mean of per-round ratios)" + ("   goal <= 1.10" if m == "hooked" else ""))


if __name__ == "__main__":
    main()
