#!/usr/bin/env python3
"""A million inputs through every parser of the wire, and the layer's rules parser.

    python3 bench/fuzz_parsers.py [--inputs 1000000] [--seed N]

Inputs are valid frames of every type, mutated (bytes flipped, cut, lengths rewritten,
garbage appended) and plain random bytes, fed to decode_frame and the decoder for the frame
type, to FrameReader in random chunks, and to the trace ring's record decoder as a run of
records, to agent/nft.py's parser of the kernel's netlink acknowledgements, agent/conntrack.py's of its
conntrack dumps, and to a mirror's
reassembly (agent/mirror.py) as captured packets, TCP over IPv4 and IPv6 among the seeds; runs of valid
trace records, mutated alike, to the record decoder; the files link's requests and replies
(protocol/file_ops.py) and /dev/fuse's requests (protocol/fuse_abi.py); and random rule
strings to layer/net/route.c through libtether.so. Any exception other than ProtocolError (NftError
for the acknowledgements), or a C verdict outside -2..1, is a failure (exit 1, the input printed). Prints inputs per second; the hypothesis tests in
tests/test_protocol.py are the small version that runs in CI.
"""
from __future__ import annotations

import argparse
import ctypes
import random
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tether.agent import conntrack, mirror, nft  # noqa: E402
from tether.layer import layer_path  # noqa: E402
from tether.protocol import agent_wire, auth, file_ops, files_wire, fuse_abi, layer_wire, trace_wire, wire  # noqa: E402
from tether.protocol.sockaddr import encode_inet  # noqa: E402

DECODERS = {
    layer_wire.MSG_HELLO: layer_wire.decode_hello, layer_wire.MSG_HELLO_REPLY: layer_wire.decode_hello_reply,
    layer_wire.MSG_PLAN_REQUEST: layer_wire.decode_plan_request,
    layer_wire.MSG_PLAN_REPLY: layer_wire.decode_plan_reply,
    layer_wire.MSG_RING_REQUEST: layer_wire.decode_ring_request,
    files_wire.MSG_FILES_NOTICE: files_wire.decode_notice,
    agent_wire.MSG_AGENT_HELLO: agent_wire.decode_agent_hello,
    agent_wire.MSG_AGENT_HELLO_REPLY: agent_wire.decode_agent_hello,
    wire.MSG_ERROR: wire.decode_error, trace_wire.MSG_SYSCALL: trace_wire.decode_syscall,
    agent_wire.MSG_CONNECT: agent_wire.decode_connect, agent_wire.MSG_CONNECT_REPLY: agent_wire.decode_connect_reply,
    agent_wire.MSG_OPEN: agent_wire.decode_open, agent_wire.MSG_SOCKET: agent_wire.decode_socket,
    agent_wire.MSG_RESOLVE: agent_wire.decode_resolve, agent_wire.MSG_RESOLVE_REPLY: agent_wire.decode_resolve_reply,
    agent_wire.MSG_NAMEINFO: agent_wire.decode_nameinfo,
    agent_wire.MSG_NAMEINFO_REPLY: agent_wire.decode_nameinfo_reply,
    agent_wire.MSG_ENV_REPLY: lambda f: agent_wire.EnvAssembler().feed(f),
    agent_wire.MSG_STREAM: agent_wire.decode_stream, agent_wire.MSG_STREAM_REPLY: agent_wire.decode_stream_reply,
    agent_wire.MSG_READ_FILE: agent_wire.decode_read_file,
    agent_wire.MSG_READ_FILE_REPLY: lambda f: agent_wire.FileAssembler().feed(f),
    agent_wire.MSG_INCOMING: agent_wire.decode_incoming, agent_wire.MSG_LISTEN: agent_wire.decode_listen,
    agent_wire.MSG_LISTEN_REPLY: agent_wire.decode_listen_reply,
    agent_wire.MSG_ACCEPT: agent_wire.decode_accept, agent_wire.MSG_ACCEPT_REPLY: agent_wire.decode_accept_reply,
    agent_wire.MSG_STREAMS: agent_wire.decode_streams, agent_wire.MSG_TARGET_FILES: agent_wire.decode_target_files,
    auth.MSG_AUTH_RESPONSE: lambda f: auth.decode_auth(f, auth.MSG_AUTH_RESPONSE),
    auth.MSG_AUTH_OK: lambda f: auth.decode_auth(f, auth.MSG_AUTH_OK),
}


