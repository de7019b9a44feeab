"""`tether agent` over a socket pair, on this host's loopback: requests, errors, concurrency,
bad input. (The same agent inside a network namespace: tests/test_netns_target.py.)"""
from __future__ import annotations

import array
import errno
import socket
import subprocess
import sys
import threading
import time

import pytest

from tether.protocol import agent_wire, wire
from tether.protocol.sockaddr import encode_inet
from tether.session.agent_link import AgentError, AgentLink


@pytest.fixture
def agent():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen([sys.executable, "-m", "tether", "agent", "--fd", str(theirs.fileno())],
                            pass_fds=[theirs.fileno()], stderr=subprocess.PIPE)
    theirs.close()
    yield proc, ours
    ours.close()
    try:
        proc.wait(timeout=10)
    finally:
        proc.kill()


@pytest.fixture
def echo_server():
    """A loopback TCP server that echoes one message per connection."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"echo:" + conn.recv(100))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    srv.close()


def test_hello_connect_and_errors(agent, echo_server):
    proc, sock = agent
    link = AgentLink(sock)
    assert link.hello() == (wire.PROTOCOL_VERSION, agent_wire.CAP_SOCKETS)
    conn = link.connect(socket.AF_INET, socket.SOCK_STREAM, encode_inet("127.0.0.1", echo_server))
    conn.sendall(b"hi")
    assert conn.recv(100) == b"echo:hi"
    conn.close()
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(AgentError) as refused:
        link.connect(socket.AF_INET, socket.SOCK_STREAM, encode_inet("127.0.0.1", port))
    assert refused.value.errno == errno.ECONNREFUSED and "Connection refused" in str(refused.value)
    with pytest.raises(AgentError) as bad:
        link.connect(socket.AF_INET6, socket.SOCK_STREAM, encode_inet("127.0.0.1", port))
    assert bad.value.errno == errno.EINVAL


def _send(sock, frame):
    sock.sendall(frame)


def _recv(sock, timeout):
    sock.settimeout(timeout)
    msg, anc, _, _ = sock.recvmsg(wire.FRAME_MAX + 1, socket.CMSG_LEN(16))
    fds = array.array("i")
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data)
    for fd in fds:
        socket.close(fd)
    return wire.decode_frame(msg)


def test_sockets_come_in_batches(agent, echo_server):
    """SOCKET with a count: that many sockets of the kind in one reply, each usable; a count
    outside 1..SOCKETS_MAX is refused."""
    _, sock = agent
    sock.sendall(agent_wire.encode_socket(socket.AF_INET, socket.SOCK_STREAM, 0, 5, count=8))
    sock.settimeout(5)
    msg, anc, _, _ = sock.recvmsg(wire.FRAME_MAX, socket.CMSG_LEN(4 * agent_wire.SOCKETS_MAX))
    assert wire.decode_frame(msg).type == agent_wire.MSG_SOCKET_REPLY
    fds = array.array("i")
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data)
    socks = [socket.socket(fileno=fd) for fd in fds]
    try:
        assert len(socks) == 8
        assert {(s.family, s.type, s.proto) for s in socks} == {(socket.AF_INET, socket.SOCK_STREAM, 6)}
        socks[7].connect(("127.0.0.1", echo_server))  # made here (no namespace in this test)
        socks[7].sendall(b"x")
        assert socks[7].recv(100) == b"echo:x"
    finally:
        for s in socks:
            s.close()
    for count in (0, agent_wire.SOCKETS_MAX + 1):
        request = agent_wire.SOCKET.pack(socket.AF_INET, 1, 0, count, 0)
        sock.sendall(wire.encode_frame(agent_wire.MSG_SOCKET, request, id=6))
        reply = wire.decode_frame(sock.recv(wire.FRAME_MAX))
        assert reply.type == wire.MSG_ERROR and wire.decode_error(reply).errno == errno.EINVAL, count


def test_a_slow_request_does_not_hold_up_a_fast_one(agent, echo_server):
    """A connect that hangs (the listener's backlog is full, SYNs are dropped) and a quick one:
    the quick one is answered first, at once; the slow one later, with ETIMEDOUT."""
    _, sock = agent
    full = socket.create_server(("127.0.0.1", 0), backlog=0)
    fillers = []
    for _ in range(4):  # fill the accept queue; later SYNs get no answer
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(full.getsockname())
        fillers.append(s)
    time.sleep(0.2)
    slow = agent_wire.Connect(socket.AF_INET, socket.SOCK_STREAM, 0, 1500,
                              encode_inet("127.0.0.1", full.getsockname()[1]))
    fast = agent_wire.Connect(socket.AF_INET, socket.SOCK_STREAM, 0, 5000, encode_inet("127.0.0.1", echo_server))
    start = time.monotonic()
    _send(sock, agent_wire.encode_connect(slow, 1))
    _send(sock, agent_wire.encode_connect(fast, 2))
    first = _recv(sock, 5)
    assert first.id == 2 and first.type == agent_wire.MSG_CONNECT_REPLY
    assert time.monotonic() - start < 1.0
    second = _recv(sock, 10)
    assert second.id == 1 and wire.decode_error(second).errno == errno.ETIMEDOUT
    for s in fillers:
        s.close()
    full.close()


def test_unknown_request_gets_an_error_reply(agent):
    _, sock = agent
    _send(sock, wire.encode_frame(99, b"", id=7))
    reply = _recv(sock, 5)
    assert reply.id == 7 and wire.decode_error(reply).errno == errno.EOPNOTSUPP


@pytest.mark.parametrize("garbage", [b"\x01\x02", b"\xff" * 64,
                                     wire.FRAME.pack(10**6, agent_wire.MSG_CONNECT, 0, 1)])
def test_malformed_frame_closes_the_link_and_the_agent_exits_cleanly(agent, garbage):
    proc, sock = agent
    sock.sendall(garbage)
    sock.settimeout(10)
    assert sock.recv(100) == b""  # the agent hung up
    assert proc.wait(timeout=10) == 0
    assert b"Traceback" not in proc.stderr.read()


def test_agent_refuses_a_descriptor_that_is_not_a_seqpacket_socket(tmp_path):
    with open(tmp_path / "f", "w") as f:
        proc = subprocess.run([sys.executable, "-m", "tether", "agent", "--fd", str(f.fileno())],
                              pass_fds=[f.fileno()], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stderr.startswith("tether agent: ")
    assert "Traceback" not in proc.stderr
