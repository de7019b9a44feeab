"""What an agent is asked to do in the target, and its answers (layer/link/protocol.h): AGENT_HELLO;
CONNECT and SOCKET, sockets made there (or relayed: STREAM, and datagrams on a relayed UDP
stream); OPEN and READ_FILE, files there; ENV; RESOLVE and NAMEINFO, name lookups there;
INCOMING and LISTEN, the target's ports for the program's listeners (and, through a network
agent, ACCEPT: a data connection waiting for the next connection to one). The session and hooked
processes ask alike."""
from __future__ import annotations

import struct
from typing import NamedTuple

from .wire import (FRAME, FRAME_MAX, U16, Frame, PartsAssembler, ProtocolError, encode_frame, encode_parts,
                   pack_bytes, pack_string, unpack_bytes, unpack_fixed_and_path, unpack_string)

MSG_AGENT_HELLO = 5
MSG_AGENT_HELLO_REPLY = 6
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
MSG_INCOMING = 48  # session -> agent: how the program's listeners are served (Incoming)
MSG_INCOMING_REPLY = 49  # taken; no payload
MSG_LISTEN = 50  # layer -> agent, on a connection kept as long as the listener lives (Listen)
MSG_LISTEN_REPLY = 51  # LISTEN_LOCAL, LISTEN_TARGET or LISTEN_RELAYED
MSG_ACCEPT = 52  # first frame of a data connection to a network agent: wait for a connection to a lease
MSG_ACCEPT_REPLY = 53  # one came: its addresses (as STREAM_REPLY's); its relayed bytes follow
MSG_STREAMS = 54  # layer -> a network agent's stand-in: data connections for its next connects (Streams)
MSG_STREAMS_REPLY = 55  # no payload; 1 to count data connections, proven to the agent, beside it
MSG_TARGET_FILES = 56  # the target's files through a network agent (TargetFiles): session -> stand-in, then
#                 stand-in -> agent as the first frame of each data connection its file system uses
MSG_TARGET_FILES_REPLY = 57  # no payload; on a data connection, protocol/file_ops.py's requests follow
FLAG_RELAYED = 4  # CONNECT_REPLY: the descriptor is a relay stream; the target socket's addresses follow
FLAG_BIND = 8  # CONNECT, STREAM of a UDP socket: bind it to the sockaddr's port (any address), connect nowhere
CAP_SOCKETS = 1  # AGENT_HELLO: SOCKET replies carry descriptors made in the target
CAP_STREAMS = 2  # AGENT_HELLO: STREAMS replies carry data connections to a network agent
AGENT_HELLO = struct.Struct("<HHI")  # version, reserved, capabilities
TARGET_FILES = struct.Struct("<QII")  # key (the stand-in's; 0 from the session), flags, whole_max
TARGET_FILES_WRITABLE = 1  # TARGET_FILES: the program may write the target's files (--fs write, --fs-write rules)
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
DATAGRAM = struct.Struct("<HH28s")  # a relayed datagram's head: its peer's address (length, reserved, bytes)
DATAGRAM_ADDR_MAX = 28  # sockaddr_in6
RECORD = struct.Struct("<I")  # a relayed datagram record's length, before it, between the stand-in and the agent
RECORD_MAX = DATAGRAM.size + 0xFFFF
INCOMING = struct.Struct("<HHHH")  # mode, flags, ports, maps; then u16 ports, then u16 pairs
INCOMING_OFF, INCOMING_MIRROR, INCOMING_STEAL = 0, 1, 2
INCOMING_MODES = {"off": INCOMING_OFF, "mirror": INCOMING_MIRROR, "steal": INCOMING_STEAL}
INCOMING_LOOPBACK_LOCAL = 1  # flags: listeners on 127.0.0.1 or ::1 stay here
INCOMING_IGNORE = 2  # flags: the ports listed stay here (else they are the only ones served)
INCOMING_FILTERED = 4  # flags: a filtered steal; after the pairs: u16 methods, u16 headers, then
#   each method, the path regex and each header regex as u16-prefixed UTF-8 (not the layer's: it
#   never sends INCOMING)
INCOMING_FILTER = struct.Struct("<HH")
INCOMING_FILTER_MAX = 64  # methods or header regexes in one filter
LISTEN = struct.Struct("<HHi")  # family, flags, backlog; then the sockaddr the program bound
LISTEN_V6ONLY = 1  # flags: the program's IPv6 socket is IPV6_V6ONLY
LISTEN_REPLY = struct.Struct("<HHI")  # how, reserved, lease (LISTEN_RELAYED over TCP: what ACCEPT names)
# LISTEN_TARGET: the listening socket made in the target rides along. LISTEN_RELAYED: a network
# agent listens there; to a layer, a unix SOCK_SEQPACKET socket rides along, on which each
# connection comes as an ACCEPT_REPLY with its data connection beside it.
LISTEN_LOCAL, LISTEN_TARGET, LISTEN_RELAYED = 0, 1, 2
ACCEPT = struct.Struct("<I")  # lease
STREAMS = struct.Struct("<II")  # count, reserved


