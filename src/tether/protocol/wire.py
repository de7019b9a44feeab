"""The wire between the layer and the session: frames, sans-IO.

Mirrors layer/protocol.h (tests/test_protocol.py proves both agree). Pure encode/decode and a
stream parser; the session does the I/O. Parsers never trust a length: every declared length
is checked against what arrived and against FRAME_MAX, and a bad frame raises ProtocolError
with a one-line reason.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

PROTOCOL_VERSION = 2
FRAME_MAX = 4096

MSG_HELLO = 1
MSG_HELLO_REPLY = 2
MSG_PLAN_REQUEST = 3
MSG_PLAN_REPLY = 4
MSG_AGENT_HELLO = 5
MSG_AGENT_HELLO_REPLY = 6
MSG_AUTH_CHALLENGE = 7  # network agents only (protocol/auth.py): the agent's nonce
MSG_AUTH_RESPONSE = 8  # the session's nonce and proof of the token
MSG_AUTH_OK = 9  # the agent's proof of the token
MSG_ERROR = 15
MSG_SYSCALL = 16
MSG_RING_WAKE = 17  # layer -> session: its trace ring has records (the session said it sleeps)
MSG_RING_REQUEST = 18  # layer -> session: a forked child's own trace ring (RING_REQUEST: its pid)
MSG_RING_REPLY = 19  # session -> layer: no payload; the ring's memfd rides along
MSG_CONNECT = 32
MSG_CONNECT_REPLY = 33
MSG_OPEN = 34
MSG_OPEN_REPLY = 35
MSG_ENV = 36
MSG_ENV_REPLY = 37
MSG_SOCKET = 38
MSG_SOCKET_REPLY = 39
MSG_RESOLVE = 40
MSG_RESOLVE_REPLY = 41
MSG_NAMEINFO = 42
MSG_NAMEINFO_REPLY = 43
MSG_READ_FILE = 44  # a file's contents (where descriptors cannot travel); payload as OPEN
MSG_READ_FILE_REPLY = 45  # the contents, over frames with FLAG_MORE
MSG_STREAM = 46  # first frame of a data connection to a network agent: connect (as CONNECT)
MSG_STREAM_REPLY = 47  # connected (addresses as CONNECT_REPLY's); relayed bytes follow

FLAG_ENTRY = 1
FLAG_MORE = 2
FLAG_RELAYED = 4  # CONNECT_REPLY: the descriptor is a relay stream; the target socket's addresses follow
CAP_TRACE_RING = 1  # HELLO: the layer takes a trace ring with HELLO_REPLY
MODE_TRACE = 1
MODE_NET = 2
MODE_DNS = 4
MODE_SOCKETS = 8  # the agent hands out sockets made in the target: connects take one, connect it here
CAP_SOCKETS = 1  # AGENT_HELLO: SOCKET replies carry descriptors made in the target

DATA_STRING = 1
DATA_SOCKADDR = 2

FRAME = struct.Struct("<IHHQ")  # length, type, flags, id
HELLO = struct.Struct("<HHIii")  # version, reserved, capabilities, pid, ppid
HELLO_REPLY = struct.Struct("<HHI")  # version, reserved, mode
RING_REQUEST = struct.Struct("<iI")  # pid, reserved
SYSCALL_EVENT = struct.Struct("<iiq6qq")  # pid, tid, nr, args[6], ret
DATA = struct.Struct("<BBHI")  # arg, kind, length, full_length
AGENT_HELLO = struct.Struct("<HHI")  # version, reserved, capabilities
ERROR = struct.Struct("<i")  # errno, then a u16-prefixed message
CONNECT = struct.Struct("<HHiI")  # family, socktype, protocol, timeout_ms; then the sockaddr
CONNECT_REPLY = struct.Struct("<i")  # status: 0, connected (a failure is an ERROR reply)
OPEN = struct.Struct("<iI")  # flags, mode; then the path
SOCKET = struct.Struct("<HHiII")  # family, socktype, protocol, count, reserved
SOCKETS_MAX = 16  # sockets one SOCKET request may ask for
RESOLVE = struct.Struct("<iiii")  # getaddrinfo hints: flags, family, socktype, protocol; then node, service
RESOLVE_REPLY = struct.Struct("<ii")  # status (0 or EAI_*), errno for EAI_SYSTEM; then canonname, entries
RESOLVE_ENTRY = struct.Struct("<HHi")  # family, socktype, protocol; then the sockaddr
EAI_SYSTEM = -11  # glibc's number: the failure is in errno
NAMEINFO = struct.Struct("<i")  # NI_* flags; then the sockaddr. Reply: RESOLVE_REPLY, host, service
ENV_MAX = 1 << 20  # bytes of environment a session accepts from an agent
READ_FILE_MAX = 1 << 20  # bytes of a file READ_FILE carries (the resolver's files are small)
NONCE = 32  # AUTH_CHALLENGE: the nonce; AUTH_RESPONSE: nonce + proof; AUTH_OK: proof (HMAC-SHA256)
DATAGRAM = struct.Struct("<H")  # a relayed datagram's length, before its bytes
U16 = struct.Struct("<H")

# The trace ring (layer/protocol.h, struct tether_ring): a header of three cache lines (set by
# the session; written by producers; written by the session), then `size` bytes of records.
RING_MAGIC = 0x676E6972
RING_VERSION = 1
RING = struct.Struct("<IIQ48xQQI44xQIII44x")  # magic, version, size | head, published, waiters | tail,
RING_HEAD, RING_PUBLISHED, RING_WAITERS = 64, 72, 80  # space, sleeping, closed
RING_TAIL, RING_SPACE, RING_SLEEPING, RING_CLOSED = 128, 136, 140, 144
RECORD = struct.Struct("<IHH")  # length (header and payload), type, flags; the next starts 8-aligned
RECORD_MAX = FRAME_MAX


class ProtocolError(Exception):
    """A malformed frame; the peer that sent it is closed."""


class Frame(NamedTuple):
    type: int
    flags: int
    id: int
    payload: bytes


class Hello(NamedTuple):
    version: int
    capabilities: int
    pid: int
    ppid: int
    exe: str
    go_build_id: str


class HelloReply(NamedTuple):
    version: int
    mode: int
    plan: str
    agent: str = ""  # the agent's socket, for CONNECT and OPEN (MODE_NET, MODE_DNS)
    rules: str = ""  # outgoing rules, layer/route.c's format (MODE_NET)


class PlanRequest(NamedTuple):
    """A Go library loaded after start-up asks for its hook plan."""

    path: str
    go_build_id: str


class ErrorReply(NamedTuple):
    """A request failed; errno says how, as the program would see it."""

    errno: int
    message: str


class Connect(NamedTuple):
    """Open a socket in the target and connect it; the reply carries its descriptor."""

    family: int
    socktype: int
    protocol: int
    timeout_ms: int
    sockaddr: bytes


class Open(NamedTuple):
    """Open a file in the target (read-only); the reply carries its descriptor."""

    flags: int
    mode: int
    path: str


class Resolve(NamedTuple):
    """getaddrinfo(node, service, hints) as the target answers it."""

    node: str
    service: str = ""
    flags: int = 0
    family: int = 0
    socktype: int = 0
    protocol: int = 0


class AddrInfo(NamedTuple):
    family: int
    socktype: int
    protocol: int
    sockaddr: bytes


class ResolveReply(NamedTuple):
    """getaddrinfo's answer: status 0 and its entries, or an EAI_* code (and errno for
    EAI_SYSTEM)."""

    status: int = 0
    errno: int = 0
    canonname: str = ""
    entries: tuple[AddrInfo, ...] = ()


class NameInfo(NamedTuple):
    """getnameinfo(sockaddr, flags) as the target answers it: status 0 with host and service,
    or an EAI_* code (and errno for EAI_SYSTEM)."""

    status: int = 0
    errno: int = 0
    host: str = ""
    service: str = ""


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


class FrameReader:
    """Splits a byte stream into frames (for stream transports; SEQPACKET needs no splitting)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= FRAME.size:
            (length,) = struct.unpack_from("<I", self._buf)
            if not FRAME.size <= length <= FRAME_MAX:
                raise ProtocolError(f"frame length {length} outside {FRAME.size}..{FRAME_MAX}")
            if len(self._buf) < length:
                break
            frames.append(decode_frame(bytes(self._buf[:length])))
            del self._buf[:length]
        return frames


