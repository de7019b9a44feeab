"""The trace ring: every event of a busy multi-threaded program arrives exactly once and in each
thread's order, also through a ring far smaller than the trace (writers then wait for the
session); a ring holding garbage, or a writer killed mid-record, gives a clear warning and never
stops or hangs the session."""
from __future__ import annotations

import json
import mmap
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict

import gobuild
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_protocol import events
from test_trace import TETHER

from tether.protocol import layer_wire, trace_wire, wire
from tether.session import launch
from tether.session.ring import Ring
from tether.session.server import LayerServer

MARKER = 0x7E7E  # tests/go/tracering passes it as getppid's first argument


def marked_calls(events):
    """thread number -> the i arguments of its getppid calls, in trace order; and their tids."""
    seen, tids = defaultdict(list), defaultdict(set)
    for e in events:
        if e.nr == 110 and e.args[0] == MARKER:
            seen[e.args[1]].append(e.args[2])
            tids[e.args[1]].add(e.tid)
    return seen, tids


@pytest.mark.parametrize("variant", ["default", "static"])
def test_every_call_of_many_threads_arrives_once_and_in_order(go_versions, variant, tmp_path):
    """16 threads x 8000 calls: about 11 MB of records through a 4 MiB ring. Static builds
    take the layer by injection, whose thread ids are cached in Go's m.tls (core/self.c)."""
    threads, n = 16, 8000
    for version in go_versions:
        exe = gobuild.build(version, variant, "tracering")
        out = tmp_path / f"{version}.jsonl"
        proc = subprocess.run([*TETHER, "trace", "--json", "-o", str(out), "--", str(exe), str(threads), str(n)],
                              capture_output=True, timeout=300)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"tracering ok\n", b""), version
        events = []
        for line in out.read_text().splitlines():
            e = json.loads(line)
            events.append(trace_wire.SyscallEvent(e["pid"], e["tid"], e["nr"], tuple(e["raw_args"]), e["ret"]))
        seen, tids = marked_calls(events)
        assert sorted(seen) == list(range(threads)), version
        assert all(seen[t] == list(range(n)) for t in range(threads)), version
        # each goroutine is locked to its thread: one tid each, sixteen in all
        assert all(len(tids[t]) == 1 for t in range(threads)) and len(set().union(*tids.values())) == threads
        assert {e.pid for e in events} == {events[0].pid}, version


class _Alarm(Exception):
    pass


def _in_time(seconds: int):
    """Raise _Alarm in this thread after `seconds`, so that a hang fails the test."""
    def ring(signum, frame):
        raise _Alarm(f"not done after {seconds} s")
    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    return old


def test_a_full_ring_makes_writers_wait_and_loses_nothing(go_versions):
    """An 8 KiB ring (92 events) for 8 threads x 3000 calls: the writers fill it over and over
    and wait on its futex until the session has emptied it; every call still arrives."""
    threads, n = 8, 3000
    for version in go_versions:
        exe = gobuild.build(version, "default", "tracering")
        events = []
        server = LayerServer(layer_wire.MODE_TRACE, events.append, ring_size=8192)
        old = _in_time(120)
        try:
            code = launch.run([str(exe), str(threads), str(n)], server)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
            server.close()
        assert code == 0, version
        seen, _ = marked_calls(events)
        assert all(seen[t] == list(range(n)) for t in range(threads)) and len(seen) == threads, version
        assert server.producer_wakes > 0, version  # the writers did wait, and were woken


FORKS = """
import os, sys
children, calls = int(sys.argv[1]), int(sys.argv[2])
fd = os.open("/dev/zero", os.O_RDONLY)
pids = []
for _ in range(children):
    pid = os.fork()
    if pid == 0:
        for offset in range(calls):
            os.pread(fd, 1, offset)
        os._exit(0)
    pids.append(pid)
for offset in range(calls):
    os.pread(fd, 1, offset)
for pid in pids:
    os.waitpid(pid, 0)
"""


