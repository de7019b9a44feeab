"""A Go program's syscalls after tether attached to it and detached again, against a run
tether never touched: the hooks stay patched in, switched off, and must cost next to nothing.

tests/go/bench `getppid N wait`, static and dynamic builds: it warms up, prints "ready" and
waits; in the "detached" runs `tether trace -p PID --duration 0.3` attaches and detaches
meanwhile (its exit is waited for), in the "never" runs nothing happens; then the timed loop.
The two alternate within each round (order flipping), medians over the rounds.

    python3 bench/attach.py [--go 1.27] [--rounds 7] [--n 3000000]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

import gobuild  # noqa: E402

TRACE = [sys.executable, "-m", "tether", "trace", "-o", "/dev/null", "--duration", "0.3", "-p"]


def run(exe: str, n: int, attach: bool) -> float:
    proc = subprocess.Popen([exe, "getppid", str(n), "wait"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline() == "ready\n"
    if attach:
        subprocess.run([*TRACE, str(proc.pid)], check=True)
    out, _ = proc.communicate("go\n", timeout=300)
    if proc.returncode != 0 or not out.startswith("ns/op "):
        raise SystemExit(f"{exe}: exit {proc.returncode}: {out}")
    return float(out.split()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--go", default="1.27")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=3_000_000)
    args = ap.parse_args()
    print(f"Go {args.go} bench getppid {args.n}, {args.rounds} rounds; ns per call, medians")
    for variant in ("static", "default"):
        exe = str(gobuild.build(args.go, variant, "bench"))
        samples = {"never": [], "detached": []}
        for r in range(args.rounds):
            for mode in (("never", "detached") if r % 2 == 0 else ("detached", "never")):
                samples[mode].append(run(exe, args.n, mode == "detached"))
        never, detached = (statistics.median(samples[m]) for m in ("never", "detached"))
        pairs = statistics.geometric_mean([d / v for v, d in zip(samples["never"], samples["detached"], strict=True)])
        print(f"  {variant:<8} never attached {never:6.1f}   attached, then detached {detached:6.1f}   "
              f"detached/never {pairs:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
