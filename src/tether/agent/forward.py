"""The stand-in agent for a network-reachable one (tcp:// and unix: targets).

tether forks it on this host (targets/remote.py) where a netns: target's agent would run, so
the session and the layer speak to it exactly as to a local agent. It proves the token to the
agent at the address (protocol/auth.py), keeps one control link there, and forwards:

- over unix:PATH every request as it is: descriptors travel on that link as on a local one;
- over TCP, where descriptors cannot: CONNECT becomes a data connection of its own to the
  agent (STREAM), handed to the program in place of its socket with the target socket's
  addresses (FLAG_RELAYED: the layer answers getsockname/getpeername with them); a UDP socket
  (connected, or with FLAG_BIND bound only) becomes one end of a SOCK_SEQPACKET pair whose
  datagram records, each naming its peer, this process relays (layer/net/datagrams.c); OPEN becomes
  READ_FILE, the contents handed over in a memfd, unless the session asked for the target's
  files (TARGET_FILES): then this process serves them as a FUSE file system (agent/fuse.py) and OPEN
  of "/" hands over its root; everything else is forwarded as it is.

If the link drops, requests fail at once (ENETUNREACH, with the reason logged) while it
reconnects with backoff; it says when the agent is back. Data connections are the program's:
they end with the agent (TCP keepalive and a user timeout notice a vanished machine).
"""
from __future__ import annotations

import array
import asyncio
import errno
import itertools
import logging
import os
import socket
from collections.abc import Callable

from ..fdpass import recv_with_fds
from ..protocol import agent_wire, auth, wire
from ..protocol.sockaddr import decode_inet
from . import fuse, relay
from .listen import AUTH_TIMEOUT, Address, Peer
from .net import CONNECT_TIMEOUT_MS, OpError
from .server import Link

log = logging.getLogger("tether.agent")
DIAL_TIMEOUT = 4.0  # seconds to reach the agent's address
REQUEST_TIMEOUT = 60.0  # a request on the control link (a lookup may take its resolver's time)
RECONNECT_BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0)
# Data connections dialled and authenticated ahead of need: a relayed connect then costs its
# STREAM round trip and the agent's connect, not also a TCP handshake and the token's. As many
# as the layer asks for at once (layer/net/target_sockets.c BATCH), dialled side by side.
SPARE_STREAMS = 8
CHALLENGE_BYTES = len(auth.encode_auth_challenge(bytes(auth.NONCE)))
LINK_TIMEOUT_MS = 5000  # unacknowledged data on a connection to the agent: the link is gone
LINK_SOCKOPTS = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
                 (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, LINK_TIMEOUT_MS),
                 (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1), (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2),
                 (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1), (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3))


class Unreachable(OpError):
    """The agent cannot be reached or refused us; errno is what the program gets."""