class Connect(NamedTuple):
    """Open a socket in the target and connect it; the reply carries its descriptor."""

    family: int
    socktype: int
    protocol: int
    timeout_ms: int
    sockaddr: bytes
    flags: int = 0  # FLAG_BIND


class Relayed(NamedTuple):
    """The addresses of a socket in the target that a relay stream stands for."""

    local: bytes  # its getsockname
    peer: bytes  # its getpeername (empty: none, an unconnected UDP socket)


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


class HttpFilter(NamedTuple):
    """Which HTTP/1.1 requests a filtered steal gives the program (agent/http_filter.py); all
    that are given must match, and none given is no filter. methods: any of these, exactly;
    path: a regex searched in the request target's path (before any '?'); headers: each regex
    searched in some `Name: value` line, the name as sent, in lower case or canonical (X-User)."""

    methods: tuple[str, ...] = ()
    path: str = ""
    headers: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.methods or self.path or self.headers)


class Incoming(NamedTuple):
    """How the program's listeners are served: mode off, mirror or steal (INCOMING_*); ports
    the only ones served (or, with ignore, the ones that stay here; none: every port);
    port_map (the program's port, the target's) pairs; loopback_local: listeners on loopback
    stay here; http: with steal, the requests the program takes (empty: all the port's
    connections)."""

    mode: int = INCOMING_MIRROR
    ports: tuple[int, ...] = ()
    ignore: bool = False
    port_map: tuple[tuple[int, int], ...] = ()
    loopback_local: bool = True
    http: HttpFilter = HttpFilter()


class Listen(NamedTuple):
    """The program listens on a TCP socket bound to sockaddr."""

    family: int
    v6only: bool
    backlog: int
    sockaddr: bytes


def encode_agent_hello(version: int, capabilities: int, id: int, reply: bool = False) -> bytes:
    return encode_frame(MSG_AGENT_HELLO_REPLY if reply else MSG_AGENT_HELLO,
                        AGENT_HELLO.pack(version, 0, capabilities), id=id)


def decode_agent_hello(f: Frame) -> tuple[int, int]:
    """(version, capabilities) of an AGENT_HELLO or its reply."""
    if f.type not in (MSG_AGENT_HELLO, MSG_AGENT_HELLO_REPLY) or len(f.payload) != AGENT_HELLO.size:
        raise ProtocolError("malformed AGENT_HELLO")
    version, _, caps = AGENT_HELLO.unpack(f.payload)
    return version, caps


def encode_connect(c: Connect, id: int) -> bytes:
    if len(c.sockaddr) > 128:
        raise ProtocolError("socket address longer than 128 bytes")
    return encode_frame(MSG_CONNECT, CONNECT.pack(c.family, c.socktype, c.protocol, c.timeout_ms)
                        + pack_bytes(c.sockaddr), flags=c.flags & FLAG_BIND, id=id)


def decode_connect(f: Frame) -> Connect:
    if f.type != MSG_CONNECT or len(f.payload) < CONNECT.size + U16.size:
        raise ProtocolError("malformed CONNECT")
    family, socktype, protocol, timeout_ms = CONNECT.unpack_from(f.payload)
    (n,) = U16.unpack_from(f.payload, CONNECT.size)
    start = CONNECT.size + U16.size
    if n > 128 or start + n != len(f.payload):
        raise ProtocolError(f"CONNECT socket address of {n} bytes does not fit")
    return Connect(family, socktype, protocol, timeout_ms, f.payload[start:], f.flags & FLAG_BIND)


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
    return pack_bytes(r.local) + pack_bytes(r.peer)


