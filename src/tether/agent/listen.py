"""A network-reachable agent: `tether agent --listen tcp:HOST:PORT|unix:PATH --token-file F`.

Every connection proves the token first (protocol/auth.py), or carries a ticket from its
session's control link; a peer that does not within AUTH_TIMEOUT, or proves a wrong one, is
refused and logged. Its first frame after that says what the connection is for:

- AGENT_HELLO: a session's control link, served like a forked agent's (server.Link). Over
  unix:PATH (SOCK_SEQPACKET) descriptors travel, exactly as for netns: targets; over TCP they
  cannot, so files come as contents (READ_FILE) and connections as data connections:
- STREAM (TCP only): connect in the target as CONNECT would, answer STREAM_REPLY with the
  socket's addresses, then relay raw bytes (or framed datagrams, for UDP) until either side
  is done (agent/relay.py). One connection per stream: the kernel's flow control keeps each
  stream's memory bounded and no stream waits behind another.
- INCOMING, then LISTEN: a lease for one of the program's listeners (agent/incoming.py), kept
  for as long as the listener lives. Over unix: the listening socket goes back as to a layer;
  over TCP a Bridge accepts on it, and the reply names the lease, for:
- ACCEPT (TCP only): a data connection parked until a client connects to the lease's listener;
  then ACCEPT_REPLY with the client's addresses, and its bytes relayed as for STREAM.

Sessions are served concurrently, as many as connect.
"""
from __future__ import annotations