def test_children_forked_without_exec_write_rings_of_their_own():
    """Each child forked without exec asks for a ring of its own with its first event (its
    parent's is its parent's alone): every call of every process arrives, in order, none as a
    frame on the socket. 8 KiB rings: the children's writers wait for the session too."""
    children, calls = 4, 3000
    events = []
    server = LayerServer(layer_wire.MODE_TRACE, events.append, ring_size=8192)
    old = _in_time(120)
    try:
        code = launch.run([sys.executable, "-I", "-c", FORKS, str(children), str(calls)], server)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        server.close()
    assert code == 0
    preads = defaultdict(list)
    for e in events:
        if e.nr == 17 and e.args[2] == 1:  # pread64(fd, buf, 1, offset)
            preads[e.pid].append(e.args[3])
    assert len(preads) == children + 1
    assert all(offsets == list(range(calls)) for offsets in preads.values())
    assert server.frame_events == 0


# A peer that speaks for the layer: says HELLO, takes the ring, writes into it by hand.

def _hello(srv: LayerServer, pid: int = 4242):
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    peer.connect(srv.path)
    peer.settimeout(5)
    hello = layer_wire.Hello(wire.PROTOCOL_VERSION, layer_wire.CAP_TRACE_RING, pid, 1, "/x", "")
    peer.send(layer_wire.encode_hello(hello, 1))
    serve(srv)
    msg, fds, _, _ = socket.recv_fds(peer, wire.FRAME_MAX, 1)
    assert layer_wire.decode_hello_reply(wire.decode_frame(msg)).mode == layer_wire.MODE_TRACE and len(fds) == 1
    size = os.lseek(fds[0], 0, os.SEEK_END)
    ring = mmap.mmap(fds[0], size)
    os.close(fds[0])
    return peer, ring


def serve(srv, rounds=20):
    for _ in range(rounds):
        if not srv.poll(0.05):
            return


def _write(ring: mmap.mmap, pos: int, records: bytes, head: int, published: int | None = None) -> None:
    """records at pos, and head and published as producers would leave them (published: all
    written, unless said otherwise)."""
    ring[trace_wire.RING.size + pos:trace_wire.RING.size + pos + len(records)] = records
    ring[trace_wire.RING_HEAD:trace_wire.RING_HEAD + 8] = head.to_bytes(8, "little")
    published = pos + len(records) if published is None else published
    ring[trace_wire.RING_PUBLISHED:trace_wire.RING_PUBLISHED + 8] = published.to_bytes(8, "little")


def _syscall_record(e: trace_wire.SyscallEvent) -> bytes:
    frame = wire.decode_frame(trace_wire.encode_syscall(e))
    return trace_wire.encode_record(trace_wire.MSG_SYSCALL, frame.payload, frame.flags)


@pytest.fixture
def server():
    events, warnings = [], []
    srv = LayerServer(layer_wire.MODE_TRACE, events.append, warn=warnings.append, ring_size=8192)
    yield srv, events, warnings
    srv.close()


def test_records_written_by_hand_are_read(server):
    srv, events, warnings = server
    peer, ring = _hello(srv)
    evs = [trace_wire.SyscallEvent(4242, 4243, 39, (i, 0, 0, 0, 0, 0), 4242) for i in range(3)]
    records = b"".join(_syscall_record(e) for e in evs)
    _write(ring, 0, records, len(records))
    serve(srv)
    assert events == evs and not warnings
    assert int.from_bytes(ring[trace_wire.RING_TAIL:trace_wire.RING_TAIL + 8], "little") == len(records)
    header = trace_wire.RING.size
    assert ring[header:header + len(records)] == bytes(len(records))  # zeroed for the next lap
    peer.close()
    ring.close()


@pytest.mark.parametrize("head,published", [(8, 16), (88, 12), (2**63, 2**63)])
def test_a_ring_published_past_what_it_holds_closes_that_process_only(server, head, published):
    srv, events, warnings = server
    bad, bad_ring = _hello(srv, 1001)
    good, good_ring = _hello(srv, 1002)
    _write(bad_ring, 0, b"", head, published)
    event = trace_wire.SyscallEvent(1002, 1002, 39, (0,) * 6, 1)
    record = _syscall_record(event)
    _write(good_ring, 0, record, len(record))
    serve(srv)
    assert warnings == [f"closing a layer connection: process 1001: trace ring: published at byte {published} "
                        f"(tail 0, head {head})"]
    assert bad.recv(10) == b""  # dropped
    assert events == [event] and srv.peers == 1
    for s in (bad, good):
        s.close()
    bad_ring.close()
    good_ring.close()


