"""The target's files through a network agent: a FUSE file system the stand-in serves.

Over TCP no descriptor of the target can reach the program, so the stand-in mounts a FUSE file
system whose every operation it answers from the agent's files (protocol/file_ops.py, on data
connections of their own; agent/files.py on the other side), and hands its root directory to
the layer in place of the target's root (OPEN "/"). The layer then works as on the same host
(layer/files/target.c: openat2 with RESOLVE_IN_ROOT under that root), and every call on the
descriptors it opens (read, pread, mmap, fstat, getdents64, lseek, write) is the kernel's own,
with its page cache in front. The mount is detached as soon as its root is open: nothing is
seen in this host's mount table, and it goes away with the last descriptor.

Files up to whole_max bytes opened read-only come whole with their open (one round trip);
larger ones are read through, up to 1 MiB per request, several in flight (the kernel reads
ahead; each worker thread has its own connection to the agent). A directory is listed in one
request with every entry's attributes (READDIRPLUS hands them to the kernel: no lookup per
entry). When the agent cannot be reached a call gets EIO, never a hang.
"""
from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import socket
import stat
import tempfile
import threading
from typing import NamedTuple

from ..protocol import file_ops, fuse_abi as F, wire
from . import files

log = logging.getLogger("tether.agent")

MAX_PAGES = 256  # 1 MiB per READ or WRITE request
MAX_IO = MAX_PAGES * 4096
READ_AHEAD = 4 << 20  # bytes the kernel reads ahead of a sequential reader
WORKERS = 4  # requests served at once: the kernel's read-ahead keeps several READs in flight
VALID = 1.0  # seconds the kernel may trust a name or attributes before it asks again
REQUEST_TIMEOUT = 30.0  # an agent that neither answers nor fails the link: EIO after this
MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MNT_DETACH = 2


class FuseError(Exception):
    """The file system cannot be set up here; the message names the fix."""


class Handle(NamedTuple):
    agent: int  # the agent's handle, 0 if the whole file came along
    data: bytes | None


def _join(parent: str, name: bytes) -> str:
    return ("" if parent == "/" else parent) + "/" + os.fsdecode(name)


class AgentFiles:
    """One worker's connection to the agent's files (blocking; dialled when first needed)."""

    def __init__(self, fs: "FileSystem"):
        self.fs = fs
        self.sock: socket.socket | None = None
        self.view = memoryview(bytearray(file_ops.STAT_RECORD.size + file_ops.DATA_MAX))

    def call(self, req: file_ops.Request, limit: int = file_ops.DATA_MAX) -> tuple[int, memoryview]:
        """(result, reply data; valid until the next call); OSError(EIO) if the agent is out of reach."""
        try:
            if self.sock is None:
                self.sock = self.fs.dial()
            self.sock.sendall(file_ops.encode_request(req))
            self._exactly(self.view[:file_ops.REPLY.size])
            result, n = file_ops.decode_reply_head(bytes(self.view[:file_ops.REPLY.size]), limit)
            view = self.view if n <= len(self.view) else memoryview(bytearray(n))  # a long listing: once
            self._exactly(view[:n])
            return result, view[:n]
        except (OSError, wire.ProtocolError, asyncio.TimeoutError) as e:
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            log.warning("files: %s %s: %s", file_ops.NAMES.get(req.op, req.op), req.path, e)
            raise OSError(errno.EIO, str(e)) from None

    def _exactly(self, view: memoryview) -> None:
        if files.recv_exactly(self.sock, view) != len(view):
            raise ConnectionError("the agent closed the files link")

    def ok(self, req: file_ops.Request, limit: int = file_ops.DATA_MAX) -> tuple[int, memoryview]:
        """As call, with a failure in the target raised as OSError(its errno)."""
        result, data = self.call(req, limit)
        if result < 0:
            raise OSError(-result, os.strerror(-result))
        return result, data


