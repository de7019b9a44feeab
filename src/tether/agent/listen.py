"""A network-reachable agent: `tether agent --listen tcp:HOST:PORT|unix:PATH --token-file F`.

Every connection proves the token first (protocol/auth.py); a peer that does not within
AUTH_TIMEOUT, or proves a wrong one, is refused and logged. Its first frame after that says
what the connection is for:

- AGENT_HELLO: a session's control link, served like a forked agent's (server.Link). Over
  unix:PATH (SOCK_SEQPACKET) descriptors travel, exactly as for netns: targets; over TCP they
  cannot, so files come as contents (READ_FILE) and connections as data connections:
- STREAM (TCP only): connect in the target as CONNECT would, answer STREAM_REPLY with the
  socket's addresses, then relay raw bytes (or framed datagrams, for UDP) until either side
  is done (agent/relay.py). One connection per stream: the kernel's flow control keeps each
  stream's memory bounded and no stream waits behind another.

Sessions are served concurrently, as many as connect.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
from typing import NamedTuple

from ..protocol import agent_wire, auth, wire
from . import net, relay
from .server import Environment, Link, StreamLink

log = logging.getLogger("tether.agent")
AUTH_TIMEOUT = 5.0  # seconds a peer has to prove the token
HANDSHAKES_MAX = 64  # connections proving the token at once; more wait in the backlog
KEEPALIVE = ((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1), (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 5),
             (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2), (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3))


class Address(NamedTuple):
    kind: str  # "tcp" or "unix"
    host: str  # tcp: host; unix: path
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.host}"
        return f"tcp:[{self.host}]:{self.port}" if ":" in self.host else f"tcp:{self.host}:{self.port}"


class AddressError(ValueError):
    pass


def parse_address(text: str) -> Address:
    """tcp:HOST:PORT, tcp://HOST:PORT, [IPv6]:PORT forms, or unix:PATH."""
    kind, sep, rest = text.partition(":")
    if kind == "unix" and sep and rest:
        return Address("unix", rest)
    if kind == "tcp" and sep:
        rest = rest.removeprefix("//")
        host, colon, port = rest.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if colon and host and port.isdigit() and int(port) < 65536:
            return Address("tcp", host, int(port))
    raise AddressError(f"bad agent address {text!r}: give tcp:HOST:PORT or unix:PATH")


def listen_socket(address: Address) -> socket.socket:
    if address.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if os.path.exists(address.host) and not _is_live(address.host):
            os.unlink(address.host)  # a stale socket from an agent that died
        sock.bind(address.host)
        os.chmod(address.host, 0o600)
    else:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
    sock.listen(512)
    sock.setblocking(False)
    return sock