def seeds() -> list[bytes]:
    sa = encode_inet("198.18.0.1", 8080)
    return [
        layer_wire.encode_hello(layer_wire.Hello(1, 0, 42, 1, "/usr/bin/prog", "abc/def"), 1),
        layer_wire.encode_hello_reply(
            layer_wire.HelloReply(1, 6, "1;id;funnel=10:00", "/tmp/a.sock", "R4/c6120000/15/0;*L"), 1),
        layer_wire.encode_plan_request(layer_wire.PlanRequest("/lib/x.so", "id"), 2),
        layer_wire.encode_plan_reply("plan", 2),
        agent_wire.encode_agent_hello(1, 0, 3), wire.encode_error(wire.ErrorReply(111, "refused"), 4),
        trace_wire.encode_syscall(trace_wire.SyscallEvent(
            1, 2, 42, (3, 4, 16, 0, 0, 0), -111, data=(trace_wire.Data(1, trace_wire.DATA_SOCKADDR, sa, 16),))),
        agent_wire.encode_connect(agent_wire.Connect(2, 1, 0, 0, sa), 5), agent_wire.encode_connect_reply(5, 115),
        agent_wire.encode_open(agent_wire.Open(0, 0, "/etc/hosts"), 6), agent_wire.encode_socket(10, 2, 17, 7),
        agent_wire.encode_resolve(agent_wire.Resolve("db.internal", "443", 0x20, 2, 1, 6), 9),
        agent_wire.encode_resolve_reply(agent_wire.ResolveReply(0, 0, "db", (agent_wire.AddrInfo(2, 1, 6, bytes(16)),)),
                                        9),
        agent_wire.encode_nameinfo(sa, 8, 10),
        agent_wire.encode_nameinfo_reply(agent_wire.NameInfo(0, 0, "db.internal", "http"), 10),
        *agent_wire.encode_env_reply({"A": "1", "B": "x" * 50}, 8),
        agent_wire.encode_connect_reply(5, 0, agent_wire.Relayed(sa, sa)),
        agent_wire.encode_stream(agent_wire.Connect(2, 1, 0, 0, sa), 1),
        agent_wire.encode_stream_reply(agent_wire.Relayed(sa, sa), 1), agent_wire.encode_read_file("/etc/hosts", 11),
        *agent_wire.encode_read_file_reply(b"127.0.0.1 localhost\n" * 300, 11),
        auth.encode_auth_response(bytes(32), bytes(range(32))), auth.encode_auth_ok(bytes(32)),
        agent_wire.encode_incoming(agent_wire.Incoming(2, (80, 443), False, ((8080, 80),), True), 12),
        agent_wire.encode_listen(agent_wire.Listen(2, False, 4096, sa), 13),
        agent_wire.encode_listen_reply(agent_wire.LISTEN_TARGET, 13),
        agent_wire.encode_listen_reply(agent_wire.LISTEN_RELAYED, 14, lease=9),
        agent_wire.encode_accept(9, 0), agent_wire.encode_accept_reply(agent_wire.Relayed(sa, sa), 0),
        agent_wire.encode_record(agent_wire.encode_datagram(sa, b"query")),
        agent_wire.encode_streams(4, 15), agent_wire.encode_target_files(agent_wire.TargetFiles(7, True, 1 << 20), 16),
        nft_ack(3, -17) + nft_ack(4, 0), conntrack_dump(),
        *file_ops_seeds(), *fuse_seeds(),
    ]


STAT = file_ops.Stat(5, 100, 8, 1, 2, 3, 0o100644, 1, 0, 0, 0, 4096)


def file_ops_seeds() -> list[bytes]:
    """Requests and replies of the files link (protocol/file_ops.py)."""
    return [file_ops.encode_request(file_ops.Request(file_ops.RENAME, "/srv/a", "/srv/b")),
            file_ops.encode_request(file_ops.Request(file_ops.WRITE, handle=3, offset=9, data=b"xyz")),
            file_ops.encode_reply_head(0, 70) + file_ops.encode_list([(b"a", STAT), (b"bb", STAT)]),
            file_ops.encode_reply_head(-2, 0) + file_ops.encode_stat(STAT)]


def fuse_seeds() -> list[bytes]:
    """Requests as /dev/fuse gives them (protocol/fuse_abi.py)."""
    def request(opcode: int, body: bytes) -> bytes:
        return fuse_abi.IN_HEADER.pack(fuse_abi.IN_HEADER.size + len(body), opcode, 9, 1, 0, 0, 1, 0, 0) + body
    return [request(fuse_abi.LOOKUP, b"name\0"), request(fuse_abi.READ, fuse_abi.READ_IN.pack(1, 0, 4096, 0, 0, 0, 0)),
            request(fuse_abi.RENAME, fuse_abi.RENAME_IN.pack(1) + b"a\0b\0"),
            request(fuse_abi.SETATTR, bytes(fuse_abi.SETATTR_IN.size)),
            request(fuse_abi.BATCH_FORGET, fuse_abi.BATCH_FORGET_IN.pack(1, 0) + fuse_abi.FORGET_ONE.pack(2, 1)),
            request(fuse_abi.INIT, fuse_abi.INIT_IN.pack(7, 41, 1 << 17, 0xFFFFFFFF))]


