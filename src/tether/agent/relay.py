"""Relays: the bytes of a data connection to and from the socket it stands for.

A network agent relays between each data connection and its socket in the target. TCP
streams, the program's connects (STREAM) and the connections a listener in the target accepts
for a program elsewhere (incoming.Bridge) alike, are relayed by a few Splicer threads, each
for many streams on epoll, with non-blocking splices through a pipe per direction: memory per
stream is bounded, a slow reader holds back only its own sender (TCP's flow control does the
rest), and a stream costs no thread wake of its own (a thread per direction cost two per
request and its answer, and measured no faster for one bulk stream). An end of stream is
passed on as one (FIN); a failure on either side resets both (RST), so the program sees
ECONNRESET where the target's peer reset, and so do both when the agent itself dies
mid-relay (SO_LINGER 0 until the relay ends), rather than a clean end of a stream that was cut
short.

The Splicers open the program's connects too: a proven data connection waits there for its
first frame, and a STREAM's connect runs non-blocking on the same epoll (its deadline kept,
given up when the program hangs up), so a relayed connect wakes one thread (a thread blocked
in recv per waiting connection, handing on to a Splicer, cost the agent twice the thread
switches per connect).

For UDP the stream carries datagram records (agent_wire.encode_datagram, each after its
length), each direction on a thread of its own (Pair).
"""
from __future__ import annotations

import errno
import fcntl
import heapq
import itertools
import logging
import os
import queue
import select
import socket
import struct
import threading
import time
import weakref

from ..protocol import agent_wire, wire
from . import net

log = logging.getLogger("tether.agent")
BUF = 1 << 18  # bytes read at once from a datagram stream
PIPE_SIZE = 1 << 20  # the splice pipe per direction and stream: what one call moves at most
F_SETPIPE_SZ = 1031
LINGER_RESET = struct.pack("ii", 1, 0)  # close sends RST
LINGER_OFF = struct.pack("ii", 0, 0)
UDP_POLL = 1.0  # seconds a UDP reader waits before it looks whether its stream ended


IDLE_MAX = 64  # UDP relay threads kept for the next ones: starting one costs more than a relayed request
_idle = 0
_idle_lock = threading.Lock()
_work: queue.SimpleQueue = queue.SimpleQueue()


def _run_on_thread(fn, *args) -> None:
    """fn(*args) on an idle relay thread, or on a new one."""
    global _idle
    with _idle_lock:
        waiting = _idle > 0
        if waiting:
            _idle -= 1
    if waiting:
        _work.put((fn, args))
    else:
        threading.Thread(target=_worker, args=(fn, args), daemon=True, name="relay").start()


def _worker(fn, args) -> None:
    global _idle
    while True:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - a bug in one stream's relay must not take the thread's next ones
            log.exception("relay")
        with _idle_lock:
            if _idle >= IDLE_MAX:
                return
            _idle += 1
        fn, args = _work.get()


class Pair:
    """Two sockets relayed both ways; the last of its two threads closes them."""

    def __init__(self, a: socket.socket, b: socket.socket, name: str):
        self.a, self.b, self.name = a, b, name
        self.lock = threading.Lock()
        self.running = 2
        self.failed = False
        self.ended = threading.Event()  # a direction is done: a UDP reader stops too

    def start(self, forward, backward) -> None:
        # Until both directions have ended: if this process dies, the kernel resets both
        # connections rather than ending them cleanly short.
        for sock in (self.a, self.b):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        for target, src, dst in ((forward, self.a, self.b), (backward, self.b, self.a)):
            _run_on_thread(self._run, target, src, dst)

    def _run(self, pump, src: socket.socket, dst: socket.socket) -> None:
        try:
            pump(src, dst, self)
        except OSError as e:
            self.fail(src, e)
        finally:
            self.ended.set()
            with self.lock:
                self.running -= 1
                last = self.running == 0
            if last:
                for sock in (self.a, self.b):
                    if not self.failed:  # both ends done: what is still queued goes out, then FIN
                        try:
                            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_OFF)
                        except OSError:
                            pass
                    sock.close()

    def fail(self, where: socket.socket, e: OSError) -> None:
        """One side failed: reset the other, and wake the thread still reading."""
        with self.lock:
            if self.failed:
                return
            self.failed = True
        log.debug("relay %s: %s", self.name, e)
        other = self.b if where is self.a else self.a
        for sock in (self.a, self.b):
            try:
                if sock is other or sock is where:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass


