"""The wire between the layer, the session and the agent: frames, sans-IO.

Mirrors layer/link/protocol.h (tests/test_protocol.py proves both agree), one module per family of
messages: this one has the frame and what every family shares (ERROR, u16-prefixed fields,
replies over several frames); layer_wire.py what a hooked process and the session say,
agent_wire.py what an agent is asked to do in the target, trace_wire.py the traced syscalls and
the trace ring, auth.py a network agent's token handshake. Pure encode/decode and stream
parsers; the callers do the I/O. Parsers never trust a length: every declared length is
checked against what arrived and against FRAME_MAX, and a bad frame raises ProtocolError with
a one-line reason.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

PROTOCOL_VERSION = 3
FRAME_MAX = 4096
MSG_ERROR = 15  # the reply to any request that failed: errno and a message
FLAG_MORE = 2  # more frames of the same reply follow
FRAME = struct.Struct("<IHHQ")  # length, type, flags, id
ERROR = struct.Struct("<i")  # errno, then a u16-prefixed message
U16 = struct.Struct("<H")


class ProtocolError(Exception):
    """A malformed frame; the peer that sent it is closed."""


class Frame(NamedTuple):
    type: int
    flags: int
    id: int
    payload: bytes


class ErrorReply(NamedTuple):
    """A request failed; errno says how, as the program would see it."""

    errno: int
    message: str


def encode_frame(type: int, payload: bytes, flags: int = 0, id: int = 0) -> bytes:
    length = FRAME.size + len(payload)
    if length > FRAME_MAX:
        raise ProtocolError(f"frame of {length} bytes exceeds {FRAME_MAX}")
    return FRAME.pack(length, type, flags, id) + payload


def decode_frame(buf: bytes) -> Frame:
    """One whole frame, as one SOCK_SEQPACKET message carries it."""
    if len(buf) < FRAME.size:
        raise ProtocolError(f"frame of {len(buf)} bytes is shorter than its header")
    length, type, flags, id = FRAME.unpack_from(buf)
    if length != len(buf):
        raise ProtocolError(f"frame says {length} bytes but {len(buf)} arrived")
    if length > FRAME_MAX:
        raise ProtocolError(f"frame of {length} bytes exceeds {FRAME_MAX}")
    return Frame(type, flags, id, bytes(buf[FRAME.size:]))


def frame_length(head) -> int:
    """The length a frame's head gives (its first bytes), checked against FRAME.size..FRAME_MAX."""
    (length,) = struct.unpack_from("<I", head)
    if not FRAME.size <= length <= FRAME_MAX:
        raise ProtocolError(f"frame length {length} outside {FRAME.size}..{FRAME_MAX}")
    return length


class FrameReader:
    """Splits a byte stream into frames (for stream transports; SEQPACKET needs no splitting)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= FRAME.size:
            length = frame_length(self._buf)
            if len(self._buf) < length:
                break
            frames.append(decode_frame(bytes(self._buf[:length])))
            del self._buf[:length]
        return frames


def unpack_bytes(payload: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """The u16-prefixed bytes at pos, and the position after them."""
    if pos + U16.size > len(payload):
        raise ProtocolError(f"{what} length missing")
    (n,) = U16.unpack_from(payload, pos)
    pos += U16.size
    if pos + n > len(payload):
        raise ProtocolError(f"{what} of {n} bytes runs past the frame")
    return payload[pos:pos + n], pos + n


def unpack_string(payload: bytes, pos: int, what: str) -> tuple[str, int]:
    value, pos = unpack_bytes(payload, pos, what)
    return value.decode("utf-8", "surrogateescape"), pos


def unpack_fixed_and_path(f: Frame, type: int, fixed: struct.Struct, name: str) -> tuple[tuple, str]:
    """A frame of `type` whose payload is `fixed` and then a path (a non-empty string)."""
    if f.type != type or len(f.payload) < fixed.size:
        raise ProtocolError(f"malformed {name}")
    path, pos = unpack_string(f.payload, fixed.size, "path")
    if pos != len(f.payload) or not path or "\0" in path:
        raise ProtocolError(f"malformed {name} path")
    return fixed.unpack_from(f.payload), path


def pack_string(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    return U16.pack(len(b)) + b


def pack_bytes(b: bytes) -> bytes:
    return U16.pack(len(b)) + b


def encode_error(e: ErrorReply, id: int) -> bytes:
    return encode_frame(MSG_ERROR, ERROR.pack(e.errno) + pack_string(e.message[:1024]), id=id)


def decode_error(f: Frame) -> ErrorReply:
    if f.type != MSG_ERROR or len(f.payload) < ERROR.size:
        raise ProtocolError("malformed ERROR")
    (err,) = ERROR.unpack_from(f.payload)
    message, pos = unpack_string(f.payload, ERROR.size, "error message")
    if pos != len(f.payload) or err <= 0:
        raise ProtocolError("malformed ERROR")
    return ErrorReply(err, message)


def encode_parts(type: int, blob: bytes, id: int) -> list[bytes]:
    """A reply too long for one frame: blob cut into frames of type, all but the last with
    FLAG_MORE (an empty blob is one empty frame)."""
    step = FRAME_MAX - FRAME.size
    chunks = [blob[i:i + step] for i in range(0, len(blob), step)] or [b""]
    return [encode_frame(type, c, flags=FLAG_MORE if n < len(chunks) - 1 else 0, id=id)
            for n, c in enumerate(chunks)]


class PartsAssembler:
    """Collects the frames of a reply sent with encode_parts; complete once the last (no
    FLAG_MORE) has arrived. More than `limit` bytes is a ProtocolError."""

    type, what, limit = 0, "", 0

    def __init__(self) -> None:
        self.data = bytearray()
        self.complete = False

    def feed(self, f: Frame) -> None:
        if f.type != self.type or self.complete:
            raise ProtocolError(f"unexpected {self.what} frame")
        self.data += f.payload
        if len(self.data) > self.limit:
            raise ProtocolError(f"{self.what} larger than {self.limit} bytes")
        self.complete = not f.flags & FLAG_MORE
