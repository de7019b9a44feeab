"""The session's side of the link to an agent: requests out, replies (and descriptors) in.

Requests are asynchronous: `submit` sends one and registers what to do with its reply, and
`read_ready` (called by the session's event loop when the link is readable) hands each reply
to its request's callback, so a slow connect never holds up a file open behind it. The
blocking helpers (hello, env, connect) run that same machinery until their reply arrives; the
session uses them before its loop starts, and tests use them directly.
"""
from __future__ import annotations

import errno
import itertools
import os
import select
import socket
import time
from collections.abc import Callable

from ..fdpass import recv_with_fds
from ..protocol import agent_wire, wire
from ..protocol.sockaddr import decode_inet

# A reply callback gets the frame (None when the link failed: see AgentLink.dead) and the
# descriptors that came with it, which it then owns; it returns False while more frames of the
# same reply are due (ENV_REPLY with FLAG_MORE).
ReplyCallback = Callable[[wire.Frame | None, list[int]], bool]

# glibc's getaddrinfo codes and their gai_strerror texts, for the ones a name lookup returns.
EAI_REASONS = {-2: "Name or service not known", -3: "Temporary failure in name resolution",
               -4: "Non-recoverable failure in name resolution", -5: "No address associated with hostname"}


class AgentError(Exception):
    """The agent answered a request with an error; errno is what the program should see."""

    def __init__(self, errno: int, message: str):
        super().__init__(message)
        self.errno = errno


class LinkError(Exception):
    """The link itself failed: the agent went away, timed out, or spoke nonsense."""


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        socket.close(fd)


