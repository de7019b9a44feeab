"""The wire: the C header and the Python definitions agree; parsers survive any input."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol import agent_wire, auth, file_ops, files_wire, fuse_abi, layer_wire, trace_wire, wire

HEADER = Path(__file__).resolve().parents[1] / "layer" / "link" / "protocol.h"

# (C expression, Python value) pairs: every number and layout both sides rely on.
FACTS = {
    "TETHER_PROTOCOL_VERSION": wire.PROTOCOL_VERSION,
    "TETHER_FRAME_MAX": wire.FRAME_MAX,
    "TETHER_MSG_HELLO": layer_wire.MSG_HELLO,
    "TETHER_MSG_HELLO_REPLY": layer_wire.MSG_HELLO_REPLY,
    "TETHER_MSG_PLAN_REQUEST": layer_wire.MSG_PLAN_REQUEST,
    "TETHER_MSG_RING_REQUEST": layer_wire.MSG_RING_REQUEST,
    "TETHER_MSG_RING_REPLY": layer_wire.MSG_RING_REPLY,
    "TETHER_MSG_EXEC_NOTICE": layer_wire.MSG_EXEC_NOTICE,
    "TETHER_MSG_EXEC_NOTICE_REPLY": layer_wire.MSG_EXEC_NOTICE_REPLY,
    "TETHER_MODE_INJECT": layer_wire.MODE_INJECT,
    "sizeof(struct tether_exec_notice)": layer_wire.EXEC_NOTICE.size,
    "offsetof(struct tether_exec_notice, tid)": 4,
    "sizeof(struct tether_exec_notice_reply)": layer_wire.EXEC_NOTICE_REPLY.size,
    "sizeof(struct tether_ring_request)": layer_wire.RING_REQUEST.size,
    "offsetof(struct tether_ring_request, reserved)": 4,
    "TETHER_MSG_PLAN_REPLY": layer_wire.MSG_PLAN_REPLY,
    "TETHER_MSG_SYSCALL": trace_wire.MSG_SYSCALL,
    "TETHER_MSG_AGENT_HELLO": agent_wire.MSG_AGENT_HELLO,
    "TETHER_MSG_AGENT_HELLO_REPLY": agent_wire.MSG_AGENT_HELLO_REPLY,
    "TETHER_MSG_ERROR": wire.MSG_ERROR,
    "TETHER_MSG_CONNECT": agent_wire.MSG_CONNECT,
    "TETHER_MSG_CONNECT_REPLY": agent_wire.MSG_CONNECT_REPLY,
    "TETHER_MSG_OPEN": agent_wire.MSG_OPEN,
    "TETHER_MSG_OPEN_REPLY": agent_wire.MSG_OPEN_REPLY,
    "TETHER_MSG_ENV": agent_wire.MSG_ENV,
    "TETHER_MSG_SOCKET": agent_wire.MSG_SOCKET,
    "TETHER_MSG_SOCKET_REPLY": agent_wire.MSG_SOCKET_REPLY,
    "TETHER_MSG_RESOLVE": agent_wire.MSG_RESOLVE,
    "TETHER_MSG_RESOLVE_REPLY": agent_wire.MSG_RESOLVE_REPLY,
    "TETHER_MSG_NAMEINFO": agent_wire.MSG_NAMEINFO,
    "TETHER_MSG_NAMEINFO_REPLY": agent_wire.MSG_NAMEINFO_REPLY,
    "sizeof(struct tether_nameinfo)": agent_wire.NAMEINFO.size,
    "sizeof(struct tether_socket)": agent_wire.SOCKET.size,
    "sizeof(struct tether_resolve)": agent_wire.RESOLVE.size,
    "offsetof(struct tether_resolve, family)": 4,
    "offsetof(struct tether_resolve, socktype)": 8,
    "offsetof(struct tether_resolve, protocol)": 12,
    "sizeof(struct tether_resolve_reply)": agent_wire.RESOLVE_REPLY.size,
    "offsetof(struct tether_resolve_reply, err)": 4,
    "sizeof(struct tether_resolve_entry)": agent_wire.RESOLVE_ENTRY.size,
    "offsetof(struct tether_resolve_entry, socktype)": 2,
    "offsetof(struct tether_resolve_entry, protocol)": 4,
    "offsetof(struct tether_socket, socktype)": 2,
    "offsetof(struct tether_socket, protocol)": 4,
    "offsetof(struct tether_socket, count)": 8,
    "TETHER_SOCKETS_MAX": agent_wire.SOCKETS_MAX,
    "TETHER_MODE_SOCKETS": layer_wire.MODE_SOCKETS,
    "TETHER_CAP_SOCKETS": agent_wire.CAP_SOCKETS,
    "TETHER_MSG_ENV_REPLY": agent_wire.MSG_ENV_REPLY,
    "TETHER_MSG_AUTH_CHALLENGE": auth.MSG_AUTH_CHALLENGE,
    "TETHER_MSG_AUTH_RESPONSE": auth.MSG_AUTH_RESPONSE,
    "TETHER_MSG_AUTH_OK": auth.MSG_AUTH_OK,
    "TETHER_MSG_AUTH_TICKET": auth.MSG_AUTH_TICKET,
    "TETHER_MSG_READ_FILE": agent_wire.MSG_READ_FILE,
    "TETHER_MSG_READ_FILE_REPLY": agent_wire.MSG_READ_FILE_REPLY,
    "TETHER_MSG_STREAM": agent_wire.MSG_STREAM,
    "TETHER_MSG_STREAM_REPLY": agent_wire.MSG_STREAM_REPLY,
    "TETHER_FLAG_RELAYED": agent_wire.FLAG_RELAYED,
    "TETHER_FLAG_MORE": wire.FLAG_MORE,
    "TETHER_MODE_NET": layer_wire.MODE_NET,
    "TETHER_MODE_INCOMING": layer_wire.MODE_INCOMING,
    "TETHER_MSG_INCOMING": agent_wire.MSG_INCOMING,
    "TETHER_MSG_INCOMING_REPLY": agent_wire.MSG_INCOMING_REPLY,
    "TETHER_MSG_LISTEN": agent_wire.MSG_LISTEN,
    "TETHER_MSG_LISTEN_REPLY": agent_wire.MSG_LISTEN_REPLY,
    "TETHER_INCOMING_OFF": agent_wire.INCOMING_OFF,
    "TETHER_INCOMING_MIRROR": agent_wire.INCOMING_MIRROR,
    "TETHER_INCOMING_STEAL": agent_wire.INCOMING_STEAL,
    "TETHER_INCOMING_LOOPBACK_LOCAL": agent_wire.INCOMING_LOOPBACK_LOCAL,
    "TETHER_INCOMING_IGNORE": agent_wire.INCOMING_IGNORE,
    "sizeof(struct tether_incoming)": agent_wire.INCOMING.size,
    "offsetof(struct tether_incoming, nmaps)": 6,
    "TETHER_LISTEN_V6ONLY": agent_wire.LISTEN_V6ONLY,
    "sizeof(struct tether_listen)": agent_wire.LISTEN.size,
    "offsetof(struct tether_listen, backlog)": 4,
    "TETHER_LISTEN_LOCAL": agent_wire.LISTEN_LOCAL,
    "TETHER_LISTEN_TARGET": agent_wire.LISTEN_TARGET,
    "TETHER_LISTEN_RELAYED": agent_wire.LISTEN_RELAYED,
    "TETHER_MSG_ACCEPT": agent_wire.MSG_ACCEPT,
    "TETHER_MSG_ACCEPT_REPLY": agent_wire.MSG_ACCEPT_REPLY,
    "TETHER_MSG_STREAMS": agent_wire.MSG_STREAMS,
    "TETHER_MSG_STREAMS_REPLY": agent_wire.MSG_STREAMS_REPLY,
    "TETHER_MSG_TARGET_FILES": agent_wire.MSG_TARGET_FILES,
    "TETHER_MSG_TARGET_FILES_REPLY": agent_wire.MSG_TARGET_FILES_REPLY,
    "TETHER_CAP_STREAMS": agent_wire.CAP_STREAMS,
    "TETHER_MODE_STREAMS": layer_wire.MODE_STREAMS,
    "sizeof(struct tether_streams)": agent_wire.STREAMS.size,
    "sizeof(struct tether_listen_reply)": agent_wire.LISTEN_REPLY.size,
    "offsetof(struct tether_listen_reply, lease)": 4,
    "TETHER_MODE_DNS": layer_wire.MODE_DNS,
    "TETHER_MSG_FILES_REQUEST": files_wire.MSG_FILES_REQUEST,
    "TETHER_MSG_FILES_REPLY": files_wire.MSG_FILES_REPLY,
    "TETHER_MSG_FILES_NOTICE": files_wire.MSG_FILES_NOTICE,
    "TETHER_MODE_FILES": layer_wire.MODE_FILES,
    "TETHER_FILES_LOCAL": files_wire.LOCAL,
    "TETHER_FILES_READ": files_wire.READ,
    "TETHER_FILES_WRITE": files_wire.WRITE,
    "TETHER_FILES_NOT_FOUND": files_wire.NOT_FOUND,
    "TETHER_FILES_VERBOSE": files_wire.FLAG_VERBOSE,
    "TETHER_FILES_OPS_MAX": files_wire.OPS_MAX,
    "TETHER_FILES_RULES_MAX": files_wire.RULES_MAX,
    "sizeof(struct tether_files_rules)": files_wire.RULES.size,
    "offsetof(struct tether_files_rules, classes)": 2,
    "offsetof(struct tether_files_rules, fallback)": 4,
    "offsetof(struct tether_files_rules, flags)": 5,
    "sizeof(struct tether_files_rule)": files_wire.RULE.size,
    "offsetof(struct tether_files_rule, ops)": 2,
    "sizeof(struct tether_files_op)": files_wire.OP.size,
    "offsetof(struct tether_files_op, arg)": 1,
    "offsetof(struct tether_files_op, x)": 2,
    "TETHER_OP_BYTE": files_wire.OP_BYTE,
    "TETHER_OP_ANY": files_wire.OP_ANY,
    "TETHER_OP_CLASS": files_wire.OP_CLASS,
    "TETHER_OP_SPLIT": files_wire.OP_SPLIT,
    "TETHER_OP_JMP": files_wire.OP_JMP,
    "TETHER_OP_BOL": files_wire.OP_BOL,
    "TETHER_OP_EOL": files_wire.OP_EOL,
    "TETHER_OP_MATCH": files_wire.OP_MATCH,
    "sizeof(struct tether_files_notice)": files_wire.NOTICE.size,
    "offsetof(struct tether_files_notice, action)": 4,
    "offsetof(struct tether_files_notice, what)": 5,
    "TETHER_FILES_WRITTEN_HERE": files_wire.WRITTEN_HERE,
    "TETHER_FILES_DECIDED": files_wire.DECIDED,
    "sizeof(struct tether_connect_reply)": agent_wire.CONNECT_REPLY.size,
    "sizeof(struct tether_open)": agent_wire.OPEN.size,
    "offsetof(struct tether_open, mode)": 4,
    "sizeof(struct tether_error)": wire.ERROR.size,
    "sizeof(struct tether_connect)": agent_wire.CONNECT.size,
    "offsetof(struct tether_connect, socktype)": 2,
    "offsetof(struct tether_connect, protocol)": 4,
    "offsetof(struct tether_connect, timeout_ms)": 8,
    "TETHER_FLAG_ENTRY": trace_wire.FLAG_ENTRY,
    "TETHER_MODE_TRACE": layer_wire.MODE_TRACE,
    "TETHER_DATA_STRING": trace_wire.DATA_STRING,
    "TETHER_DATA_SOCKADDR": trace_wire.DATA_SOCKADDR,
    "sizeof(struct tether_frame)": wire.FRAME.size,
    "offsetof(struct tether_frame, type)": 4,
    "offsetof(struct tether_frame, flags)": 6,
    "offsetof(struct tether_frame, id)": 8,
    "sizeof(struct tether_hello)": layer_wire.HELLO.size,
    "offsetof(struct tether_hello, capabilities)": 4,
    "offsetof(struct tether_hello, pid)": 8,
    "offsetof(struct tether_hello, ppid)": 12,
    "sizeof(struct tether_hello_reply)": layer_wire.HELLO_REPLY.size,
    "offsetof(struct tether_hello_reply, mode)": 4,
    "sizeof(struct tether_syscall_event)": trace_wire.SYSCALL_EVENT.size,
    "offsetof(struct tether_syscall_event, tid)": 4,
    "offsetof(struct tether_syscall_event, nr)": 8,
    "offsetof(struct tether_syscall_event, args)": 16,
    "offsetof(struct tether_syscall_event, ret)": 64,
    "sizeof(struct tether_data)": trace_wire.DATA.size,
    "offsetof(struct tether_data, kind)": 1,
    "offsetof(struct tether_data, length)": 2,
    "offsetof(struct tether_data, full_length)": 4,
    "TETHER_MSG_RING_WAKE": layer_wire.MSG_RING_WAKE,
    "TETHER_CAP_TRACE_RING": layer_wire.CAP_TRACE_RING,
    "TETHER_RING_MAGIC": trace_wire.RING_MAGIC,
    "TETHER_RING_VERSION": trace_wire.RING_VERSION,
    "sizeof(struct tether_ring)": trace_wire.RING.size,
    "offsetof(struct tether_ring, version)": 4,
    "offsetof(struct tether_ring, size)": 8,
    "offsetof(struct tether_ring, head)": trace_wire.RING_HEAD,
    "offsetof(struct tether_ring, published)": trace_wire.RING_PUBLISHED,
    "offsetof(struct tether_ring, waiters)": trace_wire.RING_WAITERS,
    "offsetof(struct tether_ring, tail)": trace_wire.RING_TAIL,
    "offsetof(struct tether_ring, space)": trace_wire.RING_SPACE,
    "offsetof(struct tether_ring, sleeping)": trace_wire.RING_SLEEPING,
    "offsetof(struct tether_ring, closed)": trace_wire.RING_CLOSED,
    "TETHER_FLAG_BIND": agent_wire.FLAG_BIND,
    "sizeof(struct tether_datagram)": agent_wire.DATAGRAM.size,
    "offsetof(struct tether_datagram, addr)": 4,
    "TETHER_DATAGRAM_ADDR_MAX": agent_wire.DATAGRAM_ADDR_MAX,
    "sizeof(struct tether_record)": trace_wire.RECORD.size,
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


WIRE = (wire, layer_wire, agent_wire, trace_wire, auth, files_wire)  # the wire's modules, one per family of messages


def test_every_message_type_has_one_number_and_the_c_header_checks_it():
    """Each family's module numbers its own messages; together they are the C header's one list."""
    assigned = [name for module in WIRE
                for name in re.findall(r"^(MSG_\w+) =", Path(module.__file__).read_text(), re.M)]
    assert len(assigned) == len(set(assigned)), f"a message type defined in two modules: {sorted(assigned)}"
    types = {name: value for module in WIRE for name, value in vars(module).items() if name.startswith("MSG_")}
    assert len(set(types.values())) == len(types), f"two message types share a number: {types}"
    assert {name: FACTS.get(f"TETHER_{name}") for name in types} == types, "a message type the C comparison misses"


events = st.builds(
    trace_wire.SyscallEvent,
    pid=st.integers(1, 2**31 - 1), tid=st.integers(1, 2**31 - 1), nr=st.integers(0, 511),
    args=st.tuples(*[st.integers(-(2**63), 2**63 - 1)] * 6), ret=st.integers(-4095, 2**63 - 1),
    entry=st.booleans(),
    data=st.lists(st.builds(lambda arg, kind, value, extra: trace_wire.Data(arg, kind, value, len(value) + extra),
                            st.integers(0, 5), st.sampled_from([trace_wire.DATA_STRING, trace_wire.DATA_SOCKADDR]),
                            st.binary(max_size=256), st.integers(0, 3)), max_size=2).map(tuple),
)


@given(events)
def test_syscall_events_round_trip(e):
    assert trace_wire.decode_syscall(wire.decode_frame(trace_wire.encode_syscall(e))) == e


@given(st.text(max_size=200), st.text(max_size=90), st.integers(0, 2**31 - 1))
def test_hello_round_trip(exe, build_id, pid):
    h = layer_wire.Hello(wire.PROTOCOL_VERSION, 0, pid, 1, exe, build_id)
    assert layer_wire.decode_hello(wire.decode_frame(layer_wire.encode_hello(h, 7))) == h


DECODERS = [wire.decode_error, trace_wire.decode_syscall,
            layer_wire.decode_hello, layer_wire.decode_hello_reply, layer_wire.decode_plan_request,
            layer_wire.decode_plan_reply, layer_wire.decode_ring_request, layer_wire.decode_exec_notice,
            layer_wire.decode_exec_notice_reply, files_wire.decode_notice,
            agent_wire.decode_agent_hello, agent_wire.decode_connect, agent_wire.decode_connect_reply,
            agent_wire.decode_open, agent_wire.decode_socket, agent_wire.decode_resolve,
            agent_wire.decode_resolve_reply, agent_wire.decode_nameinfo, agent_wire.decode_nameinfo_reply,
            lambda f: agent_wire.EnvAssembler().feed(f), agent_wire.decode_stream, agent_wire.decode_stream_reply,
            agent_wire.decode_read_file, lambda f: agent_wire.FileAssembler().feed(f),
            agent_wire.decode_incoming, agent_wire.decode_listen, agent_wire.decode_listen_reply,
            agent_wire.decode_accept, agent_wire.decode_accept_reply, agent_wire.decode_streams,
            lambda f: auth.decode_auth(f, auth.MSG_AUTH_RESPONSE), lambda f: auth.decode_auth(f, auth.MSG_AUTH_OK)]


@given(st.integers(1, 4095), st.text(max_size=300), st.binary(min_size=2, max_size=128),
       st.integers(0, 2**32 - 1))
def test_error_and_connect_round_trip(err, message, sockaddr, timeout_ms):
    e = wire.ErrorReply(err, message)
    assert wire.decode_error(wire.decode_frame(wire.encode_error(e, 9))) == e
    c = agent_wire.Connect(2, 1, 0, timeout_ms, sockaddr)
    assert agent_wire.decode_connect(wire.decode_frame(agent_wire.encode_connect(c, 9))) == c


ports = st.integers(1, 65535)


@given(st.sampled_from(sorted(agent_wire.INCOMING_MODES.values())), st.lists(ports, max_size=50),
       st.booleans(), st.lists(st.tuples(ports, ports), max_size=20), st.booleans())
def test_incoming_round_trip(mode, port_list, ignore, port_map, loopback_local):
    i = agent_wire.Incoming(mode, tuple(port_list), ignore, tuple(port_map), loopback_local)
    assert agent_wire.decode_incoming(wire.decode_frame(agent_wire.encode_incoming(i, 4))) == i


texts = st.text(max_size=40)


@given(st.lists(texts, max_size=5), texts, st.lists(texts, max_size=5), st.lists(ports, max_size=5))
def test_filtered_steal_round_trip(methods, path, headers, port_list):
    f = agent_wire.HttpFilter(tuple(methods), path, tuple(headers))
    i = agent_wire.Incoming(agent_wire.INCOMING_STEAL, tuple(port_list), http=f)
    assert agent_wire.decode_incoming(wire.decode_frame(agent_wire.encode_incoming(i, 4))) == i


@given(st.sampled_from([2, 10]), st.booleans(), st.integers(-(2**31), 2**31 - 1), st.binary(max_size=128))
def test_listen_round_trip(family, v6only, backlog, sockaddr):
    req = agent_wire.Listen(family, v6only, backlog, sockaddr)
    assert agent_wire.decode_listen(wire.decode_frame(agent_wire.encode_listen(req, 5))) == req
    for how in (agent_wire.LISTEN_LOCAL, agent_wire.LISTEN_TARGET, agent_wire.LISTEN_RELAYED):
        frame = wire.decode_frame(agent_wire.encode_listen_reply(how, 5, lease=77))
        assert agent_wire.decode_listen_reply(frame) == (how, 77)
    assert agent_wire.decode_accept(wire.decode_frame(agent_wire.encode_accept(2**32 - 1, 3))) == 2**32 - 1
    assert agent_wire.decode_streams(wire.decode_frame(agent_wire.encode_streams(4, 3))) == 4
    with pytest.raises(wire.ProtocolError):
        agent_wire.decode_streams(wire.decode_frame(agent_wire.encode_streams(0, 3)))
    addresses = agent_wire.Relayed(bytes(16), bytes(range(28)))
    assert agent_wire.decode_accept_reply(wire.decode_frame(agent_wire.encode_accept_reply(addresses, 0))) == addresses


wire_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")  # what C strings carry
names = st.text(wire_chars, min_size=1, max_size=253)
addrinfos = st.builds(agent_wire.AddrInfo, st.integers(0, 65535), st.integers(0, 65535),
                      st.integers(-(2**31), 2**31 - 1), st.binary(max_size=128))


@given(names, st.text(wire_chars, max_size=32),
       st.tuples(*[st.integers(-(2**31), 2**31 - 1)] * 4))
def test_resolve_round_trip(node, service, hints):
    r = agent_wire.Resolve(node, service, *hints)
    assert agent_wire.decode_resolve(wire.decode_frame(agent_wire.encode_resolve(r, 3))) == r


@given(st.text(wire_chars, max_size=255), st.lists(addrinfos, max_size=20), st.integers(-12, -1),
       st.integers(0, 200))
def test_resolve_reply_round_trip(canonname, entries, status, err):
    ok = agent_wire.ResolveReply(0, 0, canonname, tuple(entries))
    assert agent_wire.decode_resolve_reply(wire.decode_frame(agent_wire.encode_resolve_reply(ok, 3))) == ok
    failed = agent_wire.ResolveReply(status, err)
    assert agent_wire.decode_resolve_reply(wire.decode_frame(agent_wire.encode_resolve_reply(failed, 3))) == failed


@given(st.binary(max_size=128), st.integers(-(2**31), 2**31 - 1), st.text(wire_chars, max_size=255),
       st.text(wire_chars, max_size=32), st.integers(-12, 0), st.integers(0, 200))
def test_nameinfo_round_trip(sockaddr, flags, host, service, status, err):
    request = wire.decode_frame(agent_wire.encode_nameinfo(sockaddr, flags, 5))
    assert agent_wire.decode_nameinfo(request) == (sockaddr, flags)
    r = agent_wire.NameInfo(status, err, host, service)
    assert agent_wire.decode_nameinfo_reply(wire.decode_frame(agent_wire.encode_nameinfo_reply(r, 5))) == r


def test_resolve_reply_keeps_what_fits_one_frame():
    many = agent_wire.ResolveReply(entries=tuple(agent_wire.AddrInfo(10, 1, 6, bytes(28)) for _ in range(500)))
    frame = agent_wire.encode_resolve_reply(many, 3)
    assert len(frame) <= wire.FRAME_MAX
    assert 0 < len(agent_wire.decode_resolve_reply(wire.decode_frame(frame)).entries) < 500


@given(st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**32 - 1), st.text(min_size=1, max_size=300))
def test_open_round_trip(flags, mode, path):
    o = agent_wire.Open(flags, mode, path)
    if "\0" in path:
        with pytest.raises(wire.ProtocolError):
            agent_wire.decode_open(wire.decode_frame(agent_wire.encode_open(o, 4)))
    else:
        assert agent_wire.decode_open(wire.decode_frame(agent_wire.encode_open(o, 4))) == o


@given(st.dictionaries(st.text(min_size=1, max_size=40).filter(lambda k: "=" not in k and "\0" not in k),
                       st.text(max_size=3000).filter(lambda v: "\0" not in v), max_size=20))
def test_env_reply_round_trips_over_several_frames(env):
    frames = agent_wire.encode_env_reply(env, 5)
    assert all(len(f) <= wire.FRAME_MAX for f in frames)
    got = agent_wire.EnvAssembler()
    for f in frames:
        got.feed(wire.decode_frame(f))
    assert got.complete and got.env() == env


@given(st.text(max_size=300), st.text(max_size=90), st.text(max_size=600))
def test_plan_request_and_reply_round_trip(path, build_id, plan):
    req = layer_wire.PlanRequest(path, build_id)
    assert layer_wire.decode_plan_request(wire.decode_frame(layer_wire.encode_plan_request(req, 3))) == req
    assert layer_wire.decode_plan_reply(wire.decode_frame(layer_wire.encode_plan_reply(plan, 3))) == plan


@settings(max_examples=500)
@given(st.binary(max_size=300), st.integers(0, len(DECODERS) - 1))
def test_garbage_gives_protocol_error_only(blob, which):
    try:
        DECODERS[which](wire.decode_frame(blob))
    except wire.ProtocolError as e:
        assert "\n" not in str(e)
    except auth.AuthRefused:  # an ERROR frame where an AUTH_* frame was due: a clear refusal
        pass


@settings(max_examples=300)
@given(events, st.data())
def test_damaged_frames_give_protocol_error_only(e, data):
    buf = bytearray(trace_wire.encode_syscall(e))
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    try:
        trace_wire.decode_syscall(wire.decode_frame(bytes(buf[:cut])))
    except wire.ProtocolError:
        pass


@given(st.lists(events, max_size=5), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_stream_reader_splits_anywhere(evs, chunks):
    stream = b"".join(trace_wire.encode_syscall(e) for e in evs)
    reader, frames, pos, i = wire.FrameReader(), [], 0, 0
    while pos < len(stream):
        step = chunks[i % len(chunks)]
        frames += reader.feed(stream[pos:pos + step])
        pos, i = pos + step, i + 1
    assert [trace_wire.decode_syscall(f) for f in frames] == evs


def test_oversized_length_is_refused_before_buffering():
    reader = wire.FrameReader()
    with pytest.raises(wire.ProtocolError, match="outside"):
        reader.feed(wire.FRAME.pack(10**9, trace_wire.MSG_SYSCALL, 0, 0))


sockaddrs = st.binary(min_size=2, max_size=128)


@given(st.integers(0, 4095), sockaddrs, sockaddrs, st.integers(0, 2**32 - 1))
def test_relayed_connect_and_stream_round_trip(status, local, peer, timeout_ms):
    relayed = agent_wire.Relayed(local, peer)
    frame = wire.decode_frame(agent_wire.encode_connect_reply(7, status, relayed))
    assert frame.flags == agent_wire.FLAG_RELAYED and agent_wire.decode_connect_reply(frame) == (status, relayed)
    direct = wire.decode_frame(agent_wire.encode_connect_reply(7, status))
    assert agent_wire.decode_connect_reply(direct) == (status, None)
    c = agent_wire.Connect(10, 2, 17, timeout_ms, local)
    assert agent_wire.decode_stream(wire.decode_frame(agent_wire.encode_stream(c, 3))) == c
    assert agent_wire.decode_stream_reply(wire.decode_frame(agent_wire.encode_stream_reply(relayed, 3))) == relayed


@given(st.binary(max_size=20000), names)
def test_read_file_round_trips_over_several_frames(data, path):
    assert agent_wire.decode_read_file(wire.decode_frame(agent_wire.encode_read_file("/" + path, 4))) == "/" + path
    assembler = agent_wire.FileAssembler()
    for frame in agent_wire.encode_read_file_reply(data, 4):
        assert not assembler.complete
        assembler.feed(wire.decode_frame(frame))
    assert assembler.complete and assembler.data == data


@given(st.lists(st.tuples(st.binary(max_size=28), st.binary(max_size=2000)), max_size=8),
       st.lists(st.integers(1, 700), min_size=1, max_size=30))
def test_datagrams_survive_any_split(datagrams, cuts):
    stream = b"".join(agent_wire.encode_record(agent_wire.encode_datagram(*d)) for d in datagrams)
    reader, got, pos = agent_wire.RecordReader(), [], 0
    for n in cuts * (len(stream) // sum(cuts) + 1):
        got += reader.feed(stream[pos:pos + n])
        pos += n
    assert [agent_wire.decode_datagram(r) for r in got] == datagrams


def test_bad_datagram_records_are_protocol_errors():
    with pytest.raises(wire.ProtocolError):
        agent_wire.RecordReader().feed(agent_wire.RECORD.pack(agent_wire.RECORD_MAX + 1))
    with pytest.raises(wire.ProtocolError):
        agent_wire.decode_datagram(b"short")
    with pytest.raises(wire.ProtocolError):
        agent_wire.decode_datagram(agent_wire.DATAGRAM.pack(29, 0, b""))


def test_the_token_proves_itself_both_ways_and_never_travels():
    token, other = b"t" * 32, b"o" * 32
    nonce = auth.nonce()
    challenge = wire.decode_frame(auth.encode_auth_challenge(nonce))
    response, expected, proof = auth.respond(token, challenge)
    assert token not in response
    ok, agent_proof = auth.check_response(token, nonce, wire.decode_frame(response))
    assert auth.check_ok(expected, wire.decode_frame(ok)) and agent_proof == proof
    assert auth.check_response(other, nonce, wire.decode_frame(response)) is None  # wrong token
    assert auth.check_response(token, auth.nonce(), wire.decode_frame(response)) is None  # replayed
    _, expected_other, _ = auth.respond(other, challenge)
    assert not auth.check_ok(expected_other, wire.decode_frame(ok))  # an agent without our token
    refused = wire.decode_frame(wire.encode_error(wire.ErrorReply(13, "wrong token"), 0))
    with pytest.raises(auth.AuthRefused, match="wrong token"):
        auth.check_ok(expected, refused)


def _full_proof(token: bytes) -> auth.Proof:
    nonce = auth.nonce()
    response, _, proof = auth.respond(token, wire.decode_frame(auth.encode_auth_challenge(nonce)))
    return auth.check_response(token, nonce, wire.decode_frame(response))[1]


def test_a_ticket_proves_a_data_connection_once_for_its_control_link_only():
    token = b"t" * 32
    proof = _full_proof(token)
    tickets, book = auth.Tickets(token, proof), auth.TicketBook(token, proof)
    first, second = (wire.decode_frame(tickets.next()) for _ in range(2))
    assert auth.ticket_link(first) == proof.agent_nonce and token not in first.payload
    assert book.take(second) and book.take(first)  # out of order is fine
    assert not book.take(first) and not book.take(second)  # each once
    other_link = auth.TicketBook(token, _full_proof(token))  # another session's control link
    assert not other_link.take(wire.decode_frame(tickets.next()))
    wrong_token = auth.Tickets(b"o" * 32, proof)  # the nonces seen on the wire are not enough
    assert not book.take(wire.decode_frame(wrong_token.next()))
    forged = bytearray(tickets.next())
    forged[-1] ^= 1
    assert not book.take(wire.decode_frame(bytes(forged)))
    with pytest.raises(wire.ProtocolError):
        book.take(wire.decode_frame(auth.encode_auth_challenge(auth.nonce())))


def test_tickets_far_behind_the_highest_taken_are_refused_and_memory_stays_bounded():
    token = b"t" * 32
    proof = _full_proof(token)
    tickets, book = auth.Tickets(token, proof), auth.TicketBook(token, proof)
    late = wire.decode_frame(tickets.next())
    for _ in range(3 * auth.TICKET_WINDOW):
        assert book.take(wire.decode_frame(tickets.next()))
    assert len(book.taken) <= 2 * auth.TICKET_WINDOW
    assert not book.take(late)


def test_token_files_must_be_private_and_long_enough(tmp_path):
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
    """trace_wire.RING (how the session writes the header) puts each field where the offsets (how it
    reads and writes them afterwards, and what the C header says) expect it."""
    import struct

    fields = dict(magic=1, version=2, size=3, head=4, published=5, waiters=6, tail=7, space=8, sleeping=9,
                  closed=10)
    blob = trace_wire.RING.pack(*fields.values())
    at = {"magic": (0, "I"), "version": (4, "I"), "size": (8, "Q"), "head": (trace_wire.RING_HEAD, "Q"),
          "published": (trace_wire.RING_PUBLISHED, "Q"), "waiters": (trace_wire.RING_WAITERS, "I"),
          "tail": (trace_wire.RING_TAIL, "Q"), "space": (trace_wire.RING_SPACE, "I"),
          "sleeping": (trace_wire.RING_SLEEPING, "I"), "closed": (trace_wire.RING_CLOSED, "I")}
    assert {name: struct.unpack_from("<" + fmt, blob, off)[0] for name, (off, fmt) in at.items()} == fields


@given(st.integers(min_value=1, max_value=2**31 - 1))
def test_ring_request_round_trips(pid):
    assert layer_wire.decode_ring_request(wire.decode_frame(layer_wire.encode_ring_request(pid, 5))) == pid
    reply = wire.decode_frame(layer_wire.encode_ring_reply(5))
    assert (reply.type, reply.id, reply.payload) == (layer_wire.MSG_RING_REPLY, 5, b"")


@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1),
       st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1, max_size=300), st.integers(0, 4095))
def test_exec_notice_round_trips(pid, tid, path, status):
    notice = layer_wire.ExecNotice(pid, tid, path)
    assert layer_wire.decode_exec_notice(wire.decode_frame(layer_wire.encode_exec_notice(notice, 4))) == notice
    reply = wire.decode_frame(layer_wire.encode_exec_notice_reply(status, 4))
    assert layer_wire.decode_exec_notice_reply(reply) == status


PATHS = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=100)


@given(st.sampled_from(sorted(file_ops.NAMES)), PATHS, PATHS, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1),
       st.binary(max_size=200))
def test_file_ops_requests_round_trip(op, path, path2, handle, offset, data):
    req = file_ops.Request(op, path, path2, handle, offset=offset, data=data)
    blob = file_ops.encode_request(req)
    head = file_ops.decode_request_head(blob[:file_ops.REQUEST.size])
    assert file_ops.decode_request(head, blob[file_ops.REQUEST.size:]) == req


@given(st.lists(st.tuples(st.binary(min_size=1, max_size=40).filter(lambda b: b"/" not in b and b"\0" not in b),
                          st.tuples(*[st.integers(0, 2**32 - 1)] * 12)), max_size=20))
def test_file_ops_listings_round_trip(entries):
    listing = [(name, file_ops.Stat(*fields)) for name, fields in entries]
    assert file_ops.decode_list(file_ops.encode_list(listing)) == listing


def test_the_fuse_abi_structs_have_the_kernels_sizes():
    # include/uapi/linux/fuse.h, 7.31
    sizes = {fuse_abi.IN_HEADER: 40, fuse_abi.OUT_HEADER: 16, fuse_abi.INIT_OUT: 64, fuse_abi.ATTR: 88,
             fuse_abi.ENTRY_OUT: 40, fuse_abi.ATTR_OUT: 16, fuse_abi.SETATTR_IN: 88, fuse_abi.READ_IN: 40,
             fuse_abi.WRITE_IN: 40, fuse_abi.OPEN_OUT: 16, fuse_abi.RELEASE_IN: 24, fuse_abi.STATFS_OUT: 80,
             fuse_abi.DIRENT: 24, fuse_abi.CREATE_IN: 16}
    assert {s.format: s.size for s in sizes} == {s.format: n for s, n in sizes.items()}
