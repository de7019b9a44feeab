"""Traced syscalls (layer/link/protocol.h): SYSCALL events and their data items, and the trace ring
they are written into, its header and its records (the session's side: session/ring.py)."""
from __future__ import annotations

import struct
from typing import NamedTuple

from .layer_wire import MSG_HELLO, Hello, decode_hello
from .wire import FRAME_MAX, Frame, ProtocolError, encode_frame

MSG_SYSCALL = 16
FLAG_ENTRY = 1  # SYSCALL sent before the call (execve, exit): no result
DATA_STRING = 1
DATA_SOCKADDR = 2
SYSCALL_EVENT = struct.Struct("<iiq6qq")  # pid, tid, nr, args[6], ret
DATA = struct.Struct("<BBHI")  # arg, kind, length, full_length

# The trace ring (layer/link/protocol.h, struct tether_ring): a header of three cache lines (set by
# the session; written by producers; written by the session), then `size` bytes of records.
RING_MAGIC = 0x676E6972
RING_VERSION = 1
RING = struct.Struct("<IIQ48xQQI44xQIII44x")  # magic, version, size | head, published, waiters | tail,
RING_HEAD, RING_PUBLISHED, RING_WAITERS = 64, 72, 80  # space, sleeping, closed
RING_TAIL, RING_SPACE, RING_SLEEPING, RING_CLOSED = 128, 136, 140, 144
RECORD = struct.Struct("<IHH")  # length (header and payload), type, flags; the next starts 8-aligned
RECORD_MAX = FRAME_MAX


class Data(NamedTuple):
    arg: int
    kind: int
    value: bytes
    full_length: int

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.value)


class SyscallEvent(NamedTuple):
    pid: int
    tid: int
    nr: int
    args: tuple[int, ...]
    ret: int
    entry: bool = False  # sent before the call (execve, exit): ret is meaningless
    data: tuple[Data, ...] = ()

    def data_for(self, arg: int) -> Data | None:
        return next((d for d in self.data if d.arg == arg), None)


def encode_syscall(e: SyscallEvent) -> bytes:
    payload = bytearray(SYSCALL_EVENT.pack(e.pid, e.tid, e.nr, *e.args, e.ret))
    for d in e.data:
        payload += DATA.pack(d.arg, d.kind, len(d.value), d.full_length) + d.value
        payload += b"\0" * (-len(payload) % 8)
    return encode_frame(MSG_SYSCALL, bytes(payload), flags=FLAG_ENTRY if e.entry else 0)


def decode_syscall(f: Frame) -> SyscallEvent:
    if f.type != MSG_SYSCALL:
        raise ProtocolError("malformed SYSCALL event")
    return _syscall(f.payload, 0, len(f.payload), f.flags)


def _syscall(p: bytes, pos: int, end: int, flags: int) -> SyscallEvent:
    """The SYSCALL payload in p[pos:end] (no copy of it: this runs for every traced call)."""
    if end - pos < SYSCALL_EVENT.size:
        raise ProtocolError("malformed SYSCALL event")
    v = SYSCALL_EVENT.unpack_from(p, pos)
    pos += SYSCALL_EVENT.size
    data = []
    while pos < end:
        if pos + DATA.size > end:
            raise ProtocolError("data item header runs past the frame")
        arg, kind, length, full = DATA.unpack_from(p, pos)
        pos += DATA.size
        if arg > 5 or kind not in (DATA_STRING, DATA_SOCKADDR) or pos + length > end or full < length:
            raise ProtocolError(f"bad data item (arg {arg}, kind {kind}, {length} bytes)")
        data.append(Data(arg, kind, p[pos:pos + length], full))
        pos += length + (-(DATA.size + length) % 8)
    # tuple.__new__ directly: NamedTuple's own __new__ is Python code, a third of this function
    return _tuple_new(SyscallEvent, (v[0], v[1], v[2], v[3:9], v[9], bool(flags & FLAG_ENTRY), tuple(data)))


_tuple_new = tuple.__new__


def encode_record(type: int, payload: bytes, flags: int = 0) -> bytes:
    """A record as the trace ring holds them, padded so that the next one starts 8-aligned."""
    length = RECORD.size + len(payload)
    if length > RECORD_MAX:
        raise ProtocolError(f"record of {length} bytes exceeds {RECORD_MAX}")
    return RECORD.pack(length, type, flags) + payload + b"\0" * (-length % 8)


def _record_header(buf: bytes, pos: int) -> tuple[int, int, int, int]:
    """The record at pos: its length, type and flags, and where it ends (padding included);
    ProtocolError if it does not fit buf."""
    if pos + RECORD.size > len(buf):
        raise ProtocolError(f"record header at {pos} runs past the {len(buf)} bytes")
    length, type, flags = RECORD.unpack_from(buf, pos)
    end = pos + length + (-length % 8)
    if not RECORD.size < length <= RECORD_MAX or end > len(buf):
        raise ProtocolError(f"record at {pos} says {length} bytes ({len(buf) - pos} there)")
    return length, type, flags, end


def record_span(buf: bytes, pos: int) -> int:
    """Where the record at pos ends (padding included); ProtocolError if it does not fit buf."""
    return _record_header(buf, pos)[3]


def decode_record(buf: bytes, pos: int) -> tuple[SyscallEvent | Hello, int]:
    """The record at pos, a SYSCALL event or a HELLO the session queued among them, and where
    the next one starts. ProtocolError if it is malformed (record_span then says whether the
    records after it can still be found)."""
    length, type, flags, end = _record_header(buf, pos)
    if type == MSG_SYSCALL:
        return _syscall(buf, pos + RECORD.size, pos + length, flags), end
    if type == MSG_HELLO:
        return decode_hello(Frame(type, flags, 0, bytes(buf[pos + RECORD.size:pos + length]))), end
    raise ProtocolError(f"record of type {type} in a trace")