def nft_ack(seq: int, err: int) -> bytes:
    """The kernel's netlink acknowledgement of message seq: its error, then the message's header."""
    return nft.NLMSGHDR.pack(36, nft.NLMSG_ERROR, 0, seq, 0) + err.to_bytes(4, "little", signed=True) \
        + nft.NLMSGHDR.pack(20, 0x0a00, 5, seq, 0)


def conntrack_dump() -> bytes:
    """A dump's answer as the kernel sends it: an entry (tuple, id, labels), then DONE."""
    tuple_orig = nft.nested(conntrack.CTA_TUPLE_PROTO, nft.attr(conntrack.CTA_PROTO_NUM, b"\x06"),
                            nft.attr(conntrack.CTA_PROTO_DST_PORT, b"\x1f\x9a"))
    body = nft.NFGENMSG.pack(2, 0, 0) + nft.nested(conntrack.CTA_TUPLE_ORIG, tuple_orig) \
        + nft.attr(conntrack.CTA_ID, b"\x01\x02\x03\x04") + nft.attr(conntrack.CTA_LABELS, nft.label_bits(80))
    return nft.NLMSGHDR.pack(nft.NLMSGHDR.size + len(body), conntrack.NFNL_SUBSYS_CTNETLINK << 8, 2, 1, 0) + body \
        + nft.NLMSGHDR.pack(20, conntrack.NLMSG_DONE, 2, 1, 0) + b"\0" * 4


def record_seeds() -> list[bytes]:
    """Runs of trace records, as a ring holds them (and HELLO, as the session queues it)."""
    sa = encode_inet("198.18.0.1", 8080)
    events = [trace_wire.SyscallEvent(1, 2, 42, (3, 4, 16, 0, 0, 0), -111,
                                      data=(trace_wire.Data(1, trace_wire.DATA_SOCKADDR, sa, 16),)),
              trace_wire.SyscallEvent(7, 7, 257, (-100, 5, 0, 0, 0, 0), 3,
                                      data=(trace_wire.Data(1, trace_wire.DATA_STRING, b"/etc/hosts", 10),)),
              trace_wire.SyscallEvent(7, 8, 59, (5, 6, 7, 0, 0, 0), 0, entry=True),
              trace_wire.SyscallEvent(9, 9, 39, (0,) * 6, 9)]
    records = []
    for e in events:
        frame = wire.decode_frame(trace_wire.encode_syscall(e))
        records.append(trace_wire.encode_record(frame.type, frame.payload, frame.flags))
    hello = wire.decode_frame(layer_wire.encode_hello(layer_wire.Hello(1, 1, 42, 1, "/usr/bin/prog", "abc/def"), 1))
    records.append(trace_wire.encode_record(layer_wire.MSG_HELLO, hello.payload))
    return [b"".join(records), *records]


def mutate(rng: random.Random, frame: bytes) -> bytes:
    b = bytearray(frame)
    for _ in range(rng.randint(0, 4)):
        how = rng.randrange(4)
        if how == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif how == 1:
            del b[rng.randrange(len(b) + 1):]
        elif how == 2 and len(b) >= 4:
            b[0:4] = rng.randrange(2**32).to_bytes(4, "little") if rng.random() < 0.5 else len(b).to_bytes(4, "little")
        else:
            b += rng.randbytes(rng.randrange(16))
    return bytes(b)


def _decode(blob: bytes) -> None:
    frame = wire.decode_frame(blob)
    decoder = DECODERS.get(frame.type)
    if decoder:
        decoder(frame)


def _stream(blob: bytes) -> None:
    reader = wire.FrameReader()
    for i in range(0, len(blob), 7):
        for frame in reader.feed(blob[i:i + 7]):
            decoder = DECODERS.get(frame.type)
            if decoder:
                decoder(frame)


def _file_ops(blob: bytes) -> None:
    head = file_ops.decode_request_head(blob[:file_ops.REQUEST.size])
    file_ops.decode_request(head, blob[file_ops.REQUEST.size:])


def _file_replies(blob: bytes) -> None:
    _, n = file_ops.decode_reply_head(blob[:file_ops.REPLY.size], file_ops.LIST_MAX)
    data = blob[file_ops.REPLY.size:]
    file_ops.decode_list(data)
    file_ops.decode_stat(data)


FUSE_BODIES = {fuse_abi.READ: fuse_abi.READ_IN, fuse_abi.WRITE: fuse_abi.WRITE_IN, fuse_abi.SETATTR: fuse_abi.SETATTR_IN,
               fuse_abi.OPEN: fuse_abi.OPEN_IN, fuse_abi.RELEASE: fuse_abi.RELEASE_IN, fuse_abi.INIT: fuse_abi.INIT_IN,
               fuse_abi.BATCH_FORGET: fuse_abi.BATCH_FORGET_IN, fuse_abi.CREATE: fuse_abi.CREATE_IN}


