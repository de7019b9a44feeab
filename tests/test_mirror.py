"""agent/mirror.py: a mirror's capture of a port.

Reassembly is sans-IO: made-up TCP segments of a client's stream, cut, repeated and reordered
at random, must come out as the stream, once, in order; random bytes must not break it. The
capture's BPF filter runs in the real kernel: in a throwaway namespace, the ring must see the
packets clients send to the port (both IP versions) and nothing else. The copies' hold runs on
real CPU pressure: processes spinning on every CPU hold the copies back, and they come once
those end. What the mirror gives a program under `tether exec` is in test_incoming.py."""
from __future__ import annotations

import select
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netns import WEB_ADDR, TargetNamespace

from tether.agent import mirror
from tether.agent.mirror import Data, End, Open, Reassembly

PORT = 8090
CLIENT_V4, SERVER_V4 = bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1])
CLIENT_V6, SERVER_V6 = socket.inet_pton(socket.AF_INET6, "fd00::2"), socket.inet_pton(socket.AF_INET6, "fd00::1")
ACK, PSH = 0x10, 0x08


def packet(seq: int, flags: int, payload: bytes = b"", v6: bool = False, back: bool = False) -> bytes:
    """An IP packet with a TCP segment, as the capture gives it (from the network header): from
    the client to the server's PORT, or back."""
    ends = ((40000, CLIENT_V6 if v6 else CLIENT_V4), (PORT, SERVER_V6 if v6 else SERVER_V4))
    (sport, src), (dport, dst) = ends[::-1] if back else ends
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq % (1 << 32), 1, 5 << 4, flags, 65535, 0, 0) + payload
    if v6:
        return struct.pack(">IHBB", 6 << 28, len(tcp), socket.IPPROTO_TCP, 64) + src + dst + tcp
    head = struct.pack(">BBHHHBBH", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, socket.IPPROTO_TCP, 0)
    return head + src + dst + tcp


def stream_packets(data: bytes, cuts: list[int], isn: int, v6: bool) -> list[bytes]:
    """A connection's packets in order: SYN, data cut at `cuts`, FIN."""
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    out = [packet(isn, mirror.TCP_SYN, v6=v6)]
    out += [packet(isn + 1 + a, ACK | PSH, data[a:b], v6) for a, b in zip(bounds, bounds[1:]) if b > a]
    return out + [packet(isn + 1 + len(data), ACK | mirror.TCP_FIN, v6=v6)]


def run(r: Reassembly, packets: list[bytes]) -> list:
    return [event for p in packets for event in r.feed(p, 0.0)]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=12),
       isn=st.integers(0, (1 << 32) - 1), v6=st.booleans(), order=st.randoms(use_true_random=False),
       repeats=st.lists(st.integers(0, 20), max_size=4))
def test_a_stream_cut_repeated_and_reordered_comes_out_whole_and_once(data, cuts, isn, v6, order, repeats):
    packets = stream_packets(data, cuts, isn, v6)
    middle = packets[1:-1] + [packets[1 + i % len(packets[1:-1])] for i in repeats if len(packets) > 2]
    order.shuffle(middle)  # what a capture on two CPUs can see, and segments sent again
    events = run(Reassembly(PORT), [packets[0], *middle, packets[-1]])
    assert isinstance(events[0], Open) and isinstance(events[-1], End) and not events[-1].lost
    assert b"".join(e.data for e in events if isinstance(e, Data)) == data
    assert [type(e) for e in events].count(Open) == 1 and [type(e) for e in events].count(End) == 1
    host = "fd00::2" if v6 else "10.0.0.2"
    assert events[0].client == (host, 40000) and events[0].server[1] == PORT


def test_a_connection_opened_before_the_capture_and_a_refused_one_give_no_copy():
    r = Reassembly(PORT)
    assert run(r, [packet(100, ACK | PSH, b"GET / HTTP/1.1\r\n\r\n")]) == []  # its SYN came before
    assert run(r, [packet(500, mirror.TCP_SYN), packet(1, mirror.TCP_RST | ACK, back=True)]) == []
    assert r.streams == {}  # the refused one (a reset back from the port) is forgotten


def test_a_reset_ends_the_copy_with_what_came_and_a_gap_is_told():
    r = Reassembly(PORT)
    events = run(r, [packet(0, mirror.TCP_SYN), packet(1, ACK, b"abc"), packet(4, mirror.TCP_RST)])
    assert [type(e) for e in events] == [Open, Data, End] and not events[-1].lost
    # A segment the capture lost: what follows waits for it; GAP later the copy ends, told lost.
    events = run(r, [packet(1000, mirror.TCP_SYN), packet(1001, ACK, b"one"), packet(1007, ACK, b"three")])
    assert b"".join(e.data for e in events if isinstance(e, Data)) == b"one"
    assert r.expire(1.0, 5.0) == []
    assert r.expire(10.0, 5.0) == [End(events[0].key, True)]


