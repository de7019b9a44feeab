#!/usr/bin/env python3
"""What one message between two processes costs this machine's kernel: the bound on any relay.

A relay that must read what passes (the filtered steal's, agent/incoming.py) puts every request
and every answer through two such messages instead of one. Two processes ping-pong a 150-byte
message (an HTTP request's size) ROUNDS x N times over loopback TCP (TCP_NODELAY, as the relay's
sockets) and over a Unix socket pair, alternating; printed: the medians of the system CPU time
one message costs, its send and its receive together (both processes' time / messages).

    python3 bench/loopback_hop.py [--rounds 5] [--n 20000]
"""
from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics

MESSAGE = b"x" * 150


def pair(kind: str) -> tuple[socket.socket, socket.socket]:
    if kind == "unix":
        return socket.socketpair()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.create_connection(listener.getsockname())
        b, _ = listener.accept()
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return a, b


def system_time() -> float:
    return sum(resource.getrusage(who).ru_stime for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def one_message_us(kind: str, n: int) -> float:
    """System CPU per message (us): n round trips, 2n messages."""
    a, b = pair(kind)
    before = system_time()
    pid = os.fork()
    if pid == 0:
        a.close()
        for _ in range(n):
            b.sendall(b.recv(4096))
        os._exit(0)
    b.close()
    for _ in range(n):
        a.sendall(MESSAGE)
        if not a.recv(4096):
            raise SystemExit("the echoing process went away")
    os.waitpid(pid, 0)
    a.close()
    return (system_time() - before) / (2 * n) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    figures: dict[str, list[float]] = {"tcp": [], "unix": []}
    for r in range(args.rounds):
        for kind in ("tcp", "unix") if r % 2 == 0 else ("unix", "tcp"):
            figures[kind].append(one_message_us(kind, args.n))
    for kind, name in (("tcp", "loopback TCP"), ("unix", "Unix socket pair")):
        print(f"one message over {name:16}: {statistics.median(figures[kind]):5.1f} us of system CPU "
              f"(send and receive; rounds {', '.join(f'{v:.1f}' for v in figures[kind])})")


if __name__ == "__main__":
    main()
