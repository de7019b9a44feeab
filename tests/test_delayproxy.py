"""tests/delayproxy.py, the real-latency link of the link tests and bench/link.py: round trips
take twice the delay, a paced direction keeps to its rate, bytes and ends of stream arrive whole
and in order."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time

from delayproxy import DelayProxy


def echo_server() -> socket.socket:
    """A loopback server that echoes each connection until its end of stream, then ends it."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(c,), daemon=True).start()

    def echo(c: socket.socket) -> None:
        with c:
            while data := c.recv(1 << 16):
                c.sendall(data)
            c.shutdown(socket.SHUT_WR)

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_round_trips_take_twice_the_delay():
    srv = echo_server()
    with srv, DelayProxy(("127.0.0.1", 0), srv.getsockname(), delay=0.010) as proxy:
        with socket.create_connection(proxy.address, timeout=5) as c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rtts = []
            for _ in range(10):
                start = time.monotonic()
                c.sendall(b"ping")
                assert c.recv(16) == b"ping"
                rtts.append(time.monotonic() - start)
    rtts.sort()
    assert 0.020 <= rtts[5] < 0.040, rtts


def test_a_paced_stream_keeps_its_rate_and_arrives_whole():
    srv = echo_server()
    data = os.urandom(400_000)
    with srv, DelayProxy(("127.0.0.1", 0), srv.getsockname(), delay=0.001, rate=1_000_000) as proxy:
        with socket.create_connection(proxy.address, timeout=10) as c:
            start = time.monotonic()
            threading.Thread(target=lambda: (c.sendall(data), c.shutdown(socket.SHUT_WR)), daemon=True).start()
            got = b"".join(iter(lambda: c.recv(1 << 16), b""))  # until the server's end of stream
            took = time.monotonic() - start
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    # each direction paced at 1 MB/s, pipelined: 0.4 s at least, well under 2 s
    assert 0.38 <= took < 2.0, took
