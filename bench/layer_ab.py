"""Two builds of libtether.so side by side: this tree's (installed) against another revision's.

For a change to the layer that should cost nothing (a refactor, a moved check), the figure that
matters is new/old on the same machine in the same minutes, not two runs of
go_syscall_cost.py an hour apart. The other revision is built with CMake from `git archive`
into ~/.cache/tether/ab/REV. Workloads, each timed by the program itself (ns per call):

    libc read        tests/native/libc_probe: 1-byte reads from /dev/zero, LD_PRELOAD only
    go read          tests/go/bench (Go --go): syscall.Read, hooked (trampoline's passthrough)
    go getppid       syscall.Syscall(SYS_GETPPID), hooked
    go route-all     getppid with TETHER_ROUTE_ALL=1: trampoline, g0, dispatcher, raw syscall

Old and new alternate within each round (their order flips each round); each line gives the
medians and new/old over the per-round pairs (geometric mean). Usage:

    python3 bench/layer_ab.py --rev HEAD~1 [--rounds 7] [--go 1.27]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

import gobuild  # noqa: E402

from tether.analysis.cache import inspect_binary  # noqa: E402
from tether.layer import go_plan, layer_path  # noqa: E402

CACHE = Path(os.environ.get("TETHER_CACHE", Path.home() / ".cache" / "tether")) / "ab"


def build_revision(rev: str) -> Path:
    """libtether.so of git revision rev, built once and cached by its commit."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    out = CACHE / commit / "libtether.so"
    if out.is_file():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        src, build = Path(tmp) / "src", Path(tmp) / "build"
        src.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "CMakeLists.txt", "layer"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        for step in (["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                     ["cmake", "--build", str(build)]):
            subprocess.run(step, check=True, capture_output=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        (build / "libtether.so").replace(out)
    return out


def ns_per_op(argv: list[str], env: dict[str, str]) -> float:
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    words = r.stdout.split()
    if r.returncode != 0 or len(words) != 2 or "ns/op" not in words:
        raise SystemExit(f"{' '.join(argv)}: exit {r.returncode}: {r.stdout[-300:]} {r.stderr[-1000:]}")
    return float(words[0] if words[1] == "ns/op" else words[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", required=True, help="the other revision (e.g. HEAD~1, a commit, a branch)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--go", default="1.27", help="Go version of the Go workloads")
    ap.add_argument("--n", type=int, default=2_000_000, help="calls per run")
    args = ap.parse_args()

    layers = {"old": str(build_revision(args.rev)), "new": str(layer_path())}
    base = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "TETHER_GO_PLAN", "TETHER_ROUTE_ALL")}
    probe = str(gobuild.build_c("libc_probe", ("-O2", "-Wall", "-Wextra", "-D_FORTIFY_SOURCE=2", "-pthread")))
    go = str(gobuild.build(args.go, "default", "bench"))
    plan = go_plan(inspect_binary(Path(go)))
    n = str(args.n)
    workloads = {
        "libc read": ([probe, "reads", n], {}),
        "go read": ([go, "read", n], {"TETHER_GO_PLAN": plan}),
        "go getppid": ([go, "getppid", n], {"TETHER_GO_PLAN": plan}),
        "go route-all": ([go, "getppid", n], {"TETHER_GO_PLAN": plan, "TETHER_ROUTE_ALL": "1"}),
    }
    times = {(w, side): [] for w in workloads for side in layers}
    for rnd in range(args.rounds):
        for w, (argv, extra) in workloads.items():
            for side in (("old", "new") if rnd % 2 == 0 else ("new", "old")):
                env = {**base, **extra, "LD_PRELOAD": layers[side]}
                times[w, side].append(ns_per_op(argv, env))
    print(f"libtether.so new (this tree) against old ({args.rev}), {args.rounds} rounds, Go {args.go}")
    for w in workloads:
        old, new = times[w, "old"], times[w, "new"]
        paired = statistics.geometric_mean([b / a for a, b in zip(old, new, strict=True)])
        print(f"{w:<14} old {statistics.median(old):8.1f} ns   new {statistics.median(new):8.1f} ns   "
              f"new/old {paired:.3f}")


if __name__ == "__main__":
    main()
