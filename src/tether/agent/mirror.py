"""Mirror: the program gets a copy of every connection to a port of the target, and the
target's traffic is not touched.

A packet socket in the target sees what clients send to the port: a classic BPF filter in the
kernel keeps only their packets that carry bytes or open or close a connection (`port_filter`),
and the kernel copies those into a ring of blocks shared with this process (TPACKET_V3).
`Reassembly` (sans-IO) puts each connection's bytes back in order, and `Copies` connect to the
program's listener and write them, throwing its replies away. The app's connections never pass
through here: its clients see it as if tether were not there.

The copies run on a thread of their own at SCHED_IDLE, and while the machine's CPUs are busy
(Pressure) they are held: the ring is left unread until it fills (RING_READ_SHARE) and nothing
is written to the program, which, on the target's machine, would serve its copies with the
app's CPU time. They go out once the CPUs are calm again: under a load that saturates the
machine the program gets every request after the load, not during it. A copy the program does
not take (COPY_MAX bytes waiting) is cut; one whose packets the ring lost ends at the gap; each
kind is counted and told when the mirror ends.
"""
from __future__ import annotations

import errno
import logging
import mmap
import os
import selectors
import socket
import struct
import threading
import time
from typing import NamedTuple

from .relay import LINGER_RESET

log = logging.getLogger("tether.agent")

ETH_P_ALL, ETH_P_IP, ETH_P_IPV6 = 0x0003, 0x0800, 0x86DD
SOL_PACKET, PACKET_RX_RING, PACKET_STATISTICS, PACKET_VERSION, TPACKET_V3 = 263, 5, 6, 10, 2
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
# The ring: 64 MiB in blocks of 128 KiB (a block must hold the largest segment offload on
# loopback, 64 KiB), some 250,000 packets of a few hundred bytes. A block not yet full is handed
# over after BLOCK_TIMEOUT_MS: the latency a copy adds at low rates, and at any rate the ring
# holds at least BLOCKS of that time (16 s; 6 s at 40,000 requests a second).
BLOCK_SIZE, BLOCKS, BLOCK_TIMEOUT_MS = 1 << 17, 512, 32
SNAP = 1 << 18  # more than the largest segment offload on loopback (64 KiB)
COPY_MAX = 16 << 20  # bytes a copy may have waiting for the program before it is cut
OUT_OF_ORDER_MAX = 1 << 20  # bytes a connection may hold ahead of a gap before its copy is cut
IDLE_S = 600.0  # a connection that sent nothing for this long is forgotten (its end was lost)
GRACE_S = 10.0  # a copy is left open this long after the client's end, for the program to finish
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10


# The filter: classic BPF, offsets from the network header (a SOCK_DGRAM packet socket), the
# kernel's ancillary loads for the packet's direction and ethertype.

LD_W_ABS, LD_H_ABS, LD_B_ABS, LD_H_IND, LD_B_IND, LDX_B_MSH = 0x20, 0x28, 0x30, 0x48, 0x50, 0xB1
JEQ_K, JGT_X, JSET_K, RET_K, RSH_K, LSH_K, ADD_X, TAX = 0x15, 0x2D, 0x45, 0x06, 0x74, 0x64, 0x0C, 0x07
SKF_AD_PROTOCOL, SKF_AD_PKTTYPE = 0xFFFFF000, 0xFFFFF004  # SKF_AD_OFF (-0x1000) + 0, + 4


def _assemble(program: list) -> bytes:
    """(code, k) and (code, k, if_true, if_false) with labels (None: the next instruction), and
    label strings in between, to struct sock_filter bytes."""
    at: dict[str, int] = {}
    insns = []
    for item in program:
        if isinstance(item, str):
            at[item] = len(insns)
        else:
            insns.append(item)
    out = []
    for i, (code, k, *jumps) in enumerate(insns):
        jt, jf = (at[j] - i - 1 if j else 0 for j in (jumps or (None, None)))
        out.append(struct.pack("HBBI", code, jt, jf, k))
    return b"".join(out)


