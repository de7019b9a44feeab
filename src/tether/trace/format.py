"""Turn SYSCALL events into strace-like lines and JSON objects.

    [1234 1236] connect(3, {AF_INET, 127.0.0.1:8080}, 16) = -1 ECONNREFUSED (Connection refused)

Arguments are decoded where it is cheap and useful: paths and socket addresses (copied by the
layer), file descriptors, a few flag sets; everything else prints as a number.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from typing import NamedTuple

from ..protocol.sockaddr import SockaddrError, decode_inet
from ..protocol.trace_wire import DATA_SOCKADDR, DATA_STRING, SyscallEvent
from .syscalls_x86_64 import NAMES

AT_FDCWD = -100
NUL = b"\0"

CLASSES = {
    "net": {"socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "getsockname",
            "getpeername", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
            "shutdown", "setsockopt", "getsockopt"},
    "file": {"open", "openat", "openat2", "creat", "close", "read", "write", "pread64", "pwrite64",
             "readv", "writev", "lseek", "stat", "fstat", "lstat", "newfstatat", "statx", "access",
             "faccessat", "faccessat2", "getdents64", "unlink", "unlinkat", "rename", "renameat",
             "renameat2", "mkdir", "mkdirat", "rmdir", "readlink", "readlinkat", "chdir", "fchdir",
             "chmod", "fchmod", "fchmodat", "chown", "fchown", "fchownat", "lchown", "truncate",
             "ftruncate", "fsync", "fdatasync", "link", "linkat", "symlink", "symlinkat", "dup",
             "dup2", "dup3", "fcntl", "utimensat", "statfs", "fstatfs"},
    "process": {"clone", "clone3", "fork", "vfork", "execve", "execveat", "exit", "exit_group",
                "wait4", "waitid", "kill", "tgkill", "pidfd_open", "pidfd_send_signal", "getpid",
                "getppid", "setpgid", "setsid", "prctl"},
}

# How to print each argument of the syscalls worth decoding: fd, path, sockaddr, int, hex,
# oflags (open flags), domain, socktype, dirfd (AT_FDCWD aware), mode (octal).
SIGNATURES = {
    "read": "fd hex int", "write": "fd hex int", "pread64": "fd hex int int",
    "pwrite64": "fd hex int int", "close": "fd", "lseek": "fd int int", "fstat": "fd hex",
    "open": "path oflags mode", "openat": "dirfd path oflags mode", "creat": "path mode",
    "stat": "path hex", "lstat": "path hex", "newfstatat": "dirfd path hex hex",
    "statx": "dirfd path hex hex hex", "access": "path int", "faccessat": "dirfd path int",
    "faccessat2": "dirfd path int hex", "unlink": "path", "unlinkat": "dirfd path hex",
    "mkdir": "path mode", "mkdirat": "dirfd path mode", "rmdir": "path", "chdir": "path",
    "rename": "path path", "renameat": "dirfd path dirfd path",
    "renameat2": "dirfd path dirfd path hex", "readlink": "path hex int",
    "readlinkat": "dirfd path hex int", "getdents64": "fd hex int", "dup": "fd",
    "dup2": "fd fd", "dup3": "fd fd hex", "fcntl": "fd int hex",
    "socket": "domain socktype int", "connect": "fd sockaddr int", "bind": "fd sockaddr int",
    "listen": "fd int", "accept": "fd sockaddr hex", "accept4": "fd sockaddr hex hex",
    "getsockname": "fd sockaddr hex", "getpeername": "fd sockaddr hex",
    "sendto": "fd hex int hex sockaddr int", "recvfrom": "fd hex int hex sockaddr hex",
    "shutdown": "fd int", "setsockopt": "fd int int hex int", "getsockopt": "fd int int hex hex",
    "execve": "path hex hex", "execveat": "dirfd path hex hex hex", "exit": "int",
    "exit_group": "int", "kill": "int int", "wait4": "int hex hex hex", "getpid": "",
    "getppid": "", "fork": "", "vfork": "", "epoll_pwait": "fd hex int int hex int",
    "epoll_ctl": "fd int fd hex",
    "pipe2": "hex hex", "socketpair": "domain socktype int hex", "epoll_create1": "hex",
    "eventfd2": "int hex", "prlimit64": "int int hex hex", "pidfd_open": "int hex",
    "pidfd_send_signal": "fd int hex hex", "waitid": "int int hex hex hex",
    "clone": "hex hex hex hex hex", "clone3": "hex int", "getrandom": "hex int hex",
    "sched_getaffinity": "int int hex", "sched_yield": "", "gettid": "", "uname": "hex",
    "nanosleep": "hex hex", "madvise": "hex int int", "mmap": "hex int hex hex fd int",
    "munmap": "hex int", "mprotect": "hex int hex", "ioctl": "fd hex hex",
    "rt_sigaction": "int hex hex int", "rt_sigprocmask": "int hex hex int",
    "sigaltstack": "hex hex", "futex": "hex int int hex hex int", "tgkill": "int int int",
    "setpgid": "int int", "setsid": "", "chmod": "path mode", "fchmod": "fd mode",
    "fchmodat": "dirfd path mode", "ftruncate": "fd int", "truncate": "path int",
    "fsync": "fd", "fdatasync": "fd", "fchdir": "fd", "symlink": "path path",
    "symlinkat": "path dirfd path", "link": "path path", "linkat": "dirfd path dirfd path hex",
    "readv": "fd hex int", "writev": "fd hex int", "sendmsg": "fd hex hex",
    "recvmsg": "fd hex hex", "fstatfs": "fd hex", "statfs": "path hex",
    "utimensat": "dirfd path hex hex", "openat2": "dirfd path hex int",
}

OPEN_FLAGS = [(0o100, "O_CREAT"), (0o200, "O_EXCL"), (0o400, "O_NOCTTY"), (0o1000, "O_TRUNC"),
              (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"), (0o10000, "O_DSYNC"),
              (0o200000, "O_DIRECTORY"), (0o400000, "O_NOFOLLOW"), (0o2000000, "O_CLOEXEC"),
              (0o1000000, "O_NOATIME"), (0o4010000, "O_SYNC"), (0o10000000, "O_PATH"),
              (0o20200000, "O_TMPFILE"), (0o40000, "O_DIRECT"), (0o100000, "O_LARGEFILE")]
DOMAINS = {socket.AF_UNIX: "AF_UNIX", socket.AF_INET: "AF_INET", socket.AF_INET6: "AF_INET6",
           socket.AF_NETLINK: "AF_NETLINK", socket.AF_PACKET: "AF_PACKET"}
SOCK_TYPES = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 5: "SOCK_SEQPACKET"}
SOCK_FLAGS = [(0o4000, "SOCK_NONBLOCK"), (0o2000000, "SOCK_CLOEXEC")]


def syscall_name(nr: int) -> str:
    return NAMES.get(nr, f"syscall_{nr}")


def class_of(name: str) -> str | None:
    return next((c for c, names in CLASSES.items() if name in names), None)


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _quote(raw: bytes, truncated: bool) -> str:
    text = raw.decode("latin-1")
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"...' if truncated else f'"{text}"'  # most paths: nothing to escape
    out = []
    for b in raw:
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append({9: "\\t", 10: "\\n", 13: "\\r"}.get(b, f"\\x{b:02x}"))
    return '"' + "".join(out) + '"' + ("..." if truncated else "")


def format_sockaddr(raw: bytes) -> str:
    if len(raw) < 2:
        return "{...}"
    (family,) = struct.unpack_from("<H", raw)
    name = DOMAINS.get(family, f"family {family}")
    if family in (socket.AF_INET, socket.AF_INET6):
        try:
            _, host, port = decode_inet(raw)
        except SockaddrError:
            return f"{{{name}, ...}}"
        return f"{{{name}, {host if family == socket.AF_INET else f'[{host}]'}:{port}}}"
    if family == socket.AF_UNIX:
        path = raw[2:]
        if path[:1] == b"\0":  # abstract socket name
            return f"{{{name}, @{_quote(path[1:].rstrip(NUL), False)}}}"
        return f"{{{name}, {_quote(path.split(NUL, 1)[0], False)}}}"
    return f"{{{name}, ...}}"


def _flags(value: int, table, base: str | None) -> str:
    parts = [base] if base else []
    rest = value
    for bit, name in table:
        if value & bit == bit and bit:
            parts.append(name)
            rest &= ~bit
    if rest:
        parts.append(hex(rest))
    return "|".join(parts) or "0"


# One function per argument kind, (raw value, its Data or None) -> text. Formatting runs for
# every traced call, so each kind is one call, not a chain of tests.
def _hex(value: int, data) -> str:
    return hex(value) if value else "0"


def _memory(value: int, data) -> str:  # path, sockaddr: what the layer copied, if anything
    if data is None:
        return "NULL" if value == 0 else hex(value)
    if data.kind == DATA_STRING:
        return _quote(data.value, data.truncated)
    if data.kind == DATA_SOCKADDR:
        return format_sockaddr(data.value)
    return _hex(value, data)


def _dirfd(value: int, data) -> str:
    v = _signed(value)
    return "AT_FDCWD" if (v & 0xFFFFFFFF) == (AT_FDCWD & 0xFFFFFFFF) else str(v)


def _oflags(value: int, data) -> str:
    access = ["O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"][value & 3]
    return _flags(value & ~3, OPEN_FLAGS, access)


def _socktype(value: int, data) -> str:
    return _flags(value & ~0xF, SOCK_FLAGS, SOCK_TYPES.get(value & 0xF, str(value & 0xF)))


def _int(value: int, data) -> str:
    return str(value - (1 << 64) if value >= 1 << 63 else value)


ARG_FORMATS = {
    "fd": _int, "int": _int,
    "hex": _hex, "path": _memory, "sockaddr": _memory, "dirfd": _dirfd, "oflags": _oflags,
    "mode": lambda value, data: oct(value) if value else "0",
    "domain": lambda value, data: DOMAINS.get(value, str(_signed(value))), "socktype": _socktype,
}


class _Spec(NamedTuple):
    name: str
    cls: str | None
    formats: tuple  # (argument index, formatting function)
    hex_result: bool  # an address: printed in hex


_SPECS: dict[int, _Spec] = {}
_ERRORS: dict[int, tuple[str, str]] = {}


def _spec(nr: int) -> _Spec:
    spec = _SPECS.get(nr)
    if spec is None:
        name = syscall_name(nr)
        sig = SIGNATURES.get(name)
        kinds = sig.split() if sig is not None else ["hex"] * 6
        spec = _SPECS[nr] = _Spec(name, class_of(name), tuple(enumerate(ARG_FORMATS.get(k, _hex) for k in kinds)),
                                  name in ("mmap", "brk", "mremap"))
    return spec


# Each event's spec is looked up once: the helpers below take it (this runs per traced call).
def _args(e: SyscallEvent, spec: _Spec) -> list[str]:
    args = e.args
    if not e.data:
        return [fmt(args[i], None) for i, fmt in spec.formats]
    data = {d.arg: d for d in reversed(e.data)}  # the first item for an argument wins
    return [fmt(args[i], data.get(i)) for i, fmt in spec.formats]


def _result(e: SyscallEvent, spec: _Spec) -> tuple[str, str | None]:
    if e.entry:
        return "= ?", None
    ret = _signed(e.ret)
    if -4096 < ret < 0:
        if ret not in _ERRORS:
            name = errno.errorcode.get(-ret, f"E{-ret}")
            _ERRORS[ret] = f"= -1 {name} ({os.strerror(-ret)})", name
        return _ERRORS[ret]
    if ret > 1 << 32 or spec.hex_result:
        return f"= {ret:#x}", None
    return f"= {ret}", None


def format_args(e: SyscallEvent) -> list[str]:
    return _args(e, _spec(e.nr))


def format_result(e: SyscallEvent) -> tuple[str, str | None]:
    """('= 3', None) or ('= -1 ENOENT (No such file or directory)', 'ENOENT')."""
    return _result(e, _spec(e.nr))


def format_line(e: SyscallEvent) -> str:
    spec = _spec(e.nr)
    return f"[{e.pid} {e.tid}] {spec.name}({', '.join(_args(e, spec))}) {_result(e, spec)[0]}"


def to_json(e: SyscallEvent) -> dict:
    spec = _spec(e.nr)
    _, err = _result(e, spec)
    ret = None if e.entry else _signed(e.ret)
    return {
        "pid": e.pid, "tid": e.tid, "syscall": spec.name, "nr": e.nr,
        "args": _args(e, spec), "raw_args": [_signed(a) for a in e.args],
        "ret": -1 if err else ret, "errno": err, "entry": e.entry,
        "class": spec.cls,
    }


def class_of_nr(nr: int) -> str | None:
    return _spec(nr).cls
