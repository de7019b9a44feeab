"""File operations the agent performs inside the target: opening files as the target sees them
(for `netns:` that includes /etc/netns/NAME/* mounted over /etc by `ip netns exec`) for a
descriptor to pass; for a network agent's stand-in, which cannot take descriptors, every file
operation its file system (agent/fuse.py) needs, on FILES connections (protocol/file_ops.py)."""
from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
import stat
import threading
import time

from ..protocol import agent_wire, file_ops, wire
from .net import OpError

log = logging.getLogger("tether.agent")

# Flags that keep their meaning on a read-only open made on the program's behalf.
PASSED_FLAGS = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK


def open_readonly(req: agent_wire.Open) -> int:
    """A descriptor for req.path opened read-only here; the caller passes it back."""
    if req.flags & os.O_ACCMODE != os.O_RDONLY or req.flags & (os.O_CREAT | os.O_TRUNC):
        raise OpError(errno.EROFS, f"{req.path}: only read-only opens reach the target")
    if not req.path.startswith("/"):
        raise OpError(errno.EINVAL, f"{req.path}: the target opens absolute paths only")
    log.debug("open %s", req.path)
    try:
        return os.open(req.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | (req.flags & PASSED_FLAGS))
    except OSError as e:
        raise OpError(e.errno or errno.EIO, f"{req.path}: {e.strerror}") from None


def read_small(path: str) -> bytes:
    """The contents of path as the target sees it, for links that cannot carry descriptors
    (READ_FILE); at most agent_wire.READ_FILE_MAX bytes (the resolver's files are small)."""
    fd = open_readonly(agent_wire.Open(os.O_RDONLY, 0, path))
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(agent_wire.READ_FILE_MAX + 1)
        except OSError as e:
            raise OpError(e.errno or errno.EIO, f"{path}: {e.strerror}") from None
    if len(data) > agent_wire.READ_FILE_MAX:
        raise OpError(errno.EFBIG, f"{path}: larger than {agent_wire.READ_FILE_MAX} bytes")
    return data


# -- the target's files for a network agent's stand-in (protocol/file_ops.py) --------------------

# Flags of the program's open that keep their meaning here; O_NOFOLLOW because the kernel on the
# program's side resolved the path, link by link, already.
OPEN_FLAGS = os.O_ACCMODE | os.O_APPEND | os.O_TRUNC | os.O_DIRECTORY | os.O_SYNC | os.O_DSYNC
WRITES = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND


class FilesSession:
    """One stand-in's files: the handles its connections share (a file opened on one may be
    read on another) and whether it may write. Lives while one of its connections does."""

    sessions: dict[int, "FilesSession"] = {}
    lock = threading.Lock()

    def __init__(self, writable: bool):
        self.writable = writable
        self.handles: dict[int, int] = {}  # handle -> descriptor
        self.next_handle = itertools.count(1)
        self.connections = 0

    @classmethod
    def join(cls, key: int, writable: bool) -> "FilesSession":
        with cls.lock:
            s = cls.sessions.get(key)
            if s is None:
                s = cls.sessions[key] = FilesSession(writable)
            s.connections += 1
            return s

    def leave(self, key: int) -> None:
        with self.lock:
            self.connections -= 1
            if self.connections:
                return
            del self.sessions[key]
            handles, self.handles = self.handles, {}
        for fd in handles.values():
            os.close(fd)

    def keep(self, fd: int) -> int:
        with self.lock:
            handle = next(self.next_handle)
            self.handles[handle] = fd
            return handle

    def fd(self, handle: int) -> int:
        fd = self.handles.get(handle)
        if fd is None:
            raise OSError(errno.EIO, "no such handle (the agent restarted?)")
        return fd

    def close(self, handle: int) -> None:
        with self.lock:
            fd = self.handles.pop(handle, None)
        if fd is not None:
            os.close(fd)


def serve_files(sock: socket.socket, key: int, writable: bool, who: str) -> None:
    """Answer file requests on sock (blocking, on a thread of its own) until it closes."""
    session = FilesSession.join(key, writable)
    sock.setblocking(True)
    buf = memoryview(bytearray(file_ops.DATA_MAX))
    try:
        while True:
            head = _exactly(sock, file_ops.REQUEST.size)
            if not head:
                return
            h = file_ops.decode_request_head(head)
            req = file_ops.decode_request(h, _exactly(sock, h.rest, eof_ok=False) if h.rest else b"")
            fd = session.handles.get(req.handle) if req.op == file_ops.READ else None
            if fd is not None:
                _send_read(sock, fd, req, buf)  # a failure to send ends the connection
                continue
            try:
                result, data = _perform(session, req)
            except OSError as e:
                result, data = -(e.errno or errno.EIO), b""
                log.debug("files: %s %s: %s", file_ops.NAMES[req.op], req.path, e)
            _send_all(sock, [file_ops.encode_reply_head(result, len(data)), data])
    except (OSError, ConnectionError, wire.ProtocolError) as e:
        log.warning("files link with %s: %s", who, e)
    finally:
        session.leave(key)
        sock.close()


def _send_read(sock: socket.socket, fd: int, req: file_ops.Request, buf: memoryview) -> None:
    """READ's reply, read into buf and sent from there (one copy each way; sendfile measured
    half as fast from tmpfs)."""
    try:
        n = os.preadv(fd, [buf[:min(req.size, len(buf))]], req.offset)
    except OSError as e:
        sock.sendall(file_ops.encode_reply_head(-(e.errno or errno.EIO), 0))
        return
    _send_all(sock, [file_ops.encode_reply_head(0, n), buf[:n]])