def _fuse(blob: bytes) -> None:
    req = fuse_abi.decode_request(memoryview(blob))
    if req.opcode in FUSE_BODIES:
        fuse_abi.fixed(req, FUSE_BODIES[req.opcode])
    if req.opcode == fuse_abi.INIT:
        fuse_abi.init_reply(req.unique, req, 1 << 20, 256, 1 << 20)
    elif req.opcode in (fuse_abi.LOOKUP, fuse_abi.UNLINK):
        fuse_abi.names(req)
    elif req.opcode == fuse_abi.RENAME:
        fuse_abi.names(req, fuse_abi.RENAME_IN.size, 2)


def _acks(blob: bytes) -> None:
    for seq, err in nft.parse_acks(blob):
        assert 0 <= seq < 2**32 and -(2**31) <= -err < 2**31


def _conntrack(blob: bytes) -> None:
    entries, _, err = conntrack.parse_entries(blob)
    assert abs(err) <= 2**31
    for entry in entries:
        conntrack.labels(entry)


def _datagrams(blob: bytes) -> None:
    reader = agent_wire.RecordReader()
    for i in range(0, len(blob), 5):
        for record in reader.feed(blob[i:i + 5]):
            agent_wire.decode_datagram(record)
    agent_wire.decode_datagram(blob)


def packet_seeds() -> list[bytes]:
    """TCP segments to port 8090 as a capture gives them: a SYN, bytes, a FIN, over IPv4 and IPv6."""
    out = []
    for flags, seq, payload in ((mirror.TCP_SYN, 7, b""), (mirror.TCP_ACK, 8, b"GET / HTTP/1.1\r\n\r\n"),
                                (mirror.TCP_FIN | mirror.TCP_ACK, 26, b"")):
        tcp = struct.pack(">HHIIBBHHH", 40000, 8090, seq, 1, 5 << 4, flags, 65535, 0, 0) + payload
        out.append(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, b"\n\0\0\2",
                               b"\n\0\0\1") + tcp)
        out.append(struct.pack(">IHBB16s16s", 6 << 28, len(tcp), 6, 64, b"\xfd" + b"\0" * 14 + b"\2",
                               b"\xfd" + b"\0" * 14 + b"\1") + tcp)
    return out


_REASSEMBLY = mirror.Reassembly(8090)


def _packets(blob: bytes) -> None:
    for event in _REASSEMBLY.feed(blob, 0.0):
        assert type(event) in (mirror.Open, mirror.Data, mirror.End), event
    if len(_REASSEMBLY.streams) > 1000:
        _REASSEMBLY.expire(1e9, 0.0)


def _records(blob: bytes) -> None:
    pos = 0
    while pos < len(blob):
        try:
            _, pos = trace_wire.decode_record(blob, pos)
        except wire.ProtocolError:
            pos = trace_wire.record_span(blob, pos)  # raises when the run cannot be followed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    base, records = seeds() + packet_seeds(), record_seeds()
    layer = ctypes.CDLL(str(layer_path()))
    layer.tether_route_verdict.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_long]
    sa = encode_inet("10.1.2.3", 53)
    rule_alphabet = "LR*0123456789abcdef/;46x:"
    start = time.perf_counter()
    for n in range(args.inputs):
        pick = n % 10
        parsers = (_decode, _stream, _records, _acks, _conntrack, _file_ops, _file_replies, _fuse, _datagrams,
                   _packets)
        if pick < 5:
            blob = mutate(rng, rng.choice(base))
        elif pick < 7:
            blob, parsers = mutate(rng, rng.choice(records)), (_records,)
        elif pick < 9:
            blob = rng.randbytes(rng.randrange(64))
        else:
            rules = "".join(rng.choice(rule_alphabet) for _ in range(rng.randrange(40)))
            if rng.random() < 0.5:
                rules = "R4/0a000000/8/53;" + rules
            verdict = layer.tether_route_verdict(rules.encode(), sa, len(sa))
            if verdict not in (-2, 0, 1):
                print(f"route.c gave {verdict} for {rules!r}")
                return 1
            continue
        for parse in parsers:
            try:
                parse(blob)
            except (wire.ProtocolError, auth.AuthRefused, nft.NftError):  # AuthRefused: an ERROR where AUTH_* was due
                pass
            except Exception as e:  # noqa: BLE001 - a crash is what this looks for
                print(f"{parse.__name__}: {type(e).__name__}: {e} on input {blob.hex()}")
                return 1
    took = time.perf_counter() - start
    print(f"{args.inputs} inputs, no crash, {took:.1f} s ({args.inputs / took:,.0f} inputs/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
