"""Incoming traffic: the target's TCP ports for the program's listeners (tether exec --incoming).

When a hooked program listens on a TCP port, its layer asks here (LISTEN, layer/incoming/) on a
connection it keeps for as long as that listener lives; what is set up for the listener is
undone when that connection closes (the program closed the listener, exited or was killed),
and the nf_tables table it took goes with the agent's own death too (nft.py: owner tables).
The table, one per target port, is taken in every case: a second session that finds it taken
fails its listen with EADDRINUSE and says why.

- steal: the program's socket is made here and handed over, so the kernel delivers the
  target's connections straight to it: no relay, the client's own address. It is bound to the
  target's port if that is free; if the target's app holds the port, to a free one, and the
  table redirects the port's new connections to it (the layer still answers getsockname with
  the port the program asked for).
- mirror: the target's app keeps its connections. The table redirects them to a relay here
  (Mirror), which connects each to the app (with a mark the redirect lets through) and to the
  program's socket, made here on loopback, and passes the client's bytes to both (splice and
  tee: no copy through Python), the app's back to the client, and drops the program's.

- filtered steal (HTTP): a Mirror-like relay whose flows pick a side per request (HttpFlow).

A network agent (tcp://, ssh://) cannot hand the program its socket: the same socket is made,
and a Bridge accepts on it, sending each connection out on a data connection the program's side
parked for it (ACCEPT, agent/listen.py), its addresses first.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import struct

from ..protocol import agent_wire
from ..protocol.sockaddr import SockaddrError, decode_inet
from . import nft, relay
from .net import OpError, sockaddr_bytes

log = logging.getLogger("tether.agent")
MARK = 0x74657468  # "teth": the relay's connections to the target's app, which the redirect lets through
# Filtered steals of one port by several sessions: the one at position i (1..FILTERED_MAX) marks
# its connections to the app FILTER_MARK + i and redirects only marks below that (unmarked
# clients, and the app-bound connections of the positions before it), at NAT priority + i: a
# client's connection passes each session's relay in turn, then reaches the app.
FILTER_MARK, FILTERED_MAX = 0x74650000, 16
SO_ORIGINAL_DST = 80  # SOL_IP and SOL_IPV6 (IP6T_SO_ORIGINAL_DST): where a redirected connection was going
CHUNK = 1 << 16
COPY_PIPE = 1 << 20  # bytes the program's copy may lag behind before it is dropped
PROGRAM_GRACE_S = 10.0  # a copy's connection is left open this long after the client's ended, for the program to finish
F_SETPIPE_SZ = 1031
ACCEPT_BATCH = 64
WILDCARD = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}
LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
NFPROTO = {socket.AF_INET: nft.NFPROTO_IPV4, socket.AF_INET6: nft.NFPROTO_IPV6}


def target_port(i: agent_wire.Incoming, host: str, port: int) -> int | None:
    """The target's port a listener on host:port serves, or None: it stays here."""
    if i.mode == agent_wire.INCOMING_OFF or not port:
        return None
    if i.loopback_local and ipaddress.ip_address(host.split("%")[0]).is_loopback:
        return None
    if (port in i.ports) == i.ignore and (i.ports or i.ignore):
        return None
    return dict(i.port_map).get(port, port)


def listen(req: agent_wire.Listen, settings: agent_wire.Incoming) -> tuple[socket.socket | None, object]:
    """The listening socket for the program (None: listen here) and what to close when its
    listener is gone."""
    try:
        family, host, port = decode_inet(req.sockaddr)
    except SockaddrError as e:
        raise OpError(errno.EAFNOSUPPORT, str(e)) from None
    remote = target_port(settings, host, port)
    if remote is None:
        return None, None
    filtered = settings.mode == agent_wire.INCOMING_STEAL and settings.http
    try:
        table, position = _filtered_table(remote) if filtered else (_whole_table(remote), 0)
    except nft.NftError as e:
        raise OpError(e.errno, f"cannot take port {remote} in the target: {e}") from None
    try:
        if settings.mode == agent_wire.INCOMING_STEAL and not filtered:
            sock, undo = _steal(table, family, req, remote), table
        else:  # the program's socket on loopback here; a relay between it and the target's clients
            sock = _listener(family, req.v6only, LOOPBACK[family], 0, req.backlog)
            undo = (FilteredSteal(table, remote, family, sock.getsockname(), settings.http, position) if filtered
                    else Mirror(table, remote, family, sock.getsockname()))
    except nft.NftError as e:
        table.close()
        raise OpError(e.errno, f"cannot take port {remote} in the target: {e}") from None
    except OSError as e:
        table.close()
        raise OpError(e.errno or errno.EIO, f"cannot listen on port {remote} in the target: {e.strerror}") from None
    log.info("incoming: port %d of the program serves port %d of the target (%s)", port, remote,
             "steal" if undo is table else undo.what)
    return sock, undo


