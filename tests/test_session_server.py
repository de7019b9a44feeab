"""The session's layer socket: every connecting process is served, a bad peer is dropped with a
logged reason and never stops the others."""
from __future__ import annotations

import socket

import pytest

from tether.protocol import layer_wire, trace_wire, wire
from tether.session.server import LayerServer


@pytest.fixture
def server():
    events, warnings = [], []
    srv = LayerServer(layer_wire.MODE_TRACE, events.append, warn=warnings.append)
    yield srv, events, warnings
    srv.close()


def connect(srv) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(srv.path)
    s.settimeout(5)
    return s


def serve(srv, rounds=20):
    """Serve until nothing is left to do (what was sent before is already queued)."""
    for _ in range(rounds):
        if not srv.poll(0.05):
            return


def test_hello_gets_mode_and_empty_plan_for_a_program_that_is_not_go(server):
    srv, _, _ = server
    peer = connect(srv)
    peer.send(layer_wire.encode_hello(layer_wire.Hello(wire.PROTOCOL_VERSION, 0, 1234, 1, "/bin/true", ""), 1))
    serve(srv)
    reply = layer_wire.decode_hello_reply(wire.decode_frame(peer.recv(wire.FRAME_MAX)))
    assert reply == layer_wire.HelloReply(wire.PROTOCOL_VERSION, layer_wire.MODE_TRACE, "")


@pytest.mark.parametrize("garbage", [b"\x00" * 3, b"\xff" * 40, wire.encode_frame(99, b"x"),
                                     wire.encode_frame(trace_wire.MSG_SYSCALL, b"short")])
def test_a_bad_peer_is_closed_and_the_others_go_on(server, garbage):
    srv, events, warnings = server
    good, bad = connect(srv), connect(srv)
    bad.send(garbage)
    serve(srv)
    assert bad.recv(10) == b""  # dropped
    assert len(warnings) == 1 and warnings[0].startswith("closing a layer connection: ")
    event = trace_wire.SyscallEvent(1, 1, 0, (0,) * 6, 3)
    good.send(trace_wire.encode_syscall(event))
    serve(srv)
    assert events == [event] and srv.peers == 1


def test_a_hello_from_another_protocol_version_is_refused(server):
    srv, _, warnings = server
    peer = connect(srv)
    peer.send(layer_wire.encode_hello(layer_wire.Hello(wire.PROTOCOL_VERSION + 1, 0, 1, 1, "/x", ""), 1))
    serve(srv)
    assert peer.recv(10) == b"" and "protocol" in warnings[0]


def test_an_error_while_serving_a_program_is_the_one_reported(tmp_path):
    """A callback that fails mid-run (a trace printer whose disk is full) surfaces as itself,
    and the server still closes cleanly afterwards (the program's exit watch included)."""
    import sys

    from tether.session.launch import run

    def full_disk(event):
        raise OSError(28, "No space left on device")

    srv = LayerServer(layer_wire.MODE_TRACE, full_disk)
    code = "import socket; socket.socket().connect_ex(('127.0.0.1', 1))"
    with pytest.raises(OSError, match="No space left"):
        run([sys.executable, "-c", code], srv)
    srv.close()  # raised AttributeError on the program's exit watch (a pidfd, an int) before