class Remote:
    """The connection to the network agent: one control link, and data connections on demand."""

    def __init__(self, address: Address, token: bytes, token_file: str, spec: str, pin: str | None = None,
                 prepare: Callable[[], str | None] | None = None):
        self.address, self.token, self.token_file, self.spec = address, token, token_file, spec
        self.pin = pin  # the agent's TLS certificate (agent/tls.py); None: plaintext
        # Run before each (re)connection, in a thread (ssh: start the agent there and forward
        # address to it); a string it returns is why the agent cannot be reached.
        self.prepare = prepare
        self.stream = address.kind == "tcp"  # else unix SOCK_SEQPACKET: descriptors travel
        self.loop = asyncio.get_running_loop()
        self.down: Unreachable | None = Unreachable(errno.ENETUNREACH, "not connected yet")
        self.ever_up = False
        self.control: Peer | None = None
        self.send_lock = asyncio.Lock()
        self.ids = itertools.count(1)
        self.pending: dict[int, tuple[asyncio.Future, list[wire.Frame], list[int]]] = {}
        self.tasks: set[asyncio.Task] = set()
        self.spares: list[Peer] = []  # authenticated data connections, not yet asked for anything
        self.tickets: auth.Tickets | None = None  # the control link's, for data connections' proofs
        self.resolved: tuple[int, tuple] | None = None  # the agent's address, looked up (family, sockaddr)
        self.incoming: bytes | None = None  # the session's INCOMING payload, for each listener's lease
        self.filling = 0  # spares being dialled
        self.spare_dialled = asyncio.Event()  # set when one is added (data_connections waits for it)
        self.files: fuse.FileSystem | None = None  # the target's files, once the session asked (TARGET_FILES)

    # -- reaching the agent ------------------------------------------------------------------

    async def dial(self, ticket: bool = False) -> Peer:
        """A new connection to the agent that has proven the token both ways; with ticket (and
        a control link up), one that has sent a ticket and not read the challenge yet (_usable)."""
        where = str(self.address)
        try:
            if self.stream:
                if self.resolved is None:  # once per link: a lookup per data connection costs a thread hop
                    infos = await self.loop.getaddrinfo(self.address.host, self.address.port, type=socket.SOCK_STREAM)
                    self.resolved = infos[0][0], infos[0][4]
                family, sockaddr = self.resolved
                sock = socket.socket(family, socket.SOCK_STREAM)
            else:
                sock, sockaddr = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET), self.address.host
        except OSError as e:
            raise Unreachable(errno.ENETUNREACH, f"cannot resolve {where}: {e.strerror or e}") from None
        sock.setblocking(False)
        try:
            try:
                await asyncio.wait_for(self.loop.sock_connect(sock, sockaddr), DIAL_TIMEOUT)
            except asyncio.TimeoutError:
                raise Unreachable(errno.ETIMEDOUT, f"no answer from {where} within {DIAL_TIMEOUT:g} s") from None
            except FileNotFoundError:
                raise Unreachable(errno.ECONNREFUSED, f"no socket at {self.address.host} "
                                                      "(is `tether agent --listen` running?)") from None
            except ConnectionRefusedError:
                raise Unreachable(errno.ECONNREFUSED, f"nothing listens at {where} "
                                                      "(is `tether agent --listen` running there?)") from None
            except OSError as e:
                raise Unreachable(e.errno or errno.ENETUNREACH, f"cannot reach {where}: {e.strerror or e}") from None
            if self.stream:  # a vanished machine or a cut link is noticed within seconds
                for level, name, value in LINK_SOCKOPTS:
                    sock.setsockopt(level, name, value)
            if self.pin and self.stream:
                sock = await self._tls(sock, where)
            peer = Peer(sock, self.stream)
            if ticket and self.tickets is not None:
                await peer.send(self.tickets.next())
                peer.challenge_due = True
                return peer
            try:
                peer.proof = await asyncio.wait_for(self._prove(peer), AUTH_TIMEOUT)
            except asyncio.TimeoutError:
                raise Unreachable(errno.ETIMEDOUT, f"{where} did not authenticate within {AUTH_TIMEOUT:g} s "
                                                   "(is it a tether agent?)") from None
            except (ConnectionError, OSError) as e:
                raise Unreachable(errno.ECONNRESET, f"{where} hung up while authenticating "
                                                    f"({e}; is it a tether agent?)") from None
            except wire.ProtocolError as e:
                raise Unreachable(errno.EPROTO, f"{where} is not a tether agent of this version: {e}") from None
            return peer
        except BaseException:
            sock.close()
            raise

    async def _tls(self, sock: socket.socket, where: str) -> socket.socket:
        """sock's plaintext end once TLS with the pinned agent is up (agent/tls.py)."""
        import ssl  # here: a stand-in without TLS never loads it (targets/early.py)

        from . import tls

        sock.setblocking(True)
        try:
            tunnel = tls.tunnel(await asyncio.to_thread(tls.handshake, sock, tls.client_context(), self.pin), where)
        except tls.TlsError as e:
            raise Unreachable(errno.EACCES, f"{where}: {e} (pinned by {self.token_file})") from None
        except (OSError, ssl.SSLError) as e:
            raise Unreachable(errno.EPROTO, f"{where}: the TLS handshake failed ({e})") from None
        tunnel.setblocking(False)
        return tunnel

    async def _prove(self, peer: Peer) -> auth.Proof:
        try:
            response, expected, proof = auth.respond(self.token, await peer.frame())
            await peer.send(response)
            if not auth.check_ok(expected, await peer.frame()):
                raise Unreachable(errno.EACCES, f"{self.address} does not prove the token in {self.token_file}: "
                                                "it is not the agent you meant")
            return proof
        except auth.AuthRefused as e:
            raise Unreachable(errno.EACCES, f"{self.address} refused the token in {self.token_file} ({e}): "
                                            "use the agent's token file") from None

    async def start(self) -> None:
        """Connect the control link; on failure self.down says why (and retrying starts)."""
        try:
            await self._prepare()
            await self._connect_control()
        except Unreachable as e:
            self.down = e
            log.debug("%s: %s", self.spec, e)

    async def _prepare(self) -> None:
        why = await self.loop.run_in_executor(None, self.prepare) if self.prepare else None
        if why:
            raise Unreachable(errno.EHOSTUNREACH, why)

    async def _connect_control(self) -> None:
        peer = await self.dial()
        try:
            await peer.send(agent_wire.encode_agent_hello(wire.PROTOCOL_VERSION, 0, 0))
            reply = await asyncio.wait_for(peer.frame(), AUTH_TIMEOUT)
            if reply.type == wire.MSG_ERROR:
                raise Unreachable(errno.EPROTO, f"{self.address}: {wire.decode_error(reply).message}")
            version, _ = agent_wire.decode_agent_hello(reply)
            if version != wire.PROTOCOL_VERSION:
                raise Unreachable(errno.EPROTO, f"the agent at {self.address} speaks protocol {version}, "
                                                f"this tether {wire.PROTOCOL_VERSION}")
        except (asyncio.TimeoutError, ConnectionError, OSError, wire.ProtocolError) as e:
            peer.sock.close()
            raise Unreachable(errno.EPROTO, f"{self.address} failed its hello: {e or 'no answer'}") from None
        self.control, self.down, self.ever_up = peer, None, True
        self.tickets = auth.Tickets(self.token, peer.proof)
        self._spawn(self._read_control(peer))
        self._refill()

    def _spawn(self, work) -> None:
        task = self.loop.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _read_control(self, peer: Peer) -> None:
        reader = wire.FrameReader()
        try:
            while True:
                frames, fds = await self._receive(peer, reader)
                for frame in frames:
                    self._deliver(frame, fds)
                    fds = []
                for fd in fds:
                    os.close(fd)
        except (OSError, ConnectionError, wire.ProtocolError) as e:
            self._lost(str(e) or type(e).__name__)

    async def _receive(self, peer: Peer, reader: wire.FrameReader) -> tuple[list[wire.Frame], list[int]]:
        if self.stream:
            data = await self.loop.sock_recv(peer.sock, 1 << 16)
            if not data:
                raise ConnectionError("the agent closed the link")
            return reader.feed(data), []
        frame, fds = await self._message(peer)
        return [frame], fds

    async def reply(self, peer: Peer) -> tuple[wire.Frame, list[int]]:
        """The next frame on a connection of its own and, over unix:, the descriptors with it;
        on a stream exactly its bytes (relayed data may follow)."""
        return (await peer.frame(), []) if self.stream else await self._message(peer)

    async def _message(self, peer: Peer) -> tuple[wire.Frame, list[int]]:
        while True:
            try:
                msg, fds = recv_with_fds(peer.sock)
            except BlockingIOError:
                ready = self.loop.create_future()
                self.loop.add_reader(peer.sock, ready.set_result, None)
                try:
                    await ready
                finally:
                    self.loop.remove_reader(peer.sock)
                continue
            if not msg:
                raise ConnectionError("the agent closed the link")
            try:
                return wire.decode_frame(msg), fds
            except wire.ProtocolError:
                for fd in fds:
                    os.close(fd)
                raise

    def _deliver(self, frame: wire.Frame, fds: list[int]) -> None:
        entry = self.pending.get(frame.id)
        if entry is None:
            for fd in fds:
                os.close(fd)
            return
        future, frames, got = entry
        frames.append(frame)
        got.extend(fds)
        if frame.type == wire.MSG_ERROR or not frame.flags & wire.FLAG_MORE:
            del self.pending[frame.id]
            if not future.done():
                future.set_result(None)

    def _lost(self, why: str) -> None:
        if self.down:
            return  # lost already (the control link's reader and a request both notice): one reconnect
        if self.control is not None:
            self.control.sock.close()
            self.control = None
        self.tickets = None  # the agent forgets them with the control link
        for spare in self.spares:
            spare.sock.close()
        self.spares.clear()
        self.down = Unreachable(errno.ENETUNREACH, f"lost the agent at {self.address} ({why})")
        self.resolved = None  # looked up again: the name may point elsewhere now
        log.warning("%s; new connections to the target fail until it is back (retrying)", self.down)
        pending, self.pending = self.pending, {}
        for future, _, fds in pending.values():
            for fd in fds:
                os.close(fd)
            if not future.done():
                future.set_exception(self.down)
        self._spawn(self._reconnect())

    async def _reconnect(self) -> None:
        for attempt in itertools.count():
            await asyncio.sleep(RECONNECT_BACKOFF[min(attempt, len(RECONNECT_BACKOFF) - 1)])
            try:
                await self._prepare()
                await self._connect_control()
            except Unreachable as e:
                log.debug("reconnecting to %s: %s", self.address, e)
                continue
            log.warning("the agent at %s is back", self.address)
            return

    # -- requests ------------------------------------------------------------------------------

    async def request(self, encode: Callable[[int], bytes]) -> tuple[list[wire.Frame], list[int]]:
        """Send encode(id) on the control link; the reply's frames and descriptors."""
        if self.down:
            raise self.down
        id = next(self.ids)
        future = self.loop.create_future()
        frames: list[wire.Frame] = []
        fds: list[int] = []
        self.pending[id] = (future, frames, fds)
        try:
            async with self.send_lock:
                await self.loop.sock_sendall(self.control.sock, encode(id))
            await asyncio.wait_for(future, REQUEST_TIMEOUT)
        except asyncio.TimeoutError:
            self.pending.pop(id, None)
            raise OpError(errno.ETIMEDOUT, f"the agent at {self.address} did not answer "
                                           f"within {REQUEST_TIMEOUT:g} s") from None
        except OSError as e:
            self.pending.pop(id, None)
            if not isinstance(e, Unreachable):
                self._lost(str(e))
            raise self.down or e from None
        return frames, fds

    def _refill(self) -> None:
        """Dial the missing spares side by side (each dial mostly waits for the agent: handshake,
        challenge); each is a spare as soon as it is proven."""
        if not self.stream or self.down:
            return
        for _ in range(SPARE_STREAMS - len(self.spares) - self.filling):
            self.filling += 1
            self._spawn(self._fill_one())

    async def _fill_one(self) -> None:
        try:
            peer = await self.dial(ticket=True)
            if self.down:  # lost meanwhile (_lost closed the others)
                peer.sock.close()
            else:
                self.spares.append(peer)
        except Unreachable as e:
            log.debug("spare data connections to %s: %s", self.address, e)
        finally:
            self.filling -= 1
            self.spare_dialled.set()  # a waiter takes the spare, or dials itself

    async def _data_connection(self) -> Peer:
        """A spare that is still open (the agent may have restarted), else a new one."""
        return (await self.data_connections(1))[0]

    async def data_connections(self, most: int) -> list[Peer]:
        """Up to `most` spares that are still open (the agent may have restarted), or a new
        one (Unreachable while the agent is lost); the caller refills the spares (_refill) once
        its own work is under way."""
        if self.down:
            raise self.down
        peers = await self._take_spares(most)
        if not peers and self.filling:  # one on its way is sooner than a new dial
            self.spare_dialled.clear()
            await self.spare_dialled.wait()  # set however the dial ends
            peers = await self._take_spares(1)
        return peers or [await self.dial()]

    async def _take_spares(self, most: int) -> list[Peer]:
        peers: list[Peer] = []
        while self.spares and len(peers) < most:
            peer = self.spares.pop()
            if await self._usable(peer):
                peers.append(peer)
            else:
                peer.sock.close()
        return peers

    async def _usable(self, peer: Peer) -> bool:
        """Whether a spare is still open (the agent may have restarted) and proven: a ticket's
        challenge read and dropped (there by now but on a slow link), nothing after it (an
        ERROR: the ticket refused)."""
        try:
            if peer.challenge_due:
                if len(_peek(peer.sock, CHALLENGE_BYTES) or b"") == CHALLENGE_BYTES:
                    challenge = wire.decode_frame(peer.sock.recv(CHALLENGE_BYTES))
                else:
                    challenge = await asyncio.wait_for(peer.frame(), AUTH_TIMEOUT)
                peer.challenge_due = False
                if challenge.type != auth.MSG_AUTH_CHALLENGE:
                    return False
            return _peek(peer.sock, 1) is None
        except (OSError, ConnectionError, asyncio.TimeoutError, wire.ProtocolError):
            return False

    async def ask_first(self, frame: bytes) -> tuple[Peer, wire.Frame]:
        """A data connection whose first frame is `frame`, and the agent's answer; an ERROR
        answer is raised as OpError (the connection closed)."""
        peer = await self._data_connection()
        try:
            await peer.send(frame)
            reply = await asyncio.wait_for(peer.frame(), REQUEST_TIMEOUT)
            if reply.type == wire.MSG_ERROR:
                err = wire.decode_error(reply)
                raise OpError(err.errno, err.message)
        except BaseException:
            peer.sock.close()
            raise
        return peer, reply

    async def files_connection(self, settings: agent_wire.TargetFiles) -> socket.socket:
        """A data connection that carries file operations (agent/fuse.py's, in the target)."""
        peer, reply = await self.ask_first(agent_wire.encode_target_files(settings, 1))
        self._refill()
        if reply.type != agent_wire.MSG_TARGET_FILES_REPLY:
            peer.sock.close()
            raise OpError(errno.EPROTO, f"TARGET_FILES answered with frame type {reply.type}")
        return peer.sock

    async def lease(self, listen: wire.Frame) -> tuple[Peer, int, int, list[int]]:
        """A lease connection for one of the program's listeners (agent/listen.py): the
        session's INCOMING settings, then LISTEN. The connection, how and lease as
        LISTEN_REPLY says, and the descriptor that came with it (unix: only)."""
        if self.incoming is None:
            raise OpError(errno.EPROTO, "a listener asked before the session's INCOMING")
        peer = await self._data_connection()
        self._refill()
        fds: list[int] = []
        try:
            for frame in (wire.encode_frame(agent_wire.MSG_INCOMING, self.incoming, id=1),
                          wire.encode_frame(agent_wire.MSG_LISTEN, listen.payload, id=listen.id)):
                for fd in fds:
                    os.close(fd)
                await peer.send(frame)
                reply, fds = await asyncio.wait_for(self.reply(peer), REQUEST_TIMEOUT)
                if reply.type == wire.MSG_ERROR:
                    err = wire.decode_error(reply)
                    raise OpError(err.errno, err.message)
            how, lease = agent_wire.decode_listen_reply(reply)
            expected = {agent_wire.LISTEN_LOCAL: 0, agent_wire.LISTEN_TARGET: None if self.stream else 1,
                        agent_wire.LISTEN_RELAYED: 0 if self.stream else None}
            if expected[how] != len(fds):
                raise wire.ProtocolError(f"LISTEN_REPLY {how} with {len(fds)} descriptors")
        except BaseException as e:
            for fd in fds:
                os.close(fd)
            peer.sock.close()
            if isinstance(e, asyncio.TimeoutError):
                raise OpError(errno.ETIMEDOUT, f"the agent at {self.address} did not answer a listen "
                                               f"within {REQUEST_TIMEOUT:g} s") from None
            if isinstance(e, (ConnectionError, wire.ProtocolError)) or (isinstance(e, OSError)
                                                                         and not isinstance(e, OpError)):
                raise OpError(errno.ECONNRESET, f"the agent at {self.address} dropped a listen: {e}") from None
            raise
        return peer, how, lease, fds

    async def open_stream(self, req: agent_wire.Connect) -> tuple[socket.socket, agent_wire.Relayed]:
        """A data connection relaying a socket connected in the target as req asks."""
        peer = await self._data_connection()
        try:
            await peer.send(agent_wire.encode_stream(req._replace(timeout_ms=req.timeout_ms or CONNECT_TIMEOUT_MS), 1))
            reply = await asyncio.wait_for(peer.frame(), CONNECT_TIMEOUT_MS / 1000 + 2)
            if reply.type == wire.MSG_ERROR:
                err = wire.decode_error(reply)
                raise OpError(err.errno, err.message)
            relayed = agent_wire.decode_stream_reply(reply)
        except asyncio.TimeoutError:
            peer.sock.close()
            raise OpError(errno.ETIMEDOUT, f"the agent at {self.address} did not connect in time") from None
        except (ConnectionError, OSError, wire.ProtocolError) as e:
            peer.sock.close()
            if isinstance(e, OpError):
                raise
            raise OpError(errno.ECONNRESET, f"the agent at {self.address} dropped a data connection: {e}") from None
        self._refill()  # after this connect, not competing with it
        return peer.sock, relayed


