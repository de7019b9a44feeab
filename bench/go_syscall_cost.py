#!/usr/bin/env python3
"""What a Go syscall costs under tether's hooks, per Go version, as ratios to native.

tests/go/bench (built per Go version, cgo on, so dynamically linked; with --variant static,
CGO_ENABLED=0, and the layer injected at exec) times a loop of N syscalls itself and prints
`ns/op`, so process start-up is not measured. Workloads:

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
    trace       tether trace -o /dev/null: every syscall through the dispatcher, recorded in the
                process's trace ring and decoded by the session (skipped, with a note, if this
                tether has no `trace` command)
    strace      strace -f -qq -o /dev/null: the cost of tracing with ptrace, for scale

Each cell also shows the spread of the native runs (min-max), a direct view of the machine's
noise: on a shared machine one cell's ratio moves by +-10% between runs. The lines under the
table pool every cell: for each mode, the geometric mean of the per-round ratios mode/native
(a run and the native run of the same round and cell form a pair) with a 95% confidence
interval, and the median difference in ns per call. The funnel and the trampoline are the
same code in every Go version, so this is the most precise estimate of the overhead.

N is calibrated once per workload (on the first version) so that a native run's loop takes
about --target seconds; trace and strace runs use their own, smaller N (--trace-target).

    python3 bench/go_syscall_cost.py [--versions 1.19,1.27] [--rounds 7] [--quick]

--versions, else TETHER_GO_VERSIONS, else all Go versions. --quick: newest selected
version, 3 rounds. Exit status 0 when every run worked (the figures are reported, not judged).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
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
from tether.layer import STATIC_LIBRARY_NAME, go_plan, hooked_env, layer_path  # noqa: E402
from tether.session import inject  # noqa: E402

WORKLOADS = ("read", "getppid", "rawgetppid")
MODES = ("native", "hooked", "route-all", "trace", "strace")
SLOW_MODES = ("trace", "strace")  # calibrated on their own
STRACE = ("-f", "-qq", "-o", "/dev/null")
TETHER_TRACE = (sys.executable, "-m", "tether", "trace", "-o", "/dev/null", "--")


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


def have_tether_trace() -> bool:
    return subprocess.run([*TETHER_TRACE[:4], "--help"], capture_output=True).returncode == 0


def ns_per_op(argv: list[str], env: dict[str, str]) -> float:
    """Wall-clock ns per call of one run of the bench program, as it reports it."""
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    out = proc.stdout.split()
    if proc.returncode != 0 or len(out) != 2 or out[0] != "ns/op":
        raise RunError(f"{shlex.join(argv)}: exit {proc.returncode}\n"
                       f"stdout: {proc.stdout[-500:]}\nstderr: {proc.stderr[-2000:]}")
    return float(out[1])


def ns_per_op_injected(argv: list[str], env: dict[str, str], layer_env: dict[str, str]) -> float:
    """As ns_per_op, for a static program with the layer injected at exec."""
    proc = inject.spawn(argv, argv[0], env, layer_path(STATIC_LIBRARY_NAME), layer_env,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    out, err = proc.communicate(timeout=300)
    words = out.split()
    if proc.returncode != 0 or len(words) != 2 or words[0] != "ns/op":
        raise RunError(f"{shlex.join(argv)} (injected): exit {proc.returncode}\nstdout: {out[-500:]}\n"
                       f"stderr: {err[-2000:]}")
    return float(words[1])


class Program:
    """The bench program of one Go version and how to start it in each mode."""

    def __init__(self, version: str, strace: str, variant: str = "default"):
        self.version = version
        self.exe = str(gobuild.build(version, variant, "bench"))
        base = dict(os.environ)
        base.pop("TETHER_ROUTE_ALL", None)
        base.pop("LD_PRELOAD", None)
        base.pop("TETHER_GO_PLAN", None)
        report = inspect_binary(Path(self.exe))
        # A static build takes the layer by injection (session/inject.py), with the plan in the
        # injected layer's own environment; the program's stays base.
        self.injected = report["verdict"]["hook"] == "inject"
        hooked = {"TETHER_GO_PLAN": go_plan(report)} if self.injected else hooked_env(report, base)
        self.envs = {"native": base, "hooked": hooked,
                     "route-all": {**hooked, "TETHER_ROUTE_ALL": "1"},
                     "trace": base, "strace": base}
        self.strace = strace

    def run(self, mode: str, workload: str, n: int) -> float:
        argv = [self.exe, workload, str(n)]
        if self.injected and mode in ("hooked", "route-all"):
            return ns_per_op_injected(argv, self.envs["native"], self.envs[mode])
        if mode == "strace":
            argv = [self.strace, *STRACE, *argv]
        elif mode == "trace":
            argv = [*TETHER_TRACE, *argv]
        return ns_per_op(argv, self.envs[mode])


def calibrate(prog: Program, workload: str, mode: str, target: float, start: int) -> int:
    """N such that one run's timed loop lasts about `target` seconds (one probe run)."""
    ns = prog.run(mode, workload, start)
    return max(1000, int(round(target * 1e9 / ns, -3)))


