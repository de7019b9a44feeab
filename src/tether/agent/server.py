"""The agent's side of one link to a session: frames in, operations run, replies out.

Runs inside the target (a network namespace, a container's namespaces, a remote host). Each
request runs as its own task, so a slow connect never holds up another request; replies carry
the request's id. A malformed frame closes the link with a logged reason; the agent itself
never crashes on input.
"""
from __future__ import annotations

import array
import asyncio
import logging
import os
import socket

from ..protocol import wire
from . import env, files, net

log = logging.getLogger("tether.agent")
CAPABILITIES = 0


class Link:
    """One session, over a SOCK_SEQPACKET unix socket (descriptors travel with replies)."""

    def __init__(self, sock: socket.socket, env_file: str | None = None):
        self.sock = sock
        self.env_file = env_file
        self.sock.setblocking(False)
        self.loop = asyncio.get_running_loop()
        self.tasks: set[asyncio.Task] = set()

    async def _ready(self, add, remove) -> None:
        """Wait until the socket is readable (add_reader) or writable (add_writer)."""
        ready = self.loop.create_future()
        add(self.sock, ready.set_result, None)
        try:
            await ready
        finally:
            remove(self.sock)

    async def _recv(self) -> bytes:
        while True:
            try:
                return self.sock.recv(wire.FRAME_MAX + 1)
            except BlockingIOError:
                await self._ready(self.loop.add_reader, self.loop.remove_reader)

    async def _send(self, frame: bytes, fds: list[int] = ()) -> None:
        # asyncio's socket helpers cannot pass descriptors: sendmsg on the non-blocking socket.
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        while True:
            try:
                self.sock.sendmsg([frame], ancillary)
                return
            except BlockingIOError:
                await self._ready(self.loop.add_writer, self.loop.remove_writer)

    async def serve(self) -> None:
        try:
            while True:
                msg = await self._recv()
                if not msg:
                    return
                frame = wire.decode_frame(msg)
                task = asyncio.create_task(self._handle(frame))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        except wire.ProtocolError as e:
            log.warning("closing the session link: %s", e)
        except OSError as e:
            log.warning("session link failed: %s", e)
        finally:
            for task in list(self.tasks):
                task.cancel()
            self.sock.close()

    async def _handle(self, frame: wire.Frame) -> None:
        try:
            if frame.type == wire.MSG_AGENT_HELLO:
                version, _ = wire.decode_agent_hello(frame)
                if version != wire.PROTOCOL_VERSION:
                    raise net.OpError(71, f"agent speaks protocol {wire.PROTOCOL_VERSION}, "
                                          f"session {version}")  # EPROTO
                await self._send(wire.encode_agent_hello(wire.PROTOCOL_VERSION, CAPABILITIES,
                                                         frame.id, reply=True))
            elif frame.type == wire.MSG_CONNECT:
                sock, status = await net.connect(wire.decode_connect(frame))
                try:
                    await self._send(wire.encode_connect_reply(frame.id, status), [sock.fileno()])
                finally:
                    sock.close()  # the session's copy is the one that lives on
            elif frame.type == wire.MSG_OPEN:
                fd = files.open_readonly(wire.decode_open(frame))
                try:
                    await self._send(wire.encode_open_reply(frame.id), [fd])
                finally:
                    os.close(fd)
            elif frame.type == wire.MSG_ENV:
                for part in wire.encode_env_reply(env.target_env(self.env_file), frame.id):
                    await self._send(part)
            else:
                raise net.OpError(95, f"unknown request type {frame.type}")  # EOPNOTSUPP
        except net.OpError as e:
            await self._send(wire.encode_error(wire.ErrorReply(e.errno, str(e)), frame.id))
        except wire.ProtocolError as e:
            log.warning("bad request: %s", e)
            await self._send(wire.encode_error(wire.ErrorReply(22, f"bad request: {e}"), frame.id))


async def serve_fd(fd: int, env_file: str | None = None) -> None:
    """Serve the session on an inherited socket descriptor until it hangs up."""
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_SEQPACKET or sock.family != socket.AF_UNIX:
        raise ValueError(f"descriptor {fd} is not a unix SOCK_SEQPACKET socket")
    await Link(sock, env_file).serve()
