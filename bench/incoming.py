#!/usr/bin/env python3
"""`tether exec --incoming` on a netns target (and a tcp:// agent): what serving the target's port costs.

The load is tests/go/incoming's client inside the namespace (CONNS connections for SECONDS);
the servers are its net/http server: the target's app on APP_PORT, the same binary as the
program under tether, and as "direct" started inside the namespace on a port of its own.

    steal keepalive   the load against APP_PORT while the program steals it (its socket made in
                      the target, the port redirected to it: the app holds the port) / the same
                      load against the direct server (goal >= 0.9)
    steal new         the same with a new connection per request (goal >= 0.8)
    mirror            the app's req/s while the program mirrors the port / with no tether
                      (goal >= 0.9), and the share of the app's requests of which the program
                      got a copy (goal >= 99%), under the same closed-loop load, which
                      saturates the machine (with a mirror the program does the app's work
                      again on the same CPUs);
    mirror at RATE    the same with the load paced at RATE requests a second: req/s and the
                      latency (p50, p99) the mirror adds, as a service below saturation sees it
    filtered matched  a filtered steal (--steal-header '^X-Route: me$'), the load sending that
                      header: the program answers through the agent's relay / the direct server
                      (goal >= 0.5)
    filtered other    the same steal, the load without the header: the app answers through the
                      relay / the app with no tether (goal >= 0.5)
    remote keepalive  the steal through a tcp:// agent (`tether agent --listen` in the namespace,
                      reached over veth; each connection relayed by the agent over a data
                      connection to the program here) / the direct server (goal >= 0.5)
    remote new        the same with a new connection per request

Each round runs every side, in an order that alternates by round; the figures are medians.

    python3 bench/incoming.py [--version 1.27] [--rounds 5] [--seconds 3] [--conns 32] [--rate 5000]
                              [--only steal,mirror,filtered,remote]

Needs root (it makes a throwaway namespace with tests/netns.py and removes it).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tools")]

import go_toolchains  # noqa: E402
import gobuild  # noqa: E402
import netns  # noqa: E402
from relay_throughput import network_agent  # noqa: E402

APP_PORT, DIRECT_PORT = 8090, 8093
QUIET_S = 1.0  # the program used no CPU for this long: its copies are done
HEADER = "X-Route: me"
FLAGS = {"steal": ["--incoming", "steal"], "on": ["--incoming", "mirror"], "filtered": ["--steal-header", f"^{HEADER}$"]}


class Tether:
    """The Go server under `tether exec FLAGS`, once it listens."""

    def __init__(self, ns, exe: Path, flags: list[str], target: tuple[str, ...] = ()):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tether", "exec", *(target or ("--target", f"netns:{ns.name}")), *flags, "--",
             str(exe), "serve", f":{APP_PORT}", "prog"], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        if not select.select([self.proc.stdout], [], [], 20)[0] or \
                not self.proc.stdout.readline().startswith("listening"):
            self.proc.kill()
            raise SystemExit(f"the program under tether {' '.join(flags)} did not listen")

    def program_cpu(self, agent: bool = False) -> int:
        """The program's CPU time so far, in clock ticks (it is tether's child that is not its
        agent), or the agent's."""
        kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        for pid in kids:
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                if ("(tether-agent)" in stat) == agent:
                    return sum(int(v) for v in stat.rsplit(")", 1)[1].split()[11:13])  # utime, stime
        return 0

    def caught_up(self, limit: float = 60) -> float:
        """Seconds until the program is done with its copies: its CPU time still for QUIET_S."""
        start = time.monotonic()
        last, still = self.program_cpu(), time.monotonic()
        while time.monotonic() - start < limit:
            time.sleep(0.05)
            now = self.program_cpu()
            if now != last:
                last, still = now, time.monotonic()
            elif time.monotonic() - still >= QUIET_S:
                return still - start
        raise SystemExit(f"the program was still busy {limit:g} s after the load")

    def stop(self) -> int:
        """Stop it; the requests it served."""
        self.proc.terminate()
        out = self.proc.communicate(timeout=30)[0]
        return int(out.split("served ")[1].split()[0])