def test_a_ring_request_gets_a_ring_and_a_second_one_closes_the_connection(server):
    """RING_REQUEST (a forked child's, on a line of its own) gets a ring as HELLO does; a
    connection that has its ring and asks again is closed with the reason."""
    srv, events, warnings = server
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    peer.connect(srv.path)
    peer.settimeout(5)
    peer.send(layer_wire.encode_ring_request(2001, 1))
    serve(srv)
    msg, fds, _, _ = socket.recv_fds(peer, wire.FRAME_MAX, 1)
    assert wire.decode_frame(msg) == wire.Frame(layer_wire.MSG_RING_REPLY, 0, 1, b"") and len(fds) == 1
    ring = mmap.mmap(fds[0], os.lseek(fds[0], 0, os.SEEK_END))
    os.close(fds[0])
    event = trace_wire.SyscallEvent(2001, 2001, 39, (0,) * 6, 2001)
    record = _syscall_record(event)
    _write(ring, 0, record, len(record))
    serve(srv)
    assert events == [event]
    peer.send(layer_wire.encode_ring_request(2001, 2))
    serve(srv)
    assert warnings == ["closing a layer connection: process 2001 asked for a second trace ring on one connection"]
    assert peer.recv(10) == b"" and srv.peers == 0
    peer.close()
    ring.close()


@pytest.mark.parametrize("garbage,reason", [
    ((3).to_bytes(4, "little") + bytes(4), "dropping 8 bytes of trace records: record at 0 says 3 bytes (8 there)"),
    ((5000).to_bytes(4, "little") + bytes(4), "dropping 8 bytes of trace records: record at 0 says 5000 bytes (8 there)"),
    (trace_wire.encode_record(99, bytes(16)), "dropping a trace record: record of type 99 in a trace"),
])
def test_records_holding_garbage_are_dropped_with_a_warning(server, garbage, reason):
    srv, events, warnings = server
    peer, ring = _hello(srv)
    _write(ring, 0, garbage, len(garbage))
    serve(srv)
    event = trace_wire.SyscallEvent(4242, 4242, 0, (3, 0, 1, 0, 0, 0), 1)
    record = _syscall_record(event)
    _write(ring, len(garbage), record, len(garbage) + len(record))  # and the next ones are read
    serve(srv)
    assert warnings == [reason] and events == [event] and srv.peers == 1
    peer.close()
    ring.close()


def test_a_writer_killed_mid_record_is_reported_when_its_process_is_gone(server):
    srv, events, warnings = server
    peer, ring = _hello(srv)
    event = trace_wire.SyscallEvent(4242, 4242, 0, (3, 0, 1, 0, 0, 0), 1)
    record = _syscall_record(event)
    _write(ring, 0, record, len(record) + 88)  # a second record reserved, never written or published
    serve(srv)
    assert events == [event] and not warnings
    peer.close()
    serve(srv)
    assert warnings == ["process 4242 ended in the middle of writing a trace event: "
                        "the last 88 bytes of its trace are lost"]
    assert srv.peers == 0
    ring.close()