def _bytes(payload: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """The u16-prefixed bytes at pos, and the position after them."""
    if pos + U16.size > len(payload):
        raise ProtocolError(f"{what} length missing")
    (n,) = U16.unpack_from(payload, pos)
    pos += U16.size
    if pos + n > len(payload):
        raise ProtocolError(f"{what} of {n} bytes runs past the frame")
    return payload[pos:pos + n], pos + n


def _string(payload: bytes, pos: int, what: str) -> tuple[str, int]:
    value, pos = _bytes(payload, pos, what)
    return value.decode("utf-8", "surrogateescape"), pos


def _pack_string(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    return U16.pack(len(b)) + b


def encode_hello(h: Hello, id: int) -> bytes:
    payload = HELLO.pack(h.version, 0, h.capabilities, h.pid, h.ppid)
    return encode_frame(MSG_HELLO, payload + _pack_string(h.exe) + _pack_string(h.go_build_id), id=id)


def decode_hello(f: Frame) -> Hello:
    if f.type != MSG_HELLO or len(f.payload) < HELLO.size:
        raise ProtocolError("malformed HELLO")
    version, _, caps, pid, ppid = HELLO.unpack_from(f.payload)
    exe, pos = _string(f.payload, HELLO.size, "executable path")
    build_id, pos = _string(f.payload, pos, "Go build id")
    if pos != len(f.payload):
        raise ProtocolError("HELLO has trailing bytes")
    return Hello(version, caps, pid, ppid, exe, build_id)


def encode_hello_reply(r: HelloReply, id: int) -> bytes:
    return encode_frame(MSG_HELLO_REPLY, HELLO_REPLY.pack(r.version, 0, r.mode) + _pack_string(r.plan)
                        + _pack_string(r.agent) + _pack_string(r.rules), id=id)


def decode_hello_reply(f: Frame) -> HelloReply:
    if f.type != MSG_HELLO_REPLY or len(f.payload) < HELLO_REPLY.size:
        raise ProtocolError("malformed HELLO_REPLY")
    version, _, mode = HELLO_REPLY.unpack_from(f.payload)
    plan, pos = _string(f.payload, HELLO_REPLY.size, "plan")
    agent, pos = _string(f.payload, pos, "agent socket")
    rules, pos = _string(f.payload, pos, "rules")
    if pos != len(f.payload):
        raise ProtocolError("HELLO_REPLY has trailing bytes")
    return HelloReply(version, mode, plan, agent, rules)


def encode_plan_request(r: PlanRequest, id: int) -> bytes:
    return encode_frame(MSG_PLAN_REQUEST, _pack_string(r.path) + _pack_string(r.go_build_id), id=id)


def decode_plan_request(f: Frame) -> PlanRequest:
    if f.type != MSG_PLAN_REQUEST:
        raise ProtocolError("malformed PLAN_REQUEST")
    path, pos = _string(f.payload, 0, "library path")
    build_id, pos = _string(f.payload, pos, "Go build id")
    if pos != len(f.payload):
        raise ProtocolError("PLAN_REQUEST has trailing bytes")
    return PlanRequest(path, build_id)


def encode_plan_reply(plan: str, id: int) -> bytes:
    return encode_frame(MSG_PLAN_REPLY, _pack_string(plan), id=id)


def encode_ring_request(pid: int, id: int) -> bytes:
    return encode_frame(MSG_RING_REQUEST, RING_REQUEST.pack(pid, 0), id=id)


def decode_ring_request(f: Frame) -> int:
    """The pid of the forked child asking for a ring."""
    if f.type != MSG_RING_REQUEST or len(f.payload) != RING_REQUEST.size:
        raise ProtocolError("malformed RING_REQUEST")
    return RING_REQUEST.unpack(f.payload)[0]


def encode_ring_reply(id: int) -> bytes:
    return encode_frame(MSG_RING_REPLY, b"", id=id)


def _only_string(f: Frame, type: int, frame_name: str, what: str) -> str:
    """The one u16-prefixed string that is the whole payload of a frame of `type`."""
    if f.type != type:
        raise ProtocolError(f"malformed {frame_name}")
    value, pos = _string(f.payload, 0, what)
    if pos != len(f.payload):
        raise ProtocolError(f"{frame_name} has trailing bytes")
    return value


def decode_plan_reply(f: Frame) -> str:
    return _only_string(f, MSG_PLAN_REPLY, "PLAN_REPLY", "plan")


def encode_agent_hello(version: int, capabilities: int, id: int, reply: bool = False) -> bytes:
    return encode_frame(MSG_AGENT_HELLO_REPLY if reply else MSG_AGENT_HELLO,
                        AGENT_HELLO.pack(version, 0, capabilities), id=id)


def decode_agent_hello(f: Frame) -> tuple[int, int]:
    """(version, capabilities) of an AGENT_HELLO or its reply."""
    if f.type not in (MSG_AGENT_HELLO, MSG_AGENT_HELLO_REPLY) or len(f.payload) != AGENT_HELLO.size:
        raise ProtocolError("malformed AGENT_HELLO")
    version, _, caps = AGENT_HELLO.unpack(f.payload)
    return version, caps


def encode_error(e: ErrorReply, id: int) -> bytes:
    return encode_frame(MSG_ERROR, ERROR.pack(e.errno) + _pack_string(e.message[:1024]), id=id)


def decode_error(f: Frame) -> ErrorReply:
    if f.type != MSG_ERROR or len(f.payload) < ERROR.size:
        raise ProtocolError("malformed ERROR")
    (err,) = ERROR.unpack_from(f.payload)
    message, pos = _string(f.payload, ERROR.size, "error message")
    if pos != len(f.payload) or err <= 0:
        raise ProtocolError("malformed ERROR")
    return ErrorReply(err, message)


def encode_connect(c: Connect, id: int) -> bytes:
    if len(c.sockaddr) > 128:
        raise ProtocolError("socket address longer than 128 bytes")
    return encode_frame(MSG_CONNECT, CONNECT.pack(c.family, c.socktype, c.protocol, c.timeout_ms)
                        + _pack_string_bytes(c.sockaddr), id=id)


def decode_connect(f: Frame) -> Connect:
    if f.type != MSG_CONNECT or len(f.payload) < CONNECT.size + U16.size:
        raise ProtocolError("malformed CONNECT")
    family, socktype, protocol, timeout_ms = CONNECT.unpack_from(f.payload)
    (n,) = U16.unpack_from(f.payload, CONNECT.size)
    start = CONNECT.size + U16.size
    if n > 128 or start + n != len(f.payload):
        raise ProtocolError(f"CONNECT socket address of {n} bytes does not fit")
    return Connect(family, socktype, protocol, timeout_ms, f.payload[start:])


class Relayed(NamedTuple):
    """The addresses of a socket in the target that a relay stream stands for."""

    local: bytes  # its getsockname
    peer: bytes  # its getpeername


def encode_connect_reply(id: int, status: int = 0, relayed: Relayed | None = None) -> bytes:
    """The connected socket travels beside this frame (SCM_RIGHTS). relayed: the socket is a
    stream to a relay, standing for a target socket with these addresses."""
    if relayed is None:
        return encode_frame(MSG_CONNECT_REPLY, CONNECT_REPLY.pack(status), id=id)
    return encode_frame(MSG_CONNECT_REPLY, CONNECT_REPLY.pack(status) + _pack_addresses(relayed),
                        flags=FLAG_RELAYED, id=id)


def decode_connect_reply(f: Frame) -> tuple[int, Relayed | None]:
    """(status, the relayed addresses or None)."""
    if f.type != MSG_CONNECT_REPLY or len(f.payload) < CONNECT_REPLY.size:
        raise ProtocolError("malformed CONNECT_REPLY")
    (status,) = CONNECT_REPLY.unpack_from(f.payload)
    if status < 0:
        raise ProtocolError(f"CONNECT_REPLY with status {status}")
    if not f.flags & FLAG_RELAYED:
        if len(f.payload) != CONNECT_REPLY.size:
            raise ProtocolError("CONNECT_REPLY longer than its status")
        return status, None
    return status, _unpack_addresses(f.payload, CONNECT_REPLY.size, "CONNECT_REPLY")


def _pack_addresses(r: Relayed) -> bytes:
    return _pack_string_bytes(r.local) + _pack_string_bytes(r.peer)


def _unpack_addresses(payload: bytes, pos: int, what: str) -> Relayed:
    local, pos = _bytes(payload, pos, f"{what} local address")
    peer, pos = _bytes(payload, pos, f"{what} peer address")
    if pos != len(payload):
        raise ProtocolError(f"{len(payload) - pos} stray bytes after {what}")
    for sa in (local, peer):
        if len(sa) < 2 or len(sa) > 128:
            raise ProtocolError(f"{what} address of {len(sa)} bytes")
    return Relayed(local, peer)


def encode_stream(c: Connect, id: int) -> bytes:
    """A data connection's first frame: connect like c in the target, then relay."""
    return encode_frame(MSG_STREAM, encode_connect(c, id)[FRAME.size:], id=id)


def decode_stream(f: Frame) -> Connect:
    if f.type != MSG_STREAM:
        raise ProtocolError("malformed STREAM")
    return decode_connect(Frame(MSG_CONNECT, f.flags, f.id, f.payload))


def encode_stream_reply(r: Relayed, id: int) -> bytes:
    return encode_frame(MSG_STREAM_REPLY, _pack_addresses(r), id=id)


def decode_stream_reply(f: Frame) -> Relayed:
    if f.type != MSG_STREAM_REPLY:
        raise ProtocolError("malformed STREAM_REPLY")
    return _unpack_addresses(f.payload, 0, "STREAM_REPLY")


def encode_auth_challenge(nonce: bytes) -> bytes:
    return _fixed(MSG_AUTH_CHALLENGE, nonce, NONCE)


def encode_auth_response(nonce: bytes, proof: bytes) -> bytes:
    return _fixed(MSG_AUTH_RESPONSE, nonce + proof, 2 * NONCE)


def encode_auth_ok(proof: bytes) -> bytes:
    return _fixed(MSG_AUTH_OK, proof, NONCE)


def _fixed(type: int, payload: bytes, size: int) -> bytes:
    if len(payload) != size:
        raise ProtocolError(f"frame type {type} takes {size} bytes, not {len(payload)}")
    return encode_frame(type, payload)


def decode_auth(f: Frame, type: int) -> bytes:
    """The payload of an AUTH_* frame of the expected type (an ERROR raises AuthRefused)."""
    if f.type == MSG_ERROR:
        err = decode_error(f)
        raise AuthRefused(err.errno, err.message)
    size = 2 * NONCE if type == MSG_AUTH_RESPONSE else NONCE
    if f.type != type or len(f.payload) != size:
        raise ProtocolError(f"expected an authentication frame (type {type}), got type {f.type}")
    return f.payload


class AuthRefused(Exception):
    """The agent refused the session (wrong token, or too many sessions)."""

    def __init__(self, errno: int, message: str):
        super().__init__(message)
        self.errno = errno


def encode_read_file(path: str, id: int) -> bytes:
    return encode_frame(MSG_READ_FILE, encode_open(Open(0, 0, path), id)[FRAME.size:], id=id)


def decode_read_file(f: Frame) -> str:
    if f.type != MSG_READ_FILE:
        raise ProtocolError("malformed READ_FILE")
    return decode_open(Frame(MSG_OPEN, f.flags, f.id, f.payload)).path


def encode_read_file_reply(data: bytes, id: int) -> list[bytes]:
    """The contents cut into frames; all but the last carry FLAG_MORE."""
    return _encode_parts(MSG_READ_FILE_REPLY, data, id)


def _encode_parts(type: int, blob: bytes, id: int) -> list[bytes]:
    """A reply too long for one frame: blob cut into frames of type, all but the last with
    FLAG_MORE (an empty blob is one empty frame)."""
    step = FRAME_MAX - FRAME.size
    chunks = [blob[i:i + step] for i in range(0, len(blob), step)] or [b""]
    return [encode_frame(type, c, flags=FLAG_MORE if n < len(chunks) - 1 else 0, id=id)
            for n, c in enumerate(chunks)]


class _PartsAssembler:
    """Collects the frames of a reply sent with _encode_parts; complete once the last (no
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


class FileAssembler(_PartsAssembler):
    """Collects READ_FILE_REPLY frames; the contents are in .data once complete."""

    type, what, limit = MSG_READ_FILE_REPLY, "file", READ_FILE_MAX


def encode_datagram(datagram: bytes) -> bytes:
    """One datagram on a relayed UDP stream: its u16 length, then its bytes."""
    if len(datagram) > 0xFFFF:
        raise ProtocolError(f"datagram of {len(datagram)} bytes")
    return DATAGRAM.pack(len(datagram)) + datagram


class DatagramReader:
    """Splits a relayed UDP stream back into datagrams."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= DATAGRAM.size:
            (n,) = DATAGRAM.unpack_from(self._buf)
            if len(self._buf) < DATAGRAM.size + n:
                break
            out.append(bytes(self._buf[DATAGRAM.size:DATAGRAM.size + n]))
            del self._buf[:DATAGRAM.size + n]
        return out


def encode_socket(family: int, socktype: int, protocol: int, id: int, count: int = 1) -> bytes:
    return encode_frame(MSG_SOCKET, SOCKET.pack(family, socktype, protocol, count, 0), id=id)


def decode_socket(f: Frame) -> tuple[int, int, int, int]:
    """(family, socktype, protocol, count) of a SOCKET request; count is 1 to SOCKETS_MAX."""
    if f.type != MSG_SOCKET or len(f.payload) != SOCKET.size:
        raise ProtocolError("malformed SOCKET")
    family, socktype, protocol, count, _ = SOCKET.unpack(f.payload)
    if not 1 <= count <= SOCKETS_MAX:
        raise ProtocolError(f"SOCKET asks for {count} sockets (1 to {SOCKETS_MAX})")
    return family, socktype, protocol, count


def encode_socket_reply(id: int) -> bytes:
    """Success; the sockets travel beside this frame (SCM_RIGHTS)."""
    return encode_frame(MSG_SOCKET_REPLY, b"", id=id)


def encode_resolve(r: Resolve, id: int) -> bytes:
    return encode_frame(MSG_RESOLVE, RESOLVE.pack(r.flags, r.family, r.socktype, r.protocol)
                        + _pack_string(r.node) + _pack_string(r.service), id=id)


def decode_resolve(f: Frame) -> Resolve:
    if f.type != MSG_RESOLVE or len(f.payload) < RESOLVE.size:
        raise ProtocolError("malformed RESOLVE")
    flags, family, socktype, protocol = RESOLVE.unpack_from(f.payload)
    node, pos = _string(f.payload, RESOLVE.size, "host name")
    service, pos = _string(f.payload, pos, "service")
    if pos != len(f.payload) or not node or len(node) > 253 or "\0" in node + service:
        raise ProtocolError("malformed RESOLVE host name or service")
    return Resolve(node, service, flags, family, socktype, protocol)


def encode_resolve_reply(r: ResolveReply, id: int) -> bytes:
    """As many entries as fit one frame (a name with more addresses than that is cut)."""
    payload = RESOLVE_REPLY.pack(r.status, r.errno) + _pack_string(r.canonname[:255])
    for e in r.entries:
        entry = RESOLVE_ENTRY.pack(e.family, e.socktype, e.protocol) + _pack_string_bytes(e.sockaddr[:128])
        if FRAME.size + len(payload) + len(entry) > FRAME_MAX:
            break
        payload += entry
    return encode_frame(MSG_RESOLVE_REPLY, payload, id=id)


def decode_resolve_reply(f: Frame) -> ResolveReply:
    if f.type != MSG_RESOLVE_REPLY or len(f.payload) < RESOLVE_REPLY.size:
        raise ProtocolError("malformed RESOLVE_REPLY")
    status, err = RESOLVE_REPLY.unpack_from(f.payload)
    canonname, pos = _string(f.payload, RESOLVE_REPLY.size, "canonical name")
    entries = []
    while pos < len(f.payload):
        if pos + RESOLVE_ENTRY.size > len(f.payload):
            raise ProtocolError("RESOLVE_REPLY entry runs past the frame")
        family, socktype, protocol = RESOLVE_ENTRY.unpack_from(f.payload, pos)
        sockaddr, pos = _bytes(f.payload, pos + RESOLVE_ENTRY.size, "socket address")
        if len(sockaddr) > 128:
            raise ProtocolError("RESOLVE_REPLY socket address longer than 128 bytes")
        entries.append(AddrInfo(family, socktype, protocol, sockaddr))
    if status > 0 or (status and entries):
        raise ProtocolError(f"RESOLVE_REPLY with status {status} and {len(entries)} entries")
    return ResolveReply(status, err, canonname, tuple(entries))


def encode_nameinfo(sockaddr: bytes, flags: int, id: int) -> bytes:
    if len(sockaddr) > 128:
        raise ProtocolError("socket address longer than 128 bytes")
    return encode_frame(MSG_NAMEINFO, NAMEINFO.pack(flags) + _pack_string_bytes(sockaddr), id=id)


def decode_nameinfo(f: Frame) -> tuple[bytes, int]:
    """(sockaddr, flags) of a NAMEINFO request."""
    if f.type != MSG_NAMEINFO or len(f.payload) < NAMEINFO.size:
        raise ProtocolError("malformed NAMEINFO")
    (flags,) = NAMEINFO.unpack_from(f.payload)
    sockaddr, pos = _bytes(f.payload, NAMEINFO.size, "socket address")
    if pos != len(f.payload) or len(sockaddr) > 128:
        raise ProtocolError("malformed NAMEINFO socket address")
    return sockaddr, flags


def encode_nameinfo_reply(r: NameInfo, id: int) -> bytes:
    return encode_frame(MSG_NAMEINFO_REPLY, RESOLVE_REPLY.pack(r.status, r.errno) + _pack_string(r.host[:1025])
                        + _pack_string(r.service[:32]), id=id)


def decode_nameinfo_reply(f: Frame) -> NameInfo:
    if f.type != MSG_NAMEINFO_REPLY or len(f.payload) < RESOLVE_REPLY.size:
        raise ProtocolError("malformed NAMEINFO_REPLY")
    status, err = RESOLVE_REPLY.unpack_from(f.payload)
    host, pos = _string(f.payload, RESOLVE_REPLY.size, "host")
    service, pos = _string(f.payload, pos, "service")
    if pos != len(f.payload) or status > 0:
        raise ProtocolError("malformed NAMEINFO_REPLY")
    return NameInfo(status, err, host, service)


def encode_open(o: Open, id: int) -> bytes:
    return encode_frame(MSG_OPEN, OPEN.pack(o.flags, o.mode) + _pack_string(o.path), id=id)


def decode_open(f: Frame) -> Open:
    if f.type != MSG_OPEN or len(f.payload) < OPEN.size:
        raise ProtocolError("malformed OPEN")
    flags, mode = OPEN.unpack_from(f.payload)
    path, pos = _string(f.payload, OPEN.size, "path")
    if pos != len(f.payload) or not path or "\0" in path:
        raise ProtocolError("malformed OPEN path")
    return Open(flags, mode, path)


def encode_open_reply(id: int) -> bytes:
    """Success; the descriptor travels beside this frame (SCM_RIGHTS)."""
    return encode_frame(MSG_OPEN_REPLY, b"", id=id)


def encode_env_request(id: int) -> bytes:
    return encode_frame(MSG_ENV, b"", id=id)


def encode_env_reply(env: dict[str, str], id: int) -> list[bytes]:
    """The environment as NUL-terminated KEY=VALUE entries, cut into frames; all but the last
    carry FLAG_MORE (one entry may span frames)."""
    blob = b"".join(k.encode("utf-8", "surrogateescape") + b"=" + v.encode("utf-8", "surrogateescape")
                    + b"\0" for k, v in env.items())
    return _encode_parts(MSG_ENV_REPLY, blob, id)


class EnvAssembler(_PartsAssembler):
    """Collects ENV_REPLY frames; env() once the last one (no FLAG_MORE) has arrived."""

    type, what, limit = MSG_ENV_REPLY, "environment", ENV_MAX

    def env(self) -> dict[str, str]:
        if not self.complete or (self.data and not self.data.endswith(b"\0")):
            raise ProtocolError("environment ends mid-entry")
        env = {}
        for entry in bytes(self.data).split(b"\0")[:-1]:
            key, eq, value = entry.partition(b"=")
            if not eq or not key:
                raise ProtocolError("environment entry without KEY=")
            env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        return env


def _pack_string_bytes(b: bytes) -> bytes:
    return U16.pack(len(b)) + b


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
