"""agent/relay.py's Splicer: many TCP pairs relayed by one thread, on real loopback sockets.

Each test relays outer_a <-> (inner_a | Splicer | inner_b) <-> outer_b: bytes both ways at
once must come through whole and in order, an end passes on as an end while the other way
goes on, a reset as a reset, a reader that stops holds back its sender (no unbounded
buffering), and a crowd of small exchanges all complete."""
from __future__ import annotations

import hashlib
import socket
import struct
import threading
import time

import pytest

from tether.agent import relay


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of a TCP connection on loopback."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return client, accepted


def relayed() -> tuple[socket.socket, socket.socket]:
    outer_a, inner_a = tcp_pair()
    inner_b, outer_b = tcp_pair()
    relay.splice_shared(inner_a, inner_b, "test")
    return outer_a, outer_b


def pattern(n: int, seed: int) -> bytes:
    """n bytes that differ everywhere (a byte lost, repeated or moved shows)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048
    return b"".join(struct.pack(">Q", i) + block[: (1 << 16) - 8] for i in range(n >> 16))


def read_all(sock: socket.socket, into: list) -> None:
    chunks = []
    while data := sock.recv(1 << 20):
        chunks.append(data)
    into.append(b"".join(chunks))


def test_bytes_both_ways_at_once_come_whole_and_an_end_passes_on_alone():
    a, b = relayed()
    for sock in (a, b):
        sock.settimeout(30)
    to_b, to_a = pattern(48 << 20, 1), pattern(24 << 20, 2)
    got_b, got_a = [], []
    readers = [threading.Thread(target=read_all, args=(b, got_b)), threading.Thread(target=read_all, args=(a, got_a))]
    for t in readers:
        t.start()
    sender = threading.Thread(target=lambda: (b.sendall(to_a[:12 << 20])))
    sender.start()
    a.sendall(to_b)
    a.shutdown(socket.SHUT_WR)  # a's end: b sees it, and b's way stays open
    readers[0].join(30)
    assert got_b and got_b[0] == to_b
    sender.join(30)
    b.sendall(to_a[12 << 20:])  # after a's end
    b.shutdown(socket.SHUT_WR)
    readers[1].join(30)
    assert got_a and got_a[0] == to_a
    a.close()
    b.close()


def test_a_reset_is_passed_on_as_a_reset():
    a, b = relayed()
    a.sendall(b"before")
    b.settimeout(5)
    assert b.recv(100) == b"before"
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    a.close()
    with pytest.raises(ConnectionResetError):
        while b.recv(100):
            pass
    b.close()


def test_a_reader_that_stops_holds_back_its_sender():
    a, b = relayed()
    a.setblocking(False)
    data = pattern(64 << 20, 3)
    sent, stalled_at = 0, time.monotonic() + 10
    while time.monotonic() < stalled_at:
        try:
            sent += a.send(data[sent:sent + (1 << 20)])
        except BlockingIOError:
            time.sleep(0.05)
            try:
                sent += a.send(data[sent:sent + (1 << 20)])
            except BlockingIOError:
                break
    # Held: the socket buffers of three connections' worth and one pipe, not all 64 MiB.
    assert 0 < sent < 40 << 20, sent
    got = []
    reader = threading.Thread(target=read_all, args=(b, got))
    reader.start()
    a.setblocking(True)
    a.sendall(data[sent:])
    a.shutdown(socket.SHUT_WR)
    reader.join(30)
    assert got and got[0] == data
    a.close()
    b.close()


def test_a_crowd_of_small_exchanges_all_complete():
    pairs = [relayed() for _ in range(64)]
    failures = []

    def ping_pong(a: socket.socket, b: socket.socket, n: int) -> None:
        try:
            for sock in (a, b):
                sock.settimeout(10)
            for i in range(n):
                a.sendall(b"ping %05d" % i)
                assert b.recv(100) == b"ping %05d" % i
                b.sendall(b"pong %05d" % i)
                assert a.recv(100) == b"pong %05d" % i
            a.close()
            assert b.recv(100) == b""
            b.close()
        except (OSError, AssertionError) as e:
            failures.append(repr(e))

    threads = [threading.Thread(target=ping_pong, args=(a, b, 300)) for a, b in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures and not any(t.is_alive() for t in threads), failures[:3]