def splice_pipe(flags: int) -> tuple[int, int]:
    """A pipe for splicing: PIPE_SIZE of room (a slot per segment: small ones fill a default
    pipe of 16 slots long before its 64 KiB)."""
    r, w = os.pipe2(flags)
    try:
        fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # the default size works, a little slower
    return r, w


class Splicer:
    """One thread relaying many TCP pairs with non-blocking splices on epoll; a burst of small
    exchanges (a request, its answer) is taken in one wake. A socket is watched for reading
    while its direction flows, for writing only while the other direction waits on it.

    It also opens the program's connects (_Opening): waits for a proven data connection's
    first frame and, for a STREAM, connects in the target without blocking, answers and relays
    on, all on this thread: a connect wakes no other thread and takes no other lock."""

    def __init__(self):
        self.ep = select.epoll()
        self.owners: dict[int, _Pumped | _Opening] = {}  # by socket fd: the pair or opening it is in
        self.added: queue.SimpleQueue = queue.SimpleQueue()
        self.deadlines: list[tuple[float, int, _Opening]] = []  # heap of connects in flight (stale ones too)
        self.connecting = 0  # connects in flight (the live entries of deadlines)
        self.order = itertools.count()  # ties in deadlines
        self.ahead = 0  # openings that hold a socket made ahead
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ep.register(self.wake_r, select.EPOLLIN)
        threading.Thread(target=self._run, daemon=True, name="splicer").start()

    def add(self, a: socket.socket, b: socket.socket, name: str) -> None:
        self.added.put(_Pumped(a, b, name))
        os.write(self.wake_w, b"x")

    def open(self, stream: socket.socket, who: str, otherwise) -> None:
        self.added.put(_Opening(stream, who, otherwise))
        os.write(self.wake_w, b"x")

    def _run(self) -> None:
        while True:
            timeout = max(0.0, self.deadlines[0][0] - time.monotonic()) if self.deadlines else None
            for fd, mask in self.ep.poll(timeout):
                if fd == self.wake_r:
                    os.read(self.wake_r, 4096)
                    while not self.added.empty():
                        item = self.added.get()
                        if isinstance(item, _Pumped):
                            self._start(item)
                        else:
                            self._wait_first(item)
                    continue
                owner = self.owners.get(fd)
                if isinstance(owner, _Pumped):
                    self._pumped_event(owner, fd, mask)
                elif owner is not None:
                    self._opening_event(owner, fd, mask)
            self._expire()

    # -- relaying

    def _start(self, pair: _Pumped) -> None:
        for fd in pair.fds:
            self.owners[fd] = pair
        self._step(pair, (0, 1))  # and watched for what it then waits on

    def _pumped_event(self, pair: _Pumped, fd: int, mask: int) -> None:
        side = 0 if fd == pair.fds[0] else 1
        if mask & select.EPOLLERR:  # reset by its peer: both are over
            err = pair.socks[side].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            log.debug("relay %s: %s", pair.name, os.strerror(err))
            self._close(pair, LINGER_RESET)
            return
        # Readable (or hung up): its own way (side -> other); writable: the other way.
        ways = ((side,) if mask & ~select.EPOLLOUT else ()) + ((1 - side,) if mask & select.EPOLLOUT else ())
        self._step(pair, ways)

    def _step(self, pair: _Pumped, ways: tuple) -> None:
        try:
            for way in ways:
                pair.pump(way)
        except OSError as e:
            log.debug("relay %s: %s", pair.name, e)
            self._close(pair, LINGER_RESET)
            return
        if all(pair.ended):
            self._close(pair, LINGER_OFF)
            return
        for i, want in enumerate(pair.masks):  # nothing to watch for: not watched at all (a hang-up cannot be masked)
            if want != pair.watched[i]:
                if not want:
                    self.ep.unregister(pair.fds[i])
                elif not pair.watched[i]:
                    self.ep.register(pair.fds[i], want)
                else:
                    self.ep.modify(pair.fds[i], want)
                pair.watched[i] = want

    # -- opening: the first frame, the connect, the answer

    def _wait_first(self, op: _Opening) -> None:
        # Its connect's socket, made now rather than between the STREAM and its answer; while
        # few wait (each holds a descriptor more).
        if self.ahead < AHEAD_MAX:
            try:
                op.ahead = net.socket_ahead()
                self.ahead += 1
            except OSError:  # out of descriptors: the connect makes its own, and answers why it cannot
                pass
        op.stream.setblocking(False)
        self._watch(op.stream, select.EPOLLIN, op)

    def _opening_event(self, op: _Opening, fd: int, mask: int) -> None:
        if op.target is None:
            self._first(op)
        elif fd == op.target.fileno():
            self._connected(op)
        else:
            self._asker(op)

    def _first(self, op: _Opening) -> None:
        try:
            first = op.read_first()
        except EOFError:
            log.debug("%s closed a connection it never used (a spare)", op.who)
            self._drop(op)
            return
        except (OSError, wire.ProtocolError) as e:
            log.warning("dropped %s: %s", op.who, e)
            self._drop(op)
            return
        if first is None:
            return  # the rest of it is still on its way
        if first.type != agent_wire.MSG_STREAM:
            self._unwatch(op.stream)
            self._close_ahead(op)
            op.otherwise(first)
            return
        op.id = first.id
        try:
            op.req = req = agent_wire.decode_stream(first)
            if req.flags & agent_wire.FLAG_BIND:
                self._close_ahead(op)
                self._answer(op, net.bind_udp(req))
                return
            sock, op.host, op.port = net.relay_socket(req, self._take_ahead(op))
        except wire.ProtocolError as e:
            self._refuse(op, errno.EINVAL, str(e))
            return
        except net.OpError as e:
            self._refuse(op, e.errno, str(e))
            return
        except OSError as e:  # no socket: out of descriptors, or a kind the target cannot make
            self._refuse(op, e.errno or errno.EIO, f"socket: {e.strerror}")
            return
        err = sock.connect_ex((op.host, op.port))
        if err == errno.EINPROGRESS and _established(sock):
            err = 0  # over loopback the handshake is done by the time connect returns
        if err == 0:  # that, UDP, or a TCP connect done at once
            self._answer(op, sock)
        elif err != errno.EINPROGRESS:
            self._fail(op, net.failed(sock, op.host, op.port, 0, OSError(err, os.strerror(err))))
        else:
            # Until it completes the asker stays watched too: a program whose dial timed out
            # or was cancelled closes it, and then this connect is given up.
            op.target = sock
            op.timeout = (req.timeout_ms or net.CONNECT_TIMEOUT_MS) / 1000
            heapq.heappush(self.deadlines, (time.monotonic() + op.timeout, next(self.order), op))
            self.connecting += 1
            self._watch(sock, select.EPOLLOUT, op)

    def _connected(self, op: _Opening) -> None:
        err = op.target.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        target = self._end_connect(op)
        if err:
            self._unwatch(target)
            self._fail(op, net.failed(target, op.host, op.port, op.timeout, OSError(err, os.strerror(err))))
        else:
            self._answer(op, target)

    def _asker(self, op: _Opening) -> None:
        try:
            early = op.stream.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError:
            early = b""
        self._unwatch(op.stream)
        if early:  # bytes the program sent before its connect completed: relayed once it has
            return
        target = self._end_connect(op)
        self._unwatch(target)
        target.close()
        log.debug("%s: connect to %s:%s given up: the program stopped waiting", op.who, op.host, op.port)
        op.stream.close()

    def _expire(self) -> None:
        if not self.deadlines:
            return
        now = time.monotonic()
        while self.deadlines and self.deadlines[0][0] <= now:
            op = heapq.heappop(self.deadlines)[2]
            if op.target is not None:  # still connecting
                target = self._end_connect(op)
                self._unwatch(target)
                self._fail(op, net.failed(target, op.host, op.port, op.timeout, None))

    def _end_connect(self, op: _Opening) -> socket.socket:
        """The connect in flight is over (either way): its socket (still watched)."""
        target, op.target = op.target, None
        self.connecting -= 1
        if len(self.deadlines) > 64 + 2 * self.connecting:  # mostly connects long done: drop those
            self.deadlines = [entry for entry in self.deadlines if entry[2].target is not None]
            heapq.heapify(self.deadlines)
        return target

    def _answer(self, op: _Opening, target: socket.socket) -> None:
        """Connected (or bound): the STREAM_REPLY with its addresses, then the relay."""
        req, stream = op.req, op.stream
        name = f"{op.who} -> {req.sockaddr.hex()}"
        try:
            local = net.sockaddr_bytes(target.getsockname(), target.family)
            if req.flags & agent_wire.FLAG_BIND:
                peer = b""
            elif target.family == socket.AF_INET:  # connected to just what was asked
                peer = req.sockaddr[:8] + bytes(8)
            else:
                peer = net.sockaddr_bytes(target.getpeername(), target.family)
            reply = agent_wire.encode_stream_reply(agent_wire.Relayed(local, peer), op.id)
            if stream.send(reply) < len(reply):  # the first write on a fresh connection: never short
                raise ConnectionError("the reply did not fit the data connection's buffer")
        except OSError as e:
            log.debug("relay %s: %s", name, e)
            for sock in (target, stream):
                self._unwatch(sock)
                sock.close()
            return
        if req.socktype == socket.SOCK_STREAM and stream not in DIRECT:
            pair = _Pumped(stream, target, name)
            pair.watched = [select.EPOLLIN if pair.fds[0] in self.owners else 0,
                            select.EPOLLOUT if pair.fds[1] in self.owners else 0]
            self._start(pair)
            return
        self._unwatch(stream)
        self._unwatch(target)
        if req.socktype == socket.SOCK_DGRAM:
            relay_udp(stream, target, name)
        else:
            relay_tcp(stream, target, name)  # a TLS tunnel's end: its thread takes the target socket

    def _refuse(self, op: _Opening, err: int, why: str) -> None:
        self._close_ahead(op)
        self._fail(op, net.OpError(err, why))

    def _fail(self, op: _Opening, e: net.OpError) -> None:
        self._unwatch(op.stream)
        try:
            op.stream.sendall(wire.encode_error(wire.ErrorReply(e.errno, str(e)), op.id))
        except OSError:
            pass
        op.stream.close()

    def _drop(self, op: _Opening) -> None:
        self._unwatch(op.stream)
        self._close_ahead(op)
        op.stream.close()

    def _take_ahead(self, op: _Opening) -> socket.socket | None:
        ahead, op.ahead = op.ahead, None
        if ahead is not None:
            self.ahead -= 1
        return ahead

    def _close_ahead(self, op: _Opening) -> None:
        if ahead := self._take_ahead(op):
            ahead.close()

    def _watch(self, sock: socket.socket, mask: int, op: _Opening) -> None:
        self.owners[sock.fileno()] = op
        self.ep.register(sock.fileno(), mask)

    def _unwatch(self, sock: socket.socket) -> None:
        if self.owners.pop(sock.fileno(), None) is not None:
            self.ep.unregister(sock.fileno())

    def _close(self, pair: _Pumped, linger: bytes) -> None:
        for i, sock in enumerate(pair.socks):
            self.owners.pop(pair.fds[i], None)
            try:
                if pair.watched[i]:
                    self.ep.unregister(pair.fds[i])
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            except OSError:
                pass
            sock.close()
        for fd in pair.pipes:
            os.close(fd)


