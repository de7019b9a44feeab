"""Layer requests that need the target: decide, pass them to the agent, bring the answer back.

A CONNECT the outgoing policy keeps local is answered LOCAL at once. Others go to the agent
with the layer's request renumbered for the agent link; its reply (and the descriptor riding
with it) goes back to the layer connection that asked, with the layer's id. Nothing here
blocks: replies arrive through the session's event loop (AgentLink.read_ready).
"""
from __future__ import annotations

import array
import errno
import logging
import socket
from collections.abc import Callable

from ..protocol import wire
from ..protocol.sockaddr import SockaddrError, decode_inet
from .agent_link import AgentLink, close_fds
from .policy import OutgoingPolicy

log = logging.getLogger("tether.session")


class Forwarder:
    def __init__(self, link: AgentLink, policy: OutgoingPolicy, target: str,
                 warn: Callable[[str], None] = lambda msg: None):
        self.link, self.policy, self.target, self.warn = link, policy, target, warn
        self._warned_dead = False

    def handles(self, frame_type: int) -> bool:
        return frame_type in (wire.MSG_CONNECT, wire.MSG_OPEN)

    def handle(self, conn: socket.socket, frame: wire.Frame) -> None:
        if frame.type == wire.MSG_CONNECT:
            req = wire.decode_connect(frame)
            try:
                _, host, port = decode_inet(req.sockaddr)
            except SockaddrError:
                _reply(conn, wire.encode_local(frame.id))
                return
            if not self.policy.goes_to_target(host, port):
                log.debug("connect %s:%s stays local", host, port)
                _reply(conn, wire.encode_local(frame.id))
                return
            log.debug("connect %s:%s goes out from %s", host, port, self.target)
            req = wire.Connect(req.family, req.socktype, req.protocol, 0, req.sockaddr)
            self.link.submit(lambda id: wire.encode_connect(req, id),
                             self._back_to(conn, frame.id, errno.ECONNREFUSED))
        else:
            req = wire.decode_open(frame)
            log.debug("open %s in %s", req.path, self.target)
            self.link.submit(lambda id: wire.encode_open(req, id), self._back_to(conn, frame.id, errno.EIO))

    def _back_to(self, conn: socket.socket, layer_id: int, dead_errno: int):
        def on_reply(reply: wire.Frame | None, fds: list[int]) -> bool:
            if reply is None:
                if not self._warned_dead:
                    self._warned_dead = True
                    self.warn(f"lost the agent in {self.target} ({self.link.dead}); "
                              f"calls that need the target now fail with {errno.errorcode[dead_errno]}")
                frame = wire.encode_error(wire.ErrorReply(dead_errno, f"no agent: {self.link.dead}"), layer_id)
            else:
                if reply.type == wire.MSG_ERROR:
                    log.debug("agent: %s", wire.decode_error(reply).message)
                frame = wire.encode_frame(reply.type, reply.payload, reply.flags, layer_id)
            _reply(conn, frame, fds)
            close_fds(fds)  # the layer has its own copy now
            return True
        return on_reply


def _reply(conn: socket.socket, frame: bytes, fds: list[int] = ()) -> None:
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    try:
        conn.sendmsg([frame], ancillary)
    except OSError as e:  # the process (or thread) that asked is gone; so is its need
        log.debug("could not answer a layer request: %s", e)
