"""Messages that carry descriptors (SCM_RIGHTS) on unix SOCK_SEQPACKET sockets: the session's
link to its agent, and the stand-in agent's link to a unix: agent. I/O, so not in protocol/."""
from __future__ import annotations

import array
import socket

from .protocol import agent_wire, wire


def recv_with_fds(sock: socket.socket, flags: int = 0) -> tuple[bytes, list[int]]:
    """One message (b"" at the end) and the descriptors that came with it, close-on-exec; at
    most agent_wire.SOCKETS_MAX, the kernel closes any more. (socket.recv_fds ignores flags before
    Python 3.12: MSG_DONTWAIT would block.)"""
    fds = array.array("i")
    msg, ancdata, _, _ = sock.recvmsg(wire.FRAME_MAX + 1, socket.CMSG_LEN(agent_wire.SOCKETS_MAX * fds.itemsize),
                                      flags | socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return msg, list(fds)
