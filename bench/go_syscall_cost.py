#!/usr/bin/env python3
"""What a Go syscall costs under tether's hooks, per Go version, as ratios to native.

tests/go/bench (built per Go version, cgo on, so dynamically linked) times a loop of N
syscalls itself and prints `ns/op`, so process start-up is not measured. Workloads:

    read        1-byte reads from /dev/zero with syscall.Read (entersyscall, funnel, exitsyscall)
    getppid     syscall.Syscall(SYS_GETPPID, 0, 0, 0)
    rawgetppid  syscall.RawSyscall(SYS_GETPPID, 0, 0, 0) (funnel only, no entersyscall)

Modes, run interleaved in rounds (their order rotates each round) so that machine noise
hits all of them alike; each mode's figure is its median over the rounds:

    native      the program alone
    hooked      LD_PRELOAD=libtether.so with the Go hook plan: no detours installed, so every
                syscall takes the trampoline's fast passthrough
    route-all   as hooked plus TETHER_ROUTE_ALL=1: every syscall takes the full hooked path
                (trampoline, runtime.asmcgocall to g0, C dispatcher, raw syscall)
    strace      strace -f -qq -o /dev/null: the cost of tracing with ptrace, for scale

The program reports two figures per run: wall-clock time per call (time.Now around the loop),
the primary figure, and the CPU time of the loop's thread per call, which leaves out time the
thread spent descheduled and so is steadier on a busy machine. The hooks only add work on
that thread, so CPU-time ratios are shown for hooked and route-all too; not for strace, whose
cost is mostly the tracee waiting for the tracer. The last line pools every version and
workload (geometric mean of the ratios), the most precise single estimate of the overhead.

N is calibrated once per workload (on the first version) so that a native run's loop takes
about --target seconds; strace runs use their own, smaller N.

    python3 bench/go_syscall_cost.py [--versions 1.19,1.27] [--rounds 7] [--quick]

--versions, else TETHER_GO_VERSIONS, else all Go versions. --quick: newest selected
version, 3 rounds. Exit status 0 when every run worked (the figures are reported, not judged).
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "tests", ROOT / "tools"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
import go_toolchains  # noqa: E402
import gobuild  # noqa: E402

from tether.analysis.cache import inspect_binary  # noqa: E402
from tether.layer import hooked_env  # noqa: E402

WORKLOADS = ("read", "getppid", "rawgetppid")
MODES = ("native", "hooked", "route-all", "strace")
STRACE = ("-f", "-qq", "-o", "/dev/null")


class RunError(RuntimeError):
    pass


def strace_path() -> str:
    found = shutil.which("strace")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing Debian's strace...", file=sys.stderr, flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "strace"], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                       stdout=subprocess.DEVNULL)
        found = shutil.which("strace")
    if not found:
        raise SystemExit("strace is needed: apt-get install strace")
    return found


def ns_per_op(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall-clock ns per call, thread CPU ns per call) of one run of the bench program."""
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    out = proc.stdout.split()
    if proc.returncode != 0 or len(out) != 4 or out[0] != "ns/op" or out[2] != "cpu-ns/op":
        raise RunError(f"{shlex.join(argv)}: exit {proc.returncode}\n"
                       f"stdout: {proc.stdout[-500:]}\nstderr: {proc.stderr[-2000:]}")
    return float(out[1]), float(out[3])


class Program:
    """The bench program of one Go version and how to start it in each mode."""

    def __init__(self, version: str, strace: str):
        self.version = version
        self.exe = str(gobuild.build(version, "default", "bench"))
        base = dict(os.environ)
        base.pop("TETHER_ROUTE_ALL", None)
        base.pop("LD_PRELOAD", None)
        base.pop("TETHER_GO_PLAN", None)
        hooked = hooked_env(inspect_binary(Path(self.exe)), base)
        self.envs = {"native": base, "hooked": hooked,
                     "route-all": {**hooked, "TETHER_ROUTE_ALL": "1"}, "strace": base}
        self.strace = strace

    def run(self, mode: str, workload: str, n: int) -> tuple[float, float]:
        argv = [self.exe, workload, str(n)]
        if mode == "strace":
            argv = [self.strace, *STRACE, *argv]
        return ns_per_op(argv, self.envs[mode])