def _whole_table(port: int) -> nft.Table:
    """The table of a steal or a mirror, which has the port alone: its name is the lock."""
    table = nft.Table(f"tether-{port}")
    try:
        table.create()
    except nft.NftError as e:
        table.close()
        if e.errno in (errno.EEXIST, errno.EPERM):
            raise OpError(errno.EADDRINUSE, f"port {port} in the target is already mirrored or stolen by another "
                                            "tether session; stop that one first") from None
        raise
    if any(table.exists(f"tether-{port}-filter-{i}") for i in range(1, FILTERED_MAX + 1)):
        table.close()
        raise OpError(errno.EADDRINUSE, f"port {port} in the target has filtered steals of other tether sessions; "
                                        "a steal or mirror of the whole port waits until they stop (or filter "
                                        "this one too: --steal-header/--steal-path/--steal-method)")
    return table


def _filtered_table(port: int) -> tuple[nft.Table, int]:
    """A filtered steal's table and its position among the port's filtered steals."""
    for position in range(1, FILTERED_MAX + 1):
        table = nft.Table(f"tether-{port}-filter-{position}", nft.NAT_PRIORITY + position)
        try:
            table.create()
        except nft.NftError as e:
            table.close()
            if e.errno in (errno.EEXIST, errno.EPERM):
                continue
            raise
        if table.exists(f"tether-{port}"):
            table.close()
            raise OpError(errno.EADDRINUSE, f"port {port} in the target is mirrored or stolen whole by another "
                                            "tether session; stop that one first")
        return table, position
    raise OpError(errno.EADDRINUSE, f"port {port} in the target has {FILTERED_MAX} filtered steals already")


def _listener(family: int, v6only: bool, host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        sock.bind((host, port))
        sock.listen(max(backlog, 1))
    except OSError:
        sock.close()
        raise
    return sock


def _steal(table: nft.Table, family: int, req: agent_wire.Listen, port: int) -> socket.socket:
    """The program's socket on the target's port; if the target's app has that port, on a
    free one, with the port redirected to it."""
    try:
        return _listener(family, req.v6only, WILDCARD[family], port, req.backlog)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
    sock = _listener(family, req.v6only, WILDCARD[family], 0, req.backlog)
    families = 0 if family == socket.AF_INET6 and not req.v6only else NFPROTO[family]
    try:
        table.redirect(nft.Redirect(port, sock.getsockname()[1], families))
    except nft.NftError:
        sock.close()
        raise
    return sock


def original_destination(sock: socket.socket) -> tuple:
    """Where a redirected connection was going, as socket.connect takes it (OSError: it was
    not redirected)."""
    mapped = sock.family == socket.AF_INET6 and sock.getsockname()[0].startswith("::ffff:")
    if sock.family == socket.AF_INET or mapped:  # IPv4, also on a dual-stack socket
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        host = socket.inet_ntop(socket.AF_INET, raw[4:8])
        return ("::ffff:" + host) if mapped else host, struct.unpack_from(">H", raw, 2)[0]
    raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), struct.unpack_from(">H", raw, 2)[0]


def _tee():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.tee.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)
    libc.tee.restype = ctypes.c_ssize_t

    def tee(src: int, dst: int, n: int) -> int:
        """tee(2), which os lacks: up to n bytes of pipe src copied into pipe dst, not consumed."""
        got = libc.tee(src, dst, n, os.SPLICE_F_NONBLOCK)
        if got < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return got

    return tee