def port_filter(port: int) -> bytes:
    """TCP packets to `port` (IPv4 but for fragments after the first, IPv6 without extension
    headers), not sent by this host, that carry bytes or SYN, FIN or RST; and RSTs back from
    `port` (a refused connection)."""
    flags = TCP_SYN | TCP_FIN | TCP_RST
    return _assemble([
        (LD_W_ABS, SKF_AD_PKTTYPE), (JEQ_K, PACKET_OUTGOING, "drop", None),
        (LD_W_ABS, SKF_AD_PROTOCOL), (JEQ_K, ETH_P_IP, "v4", None), (JEQ_K, ETH_P_IPV6, "v6", "drop"),
        "v4",
        (LD_B_ABS, 9), (JEQ_K, socket.IPPROTO_TCP, None, "drop"),
        (LD_H_ABS, 6), (JSET_K, 0x1FFF, "drop", None),
        (LDX_B_MSH, 0),                                       # X: the IPv4 header's length
        (LD_H_IND, 2), (JEQ_K, port, None, "v4 from"),
        (LD_B_IND, 13), (JSET_K, flags, "accept", None),
        (LD_B_IND, 12), (RSH_K, 4), (LSH_K, 2), (ADD_X, 0),   # A: both headers' length
        (TAX, 0), (LD_H_ABS, 2), (JGT_X, 0, "accept", "drop"),  # the total length beyond them
        "v4 from",
        (LD_H_IND, 0), (JEQ_K, port, None, "drop"),
        (LD_B_IND, 13), (JSET_K, TCP_RST, "accept", "drop"),
        "v6",
        (LD_B_ABS, 6), (JEQ_K, socket.IPPROTO_TCP, None, "drop"),
        (LD_H_ABS, 42), (JEQ_K, port, None, "v6 from"),
        (LD_B_ABS, 53), (JSET_K, flags, "accept", None),
        (LD_B_ABS, 52), (RSH_K, 4), (LSH_K, 2),
        (TAX, 0), (LD_H_ABS, 4), (JGT_X, 0, "accept", "drop"),  # the payload length beyond the TCP header
        "v6 from",
        (LD_H_ABS, 40), (JEQ_K, port, None, "drop"),
        (LD_B_ABS, 53), (JSET_K, TCP_RST, "accept", "drop"),
        "accept", (RET_K, SNAP),
        "drop", (RET_K, 0),
    ])


# Reassembly: sans-IO. Packets in (the network header on), events out.

class Open(NamedTuple):
    key: tuple
    client: tuple  # (host, port)
    server: tuple


class Data(NamedTuple):
    key: tuple
    data: bytes


class End(NamedTuple):
    key: tuple
    lost: bool  # bytes the capture lost: the copy stops at the gap


class Segment(NamedTuple):
    family: int
    src: bytes
    sport: int
    dst: bytes
    dport: int
    seq: int
    flags: int
    payload: bytes


def parse(packet) -> Segment | None:
    """An IPv4 or IPv6 packet's TCP segment, or None (not one, cut short, a fragment)."""
    n = len(packet)
    if n < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        total, frag = struct.unpack_from(">H2xH", packet, 2)
        if ihl < 20 or packet[9] != socket.IPPROTO_TCP or frag & 0x3FFF:  # MF or an offset: a fragment
            return None
        family, src, dst, tcp, end = socket.AF_INET, bytes(packet[12:16]), bytes(packet[16:20]), ihl, total or n
    elif version == 6 and n >= 40:
        if packet[6] != socket.IPPROTO_TCP:
            return None
        family, src, dst, tcp = socket.AF_INET6, bytes(packet[8:24]), bytes(packet[24:40]), 40
        end = 40 + (struct.unpack_from(">H", packet, 4)[0] or n - 40)
    else:
        return None
    if end > n or tcp + 20 > end:
        return None
    sport, dport, seq, offset, flags = struct.unpack_from(">HHI4xBB", packet, tcp)
    start = tcp + (offset >> 4) * 4
    if start > end or offset >> 4 < 5:
        return None
    return Segment(family, src, sport, dst, dport, seq, flags, bytes(packet[start:end]))