def test_an_idle_session_sleeps_until_a_ring_wake(server):
    """With nothing to read for a while, the session says it sleeps (the word producers check
    after each record) and waits on the socket; the RING_WAKE a producer then sends brings it
    back at once."""
    srv, events, _ = server
    peer, ring = _hello(srv)
    serve(srv)
    sleeping = lambda: ring[trace_wire.RING_SLEEPING:trace_wire.RING_SLEEPING + 4] != bytes(4)  # noqa: E731
    waiter = threading.Thread(target=srv.poll, args=(30,))
    waiter.start()
    for _ in range(200):
        if sleeping():
            break
        time.sleep(0.01)
    assert sleeping()
    event = trace_wire.SyscallEvent(4242, 4242, 39, (0,) * 6, 1)
    record = _syscall_record(event)
    _write(ring, 0, record, len(record))
    ring[trace_wire.RING_SLEEPING:trace_wire.RING_SLEEPING + 4] = bytes(4)  # as the producer does, then:
    peer.send(wire.encode_frame(layer_wire.MSG_RING_WAKE, b""))
    waiter.join(5)
    assert not waiter.is_alive()  # woken, not timed out
    serve(srv)
    assert events == [event]
    peer.close()
    ring.close()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=8192), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 8191))
def test_any_ring_contents_give_records_or_a_protocol_error(data, head, published, tail):
    """Whatever a broken or hostile program leaves in its ring, reading it gives a chunk no
    larger than the ring, or a ProtocolError; decoding that chunk gives events and
    ProtocolErrors, and ends."""
    ring = Ring(8192)
    shared = mmap.mmap(ring.fd, trace_wire.RING.size + 8192)  # the producer's view
    try:
        ring.tail = tail & ~7
        shared[trace_wire.RING.size:trace_wire.RING.size + len(data)] = data
        shared[trace_wire.RING_HEAD:trace_wire.RING_HEAD + 8] = head.to_bytes(8, "little")
        shared[trace_wire.RING_PUBLISHED:trace_wire.RING_PUBLISHED + 8] = published.to_bytes(8, "little")
        try:
            chunk = ring.collect()
        except wire.ProtocolError:
            return
        assert len(chunk) <= 8192
        pos = 0
        for _ in range(len(chunk) // 8 + 1):  # each record takes at least 8 bytes
            if pos >= len(chunk):
                break
            try:
                _, pos = trace_wire.decode_record(chunk, pos)
            except wire.ProtocolError:
                try:
                    pos = trace_wire.record_span(chunk, pos)
                except wire.ProtocolError:
                    break
    finally:
        shared.close()
        os.close(ring.fd)
        ring.close()


@settings(max_examples=300)
@given(st.lists(events, max_size=4), st.data())
def test_damaged_records_give_protocol_error_only(evs, data):
    buf = bytearray(b"".join(_syscall_record(e) for e in evs))
    for _ in range(data.draw(st.integers(0, 4))):
        if buf:
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    buf = bytes(buf[:data.draw(st.integers(0, len(buf)))])
    pos = 0
    for _ in range(len(buf) // 8 + 1):  # each record takes at least 8 bytes
        if pos >= len(buf):
            break
        try:
            _, pos = trace_wire.decode_record(buf, pos)
        except wire.ProtocolError as e:
            assert "\n" not in str(e)
            break


@given(st.lists(events, max_size=4))
def test_records_round_trip(evs):
    buf = b"".join(_syscall_record(e) for e in evs)
    got, pos = [], 0
    while pos < len(buf):
        e, pos = trace_wire.decode_record(buf, pos)
        got.append(e)
    assert got == evs


def test_a_vfork_child_is_tagged_as_itself_and_leaves_its_parents_ids_alone(tmp_path):
    """The layer caches each thread's pid and tid; a vfork child shares the parent's memory and
    its thread's TLS: its calls carry its own ids, and the parent's calls after it the parent's."""
    from test_libc import FORTIFIED
    from test_trace import trace

    probe = gobuild.build_c("libc_probe", FORTIFIED)
    proc, events = trace(probe, "vfork", tmp=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"vfork child exited 0\n", b"")
    closes = {e["args"][0]: (e["pid"], e["tid"]) for e in events if e["syscall"] == "close"
              and e["args"][0] in ("-101", "-102", "-103")}
    execs = [e for e in events if e["syscall"] == "execve" and e["args"][0] == '"/bin/true"']
    parent, child = closes["-101"][0], execs[0]["pid"]
    assert child != parent and execs[0]["ret"] == 0
    assert closes == {"-101": (parent, parent), "-102": (child, child), "-103": (parent, parent)}
