#!/usr/bin/env python3
"""What a relayed connect costs in CPU, back to back, by process (issue 20).

On this 2-core VM back-to-back relayed connects are bound by CPU, not by waiting, and wall
times drift by a third between runs; CPU per connect and the agent's thread switches per
connect drift far less, so changes to the connect path are compared on them (run before and
after, alternating). A `tether agent --listen` in a throwaway namespace over veth (as
bench/link.py), the Go netclient under `tether exec --target tcp://...` connecting N times in a
row to a listener there (netclient `acceptor`); for each round, per connect: the whole
machine's busy CPU (/proc/stat), the agent's, the `tether exec` tree's (the stand-in and the
program: getrusage of children), the agent's context switches (all its threads) and wall time.

    python3 bench/connect_cpu.py [--n 3000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tools"), str(ROOT / "bench")]

import go_toolchains  # noqa: E402
import gobuild  # noqa: E402
import netns  # noqa: E402
from relay_throughput import listening, network_agent  # noqa: E402

TETHER = [sys.executable, "-m", "tether"]
ACCEPT_PORT = 7070
TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK  # all but idle and iowait


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime, all threads


def switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue  # a thread that ended meanwhile
        total += sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches" in line)
    return total


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--version", default=go_toolchains.selected_versions()[-1])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    exe = gobuild.build(args.version, "default", "netclient")
    with netns.TargetNamespace(veth=True) as ns, tempfile.TemporaryDirectory() as tmp, \
            network_agent(ns, tmp) as (agent, address, token):
        acceptor = listening(ns.popen, [str(exe), "acceptor", f"{ns.veth_ns_addr}:{ACCEPT_PORT}"],
                             "acceptor listening")
        try:
            argv = [*TETHER, "exec", "--target", f"tcp://{address}", "--token-file", str(token), "--",
                    str(exe), "connects", f"{ns.veth_ns_addr}:{ACCEPT_PORT}", str(args.n)]
            print(f"{args.rounds} rounds of {args.n} relayed connects back to back, Go {args.version}; per connect:")
            for r in range(args.rounds):
                before = (machine_busy_s(), process_cpu_s(agent.pid), children_cpu_s(), switches(agent.pid),
                          time.monotonic())
                out = subprocess.run(argv, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
                after = (machine_busy_s(), process_cpu_s(agent.pid), children_cpu_s(), switches(agent.pid),
                         time.monotonic())
                if out.returncode != 0 or not out.stdout.startswith("connects p50_us"):
                    raise SystemExit(f"round {r}: {out.stdout} {out.stderr}")
                busy, agent_s, exec_s, switched, wall = (b - a for a, b in zip(before, after))
                us = 1e6 / args.n
                print(f"  round {r + 1}: CPU {busy * us:.0f} us (agent {agent_s * us:.0f}, tether exec and the program "
                      f"{exec_s * us:.0f}, the rest {(busy - agent_s - exec_s) * us:.0f}); agent thread switches "
                      f"{switched / args.n:.1f}; wall {wall * us:.0f} us (p50 {float(out.stdout.split()[2]):.0f} us)")
        finally:
            acceptor.kill()
            acceptor.wait()


if __name__ == "__main__":
    main()
