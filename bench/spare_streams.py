#!/usr/bin/env python3
"""A relayed connect with the stand-in's spare data connections against without them.

A `tether agent --listen` in a throwaway namespace (over veth); this process plays the
stand-in (agent/forward.py's Remote) and opens relayed streams to the namespace's HTTP port,
5 ms apart, as a program that connects now and then does. "spares": SPARE_STREAMS
authenticated data connections kept ready (a connect costs its STREAM round trip); "none":
each connect dials and proves the token first. Rounds alternate; p50 of each side.

    python3 bench/spare_streams.py [--rounds 4] [--n 100]
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tools"), str(ROOT / "src"), str(ROOT / "bench")]

import netns  # noqa: E402
from relay_throughput import network_agent  # noqa: E402

from tether.agent import forward  # noqa: E402
from tether.agent.listen import parse_address  # noqa: E402
from tether.protocol import agent_wire  # noqa: E402
from tether.protocol.sockaddr import encode_inet  # noqa: E402

TETHER = [sys.executable, "-m", "tether"]


async def p50_us(address: str, token: bytes, spares: int, n: int) -> float:
    forward.SPARE_STREAMS = spares
    remote = forward.Remote(parse_address("tcp:" + address), token, "token", "bench")
    await remote.start()
    req = agent_wire.Connect(socket.AF_INET, socket.SOCK_STREAM, 6, 0, encode_inet(netns.WEB_ADDR, netns.HTTP_PORT))
    samples = []
    for _ in range(n):
        await asyncio.sleep(0.005)
        start = time.perf_counter()
        sock, _ = await remote.open_stream(req)
        samples.append((time.perf_counter() - start) * 1e6)
        sock.close()
    remote.control.sock.close()
    for spare in remote.spares:
        spare.sock.close()
    return statistics.median(samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--n", type=int, default=100)
    args = ap.parse_args()
    kept = forward.SPARE_STREAMS
    with netns.TargetNamespace(veth=True) as ns, tempfile.TemporaryDirectory() as tmp, \
            network_agent(ns, tmp) as (_, address, token):
        results: dict[str, list[float]] = {"spares": [], "none": []}
        for r in range(args.rounds):
            for side in (("spares", "none") if r % 2 == 0 else ("none", "spares")):
                results[side].append(asyncio.run(p50_us(address, token.read_bytes().strip(),
                                                        kept if side == "spares" else 0, args.n)))
        spares, none = (statistics.median(results[s]) for s in ("spares", "none"))
        print(f"relayed connect p50, {args.rounds} rounds x {args.n} (5 ms apart): {kept} spares {spares:.0f} us, "
              f"none {none:.0f} us ({none / spares:.2f}x)")


if __name__ == "__main__":
    main()