def load(ns, exe: Path, port: int, seconds: float, conns: int, mode: str, rate: float = 0, header: str = "") -> tuple:
    """req/s, requests, p50 and p99 latency (us) of one load run."""
    r = ns.run([str(exe), "load", f"http://{netns.WEB_ADDR}:{port}/", str(conns), str(seconds), mode, str(rate),
                *([header] if header else [])], timeout=seconds + 60)
    first = r.stdout.split("\n", 1)[0].split()
    if r.returncode != 0 or len(first) != 6 or first[2] != "0":
        raise SystemExit(f"load on port {port} failed: {r.stdout} {r.stderr}")
    return int(first[1]) / float(first[3]), int(first[1]), int(first[4]), int(first[5])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", default=go_toolchains.selected_versions()[-1])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--rate", type=float, default=5000)
    ap.add_argument("--only", default="steal,mirror,filtered,remote", help="which groups to run")
    args = ap.parse_args()
    groups = set(args.only.split(","))
    go_toolchains.ensure(args.version)
    exe = gobuild.build(args.version, "default", "incoming")
    with netns.TargetNamespace(veth="remote" in groups) as ns, tempfile.TemporaryDirectory() as tmp, \
            (network_agent(ns, tmp) if "remote" in groups else contextlib.nullcontext((None, "", ""))) \
            as (_, agent_address, token):
        remote = ("--target", f"tcp://{agent_address}", "--token-file", str(token))
        # A connection per request leaves thousands in TIME_WAIT: let new ones reuse them.
        ns.run(["sysctl", "-q", "net.ipv4.tcp_tw_reuse=1"], check=True)
        for port, name in ((APP_PORT, "app"), (DIRECT_PORT, "direct")):
            ns.popen([str(exe), "serve", f":{port}", name], stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        figures: dict[str, list[float]] = {}

        def run(side: str) -> None:
            """One run; the program under tether is started for it (a port takes one session)."""
            kind, _, how = side.partition(" ")
            if how == "remote":
                prog = Tether(ns, exe, FLAGS["steal"], remote)
            else:
                prog = Tether(ns, exe, FLAGS[how]) if how in FLAGS else None
            port = DIRECT_PORT if how == "direct" else APP_PORT
            agent_cpu = prog.program_cpu(agent=True) if how == "filtered" else 0
            try:
                rps, requests, p50, p99 = load(ns, exe, port, args.seconds, args.conns,
                                               kind if kind in ("keepalive", "new") else "keepalive",
                                               args.rate if kind == "paced" else 0,
                                               HEADER if kind == "matched" else "")
            except BaseException:
                if prog:  # not left behind, still taking the agent's port
                    prog.proc.kill()
                    prog.proc.wait()
                raise
            if how == "filtered":  # what relaying a request costs the agent, a figure less noisy than req/s
                figures.setdefault(f"{kind} agent us", []).append(
                    (prog.program_cpu(agent=True) - agent_cpu) / os.sysconf("SC_CLK_TCK") / requests * 1e6)
            if prog:
                if how == "on":  # copies wait while the machine is busy: they come once the load is over
                    figures.setdefault(f"{kind} catch-up", []).append(prog.caught_up())
                served = prog.stop()
                if how == "on":
                    figures.setdefault(f"{kind} share", []).append(served / requests)
            figures.setdefault(side, []).append(rps)
            figures.setdefault(f"{side} p50", []).append(p50)
            figures.setdefault(f"{side} p99", []).append(p99)

        sides = {"steal": ["keepalive steal", "keepalive direct", "new steal", "new direct"],
                 "mirror": ["mirror on", "mirror off", "paced on", "paced off"],
                 "filtered": ["matched filtered", "matched direct", "other filtered", "other off"],
                 "remote": ["keepalive remote", "keepalive direct", "new remote", "new direct"]}
        sides = list(dict.fromkeys(side for group, names in sides.items() if group in groups for side in names))
        for n in range(args.rounds):
            for side in sides if n % 2 == 0 else sides[::-1]:
                run(side)
            print(f"round {n + 1}: " + ", ".join(f"{k} {v[-1]:.2%}" if "share" in k else f"{k} {v[-1]:.2f} s" if "catch-up" in k else f"{k} {v[-1]:.1f}" if " us" in k else f"{k} {v[-1]:.0f}"
                                                 for k, v in figures.items() if " p" not in k), flush=True)
    med = {k: statistics.median(v) for k, v in figures.items()}
    print(f"\nGo {args.version}, {args.conns} connections, {args.seconds:g} s a run, {args.rounds} rounds, medians:")
    for kind, goal in (("keepalive", 0.9), ("new", 0.8)) if "steal" in groups else ():
        print(f"  steal {kind:9}  {med[f'{kind} steal']:8.0f} req/s, direct {med[f'{kind} direct']:8.0f}: "
              f"ratio {med[f'{kind} steal'] / med[f'{kind} direct']:.2f} (goal >= {goal})")
    for kind in ("keepalive", "new") if "remote" in groups else ():
        print(f"  tcp:// steal {kind:9}  {med[f'{kind} remote']:8.0f} req/s, direct {med[f'{kind} direct']:8.0f}: "
              f"ratio {med[f'{kind} remote'] / med[f'{kind} direct']:.2f}" + (" (goal >= 0.5)" if kind == "keepalive" else ""))
    if "filtered" in groups:
        print(f"  filtered matched  {med['matched filtered']:8.0f} req/s, direct {med['matched direct']:8.0f}: "
              f"ratio {med['matched filtered'] / med['matched direct']:.2f} (goal >= 0.5)")
        print(f"  filtered other    {med['other filtered']:8.0f} req/s, the app alone {med['other off']:8.0f}: "
              f"ratio {med['other filtered'] / med['other off']:.2f} (goal >= 0.5)")
        print(f"  the agent's CPU per relayed request: matched {med['matched agent us']:.1f} us, "
              f"other {med['other agent us']:.1f} us")
    for kind, what in (("mirror", "saturated"), ("paced", f"at {args.rate:g} req/s")) if "mirror" in groups else ():
        print(f"  mirror {what:15} {med[f'{kind} on']:8.0f} req/s, unmirrored {med[f'{kind} off']:8.0f}: "
              f"ratio {med[f'{kind} on'] / med[f'{kind} off']:.2f} (goal >= 0.9); the program got "
              f"{med[f'{kind} share']:.2%} of the requests (goal >= 99%), the last {med[f'{kind} catch-up']:.2f} s "
              f"after the load; latency p50/p99 "
              f"{med[f'{kind} on p50']:.0f}/{med[f'{kind} on p99']:.0f} us, unmirrored "
              f"{med[f'{kind} off p50']:.0f}/{med[f'{kind} off p99']:.0f} us")


if __name__ == "__main__":
    main()