def test_the_address_pair_used_again_ends_the_last_connection():
    r = Reassembly(PORT)
    first = run(r, [packet(0, mirror.TCP_SYN), packet(1, ACK, b"a")])
    again = run(r, [packet(0, mirror.TCP_SYN), packet(5000, mirror.TCP_SYN), packet(5001, ACK, b"b")])
    assert again[0] == End(first[0].key, False)  # the SYN sent again (0) changed nothing
    assert [type(e) for e in again] == [End, Open, Data] and again[-1].data == b"b"


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_do_not_break_reassembly(blob):
    r = Reassembly(PORT)
    r.feed(blob, 0.0)
    r.feed(packet(7, mirror.TCP_SYN) + blob, 0.0)  # a valid head, garbage after
    r.feed(packet(8, ACK, blob), 0.0)
    r.expire(1000.0, 1.0)


# The filter, in the kernel.

CAPTURE = textwrap.dedent(r"""
    import select, sys, time
    from tether.agent import mirror
    ring = mirror.Ring(int(sys.argv[1]))
    print("ready", flush=True)
    sys.stdin.readline()
    time.sleep(0.2)  # the last block handed over (BLOCK_TIMEOUT_MS)
    seen = []
    while select.select([ring.sock], [], [], 0.1)[0]:
        for p in ring.packets():
            s = mirror.parse(p)
            seen.append(f"{s.sport}>{s.dport}:{s.flags & 0x07:x}:{len(s.payload)}")
        if not seen:
            break
    print(" ".join(seen), flush=True)
""")

TRAFFIC = textwrap.dedent(r"""
    import socket, sys, threading
    port, other = int(sys.argv[1]), int(sys.argv[2])
    servers = []
    for family, host in ((socket.AF_INET, sys.argv[3]), (socket.AF_INET6, "::1")):
        for p in (port, other):
            s = socket.socket(family); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, p)); s.listen(); servers.append((s, host, p))
    def serve(s):
        c, _ = s.accept(); c.recv(100); c.sendall(b"answer" * 100); c.recv(100); c.close()
    for s, host, p in servers:
        threading.Thread(target=serve, args=(s,), daemon=True).start()
        c = socket.create_connection((host, p), source_address=("", 40100 + len(host) + p % 10))
        c.sendall(b"hello"); c.recv(600); c.shutdown(socket.SHUT_WR); c.recv(10); c.close()
    print("done")
""")


def test_the_filter_keeps_what_clients_send_to_the_port_and_nothing_else():
    with TargetNamespace() as ns:
        ns.run(["ip", "-6", "addr", "add", "::1/128", "dev", "lo"], check=False)  # if the kernel left it off
        cap = ns.popen([sys.executable, "-c", CAPTURE, str(PORT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       text=True)
        try:
            assert select.select([cap.stdout], [], [], 10)[0] and cap.stdout.readline() == "ready\n"
            r = ns.run([sys.executable, "-c", TRAFFIC, str(PORT), str(PORT + 1), WEB_ADDR], timeout=30)
            assert r.stdout == "done\n", r.stderr
            cap.stdin.write("\n")
            cap.stdin.flush()
            seen = cap.stdout.readline().split()
        finally:
            cap.kill()
            cap.wait()
    # Per family, to the port only: the SYN (2), "hello" (5 bytes), the FIN (1); never the
    # answers from the port, pure ACKs, the other port, or loopback's outgoing copy of each.
    sports = {40100 + len(WEB_ADDR) + PORT % 10, 40100 + len("::1") + PORT % 10}
    assert sorted(seen) == sorted(f"{s}>{PORT}:{kind}" for s in sports for kind in ("2:0", "0:5", "1:0")), seen


# The hold: copies wait while every CPU has a queue.

SPIN = "import time\nend = time.monotonic() + 30\nwhile time.monotonic() < end: pass"


def test_copies_are_held_while_the_cpus_are_busy_and_come_after():
    import os

    program = socket.socket()
    program.bind(("127.0.0.1", 0))
    program.listen(8)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    copies = mirror.Copies(port, socket.AF_INET, program.getsockname())
    spinners = []
    try:
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(2 * os.cpu_count())]
        time.sleep(0.5)  # the pressure seen
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(b"while busy")
        app, _ = server.accept()
        assert app.recv(100) == b"while busy"  # the app has it at once
        assert select.select([program], [], [], 1.0)[0] == []  # the program not, while the CPUs are busy
        assert copies.holding
        for spinner in spinners:
            spinner.kill()
        assert select.select([program], [], [], 5.0)[0]  # after: the copy comes
        copy, _ = program.accept()
        copy.settimeout(5)
        assert copy.recv(100) == b"while busy"
        client.sendall(b" and after")
        assert copy.recv(100) == b" and after"
        client.close()
        assert copy.recv(100) == b""
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
        said = copies.stop()
    assert said.startswith("1 connections copied; copies held up to"), said
