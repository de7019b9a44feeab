"""The agent's side of one link to a session: frames in, operations run, replies out.

Runs inside the target (a network namespace, a container's namespaces, a remote host). The
link is read by one reader callback on the event loop. Requests that complete at once (hello,
file open, sockets, environment: agent/answers.py) are answered from that callback, with no
task and no wait; a connect and a name lookup run as their own tasks, so they never hold up
another request. Replies carry the request's id. A listener's LISTEN takes the link for itself:
what it set up in the target (agent/incoming.py) is undone when the link closes.
A malformed frame closes the link with a logged reason; the agent itself never crashes on input.
"""
from __future__ import annotations

import array
import asyncio
import collections
import logging
import os
import socket
from collections.abc import Callable, Iterable

from ..protocol import agent_wire, wire
from . import answers, dns, incoming, net
from .answers import Environment

log = logging.getLogger("tether.agent")
BATCH = 64  # frames read in one go before the loop looks at anything else


class Link:
    """One session, over a SOCK_SEQPACKET unix socket (descriptors travel with replies).
    StreamLink is the same over a byte stream (a network agent's TCP link)."""

    carries_fds = True

    def __init__(self, sock: socket.socket, environment: Environment):
        self.sock = sock
        self.sock.setblocking(False)
        self.environment = environment
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task] = set()
        self.unsent: collections.deque[tuple[bytes, list[int]]] = collections.deque()
        self.done = self.loop.create_future()
        self.undo: list = []  # what LISTEN set up, closed with the link

    async def serve(self) -> None:
        self.loop.add_reader(self.sock, self._readable)
        try:
            await self.done
        finally:
            self.loop.remove_reader(self.sock)
            self.loop.remove_writer(self.sock)
            for task in list(self.tasks):
                task.cancel()
            for _, fds in self.unsent:
                for fd in fds:
                    os.close(fd)
            self.sock.close()
            for undo in self.undo:
                undo.close()

    def _close(self, why: str | None = None) -> None:
        if why:
            log.warning("closing the session link: %s", why)
        if not self.done.done():
            self.done.set_result(None)

    def _receive(self) -> list[wire.Frame] | None:
        """The frames that arrived (maybe none); None once the peer has hung up."""
        frames = []
        for _ in range(BATCH):
            try:
                msg = self.sock.recv(wire.FRAME_MAX + 1)
            except BlockingIOError:
                break
            if not msg:
                return frames or None
            frames.append(wire.decode_frame(msg))
        return frames

    def _readable(self) -> None:
        try:
            frames = self._receive()
        except OSError as e:
            self._close(f"session link failed: {e}")
            return
        except wire.ProtocolError as e:
            self._close(str(e))
            return
        if frames is None:
            self._close()
            return
        for frame in frames:
            self._handle(frame)

    def _sendmsg(self, frame: bytes, fds: list[int]) -> bool:
        """Send one frame with its descriptors; False if the link cannot take it now. On a
        failed (or closed) link nothing more goes out: that counts as done."""
        if self.done.done():
            return True
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            self.sock.sendmsg([frame], ancillary)
        except BlockingIOError:
            return False
        except OSError as e:
            self._close(f"session link failed: {e}")
        return True

    def _send(self, frame: bytes, fds: list[int] = ()) -> None:
        """Send now, or queue (with copies of fds) until the link can take it."""
        if not self.unsent:
            if self._sendmsg(frame, fds):
                return
            self.loop.add_writer(self.sock, self._writable)
        self.unsent.append((frame, [os.dup(fd) for fd in fds]))

    def _writable(self) -> None:
        while self.unsent:
            frame, fds = self.unsent[0]
            if not self._sendmsg(frame, fds):
                return
            self.unsent.popleft()
            for fd in fds:
                os.close(fd)
        self.loop.remove_writer(self.sock)

    def pending(self, frames: Iterable[wire.Frame]) -> None:
        """Handle frames read before this link took over (after authentication, or before
        asyncio had loaded)."""
        for frame in frames:
            self._handle(frame)

    def capabilities(self) -> int:
        """What this link's AGENT_HELLO reply announces."""
        return agent_wire.CAP_SOCKETS if self.carries_fds else 0

    def _handle(self, frame: wire.Frame) -> None:
        if frame.type in answers.IMMEDIATE:
            for reply, fds in answers.answer(frame, self.environment, self.carries_fds, self.capabilities()):
                try:
                    self._send(reply, fds)
                finally:
                    for fd in fds:
                        os.close(fd)
            return
        try:
            if frame.type == agent_wire.MSG_CONNECT:
                answers.needs_fds(self.carries_fds, "CONNECT")
                self._spawn(self._connect(frame.id, agent_wire.decode_connect(frame)))
            elif frame.type == agent_wire.MSG_NAMEINFO:
                self._spawn(self._nameinfo(frame.id, *agent_wire.decode_nameinfo(frame)))
            elif frame.type == agent_wire.MSG_RESOLVE:
                self._spawn(self._resolve(frame.id, agent_wire.decode_resolve(frame)))
            elif frame.type == agent_wire.MSG_LISTEN:
                answers.needs_fds(self.carries_fds, "LISTEN")
                self._listen(frame.id, agent_wire.decode_listen(frame))
            else:
                raise net.OpError(95, f"unknown request type {frame.type}")  # EOPNOTSUPP
        except (net.OpError, wire.ProtocolError) as e:
            self._send(answers.failure(e, frame.id))

    def _spawn(self, work) -> None:
        """Run a request that waits as its own task: it holds up no other request."""
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _listen(self, id: int, req: agent_wire.Listen) -> None:
        sock, undo = incoming.listen(req, answers.incoming_settings)
        if sock is None:
            self._send(agent_wire.encode_listen_reply(agent_wire.LISTEN_LOCAL, id))
            return
        self.undo.append(undo)
        with sock:
            self._send(agent_wire.encode_listen_reply(agent_wire.LISTEN_TARGET, id), [sock.fileno()])

    async def _nameinfo(self, id: int, sockaddr: bytes, flags: int) -> None:
        self._send(agent_wire.encode_nameinfo_reply(await dns.nameinfo(sockaddr, flags), id))

    async def _resolve(self, id: int, req: agent_wire.Resolve) -> None:
        self._send(agent_wire.encode_resolve_reply(await dns.resolve(req), id))

    async def _connect(self, id: int, req: agent_wire.Connect) -> None:
        try:
            sock = await net.connect(req)
        except net.OpError as e:
            self._send(wire.encode_error(wire.ErrorReply(e.errno, str(e)), id))
            return
        with sock:
            self._send(agent_wire.encode_connect_reply(id, 0), [sock.fileno()])