class _Pumped:
    """Two sockets and a pipe per direction (way 0: socks[0] to socks[1]), for the Splicer."""

    __slots__ = ("socks", "fds", "name", "pipes", "queued", "ended", "masks", "watched")

    def __init__(self, a: socket.socket, b: socket.socket, name: str):
        self.socks, self.fds, self.name = (a, b), (a.fileno(), b.fileno()), name
        self.pipes = [*splice_pipe(os.O_NONBLOCK | os.O_CLOEXEC), *splice_pipe(os.O_NONBLOCK | os.O_CLOEXEC)]
        self.queued = [0, 0]  # bytes in each way's pipe
        self.ended = [False, False]  # each way's source ended and its pipe is empty
        self.masks = [select.EPOLLIN, select.EPOLLIN]  # what each socket is to be watched for
        self.watched = [0, 0]  # what each is watched for now (0: not registered)
        for sock in (a, b):
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)  # until a clean end

    def pump(self, way: int) -> None:
        """Move what can be moved one way; a blocked destination turns reading its source off
        and watching itself for writing on, until it takes the rest."""
        if self.ended[way]:
            return
        src, dst = self.socks[way], self.socks[1 - way]
        r, w = self.pipes[2 * way], self.pipes[2 * way + 1]
        if not self.queued[way]:
            try:
                n = os.splice(src.fileno(), w, PIPE_SIZE, flags=os.SPLICE_F_NONBLOCK)
            except BlockingIOError:
                return
            if n == 0:
                dst.shutdown(socket.SHUT_WR)
                self.ended[way] = True
                self.masks[way] &= ~select.EPOLLIN
                return
            self.queued[way] = n
        try:
            while self.queued[way]:
                self.queued[way] -= os.splice(r, dst.fileno(), self.queued[way],
                                              flags=os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE)
        except BlockingIOError:
            self.masks[way] &= ~select.EPOLLIN
            self.masks[1 - way] |= select.EPOLLOUT
            return
        self.masks[way] |= select.EPOLLIN
        self.masks[1 - way] &= ~select.EPOLLOUT