def _unpack_addresses(payload: bytes, pos: int, what: str) -> Relayed:
    local, pos = unpack_bytes(payload, pos, f"{what} local address")
    peer, pos = unpack_bytes(payload, pos, f"{what} peer address")
    if pos != len(payload):
        raise ProtocolError(f"{len(payload) - pos} stray bytes after {what}")
    for sa in (local, peer) if peer else (local,):  # no peer: an unconnected UDP socket (FLAG_BIND)
        if len(sa) < 2 or len(sa) > 128:
            raise ProtocolError(f"{what} address of {len(sa)} bytes")
    return Relayed(local, peer)


def encode_stream(c: Connect, id: int) -> bytes:
    """A data connection's first frame: connect like c in the target, then relay."""
    return encode_frame(MSG_STREAM, encode_connect(c, id)[FRAME.size:], flags=c.flags & FLAG_BIND, id=id)


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


def encode_datagram(peer: bytes, data: bytes) -> bytes:
    """A relayed datagram record: its head (the peer's sockaddr; empty: the connected peer),
    then its bytes."""
    if len(peer) > DATAGRAM_ADDR_MAX or len(data) > 0xFFFF:
        raise ProtocolError(f"datagram of {len(data)} bytes for a {len(peer)}-byte address")
    return DATAGRAM.pack(len(peer), 0, peer) + data


def decode_datagram(record: bytes | memoryview) -> tuple[bytes, bytes]:
    """(peer, data) of a relayed datagram record."""
    if len(record) < DATAGRAM.size:
        raise ProtocolError(f"datagram record of {len(record)} bytes, shorter than its head")
    n, _, addr = DATAGRAM.unpack_from(record)
    if n > DATAGRAM_ADDR_MAX:
        raise ProtocolError(f"datagram record with a {n}-byte address")
    return addr[:n], bytes(record[DATAGRAM.size:])


def encode_record(record: bytes) -> bytes:
    """A record on the data connection between the stand-in and the agent: u32 length, bytes."""
    return RECORD.pack(len(record)) + record


