#!/usr/bin/env python3
"""The link to a network agent (issue 20): what a relayed connect, stream and datagram cost.

A `tether agent --listen` in a throwaway namespace, reached over veth; the Go netclient under
`tether exec --target tcp://...`:

- connects N times to a listener in the namespace on its veth address (netclient `acceptor`),
  MS apart (paced, as a program connects now and then) and back to back. Against one round
  trip: the same program without tether connecting as often, at the same pace, to the same
  listener (this VM's idle CPUs wake slowly: a TCP connect 5 ms after the last takes several
  times one back to back, for tether and without it alike; with --delay-ms, that plus the
  proxy's 2 D).
  Goal: the connect adds <= 1 RTT + 300 us. Medians of the rounds' p50s.
- sends --bytes to a sink in the namespace through the relay, against the same client sending
  the same bytes to a sink there without tether over the same link (veth, or the same delay
  proxy): relay / plain >= 0.9. Both sides sha256-check every byte.
- with --tls, the same stream through a second agent started with --tls (every connection
  encrypted, the stand-in pinning its certificate): tls relay / plain relay >= 0.5.
- --pairs request/response pairs on one unconnected UDP socket to the namespace's echo server
  (goal: none lost on a bare link), with their p50.

Rounds alternate the ways. --delay-ms D puts tests/delayproxy.py between this host and the
namespace (D ms each way; the round trip is then the bare one + 2 D), for tether's link to the
agent and for the plain stream alike; --rate-mbit R paces it to R Mbit/s each way, as a WAN
link would be (unpaced, both streams are bounded by the proxy's own Python loop).

    python3 bench/link.py [--rounds 3] [--n 200] [--ms 5] [--bytes N] [--pairs 10000] [--delay-ms 10 [--rate-mbit 1000]] [--tls]
"""
from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
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
from delayproxy import DelayProxy  # noqa: E402
from relay_throughput import BASE_PORT, listening, network_agent, sinks  # noqa: E402

TETHER = [sys.executable, "-m", "tether"]
ACCEPT_PORT = 7070  # the acceptor, on the namespace's veth address


def connect_us(addr: str, port: int, n: int = 200) -> float:
    """p50 of n TCP connects from here to addr:port, back to back (for scale only: the goal's
    round trip is the same Go program's paced connects, measured in connects())."""
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        socket.create_connection((addr, port), timeout=5).close()
        samples.append((time.perf_counter() - t) * 1e6)
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--version", default=go_toolchains.selected_versions()[-1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--ms", type=int, default=5)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--rate-mbit", type=float, default=0.0,
                    help="with --delay-ms: the proxy's bandwidth each way (0: as fast as it can)")
    ap.add_argument("--bytes", type=int, default=256 << 20)
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--tls", action="store_true", help="also stream through an agent with --tls")
    args = ap.parse_args()
    exe = gobuild.build(args.version, "default", "netclient")
    with netns.TargetNamespace(veth=True) as ns, tempfile.TemporaryDirectory() as tmp, \
            network_agent(ns, tmp) as (_, address, token), contextlib.ExitStack() as stack:
        host, port = address.rsplit(":", 1)
        prefix = exec_prefix(stack, args, address, token, exe)
        link = f"veth + {args.delay_ms:g} ms each way" if args.delay_ms else "veth"
        link += f" at {args.rate_mbit:g} Mbit/s" if args.delay_ms and args.rate_mbit else ""
        print(f"tcp:// agent over {link}, Go {args.version}, {args.rounds} rounds of {args.n} connects; "
              f"one TCP connect back to back from here {connect_us(host, int(port)):.0f} us")
        if args.n:
            connects(args, ns, prefix, exe)
        relays = {"relay": prefix}
        if args.tls:
            _, tls_address, tls_token = stack.enter_context(network_agent(ns, tmp, tls=True))
            relays["tls relay"] = exec_prefix(stack, args, tls_address, tls_token, exe)
        if args.bytes:
            throughput(args, ns, stack, exe, relays)
        if args.pairs:
            datagrams(args, prefix)