def _established(sock: socket.socket) -> bool:
    """Whether a TCP connect that said EINPROGRESS has completed already."""
    try:
        sock.getpeername()  # ENOTCONN until the handshake is done
        return True
    except OSError:
        return False


class _Opening:
    """A proven data connection before its relay: its first frame coming in, then (a STREAM)
    its connect in the target, for the Splicer."""

    __slots__ = ("stream", "who", "otherwise", "ahead", "head", "id", "req", "target", "host", "port", "timeout")

    def __init__(self, stream: socket.socket, who: str, otherwise):
        self.stream, self.who, self.otherwise = stream, who, otherwise
        self.ahead: socket.socket | None = None  # a socket made ahead for its connect
        self.head = bytearray()  # the first frame's bytes so far
        self.target: socket.socket | None = None  # while its connect is in flight

    def read_first(self) -> wire.Frame | None:
        """The first frame once all of it has come, and not a byte more (what follows is
        relayed data); None until then. EOFError: the peer closed without sending one."""
        while True:
            need = wire.FRAME.size if len(self.head) < wire.FRAME.size else wire.frame_length(self.head)
            if len(self.head) == need:
                return wire.decode_frame(bytes(self.head))
            try:
                data = self.stream.recv(need - len(self.head))
            except BlockingIOError:
                return None
            if not data:
                if self.head:
                    raise ConnectionError("the peer hung up inside a frame")
                raise EOFError
            self.head += data