def _peek(sock: socket.socket, n: int) -> bytes | None:
    """Up to n bytes waiting on sock, left there; None if none are (b"": the peer closed)."""
    try:
        return sock.recv(n, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None


class ForwardLink(Link):
    """Serves the session or a hooked process like a local agent, by way of the network agent."""

    def __init__(self, sock: socket.socket, remote: Remote):
        super().__init__(sock, environment=lambda: {})
        self.remote = remote

    def capabilities(self) -> int:
        # Over TCP no socket of the target can come here: connects become relayed streams,
        # which the layer asks for on data connections it takes ahead of need (STREAMS).
        return agent_wire.CAP_STREAMS if self.remote.stream else agent_wire.CAP_SOCKETS

    def _handle(self, frame: wire.Frame) -> None:
        if frame.type == agent_wire.MSG_AGENT_HELLO and not self.remote.ever_up:
            err = self.remote.down or Unreachable(errno.ENETUNREACH, "not connected")
            self._send(wire.encode_error(wire.ErrorReply(err.errno, str(err)), frame.id))
        elif frame.type == agent_wire.MSG_AGENT_HELLO:
            super()._handle(frame)
        else:
            self._spawn(self._forward(frame))

    async def _forward(self, frame: wire.Frame) -> None:
        try:
            if self.remote.stream and frame.type == agent_wire.MSG_CONNECT:
                await self._connect(agent_wire.decode_connect(frame), frame.id)
            elif self.remote.stream and frame.type == agent_wire.MSG_OPEN:
                await self._open(agent_wire.decode_open(frame), frame.id)
            elif self.remote.stream and frame.type == agent_wire.MSG_TARGET_FILES:
                await self._files(agent_wire.decode_target_files(frame), frame.id)
            elif self.remote.stream and frame.type == agent_wire.MSG_STREAMS:
                await self._streams(agent_wire.decode_streams(frame), frame.id)
            elif frame.type == agent_wire.MSG_INCOMING:
                await self._incoming(frame)
            elif frame.type == agent_wire.MSG_LISTEN:
                await self._listen(frame)
            elif self.remote.stream and frame.type == agent_wire.MSG_SOCKET:
                raise OpError(errno.EOPNOTSUPP, "sockets of the target cannot cross a TCP link (the layer "
                                                "asks for relays instead: is it from the same tether?)")
            else:
                await self._pass(frame)
        except OpError as e:
            if isinstance(e, Unreachable) or e.errno == errno.EOPNOTSUPP:
                log.warning("%s", e)
            self._send(wire.encode_error(wire.ErrorReply(e.errno, str(e)), frame.id))
        except wire.ProtocolError as e:
            log.warning("bad request or reply: %s", e)
            self._send(wire.encode_error(wire.ErrorReply(errno.EPROTO, str(e)), frame.id))
        except Exception as e:  # noqa: BLE001 - a bug here must fail the one call, not hang it
            log.exception("forwarding request type %s", frame.type)
            self._send(wire.encode_error(wire.ErrorReply(errno.EIO, f"tether: {e}"), frame.id))

    async def _pass(self, frame: wire.Frame) -> None:
        frames, fds = await self.remote.request(
            lambda id: wire.encode_frame(frame.type, frame.payload, frame.flags, id))
        try:
            for n, reply in enumerate(frames):
                last = n == len(frames) - 1
                self._send(wire.encode_frame(reply.type, reply.payload, reply.flags, frame.id), fds if last else [])
        finally:
            for fd in fds:
                os.close(fd)

    async def _connect(self, req: agent_wire.Connect, id: int) -> None:
        sock, relayed = await self.remote.open_stream(req)
        try:
            if req.socktype == socket.SOCK_DGRAM:
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                relay.relay_messages(sock, ours, f"udp {self.remote.address}")
                sock = theirs
            else:
                sock.setblocking(True)  # as a new socket is; the layer gives it the program's flags
            self._send(agent_wire.encode_connect_reply(id, 0, relayed), [sock.fileno()])
        finally:
            sock.close()

    async def _streams(self, count: int, id: int) -> None:
        """Data connections for a hooked process's next connects: the spares there are (at
        least one, dialled if none), each proven to the agent and asked nothing yet."""
        socks = [peer.sock for peer in await self.remote.data_connections(count)]
        try:
            for sock in socks:
                sock.setblocking(True)  # as a new socket is; the layer gives it the program's flags
            self._send(wire.encode_frame(agent_wire.MSG_STREAMS_REPLY, b"", id=id), [s.fileno() for s in socks])
        finally:
            for sock in socks:
                sock.close()
        self.remote._refill()

    async def _incoming(self, frame: wire.Frame) -> None:
        """The session's settings for listeners: kept for their leases, and tried on the agent
        now (one lease connection that asks no LISTEN), so what it cannot serve fails tether's
        start, not the program's first listen."""
        agent_wire.decode_incoming(frame)
        peer, _ = await self.remote.ask_first(wire.encode_frame(frame.type, frame.payload, frame.flags, frame.id))
        peer.sock.close()
        self.remote.incoming = frame.payload
        self._send(wire.encode_frame(agent_wire.MSG_INCOMING_REPLY, b"", id=frame.id))

    async def _listen(self, frame: wire.Frame) -> None:
        """A listener's LISTEN, on the layer's connection for it: a lease connection to the
        agent, kept (with what serves it) until this link closes."""
        peer, how, lease, fds = await self.remote.lease(frame)
        if how == agent_wire.LISTEN_LOCAL:
            peer.sock.close()
            self._send(agent_wire.encode_listen_reply(how, frame.id))
            return
        if how == agent_wire.LISTEN_TARGET:  # unix: the listening socket itself
            self.undo.append(peer.sock)
        else:
            acceptor = Acceptor(self.remote, peer, lease, frame)
            self.undo.append(acceptor)
            fds = [os.dup(acceptor.theirs.fileno())]
            acceptor.theirs.close()
        try:
            self._send(agent_wire.encode_listen_reply(how, frame.id), fds)
        finally:
            for fd in fds:
                os.close(fd)

    async def _files(self, req: agent_wire.TargetFiles, id: int) -> None:
        """The session asks for the target's files: mount the file system that serves them
        (agent/fuse.py) now, so what cannot be set up fails tether's start."""
        if self.remote.files is None:
            settings = req._replace(key=int.from_bytes(os.urandom(8), "little"))
            fs = fuse.FileSystem(lambda: self.remote.files_connection(settings), self.remote.loop,
                                 settings.writable, settings.whole_max)
            try:
                await asyncio.to_thread(fs.mount)
            except fuse.FuseError as e:
                raise OpError(errno.EPERM, str(e)) from None
            self.remote.files = fs
        self._send(wire.encode_frame(agent_wire.MSG_TARGET_FILES_REPLY, b"", id=id))

    async def _open(self, req: agent_wire.Open, id: int) -> None:
        if self.remote.files is not None and req.path == "/" and req.flags & os.O_DIRECTORY:
            self._send(agent_wire.encode_open_reply(id), [self.remote.files.root])  # the layer's root
            return
        frames, fds = await self.remote.request(lambda rid: agent_wire.encode_read_file(req.path, rid))
        for fd in fds:
            os.close(fd)
        if frames[-1].type == wire.MSG_ERROR:
            err = wire.decode_error(frames[-1])
            raise OpError(err.errno, err.message)
        contents = agent_wire.FileAssembler()
        for f in frames:
            contents.feed(f)
        fd = os.memfd_create(os.path.basename(req.path), os.MFD_CLOEXEC)
        try:
            os.write(fd, contents.data)
            os.lseek(fd, 0, os.SEEK_SET)
            self._send(agent_wire.encode_open_reply(id), [fd])
        finally:
            os.close(fd)


PARKED = 8  # data connections waiting at the agent for a listener's next connections


class Acceptor:
    """One of the program's listeners that a network agent serves over TCP (LISTEN_RELAYED).

    The program has `theirs`, one end of a unix SOCK_SEQPACKET pair, in place of its listener;
    PARKED data connections wait at the agent (ACCEPT on the lease); each that a client's
    connection takes comes here with ACCEPT_REPLY and goes to the program as that frame with
    the data connection beside it, which the layer's accept() returns (layer/incoming/accept.c):
    the program reads and writes the agent's relay directly. While the program does not accept,
    the pair fills and no more connections are taken: clients wait in the target's backlog.
    If the lease ends (the agent or the link is lost), the listener gets nothing more; a new
    lease is taken when the agent is back."""

    def __init__(self, remote: Remote, peer: Peer, lease: int, listen: wire.Frame):
        self.remote, self.peer, self.lease, self.listen = remote, peer, lease, listen
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.setblocking(False)
        self.port = decode_inet(agent_wire.decode_listen(listen).sockaddr)[2]
        self.closed = False
        self.tasks: set[asyncio.Task] = set()
        self._spawn(self._keep())

    def _spawn(self, work) -> None:
        task = self.remote.loop.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _keep(self) -> None:
        """Park data connections while the lease lasts; take a new lease when it ends."""
        while not self.closed:
            parkers = [self.remote.loop.create_task(self._park()) for _ in range(PARKED)]
            why = "the agent closed it"
            try:
                if await self.remote.loop.sock_recv(self.peer.sock, 1 << 10):
                    why = "the agent sent what a lease never carries"
            except OSError as e:
                why = str(e)
            finally:
                for task in parkers:
                    task.cancel()
                self.peer.sock.close()
            log.warning("the listener on port %d gets no more connections from the target: its lease at %s "
                        "ended (%s); taking a new one when the agent is back", self.port, self.remote.address, why)
            await self._relisten()

    async def _relisten(self) -> None:
        for attempt in itertools.count():
            await asyncio.sleep(RECONNECT_BACKOFF[min(attempt, len(RECONNECT_BACKOFF) - 1)])
            if self.remote.down:
                continue
            try:
                self.peer, how, self.lease, _ = await self.remote.lease(self.listen)
            except OpError as e:
                log.debug("a new lease for port %d: %s", self.port, e)
                continue
            if how != agent_wire.LISTEN_RELAYED:  # the settings said local now: not how it started
                self.peer.sock.close()
                continue
            log.warning("the listener on port %d gets the target's connections again", self.port)
            return

    async def _park(self) -> None:
        while True:
            try:
                peer = await self.remote._data_connection()
            except OpError:
                return  # the lease goes too: _keep notices
            self.remote._refill()
            try:
                await peer.send(agent_wire.encode_accept(self.lease, 0))
                frame = await peer.frame()
                if frame.type == wire.MSG_ERROR:
                    return  # the lease is gone there
                agent_wire.decode_accept_reply(frame)
                peer.sock.setblocking(True)  # as an accepted socket is; accept4's flags may change it
                await self._hand(frame, peer.sock)
            except (OSError, ConnectionError, wire.ProtocolError) as e:
                log.debug("a parked connection for port %d: %s", self.port, e)
                return
            finally:
                peer.sock.close()

    async def _hand(self, frame: wire.Frame, conn: socket.socket) -> None:
        """The connection to the program, once its side of the pair has room."""
        data = wire.encode_frame(agent_wire.MSG_ACCEPT_REPLY, frame.payload)
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [conn.fileno()]))]
        while True:
            try:
                self.ours.sendmsg([data], ancillary)
                return
            except BlockingIOError:
                room = self.remote.loop.create_future()
                self.remote.loop.add_writer(self.ours, room.set_result, None)
                try:
                    await room
                finally:
                    self.remote.loop.remove_writer(self.ours)

    def close(self) -> None:
        """The program closed its listener (or ended): the lease ends, and with it what the
        agent set up; connections the program had not accepted are closed."""
        self.closed = True
        for task in list(self.tasks):
            task.cancel()
        self.peer.sock.close()
        self.ours.close()


def serving(remote_args: tuple[Address, bytes, str, str, str | None], prepare: Callable[[], str | None] | None = None):
    """What the forked child runs: connect to the agent, then serve the session and layers.
    prepare: as Remote's."""
    from .server import serve_fd

    async def serve(session_fd: int, listen_fd: int, pending: list, accepted: list) -> None:
        assert not pending and not accepted, "a stand-in reads nothing before it serves"
        remote = Remote(*remote_args, prepare=prepare)
        await remote.start()  # if it fails, the session's hello gets the reason and tether stops
        await serve_fd(session_fd, lambda: {}, listen_fd, make_link=lambda sock: ForwardLink(sock, remote))

    return serve
