#!/usr/bin/env python3
"""Which data path a tcp:// agent should use: a connection per stream, or streams multiplexed
on one link. Measured on loopback with the same senders and sinks (tests/go/netclient `send`
and `sink`, sha256-checked), 1 and N concurrent streams:

    direct        senders connect to the sinks
    per-stream    each sender's connection is relayed by one process (agent/relay.py, what
                  the agent runs: splice, one pipe per direction): one relay hop
    multiplexed   a "session" process frames every stream onto one TCP link (stream id, length,
                  bytes), an "agent" process unframes them to the sinks: two relay hops, and
                  one link for all. No flow control between streams: the upper bound of what
                  that design could do (with credits it can only be slower)

    python3 bench/relay_designs.py [--version 1.27] [--rounds 3] [--bytes N] [--streams 16]
"""
from __future__ import annotations

import argparse
import os
import shlex
import socket
import statistics
import struct
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tools"), str(ROOT / "src")]

SINK_PORT, FRONT_PORT, LINK_PORT = 7300, 7400, 7500
HEAD = struct.Struct("<II")  # stream id, length (0: the stream ended)
BUF = 1 << 18


def per_stream(n: int) -> None:
    from tether.agent.relay import relay_tcp

    fronts = [socket.create_server(("127.0.0.1", FRONT_PORT + i)) for i in range(n)]
    print("ready", flush=True)

    def serve(i: int) -> None:
        while True:
            conn, _ = fronts[i].accept()
            relay_tcp(conn, socket.create_connection(("127.0.0.1", SINK_PORT + i)), f"stream {i}")

    for i in range(n):
        threading.Thread(target=serve, args=(i,), daemon=True).start()
    threading.Event().wait()


def _pump_to_link(conn: socket.socket, i: int, link: socket.socket, lock: threading.Lock) -> None:
    buf = bytearray(BUF)
    while m := conn.recv_into(buf):
        with lock:
            link.sendall(HEAD.pack(i, m) + buf[:m])
    with lock:
        link.sendall(HEAD.pack(i, 0))


def _unframe(link: socket.socket, conns: dict[int, socket.socket], connect=None) -> None:
    """Frames from the link to their streams; a stream's empty frame is its end (FIN)."""
    reader = link.makefile("rb", buffering=BUF)
    while head := reader.read(HEAD.size):
        i, m = HEAD.unpack(head)
        if i not in conns and connect:
            conns[i] = connect(i)
        if m:
            conns[i].sendall(reader.read(m))
        else:
            conns[i].shutdown(socket.SHUT_WR)


def mux_session(n: int) -> None:
    fronts = [socket.create_server(("127.0.0.1", FRONT_PORT + i)) for i in range(n)]
    link = socket.create_connection(("127.0.0.1", LINK_PORT))
    link.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lock, conns = threading.Lock(), {}
    print("ready", flush=True)

    def serve(i: int) -> None:
        conns[i], _ = fronts[i].accept()  # one stream per port and run
        _pump_to_link(conns[i], i, link, lock)

    for i in range(n):
        threading.Thread(target=serve, args=(i,), daemon=True).start()
    _unframe(link, conns)


def mux_agent(n: int) -> None:
    listener = socket.create_server(("127.0.0.1", LINK_PORT))
    print("ready", flush=True)
    link, _ = listener.accept()
    link.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    lock = threading.Lock()

    def connect(i: int) -> socket.socket:
        target = socket.create_connection(("127.0.0.1", SINK_PORT + i))
        threading.Thread(target=_pump_to_link, args=(target, i, link, lock), daemon=True).start()
        return target

    _unframe(link, {}, connect)


def helper(role: str, n: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, "--role", role, "--streams", str(n)], stdout=subprocess.PIPE,
                            text=True)
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"{role} did not start")
    return proc


def transfer(exe: Path, size: int, streams: int, port: int) -> float:
    each = size // streams
    sinks = [subprocess.Popen([str(exe), "sink", f"127.0.0.1:{SINK_PORT + i}"], stdout=subprocess.PIPE, text=True)
             for i in range(streams)]
    for sink in sinks:
        if sink.stdout.readline().strip() != "sink listening":
            raise SystemExit("a sink did not start")
    sends = " ".join(f"{shlex.quote(str(exe))} send 127.0.0.1:{port + i} {each} &" for i in range(streams))
    r = subprocess.run(["sh", "-c", f"{sends} wait"], capture_output=True, text=True, timeout=900)
    reports = [line.split() for line in r.stdout.splitlines() if line.startswith("send ok")]
    if r.returncode != 0 or len(reports) != streams:
        raise SystemExit(f"send failed: {r.stdout} {r.stderr}")
    for sink in sinks:
        if sink.stdout.readline().split() != ["sink", str(each)]:
            raise SystemExit("a sink saw another byte count")
        sink.wait(timeout=10)
    return max(float(f[3]) for f in reports)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--role", choices=["per-stream", "mux-session", "mux-agent"])
    ap.add_argument("--version")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=1 << 30)
    ap.add_argument("--streams", type=int, default=16)
    args = ap.parse_args()
    if args.role:
        {"per-stream": per_stream, "mux-session": mux_session, "mux-agent": mux_agent}[args.role](args.streams)
        return
    import go_toolchains
    import gobuild

    exe = gobuild.build(args.version or go_toolchains.ALL_VERSIONS[-1], "default", "netclient")
    mib = args.bytes / (1 << 20)
    for streams in (1, args.streams):
        times: dict[str, list[float]] = {"direct": [], "per-stream": [], "multiplexed": []}
        for r in range(args.rounds):
            order = list(times) if r % 2 == 0 else list(reversed(times))
            for design in order:
                procs = []
                if design == "per-stream":
                    procs = [helper("per-stream", streams)]
                elif design == "multiplexed":
                    procs = [helper("mux-agent", streams)]
                    procs.append(helper("mux-session", streams))
                try:
                    port = SINK_PORT if design == "direct" else FRONT_PORT
                    times[design].append(transfer(exe, args.bytes, streams, port))
                finally:
                    for p in procs:
                        p.kill()
                        p.wait()
        t = {d: statistics.median(v) for d, v in times.items()}
        print(f"{streams:2} stream(s) x {mib / streams:.0f} MiB: " + ", ".join(
            f"{d} {mib / s:.0f} MiB/s ({t['direct'] / s:.2f})" for d, s in t.items()))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