def layer_id() -> str:
    """Which tether: git commit of the source tree and a hash of the libtether.so in use."""
    lib = layer_path()
    digest = hashlib.sha256(lib.read_bytes()).hexdigest()[:12]
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        head = "not a git tree"
    return f"source {head}, {lib.name} sha256 {digest}"


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
    ap.add_argument("--trace-target", type=float, default=0.25,
                    help="seconds per trace or strace run's loop (default 0.25)")
    ap.add_argument("--quick", action="store_true", help="newest selected version only, 3 rounds")
    ap.add_argument("--variant", choices=("default", "static"), default="default",
                    help="the bench program's build: default (cgo, dynamic: LD_PRELOAD) or static "
                         "(CGO_ENABLED=0: the layer injected at exec)")
    ap.add_argument("--json", metavar="FILE", help="also write every sample (ns/op per run) to FILE")
    args = ap.parse_args()

    if args.versions:
        os.environ["TETHER_GO_VERSIONS"] = args.versions
    versions = go_toolchains.selected_versions()
    rounds = args.rounds
    if args.quick:
        versions, rounds = versions[-1:], 3
    strace = strace_path()
    modes = MODES if have_tether_trace() else tuple(m for m in MODES if m != "trace")

    print("command:", shlex.join([Path(sys.executable).name, *sys.argv]))
    print("date:   ", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))
    print("machine:", machine())
    tether_id = layer_id()
    print("tether: ", tether_id)
    print("strace: ", subprocess.run([strace, "-V"], capture_output=True, text=True).stdout.splitlines()[0])
    print(f"Go versions {', '.join(versions)} ({args.variant} builds); {rounds} rounds per mode, median per mode",
          flush=True)

    progs = {v: Program(v, strace, args.variant) for v in versions}
    first = progs[versions[0]]
    n: dict[tuple[str, str], int] = {}
    for w in WORKLOADS:
        first.run("native", w, 20000)  # page everything in once
        native_n = calibrate(first, w, "native", args.target, 100000)
        for m in modes:
            n[w, m] = calibrate(first, w, m, args.trace_target, 2000) if m in SLOW_MODES else native_n
    print("N per run: " + "; ".join(
        f"{w} {n[w, 'native']}" + "".join(f", {m} {n[w, m]}" for m in modes if m in SLOW_MODES)
        for w in WORKLOADS), flush=True)

    samples: dict[tuple[str, str, str], list[float]] = {
        (v, w, m): [] for v in versions for w in WORKLOADS for m in modes}
    total = rounds * len(versions) * len(WORKLOADS)
    done = 0
    for r in range(rounds):
        for v in versions:
            for w in WORKLOADS:
                order = modes[r % len(modes):] + modes[:r % len(modes)]
                for m in order:
                    samples[v, w, m].append(progs[v].run(m, w, n[w, m]))
                done += 1
                print(f"\r  {done}/{total} round {r + 1}, go {v}, {w}      ", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)

    if layer_id().split(", ")[-1] != tether_id.split(", ")[-1]:
        print(f"warning: libtether.so changed during the run (now: {layer_id()}); "
              "the figures mix two builds")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": sys.argv, "tether": tether_id, "rounds": rounds,
            "n": {f"{w} {m}": n[w, m] for w, m in n},
            "samples": [{"go": v, "workload": w, "mode": m, "ns_per_op": x}
                        for (v, w, m), x in samples.items()]}, indent=1) + "\n")
    med = {k: statistics.median(x) for k, x in samples.items()}
    print()
    others = [m for m in modes if m != "native"]
    print("| Go | workload | native ns/op (min-max) | " + " | ".join(f"{m}/native" for m in others) + " |")
    print("|---|---|---|" + "---:|" * len(others))
    pooled: dict[str, list[float]] = {m: [] for m in others}
    for v in versions:
        for w in WORKLOADS:
            nat = samples[v, w, "native"]
            cells = []
            for m in others:
                r = med[v, w, m] / med[v, w, "native"]
                pooled[m].append(r)
                cells.append(f"{r:.2f}" if r < 10 else f"{r:.0f}")
            print(f"| {v} | {w} | {med[v, w, 'native']:.0f} ({min(nat):.0f}-{max(nat):.0f}) | "
                  + " | ".join(cells) + " |")

    def f(x: float) -> str:
        return f"{x:.3f}" if x < 10 else f"{x:.0f}"

    print()
    print(f"pooled over {len(pooled['hooked'])} cells x {rounds} rounds, paired per round:")
    est = {}
    for m in others:
        pairs = [(x, y) for v in versions for w in WORKLOADS
                 for x, y in zip(samples[v, w, m], samples[v, w, "native"], strict=True)]
        logs = [math.log(x / y) for x, y in pairs]
        diffs = [x - y for x, y in pairs]
        mean = statistics.fmean(logs)
        half = 1.96 * statistics.stdev(logs) / math.sqrt(len(logs)) if len(logs) > 1 else 0.0
        est[m] = math.exp(mean)
        print(f"  {m + '/native':17} {f(math.exp(mean)):>6}  (95% CI {f(math.exp(mean - half))}-"
              f"{f(math.exp(mean + half))}), median {statistics.median(diffs):+.0f} ns per call")
    worst = max(pooled["hooked"])
    print(f"goal hooked/native <= 1.10: pooled {est['hooked']:.3f}, highest single cell {worst:.3f} "
          f"({'met' if est['hooked'] <= 1.10 else 'NOT met'} overall; "
          f"{'every cell' if worst <= 1.10 else 'not every cell'} under 1.10 on this run)")
    if "trace" in est:
        worst = max(pooled["trace"])
        print(f"goal trace/native <= 1.5: pooled {f(est['trace'])} ({'met' if est['trace'] <= 1.5 else 'NOT met'}"
              f" overall), highest single cell {f(worst)}")
    else:
        print("goal trace/native <= 1.5: not measured, this tether has no `trace` command")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RunError, gobuild.BuildError) as e:
        print(f"\ngo_syscall_cost: {e}", file=sys.stderr)
        sys.exit(1)
