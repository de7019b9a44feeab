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
- mirror: the target's app keeps its connections, untouched: a capture of the packets its
  clients send to the port gives the program a copy of each connection (agent/mirror.py),
  written to the program's socket, made here on loopback; the program's replies go nowhere.
  The table stays empty (the port's lock).
- filtered steal (HTTP): the table redirects the port to a relay here (FilteredSteal) whose
  flows pick a side per request (HttpFlow).

A network agent (tcp://, ssh://) cannot hand the program its socket: the same socket is made,
and a Bridge accepts on it, sending each connection out on a data connection the program's side
parked for it (ACCEPT, agent/listen.py), its addresses first.
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import queue
import select
import socket
import struct
import threading

from ..protocol import agent_wire
from ..protocol.sockaddr import SockaddrError, decode_inet
from . import conntrack, nft, relay
from .net import OpError, sockaddr_bytes

log = logging.getLogger("tether.agent")
# Filtered steals of one port by several sessions: the one at position i (1..FILTERED_MAX) marks
# its connections to the app FILTER_MARK + i and redirects only marks below that (unmarked
# clients, and the app-bound connections of the positions before it), at NAT priority + i: a
# client's connection passes each session's relay in turn, then reaches the app.
FILTER_MARK, FILTERED_MAX = 0x74650000, 16
# The conntrack label bit of the connections a port's table redirects: LABEL_BIT for the whole
# port's (tether-PORT), LABEL_BIT + i for the filtered steal at position i (conntrack.py).
LABEL_BIT = 80
SO_ORIGINAL_DST = 80  # SOL_IP and SOL_IPV6 (IP6T_SO_ORIGINAL_DST): where a redirected connection was going
CHUNK = 1 << 16
ACCEPT_BATCH = 64
WILDCARD = {socket.AF_INET: "0.0.0.0", socket.AF_INET6: "::"}
LOOPBACK = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
NFPROTO = {socket.AF_INET: nft.NFPROTO_IPV4, socket.AF_INET6: nft.NFPROTO_IPV6}
# A filtered steal's sides, numbered as http_filter numbers them: that module is imported only
# once a filtered steal is made (importing it costs every agent's start ~0.6 ms).
APP, PROGRAM, CLIENT = 0, 1, 2


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
        else:  # the program's socket on loopback here, fed by a relay or a mirror's copies
            sock = _listener(family, req.v6only, LOOPBACK[family], 0, req.backlog)
            try:
                undo = (FilteredSteal(table, remote, family, sock.getsockname(), settings.http, position) if filtered
                        else Mirror(table, remote, family, sock.getsockname()))
            except BaseException:
                sock.close()
                raise
    except OpError:
        table.close()
        raise
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
    _forget_connections(table, port)
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
        _forget_connections(table, port)
        return table, position
    raise OpError(errno.EADDRINUSE, f"port {port} in the target has {FILTERED_MAX} filtered steals already")


def _forget_connections(table: nft.Table, port: int) -> None:
    """Drop what earlier sessions' redirects of the port left in conntrack (conntrack.py): of
    every table of the port nobody holds now (this one just taken), before this one redirects."""
    names = [f"tether-{port}"] + [f"tether-{port}-filter-{i}" for i in range(1, FILTERED_MAX + 1)]
    whole = table.name == names[0]  # _whole_table found no filtered table held: no lookups again
    try:
        bits = [LABEL_BIT + i for i, name in enumerate(names)
                if whole or name == table.name or not table.exists(name)]
        gone = conntrack.forget(port, bits)
    except nft.NftError as e:
        log.warning("incoming: port %d: connections redirected by an earlier session could not be cleared (%s); "
                    "a client reusing one's address pair may be refused", port, e)
        return
    if gone:
        log.info("incoming: port %d: %d connections left by an earlier session cleared from conntrack", port, gone)


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
        table.redirect(nft.Redirect(port, sock.getsockname()[1], families, label=LABEL_BIT))
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


class Mirror:
    """A mirrored port: the app serves its clients untouched; a capture of their packets gives
    the program a copy of each connection (agent/mirror.py). The table stays empty: it is the
    port's lock."""

    what = "mirror"

    def __init__(self, table: nft.Table, port: int, family: int, program: tuple):
        from .mirror import Copies

        self.table, self.port = table, port
        try:
            self.copies = Copies(port, family, program)
        except PermissionError:
            raise OpError(errno.EPERM, f"mirroring port {port} needs CAP_NET_RAW in the target (its packets are "
                                       "captured): run the agent as root, or steal the port instead") from None

    def close(self) -> None:
        """New connections are no longer copied; copies under way end (the program sees them close)."""
        self.table.close()
        log.info("incoming: mirror of port %d over: %s", self.port, self.copies.stop())


class FilteredSteal:
    """A filtered steal: the port's redirect sends the target's connections to a listener here
    per family, and on each connection (HttpFlow, http_filter.Router) the requests the filter
    matches go to the program and the rest to the app.

    Its listeners and connections are served by a thread of their own on level-triggered epoll:
    every byte of the port passes here, and on the agent's asyncio loop each request cost two
    loop wake-ups and the loop's bookkeeping (about half of the relay's time under load, the
    other half the kernel's sends); a wake here takes every ready socket at once."""

    what = "filtered steal"

    def __init__(self, table: nft.Table, port: int, family: int, program: tuple, http: agent_wire.HttpFilter,
                 position: int):
        from .http_filter import Matcher

        self.matcher = Matcher(http)
        self.mark = FILTER_MARK + position  # on its connections to the app (the next session's relay, or the app)
        self.requests = self.matched = 0
        self.table, self.port = table, port
        self.program_family, self.program = family, program
        self.listeners: list[socket.socket] = []
        self.flows: set[HttpFlow] = set()
        self.ep = select.epoll()
        self.handlers: dict[int, tuple] = {}  # by fd: (flow, who), or (None, listener)
        self.calls: queue.SimpleQueue = queue.SimpleQueue()  # from other threads, run on this one
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.closing = False
        redirects = []
        try:
            for fam in (socket.AF_INET, socket.AF_INET6):
                try:
                    sock = _listener(fam, True, WILDCARD[fam], 0, 4096)
                except OSError as e:  # a target without IPv6
                    log.debug("incoming: no %s relay listener: %s", fam.name, e)
                    continue
                sock.setblocking(False)
                self.listeners.append(sock)
                # The port's connections that no relay at a later position made (FILTER_MARK).
                redirects.append(nft.Redirect(port, sock.getsockname()[1], NFPROTO[fam], below_mark=self.mark,
                                              label=LABEL_BIT + position))
            table.redirect(*redirects)
        except BaseException:
            self._close_io()
            raise
        for sock in self.listeners:
            self.watch(sock.fileno(), select.EPOLLIN, 0, None, sock)
        self.ep.register(self.wake_r, select.EPOLLIN)
        threading.Thread(target=self._run, daemon=True, name=f"filtered-{port}").start()

    def watch(self, fd: int, mask: int, old: int, flow: HttpFlow | None, who) -> None:
        """Watch fd for mask instead of old (0: not watched; a hang-up cannot be masked, so a
        socket with nothing to watch for is not registered at all)."""
        if not mask:
            self.ep.unregister(fd)
            del self.handlers[fd]
        elif not old:
            self.ep.register(fd, mask)
            self.handlers[fd] = (flow, who)
        else:
            self.ep.modify(fd, mask)

    def _run(self) -> None:
        while not (self.closing and not self.flows):
            for fd, mask in self.ep.poll():
                handler = self.handlers.get(fd)
                if handler is None:  # the wake pipe, or a socket closed by an earlier event of this poll
                    if fd == self.wake_r:
                        os.read(self.wake_r, 4096)
                        while not self.calls.empty():
                            self.calls.get()()
                elif handler[0] is None:
                    self._accept(handler[1])
                else:
                    try:
                        handler[0].event(handler[1], mask)
                    except Exception:  # a bug: that connection is lost, not the port's others
                        log.exception("incoming: port %d, client %s: relaying failed", self.port, handler[0].peer)
                        handler[0].abort()
        self._close_io()

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
                self.flows.add(HttpFlow(self, client, original_destination(client)))
            except OSError as e:
                log.warning("incoming: a connection to port %d: %s", self.port, e)
                _reset(client)

    def close(self) -> None:
        """The program's listener is gone: new connections go to the app again (those already
        in the relay's backlog are taken first); connections relayed carry on, their matched
        requests to the app from now, and the thread ends with the last of them."""
        self.table.close()
        self.calls.put(self._closed)
        os.write(self.wake_w, b"x")

    def _closed(self) -> None:
        for sock in self.listeners:
            self._accept(sock)
            self.watch(sock.fileno(), 0, select.EPOLLIN, None, sock)
            sock.close()
        self.listeners = []
        for flow in list(self.flows):
            flow.program_gone()
        self.closing = True
        log.info("incoming: filtered steal of port %d over: %d requests, %d to the program",
                 self.port, self.requests, self.matched)

    def _close_io(self) -> None:
        for sock in self.listeners:
            sock.close()
        self.ep.close()
        os.close(self.wake_r)
        os.close(self.wake_w)


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
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, relay.LINGER_RESET)
    except OSError:
        pass
    sock.close()


class HttpFlow:
    """One client connection of a filtered steal: the bytes its Router says, between the client,
    the app (connected at once, with MARK) and the program (connected when a request is its).
    Served on its FilteredSteal's thread (event).

    Bytes pass through here (the router must see them), in reads of CHUNK. A destination with
    more than OUT_MAX waiting stops the reading of what feeds it, so memory stays bounded and the
    client feels the slower side's pace, as it would without tether."""

    OUT_MAX = 1 << 20

    def __init__(self, relay: FilteredSteal, client: socket.socket, destination: tuple):
        from .http_filter import NAMES, Router

        self.names = NAMES
        self.relay, self.destination = relay, destination
        self.router = Router(relay.matcher)
        self.peer = _address(client.getpeername())
        self.socks: list[socket.socket | None] = [None, None, client]  # by http_filter's APP, PROGRAM, CLIENT
        self.ready = [False, False, True]  # connected
        self.masks = [0, 0, 0]  # what each socket is watched for
        self.shut_sent: set[int] = set()
        self.ended: set[int] = set()  # those that sent EOF
        self.closed = False
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pump()

    def event(self, who: int, mask: int) -> None:
        if self.closed:
            return
        if not self.ready[who]:
            self._connected(who)
        elif mask & ~select.EPOLLOUT and who not in self.ended:  # readable, or hung up
            self._on_readable(who)
        else:
            self._pump()

    # connections

    def _connect(self, side: int) -> None:
        if side == APP:
            family, address = self.socks[CLIENT].family, self.destination
        else:
            family, address = self.relay.program_family, self.relay.program
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if side == APP:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.relay.mark)
        self.socks[side], self.ready[side] = sock, False
        sock.connect_ex(address)
        self._watch(side, select.EPOLLOUT)

    def _connected(self, side: int) -> None:
        err = self.socks[side].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._forget(side)
            if side == PROGRAM:
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

    def _watch(self, who: int, mask: int) -> None:
        if mask != self.masks[who]:
            self.relay.watch(self.socks[who].fileno(), mask, self.masks[who], self, who)
            self.masks[who] = mask

    def _forget(self, side: int) -> None:
        sock = self.socks[side]
        if sock is not None:
            self._watch(side, 0)
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
            if who == CLIENT or any(d.side == who for d in self.router.due):
                self._fail(f"{self.names[who]} reset the connection ({e.strerror})", quiet=who == CLIENT)
                return
            data = b""  # an idle side's reset: as its close
        r = self.router
        if who == CLIENT:
            r.client_data(data) if data else r.client_eof()
        elif data:
            r.side_data(who, data)
        else:
            r.side_eof(who)
            if who not in r.wanted:
                self._forget(who)  # idle: connected again if a request is its
        if not data and self.socks[who] is not None:
            self.ended.add(who)
        self._pump()

    def _pump(self) -> None:
        """Do what the router asks: connect, send, shut, read where there is room, close."""
        r = self.router
        if r.notes:
            for note in r.notes:
                log.warning("incoming: port %d, client %s: %s", self.relay.port, self.peer, note)
            r.notes.clear()
        socks, outs, ready = self.socks, r.out, self.ready
        for side in r.wanted:
            if socks[side] is None and not self.closed:
                self._connect(side)
        for who in (CLIENT, APP, PROGRAM):
            out = outs[who]
            while out and ready[who]:
                try:
                    n = socks[who].send(out)
                except BlockingIOError:
                    break
                except OSError as e:
                    self._fail(f"sending to {self.names[who]}: {e.strerror}", quiet=who == CLIENT)
                    return
                del out[:n]
        for who in r.shut:
            if not outs[who] and ready[who] and who not in self.shut_sent:
                self.shut_sent.add(who)
                try:
                    socks[who].shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        if r.over and not any(outs[w] for w in (CLIENT, APP, PROGRAM) if socks[w]):
            self._close()
            return
        out_max, ended, masks = self.OUT_MAX, self.ended, self.masks
        reading_sides = len(outs[CLIENT]) < out_max
        for who in (CLIENT, APP, PROGRAM):
            if not ready[who]:
                continue
            if who == CLIENT:
                read = (CLIENT not in ended and not r.client_paused and len(outs[APP]) < out_max
                        and len(outs[PROGRAM]) < out_max)
            else:
                read = reading_sides and who not in ended
            mask = (select.EPOLLIN if read else 0) | (select.EPOLLOUT if outs[who] else 0)
            if mask != masks[who]:
                self._watch(who, mask)

    def program_gone(self) -> None:
        """The program closed its listener: unless it has this connection already, its requests
        go to the app."""
        if self.socks[PROGRAM] is None and not self.closed:
            self.router.program_failed()
            self._pump()

    # the end

    def _fail(self, why: str, quiet: bool = False) -> None:
        """Something broke mid-request: the client's connection is reset, as a failed server's would be."""
        if not quiet:
            log.warning("incoming: port %d, client %s: %s; its connection is reset", self.relay.port, self.peer, why)
        self._close(reset=True)

    def abort(self) -> None:
        """Reset the client's connection and close the rest (the relay failed; said already)."""
        self._close(reset=True)

    def _close(self, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for who in (CLIENT, APP, PROGRAM):
            sock = self.socks[who]
            if sock is None:
                continue
            self._watch(who, 0)
            if reset and who == CLIENT:
                _reset(sock)
            else:
                sock.close()
        self.relay.requests += self.router.requests
        self.relay.matched += self.router.matched
        self.relay.flows.discard(self)


def _address(sockaddr: tuple) -> str:
    host, port = sockaddr[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
