"""The requests an agent answers at once: hello, environment, file opens and reads, sockets.

The asyncio server (agent/server.py) answers them from its reader callback. A forked agent
also answers them before asyncio has loaded (answer_until): `tether exec` asks its hello, the
target's environment and resolv.conf while the agent's imports go on in a thread
(targets/early.py). Nothing here imports asyncio.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import socket
from collections.abc import Callable

from ..protocol import wire
from . import files, net

log = logging.getLogger("tether.agent")
Environment = Callable[[], dict[str, str]]  # the target's environment, when the session asks
Reply = tuple[bytes, list[int]]  # a frame and the descriptors it carries; the sender closes them

IMMEDIATE = frozenset({wire.MSG_AGENT_HELLO, wire.MSG_ENV, wire.MSG_OPEN, wire.MSG_READ_FILE, wire.MSG_SOCKET})


def failure(e: Exception, id: int) -> bytes:
    """The error reply to a request that failed with e (net.OpError or wire.ProtocolError)."""
    if isinstance(e, net.OpError):
        return wire.encode_error(wire.ErrorReply(e.errno, str(e)), id)
    log.warning("bad request: %s", e)
    return wire.encode_error(wire.ErrorReply(errno.EINVAL, f"bad request: {e}"), id)


def needs_fds(carries_fds: bool, what: str) -> None:
    if not carries_fds:
        raise net.OpError(errno.EOPNOTSUPP, f"{what} returns a descriptor, which cannot cross this link")


def answer(frame: wire.Frame, environment: Environment, carries_fds: bool, capabilities: int) -> list[Reply]:
    """The replies to frame, whose type is in IMMEDIATE."""
    try:
        if frame.type == wire.MSG_AGENT_HELLO:
            version, _ = wire.decode_agent_hello(frame)
            if version != wire.PROTOCOL_VERSION:
                raise net.OpError(errno.EPROTO, f"agent speaks protocol {wire.PROTOCOL_VERSION}, "
                                                f"session {version}")
            return [(wire.encode_agent_hello(wire.PROTOCOL_VERSION, capabilities, frame.id, reply=True), [])]
        if frame.type == wire.MSG_ENV:
            return [(part, []) for part in wire.encode_env_reply(environment(), frame.id)]
        if frame.type == wire.MSG_OPEN:
            needs_fds(carries_fds, "OPEN")
            return [(wire.encode_open_reply(frame.id), [files.open_readonly(wire.decode_open(frame))])]
        if frame.type == wire.MSG_READ_FILE:
            data = files.read_small(wire.decode_read_file(frame))
            return [(part, []) for part in wire.encode_read_file_reply(data, frame.id)]
        if frame.type == wire.MSG_SOCKET:
            needs_fds(carries_fds, "SOCKET")
            socks = net.new_sockets(*wire.decode_socket(frame))
            return [(wire.encode_socket_reply(frame.id), [s.detach() for s in socks])]
        raise net.OpError(errno.EOPNOTSUPP, f"request type {frame.type} is not answered at once")
    except (net.OpError, wire.ProtocolError) as e:
        return [(failure(e, frame.id), [])]


def answer_until(sock: socket.socket, environment: Environment, ready: int) -> list[wire.Frame] | None:
    """Answer the session's requests on sock (a blocking SEQPACKET link that carries
    descriptors) until the descriptor ready is readable or a request comes that has to wait
    (a connect, a name lookup). Returns the frames read and not answered, for the asyncio
    server to take over; None if the session hung up or broke the protocol."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(ready, select.POLLIN)
    answered = 0
    while True:
        if ready in dict(poller.poll()):
            log.debug("%d requests answered before asyncio had loaded", answered)
            return []
        try:
            msg = sock.recv(wire.FRAME_MAX + 1)
            if not msg:
                log.debug("%d requests answered before asyncio had loaded; the session is over", answered)
                return None
            frame = wire.decode_frame(msg)
            if frame.type not in IMMEDIATE:
                log.debug("%d requests answered before asyncio had loaded; type %d waits for it",
                          answered, frame.type)
                return [frame]
            for reply, fds in answer(frame, environment, True, wire.CAP_SOCKETS):
                try:
                    socket.send_fds(sock, [reply], fds)
                finally:
                    for fd in fds:
                        os.close(fd)
            answered += 1
        except (OSError, wire.ProtocolError) as e:
            log.warning("closing the session link: %s", e)
            return None
