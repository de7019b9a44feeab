"""The kernel's FUSE protocol (include/uapi/linux/fuse.h, ABI 7.31), sans-IO: requests read from
/dev/fuse decoded, replies encoded. The stand-in of a network agent serves the target's files
with it (agent/fuse.py); only the operations that server answers are decoded, anything else is
answered ENOSYS, which the kernel remembers or turns into EOPNOTSUPP for the caller.

Every struct here is the kernel's, field for field; tests/test_fuse_abi.py mounts a file
system served by this codec and runs real calls against it.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from .file_ops import Stat as Attr  # a file's attributes, as the target's lstat gave them
from .wire import ProtocolError

MAJOR, MINOR = 7, 31  # 7.28 brought max_pages, 7.31 is what every kernel since 5.4 has
ROOT_ID = 1

(LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK, _7, MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ,
 WRITE, STATFS, RELEASE, _19, FSYNC, SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR, FLUSH, INIT, OPENDIR, READDIR,
 RELEASEDIR, FSYNCDIR, GETLK, SETLK, SETLKW, ACCESS, CREATE, INTERRUPT, BMAP, DESTROY) = range(1, 39)
BATCH_FORGET, READDIRPLUS, RENAME2 = 42, 44, 45

# INIT flags asked for (those the kernel offers are kept)
ASYNC_READ = 1 << 0
ATOMIC_O_TRUNC = 1 << 3
BIG_WRITES = 1 << 5
DONT_MASK = 1 << 6  # the mode as given: the target's umask is the agent's business
AUTO_INVAL_DATA = 1 << 12
DO_READDIRPLUS = 1 << 13
PARALLEL_DIROPS = 1 << 18
MAX_PAGES = 1 << 22
CACHE_SYMLINKS = 1 << 23
WANTED = (ASYNC_READ | ATOMIC_O_TRUNC | BIG_WRITES | DONT_MASK | AUTO_INVAL_DATA | DO_READDIRPLUS
          | PARALLEL_DIROPS | MAX_PAGES | CACHE_SYMLINKS)

FOPEN_KEEP_CACHE = 1 << 1  # fuse_open_out.open_flags: pages cached by an earlier open stay valid

# SETATTR's valid bits
FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE, FATTR_ATIME, FATTR_MTIME, FATTR_FH = 1, 2, 4, 8, 16, 32, 64
FATTR_ATIME_NOW, FATTR_MTIME_NOW = 128, 256

IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
OUT_HEADER = struct.Struct("<IiQ")  # len, error (-errno), unique
INIT_IN = struct.Struct("<IIII")  # major, minor, max_readahead, flags (flags2 and the rest unused here)
INIT_OUT = struct.Struct("<IIIIHHIIHHI28x")  # ..., flags, max_background, congestion, max_write, time_gran,
#                                              max_pages, map_alignment, flags2, unused
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # ino size blocks atime mtime ctime (s), their ns, mode nlink uid
#                                            gid rdev blksize flags
ENTRY_OUT = struct.Struct("<QQQQII")  # nodeid, generation, entry_valid, attr_valid (s), their ns; then ATTR
ATTR_OUT = struct.Struct("<QII")  # attr_valid (s), its ns, dummy; then ATTR
FORGET_IN = struct.Struct("<Q")
BATCH_FORGET_IN = struct.Struct("<II")
FORGET_ONE = struct.Struct("<QQ")
GETATTR_IN = struct.Struct("<IIQ")
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")  # valid, pad, fh, size, lock_owner, atime, mtime, ctime,
#                                                  atimensec, mtimensec, ctimensec, mode, unused, uid, gid, unused
MKNOD_IN = struct.Struct("<IIII")  # mode, rdev, umask, padding
MKDIR_IN = struct.Struct("<II")  # mode, umask
RENAME_IN = struct.Struct("<Q")  # newdir
RENAME2_IN = struct.Struct("<QII")  # newdir, flags, padding
LINK_IN = struct.Struct("<Q")
OPEN_IN = struct.Struct("<II")  # flags, open_flags
OPEN_OUT = struct.Struct("<QIi")  # fh, open_flags, backing_id
CREATE_IN = struct.Struct("<IIII")  # flags, mode, umask, open_flags
READ_IN = struct.Struct("<QQIIQII")  # fh, offset, size, read_flags, lock_owner, flags, padding
WRITE_IN = struct.Struct("<QQIIQII")  # fh, offset, size, write_flags, lock_owner, flags, padding
WRITE_OUT = struct.Struct("<II")
RELEASE_IN = struct.Struct("<QIIQ")  # fh, flags, release_flags, lock_owner
FSYNC_IN = struct.Struct("<QII")
ACCESS_IN = struct.Struct("<II")
STATFS_OUT = struct.Struct("<QQQQQIIII24x")  # blocks bfree bavail files ffree bsize namelen frsize padding
DIRENT = struct.Struct("<QQII")  # ino, off, namelen, type; then the name, padded to 8


class Request(NamedTuple):
    opcode: int
    unique: int
    nodeid: int
    uid: int
    gid: int
    pid: int
    body: memoryview  # what follows the header


class Dirent(NamedTuple):
    name: bytes
    attr: Attr
    nodeid: int  # READDIRPLUS: the node the kernel may keep for it (0 for "." and "..")


def decode_request(buf: memoryview) -> Request:
    """One request as one read of /dev/fuse returned it."""
    if len(buf) < IN_HEADER.size:
        raise ProtocolError(f"FUSE request of {len(buf)} bytes is shorter than its header")
    length, opcode, unique, nodeid, uid, gid, pid, _, _ = IN_HEADER.unpack_from(buf)
    if length != len(buf):
        raise ProtocolError(f"FUSE request says {length} bytes but {len(buf)} arrived")
    return Request(opcode, unique, nodeid, uid, gid, pid, buf[IN_HEADER.size:])


def fixed(req: Request, s: struct.Struct) -> tuple:
    if len(req.body) < s.size:
        raise ProtocolError(f"FUSE opcode {req.opcode}: {len(req.body)} bytes, expected {s.size}")
    return s.unpack_from(req.body)


def names(req: Request, skip: int = 0, count: int = 1) -> list[bytes]:
    """The NUL-terminated names after the first skip bytes of the body."""
    parts = bytes(req.body[skip:]).split(b"\0")
    if len(parts) < count + 1 or any(not p or b"/" in p for p in parts[:count]):
        raise ProtocolError(f"FUSE opcode {req.opcode}: malformed name")
    return parts[:count]


def reply(unique: int, *parts: bytes) -> list[bytes]:
    """A successful reply's buffers, for one writev."""
    return [OUT_HEADER.pack(OUT_HEADER.size + sum(len(p) for p in parts), 0, unique), *parts]