def _after(a: int, b: int) -> int:
    """How far sequence number a is after b (negative: before), modulo 2**32."""
    return (a - b + (1 << 31)) % (1 << 32) - (1 << 31)


class _Stream:
    __slots__ = ("family", "next", "opened", "fin", "ahead", "ahead_bytes", "gap_since", "seen")

    def __init__(self, family: int, isn: int, now: float):
        self.family, self.next, self.opened, self.fin = family, (isn + 1) % (1 << 32), False, None
        self.ahead: dict[int, bytes] = {}  # bytes past a gap, by sequence number
        self.ahead_bytes, self.gap_since, self.seen = 0, 0.0, now


class Reassembly:
    """The bytes clients send to `port`, in order, per connection, from packets as a capture
    sees them (any order, repeated, overlapping). A connection is followed from its SYN; one
    whose SYN came before the capture began is left alone."""

    def __init__(self, port: int):
        self.port = port
        self.streams: dict[tuple, _Stream] = {}

    def feed(self, packet, now: float) -> list:
        seg = parse(packet)
        if seg is None:
            return []
        if seg.dport != self.port:  # a reset back from the port: the connection is over
            key = (seg.dst, seg.dport, seg.src, seg.sport)
            return self._end(key) if seg.sport == self.port and seg.flags & TCP_RST else []
        key = (seg.src, seg.sport, seg.dst, seg.dport)
        if seg.flags & TCP_RST:
            return self._end(key)
        stream = self.streams.get(key)
        if seg.flags & TCP_SYN:
            if seg.flags & TCP_ACK or (stream and stream.next == (seg.seq + 1) % (1 << 32)):
                return []  # not a client's SYN, or one sent again
            events = self._end(key) if stream else []  # the address pair used again: the last is over
            self.streams[key] = _Stream(seg.family, seg.seq, now)
            return events
        if stream is None:
            return []
        stream.seen = now
        events: list = []
        if seg.payload:
            self._take(key, stream, seg.seq, seg.payload, events)
        if seg.flags & TCP_FIN:
            stream.fin = (seg.seq + len(seg.payload)) % (1 << 32)
        if stream.fin is not None and stream.fin == stream.next:
            events += self._end(key)
        elif stream.ahead_bytes > OUT_OF_ORDER_MAX:
            events += self._end(key)
        return events

    def _take(self, key: tuple, stream: _Stream, seq: int, payload: bytes, events: list) -> None:
        late = _after(stream.next, seq)
        if late < 0:  # past a gap: kept for when the gap is filled
            if seq not in stream.ahead or len(stream.ahead[seq]) < len(payload):
                stream.ahead_bytes += len(payload) - len(stream.ahead.get(seq, b""))
                stream.ahead[seq] = payload
                stream.gap_since = stream.gap_since or stream.seen
            return
        if late >= len(payload):
            return  # sent again: had already
        if not stream.opened:
            stream.opened = True
            events.append(Open(key, _address(stream.family, key[0], key[1]), _address(stream.family, key[2], key[3])))
        events.append(Data(key, payload[late:]))
        stream.next = (stream.next + len(payload) - late) % (1 << 32)
        while stream.ahead:  # what the gap held back
            seq = next((s for s in stream.ahead if _after(stream.next, s) >= 0), None)
            if seq is None:
                return
            held = stream.ahead.pop(seq)
            stream.ahead_bytes -= len(held)
            stream.gap_since = 0.0 if not stream.ahead else stream.gap_since
            self._take(key, stream, seq, held, events)

    def _end(self, key: tuple) -> list:
        """The connection is over (a FIN, a reset, too long a gap): its copy ends with the bytes
        in order so far."""
        stream = self.streams.pop(key, None)
        return [End(key, bool(stream.ahead))] if stream and stream.opened else []

    def expire(self, now: float, gap_s: float) -> list:
        """Connections idle for IDLE_S (their end never came) and those held at a gap for
        gap_s (a packet the capture lost: the client will not send it again)."""
        events: list = []
        for key, stream in list(self.streams.items()):
            if now - stream.seen > IDLE_S or (stream.ahead and now - stream.gap_since > gap_s):
                events += self._end(key)
        return events