class Relay:
    """Where a port's redirect sends the target's connections: a listener here per family (the
    relay's own connections to the app carry MARK, which the redirect lets through), and a
    flow (make_flow) for each connection accepted."""

    what = "relay"

    def __init__(self, table: nft.Table, port: int, family: int, program: tuple):
        import asyncio

        self.loop = asyncio.get_running_loop()
        self.table, self.port = table, port
        self.program_family, self.program = family, program
        self.listeners: list[socket.socket] = []
        self.flows: set = set()
        redirects = []
        for fam in (socket.AF_INET, socket.AF_INET6):
            try:
                sock = _listener(fam, True, WILDCARD[fam], 0, 4096)
            except OSError as e:  # a target without IPv6
                log.debug("incoming: no %s relay listener: %s", fam.name, e)
                continue
            sock.setblocking(False)
            self.listeners.append(sock)
            redirects.append(self.redirect_to(sock.getsockname()[1], NFPROTO[fam]))
            self.loop.add_reader(sock, self._accept, sock)
        try:
            table.redirect(*redirects)
        except nft.NftError:
            self._close_listeners()
            raise

    def redirect_to(self, to: int, nfproto: int) -> nft.Redirect:
        """The port's connections to `to`, except the relay's own (MARK) to the app."""
        return nft.Redirect(self.port, to, nfproto, unless_mark=MARK)

    def make_flow(self, client: socket.socket, destination: tuple):
        raise NotImplementedError

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                client, _ = listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                log.warning("incoming: accepting on the relay of port %d: %s", self.port, e)
                return
            try:
                self.flows.add(self.make_flow(client, original_destination(client)))
            except OSError as e:
                log.warning("incoming: a connection to port %d: %s", self.port, e)
                _reset(client)

    def _close_listeners(self) -> None:
        for sock in self.listeners:
            self.loop.remove_reader(sock)
            sock.close()
        self.listeners = []

    def close(self) -> None:
        """The program's listener is gone: new connections go to the app again; those already
        in the relay's backlog are taken first."""
        self.table.close()
        for sock in self.listeners:
            self._accept(sock)
        self._close_listeners()


class Mirror(Relay):
    """A mirrored port: the app serves each connection, the program gets a copy (Flow)."""

    what = "mirror"

    def __init__(self, table: nft.Table, port: int, family: int, program: tuple):
        self.tee = _tee()
        self.dropped = 0  # copies the program fell too far behind for
        super().__init__(table, port, family, program)

    def make_flow(self, client: socket.socket, destination: tuple) -> Flow:
        return Flow(self, client, destination)

    def close(self) -> None:
        """Connections relayed carry on without a copy."""
        super().close()
        for flow in list(self.flows):
            flow.drop_copy()
        log.info("incoming: mirror of port %d over (%d copies dropped as the program fell behind)",
                 self.port, self.dropped)


class FilteredSteal(Relay):
    """A filtered steal: on each connection, the requests the filter matches go to the
    program and the rest to the app (HttpFlow, http_filter.Router)."""

    what = "filtered steal"

    def __init__(self, table: nft.Table, port: int, family: int, program: tuple, http: agent_wire.HttpFilter,
                 position: int):
        from .http_filter import Matcher

        self.matcher = Matcher(http)
        self.mark = FILTER_MARK + position  # on its connections to the app (the next session's relay, or the app)
        self.requests = self.matched = 0
        super().__init__(table, port, family, program)

    def redirect_to(self, to: int, nfproto: int) -> nft.Redirect:
        """The port's connections that no relay at a later position made (FILTER_MARK)."""
        return nft.Redirect(self.port, to, nfproto, below_mark=self.mark)

    def make_flow(self, client: socket.socket, destination: tuple) -> HttpFlow:
        return HttpFlow(self, client, destination)

    def close(self) -> None:
        """Connections relayed carry on; their matched requests go to the app from now."""
        super().close()
        for flow in list(self.flows):
            flow.program_gone()
        log.info("incoming: filtered steal of port %d over: %d requests, %d to the program",
                 self.port, self.requests, self.matched)


