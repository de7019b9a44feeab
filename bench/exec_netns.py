#!/usr/bin/env python3
"""`tether exec --target netns:NAME` against running the same program inside the namespace.

"direct" runs the Go client (tests/go/netclient) with `ip netns exec NAME`: the best a program
placed in the target itself can do. "tether" runs the same binary on this side under
`tether exec`: its sockets are made in the namespace by the agent and passed back, so after
connect both take the same kernel path. Runs are interleaved, their order alternating by round.

    throughput   1 GiB over TCP to a sink in the namespace, sha256 checked end to end;
                 ratio = direct seconds / tether seconds (goal >= 0.95)
    connect      p50 of N sequential connects (Go's net.Dial) to the namespace's HTTP server;
                 added = tether p50 - direct p50 (goal <= 200 us)
    dns          p50 of N sequential lookups of a name only the namespace's DNS server knows
    start-up     wall time of `netclient exit 0` under tether exec minus the same run natively
                 (goal <= 150 ms added); also printed: `python3 -c pass`, the interpreter's share.
    first fetch  wall time of `netclient http URL` (a name only the namespace's DNS knows: the
                 resolver's files, a UDP query, a connect, one HTTP exchange) under tether exec
                 minus the same run inside the namespace: start-up until useful work.
                 Python runs as installed, with its modules' bytecode compiled (pip compiles a
                 package's at install; an editable tree has none, and PYTHONDONTWRITEBYTECODE,
                 set here, would have every run compile tether's 5000 lines again): the runs
                 share a bytecode cache (PYTHONPYCACHEPREFIX), filled by a first run.

    python3 bench/exec_netns.py [--version 1.27] [--rounds 3] [--bytes N] [--count 200] [--starts 5]

Needs root (it makes a throwaway namespace with tests/netns.py and removes it).
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
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tools")]

import go_toolchains  # noqa: E402
import gobuild  # noqa: E402
import netns  # noqa: E402

SINK = f"{netns.WEB_ADDR}:7000"


def tether_argv(ns) -> list[str]:
    return [sys.executable, "-m", "tether", "exec", "--target", f"netns:{ns.name}", "--"]


def client(ns, how: str, exe: Path, *steps: str) -> str:
    argv = ns.exec_argv([exe, *steps]) if how == "direct" else [*tether_argv(ns), str(exe), *steps]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if r.returncode != 0 or "error" in r.stdout:
        raise SystemExit(f"{how} {' '.join(steps)} failed ({r.returncode}): {r.stdout} {r.stderr}")
    return r.stdout.split()[-1] if not steps[0] == "send" else r.stdout.split()[3]


def transfer(ns, how: str, exe: Path, size: int) -> float:
    sink = ns.popen([exe, "sink", SINK], stdout=subprocess.PIPE, text=True)
    try:
        if sink.stdout.readline().strip() != "sink listening":
            raise SystemExit("the sink did not start")
        seconds = float(client(ns, how, exe, "send", SINK, str(size)))
        if sink.stdout.readline().split() != ["sink", str(size)]:
            raise SystemExit("the sink saw another byte count")
        return seconds
    finally:
        sink.kill()
        sink.wait()


def installed_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(Path.home() / ".cache" / "tether" / "bench" / "pycache")
    return env


def wall(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", default=go_toolchains.ALL_VERSIONS[-1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=1 << 30)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--starts", type=int, default=5, help="start-up runs per mode and round")
    args = ap.parse_args()
    go_toolchains.ensure(args.version)
    exe = gobuild.build(args.version, "default", "netclient")
    hows = ["direct", "tether"]
    results: dict[str, dict[str, list[float]]] = {k: {h: [] for h in hows} for k in
                                                  ("throughput", "connect", "dns", "start-up", "first fetch")}
    interpreter: list[float] = []  # `python3 -c pass`: the part of start-up no Python CLI avoids
    with netns.TargetNamespace() as ns:
        native_hello = [str(exe), "exit", "0"]
        env = installed_env()
        wall([*tether_argv(ns), *native_hello], env)  # fill the bytecode, analysis and page caches
        for rnd in range(args.rounds):
            order = hows if rnd % 2 == 0 else hows[::-1]
            for how in order:
                results["throughput"][how].append(transfer(ns, how, exe, args.bytes))
                results["connect"][how].append(float(client(ns, how, exe, "connects",
                                                            f"{netns.WEB_ADDR}:{netns.HTTP_PORT}", str(args.count))))
                results["dns"][how].append(float(client(ns, how, exe, "lookups", netns.DNS_NAME, str(args.count))))
            fetch = [str(exe), "http", f"http://{ns.dns_name}:{netns.HTTP_PORT}/"]
            for _ in range(args.starts):
                for how in order:
                    argv = native_hello if how == "direct" else [*tether_argv(ns), *native_hello]
                    results["start-up"][how].append(wall(argv, env))
                    argv = ns.exec_argv(fetch) if how == "direct" else [*tether_argv(ns), *fetch]
                    results["first fetch"][how].append(wall(argv, env))
                interpreter.append(wall([sys.executable, "-c", "pass"], env))
    med = {k: {h: statistics.median(v) for h, v in d.items()} for k, d in results.items()}
    mib = args.bytes / (1 << 20)
    print(f"Go {args.version}, {args.rounds} rounds, medians; direct = the program run inside the namespace")
    print(f"{'':<12}{'direct':>14}{'tether':>14}   result")
    t = med["throughput"]
    print(f"{'throughput':<12}{mib / t['direct']:>10.0f} MiB/s{mib / t['tether']:>9.0f} MiB/s"
          f"   tether/direct = {t['direct'] / t['tether']:.3f} (goal >= 0.95), {mib:.0f} MiB sha256-checked")
    c = med["connect"]
    print(f"{'connect p50':<12}{c['direct']:>11.1f} us{c['tether']:>11.1f} us   added {c['tether'] - c['direct']:.1f} us "
          "(goal <= 200)")
    d = med["dns"]
    print(f"{'dns p50':<12}{d['direct']:>11.1f} us{d['tether']:>11.1f} us   added {d['tether'] - d['direct']:.1f} us")
    s = med["start-up"]
    print(f"{'start-up':<12}{s['direct'] * 1000:>11.1f} ms{s['tether'] * 1000:>11.1f} ms   added "
          f"{(s['tether'] - s['direct']) * 1000:.0f} ms (goal <= 150; direct here = run natively)")
    print(f"{'':<12}of which the Python interpreter starting (`python3 -c pass`, site included): "
          f"{statistics.median(interpreter) * 1000:.0f} ms")
    f = med["first fetch"]
    print(f"{'first fetch':<12}{f['direct'] * 1000:>11.1f} ms{f['tether'] * 1000:>11.1f} ms   added "
          f"{(f['tether'] - f['direct']) * 1000:.0f} ms (direct: inside the namespace, with `ip netns exec`)")


if __name__ == "__main__":
    main()
