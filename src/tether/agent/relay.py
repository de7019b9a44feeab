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

For UDP the stream carries datagram records (agent_wire.encode_datagram, each after its
length), each direction on a thread of its own (Pair).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import queue
import select
import socket
import struct
import threading
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


IDLE_MAX = 64  # relay threads kept for the next streams: starting one costs more than a relayed request
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
    while its direction flows, for writing only while the other direction waits on it."""

    def __init__(self):
        self.ep = select.epoll()
        self.pairs: dict[int, _Pumped] = {}  # by socket fd: the pair it is in
        self.added: queue.SimpleQueue = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ep.register(self.wake_r, select.EPOLLIN)
        threading.Thread(target=self._run, daemon=True, name="splicer").start()

    def add(self, a: socket.socket, b: socket.socket, name: str) -> None:
        self.added.put(_Pumped(a, b, name))
        os.write(self.wake_w, b"x")

    def _run(self) -> None:
        while True:
            for fd, mask in self.ep.poll():
                if fd == self.wake_r:
                    os.read(self.wake_r, 4096)
                    while not self.added.empty():
                        pair = self.added.get()
                        for i, sock in enumerate(pair.socks):
                            self.pairs[sock.fileno()] = pair
                            self.ep.register(sock.fileno(), pair.masks[i])
                        self._step(pair, (0, 1))
                elif pair := self.pairs.get(fd):
                    side = 0 if fd == pair.fds[0] else 1
                    if mask & select.EPOLLERR:  # reset by its peer: both are over
                        err = pair.socks[side].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        log.debug("relay %s: %s", pair.name, os.strerror(err))
                        self._close(pair, LINGER_RESET)
                        continue
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

    def _close(self, pair: _Pumped, linger: bytes) -> None:
        for i, sock in enumerate(pair.socks):
            self.pairs.pop(pair.fds[i], None)
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
        self.watched = list(self.masks)  # what it is watched for now (0: not registered)
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


SPLICERS = min(4, os.cpu_count() or 1)  # threads: the kernel's copies of several streams run side by side
_splicers: list[Splicer] = []
_next_splicer = 0
_splicers_lock = threading.Lock()


def splice_shared(a: socket.socket, b: socket.socket, name: str) -> None:
    """Relay a and b on one of the Splicer threads (each made on first use), in turn."""
    global _next_splicer
    with _splicers_lock:
        if len(_splicers) < SPLICERS:
            _splicers.append(Splicer())
        splicer = _splicers[_next_splicer % len(_splicers)]
        _next_splicer += 1
    splicer.add(a, b, name)


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


WAITING_MAX = 256  # proven connections a relay thread each waits on; past that the event loop reads them
AHEAD_MAX = 64  # of those, the ones that hold a socket made ahead for their connect (net.socket_ahead)
_waiting = 0


def first_frame(stream: socket.socket, who: str, otherwise) -> bool:
    """A proven data connection: a relay thread waits for its first frame and serves a STREAM
    itself (connect in the target, answer, relay); any other frame goes to otherwise(frame).
    False, and nothing done, while WAITING_MAX threads wait so already (a peer that proved the
    token can open any number): the caller reads the frame itself (serve_stream)."""
    global _waiting
    with _idle_lock:
        if _waiting >= WAITING_MAX:
            return False
        _waiting += 1
    _run_on_thread(_first_frame, stream, who, otherwise)
    return True


def _first_frame(stream: socket.socket, who: str, otherwise) -> None:
    global _waiting
    # Its connect's socket, made now rather than between the STREAM and its answer; while
    # few wait (each holds a descriptor more).
    try:
        ahead = net.socket_ahead() if _waiting <= AHEAD_MAX else None
    except OSError:  # out of descriptors: the connect makes its own, and answers why it cannot
        ahead = None
    stream.setblocking(True)
    try:
        first = _read_frame(stream)
        if first is None:
            log.debug("%s closed a connection it never used (a spare)", who)
            stream.close()
    except (OSError, wire.ProtocolError) as e:
        log.warning("dropped %s: %s", who, e)
        stream.close()
        first = None
    finally:
        with _idle_lock:
            _waiting -= 1
    if first is None or first.type != agent_wire.MSG_STREAM:
        if ahead is not None:
            ahead.close()
        if first is not None:
            otherwise(first)
        return
    _serve_stream(stream, first, who, ahead)


def serve_stream(stream: socket.socket, first: wire.Frame, who: str) -> None:
    """A STREAM read elsewhere (the event loop): served on a relay thread."""
    stream.setblocking(True)
    _run_on_thread(_serve_stream, stream, first, who)


def _serve_stream(stream: socket.socket, first: wire.Frame, who: str, ahead: socket.socket | None = None) -> None:
    try:
        req = agent_wire.decode_stream(first)
    except wire.ProtocolError as e:
        if ahead is not None:
            ahead.close()
        _answer_and_close(stream, wire.encode_error(wire.ErrorReply(errno.EINVAL, str(e)), first.id))
        return
    _connect_and_relay(stream, req, first.id, who, ahead)


def _answer_and_close(stream: socket.socket, frame: bytes) -> None:
    try:
        stream.sendall(frame)
    except OSError:
        pass
    stream.close()


def _read_frame(sock: socket.socket) -> wire.Frame | None:
    """The next frame on a blocking stream, exactly its bytes (what follows is relayed data);
    None if the peer closed before sending one."""
    head = sock.recv(wire.FRAME.size, socket.MSG_WAITALL)
    if not head:
        return None
    if len(head) < wire.FRAME.size:
        raise ConnectionError("the peer hung up inside a frame")
    length = wire.frame_length(head)
    body = sock.recv(length - wire.FRAME.size, socket.MSG_WAITALL) if length > wire.FRAME.size else b""
    if len(body) < length - wire.FRAME.size:
        raise ConnectionError("the peer hung up inside a frame")
    return wire.decode_frame(head + body)


def _connect_and_relay(stream: socket.socket, req: agent_wire.Connect, id: int, who: str,
                       ahead: socket.socket | None) -> None:
    """Between the STREAM and its answer only what the answer needs: the program waits."""
    try:
        if req.flags & agent_wire.FLAG_BIND:
            if ahead is not None:
                ahead.close()
            target = net.bind_udp(req)
        else:
            target = net.connect_blocking(req, stream, ahead)
    except net.OpError as e:
        _answer_and_close(stream, wire.encode_error(wire.ErrorReply(e.errno, str(e)), id))
        return
    try:
        local = net.sockaddr_bytes(target.getsockname(), target.family)
        if req.flags & agent_wire.FLAG_BIND:
            peer = b""
        elif target.family == socket.AF_INET:  # connected to just what was asked
            peer = req.sockaddr[:8] + bytes(8)
        else:
            peer = net.sockaddr_bytes(target.getpeername(), target.family)
        stream.sendall(agent_wire.encode_stream_reply(agent_wire.Relayed(local, peer), id))
    except OSError as e:
        log.debug("relay %s -> %s: %s", who, req.sockaddr.hex(), e)
        target.close()
        stream.close()
        return
    name = f"{who} -> {req.sockaddr.hex()}"
    if req.socktype == socket.SOCK_DGRAM:
        relay_udp(stream, target, name)
    else:
        relay_tcp(stream, target, name)


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