import array
import asyncio
import errno
import itertools
import logging
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from ..protocol import agent_wire, auth, wire
from ..protocol.sockaddr import decode_inet
from . import answers, files, incoming, net, relay
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
        self.proof: auth.Proof | None = None  # a session's connection proven in full: its nonces
        self.challenge_due = False  # a session's connection proven by a ticket: the challenge unread

    async def frame(self) -> wire.Frame:
        """The next frame; on a stream, exactly its bytes (what follows may be relayed data)."""
        if not self.stream:
            data = await self.loop.sock_recv(self.sock, wire.FRAME_MAX + 1)
            if not data:
                raise ConnectionError("the peer hung up")
            return wire.decode_frame(data)
        head = await self._exactly(wire.FRAME.size)
        return wire.decode_frame(head + await self._exactly(wire.frame_length(head) - wire.FRAME.size))

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
    def __init__(self, address: Address, token: bytes, environment: Environment, tls_context=None):
        self.address, self.token, self.environment = address, token, environment
        self.tls_context = tls_context  # ssl.SSLContext: every connection is a TLS tunnel (agent/tls.py)
        # Handshakes on threads of their own, as many as may run (HANDSHAKES_MAX): peers that
        # have proved nothing yet must not hold the default executor's few threads, which the
        # sessions' name lookups wait for (agent/dns.py).
        self.tls_threads = ThreadPoolExecutor(HANDSHAKES_MAX, "tls") if tls_context is not None else None
        self.handshakes = asyncio.Semaphore(HANDSHAKES_MAX)
        self.leases = itertools.count(1)
        self.tickets: dict[bytes, auth.TicketBook] = {}  # by nonce_a: open control links' tickets
        self.bridges: dict[int, incoming.Bridge] = {}  # by lease: the listeners served for programs elsewhere
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

    def _spawn(self, work) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _serve_conn(self, conn: socket.socket, peer) -> None:
        stream = conn.type == socket.SOCK_STREAM
        who = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        if stream:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for level, name, value in KEEPALIVE:  # a session whose machine vanished is noticed
                conn.setsockopt(level, name, value)
        if self.tls_context is not None and stream:
            import ssl

            from . import tls

            try:
                tunnel = await asyncio.get_running_loop().run_in_executor(self.tls_threads, tls.handshake, conn,
                                                                          self.tls_context)
                conn = tls.tunnel(tunnel, who, direct=True)
            except (OSError, ssl.SSLError) as e:
                log.warning("refused %s: TLS handshake failed: %s", who, e)
                self.handshakes.release()
                return
        conn.setblocking(False)
        proven, proof = await self._proved(Peer(conn, stream), who)
        if not proven:
            conn.close()
            return
        # No time limit from here: a stand-in keeps proven data connections ready for its next
        # connects (agent/forward.py's spares); keepalive notices a vanished one.
        if stream:
            # Most are spares whose first frame is a STREAM: a Splicer waits for it and serves
            # it (agent/relay.py), so a connect wakes that one thread, not this loop too.
            loop = asyncio.get_running_loop()
            relay.first_frame(conn, who,
                              lambda first: loop.call_soon_threadsafe(self._serve_later, conn, who, first, proof))
            return
        await self._serve_first(Peer(conn, stream), who, proof=proof)

    def _serve_later(self, conn: socket.socket, who: str, first: wire.Frame, proof: auth.Proof | None) -> None:
        """On the loop: a TCP connection whose first frame a Splicer read, not a STREAM."""
        self._spawn(self._serve_first(Peer(conn, True), who, first, proof))

    async def _proved(self, p: Peer, who: str) -> tuple[bool, auth.Proof | None]:
        """Whether the peer proved the token in time (a refusal is logged and told), and the
        nonces if it did with a full proof rather than a ticket."""
        try:
            return await asyncio.wait_for(self._authenticate(p, who), AUTH_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("refused %s: no proof of the token within %g s", who, AUTH_TIMEOUT)
        except ConnectionError:
            # A session that ends closes the spares it was still dialling (agent/forward.py).
            log.debug("%s hung up during the token handshake", who)
        except (OSError, wire.ProtocolError) as e:
            log.warning("dropped %s: %s", who, e)
        finally:
            self.handshakes.release()
        return False, None

    async def _serve_first(self, p: Peer, who: str, first: wire.Frame | None = None,
                           proof: auth.Proof | None = None) -> None:
        """Serve a proven connection by what its first frame (read here if None) asks for;
        a control link proven in full (proof) keys its session's tickets while it lasts."""
        p.sock.setblocking(False)
        handed_over = False
        try:
            if first is None:
                try:
                    first = await p.frame()
                except ConnectionError:
                    log.debug("%s closed a connection it never used", who)
                    return
            if first.type == agent_wire.MSG_AGENT_HELLO:
                handed_over = True
                link = StreamLink(p.sock, self.environment) if p.stream else Link(p.sock, self.environment)
                link.pending([first])
                if proof is not None:
                    self.tickets[proof.agent_nonce] = auth.TicketBook(self.token, proof)
                try:
                    await link.serve()
                finally:
                    if proof is not None:
                        self.tickets.pop(proof.agent_nonce, None)
            elif first.type == agent_wire.MSG_INCOMING:
                await self._lease(p, first)
            elif first.type == agent_wire.MSG_ACCEPT and p.stream:
                handed_over = await self._park(p, first)
            elif first.type == agent_wire.MSG_TARGET_FILES and p.stream:
                handed_over = await self._files(p, first, who)
            else:
                await p.send(wire.encode_error(wire.ErrorReply(errno.EPROTO, f"unexpected frame type {first.type}"),
                                               first.id))
        except (OSError, ConnectionError, wire.ProtocolError) as e:
            log.warning("dropped %s: %s", who, e)
        finally:
            if not handed_over:
                p.sock.close()

    async def _authenticate(self, p: Peer, who: str) -> tuple[bool, auth.Proof | None]:
        """Whether the peer proved the token or a ticket (a refusal is logged and told), and
        the nonces of a full proof."""
        ours = auth.nonce()
        await p.send(auth.encode_auth_challenge(ours))
        why = "wrong token"
        try:
            answer = await p.frame()
            if answer.type == auth.MSG_AUTH_TICKET:
                book = self.tickets.get(auth.ticket_link(answer))
                if book is not None and book.take(answer):
                    return True, None
                why = "a ticket of no open session, or one used before"
                checked = None
            else:
                checked = auth.check_response(self.token, ours, answer)
        except wire.ProtocolError as e:
            log.warning("refused %s: %s", who, e)
            await p.send(wire.encode_error(wire.ErrorReply(errno.EACCES, "authentication required"), 0))
            return False, None
        if checked is None:
            log.warning("refused %s: %s", who, why)
            await p.send(wire.encode_error(wire.ErrorReply(errno.EACCES, why), 0))
            return False, None
        ok, proof = checked
        await p.send(ok)
        return True, proof

    async def _lease(self, p: Peer, first: wire.Frame) -> None:
        """A lease connection: INCOMING (the session's settings), then one listener's LISTEN.
        Over unix: the listening socket goes back as to a layer; over TCP a Bridge serves it
        and the reply names the lease that ACCEPTs park on. What was set up in the target
        lasts as long as this connection."""
        try:
            settings = answers.incoming_from(first)
            await p.send(wire.encode_frame(agent_wire.MSG_INCOMING_REPLY, b"", id=first.id))
            try:
                asked = await p.frame()
            except ConnectionError:
                return  # the stand-in only tried the settings (agent/forward.py)
            req = agent_wire.decode_listen(asked)
            sock, undo = incoming.listen(req, settings)
        except (net.OpError, wire.ProtocolError) as e:
            await p.send(answers.failure(e, first.id))
            return
        if sock is None:
            await p.send(agent_wire.encode_listen_reply(agent_wire.LISTEN_LOCAL, asked.id))
            return
        lease = 0
        try:
            if p.stream:
                lease = next(self.leases)
                self.bridges[lease] = incoming.Bridge(sock, decode_inet(req.sockaddr)[2])
                await p.send(agent_wire.encode_listen_reply(agent_wire.LISTEN_RELAYED, asked.id, lease))
            else:
                with sock:
                    p.sock.sendmsg([agent_wire.encode_listen_reply(agent_wire.LISTEN_TARGET, asked.id)],
                                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [sock.fileno()]))])
            while await asyncio.get_running_loop().sock_recv(p.sock, 1 << 10):
                pass  # nothing more is asked on a lease: its end is the news
        finally:
            bridge = self.bridges.pop(lease, None)
            if bridge:
                bridge.close()
            undo.close()

    async def _park(self, p: Peer, first: wire.Frame) -> bool:
        """A data connection waiting for the next connection to a lease's listener."""
        bridge = self.bridges.get(agent_wire.decode_accept(first))
        if bridge is None:
            await p.send(wire.encode_error(wire.ErrorReply(errno.ENOENT, "no such listener (it was closed)"),
                                           first.id))
            return False
        bridge.park(p.sock)
        return True

    async def _files(self, p: Peer, first: wire.Frame, who: str) -> bool:
        """A data connection of a stand-in's file system: file operations, answered on a
        thread of its own (agent/files.py) for as long as it is open."""
        req = agent_wire.decode_target_files(first)
        await p.send(wire.encode_frame(agent_wire.MSG_TARGET_FILES_REPLY, b"", id=first.id))
        threading.Thread(target=files.serve_files, args=(p.sock, req.key, req.writable, who),
                         daemon=True, name="files").start()
        return True


async def serve_listen(address: Address, token: bytes, environment: Environment, tls_context=None,
                       on_ready=lambda address: None) -> None:
    """Listen at address and serve every session that proves the token, until cancelled."""
    sock = listen_socket(address)
    try:
        on_ready(bound_address(sock, address))
        await Listener(address, token, environment, tls_context).serve(sock)
    finally:
        sock.close()
        if address.kind == "unix":
            try:
                os.unlink(address.host)
            except OSError:
                pass