def _address(family: int, raw: bytes, port: int) -> tuple:
    return socket.inet_ntop(family, raw), port


# The I/O: the ring, the copies, their thread.

TP_STATUS_USER = 1
GAP_S = 3.0  # a gap the client has not filled in this long: the capture lost that packet
# The CPUs are busy when in half of the last 20 ms some task waited for one (this 2-CPU machine:
# 66-82% under a load that saturates it, 18% at a tenth of that rate); copies held while they
# are go out once they have not been for CALM_S.
PRESSURE_S, BUSY_SHARE, CALM_S = 0.02, 0.5, 0.2
HELD_MAX = 256 << 20  # bytes of copies held while the CPUs are busy, at most
RING_READ_SHARE = 0.75  # while copies are held, the ring is read only once it is this full


class Ring:
    """A packet socket in this network namespace with `port_filter` and a TPACKET_V3 ring."""

    def __init__(self, port: int):
        import ctypes

        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        try:
            code = ctypes.create_string_buffer(port_filter(port))
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER,
                                 struct.pack("HL", len(code.raw) // 8, ctypes.addressof(code)))
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            self.sock.setsockopt(SOL_PACKET, PACKET_RX_RING, struct.pack(
                "7I", BLOCK_SIZE, BLOCKS, BLOCK_SIZE, BLOCKS, BLOCK_TIMEOUT_MS, 0, 0))  # V3: a frame is a block
            self.map = mmap.mmap(self.sock.fileno(), BLOCK_SIZE * BLOCKS)
        except OSError:
            self.sock.close()
            raise
        self.block = 0  # the next block the kernel hands over

    def packets(self):
        """Each packet of the blocks handed over, from the network header, as a memoryview valid
        until the next is asked for; the blocks go back to the kernel as they are read."""
        view = memoryview(self.map)
        try:
            for _ in range(BLOCKS):
                base = self.block * BLOCK_SIZE
                status, count, first = struct.unpack_from("III", self.map, base + 8)
                if not status & TP_STATUS_USER:
                    return
                at = base + first
                for _ in range(count):
                    next_offset, snaplen, net = struct.unpack_from("I8xI8xxxH", self.map, at)
                    yield view[at + net:at + net + snaplen]
                    at += next_offset
                struct.pack_into("I", self.map, base + 8, 0)  # TP_STATUS_KERNEL: the block is the kernel's again
                self.block = (self.block + 1) % BLOCKS
        finally:
            view.release()

    def filled(self, share: float) -> bool:
        """Whether at least that share of the ring waits to be read."""
        ahead = (self.block + int(BLOCKS * share)) % BLOCKS
        return bool(struct.unpack_from("I", self.map, ahead * BLOCK_SIZE + 8)[0] & TP_STATUS_USER)

    def drops(self) -> int:
        """Packets the kernel dropped since last asked (the ring was full)."""
        return struct.unpack("3I", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))[1]

    def close(self) -> None:
        self.map.close()
        self.sock.close()


class Pressure:
    """Whether tasks have been waiting for a CPU (Linux's pressure stall information): the
    share of the last PRESSURE_S in which at least one did. Without PSI, never busy."""

    def __init__(self):
        try:
            self.fd = os.open("/proc/pressure/cpu", os.O_RDONLY | os.O_CLOEXEC)
            self.total, self.at = self._read(), time.monotonic()
        except (OSError, ValueError, IndexError):
            self.fd = -1
        self.busy = False

    def _read(self) -> int:
        """Microseconds in which some task waited, since boot."""
        return int(os.pread(self.fd, 256, 0).split(b"total=", 1)[1].split(b"\n", 1)[0])

    def check(self, now: float) -> bool:
        if self.fd >= 0 and now - self.at >= PRESSURE_S:
            total = self._read()
            self.busy = (total - self.total) / 1e6 > BUSY_SHARE * (now - self.at)
            self.total, self.at = total, now
        return self.busy

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)