class AgentLink:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._ids = itertools.count(1)
        self._pending: dict[int, ReplyCallback] = {}
        self.dead: str | None = None  # why the link failed, once it has

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def submit(self, encode: Callable[[int], bytes], on_reply: ReplyCallback) -> None:
        """Send the request encode(id) makes; on_reply gets its reply (or None if the link fails)."""
        if self.dead:
            on_reply(None, [])
            return
        id = next(self._ids)
        self._pending[id] = on_reply
        try:
            self.sock.sendall(encode(id))
        except OSError as e:
            self._fail(f"link to the agent failed: {e.strerror or e}")

    def read_ready(self) -> None:
        """Take every reply waiting on the link and hand each to its callback."""
        while not self.dead:
            try:
                msg, fds = recv_with_fds(self.sock, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as e:
                self._fail(f"link to the agent failed: {e.strerror or e}")
                return
            if not msg:
                self._fail("the agent closed the link (did it exit?)")
                return
            try:
                frame = wire.decode_frame(msg)
                on_reply = self._pending.pop(frame.id)
            except (wire.ProtocolError, KeyError) as e:
                close_fds(fds)
                self._fail(f"the agent sent a malformed reply: {e}")
                return
            if not on_reply(frame, fds):
                self._pending[frame.id] = on_reply

    def _fail(self, reason: str) -> None:
        self.dead = reason
        pending, self._pending = self._pending, {}
        for on_reply in pending.values():
            on_reply(None, [])

    def _call(self, encode: Callable[[int], bytes], timeout: float,
              collect: Callable[[wire.Frame], bool] = lambda f: True) -> tuple[wire.Frame, list[int]]:
        """Submit a request and serve the link until its reply is complete."""
        got: list[tuple[wire.Frame | None, list[int]]] = []

        def on_reply(frame, fds):
            if frame is not None and frame.type != wire.MSG_ERROR and not collect(frame):
                return False
            got.append((frame, fds))
            return True

        self.submit(encode, on_reply)
        end = time.monotonic() + timeout
        while not got:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                raise LinkError(f"the agent did not answer within {timeout:g} s")
            self.read_ready()
        frame, fds = got[0]
        if frame is None:
            raise LinkError(self.dead)
        if frame.type == wire.MSG_ERROR:
            close_fds(fds)
            try:
                err = wire.decode_error(frame)
            except wire.ProtocolError as e:
                raise LinkError(f"the agent sent a malformed reply: {e}") from None
            raise AgentError(err.errno, err.message)
        return frame, fds

    def hello(self, timeout: float = 10.0) -> tuple[int, int]:
        frame, _ = self._call(lambda id: agent_wire.encode_agent_hello(wire.PROTOCOL_VERSION, 0, id), timeout)
        try:
            version, caps = agent_wire.decode_agent_hello(frame)
        except wire.ProtocolError as e:
            raise LinkError(f"the agent sent a malformed reply: {e}") from None
        if version != wire.PROTOCOL_VERSION:
            raise LinkError(f"agent speaks protocol {version}, this tether {wire.PROTOCOL_VERSION}")
        return version, caps

    def env(self, timeout: float = 10.0) -> dict[str, str]:
        """The target's environment."""
        assembler = agent_wire.EnvAssembler()

        def collect(frame: wire.Frame) -> bool:
            assembler.feed(frame)
            return assembler.complete

        try:
            self._call(agent_wire.encode_env_request, timeout, collect)
            return assembler.env()
        except wire.ProtocolError as e:
            raise LinkError(f"the agent sent a malformed environment: {e}") from None

    def connect(self, family: int, socktype: int, sockaddr: bytes, protocol: int = 0,
                timeout_ms: int = 10_000) -> socket.socket:
        """A socket connected from inside the target; AgentError carries the errno otherwise."""
        req = agent_wire.Connect(family, socktype, protocol, timeout_ms, sockaddr)
        frame, fds = self._call(lambda id: agent_wire.encode_connect(req, id), timeout_ms / 1000 + 5)
        if frame.type != agent_wire.MSG_CONNECT_REPLY or len(fds) != 1:
            close_fds(fds)
            raise LinkError(f"CONNECT answered with frame type {frame.type} and {len(fds)} descriptors")
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(True)  # the agent connected it non-blocking; hand it over as new
        return sock

    def read_file(self, path: str, limit: int = 1 << 20, timeout: float = 10.0) -> bytes:
        """The contents of a file as the target sees it (AgentError if it cannot be opened)."""
        frame, fds = self._call(lambda id: agent_wire.encode_open(agent_wire.Open(os.O_RDONLY, 0, path), id), timeout)
        if frame.type != agent_wire.MSG_OPEN_REPLY or len(fds) != 1:
            close_fds(fds)
            raise LinkError(f"OPEN answered with frame type {frame.type} and {len(fds)} descriptors")
        with os.fdopen(fds[0], "rb") as f:
            return f.read(limit)

    def incoming(self, settings: agent_wire.Incoming, timeout: float = 10.0) -> None:
        """Tell the agent how the program's listeners are served (before the program runs)."""
        frame, fds = self._call(lambda id: agent_wire.encode_incoming(settings, id), timeout)
        close_fds(fds)
        if frame.type != agent_wire.MSG_INCOMING_REPLY:
            raise LinkError(f"INCOMING answered with frame type {frame.type}")

    def files(self, settings: agent_wire.TargetFiles, timeout: float = 20.0) -> None:
        """Ask a network agent's stand-in for the target's files (before the program runs)."""
        frame, fds = self._call(lambda id: agent_wire.encode_target_files(settings, id), timeout)
        close_fds(fds)
        if frame.type != agent_wire.MSG_TARGET_FILES_REPLY:
            raise LinkError(f"FILES answered with frame type {frame.type}")

    def resolve(self, name: str, timeout: float = 10.0) -> list[str]:
        """The addresses of name as the target resolves it, IPv4 first, without duplicates
        (AgentError ENOENT if it does not resolve)."""
        req = agent_wire.Resolve(name, socktype=socket.SOCK_STREAM)
        frame, fds = self._call(lambda id: agent_wire.encode_resolve(req, id), timeout)
        close_fds(fds)
        try:
            reply = agent_wire.decode_resolve_reply(frame)
        except wire.ProtocolError as e:
            raise LinkError(f"the agent sent a malformed reply: {e}") from None
        if reply.status:
            reason = EAI_REASONS.get(reply.status, f"getaddrinfo error {reply.status}")
            if reply.status == agent_wire.EAI_SYSTEM:
                reason = os.strerror(reply.errno)
            raise AgentError(errno.ENOENT, f"{name}: {reason}")
        addresses = {decode_inet(e.sockaddr)[1] for e in reply.entries}
        return sorted(addresses, key=lambda a: (":" in a, a))