def calibrate(prog: Program, workload: str, mode: str, target: float, start: int) -> int:
    """N such that one run's timed loop lasts about `target` seconds (one probe run)."""
    ns = prog.run(mode, workload, start)[0]
    return max(1000, int(round(target * 1e9 / ns, -3)))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    return (f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
            f"load average at start {' '.join(load)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--versions", help="comma-separated Go versions (default: TETHER_GO_VERSIONS, else all)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--target", type=float, default=0.25, help="seconds per native run's loop (default 0.25)")
    ap.add_argument("--strace-target", type=float, default=0.25, help="seconds per strace run's loop")
    ap.add_argument("--quick", action="store_true", help="newest selected version only, 3 rounds")
    args = ap.parse_args()

    if args.versions:
        os.environ["TETHER_GO_VERSIONS"] = args.versions
    versions = go_toolchains.selected_versions()
    rounds = args.rounds
    if args.quick:
        versions, rounds = versions[-1:], 3
    strace = strace_path()

    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    print("date:   ", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    print("machine:", machine())
    print("strace: ", subprocess.run([strace, "-V"], capture_output=True, text=True).stdout.splitlines()[0])
    print(f"Go versions {', '.join(versions)}; {rounds} rounds per mode, median per mode", flush=True)

    progs = {v: Program(v, strace) for v in versions}
    first = progs[versions[0]]
    n = {(w, m): 0 for w in WORKLOADS for m in MODES}
    for w in WORKLOADS:
        first.run("native", w, 20000)  # page everything in once
        native_n = calibrate(first, w, "native", args.target, 100000)
        strace_n = calibrate(first, w, "strace", args.strace_target, 2000)
        for m in MODES:
            n[w, m] = strace_n if m == "strace" else native_n
    print("N per run: " + ", ".join(f"{w} {n[w, 'native']} (strace {n[w, 'strace']})" for w in WORKLOADS),
          flush=True)

    samples: dict[tuple[str, str, str], list[tuple[float, float]]] = {
        (v, w, m): [] for v in versions for w in WORKLOADS for m in MODES}
    total = rounds * len(versions) * len(WORKLOADS)
    done = 0
    for r in range(rounds):
        for v in versions:
            for w in WORKLOADS:
                order = MODES[r % len(MODES):] + MODES[:r % len(MODES)]
                for m in order:
                    samples[v, w, m].append(progs[v].run(m, w, n[w, m]))
                done += 1
                print(f"\r  {done}/{total} round {r + 1}, go {v}, {w}      ", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    wall = {k: statistics.median(x[0] for x in s) for k, s in samples.items()}
    cpu = {k: statistics.median(x[1] for x in s) for k, s in samples.items()}
    print()
    print("| Go | workload | native ns/op (min-max) | hooked/native | route-all/native | strace/native "
          "| CPU time: hooked/native | CPU time: route-all/native |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    pooled: dict[str, list[float]] = {"hooked": [], "route-all": [], "cpu hooked": [], "cpu route-all": []}
    for v in versions:
        for w in WORKLOADS:
            nat = [x[0] for x in samples[v, w, "native"]]
            r = {m: wall[v, w, m] / wall[v, w, "native"] for m in MODES}
            c = {m: cpu[v, w, m] / cpu[v, w, "native"] for m in ("hooked", "route-all")}
            for m in ("hooked", "route-all"):
                pooled[m].append(r[m])
                pooled["cpu " + m].append(c[m])
            print(f"| {v} | {w} | {wall[v, w, 'native']:.0f} ({min(nat):.0f}-{max(nat):.0f}) "
                  f"| {r['hooked']:.2f} | {r['route-all']:.2f} | {r['strace']:.0f} "
                  f"| {c['hooked']:.2f} | {c['route-all']:.2f} |")

    def gmean(xs: list[float]) -> float:
        return math.exp(statistics.fmean(math.log(x) for x in xs))

    print()
    print(f"pooled over {len(pooled['hooked'])} version x workload cells (geometric mean): "
          f"hooked/native {gmean(pooled['hooked']):.3f} wall, {gmean(pooled['cpu hooked']):.3f} CPU; "
          f"route-all/native {gmean(pooled['route-all']):.3f} wall, {gmean(pooled['cpu route-all']):.3f} CPU")
    worst = max(pooled["hooked"])
    print(f"goal hooked/native <= 1.10: highest cell {worst:.2f} wall, {max(pooled['cpu hooked']):.2f} CPU "
          f"({'met in every cell' if worst <= 1.10 else 'NOT met in every cell'} on this run)")
    print("goal trace/native <= 1.5: for `tether trace`, not built yet; strace/native is shown for scale")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RunError, gobuild.BuildError) as e:
        print(f"\ngo_syscall_cost: {e}", file=sys.stderr)
        sys.exit(1)