class _Copy:
    """One connection's copy: its socket to the program (None: not opened yet) and the bytes the
    program has not taken yet."""

    __slots__ = ("sock", "out", "connected", "ending", "ended_at", "events")

    def __init__(self):
        self.sock: socket.socket | None = None
        self.out, self.connected, self.ending, self.ended_at, self.events = bytearray(), False, False, 0.0, 0


class Copies:
    """The thread that reads the ring and writes each connection's copy to the program.

    While the machine's CPUs are contended (Pressure), copies are held here, not even opened:
    the program, on the same CPUs as the target's app when the target is on this machine, would
    take their time from the app. They go out once the contention ends, or once HELD_MAX bytes
    are held (nothing is dropped to spare the app; a lasting overload delays the copies instead)."""

    def __init__(self, port: int, program_family: int, program: tuple):
        self.port, self.family, self.program = port, program_family, program
        self.ring = Ring(port)
        self.reassembly = Reassembly(port)
        self.pressure = Pressure()
        self.copies: dict[tuple, _Copy] = {}
        self.held = 0  # bytes in copies' buffers
        self.holding = False
        self.made = self.cut_slow = self.cut_lost = self.refused = 0
        self.held_most = self.held_since = self.calm_since = 0.0  # seconds: the longest hold; monotonic times
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.ring.sock, selectors.EVENT_READ, None)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.thread = threading.Thread(target=self._run, name=f"mirror-{port}", daemon=True)
        self.thread.start()

    def stop(self) -> str:
        """End the copies (the program's ends see them close) and say what was lost."""
        os.write(self.wake_w, b"x")
        self.thread.join(5)
        dropped = self.ring.drops()
        undelivered = sum(len(copy.out) for copy in self.copies.values())
        for copy in self.copies.values():
            if copy.sock:
                copy.sock.close()
        self.sel.close()
        self.ring.close()
        self.pressure.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        said = f"{self.made} connections copied"
        for n, why in ((self.cut_slow, f"cut with more than {COPY_MAX >> 20} MiB waiting for the program"),
                       (self.cut_lost, "cut short at packets the capture lost (the machine was too busy)"),
                       (self.refused, "not copied: the program refused them"), (dropped, "packets lost by the capture"),
                       (undelivered, "bytes not delivered: the mirror ended first")):
            said += f", {n} {why}" if n else ""
        if self.held_most:
            said += f"; copies held up to {self.held_most:.1f} s while the CPUs were busy"
        return said

    def _run(self) -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: this thread
        except OSError as e:
            log.debug("incoming: the mirror's thread keeps its priority: %s", e)
        expire_at = time.monotonic() + 1
        while True:
            if self.holding and self.ring.filled(RING_READ_SHARE):
                self._read_ring()  # into the copies' buffers, held there
            timeout = PRESSURE_S if self.holding else max(0.0, expire_at - time.monotonic())
            ready = self.sel.select(timeout)
            now = time.monotonic()
            self._hold(now)  # first: what woke this thread may be the first packet of a busy spell
            for key, mask in ready:
                if key.fileobj is self.ring.sock:
                    self._read_ring()
                elif key.fileobj == self.wake_r:
                    return
                elif key.data in self.copies:  # (not dropped by an event before it)
                    self._ready(key.data, mask)
            if now >= expire_at:
                expire_at = now + 1
                self._events(self.reassembly.expire(now, GAP_S))
                for key, copy in list(self.copies.items()):
                    if copy.ended_at and not copy.out and now - copy.ended_at > GRACE_S:
                        self._drop(key)

    def _hold(self, now: float) -> None:
        """Hold the copies while the CPUs are busy; let them go once they have been calm for CALM_S."""
        if self.pressure.check(now):
            self.calm_since = 0.0
        elif not self.calm_since:
            self.calm_since = now
        holding = self.held < HELD_MAX and (not self.calm_since or self.holding and now - self.calm_since < CALM_S)
        if holding == self.holding:
            return
        self.holding = holding
        if holding:  # the ring is left unread too: reading it is work
            self.held_since = now
            self.sel.unregister(self.ring.sock)
            for key, copy in self.copies.items():
                if copy.connected:
                    self._watch(key, copy, selectors.EVENT_READ)
            log.debug("incoming: mirror of port %d: copies held, the CPUs are busy", self.port)
        else:
            self.held_most = max(self.held_most, now - self.held_since)
            self.sel.register(self.ring.sock, selectors.EVENT_READ, None)
            self._read_ring()
            for key, copy in list(self.copies.items()):
                if key in self.copies:
                    self._release(key, copy)
            log.debug("incoming: mirror of port %d: copies let go after %.2f s", self.port, now - self.held_since)

    def _read_ring(self) -> None:
        now = time.monotonic()
        feed = self.reassembly.feed
        for packet in self.ring.packets():
            self._events(feed(packet, now))

    def _events(self, events: list) -> None:
        for event in events:
            if type(event) is Data:
                copy = self.copies.get(event.key)
                if copy is None:
                    continue
                copy.out += event.data
                self.held += len(event.data)
                if len(copy.out) > COPY_MAX:
                    self.cut_slow += 1
                    self._drop(event.key, reset=True)
                elif copy.connected:
                    self._send(event.key, copy)
            elif type(event) is Open:
                copy = self.copies[event.key] = _Copy()
                self.made += 1
                if not self.holding:
                    self._release(event.key, copy)
            else:
                copy = self.copies.get(event.key)
                if copy is None:
                    continue
                self.cut_lost += event.lost
                copy.ending = True  # a reset too: what the app got, the program gets
                if copy.connected:
                    self._send(event.key, copy)

    def _release(self, key: tuple, copy: _Copy) -> None:
        """A copy held back goes out: its connection to the program, then its bytes."""
        if copy.sock is None:
            sock = copy.sock = socket.socket(self.family, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if sock.connect_ex(self.program) not in (0, errno.EINPROGRESS):
                self.refused += 1
                self._drop(key)
                return
            self._watch(key, copy, selectors.EVENT_WRITE)
        elif copy.connected:
            self._send(key, copy)

    def _watch(self, key: tuple, copy: _Copy, events: int) -> None:
        if events != copy.events:
            if copy.events:
                self.sel.modify(copy.sock, events, key)
            else:
                self.sel.register(copy.sock, events, key)
            copy.events = events

    def _ready(self, key: tuple, mask: int) -> None:
        copy = self.copies[key]
        if not copy.connected:
            if copy.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.refused += 1
                self._drop(key)
                return
            copy.connected = True
            self._send(key, copy)
            return
        if mask & selectors.EVENT_READ:  # the program's replies go nowhere: MSG_TRUNC drops them in the kernel
            try:
                n = copy.sock.recv_into(_DISCARD, len(_DISCARD), socket.MSG_TRUNC)
            except BlockingIOError:
                n = -1
            except OSError:
                n = 0
            if n == 0:  # the program closed it
                self._drop(key)
                return
        if mask & selectors.EVENT_WRITE:
            self._send(key, copy)

    def _send(self, key: tuple, copy: _Copy) -> None:
        """What the program can take of a copy's bytes (nothing while copies are held)."""
        if not self.holding:
            try:
                while copy.out:
                    n = copy.sock.send(copy.out)
                    del copy.out[:n]
                    self.held -= n
            except BlockingIOError:
                pass
            except OSError:
                self._drop(key)
                return
            if not copy.out and copy.ending and not copy.ended_at:
                copy.ended_at = time.monotonic()
                try:
                    copy.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        self._watch(key, copy, selectors.EVENT_READ | (selectors.EVENT_WRITE if copy.out and not self.holding else 0))

    def _drop(self, key: tuple, reset: bool = False) -> None:
        copy = self.copies.pop(key)
        self.held -= len(copy.out)
        if copy.sock is None:
            return
        if copy.events:
            self.sel.unregister(copy.sock)
        if reset:
            copy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        copy.sock.close()


_DISCARD = bytearray(1 << 16)  # never read: MSG_TRUNC leaves it as it is
