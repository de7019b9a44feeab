"""The session's side of the link to an agent: requests out, replies (and descriptors) in.

Blocking and simple for now: one request at a time from the caller's thread. The agent runs
requests concurrently, so a session may keep several links or, later, a multiplexing client.
"""
from __future__ import annotations

import array
import itertools
import select
import socket

from ..protocol import wire


class AgentError(Exception):
    """The agent answered a request with an error; errno is what the program should see."""

    def __init__(self, errno: int, message: str):
        super().__init__(message)
        self.errno = errno


class LinkError(Exception):
    """The link itself failed: the agent went away, timed out, or spoke nonsense."""


class AgentLink:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._ids = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def _request(self, encode, timeout: float) -> tuple[wire.Frame, list[int]]:
        id = next(self._ids)
        try:
            self.sock.sendall(encode(id))
            if not select.select([self.sock], [], [], timeout)[0]:
                raise LinkError(f"the agent did not answer within {timeout:g} s")
            fds = array.array("i")
            msg, ancdata, _, _ = self.sock.recvmsg(wire.FRAME_MAX + 1, socket.CMSG_LEN(4 * fds.itemsize))
        except OSError as e:
            raise LinkError(f"link to the agent failed: {e.strerror or e}") from None
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        if not msg:
            raise LinkError("the agent closed the link")
        try:
            frame = wire.decode_frame(msg)
            if frame.id != id:
                raise wire.ProtocolError(f"reply to request {frame.id}, expected {id}")
            if frame.type == wire.MSG_ERROR:
                err = wire.decode_error(frame)
                raise AgentError(err.errno, err.message)
        except wire.ProtocolError as e:
            for fd in fds:
                socket.close(fd)
            raise LinkError(f"the agent sent a malformed reply: {e}") from None
        return frame, list(fds)

    def hello(self, timeout: float = 10.0) -> tuple[int, int]:
        frame, _ = self._request(lambda id: wire.encode_agent_hello(wire.PROTOCOL_VERSION, 0, id), timeout)
        version, caps = wire.decode_agent_hello(frame)
        if version != wire.PROTOCOL_VERSION:
            raise LinkError(f"agent speaks protocol {version}, this tether {wire.PROTOCOL_VERSION}")
        return version, caps

    def connect(self, family: int, socktype: int, sockaddr: bytes, protocol: int = 0,
                timeout_ms: int = 10_000) -> socket.socket:
        """A socket connected from inside the target; AgentError carries the errno otherwise."""
        req = wire.Connect(family, socktype, protocol, timeout_ms, sockaddr)
        frame, fds = self._request(lambda id: wire.encode_connect(req, id), timeout_ms / 1000 + 5)
        if frame.type != wire.MSG_CONNECT_REPLY or len(fds) != 1:
            for fd in fds:
                socket.close(fd)
            raise LinkError(f"CONNECT answered with frame type {frame.type} and {len(fds)} descriptors")
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(True)  # the agent connected it non-blocking; hand it over as new
        return sock