def error(unique: int, errno: int) -> list[bytes]:
    return [OUT_HEADER.pack(OUT_HEADER.size, -errno, unique)]


def init_reply(unique: int, req: Request, max_write: int, max_pages: int, max_readahead: int) -> list[bytes]:
    major, minor, kernel_readahead, offered = fixed(req, INIT_IN)
    if major != MAJOR:
        raise ProtocolError(f"the kernel speaks FUSE {major}.{minor}; this server {MAJOR}.{MINOR}")
    return reply(unique, INIT_OUT.pack(MAJOR, MINOR, min(max_readahead, kernel_readahead), offered & WANTED,
                                       16, 12, max_write, 1, max_pages, 0, 0))


def _split_ns(ns: int) -> tuple[int, int]:
    s, rest = divmod(ns, 1_000_000_000)
    return s & 0xFFFFFFFFFFFFFFFF, rest


def encode_attr(a: Attr) -> bytes:
    (at, atn), (mt, mtn), (ct, ctn) = _split_ns(a.atime_ns), _split_ns(a.mtime_ns), _split_ns(a.ctime_ns)
    return ATTR.pack(a.ino, a.size, a.blocks, at, mt, ct, atn, mtn, ctn, a.mode, a.nlink, a.uid, a.gid,
                     a.rdev & 0xFFFFFFFF, a.blksize, 0)


def _valid(seconds: float) -> tuple[int, int]:
    return int(seconds), int(seconds % 1 * 1e9)


def encode_entry(nodeid: int, a: Attr, valid: float) -> bytes:
    """fuse_entry_out; nodeid 0 with a valid time is the kernel's negative entry."""
    s, ns = _valid(valid)
    return ENTRY_OUT.pack(nodeid, 0, s, s, ns, ns) + encode_attr(a)


def encode_attr_out(a: Attr, valid: float) -> bytes:
    s, ns = _valid(valid)
    return ATTR_OUT.pack(s, ns, 0) + encode_attr(a)


def encode_open(fh: int, keep_cache: bool) -> bytes:
    return OPEN_OUT.pack(fh, FOPEN_KEEP_CACHE if keep_cache else 0, 0)


def encode_statfs(blocks: int, bfree: int, bavail: int, files: int, ffree: int, bsize: int, namemax: int,
                  frsize: int) -> bytes:
    return STATFS_OUT.pack(blocks, bfree, bavail, files, ffree, bsize, namemax, frsize, 0)


def _dtype(mode: int) -> int:
    return (mode & 0o170000) >> 12  # DT_* is S_IFMT shifted down


def encode_dirents(entries: list[Dirent], start: int, size: int, plus: bool, valid: float) -> tuple[bytes, int]:
    """READDIR(PLUS)'s reply: entries (those of the listing from index start, the offset the
    kernel passed) as many as fit in size bytes; and how many were taken (each counts as a
    LOOKUP if plus and it has a nodeid)."""
    out, taken = bytearray(), 0
    for i, e in enumerate(entries):
        one = DIRENT.pack(e.attr.ino, start + i + 1, len(e.name), _dtype(e.attr.mode)) + e.name
        one += b"\0" * (-len(one) % 8)
        if plus:
            one = (encode_entry(e.nodeid, e.attr, valid) if e.nodeid else bytes(ENTRY_OUT.size + ATTR.size)) + one
        if len(out) + len(one) > size:
            break
        out += one
        taken += 1
    return bytes(out), taken
