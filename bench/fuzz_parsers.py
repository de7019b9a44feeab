#!/usr/bin/env python3
"""A million inputs through every parser of the wire, and the layer's rules parser.

    python3 bench/fuzz_parsers.py [--inputs 1000000] [--seed N]

Inputs are valid frames of every type, mutated (bytes flipped, cut, lengths rewritten,
garbage appended) and plain random bytes, fed to decode_frame and the decoder for the frame
type, to FrameReader in random chunks, and to the trace ring's record decoder as a run of
records; runs of valid trace records, mutated alike, to the record decoder; and random rule
strings to layer/net/route.c through libtether.so. Any exception other than ProtocolError, or a C verdict outside -2..1, is a
failure (exit 1, the input printed). Prints inputs per second; the hypothesis tests in
tests/test_protocol.py are the small version that runs in CI.
"""
from __future__ import annotations

import argparse
import ctypes
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tether.layer import layer_path  # noqa: E402
from tether.protocol import wire  # noqa: E402
from tether.protocol.sockaddr import encode_inet  # noqa: E402

DECODERS = {
    wire.MSG_HELLO: wire.decode_hello, wire.MSG_HELLO_REPLY: wire.decode_hello_reply,
    wire.MSG_PLAN_REQUEST: wire.decode_plan_request, wire.MSG_PLAN_REPLY: wire.decode_plan_reply,
    wire.MSG_RING_REQUEST: wire.decode_ring_request,
    wire.MSG_AGENT_HELLO: wire.decode_agent_hello, wire.MSG_AGENT_HELLO_REPLY: wire.decode_agent_hello,
    wire.MSG_ERROR: wire.decode_error, wire.MSG_SYSCALL: wire.decode_syscall,
    wire.MSG_CONNECT: wire.decode_connect, wire.MSG_CONNECT_REPLY: wire.decode_connect_reply,
    wire.MSG_OPEN: wire.decode_open, wire.MSG_SOCKET: wire.decode_socket,
    wire.MSG_RESOLVE: wire.decode_resolve, wire.MSG_RESOLVE_REPLY: wire.decode_resolve_reply,
    wire.MSG_NAMEINFO: wire.decode_nameinfo, wire.MSG_NAMEINFO_REPLY: wire.decode_nameinfo_reply,
    wire.MSG_ENV_REPLY: lambda f: wire.EnvAssembler().feed(f),
    wire.MSG_STREAM: wire.decode_stream, wire.MSG_STREAM_REPLY: wire.decode_stream_reply,
    wire.MSG_READ_FILE: wire.decode_read_file, wire.MSG_READ_FILE_REPLY: lambda f: wire.FileAssembler().feed(f),
    wire.MSG_AUTH_RESPONSE: lambda f: wire.decode_auth(f, wire.MSG_AUTH_RESPONSE),
    wire.MSG_AUTH_OK: lambda f: wire.decode_auth(f, wire.MSG_AUTH_OK),
}


def seeds() -> list[bytes]:
    sa = encode_inet("198.18.0.1", 8080)
    return [
        wire.encode_hello(wire.Hello(1, 0, 42, 1, "/usr/bin/prog", "abc/def"), 1),
        wire.encode_hello_reply(wire.HelloReply(1, 6, "1;id;funnel=10:00", "/tmp/a.sock", "R4/c6120000/15/0;*L"), 1),
        wire.encode_plan_request(wire.PlanRequest("/lib/x.so", "id"), 2),
        wire.encode_plan_reply("plan", 2),
        wire.encode_agent_hello(1, 0, 3), wire.encode_error(wire.ErrorReply(111, "refused"), 4),
        wire.encode_syscall(wire.SyscallEvent(1, 2, 42, (3, 4, 16, 0, 0, 0), -111,
                                              data=(wire.Data(1, wire.DATA_SOCKADDR, sa, 16),))),
        wire.encode_connect(wire.Connect(2, 1, 0, 0, sa), 5), wire.encode_connect_reply(5, 115),
        wire.encode_open(wire.Open(0, 0, "/etc/hosts"), 6), wire.encode_socket(10, 2, 17, 7),
        wire.encode_resolve(wire.Resolve("db.internal", "443", 0x20, 2, 1, 6), 9),
        wire.encode_resolve_reply(wire.ResolveReply(0, 0, "db", (wire.AddrInfo(2, 1, 6, bytes(16)),)), 9),
        wire.encode_nameinfo(sa, 8, 10), wire.encode_nameinfo_reply(wire.NameInfo(0, 0, "db.internal", "http"), 10),
        *wire.encode_env_reply({"A": "1", "B": "x" * 50}, 8),
        wire.encode_connect_reply(5, 0, wire.Relayed(sa, sa)), wire.encode_stream(wire.Connect(2, 1, 0, 0, sa), 1),
        wire.encode_stream_reply(wire.Relayed(sa, sa), 1), wire.encode_read_file("/etc/hosts", 11),
        *wire.encode_read_file_reply(b"127.0.0.1 localhost\n" * 300, 11),
        wire.encode_auth_response(bytes(32), bytes(range(32))), wire.encode_auth_ok(bytes(32)),
    ]


def record_seeds() -> list[bytes]:
    """Runs of trace records, as a ring holds them (and HELLO, as the session queues it)."""
    sa = encode_inet("198.18.0.1", 8080)
    events = [wire.SyscallEvent(1, 2, 42, (3, 4, 16, 0, 0, 0), -111, data=(wire.Data(1, wire.DATA_SOCKADDR, sa, 16),)),
              wire.SyscallEvent(7, 7, 257, (-100, 5, 0, 0, 0, 0), 3,
                                data=(wire.Data(1, wire.DATA_STRING, b"/etc/hosts", 10),)),
              wire.SyscallEvent(7, 8, 59, (5, 6, 7, 0, 0, 0), 0, entry=True), wire.SyscallEvent(9, 9, 39, (0,) * 6, 9)]
    records = []
    for e in events:
        frame = wire.decode_frame(wire.encode_syscall(e))
        records.append(wire.encode_record(frame.type, frame.payload, frame.flags))
    hello = wire.decode_frame(wire.encode_hello(wire.Hello(1, 1, 42, 1, "/usr/bin/prog", "abc/def"), 1))
    records.append(wire.encode_record(wire.MSG_HELLO, hello.payload))
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


def _records(blob: bytes) -> None:
    pos = 0
    while pos < len(blob):
        try:
            _, pos = wire.decode_record(blob, pos)
        except wire.ProtocolError:
            pos = wire.record_span(blob, pos)  # raises when the run cannot be followed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    base, records = seeds(), record_seeds()
    layer = ctypes.CDLL(str(layer_path()))
    layer.tether_route_verdict.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_long]
    sa = encode_inet("10.1.2.3", 53)
    rule_alphabet = "LR*0123456789abcdef/;46x:"
    start = time.perf_counter()
    for n in range(args.inputs):
        pick = n % 10
        parsers = (_decode, _stream, _records)
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
            except (wire.ProtocolError, wire.AuthRefused):  # AuthRefused: an ERROR where AUTH_* was due
                pass
            except Exception as e:  # noqa: BLE001 - a crash is what this looks for
                print(f"{parse.__name__}: {type(e).__name__}: {e} on input {blob.hex()}")
                return 1
    took = time.perf_counter() - start
    print(f"{args.inputs} inputs, no crash, {took:.1f} s ({args.inputs / took:,.0f} inputs/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
