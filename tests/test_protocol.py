"""The wire: the C header and the Python definitions agree; parsers survive any input."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol import wire

HEADER = Path(__file__).resolve().parents[1] / "layer" / "link" / "protocol.h"

# (C expression, Python value) pairs: every number and layout both sides rely on.
FACTS = {
    "TETHER_PROTOCOL_VERSION": wire.PROTOCOL_VERSION,
    "TETHER_FRAME_MAX": wire.FRAME_MAX,
    "TETHER_MSG_HELLO": wire.MSG_HELLO,
    "TETHER_MSG_HELLO_REPLY": wire.MSG_HELLO_REPLY,
    "TETHER_MSG_PLAN_REQUEST": wire.MSG_PLAN_REQUEST,
    "TETHER_MSG_RING_REQUEST": wire.MSG_RING_REQUEST,
    "TETHER_MSG_RING_REPLY": wire.MSG_RING_REPLY,
    "sizeof(struct tether_ring_request)": wire.RING_REQUEST.size,
    "offsetof(struct tether_ring_request, reserved)": 4,
    "TETHER_MSG_PLAN_REPLY": wire.MSG_PLAN_REPLY,
    "TETHER_MSG_SYSCALL": wire.MSG_SYSCALL,
    "TETHER_MSG_AGENT_HELLO": wire.MSG_AGENT_HELLO,
    "TETHER_MSG_AGENT_HELLO_REPLY": wire.MSG_AGENT_HELLO_REPLY,
    "TETHER_MSG_ERROR": wire.MSG_ERROR,
    "TETHER_MSG_CONNECT": wire.MSG_CONNECT,
    "TETHER_MSG_CONNECT_REPLY": wire.MSG_CONNECT_REPLY,
    "TETHER_MSG_OPEN": wire.MSG_OPEN,
    "TETHER_MSG_OPEN_REPLY": wire.MSG_OPEN_REPLY,
    "TETHER_MSG_ENV": wire.MSG_ENV,
    "TETHER_MSG_SOCKET": wire.MSG_SOCKET,
    "TETHER_MSG_SOCKET_REPLY": wire.MSG_SOCKET_REPLY,
    "TETHER_MSG_RESOLVE": wire.MSG_RESOLVE,
    "TETHER_MSG_RESOLVE_REPLY": wire.MSG_RESOLVE_REPLY,
    "TETHER_MSG_NAMEINFO": wire.MSG_NAMEINFO,
    "TETHER_MSG_NAMEINFO_REPLY": wire.MSG_NAMEINFO_REPLY,
    "sizeof(struct tether_nameinfo)": wire.NAMEINFO.size,
    "sizeof(struct tether_socket)": wire.SOCKET.size,
    "sizeof(struct tether_resolve)": wire.RESOLVE.size,
    "offsetof(struct tether_resolve, family)": 4,
    "offsetof(struct tether_resolve, socktype)": 8,
    "offsetof(struct tether_resolve, protocol)": 12,
    "sizeof(struct tether_resolve_reply)": wire.RESOLVE_REPLY.size,
    "offsetof(struct tether_resolve_reply, err)": 4,
    "sizeof(struct tether_resolve_entry)": wire.RESOLVE_ENTRY.size,
    "offsetof(struct tether_resolve_entry, socktype)": 2,
    "offsetof(struct tether_resolve_entry, protocol)": 4,
    "offsetof(struct tether_socket, socktype)": 2,
    "offsetof(struct tether_socket, protocol)": 4,
    "offsetof(struct tether_socket, count)": 8,
    "TETHER_SOCKETS_MAX": wire.SOCKETS_MAX,
    "TETHER_MODE_SOCKETS": wire.MODE_SOCKETS,
    "TETHER_CAP_SOCKETS": wire.CAP_SOCKETS,
    "TETHER_MSG_ENV_REPLY": wire.MSG_ENV_REPLY,
    "TETHER_MSG_AUTH_CHALLENGE": wire.MSG_AUTH_CHALLENGE,
    "TETHER_MSG_AUTH_RESPONSE": wire.MSG_AUTH_RESPONSE,
    "TETHER_MSG_AUTH_OK": wire.MSG_AUTH_OK,
    "TETHER_MSG_READ_FILE": wire.MSG_READ_FILE,
    "TETHER_MSG_READ_FILE_REPLY": wire.MSG_READ_FILE_REPLY,
    "TETHER_MSG_STREAM": wire.MSG_STREAM,
    "TETHER_MSG_STREAM_REPLY": wire.MSG_STREAM_REPLY,
    "TETHER_FLAG_RELAYED": wire.FLAG_RELAYED,
    "TETHER_FLAG_MORE": wire.FLAG_MORE,
    "TETHER_MODE_NET": wire.MODE_NET,
    "TETHER_MODE_DNS": wire.MODE_DNS,
    "sizeof(struct tether_connect_reply)": wire.CONNECT_REPLY.size,
    "sizeof(struct tether_open)": wire.OPEN.size,
    "offsetof(struct tether_open, mode)": 4,
    "sizeof(struct tether_error)": wire.ERROR.size,
    "sizeof(struct tether_connect)": wire.CONNECT.size,
    "offsetof(struct tether_connect, socktype)": 2,
    "offsetof(struct tether_connect, protocol)": 4,
    "offsetof(struct tether_connect, timeout_ms)": 8,
    "TETHER_FLAG_ENTRY": wire.FLAG_ENTRY,
    "TETHER_MODE_TRACE": wire.MODE_TRACE,
    "TETHER_DATA_STRING": wire.DATA_STRING,
    "TETHER_DATA_SOCKADDR": wire.DATA_SOCKADDR,
    "sizeof(struct tether_frame)": wire.FRAME.size,
    "offsetof(struct tether_frame, type)": 4,
    "offsetof(struct tether_frame, flags)": 6,
    "offsetof(struct tether_frame, id)": 8,
    "sizeof(struct tether_hello)": wire.HELLO.size,
    "offsetof(struct tether_hello, capabilities)": 4,
    "offsetof(struct tether_hello, pid)": 8,
    "offsetof(struct tether_hello, ppid)": 12,
    "sizeof(struct tether_hello_reply)": wire.HELLO_REPLY.size,
    "offsetof(struct tether_hello_reply, mode)": 4,
    "sizeof(struct tether_syscall_event)": wire.SYSCALL_EVENT.size,
    "offsetof(struct tether_syscall_event, tid)": 4,
    "offsetof(struct tether_syscall_event, nr)": 8,
    "offsetof(struct tether_syscall_event, args)": 16,
    "offsetof(struct tether_syscall_event, ret)": 64,
    "sizeof(struct tether_data)": wire.DATA.size,
    "offsetof(struct tether_data, kind)": 1,
    "offsetof(struct tether_data, length)": 2,
    "offsetof(struct tether_data, full_length)": 4,
    "TETHER_MSG_RING_WAKE": wire.MSG_RING_WAKE,
    "TETHER_CAP_TRACE_RING": wire.CAP_TRACE_RING,
    "TETHER_RING_MAGIC": wire.RING_MAGIC,
    "TETHER_RING_VERSION": wire.RING_VERSION,
    "sizeof(struct tether_ring)": wire.RING.size,
    "offsetof(struct tether_ring, version)": 4,
    "offsetof(struct tether_ring, size)": 8,
    "offsetof(struct tether_ring, head)": wire.RING_HEAD,
    "offsetof(struct tether_ring, published)": wire.RING_PUBLISHED,
    "offsetof(struct tether_ring, waiters)": wire.RING_WAITERS,
    "offsetof(struct tether_ring, tail)": wire.RING_TAIL,
    "offsetof(struct tether_ring, space)": wire.RING_SPACE,
    "offsetof(struct tether_ring, sleeping)": wire.RING_SLEEPING,
    "offsetof(struct tether_ring, closed)": wire.RING_CLOSED,
    "sizeof(struct tether_record)": wire.RECORD.size,
    "offsetof(struct tether_record, type)": 4,
    "offsetof(struct tether_record, flags)": 6,
}


def test_c_header_and_python_agree(tmp_path):
    src = tmp_path / "facts.c"
    lines = [f'#include "{HEADER}"', "#include <stddef.h>", "#include <stdio.h>", "int main(void) {"]
    lines += [f'    printf("%ld\\n", (long)({expr}));' for expr in FACTS]
    src.write_text("\n".join(lines + ["    return 0;", "}"]) + "\n")
    subprocess.run(["gcc", "-Wall", "-Werror", "-o", tmp_path / "facts", src], check=True)
    values = subprocess.run([tmp_path / "facts"], capture_output=True, text=True, check=True).stdout.split()
    assert dict(zip(FACTS, map(int, values), strict=True)) == FACTS


events = st.builds(
    wire.SyscallEvent,
    pid=st.integers(1, 2**31 - 1), tid=st.integers(1, 2**31 - 1), nr=st.integers(0, 511),
    args=st.tuples(*[st.integers(-(2**63), 2**63 - 1)] * 6), ret=st.integers(-4095, 2**63 - 1),
    entry=st.booleans(),
    data=st.lists(st.builds(lambda arg, kind, value, extra: wire.Data(arg, kind, value, len(value) + extra),
                            st.integers(0, 5), st.sampled_from([wire.DATA_STRING, wire.DATA_SOCKADDR]),
                            st.binary(max_size=256), st.integers(0, 3)), max_size=2).map(tuple),
)


@given(events)
def test_syscall_events_round_trip(e):
    assert wire.decode_syscall(wire.decode_frame(wire.encode_syscall(e))) == e


@given(st.text(max_size=200), st.text(max_size=90), st.integers(0, 2**31 - 1))
def test_hello_round_trip(exe, build_id, pid):
    h = wire.Hello(wire.PROTOCOL_VERSION, 0, pid, 1, exe, build_id)
    assert wire.decode_hello(wire.decode_frame(wire.encode_hello(h, 7))) == h


DECODERS = [wire.decode_syscall, wire.decode_hello, wire.decode_hello_reply,
            wire.decode_plan_request, wire.decode_plan_reply, wire.decode_ring_request, wire.decode_agent_hello,
            wire.decode_error, wire.decode_connect, wire.decode_connect_reply, wire.decode_open, wire.decode_socket,
            wire.decode_resolve, wire.decode_resolve_reply, wire.decode_nameinfo, wire.decode_nameinfo_reply,
            lambda f: wire.EnvAssembler().feed(f), wire.decode_stream, wire.decode_stream_reply,
            wire.decode_read_file, lambda f: wire.FileAssembler().feed(f),
            lambda f: wire.decode_auth(f, wire.MSG_AUTH_RESPONSE), lambda f: wire.decode_auth(f, wire.MSG_AUTH_OK)]


@given(st.integers(1, 4095), st.text(max_size=300), st.binary(min_size=2, max_size=128),
       st.integers(0, 2**32 - 1))
def test_error_and_connect_round_trip(err, message, sockaddr, timeout_ms):
    e = wire.ErrorReply(err, message)
    assert wire.decode_error(wire.decode_frame(wire.encode_error(e, 9))) == e
    c = wire.Connect(2, 1, 0, timeout_ms, sockaddr)
    assert wire.decode_connect(wire.decode_frame(wire.encode_connect(c, 9))) == c


wire_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")  # what C strings carry
names = st.text(wire_chars, min_size=1, max_size=253)
addrinfos = st.builds(wire.AddrInfo, st.integers(0, 65535), st.integers(0, 65535),
                      st.integers(-(2**31), 2**31 - 1), st.binary(max_size=128))


@given(names, st.text(wire_chars, max_size=32),
       st.tuples(*[st.integers(-(2**31), 2**31 - 1)] * 4))
def test_resolve_round_trip(node, service, hints):
    r = wire.Resolve(node, service, *hints)
    assert wire.decode_resolve(wire.decode_frame(wire.encode_resolve(r, 3))) == r


@given(st.text(wire_chars, max_size=255), st.lists(addrinfos, max_size=20), st.integers(-12, -1),
       st.integers(0, 200))
def test_resolve_reply_round_trip(canonname, entries, status, err):
    ok = wire.ResolveReply(0, 0, canonname, tuple(entries))
    assert wire.decode_resolve_reply(wire.decode_frame(wire.encode_resolve_reply(ok, 3))) == ok
    failed = wire.ResolveReply(status, err)
    assert wire.decode_resolve_reply(wire.decode_frame(wire.encode_resolve_reply(failed, 3))) == failed


@given(st.binary(max_size=128), st.integers(-(2**31), 2**31 - 1), st.text(wire_chars, max_size=255),
       st.text(wire_chars, max_size=32), st.integers(-12, 0), st.integers(0, 200))
def test_nameinfo_round_trip(sockaddr, flags, host, service, status, err):
    assert wire.decode_nameinfo(wire.decode_frame(wire.encode_nameinfo(sockaddr, flags, 5))) == (sockaddr, flags)
    r = wire.NameInfo(status, err, host, service)
    assert wire.decode_nameinfo_reply(wire.decode_frame(wire.encode_nameinfo_reply(r, 5))) == r


def test_resolve_reply_keeps_what_fits_one_frame():
    many = wire.ResolveReply(entries=tuple(wire.AddrInfo(10, 1, 6, bytes(28)) for _ in range(500)))
    frame = wire.encode_resolve_reply(many, 3)
    assert len(frame) <= wire.FRAME_MAX
    assert 0 < len(wire.decode_resolve_reply(wire.decode_frame(frame)).entries) < 500


@given(st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**32 - 1), st.text(min_size=1, max_size=300))
def test_open_round_trip(flags, mode, path):
    o = wire.Open(flags, mode, path)
    if "\0" in path:
        with pytest.raises(wire.ProtocolError):
            wire.decode_open(wire.decode_frame(wire.encode_open(o, 4)))
    else:
        assert wire.decode_open(wire.decode_frame(wire.encode_open(o, 4))) == o


@given(st.dictionaries(st.text(min_size=1, max_size=40).filter(lambda k: "=" not in k and "\0" not in k),
                       st.text(max_size=3000).filter(lambda v: "\0" not in v), max_size=20))
def test_env_reply_round_trips_over_several_frames(env):
    frames = wire.encode_env_reply(env, 5)
    assert all(len(f) <= wire.FRAME_MAX for f in frames)
    got = wire.EnvAssembler()
    for f in frames:
        got.feed(wire.decode_frame(f))
    assert got.complete and got.env() == env


@given(st.text(max_size=300), st.text(max_size=90), st.text(max_size=600))
def test_plan_request_and_reply_round_trip(path, build_id, plan):
    req = wire.PlanRequest(path, build_id)
    assert wire.decode_plan_request(wire.decode_frame(wire.encode_plan_request(req, 3))) == req
    assert wire.decode_plan_reply(wire.decode_frame(wire.encode_plan_reply(plan, 3))) == plan


@settings(max_examples=500)
@given(st.binary(max_size=300), st.integers(0, len(DECODERS) - 1))
def test_garbage_gives_protocol_error_only(blob, which):
    try:
        DECODERS[which](wire.decode_frame(blob))
    except wire.ProtocolError as e:
        assert "\n" not in str(e)
    except wire.AuthRefused:  # an ERROR frame where an AUTH_* frame was due: a clear refusal
        pass


@settings(max_examples=300)
@given(events, st.data())
def test_damaged_frames_give_protocol_error_only(e, data):
    buf = bytearray(wire.encode_syscall(e))
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    try:
        wire.decode_syscall(wire.decode_frame(bytes(buf[:cut])))
    except wire.ProtocolError:
        pass


@given(st.lists(events, max_size=5), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_stream_reader_splits_anywhere(evs, chunks):
    stream = b"".join(wire.encode_syscall(e) for e in evs)
    reader, frames, pos, i = wire.FrameReader(), [], 0, 0
    while pos < len(stream):
        step = chunks[i % len(chunks)]
        frames += reader.feed(stream[pos:pos + step])
        pos, i = pos + step, i + 1
    assert [wire.decode_syscall(f) for f in frames] == evs


def test_oversized_length_is_refused_before_buffering():
    reader = wire.FrameReader()
    with pytest.raises(wire.ProtocolError, match="outside"):
        reader.feed(wire.FRAME.pack(10**9, wire.MSG_SYSCALL, 0, 0))


sockaddrs = st.binary(min_size=2, max_size=128)


@given(st.integers(0, 4095), sockaddrs, sockaddrs, st.integers(0, 2**32 - 1))
def test_relayed_connect_and_stream_round_trip(status, local, peer, timeout_ms):
    relayed = wire.Relayed(local, peer)
    frame = wire.decode_frame(wire.encode_connect_reply(7, status, relayed))
    assert frame.flags == wire.FLAG_RELAYED and wire.decode_connect_reply(frame) == (status, relayed)
    assert wire.decode_connect_reply(wire.decode_frame(wire.encode_connect_reply(7, status))) == (status, None)
    c = wire.Connect(10, 2, 17, timeout_ms, local)
    assert wire.decode_stream(wire.decode_frame(wire.encode_stream(c, 3))) == c
    assert wire.decode_stream_reply(wire.decode_frame(wire.encode_stream_reply(relayed, 3))) == relayed


@given(st.binary(max_size=20000), names)
def test_read_file_round_trips_over_several_frames(data, path):
    assert wire.decode_read_file(wire.decode_frame(wire.encode_read_file("/" + path, 4))) == "/" + path
    assembler = wire.FileAssembler()
    for frame in wire.encode_read_file_reply(data, 4):
        assert not assembler.complete
        assembler.feed(wire.decode_frame(frame))
    assert assembler.complete and assembler.data == data


@given(st.lists(st.binary(max_size=2000), max_size=8), st.lists(st.integers(1, 700), min_size=1, max_size=30))
def test_datagrams_survive_any_split(datagrams, cuts):
    stream = b"".join(wire.encode_datagram(d) for d in datagrams)
    reader, got, pos = wire.DatagramReader(), [], 0
    for n in cuts * (len(stream) // sum(cuts) + 1):
        got += reader.feed(stream[pos:pos + n])
        pos += n
    assert got == datagrams


def test_the_token_proves_itself_both_ways_and_never_travels():
    from tether.protocol import auth

    token, other = b"t" * 32, b"o" * 32
    nonce = auth.nonce()
    challenge = wire.decode_frame(wire.encode_auth_challenge(nonce))
    response, expected = auth.respond(token, challenge)
    assert token not in response
    ok = auth.check_response(token, nonce, wire.decode_frame(response))
    assert ok is not None and auth.check_ok(expected, wire.decode_frame(ok))
    assert auth.check_response(other, nonce, wire.decode_frame(response)) is None  # wrong token
    assert auth.check_response(token, auth.nonce(), wire.decode_frame(response)) is None  # replayed
    _, expected_other = auth.respond(other, challenge)
    assert not auth.check_ok(expected_other, wire.decode_frame(ok))  # an agent without our token
    refused = wire.decode_frame(wire.encode_error(wire.ErrorReply(13, "wrong token"), 0))
    with pytest.raises(wire.AuthRefused, match="wrong token"):
        auth.check_ok(expected, refused)


def test_token_files_must_be_private_and_long_enough(tmp_path):
    from tether.protocol import auth

    path = tmp_path / "t"
    auth.new_token_file(str(path))
    assert path.stat().st_mode & 0o777 == 0o600 and len(auth.load_token(str(path))) == 64
    with pytest.raises(auth.TokenError, match="cannot create"):
        auth.new_token_file(str(path))  # never overwritten
    path.chmod(0o640)
    with pytest.raises(auth.TokenError, match="chmod 600"):
        auth.load_token(str(path))
    path.write_text("short\n")
    path.chmod(0o600)
    with pytest.raises(auth.TokenError, match="at least 16"):
        auth.load_token(str(path))


def test_ring_header_struct_and_offsets_agree():
    """wire.RING (how the session writes the header) puts each field where the offsets (how it
    reads and writes them afterwards, and what the C header says) expect it."""
    import struct

    fields = dict(magic=1, version=2, size=3, head=4, published=5, waiters=6, tail=7, space=8, sleeping=9,
                  closed=10)
    blob = wire.RING.pack(*fields.values())
    at = {"magic": (0, "I"), "version": (4, "I"), "size": (8, "Q"), "head": (wire.RING_HEAD, "Q"),
          "published": (wire.RING_PUBLISHED, "Q"), "waiters": (wire.RING_WAITERS, "I"), "tail": (wire.RING_TAIL, "Q"), "space": (wire.RING_SPACE, "I"),
          "sleeping": (wire.RING_SLEEPING, "I"), "closed": (wire.RING_CLOSED, "I")}
    assert {name: struct.unpack_from("<" + fmt, blob, off)[0] for name, (off, fmt) in at.items()} == fields


@given(st.integers(min_value=1, max_value=2**31 - 1))
def test_ring_request_round_trips(pid):
    assert wire.decode_ring_request(wire.decode_frame(wire.encode_ring_request(pid, 5))) == pid
    reply = wire.decode_frame(wire.encode_ring_reply(5))
    assert (reply.type, reply.id, reply.payload) == (wire.MSG_RING_REPLY, 5, b"")
