"""File operations a network agent's stand-in asks of the agent (agent/fuse.py -> agent/files.py).

A data connection whose first frame is TARGET_FILES (agent_wire) carries them after its reply, one
request and one reply at a time, in this binary form (frames are too small for file data):

    request: REQUEST header, then path, path2 (RENAME's new name, SYMLINK's target) and data
    reply:   REPLY header (result >= 0, or -errno), then data_len bytes: what the op returns

Results and replies per op: STAT (lstat) a STAT record; LIST the directory's entries, each
a STAT record then u16 length and name; OPEN and CREATE a handle as result (0: none kept,
the whole file came along), a STAT record and, when it fits `size`, the whole contents; READ
the bytes; WRITE the count; READLINK the target; STATFS a STATFS record; the others nothing.
Pure encode/decode: agent/files.py and agent/fuse.py do the I/O.
"""
from __future__ import annotations

import os
import struct
from typing import NamedTuple

from .wire import ProtocolError

(STAT, LIST, OPEN, READ, WRITE, CLOSE, READLINK, MKDIR, UNLINK, RMDIR, RENAME, SETATTR, SYMLINK, STATFS, ACCESS,
 FSYNC, CREATE, LINK) = range(1, 19)
NAMES = {STAT: "stat", LIST: "list", OPEN: "open", READ: "read", WRITE: "write", CLOSE: "close",
         READLINK: "readlink", MKDIR: "mkdir", UNLINK: "unlink", RMDIR: "rmdir", RENAME: "rename",
         SETATTR: "setattr", SYMLINK: "symlink", STATFS: "statfs", ACCESS: "access", FSYNC: "fsync",
         CREATE: "create", LINK: "link"}
MODIFYING = frozenset({WRITE, MKDIR, UNLINK, RMDIR, RENAME, SETATTR, SYMLINK, CREATE, LINK})

# SETATTR's what (flags): which fields apply; times of -1 ns mean now
SET_MODE, SET_OWNER, SET_SIZE, SET_ATIME, SET_MTIME = 1, 2, 4, 8, 16

DATA_MAX = 1 << 20  # READ and WRITE move at most this much at a time; OPEN's contents as well
PATH_MAX = 4096
LIST_MAX = 64 << 20  # bytes of one directory listing

# op, path_len, path2_len, reserved, handle, flags, mode, data_len, offset, size, atime_ns, mtime_ns, uid, gid
REQUEST = struct.Struct("<HHHHIIIIQQqqII")
REPLY = struct.Struct("<qI4x")  # result, data_len
# ino size blocks atime_ns mtime_ns ctime_ns mode nlink uid gid rdev blksize
STAT_RECORD = struct.Struct("<QQQqqqIIIIQI4x")
STATFS_RECORD = struct.Struct("<QQQQQQQQ")  # blocks bfree bavail files ffree bsize namemax frsize
NAME_LEN = struct.Struct("<H")


class Request(NamedTuple):
    op: int
    path: str = ""
    path2: str = ""
    handle: int = 0
    flags: int = 0
    mode: int = 0
    offset: int = 0
    size: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    uid: int = 0
    gid: int = 0
    data: bytes = b""


class Stat(NamedTuple):
    ino: int
    size: int
    blocks: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    blksize: int


def stat_of(st: os.stat_result) -> Stat:
    return Stat(st.st_ino, st.st_size, st.st_blocks, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns, st.st_mode,
                st.st_nlink, st.st_uid, st.st_gid, st.st_rdev, st.st_blksize)


def encode_request(r: Request) -> bytes:
    path, path2 = os.fsencode(r.path), os.fsencode(r.path2)
    if max(len(path), len(path2)) > PATH_MAX or len(r.data) > DATA_MAX:
        raise ProtocolError("file request too long")
    return REQUEST.pack(r.op, len(path), len(path2), 0, r.handle, r.flags, r.mode, len(r.data), r.offset,
                        r.size, r.atime_ns, r.mtime_ns, r.uid, r.gid) + path + path2 + r.data


class RequestHead(NamedTuple):
    """A request's header, and how many bytes of paths and data follow it."""
    fields: tuple
    rest: int


def decode_request_head(buf: bytes) -> RequestHead:
    if len(buf) != REQUEST.size:
        raise ProtocolError(f"a file request header of {len(buf)} bytes")
    fields = REQUEST.unpack(buf)
    op, path_len, path2_len, _, *_, data_len = fields[:8]
    if op not in NAMES or max(path_len, path2_len) > PATH_MAX or data_len > DATA_MAX:
        raise ProtocolError(f"malformed file request (op {op})")
    return RequestHead(fields, path_len + path2_len + data_len)


def decode_request(head: RequestHead, rest: bytes) -> Request:
    op, path_len, path2_len, _, handle, flags, mode, data_len, offset, size, atime, mtime, uid, gid = head.fields
    if len(rest) != head.rest:
        raise ProtocolError("file request cut short")
    path, path2 = rest[:path_len], rest[path_len:path_len + path2_len]
    if b"\0" in path or b"\0" in path2:
        raise ProtocolError("a NUL in a path")
    return Request(op, os.fsdecode(path), os.fsdecode(path2), handle, flags, mode, offset, size, atime, mtime,
                   uid, gid, rest[path_len + path2_len:])


def encode_reply_head(result: int, data_len: int) -> bytes:
    """The header; data_len bytes follow it (sent apart: READ's need no copy)."""
    return REPLY.pack(result, data_len)


def decode_reply_head(buf: bytes, limit: int) -> tuple[int, int]:
    """(result, data_len) of a reply header; data_len checked against limit."""
    if len(buf) != REPLY.size:
        raise ProtocolError(f"a file reply header of {len(buf)} bytes")
    result, data_len = REPLY.unpack(buf)
    if data_len > limit:
        raise ProtocolError(f"a file reply of {data_len} bytes (at most {limit})")
    return result, data_len


def encode_stat(s: Stat) -> bytes:
    return STAT_RECORD.pack(*s)


def decode_stat(buf: bytes, at: int = 0) -> Stat:
    if len(buf) < at + STAT_RECORD.size:
        raise ProtocolError("a stat record cut short")
    return Stat(*STAT_RECORD.unpack_from(buf, at))


def encode_list(entries: list[tuple[bytes, Stat]]) -> bytes:
    return b"".join(encode_stat(s) + NAME_LEN.pack(len(name)) + name for name, s in entries)


def decode_list(buf: bytes) -> list[tuple[bytes, Stat]]:
    out, at = [], 0
    while at < len(buf):
        s = decode_stat(buf, at)
        at += STAT_RECORD.size
        if len(buf) < at + NAME_LEN.size:
            raise ProtocolError("a directory entry cut short")
        (n,), at = NAME_LEN.unpack_from(buf, at), at + NAME_LEN.size
        name = buf[at:at + n]
        if len(name) != n or not name or b"/" in name or b"\0" in name:
            raise ProtocolError("a malformed name in a directory listing")
        out.append((bytes(name), s))
        at += n
    return out


def encode_statfs(st: os.statvfs_result) -> bytes:
    return STATFS_RECORD.pack(st.f_blocks, st.f_bfree, st.f_bavail, st.f_files, st.f_ffree, st.f_bsize,
                              st.f_namemax, st.f_frsize)


def decode_statfs(buf: bytes) -> tuple[int, ...]:
    if len(buf) != STATFS_RECORD.size:
        raise ProtocolError("malformed statfs record")
    return STATFS_RECORD.unpack(buf)