class FileSystem:
    """The mounted file system: the kernel's nodes as the target's paths, open handles, workers."""

    def __init__(self, dial_async, loop: asyncio.AbstractEventLoop, writable: bool, whole_max: int):
        self.dial_async, self.loop = dial_async, loop
        self.writable, self.whole_max = writable, whole_max
        self.lock = threading.Lock()
        self.paths: dict[int, str] = {F.ROOT_ID: "/"}  # nodeid -> the target's path
        self.lookups: dict[int, int] = {F.ROOT_ID: 1}
        self.nodes: dict[str, int] = {"/": F.ROOT_ID}
        self.next_node = F.ROOT_ID + 1
        self.handles: dict[int, Handle] = {}
        self.dirs: dict[int, list[tuple[bytes, file_ops.Stat]]] = {}
        self.next_fh = 1
        self.dev = -1
        self.root = -1

    # -- setting up ------------------------------------------------------------------------

    def mount(self) -> int:
        """Mount, serve, open the root and detach; the root's descriptor (O_PATH)."""
        try:
            self.dev = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise FuseError(f"the target's files through a network agent need FUSE here (/dev/fuse: "
                            f"{e.strerror}); load the fuse module, or give --fs local") from None
        where = tempfile.mkdtemp(prefix="tether-files-")
        try:
            options = (f"fd={self.dev},rootmode=40000,user_id={os.getuid()},group_id={os.getgid()},"
                       f"allow_other,max_read={MAX_IO}")
            flags = MS_NOSUID | MS_NODEV | (0 if self.writable else MS_RDONLY)
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.mount(b"tether", os.fsencode(where), b"fuse.tether", flags, options.encode()) != 0:
                e = ctypes.get_errno()
                raise FuseError(f"mounting the target's files failed ({os.strerror(e)}): a FUSE mount needs "
                                "root here (or give --fs local)")
            for n in range(WORKERS):
                threading.Thread(target=self._serve, daemon=True, name=f"fuse-{n}").start()
            self.root = os.open(where, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            libc.umount2(os.fsencode(where), MNT_DETACH)
            self._read_ahead()
        finally:
            try:
                os.rmdir(where)
            except OSError:
                pass
        return self.root

    def _read_ahead(self) -> None:
        """Let the kernel read ahead READ_AHEAD, not its default 128 KiB: requests of 1 MiB, a
        few in flight, hide the round trip to the agent. Best effort: without it reads are
        only slower."""
        dev = os.fstat(self.root).st_dev
        try:
            with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb", "w") as f:
                f.write(str(READ_AHEAD >> 10))
        except OSError as e:
            log.info("files: the kernel's read-ahead stays at its default: %s", e)

    def dial(self) -> socket.socket:
        """A new data connection to the agent's files (from a worker thread)."""
        future = asyncio.run_coroutine_threadsafe(self.dial_async(), self.loop)
        try:
            sock = future.result(REQUEST_TIMEOUT)
        except (OSError, asyncio.TimeoutError, TimeoutError) as e:
            future.cancel()
            raise OSError(errno.EIO, f"cannot reach the agent: {e}") from None
        sock.setblocking(True)
        sock.settimeout(REQUEST_TIMEOUT)
        return sock

    # -- the kernel's requests ---------------------------------------------------------------

    def _serve(self) -> None:
        agent = AgentFiles(self)
        buf = bytearray(MAX_IO + 4096)
        while True:
            try:
                n = os.readv(self.dev, [buf])
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
                    continue  # an interrupted request, gone before we read it
                if e.errno != errno.ENODEV:  # ENODEV: unmounted, the last descriptor closed
                    log.warning("files: reading /dev/fuse: %s", e)
                return
            try:
                req = F.decode_request(memoryview(buf)[:n])
            except wire.ProtocolError as e:
                log.warning("files: %s", e)
                continue
            try:
                out = self._answer(req, agent)
            except OSError as e:
                out = F.error(req.unique, e.errno or errno.EIO)
            except wire.ProtocolError as e:
                log.warning("files: %s", e)
                out = F.error(req.unique, errno.EIO)
            except Exception:  # noqa: BLE001 - a bug must fail the one call, not the file system
                log.exception("files: opcode %d", req.opcode)
                out = F.error(req.unique, errno.EIO)
            if out is not None:
                try:
                    os.writev(self.dev, out)
                except OSError as e:
                    if e.errno != errno.ENOENT:  # ENOENT: the caller was interrupted meanwhile
                        log.warning("files: answering opcode %d: %s", req.opcode, e)

    def _path(self, nodeid: int) -> str:
        path = self.paths.get(nodeid)
        if path is None:
            raise OSError(errno.ESTALE, "unknown node")
        return path

    def _child(self, req: F.Request, name: bytes) -> str:
        return _join(self._path(req.nodeid), name)

    def _node(self, path: str, count: int = 1) -> int:
        """path's nodeid, its lookup count raised by count (a reply that hands it to the kernel)."""
        with self.lock:
            nodeid = self.nodes.get(path)
            if nodeid is None:
                nodeid = self.nodes[path] = self.next_node
                self.next_node += 1
                self.paths[nodeid] = path
                self.lookups[nodeid] = 0
            self.lookups[nodeid] += count
            return nodeid

    def _forget(self, nodeid: int, count: int) -> None:
        with self.lock:
            left = self.lookups.get(nodeid, 0) - count
            if left > 0 or nodeid == F.ROOT_ID:
                self.lookups[nodeid] = max(left, 1 if nodeid == F.ROOT_ID else 0)
                return
            self.lookups.pop(nodeid, None)
            path = self.paths.pop(nodeid, None)
            if path is not None and self.nodes.get(path) == nodeid:
                del self.nodes[path]

    def _gone(self, path: str) -> None:
        """path no longer names its node (unlinked, renamed over): a new lookup gets a new one."""
        with self.lock:
            self.nodes.pop(path, None)

    def _moved(self, old: str, new: str) -> None:
        with self.lock:
            self.nodes.pop(new, None)
            prefix = old + "/"
            for path in [p for p in self.nodes if p == old or p.startswith(prefix)]:
                nodeid = self.nodes.pop(path)
                moved = new + path[len(old):]
                self.nodes[moved] = nodeid
                self.paths[nodeid] = moved

    def _keep(self, table: dict, value) -> int:
        """A new fh for value, kept in table (handles: open files; dirs: listings)."""
        with self.lock:
            fh = self.next_fh
            self.next_fh += 1
            table[fh] = value
            return fh

    def _entry(self, req: F.Request, path: str, record: memoryview) -> list[bytes]:
        return F.reply(req.unique, F.encode_entry(self._node(path), file_ops.decode_stat(record), VALID))

    def _answer(self, req: F.Request, agent: AgentFiles) -> list[bytes] | None:
        op, Q = req.opcode, file_ops.Request
        if op == F.LOOKUP:
            path = self._child(req, F.names(req)[0])
            _, data = agent.ok(Q(file_ops.STAT, path))
            return self._entry(req, path, data)
        if op == F.GETATTR:
            _, data = agent.ok(Q(file_ops.STAT, self._path(req.nodeid)))
            return F.reply(req.unique, F.encode_attr_out(file_ops.decode_stat(data), VALID))
        if op == F.READ:
            fh, offset, size = F.fixed(req, F.READ_IN)[:3]
            h = self.handles.get(fh)
            if h is None:
                return F.error(req.unique, errno.EBADF)
            if h.data is not None:
                return F.reply(req.unique, h.data[offset:offset + size])
            _, data = agent.ok(Q(file_ops.READ, handle=h.agent, offset=offset, size=min(size, MAX_IO)))
            return F.reply(req.unique, data)
        if op in (F.OPEN, F.OPENDIR):
            return self._open(req, agent)
        if op in (F.READDIR, F.READDIRPLUS):
            return self._readdir(req)
        if op in (F.RELEASE, F.RELEASEDIR):
            fh = F.fixed(req, F.RELEASE_IN)[0]
            with self.lock:
                h = self.handles.pop(fh, None)
                self.dirs.pop(fh, None)
            if h is not None and h.agent:
                try:
                    agent.call(Q(file_ops.CLOSE, handle=h.agent))
                except OSError:
                    pass  # the agent is gone, and its descriptors with it
            return F.reply(req.unique)
        if op == F.FORGET:
            self._forget(req.nodeid, F.fixed(req, F.FORGET_IN)[0])
            return None
        if op == F.BATCH_FORGET:
            count = F.fixed(req, F.BATCH_FORGET_IN)[0]
            for i in range(count):
                at = F.BATCH_FORGET_IN.size + i * F.FORGET_ONE.size
                if len(req.body) < at + F.FORGET_ONE.size:
                    break
                self._forget(*F.FORGET_ONE.unpack_from(req.body, at))
            return None
        if op == F.READLINK:
            _, data = agent.ok(Q(file_ops.READLINK, self._path(req.nodeid)))
            return F.reply(req.unique, bytes(data))
        if op == F.ACCESS:
            agent.ok(Q(file_ops.ACCESS, self._path(req.nodeid), mode=F.fixed(req, F.ACCESS_IN)[0]))
            return F.reply(req.unique)
        if op == F.STATFS:
            _, data = agent.ok(Q(file_ops.STATFS, self._path(req.nodeid)))
            return F.reply(req.unique, F.encode_statfs(*file_ops.decode_statfs(bytes(data))))
        if op == F.FLUSH:
            return F.reply(req.unique)
        if op == F.INIT:
            return F.init_reply(req.unique, req, MAX_IO, MAX_PAGES, MAX_IO)
        if op == F.INTERRUPT:
            return None  # requests are short; each is answered as it ends
        if op == F.DESTROY:
            return F.reply(req.unique)
        return self._modify(req, agent)

    def _open(self, req: F.Request, agent: AgentFiles) -> list[bytes]:
        flags = F.fixed(req, F.OPEN_IN)[0]
        path = self._path(req.nodeid)
        if req.opcode == F.OPENDIR:
            _, data = agent.ok(file_ops.Request(file_ops.LIST, path), file_ops.LIST_MAX)
            entries = file_ops.decode_list(bytes(data))
            fh = self._keep(self.dirs, entries)
            return F.reply(req.unique, F.encode_open(fh, False))
        read_only = not flags & (os.O_ACCMODE | os.O_TRUNC)
        handle, data = agent.ok(file_ops.Request(file_ops.OPEN, path, flags=flags,
                                                 size=self.whole_max if read_only else 0),
                                file_ops.STAT_RECORD.size + file_ops.DATA_MAX)
        whole = bytes(data[file_ops.STAT_RECORD.size:]) if handle == 0 else None
        return F.reply(req.unique, F.encode_open(self._keep(self.handles, Handle(handle, whole)), read_only))

    def _readdir(self, req: F.Request) -> list[bytes]:
        fh, offset, size = F.fixed(req, F.READ_IN)[:3]
        entries = self.dirs.get(fh)
        if entries is None:
            return F.error(req.unique, errno.EBADF)
        plus = req.opcode == F.READDIRPLUS
        parent = self._path(req.nodeid)
        dirents = []
        for name, s in entries[offset:offset + max(1, size // 32)]:  # no more than could fit
            named = plus and name not in (b".", b"..")  # the kernel keeps no node for those
            dirents.append(F.Dirent(name, s, self._node(_join(parent, name), 0) if named else 0))
        data, taken = F.encode_dirents(dirents, offset, size, plus, VALID)
        for d in dirents[:taken]:
            if d.nodeid:
                self._node(_join(parent, d.name))
        return F.reply(req.unique, data)

    def _modify(self, req: F.Request, agent: AgentFiles) -> list[bytes]:
        op, Q = req.opcode, file_ops.Request
        if op == F.WRITE:
            fh, offset, size = F.fixed(req, F.WRITE_IN)[:3]
            h = self.handles.get(fh)
            if h is None or not h.agent:
                return F.error(req.unique, errno.EBADF)
            data = req.body[F.WRITE_IN.size:F.WRITE_IN.size + size]
            written, _ = agent.ok(Q(file_ops.WRITE, handle=h.agent, offset=offset, data=bytes(data)))
            return F.reply(req.unique, F.WRITE_OUT.pack(written, 0))
        if op == F.CREATE:
            flags, mode = F.fixed(req, F.CREATE_IN)[:2]
            path = self._child(req, F.names(req, F.CREATE_IN.size)[0])
            handle, data = agent.ok(Q(file_ops.CREATE, path, flags=flags, mode=mode))
            entry = F.encode_entry(self._node(path), file_ops.decode_stat(data), VALID)
            return F.reply(req.unique, entry, F.encode_open(self._keep(self.handles, Handle(handle, None)), False))
        if op == F.MKDIR:
            mode = F.fixed(req, F.MKDIR_IN)[0]
            path = self._child(req, F.names(req, F.MKDIR_IN.size)[0])
            _, data = agent.ok(Q(file_ops.MKDIR, path, mode=mode))
            return self._entry(req, path, data)
        if op == F.MKNOD:
            mode = F.fixed(req, F.MKNOD_IN)[0]
            if not stat.S_ISREG(mode):
                return F.error(req.unique, errno.EPERM)  # devices, fifos and sockets stay local things
            path = self._child(req, F.names(req, F.MKNOD_IN.size)[0])
            handle, data = agent.ok(Q(file_ops.CREATE, path, flags=os.O_WRONLY | os.O_EXCL, mode=mode))
            agent.call(Q(file_ops.CLOSE, handle=handle))
            return self._entry(req, path, data)
        if op == F.SYMLINK:
            name, target = F.names(req, 0, 1)[0], bytes(req.body).split(b"\0")[1]
            path = self._child(req, name)
            _, data = agent.ok(Q(file_ops.SYMLINK, path, os.fsdecode(target)))
            return self._entry(req, path, data)
        if op == F.LINK:
            old = self._path(F.fixed(req, F.LINK_IN)[0])
            path = self._child(req, F.names(req, F.LINK_IN.size)[0])
            _, data = agent.ok(Q(file_ops.LINK, old, path))
            return self._entry(req, path, data)
        if op in (F.UNLINK, F.RMDIR):
            path = self._child(req, F.names(req)[0])
            agent.ok(Q(file_ops.UNLINK if op == F.UNLINK else file_ops.RMDIR, path))
            self._gone(path)
            return F.reply(req.unique)
        if op == F.RENAME:
            newdir = F.fixed(req, F.RENAME_IN)[0]
            old_name, new_name = F.names(req, F.RENAME_IN.size, 2)
            old = self._child(req, old_name)
            new = self._child(req._replace(nodeid=newdir), new_name)
            agent.ok(Q(file_ops.RENAME, old, new))
            self._moved(old, new)
            return F.reply(req.unique)
        if op == F.SETATTR:
            return self._setattr(req, agent)
        if op in (F.FSYNC, F.FSYNCDIR):
            fh, flags = F.fixed(req, F.FSYNC_IN)[:2]
            h = self.handles.get(fh)
            if h is not None and h.agent:
                agent.ok(Q(file_ops.FSYNC, handle=h.agent, flags=flags & 1))
            return F.reply(req.unique)
        return F.error(req.unique, errno.ENOSYS)

    def _setattr(self, req: F.Request, agent: AgentFiles) -> list[bytes]:
        (valid, _, fh, size, _, atime, mtime, _, atimensec, mtimensec, _, mode, _, uid, gid, _) = \
            F.fixed(req, F.SETATTR_IN)
        what = 0
        what |= file_ops.SET_MODE if valid & F.FATTR_MODE else 0
        what |= file_ops.SET_OWNER if valid & (F.FATTR_UID | F.FATTR_GID) else 0
        what |= file_ops.SET_SIZE if valid & F.FATTR_SIZE else 0
        what |= file_ops.SET_ATIME if valid & (F.FATTR_ATIME | F.FATTR_ATIME_NOW) else 0
        what |= file_ops.SET_MTIME if valid & (F.FATTR_MTIME | F.FATTR_MTIME_NOW) else 0
        h = self.handles.get(fh) if valid & F.FATTR_FH else None
        a_ns = -1 if valid & F.FATTR_ATIME_NOW else atime * 1_000_000_000 + atimensec
        m_ns = -1 if valid & F.FATTR_MTIME_NOW else mtime * 1_000_000_000 + mtimensec
        _, data = agent.ok(file_ops.Request(
            file_ops.SETATTR, self._path(req.nodeid), handle=h.agent if h else 0, flags=what, mode=mode,
            size=size, atime_ns=a_ns, mtime_ns=m_ns, uid=uid if valid & F.FATTR_UID else -1 & 0xFFFFFFFF,
            gid=gid if valid & F.FATTR_GID else -1 & 0xFFFFFFFF))
        return F.reply(req.unique, F.encode_attr_out(file_ops.decode_stat(data), VALID))