SPLICERS = min(4, os.cpu_count() or 1)  # threads: the kernel's copies of several streams run side by side
_splicers: list[Splicer] = []
_turn = 0
_splicers_lock = threading.Lock()


def _splicer() -> Splicer:
    """The next Splicer in turn (each made on first use)."""
    global _turn
    with _splicers_lock:
        if len(_splicers) < SPLICERS:
            _splicers.append(Splicer())
        splicer = _splicers[_turn % len(_splicers)]
        _turn += 1
    return splicer


def splice_shared(a: socket.socket, b: socket.socket, name: str) -> None:
    """Relay a and b on one of the Splicer threads."""
    _splicer().add(a, b, name)


def first_frame(stream: socket.socket, who: str, otherwise) -> None:
    """A proven data connection: a Splicer waits for its first frame and serves a STREAM itself
    (connect in the target, answer, relay); any other frame goes to otherwise(frame), called on
    the Splicer's thread. Waiting costs no thread: a peer that proved the token may open any
    number."""
    _splicer().open(stream, who, otherwise)


# Data connections whose bytes another thread carries (a TLS tunnel's plaintext end, agent/tls.py):
# that thread can take the target socket itself, fn(stream, target), and the relay is not needed.
DIRECT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def relay_tcp(stream: socket.socket, target: socket.socket, name: str, preface: bytes = b"") -> None:
    """Relay a data connection and its TCP socket in the target until both ends are done;
    preface goes out on the data connection first (a reply frame that is not yet sent)."""
    for sock in (stream, target):
        sock.setblocking(True)
    if preface:
        stream.sendall(preface)
    if carry := DIRECT.pop(stream, None):
        carry(stream, target)
    else:
        splice_shared(stream, target, name)


