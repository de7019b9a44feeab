"""The requests an agent answers at once: hello, environment, file opens and reads, sockets,
how incoming traffic is served.

The asyncio server (agent/server.py) answers them from its reader callback. A forked agent
also answers them before asyncio has loaded (answer_until): `tether exec` asks its hello, the
target's environment and resolv.conf, and the program it starts its first sockets and
resolver files, while the agent's imports go on in a thread (targets/early.py). Nothing here
imports asyncio.
"""
from __future__ import annotations

import errno
import logging
import os
import select
import socket
from collections.abc import Callable

from ..protocol import agent_wire, wire
from . import files, net

log = logging.getLogger("tether.agent")
Environment = Callable[[], dict[str, str]]  # the target's environment, when the session asks
Reply = tuple[bytes, list[int]]  # a frame and the descriptors it carries; the sender closes them

# How the program's listeners are served (agent/incoming.py), until the session says (INCOMING).
# An agent on this host serves one session; a network agent, which will serve several, is to
# keep it per link.
incoming_settings = agent_wire.Incoming(mode=agent_wire.INCOMING_OFF)

IMMEDIATE = frozenset({agent_wire.MSG_AGENT_HELLO, agent_wire.MSG_ENV, agent_wire.MSG_OPEN, agent_wire.MSG_READ_FILE,
                       agent_wire.MSG_SOCKET, agent_wire.MSG_INCOMING})


def failure(e: Exception, id: int) -> bytes:
    """The error reply to a request that failed with e (net.OpError or wire.ProtocolError)."""
    if isinstance(e, net.OpError):
        return wire.encode_error(wire.ErrorReply(e.errno, str(e)), id)
    log.warning("bad request: %s", e)
    return wire.encode_error(wire.ErrorReply(errno.EINVAL, f"bad request: {e}"), id)


def needs_fds(carries_fds: bool, what: str) -> None:
    if not carries_fds:
        raise net.OpError(errno.EOPNOTSUPP, f"{what} returns a descriptor, which cannot cross this link")


def incoming_from(frame: wire.Frame) -> agent_wire.Incoming:
    """INCOMING's settings, if this agent can serve them."""
    settings = agent_wire.decode_incoming(frame)
    if settings.http:
        try:
            import llhttp  # noqa: F401  the filtered steal's parser (agent/http_filter.py)
        except ImportError:
            raise net.OpError(errno.EOPNOTSUPP, "a filtered steal needs the llhttp package where the agent "
                              "runs, and it is not there: install tether with its http extra "
                              "(pipx install './tether[http]', or pip install llhttp)") from None
    return settings


def answer(frame: wire.Frame, environment: Environment, carries_fds: bool, capabilities: int) -> list[Reply]:
    """The replies to frame, whose type is in IMMEDIATE."""
    global incoming_settings
    try:
        if frame.type == agent_wire.MSG_AGENT_HELLO:
            version, _ = agent_wire.decode_agent_hello(frame)
            if version != wire.PROTOCOL_VERSION:
                raise net.OpError(errno.EPROTO, f"agent speaks protocol {wire.PROTOCOL_VERSION}, "
                                                f"session {version}")
            return [(agent_wire.encode_agent_hello(wire.PROTOCOL_VERSION, capabilities, frame.id, reply=True), [])]
        if frame.type == agent_wire.MSG_ENV:
            return [(part, []) for part in agent_wire.encode_env_reply(environment(), frame.id)]
        if frame.type == agent_wire.MSG_OPEN:
            needs_fds(carries_fds, "OPEN")
            return [(agent_wire.encode_open_reply(frame.id), [files.open_readonly(agent_wire.decode_open(frame))])]
        if frame.type == agent_wire.MSG_READ_FILE:
            data = files.read_small(agent_wire.decode_read_file(frame))
            return [(part, []) for part in agent_wire.encode_read_file_reply(data, frame.id)]
        if frame.type == agent_wire.MSG_SOCKET:
            needs_fds(carries_fds, "SOCKET")
            socks = net.new_sockets(*agent_wire.decode_socket(frame))
            return [(agent_wire.encode_socket_reply(frame.id), [s.detach() for s in socks])]
        if frame.type == agent_wire.MSG_INCOMING:
            # Listeners get their sockets from here: a link that cannot carry them cannot serve them
            # (a network agent's stand-in asks on a lease connection of each listener: agent/listen.py).
            needs_fds(carries_fds, "incoming traffic (LISTEN)")
            incoming_settings = incoming_from(frame)
            log.debug("incoming: %s", incoming_settings)
            return [(wire.encode_frame(agent_wire.MSG_INCOMING_REPLY, b"", id=frame.id), [])]
        raise net.OpError(errno.EOPNOTSUPP, f"request type {frame.type} is not answered at once")
    except (net.OpError, wire.ProtocolError) as e:
        return [(failure(e, frame.id), [])]


def answer_until(session: socket.socket, listener: socket.socket, environment: Environment,
                 ready: int) -> dict[socket.socket, list[wire.Frame]] | None:
    """Answer what the session and the hooked processes that connect to listener ask (blocking
    SEQPACKET sockets that carry descriptors) until the descriptor ready is readable or a
    request comes that has to wait (a connect, a name lookup). Returns every connection with
    the frames read from it and not answered, the session's first, for the asyncio server to
    take over; None once the session has hung up or broken the protocol."""
    links = {session.fileno(): session}
    poller = select.poll()
    for fd in (session.fileno(), listener.fileno(), ready):
        poller.register(fd, select.POLLIN)
    answered, waiting = 0, None

    def drop(sock: socket.socket, why: str | None) -> None:
        if why:
            log.warning("closing a layer connection: %s", why)
        poller.unregister(sock)
        del links[sock.fileno()]
        sock.close()

    while waiting is None:
        events = dict(poller.poll())
        if ready in events:
            break
        for fd in events:
            if fd == listener.fileno():
                try:
                    conn, _ = listener.accept()
                except OSError as e:
                    log.warning("accepting a layer connection: %s", e)
                    continue
                links[conn.fileno()] = conn
                poller.register(conn, select.POLLIN)
                continue
            sock = links[fd]
            try:
                msg = sock.recv(wire.FRAME_MAX + 1)
                if not msg:
                    if sock is session:
                        log.debug("%d requests answered before asyncio had loaded; the session is over",
                                  answered)
                        return None
                    drop(sock, None)
                    continue
                frame = wire.decode_frame(msg)
                if frame.type not in IMMEDIATE:
                    waiting = sock, frame
                    break
                for reply, passed in answer(frame, environment, True, agent_wire.CAP_SOCKETS):
                    try:
                        socket.send_fds(sock, [reply], passed)
                    finally:
                        for d in passed:
                            os.close(d)
                answered += 1
            except (OSError, wire.ProtocolError) as e:
                if sock is session:
                    log.warning("closing the session link: %s", e)
                    return None
                drop(sock, str(e))
    handover: dict[socket.socket, list[wire.Frame]] = {sock: [] for sock in links.values()}
    if waiting:
        handover[waiting[0]].append(waiting[1])
    log.debug("%d requests answered before asyncio had loaded%s", answered,
              f"; type {waiting[1].type} waits for it" if waiting else "")
    return handover