class StreamLink(Link):
    """A session over a byte stream (TCP): frames are split by their length; no descriptors."""

    carries_fds = False
    UNSENT_MAX = 16 << 20  # bytes of replies a session may leave unread before it is dropped

    def __init__(self, sock: socket.socket, environment: Environment):
        super().__init__(sock, environment)
        self.reader = wire.FrameReader()
        self.out = bytearray()

    def _receive(self) -> list[wire.Frame] | None:
        try:
            data = self.sock.recv(1 << 16)
        except BlockingIOError:
            return []
        if not data:
            return None
        return self.reader.feed(data)

    def _send(self, frame: bytes, fds: list[int] = ()) -> None:
        if self.done.done():
            return
        was_empty = not self.out
        self.out += frame
        if len(self.out) > self.UNSENT_MAX:
            self._close(f"the session left {len(self.out)} bytes of replies unread")
            return
        if was_empty:
            self._writable()
            if self.out:
                self.loop.add_writer(self.sock, self._writable)

    def _writable(self) -> None:
        try:
            while self.out:
                n = self.sock.send(self.out)
                del self.out[:n]
        except BlockingIOError:
            return
        except OSError as e:
            self.out.clear()
            self._close(f"session link failed: {e}")
        self.loop.remove_writer(self.sock)



def _seqpacket(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_SEQPACKET or sock.family != socket.AF_UNIX:
        raise ValueError(f"descriptor {fd} is not a unix SOCK_SEQPACKET socket")
    return sock


async def serve_fd(fd: int, environment: Environment, listen_fd: int | None = None,
                   make_link: Callable[[socket.socket], Link] | None = None,
                   pending: Iterable[wire.Frame] = (),
                   accepted: Iterable[tuple[socket.socket, list[wire.Frame]]] = ()) -> None:
    """Serve the session on an inherited socket descriptor until it hangs up.

    listen_fd: a listening socket on which hooked processes connect directly for CONNECT and
    OPEN (each connection is served like the session's link), so those requests take one
    hop instead of two. make_link: what serves each connection (default: this host's Link).
    pending, accepted: the session's requests read before (answers.answer_until), and the
    layer connections accepted then with theirs, handled first."""
    session = _seqpacket(fd)
    listener = _seqpacket(listen_fd) if listen_fd is not None else None
    make_link = make_link or (lambda sock: Link(sock, environment))
    loop = asyncio.get_running_loop()
    layers: set[asyncio.Task] = set()

    def serve_layer(conn: socket.socket, frames: Iterable[wire.Frame] = ()) -> None:
        link = make_link(conn)
        link.pending(frames)
        task = loop.create_task(link.serve())
        layers.add(task)
        task.add_done_callback(layers.discard)

    def accept() -> None:
        for _ in range(BATCH):
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                log.warning("accepting a layer connection: %s", e)
                return
            serve_layer(conn)

    for conn, frames in accepted:
        serve_layer(conn, frames)
    if listener:
        listener.setblocking(False)
        loop.add_reader(listener, accept)
    link = make_link(session)
    link.pending(pending)
    try:
        await link.serve()
    finally:
        if listener:
            loop.remove_reader(listener)
            listener.close()
        for task in list(layers):
            task.cancel()
