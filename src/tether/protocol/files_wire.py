"""The file rules and their notices on the layer's line (layer/link/protocol.h, FILES_*).

FILES_REQUEST (layer -> session, no payload) at start; FILES_REPLY carries the rules, each a
program for layer/files/rules.c's matcher; FILES_NOTICE tells the session what a path came to.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from .wire import Frame, ProtocolError, encode_frame, encode_parts, pack_string, unpack_fixed_and_path

MSG_FILES_REQUEST = 22
MSG_FILES_REPLY = 23
MSG_FILES_NOTICE = 24

LOCAL, READ, WRITE, NOT_FOUND = 0, 1, 2, 3  # TETHER_FILES_*: what a rule decides
ACTION_NAMES = {LOCAL: "local", READ: "target (read-only)", WRITE: "target (read-write)", NOT_FOUND: "not found"}
FLAG_VERBOSE = 1  # a FILES_NOTICE for every decided path
OPS_MAX = 255
RULES_MAX = 16384  # TETHER_FILES_RULES_MAX: the whole payload, over frames

OP_BYTE, OP_ANY, OP_CLASS, OP_SPLIT, OP_JMP, OP_BOL, OP_EOL, OP_MATCH = range(1, 9)

RULES = struct.Struct("<HHBBH")  # count, classes, fallback, flags, reserved
RULE = struct.Struct("<BBH")  # action, reserved, ops
OP = struct.Struct("<BBH")  # op, arg, x
NOTICE = struct.Struct("<iBBH")  # rule, action, what, reserved
WRITTEN_HERE, DECIDED = 1, 2  # NOTICE's what


class Op(NamedTuple):
    op: int
    arg: int = 0
    x: int = 0


class Rule(NamedTuple):
    action: int
    ops: tuple[Op, ...]


class Notice(NamedTuple):
    rule: int  # index into the rules sent, or -1: the fallback decided
    action: int
    what: int
    path: str


def encode_rules(rules: list[Rule], classes: list[bytes], fallback: int, flags: int, id: int) -> list[bytes]:
    """FILES_REPLY's frames (FLAG_MORE on all but the last); classes are 32-byte sets (bit c:
    byte c). ValueError if they do not fit the layer's RULES_MAX."""
    parts = [RULES.pack(len(rules), len(classes), fallback, flags, 0)]
    for r in rules:
        if not 0 < len(r.ops) <= OPS_MAX:
            raise ValueError(f"a rule has {len(r.ops)} ops (1 to {OPS_MAX})")
        parts.append(RULE.pack(r.action, 0, len(r.ops)))
        parts.extend(OP.pack(*o) for o in r.ops)
    if any(len(c) != 32 for c in classes):
        raise ValueError("a class is not 32 bytes")
    parts.extend(classes)
    blob = b"".join(parts)
    if len(blob) > RULES_MAX:
        raise ValueError(f"the rules take {len(blob)} bytes, more than the layer's {RULES_MAX}")
    return encode_parts(MSG_FILES_REPLY, blob, id)


def decode_notice(f: Frame) -> Notice:
    (rule, action, what, _), path = unpack_fixed_and_path(f, MSG_FILES_NOTICE, NOTICE, "FILES_NOTICE")
    if action not in ACTION_NAMES or what not in (WRITTEN_HERE, DECIDED):
        raise ProtocolError("malformed FILES_NOTICE")
    return Notice(rule, action, what, path)


def encode_notice(n: Notice) -> bytes:
    return encode_frame(MSG_FILES_NOTICE, NOTICE.pack(n.rule, n.action, n.what, 0) + pack_string(n.path))