def _is_live(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def bound_address(sock: socket.socket, address: Address) -> Address:
    """The address actually listened on (port 0 asks the kernel for one)."""
    if address.kind == "unix":
        return address
    return Address("tcp", address.host, sock.getsockname()[1])


class Peer:
    """One connection's frames before it is handed over: exact reads, nothing read ahead."""

    def __init__(self, sock: socket.socket, stream: bool):
        self.sock, self.stream = sock, stream
        self.loop = asyncio.get_running_loop()

    async def frame(self) -> wire.Frame:
        """The next frame; on a stream, exactly its bytes (what follows may be relayed data)."""
        if not self.stream:
            data = await self.loop.sock_recv(self.sock, wire.FRAME_MAX + 1)
            if not data:
                raise ConnectionError("the peer hung up")
            return wire.decode_frame(data)
        head = await self._exactly(wire.FRAME.size)
        (length,) = struct.unpack_from("<I", head)
        if not wire.FRAME.size <= length <= wire.FRAME_MAX:
            raise wire.ProtocolError(f"frame length {length} outside {wire.FRAME.size}..{wire.FRAME_MAX}")
        return wire.decode_frame(head + await self._exactly(length - wire.FRAME.size))

    async def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            more = await self.loop.sock_recv(self.sock, n - len(data))
            if not more:
                raise ConnectionError("the peer hung up")
            data += more
        return data

    async def send(self, frame: bytes) -> None:
        await self.loop.sock_sendall(self.sock, frame)


class Listener:
    def __init__(self, address: Address, token: bytes, environment: Environment):
        self.address, self.token, self.environment = address, token, environment
        self.handshakes = asyncio.Semaphore(HANDSHAKES_MAX)
        self.tasks: set[asyncio.Task] = set()

    async def serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.handshakes.acquire()
                conn, peer = await loop.sock_accept(sock)
                task = loop.create_task(self._serve_conn(conn, peer or "a unix peer"))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        finally:
            for task in list(self.tasks):
                task.cancel()

    async def _serve_conn(self, conn: socket.socket, peer) -> None:
        stream = conn.type == socket.SOCK_STREAM
        who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        conn.setblocking(False)
        if stream:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for level, name, value in KEEPALIVE:  # a session whose machine vanished is noticed
                conn.setsockopt(level, name, value)
        p = Peer(conn, stream)
        handed_over = False
        try:
            try:
                proved = await asyncio.wait_for(self._authenticate(p, who), AUTH_TIMEOUT)
            except ConnectionError:
                # A session that ends closes the spares it was still dialling (agent/forward.py).
                log.debug("%s hung up during the token handshake", who)
                return
            finally:
                self.handshakes.release()
            if not proved:
                return
            # No time limit from here: a stand-in keeps proven data connections ready for
            # its next connects (agent/forward.py's spares); keepalive notices a vanished one.
            try:
                first = await p.frame()
            except ConnectionError:
                log.debug("%s closed a connection it never used (a spare)", who)
                return
            if first.type == agent_wire.MSG_AGENT_HELLO:
                handed_over = True
                link = StreamLink(conn, self.environment) if stream else Link(conn, self.environment)
                link.pending([first])
                await link.serve()
            elif first.type == agent_wire.MSG_STREAM and stream:
                handed_over = await self._stream(p, first, who)
            else:
                await p.send(wire.encode_error(wire.ErrorReply(errno.EPROTO, f"unexpected frame type {first.type}"),
                                               first.id))
        except asyncio.TimeoutError:
            log.warning("refused %s: no proof of the token within %g s", who, AUTH_TIMEOUT)
        except (OSError, ConnectionError, wire.ProtocolError) as e:
            log.warning("dropped %s: %s", who, e)
        finally:
            if not handed_over:
                conn.close()

    async def _authenticate(self, p: Peer, who: str) -> bool:
        """Whether the peer proved the token (a refusal is logged and told)."""
        ours = auth.nonce()
        await p.send(auth.encode_auth_challenge(ours))
        try:
            ok = auth.check_response(self.token, ours, await p.frame())
        except wire.ProtocolError as e:
            log.warning("refused %s: %s", who, e)
            await p.send(wire.encode_error(wire.ErrorReply(errno.EACCES, "authentication required"), 0))
            return False
        if ok is None:
            log.warning("refused %s: wrong token", who)
            await p.send(wire.encode_error(wire.ErrorReply(errno.EACCES, "wrong token"), 0))
            return False
        await p.send(ok)
        return True

    async def _stream(self, p: Peer, first: wire.Frame, who: str) -> bool:
        """Connect in the target and relay; True once the relay owns the connection."""
        try:
            req = agent_wire.decode_stream(first)
            target = await net.connect(req)
        except (net.OpError, wire.ProtocolError) as e:
            err = e.errno if isinstance(e, net.OpError) else errno.EINVAL
            await p.send(wire.encode_error(wire.ErrorReply(err, str(e)), first.id))
            return False
        try:
            addresses = agent_wire.Relayed(net.sockaddr_bytes(target.getsockname(), target.family),
                                           net.sockaddr_bytes(target.getpeername(), target.family))
            await p.send(agent_wire.encode_stream_reply(addresses, first.id))
        except OSError:
            target.close()
            raise
        name = f"{who} -> {req.sockaddr.hex()}"
        if req.socktype == socket.SOCK_DGRAM:
            relay.relay_datagrams(p.sock, target, name)
        else:
            target.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            relay.relay_tcp(p.sock, target, name)
        return True


async def serve_listen(address: Address, token: bytes, environment: Environment,
                       on_ready=lambda address: None) -> None:
    """Listen at address and serve every session that proves the token, until cancelled."""
    sock = listen_socket(address)
    try:
        on_ready(bound_address(sock, address))
        await Listener(address, token, environment).serve(sock)
    finally:
        sock.close()
        if address.kind == "unix":
            try:
                os.unlink(address.host)
            except OSError:
                pass