AHEAD_MAX = 64  # openings on a Splicer that hold a socket made ahead for their connect (net.socket_ahead)


# Relayed UDP: the data connection carries datagram records (agent_wire.encode_datagram: the
# peer's address, then the bytes), each after a u32 length (encode_record). Here, in the
# target, a record becomes a sendto() to its peer and each datagram received one record; on
# the stand-in's side each record is one SOCK_SEQPACKET message to and from the program's
# socket, which the layer reads and writes (layer/net/datagrams.c).

def records_to_udp(stream: socket.socket, udp: socket.socket, pair: Pair) -> None:
    reader = agent_wire.RecordReader()
    last, address = b"", None  # the last peer, decoded once: most sockets talk to one or a few
    while data := stream.recv(BUF):
        for record in reader.feed(data):
            peer, datagram = agent_wire.decode_datagram(record)
            try:
                if not peer:
                    udp.send(datagram)
                    continue
                if peer != last:
                    last, address = peer, net.sockaddr_tuple(peer)
                udp.sendto(datagram, address)
            except (OSError, net.OpError) as e:  # lost, as a datagram the kernel could not send is
                last = b""
                log.debug("relay: a datagram for %s: %s", peer.hex(), e)


def udp_to_records(udp: socket.socket, stream: socket.socket, pair: Pair) -> None:
    while not pair.ended.is_set():
        try:
            datagram, peer = udp.recvfrom(0x10000)
        except TimeoutError:
            continue
        except ConnectionRefusedError:  # an ICMP error for an earlier datagram: UDP goes on
            continue
        record = agent_wire.encode_datagram(net.sockaddr_bytes(peer, udp.family), datagram)
        stream.sendall(agent_wire.encode_record(record))
    if not pair.failed:
        stream.shutdown(socket.SHUT_WR)


def records_to_messages(stream: socket.socket, seqpacket: socket.socket, pair: Pair) -> None:
    reader = agent_wire.RecordReader()
    while data := stream.recv(BUF):
        for record in reader.feed(data):
            seqpacket.send(record)
    if not pair.failed:
        seqpacket.shutdown(socket.SHUT_WR)


def messages_to_records(seqpacket: socket.socket, stream: socket.socket, pair: Pair) -> None:
    while record := seqpacket.recv(agent_wire.RECORD_MAX):  # b"": the program closed its socket
        stream.sendall(agent_wire.encode_record(record))
    if not pair.failed:
        stream.shutdown(socket.SHUT_WR)


def relay_udp(stream: socket.socket, udp: socket.socket, name: str) -> None:
    """In the target: a data connection's datagram records and its UDP socket."""
    stream.setblocking(True)
    udp.settimeout(UDP_POLL)
    Pair(stream, udp, name).start(records_to_udp, udp_to_records)


def relay_messages(stream: socket.socket, seqpacket: socket.socket, name: str) -> None:
    """On the stand-in's side: a data connection's datagram records and the program's socket
    (the other end of seqpacket)."""
    stream.setblocking(True)
    seqpacket.setblocking(True)
    Pair(stream, seqpacket, name).start(records_to_messages, messages_to_records)