class Bridge:
    """A listener's socket made here, served for a program on another machine: each connection
    it accepts goes out on one of the data connections the program's side parked (ACCEPT),
    first its addresses (ACCEPT_REPLY: where the client connected, who the client is), then its
    bytes (relay.relay_tcp). It accepts only while a data connection waits: clients beyond
    that wait in the socket's backlog, as for a program slow to accept."""

    def __init__(self, sock: socket.socket, port: int):
        import asyncio
        import collections

        self.loop = asyncio.get_running_loop()
        self.sock, self.port = sock, port
        self.parked: collections.deque[socket.socket] = collections.deque()
        self.accepted = 0
        sock.setblocking(False)

    def park(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        self.parked.append(conn)
        self.loop.add_reader(conn, self._unpark, conn)  # a parked connection only ever hangs up
        if len(self.parked) == 1:
            self.loop.add_reader(self.sock, self._accept)
            self._accept()

    def _unpark(self, conn: socket.socket) -> None:
        self.loop.remove_reader(conn)
        self.parked.remove(conn)
        conn.close()
        if not self.parked:
            self.loop.remove_reader(self.sock)

    def _accept(self) -> None:
        while self.parked:
            try:
                client, peer = self.sock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                log.warning("incoming: accepting on port %d: %s", self.port, e)
                return
            conn = self.parked.popleft()
            self.loop.remove_reader(conn)
            if not self.parked:
                self.loop.remove_reader(self.sock)
            try:
                local = client.getsockname()
                try:  # behind a redirect the socket's own port is not the one the client asked for
                    local = (*original_destination(client), *local[2:])
                except OSError:
                    pass
                addresses = agent_wire.Relayed(sockaddr_bytes(local, client.family), sockaddr_bytes(peer, client.family))
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                relay.relay_tcp(conn, client, f"port {self.port} <- {_address(peer)}",
                                preface=agent_wire.encode_accept_reply(addresses, 0))
            except OSError as e:
                log.warning("incoming: a connection to port %d from %s: %s", self.port, _address(peer), e)
                _reset(client)
                conn.close()
                continue
            self.accepted += 1

    def close(self) -> None:
        if self.parked:
            self.loop.remove_reader(self.sock)
        for conn in self.parked:
            self.loop.remove_reader(conn)
            conn.close()
        self.parked.clear()
        self.sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with a reset, as the peer of a connection that failed should see it."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _pipe(size: int = 0) -> tuple[int, int]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    if size:
        import fcntl

        fcntl.fcntl(w, F_SETPIPE_SZ, size)
    return r, w


class Flow:
    """One client connection: its bytes to the app and to the program, the app's back.

    Each direction goes socket -> pipe -> socket with splice; the client's bytes are also
    tee'd into a second pipe for the program. A direction whose destination cannot take more
    stops reading its source until it can (the client feels the app's pace, as without tether);
    the program's copy never holds anything up: when its pipe is full, that copy is dropped."""

    def __init__(self, mirror: Mirror, client: socket.socket, destination: tuple):
        self.mirror, self.loop = mirror, mirror.loop
        self.client = client
        self.app = socket.socket(client.family, socket.SOCK_STREAM)
        self.prog: socket.socket | None = socket.socket(mirror.program_family, socket.SOCK_STREAM)
        self.pipes: list[int] = []
        try:
            for sock in (client, self.app, self.prog):
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.app.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
            for size in (0, COPY_PIPE, 0):
                self.pipes += _pipe(size)
        except OSError:
            self._close()
            raise
        self.up, self.copy, self.down = self.pipes[0:2], self.pipes[2:4], self.pipes[4:6]
        self.up_left = self.copy_left = self.down_left = 0
        self.up_paused = self.copy_paused = self.down_paused = False  # waiting for the destination to drain
        self.up_done = self.down_done = self.over = False  # the client's side, the app's side ended
        self.prog_ready = False
        self.app.connect_ex(destination)
        self.prog.connect_ex(mirror.program)
        self.loop.add_writer(self.app, self._app_connected)
        self.loop.add_writer(self.prog, self._prog_connected)

    def _close(self) -> None:
        """Undo a half-made flow."""
        for sock in (self.client, self.app, self.prog):
            sock.close()
        for fd in self.pipes:
            os.close(fd)

    def _app_connected(self) -> None:
        self.loop.remove_writer(self.app)
        err = self.app.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            # Nothing serves the port (or it refused): the client sees what it would have.
            log.debug("incoming: the app on port %d: %s", self.mirror.port, os.strerror(err))
            self._end(reset=True)
            return
        self.loop.add_reader(self.client, self._from_client)
        self.loop.add_reader(self.app, self._from_app)

    def _prog_connected(self) -> None:
        self.loop.remove_writer(self.prog)
        if self.prog.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self.drop_copy()
            return
        self.prog_ready = True
        self.loop.add_reader(self.prog, self._from_prog)
        self._to_prog()

    # client -> app (and the copy)

    def _from_client(self) -> None:
        try:
            n = os.splice(self.client.fileno(), self.up[1], CHUNK, flags=os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            return
        except OSError:
            self._end(reset=True)
            return
        if n == 0:
            self.loop.remove_reader(self.client)
            self.up_done = True
            self._shut(self.app)
            self._copy_done()
            self._maybe_over()
            return
        copied = False
        if self.prog is not None:
            try:
                copied = self.mirror.tee(self.up[0], self.copy[1], n) == n
            except OSError:
                pass
            if not copied:
                self.mirror.dropped += 1
                self.drop_copy()
        self.up_left = n
        self._to_app()  # first: the app's client is waiting, the program's copy is not
        if copied:
            self.copy_left += n
            self._to_prog()

    def _to_app(self) -> None:
        while self.up_left:
            try:
                self.up_left -= os.splice(self.up[0], self.app.fileno(), self.up_left,
                                          flags=os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE)
            except BlockingIOError:
                if not self.up_paused:  # the client waits until the app takes more
                    self.up_paused = True
                    self.loop.remove_reader(self.client)
                    self.loop.add_writer(self.app, self._to_app)
                return
            except OSError:
                self._end(reset=True)
                return
        if self.up_paused:
            self.up_paused = False
            self.loop.remove_writer(self.app)
            if not self.up_done:
                self.loop.add_reader(self.client, self._from_client)

    def _to_prog(self) -> None:
        if not self.prog_ready:
            return
        while self.copy_left:
            try:
                self.copy_left -= os.splice(self.copy[0], self.prog.fileno(), self.copy_left,
                                            flags=os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE)
            except BlockingIOError:
                if not self.copy_paused:
                    self.copy_paused = True
                    self.loop.add_writer(self.prog, self._to_prog)
                return
            except OSError:
                self.drop_copy()
                return
        if self.copy_paused:
            self.copy_paused = False
            self.loop.remove_writer(self.prog)
        self._copy_done()
        self._maybe_over()

    def _copy_done(self) -> None:
        if self.up_done and not self.copy_left and self.prog_ready:
            self._shut(self.prog)

    def _from_prog(self) -> None:
        """The program's replies go nowhere: MSG_TRUNC discards them in the kernel. Its end of
        the copy is the copy's end."""
        try:
            n = self.prog.recv_into(_DISCARD, CHUNK, socket.MSG_TRUNC)
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if n == 0:
            self.drop_copy()

    def drop_copy(self) -> None:
        self._drop_prog()
        self._maybe_over()

    def _drop_prog(self) -> None:
        if self.prog is not None:
            self.loop.remove_reader(self.prog)
            self.loop.remove_writer(self.prog)
            self.prog.close()
            self.prog, self.prog_ready, self.copy_left, self.copy_paused = None, False, 0, False

    # app -> client

    def _from_app(self) -> None:
        try:
            n = os.splice(self.app.fileno(), self.down[1], CHUNK, flags=os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            return
        except OSError:
            self._end(reset=True)
            return
        if n == 0:
            self.loop.remove_reader(self.app)
            self.down_done = True
            self._shut(self.client)
            self._maybe_over()
            return
        self.down_left = n
        self._to_client()

    def _to_client(self) -> None:
        while self.down_left:
            try:
                self.down_left -= os.splice(self.down[0], self.client.fileno(), self.down_left,
                                            flags=os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE)
            except BlockingIOError:
                if not self.down_paused:  # the app waits until the client takes more
                    self.down_paused = True
                    self.loop.remove_reader(self.app)
                    self.loop.add_writer(self.client, self._to_client)
                return
            except OSError:
                self._end(reset=True)
                return
        if self.down_paused:
            self.down_paused = False
            self.loop.remove_writer(self.client)
            if not self.down_done:
                self.loop.add_reader(self.app, self._from_app)

    # the end

    def _shut(self, sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _maybe_over(self) -> None:
        """The client and the app are done once both sides have ended and the program has its
        whole copy; the program may still be answering it: its end, or PROGRAM_GRACE_S, ends
        the flow."""
        if self.prog is None and self.over:
            self.mirror.flows.discard(self)
        elif self.up_done and self.down_done and not self.copy_left:
            self._end()

    def _end(self, reset: bool = False) -> None:
        """Both sides are over (or one failed: reset the other, as a broken path would, and
        drop the copy)."""
        if self.over:
            return
        self.over = True
        if reset:
            self._drop_prog()
        for sock in (self.client, self.app):
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)
            if reset:
                _reset(sock)
            sock.close()
        for fd in self.pipes:
            os.close(fd)
        if self.prog is None:
            self.mirror.flows.discard(self)
        else:
            self.loop.call_later(PROGRAM_GRACE_S, self.drop_copy)


_DISCARD = bytearray(CHUNK)  # never read: MSG_TRUNC leaves it as it is


class HttpFlow:
    """One client connection of a filtered steal: the bytes its Router says, between the client,
    the app (connected at once, with MARK) and the program (connected when a request is its).

    Bytes pass through here (the router must see them), in reads of CHUNK. A destination with
    more than OUT_MAX waiting stops the reading of what feeds it, so memory stays bounded and the
    client feels the slower side's pace, as it would without tether."""

    OUT_MAX = 1 << 20

    def __init__(self, relay: FilteredSteal, client: socket.socket, destination: tuple):
        from .http_filter import APP, CLIENT, PROGRAM, Router

        self.APP, self.PROGRAM, self.CLIENT = APP, PROGRAM, CLIENT
        self.relay, self.loop, self.destination = relay, relay.loop, destination
        self.router = Router(relay.matcher)
        self.peer = _address(client.getpeername())
        self.socks: dict[int, socket.socket | None] = {CLIENT: client, APP: None, PROGRAM: None}
        self.ready = {CLIENT: True, APP: False, PROGRAM: False}
        self.reading: dict[int, bool] = {CLIENT: False, APP: False, PROGRAM: False}
        self.writing: dict[int, bool] = {CLIENT: False, APP: False, PROGRAM: False}
        self.shut_sent: set[int] = set()
        self.ended: set[int] = set()  # those that sent EOF
        self.closed = False
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pump()

    # connections

    def _connect(self, side: int) -> None:
        if side == self.APP:
            family, address = self.socks[self.CLIENT].family, self.destination
        else:
            family, address = self.relay.program_family, self.relay.program
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if side == self.APP:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.relay.mark)
        self.socks[side], self.ready[side] = sock, False
        sock.connect_ex(address)
        self.loop.add_writer(sock, self._connected, side)
        self.writing[side] = True

    def _connected(self, side: int) -> None:
        sock = self.socks[side]
        self.loop.remove_writer(sock)
        self.writing[side] = False
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._forget(side)
            if side == self.PROGRAM:
                self.router.program_failed()
            elif not self.router.requests:
                # Nothing serves the port (or it refused): the client sees what it would have.
                log.debug("incoming: the app on port %d: %s", self.relay.port, os.strerror(err))
                self._close(reset=True)
                return
            else:
                self._fail(f"the target's app refused a connection ({os.strerror(err)})")
                return
        else:
            self.ready[side] = True
        self._pump()

    def _forget(self, side: int) -> None:
        sock = self.socks[side]
        if sock is not None:
            self._read(side, False)
            if self.writing[side]:
                self.loop.remove_writer(sock)
                self.writing[side] = False
            sock.close()
        self.socks[side], self.ready[side] = None, False
        self.shut_sent.discard(side)
        self.ended.discard(side)

    # bytes

    def _on_readable(self, who: int) -> None:
        try:
            data = self.socks[who].recv(CHUNK)
        except BlockingIOError:
            return
        except OSError as e:
            if who == self.CLIENT or any(d.side == who for d in self.router.due):
                self._fail(f"{_NAMES[who]} reset the connection ({e.strerror})", quiet=who == self.CLIENT)
                return
            data = b""  # an idle side's reset: as its close
        r = self.router
        if who == self.CLIENT:
            r.client_data(data) if data else r.client_eof()
        elif data:
            r.side_data(who, data)
        else:
            r.side_eof(who)
            if who not in r.wanted:
                self._forget(who)  # idle: connected again if a request is its
        if not data:
            self._read(who, False)
            if self.socks[who] is not None:
                self.ended.add(who)
        self._pump()

    def _read(self, who: int, on: bool) -> None:
        if self.reading[who] != on and self.socks[who] is not None:
            self.reading[who] = on
            if on:
                self.loop.add_reader(self.socks[who], self._on_readable, who)
            else:
                self.loop.remove_reader(self.socks[who])

    def _on_writable(self, who: int) -> None:
        self._pump()

    def _pump(self) -> None:
        """Do what the router asks: connect, send, shut, read where there is room, close."""
        r = self.router
        for note in r.notes:
            log.warning("incoming: port %d, client %s: %s", self.relay.port, self.peer, note)
        r.notes.clear()
        for side in (self.APP, self.PROGRAM):
            if side in r.wanted and self.socks[side] is None and not self.closed:
                self._connect(side)
        for who in (self.CLIENT, self.APP, self.PROGRAM):
            out, sock = r.out[who], self.socks[who]
            if sock is None or not self.ready[who]:
                continue
            while out:
                try:
                    n = sock.send(out)
                except BlockingIOError:
                    break
                except OSError as e:
                    self._fail(f"sending to {_NAMES[who]}: {e.strerror}", quiet=who == self.CLIENT)
                    return
                del out[:n]
            if out and not self.writing[who]:
                self.loop.add_writer(sock, self._on_writable, who)
                self.writing[who] = True
            elif not out and self.writing[who]:
                self.loop.remove_writer(sock)
                self.writing[who] = False
            if not out and who in r.shut and who not in self.shut_sent:
                self.shut_sent.add(who)
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        if r.over and not any(r.out[w] for w in (self.CLIENT, self.APP, self.PROGRAM) if self.socks[w]):
            self._close()
            return
        room = {w: len(r.out[w]) < self.OUT_MAX for w in r.out}
        self._read(self.CLIENT, self.CLIENT not in self.ended and not r.client_paused
                   and room[self.APP] and room[self.PROGRAM])
        for side in (self.APP, self.PROGRAM):
            if self.ready[side] and side not in self.ended:
                self._read(side, room[self.CLIENT])

    def program_gone(self) -> None:
        """The program closed its listener: unless it has this connection already, its requests
        go to the app."""
        if self.socks[self.PROGRAM] is None and not self.closed:
            self.router.program_failed()
            self._pump()

    # the end

    def _fail(self, why: str, quiet: bool = False) -> None:
        """Something broke mid-request: the client's connection is reset, as a failed server's would be."""
        if not quiet:
            log.warning("incoming: port %d, client %s: %s; its connection is reset", self.relay.port, self.peer, why)
        self._close(reset=True)

    def _close(self, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for who in (self.CLIENT, self.APP, self.PROGRAM):
            sock = self.socks[who]
            if sock is None:
                continue
            self._read(who, False)
            if self.writing[who]:
                self.loop.remove_writer(sock)
            if reset and who == self.CLIENT:
                _reset(sock)
            else:
                sock.close()
        self.relay.requests += self.router.requests
        self.relay.matched += self.router.matched
        self.relay.flows.discard(self)


_NAMES = {0: "the target's app", 1: "the program", 2: "the client"}  # http_filter's APP, PROGRAM, CLIENT


def _address(sockaddr: tuple) -> str:
    host, port = sockaddr[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
