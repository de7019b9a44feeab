"""What a hooked process and the session say (layer/link/protocol.h): HELLO and its reply (the
mode, the hook plan, the agent's socket, the outgoing rules), PLAN_REQUEST for a Go library
loaded later, RING_WAKE, RING_REQUEST and RING_REPLY about the trace ring (its layout and
records: trace_wire.py), and EXEC_NOTICE before a hooked process execs a static program."""
from __future__ import annotations

import struct
from typing import NamedTuple

from .wire import Frame, ProtocolError, encode_frame, pack_string, unpack_fixed_and_path, unpack_string

MSG_HELLO = 1
MSG_HELLO_REPLY = 2
MSG_PLAN_REQUEST = 3
MSG_PLAN_REPLY = 4
MSG_RING_WAKE = 17  # layer -> session: its trace ring has records (the session said it sleeps)
MSG_RING_REQUEST = 18  # layer -> session: a forked child's own trace ring (RING_REQUEST: its pid)
MSG_RING_REPLY = 19  # session -> layer: no payload; the ring's memfd rides along
MSG_EXEC_NOTICE = 20  # layer -> session, on a line of its own: this thread execs a static program next
MSG_EXEC_NOTICE_REPLY = 21  # session -> layer: 0 (it waits for the exec) or why not (an errno)
CAP_TRACE_RING = 1  # HELLO: the layer takes a trace ring with HELLO_REPLY
MODE_TRACE = 1
MODE_NET = 2
MODE_DNS = 4
MODE_SOCKETS = 8  # the agent hands out sockets made in the target: connects take one, connect it here
MODE_INJECT = 16  # the session loads the layer into static programs hooked ones exec (EXEC_NOTICE first)
MODE_INCOMING = 32  # listen() on a TCP port asks the agent (agent_wire.MSG_LISTEN)
MODE_FILES = 64  # paths the file rules give the target are opened there (files_wire)
MODE_STREAMS = 128  # a relaying network agent's stand-in hands out data connections: TCP connects send STREAM
HELLO = struct.Struct("<HHIii")  # version, reserved, capabilities, pid, ppid
HELLO_REPLY = struct.Struct("<HHI")  # version, reserved, mode
RING_REQUEST = struct.Struct("<iI")  # pid, reserved
EXEC_NOTICE = struct.Struct("<ii")  # pid, tid; then the path
EXEC_NOTICE_REPLY = struct.Struct("<iI")  # status, reserved


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
    rules: str = ""  # outgoing rules, layer/net/route.c's format (MODE_NET)


class ExecNotice(NamedTuple):
    """The thread tid of process pid is about to exec path, a static program."""

    pid: int
    tid: int
    path: str


class PlanRequest(NamedTuple):
    """A Go library loaded after start-up asks for its hook plan."""

    path: str
    go_build_id: str


def encode_hello(h: Hello, id: int) -> bytes:
    payload = HELLO.pack(h.version, 0, h.capabilities, h.pid, h.ppid)
    return encode_frame(MSG_HELLO, payload + pack_string(h.exe) + pack_string(h.go_build_id), id=id)


def decode_hello(f: Frame) -> Hello:
    if f.type != MSG_HELLO or len(f.payload) < HELLO.size:
        raise ProtocolError("malformed HELLO")
    version, _, caps, pid, ppid = HELLO.unpack_from(f.payload)
    exe, pos = unpack_string(f.payload, HELLO.size, "executable path")
    build_id, pos = unpack_string(f.payload, pos, "Go build id")
    if pos != len(f.payload):
        raise ProtocolError("HELLO has trailing bytes")
    return Hello(version, caps, pid, ppid, exe, build_id)


def encode_hello_reply(r: HelloReply, id: int) -> bytes:
    return encode_frame(MSG_HELLO_REPLY, HELLO_REPLY.pack(r.version, 0, r.mode) + pack_string(r.plan)
                        + pack_string(r.agent) + pack_string(r.rules), id=id)


def decode_hello_reply(f: Frame) -> HelloReply:
    if f.type != MSG_HELLO_REPLY or len(f.payload) < HELLO_REPLY.size:
        raise ProtocolError("malformed HELLO_REPLY")
    version, _, mode = HELLO_REPLY.unpack_from(f.payload)
    plan, pos = unpack_string(f.payload, HELLO_REPLY.size, "plan")
    agent, pos = unpack_string(f.payload, pos, "agent socket")
    rules, pos = unpack_string(f.payload, pos, "rules")
    if pos != len(f.payload):
        raise ProtocolError("HELLO_REPLY has trailing bytes")
    return HelloReply(version, mode, plan, agent, rules)


def encode_plan_request(r: PlanRequest, id: int) -> bytes:
    return encode_frame(MSG_PLAN_REQUEST, pack_string(r.path) + pack_string(r.go_build_id), id=id)


def decode_plan_request(f: Frame) -> PlanRequest:
    if f.type != MSG_PLAN_REQUEST:
        raise ProtocolError("malformed PLAN_REQUEST")
    path, pos = unpack_string(f.payload, 0, "library path")
    build_id, pos = unpack_string(f.payload, pos, "Go build id")
    if pos != len(f.payload):
        raise ProtocolError("PLAN_REQUEST has trailing bytes")
    return PlanRequest(path, build_id)


def encode_plan_reply(plan: str, id: int) -> bytes:
    return encode_frame(MSG_PLAN_REPLY, pack_string(plan), id=id)


def _only_string(f: Frame, type: int, frame_name: str, what: str) -> str:
    """The one u16-prefixed string that is the whole payload of a frame of `type`."""
    if f.type != type:
        raise ProtocolError(f"malformed {frame_name}")
    value, pos = unpack_string(f.payload, 0, what)
    if pos != len(f.payload):
        raise ProtocolError(f"{frame_name} has trailing bytes")
    return value


def decode_plan_reply(f: Frame) -> str:
    return _only_string(f, MSG_PLAN_REPLY, "PLAN_REPLY", "plan")


def encode_ring_request(pid: int, id: int) -> bytes:
    return encode_frame(MSG_RING_REQUEST, RING_REQUEST.pack(pid, 0), id=id)


def decode_ring_request(f: Frame) -> int:
    """The pid of the forked child asking for a ring."""
    if f.type != MSG_RING_REQUEST or len(f.payload) != RING_REQUEST.size:
        raise ProtocolError("malformed RING_REQUEST")
    return RING_REQUEST.unpack(f.payload)[0]


def encode_ring_reply(id: int) -> bytes:
    return encode_frame(MSG_RING_REPLY, b"", id=id)


def encode_exec_notice(n: ExecNotice, id: int) -> bytes:
    return encode_frame(MSG_EXEC_NOTICE, EXEC_NOTICE.pack(n.pid, n.tid) + pack_string(n.path), id=id)


def decode_exec_notice(f: Frame) -> ExecNotice:
    (pid, tid), path = unpack_fixed_and_path(f, MSG_EXEC_NOTICE, EXEC_NOTICE, "EXEC_NOTICE")
    return ExecNotice(pid, tid, path)


def encode_exec_notice_reply(status: int, id: int) -> bytes:
    return encode_frame(MSG_EXEC_NOTICE_REPLY, EXEC_NOTICE_REPLY.pack(status, 0), id=id)


def decode_exec_notice_reply(f: Frame) -> int:
    if f.type != MSG_EXEC_NOTICE_REPLY or len(f.payload) != EXEC_NOTICE_REPLY.size:
        raise ProtocolError("malformed EXEC_NOTICE_REPLY")
    return EXEC_NOTICE_REPLY.unpack(f.payload)[0]
