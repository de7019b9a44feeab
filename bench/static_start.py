"""What the injection adds to a static Go program's start-up, side by side.

tests/go/probe `hello` (prints one line, exits), built static and dynamic, wall-clock time per
run in each mode, the modes alternating within each round (order rotating), medians over the
rounds:

    native static      the static build alone
    injected           the static build with the layer injected at exec, its plan given
                       directly (session/inject.py from this process: no session, no
                       interpreter start): the injection's own cost
    trace static       tether trace -o /dev/null -- the static build (the whole command: Python
                       start, session, injection, the program, the end)
    native dynamic     the dynamic build alone
    trace dynamic      tether trace -o /dev/null -- the dynamic build (LD_PRELOAD)

Usage: python3 bench/static_start.py [--go 1.27] [--rounds 9] [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

import gobuild  # noqa: E402

from tether.analysis.cache import inspect_binary  # noqa: E402
from tether.layer import STATIC_LIBRARY_NAME, go_plan, layer_path  # noqa: E402
from tether.session import inject  # noqa: E402

TRACE = [sys.executable, "-m", "tether", "trace", "-o", os.devnull, "--"]


def timed(start) -> float:
    t = time.perf_counter()
    proc = start()
    if proc.wait() != 0:
        raise SystemExit(f"{proc.args}: exit {proc.returncode}")
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--go", default="1.27")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--runs", type=int, default=5, help="runs per mode per round (their median is the sample)")
    args = ap.parse_args()
    static, dynamic = (str(gobuild.build(args.go, v)) for v in ("static", "default"))
    plan = {"TETHER_GO_PLAN": go_plan(inspect_binary(Path(static)))}
    layer = layer_path(STATIC_LIBRARY_NAME)
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("TETHER_")}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    modes = {
        "native static": lambda: subprocess.Popen([static, "hello"], env=env, **quiet),
        "injected": lambda: inject.spawn([static, "hello"], static, env, layer, plan, **quiet),
        "trace static": lambda: subprocess.Popen([*TRACE, static, "hello"], env=env, **quiet),
        "native dynamic": lambda: subprocess.Popen([dynamic, "hello"], env=env, **quiet),
        "trace dynamic": lambda: subprocess.Popen([*TRACE, dynamic, "hello"], env=env, **quiet),
    }
    for start in modes.values():  # page everything in, compile bytecode
        timed(start)
    samples: dict[str, list[float]] = {m: [] for m in modes}
    names = list(modes)
    for r in range(args.rounds):
        for m in names[r % len(names):] + names[:r % len(names)]:
            samples[m].append(statistics.median(timed(modes[m]) for _ in range(args.runs)))
    med = {m: statistics.median(v) for m, v in samples.items()}
    print(f"Go {args.go} probe hello, {args.rounds} rounds x {args.runs} runs, medians (ms)")
    for m in names:
        print(f"  {m:<15} {med[m]:7.1f} ms   (round medians {min(samples[m]):.1f}-{max(samples[m]):.1f})")
    print(f"injection alone adds      {med['injected'] - med['native static']:+.1f} ms")
    print(f"tether trace adds, static {med['trace static'] - med['native static']:+.1f} ms "
          f"(goal <= 150), dynamic {med['trace dynamic'] - med['native dynamic']:+.1f} ms")


if __name__ == "__main__":
    main()