def _send_all(sock: socket.socket, parts: list) -> None:
    parts = [memoryview(p).cast("B") for p in parts if len(p)]
    while parts:
        sent = sock.sendmsg(parts)
        while parts and sent >= len(parts[0]):
            sent -= len(parts[0])
            parts.pop(0)
        if parts:
            parts[0] = parts[0][sent:]


def recv_exactly(sock: socket.socket, view: memoryview) -> int:
    """Fill view from sock (blocking); what came: len(view), less only if the peer closed."""
    got = 0
    while got < len(view):
        k = sock.recv_into(view[got:])
        if not k:
            break
        got += k
    return got


def _exactly(sock: socket.socket, n: int, eof_ok: bool = True) -> bytes:
    buf = bytearray(n)
    got = recv_exactly(sock, memoryview(buf))
    if got == 0 and eof_ok:
        return b""
    if got < n:
        raise ConnectionError("the stand-in closed mid-request")
    return bytes(buf)


def _stat(path: str) -> bytes:
    return file_ops.encode_stat(file_ops.stat_of(os.lstat(path)))


def _absolute(path: str) -> str:
    if not path.startswith("/"):
        raise OSError(errno.EINVAL, "relative path")
    return path


def _perform(s: FilesSession, r: file_ops.Request) -> tuple[int, bytes]:
    op, path = r.op, r.path and _absolute(r.path)
    if not s.writable and (op in file_ops.MODIFYING or op == file_ops.OPEN and r.flags & WRITES):
        raise OSError(errno.EROFS, "the session reads the target's files only")
    if op == file_ops.STAT:
        return 0, _stat(path)
    if op == file_ops.READ:
        s.fd(r.handle)  # READs of open handles go by _send_read: this one is stale
    if op == file_ops.WRITE:
        return os.pwrite(s.fd(r.handle), r.data, r.offset), b""
    if op == file_ops.LIST:
        return 0, _list(path)
    if op in (file_ops.OPEN, file_ops.CREATE):
        return _open(s, r, path)
    if op == file_ops.CLOSE:
        s.close(r.handle)
    elif op == file_ops.READLINK:
        return 0, os.readlink(os.fsencode(path))
    elif op == file_ops.MKDIR:
        os.mkdir(path, r.mode)
        return 0, _stat(path)
    elif op == file_ops.UNLINK:
        os.unlink(path)
    elif op == file_ops.RMDIR:
        os.rmdir(path)
    elif op == file_ops.RENAME:
        os.rename(path, _absolute(r.path2))
    elif op == file_ops.SYMLINK:
        os.symlink(r.path2, path)
        return 0, _stat(path)
    elif op == file_ops.LINK:
        os.link(path, _absolute(r.path2), follow_symlinks=False)
        return 0, _stat(r.path2)
    elif op == file_ops.SETATTR:
        _setattr(s, r, path)
        return 0, _stat(path)
    elif op == file_ops.STATFS:
        return 0, file_ops.encode_statfs(os.statvfs(path))
    elif op == file_ops.ACCESS:
        if not os.access(path, r.mode, follow_symlinks=False):
            raise OSError(errno.EACCES, "access")
    elif op == file_ops.FSYNC:
        (os.fdatasync if r.flags else os.fsync)(s.fd(r.handle))
    return 0, b""


def _list(path: str) -> bytes:
    """The entries, "." and ".." first, each with its attributes (lstat)."""
    entries = [(b".", file_ops.stat_of(os.lstat(path))), (b"..", file_ops.stat_of(os.lstat(os.path.join(path, ".."))))]
    with os.scandir(path) as it:
        for e in it:
            try:
                entries.append((os.fsencode(e.name), file_ops.stat_of(e.stat(follow_symlinks=False))))
            except FileNotFoundError:
                continue  # gone since the listing began
    data = file_ops.encode_list(entries)
    if len(data) > file_ops.LIST_MAX:
        raise OSError(errno.E2BIG, f"a listing of {len(entries)} entries")
    return data


def _open(s: FilesSession, r: file_ops.Request, path: str) -> tuple[int, bytes]:
    flags = r.flags & OPEN_FLAGS | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    if r.op == file_ops.CREATE:
        flags |= os.O_CREAT | r.flags & os.O_EXCL
    fd = os.open(path, flags, r.mode)
    kept = False
    try:
        st = file_ops.stat_of(os.fstat(fd))
        if not flags & os.O_ACCMODE and stat.S_ISREG(st.mode) and st.size <= r.size:
            return 0, file_ops.encode_stat(st) + os.pread(fd, st.size, 0)  # whole: no handle kept
        handle, kept = s.keep(fd), True
        return handle, file_ops.encode_stat(st)
    finally:
        if not kept:
            os.close(fd)


def _setattr(s: FilesSession, r: file_ops.Request, path: str) -> None:
    if r.flags & file_ops.SET_MODE:
        os.chmod(path, stat.S_IMODE(r.mode))
    if r.flags & file_ops.SET_OWNER:
        unchanged = 0xFFFFFFFF  # (uid_t) -1
        os.chown(path, -1 if r.uid == unchanged else r.uid, -1 if r.gid == unchanged else r.gid,
                 follow_symlinks=False)
    if r.flags & file_ops.SET_SIZE:
        if r.handle:
            os.ftruncate(s.fd(r.handle), r.size)
        else:
            os.truncate(path, r.size)
    if r.flags & (file_ops.SET_ATIME | file_ops.SET_MTIME):
        now, old = time.time_ns(), os.lstat(path)
        atime = (now if r.atime_ns < 0 else r.atime_ns) if r.flags & file_ops.SET_ATIME else old.st_atime_ns
        mtime = (now if r.mtime_ns < 0 else r.mtime_ns) if r.flags & file_ops.SET_MTIME else old.st_mtime_ns
        os.utime(path, ns=(atime, mtime), follow_symlinks=False)