def connects(args, ns: netns.TargetNamespace, prefix: list[str], exe: Path) -> None:
    """Relayed connects against the same program's connects without tether, at each pace."""
    acceptor = listening(ns.popen, [str(exe), "acceptor", f"{ns.veth_ns_addr}:{ACCEPT_PORT}"], "acceptor listening")
    paces = {"paced": ["paced", "{}", str(args.n), str(args.ms)], "back to back": ["connects", "{}", str(args.n)]}
    # One listener for both: its accepts cost the same CPU on both sides (under back-to-back
    # connects, a server in Python would take a good part of the two cores).
    sides = {"tether": ([*prefix], f"{ns.veth_ns_addr}:{ACCEPT_PORT}"),
             "direct": ([str(exe)], f"{ns.veth_ns_addr}:{ACCEPT_PORT}")}
    p50 = {(pace, side): [] for pace in paces for side in sides}
    for r in range(args.rounds):
        for pace, side in p50 if r % 2 == 0 else reversed(p50):
            argv, dest = sides[side]
            out = subprocess.run([*argv, *[a.format(dest) for a in paces[pace]]], capture_output=True, text=True,
                                 timeout=300, stdin=subprocess.DEVNULL)
            if out.returncode != 0 or not out.stdout.startswith("connects p50_us"):
                raise SystemExit(f"{pace} {side}: {out.stdout} {out.stderr}")
            p50[pace, side].append(float(out.stdout.split()[2]) + (2000 * args.delay_ms if side == "direct" else 0))
    acceptor.kill()
    for pace in paces:
        relayed, one = (statistics.median(p50[pace, side]) for side in sides)
        added = relayed - one
        print(f"  connect p50 {pace:13} {relayed:6.0f} us, without tether {one:6.0f} us (one round trip): added "
              f"{added:5.0f} us, goal <= {one + 300:.0f} ({'met' if added <= one + 300 else 'not met'}; rounds: "
              + "; ".join(f"{side} {', '.join(f'{v:.0f}' for v in p50[pace, side])}" for side in sides) + ")")


def rate(args) -> float | None:
    """The delay proxy's bytes per second each way, or None (unpaced)."""
    return args.rate_mbit * 1e6 / 8 if args.rate_mbit else None


def exec_prefix(stack: contextlib.ExitStack, args, address: str, token: Path, exe: Path) -> list[str]:
    """`tether exec` of exe through the agent at address (behind a delay proxy with --delay-ms)."""
    if args.delay_ms:
        host, port = address.rsplit(":", 1)
        proxy = stack.enter_context(DelayProxy(("127.0.0.1", 0), (host, int(port)), args.delay_ms / 1000, rate(args)))
        address = f"{proxy.address[0]}:{proxy.address[1]}"
    return [*TETHER, "exec", "--target", f"tcp://{address}", "--token-file", str(token), "--", str(exe)]


def send_seconds(argv: list[str], sink: subprocess.Popen, size: int) -> float:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    if r.returncode != 0 or not r.stdout.startswith("send ok"):
        raise SystemExit(f"send failed ({r.returncode}): {r.stdout} {r.stderr}")
    if sink.stdout.readline().split() != ["sink", str(size)]:
        raise SystemExit("the sink saw another byte count")
    sink.wait(timeout=10)
    return float(r.stdout.split()[3])


def throughput(args, ns: netns.TargetNamespace, stack: contextlib.ExitStack, exe: Path,
               relays: dict[str, list[str]]) -> None:
    """One stream through each relay (tether exec prefixes) against the same stream over the
    same link, no tether."""
    times: dict[str, list[float]] = {"plain": [], **{way: [] for way in relays}}
    plain_to = f"{ns.veth_ns_addr}:{BASE_PORT}"  # where sinks() puts the first sink
    if args.delay_ms:
        proxy = stack.enter_context(DelayProxy(("127.0.0.1", 0), (ns.veth_ns_addr, BASE_PORT), args.delay_ms / 1000,
                                               rate(args)))
        plain_to = f"{proxy.address[0]}:{proxy.address[1]}"
    for r in range(args.rounds):
        for way in list(times) if r % 2 == 0 else reversed(times):
            [(sink, addr)] = sinks(ns.popen, ns.veth_ns_addr if way == "plain" else netns.WEB_ADDR, exe, 1)
            argv = [str(exe), "send", plain_to, str(args.bytes)] if way == "plain" else \
                [*relays[way], "send", addr, str(args.bytes)]
            times[way].append(send_seconds(argv, sink, args.bytes))
    mib = args.bytes / (1 << 20)
    t = {way: statistics.median(v) for way, v in times.items()}
    print(f"  stream {mib:.0f} MiB, sha256-checked: "
          + ", ".join(f"{way} {mib / t[way]:.0f} MiB/s" for way in t)
          + f"; relay/plain = {t['plain'] / t['relay']:.3f} (goal >= 0.9)"
          + (f"; tls relay/relay = {t['relay'] / t['tls relay']:.3f} (goal >= 0.5)" if "tls relay" in t else "")
          + "; rounds (s): " + "; ".join(f"{way} {', '.join(f'{v:.2f}' for v in vs)}" for way, vs in times.items()))


def datagrams(args, prefix: list[str]) -> None:
    lost, p50s = [], []
    for _ in range(args.rounds):
        out = subprocess.run([*prefix, "pairs", f"{netns.WEB_ADDR}:{netns.UDP_PORT}", str(args.pairs)],
                             capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        fields = out.stdout.split()
        if out.returncode != 0 or fields[:2] != ["pairs", "lost"]:
            raise SystemExit(f"pairs: {out.stdout} {out.stderr}")
        lost.append(int(fields[2]))
        p50s.append(float(fields[4]))
    print(f"  unconnected UDP: {args.rounds} x {args.pairs} request/response pairs, lost {sum(lost)} "
          f"(goal on a bare link: 0); p50 {statistics.median(p50s):.0f} us")


if __name__ == "__main__":
    main()