class RecordReader:
    """Splits the data connection's bytes back into records."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out, pos = [], 0
        while len(self._buf) - pos >= RECORD.size:
            (n,) = RECORD.unpack_from(self._buf, pos)
            if n > RECORD_MAX:
                raise ProtocolError(f"datagram record of {n} bytes (at most {RECORD_MAX})")
            if len(self._buf) - pos < RECORD.size + n:
                break
            out.append(bytes(self._buf[pos + RECORD.size:pos + RECORD.size + n]))
            pos += RECORD.size + n
        del self._buf[:pos]
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


def encode_open(o: Open, id: int) -> bytes:
    return encode_frame(MSG_OPEN, OPEN.pack(o.flags, o.mode) + pack_string(o.path), id=id)


def decode_open(f: Frame) -> Open:
    (flags, mode), path = unpack_fixed_and_path(f, MSG_OPEN, OPEN, "OPEN")
    return Open(flags, mode, path)


def encode_open_reply(id: int) -> bytes:
    """Success; the descriptor travels beside this frame (SCM_RIGHTS)."""
    return encode_frame(MSG_OPEN_REPLY, b"", id=id)


def encode_read_file(path: str, id: int) -> bytes:
    return encode_frame(MSG_READ_FILE, encode_open(Open(0, 0, path), id)[FRAME.size:], id=id)


def decode_read_file(f: Frame) -> str:
    if f.type != MSG_READ_FILE:
        raise ProtocolError("malformed READ_FILE")
    return decode_open(Frame(MSG_OPEN, f.flags, f.id, f.payload)).path


def encode_read_file_reply(data: bytes, id: int) -> list[bytes]:
    """The contents cut into frames; all but the last carry FLAG_MORE."""
    return encode_parts(MSG_READ_FILE_REPLY, data, id)


class FileAssembler(PartsAssembler):
    """Collects READ_FILE_REPLY frames; the contents are in .data once complete."""

    type, what, limit = MSG_READ_FILE_REPLY, "file", READ_FILE_MAX


def encode_env_request(id: int) -> bytes:
    return encode_frame(MSG_ENV, b"", id=id)


def encode_env_reply(env: dict[str, str], id: int) -> list[bytes]:
    """The environment as NUL-terminated KEY=VALUE entries, cut into frames; all but the last
    carry FLAG_MORE (one entry may span frames)."""
    blob = b"".join(k.encode("utf-8", "surrogateescape") + b"=" + v.encode("utf-8", "surrogateescape")
                    + b"\0" for k, v in env.items())
    return encode_parts(MSG_ENV_REPLY, blob, id)


class EnvAssembler(PartsAssembler):
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


def encode_resolve(r: Resolve, id: int) -> bytes:
    return encode_frame(MSG_RESOLVE, RESOLVE.pack(r.flags, r.family, r.socktype, r.protocol)
                        + pack_string(r.node) + pack_string(r.service), id=id)


def decode_resolve(f: Frame) -> Resolve:
    if f.type != MSG_RESOLVE or len(f.payload) < RESOLVE.size:
        raise ProtocolError("malformed RESOLVE")
    flags, family, socktype, protocol = RESOLVE.unpack_from(f.payload)
    node, pos = unpack_string(f.payload, RESOLVE.size, "host name")
    service, pos = unpack_string(f.payload, pos, "service")
    if pos != len(f.payload) or not node or len(node) > 253 or "\0" in node + service:
        raise ProtocolError("malformed RESOLVE host name or service")
    return Resolve(node, service, flags, family, socktype, protocol)


def encode_resolve_reply(r: ResolveReply, id: int) -> bytes:
    """As many entries as fit one frame (a name with more addresses than that is cut)."""
    payload = RESOLVE_REPLY.pack(r.status, r.errno) + pack_string(r.canonname[:255])
    for e in r.entries:
        entry = RESOLVE_ENTRY.pack(e.family, e.socktype, e.protocol) + pack_bytes(e.sockaddr[:128])
        if FRAME.size + len(payload) + len(entry) > FRAME_MAX:
            break
        payload += entry
    return encode_frame(MSG_RESOLVE_REPLY, payload, id=id)


def decode_resolve_reply(f: Frame) -> ResolveReply:
    if f.type != MSG_RESOLVE_REPLY or len(f.payload) < RESOLVE_REPLY.size:
        raise ProtocolError("malformed RESOLVE_REPLY")
    status, err = RESOLVE_REPLY.unpack_from(f.payload)
    canonname, pos = unpack_string(f.payload, RESOLVE_REPLY.size, "canonical name")
    entries = []
    while pos < len(f.payload):
        if pos + RESOLVE_ENTRY.size > len(f.payload):
            raise ProtocolError("RESOLVE_REPLY entry runs past the frame")
        family, socktype, protocol = RESOLVE_ENTRY.unpack_from(f.payload, pos)
        sockaddr, pos = unpack_bytes(f.payload, pos + RESOLVE_ENTRY.size, "socket address")
        if len(sockaddr) > 128:
            raise ProtocolError("RESOLVE_REPLY socket address longer than 128 bytes")
        entries.append(AddrInfo(family, socktype, protocol, sockaddr))
    if status > 0 or (status and entries):
        raise ProtocolError(f"RESOLVE_REPLY with status {status} and {len(entries)} entries")
    return ResolveReply(status, err, canonname, tuple(entries))


def encode_nameinfo(sockaddr: bytes, flags: int, id: int) -> bytes:
    if len(sockaddr) > 128:
        raise ProtocolError("socket address longer than 128 bytes")
    return encode_frame(MSG_NAMEINFO, NAMEINFO.pack(flags) + pack_bytes(sockaddr), id=id)


def decode_nameinfo(f: Frame) -> tuple[bytes, int]:
    """(sockaddr, flags) of a NAMEINFO request."""
    if f.type != MSG_NAMEINFO or len(f.payload) < NAMEINFO.size:
        raise ProtocolError("malformed NAMEINFO")
    (flags,) = NAMEINFO.unpack_from(f.payload)
    sockaddr, pos = unpack_bytes(f.payload, NAMEINFO.size, "socket address")
    if pos != len(f.payload) or len(sockaddr) > 128:
        raise ProtocolError("malformed NAMEINFO socket address")
    return sockaddr, flags


def encode_nameinfo_reply(r: NameInfo, id: int) -> bytes:
    return encode_frame(MSG_NAMEINFO_REPLY, RESOLVE_REPLY.pack(r.status, r.errno) + pack_string(r.host[:1025])
                        + pack_string(r.service[:32]), id=id)


def decode_nameinfo_reply(f: Frame) -> NameInfo:
    if f.type != MSG_NAMEINFO_REPLY or len(f.payload) < RESOLVE_REPLY.size:
        raise ProtocolError("malformed NAMEINFO_REPLY")
    status, err = RESOLVE_REPLY.unpack_from(f.payload)
    host, pos = unpack_string(f.payload, RESOLVE_REPLY.size, "host")
    service, pos = unpack_string(f.payload, pos, "service")
    if pos != len(f.payload) or status > 0:
        raise ProtocolError("malformed NAMEINFO_REPLY")
    return NameInfo(status, err, host, service)


def encode_incoming(i: Incoming, id: int) -> bytes:
    flags = ((INCOMING_LOOPBACK_LOCAL if i.loopback_local else 0) | (INCOMING_IGNORE if i.ignore else 0)
             | (INCOMING_FILTERED if i.http else 0))
    payload = (INCOMING.pack(i.mode, flags, len(i.ports), len(i.port_map))
               + struct.pack(f"<{len(i.ports)}H", *i.ports)
               + b"".join(struct.pack("<HH", *pair) for pair in i.port_map))
    if i.http:
        h = i.http
        if max(len(h.methods), len(h.headers)) > INCOMING_FILTER_MAX:
            raise ProtocolError(f"an HTTP filter of more than {INCOMING_FILTER_MAX} methods or headers")
        payload += INCOMING_FILTER.pack(len(h.methods), len(h.headers)) + b"".join(
            pack_bytes(text.encode()) for text in (*h.methods, h.path, *h.headers))
    return encode_frame(MSG_INCOMING, payload, id=id)


def _decode_filter(payload: bytes, pos: int) -> HttpFilter:
    if pos + INCOMING_FILTER.size > len(payload):
        raise ProtocolError("INCOMING's HTTP filter is missing")
    nmethods, nheaders = INCOMING_FILTER.unpack_from(payload, pos)
    if max(nmethods, nheaders) > INCOMING_FILTER_MAX:
        raise ProtocolError(f"INCOMING's HTTP filter has {nmethods} methods and {nheaders} headers")
    pos += INCOMING_FILTER.size
    texts = []
    for _ in range(nmethods + 1 + nheaders):
        raw, pos = unpack_bytes(payload, pos, "an HTTP filter's text")
        try:
            texts.append(raw.decode())
        except UnicodeDecodeError:
            raise ProtocolError("INCOMING's HTTP filter is not UTF-8") from None
    if pos != len(payload):
        raise ProtocolError("INCOMING has bytes after its HTTP filter")
    f = HttpFilter(tuple(texts[:nmethods]), texts[nmethods], tuple(texts[nmethods + 1:]))
    if not f:
        raise ProtocolError("INCOMING's HTTP filter is empty")
    return f


def decode_incoming(f: Frame) -> Incoming:
    if f.type != MSG_INCOMING or len(f.payload) < INCOMING.size:
        raise ProtocolError("malformed INCOMING")
    mode, flags, nports, nmaps = INCOMING.unpack_from(f.payload)
    if mode not in INCOMING_MODES.values() or flags & ~(INCOMING_LOOPBACK_LOCAL | INCOMING_IGNORE
                                                         | INCOMING_FILTERED):
        raise ProtocolError(f"INCOMING with mode {mode} and flags {flags:#x}")
    end = INCOMING.size + 2 * nports + 4 * nmaps
    if len(f.payload) < end or (len(f.payload) != end and not flags & INCOMING_FILTERED):
        raise ProtocolError(f"INCOMING of {len(f.payload)} bytes for {nports} ports and {nmaps} maps")
    ports = struct.unpack_from(f"<{nports}H", f.payload, INCOMING.size)
    pairs = struct.unpack_from(f"<{2 * nmaps}H", f.payload, INCOMING.size + 2 * nports)
    if 0 in ports or 0 in pairs:
        raise ProtocolError("INCOMING names port 0")
    http = _decode_filter(f.payload, end) if flags & INCOMING_FILTERED else HttpFilter()
    if http and mode != INCOMING_STEAL:
        raise ProtocolError("INCOMING has an HTTP filter but is not a steal")
    return Incoming(mode, ports, bool(flags & INCOMING_IGNORE), tuple(zip(pairs[::2], pairs[1::2])),
                    bool(flags & INCOMING_LOOPBACK_LOCAL), http)


def encode_listen(req: Listen, id: int) -> bytes:
    if len(req.sockaddr) > 128:
        raise ProtocolError("socket address longer than 128 bytes")
    return encode_frame(MSG_LISTEN, LISTEN.pack(req.family, LISTEN_V6ONLY if req.v6only else 0, req.backlog)
                        + pack_bytes(req.sockaddr), id=id)


def decode_listen(f: Frame) -> Listen:
    if f.type != MSG_LISTEN or len(f.payload) < LISTEN.size:
        raise ProtocolError("malformed LISTEN")
    family, flags, backlog = LISTEN.unpack_from(f.payload)
    sockaddr, pos = unpack_bytes(f.payload, LISTEN.size, "socket address")
    if pos != len(f.payload) or len(sockaddr) > 128 or flags & ~LISTEN_V6ONLY:
        raise ProtocolError("malformed LISTEN")
    return Listen(family, bool(flags & LISTEN_V6ONLY), backlog, sockaddr)


def encode_listen_reply(how: int, id: int, lease: int = 0) -> bytes:
    """LISTEN_LOCAL; LISTEN_TARGET or (to a layer) LISTEN_RELAYED with a socket beside this frame
    (SCM_RIGHTS); LISTEN_RELAYED from a network agent names the lease its ACCEPTs give."""
    return encode_frame(MSG_LISTEN_REPLY, LISTEN_REPLY.pack(how, 0, lease), id=id)


def decode_listen_reply(f: Frame) -> tuple[int, int]:
    """(how, lease)."""
    if f.type != MSG_LISTEN_REPLY or len(f.payload) != LISTEN_REPLY.size:
        raise ProtocolError("malformed LISTEN_REPLY")
    how, _, lease = LISTEN_REPLY.unpack(f.payload)
    if how not in (LISTEN_LOCAL, LISTEN_TARGET, LISTEN_RELAYED):
        raise ProtocolError(f"LISTEN_REPLY says {how}")
    return how, lease


def encode_streams(count: int, id: int) -> bytes:
    return encode_frame(MSG_STREAMS, STREAMS.pack(count, 0), id=id)


def decode_streams(f: Frame) -> int:
    if f.type != MSG_STREAMS or len(f.payload) != STREAMS.size:
        raise ProtocolError("malformed STREAMS")
    count, _ = STREAMS.unpack(f.payload)
    if not 1 <= count <= SOCKETS_MAX:
        raise ProtocolError(f"STREAMS asks for {count} connections (1 to {SOCKETS_MAX})")
    return count


def encode_accept(lease: int, id: int) -> bytes:
    return encode_frame(MSG_ACCEPT, ACCEPT.pack(lease), id=id)


def decode_accept(f: Frame) -> int:
    if f.type != MSG_ACCEPT or len(f.payload) != ACCEPT.size:
        raise ProtocolError("malformed ACCEPT")
    return ACCEPT.unpack(f.payload)[0]


def encode_accept_reply(r: Relayed, id: int) -> bytes:
    return encode_frame(MSG_ACCEPT_REPLY, _pack_addresses(r), id=id)


def decode_accept_reply(f: Frame) -> Relayed:
    if f.type != MSG_ACCEPT_REPLY:
        raise ProtocolError("malformed ACCEPT_REPLY")
    return _unpack_addresses(f.payload, 0, "ACCEPT_REPLY")


class TargetFiles(NamedTuple):
    key: int  # which stand-in's files: its connections share open handles
    writable: bool
    whole_max: int  # files up to this size come whole with their open (read-only)


def encode_target_files(f: TargetFiles, id: int) -> bytes:
    flags = TARGET_FILES_WRITABLE if f.writable else 0
    return encode_frame(MSG_TARGET_FILES, TARGET_FILES.pack(f.key, flags, f.whole_max), id=id)


def decode_target_files(f: Frame) -> TargetFiles:
    if f.type != MSG_TARGET_FILES or len(f.payload) != TARGET_FILES.size:
        raise ProtocolError("malformed TARGET_FILES")
    key, flags, whole_max = TARGET_FILES.unpack(f.payload)
    if flags & ~TARGET_FILES_WRITABLE:
        raise ProtocolError(f"TARGET_FILES with unknown flags {flags:#x}")
    return TargetFiles(key, bool(flags & TARGET_FILES_WRITABLE), whole_max)
