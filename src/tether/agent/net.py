"""Network operations the agent performs inside the target."""
from __future__ import annotations

import errno
import logging
import os
import socket
import struct

from ..protocol import agent_wire
from ..protocol.sockaddr import SockaddrError, decode_inet, encode_inet

log = logging.getLogger("tether.agent")
CONNECT_TIMEOUT_MS = 25_000  # a connect whose request names no timeout

class OpError(Exception):
    """An operation failed with an errno the program should see."""

    def __init__(self, err: int, message: str):
        super().__init__(message)
        self.errno = err


def _destination(req: agent_wire.Connect) -> tuple[str, int]:
    try:
        family, host, port = decode_inet(req.sockaddr)
    except SockaddrError as e:
        raise OpError(errno.EAFNOSUPPORT, str(e)) from None
    if family != req.family or req.socktype not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        raise OpError(errno.EINVAL, f"cannot connect a family {req.family} type {req.socktype} socket "
                                    f"to a family {family} address")
    return host, port


def _socket_for(req: agent_wire.Connect) -> tuple[socket.socket, str, int]:
    host, port = _destination(req)
    sock = socket.socket(req.family, req.socktype, req.protocol)
    sock.setblocking(False)
    return sock, host, port


async def connect(req: agent_wire.Connect) -> socket.socket:
    """A socket of the requested kind, made here (in the target's network namespace) and
    connected to req.sockaddr within req.timeout_ms (0: CONNECT_TIMEOUT_MS)."""
    import asyncio  # here: answers.py uses this module before asyncio has loaded (targets/early.py)

    sock, host, port = _socket_for(req)
    timeout = (req.timeout_ms or CONNECT_TIMEOUT_MS) / 1000
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), timeout)
    except asyncio.TimeoutError:
        raise failed(sock, host, port, timeout, None) from None
    except OSError as e:
        raise failed(sock, host, port, timeout, e) from None
    return sock


def socket_ahead() -> socket.socket:
    """A socket for a relayed connect, made before its request comes (most are TCP to IPv4):
    made on a CPU that is about to wait, it is not among the work between request and answer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def relay_socket(req: agent_wire.Connect, ahead: socket.socket | None) -> tuple[socket.socket, str, int]:
    """The socket for a relayed connect (not blocking) and where it goes: ahead (a
    socket_ahead()) if req is TCP to IPv4, else a new one and ahead closed. TCP with
    TCP_NODELAY: a relay passes each write on as it comes."""
    try:
        if ahead is not None and req.family == socket.AF_INET and req.socktype == socket.SOCK_STREAM \
                and req.protocol in (0, socket.IPPROTO_TCP):
            host, port = _destination(req)
            sock, ahead = ahead, None
            return sock, host, port
        sock, host, port = _socket_for(req)
        if req.socktype == socket.SOCK_STREAM:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, host, port
    finally:
        if ahead is not None:
            ahead.close()


def bind_udp(req: agent_wire.Connect) -> socket.socket:
    """An unconnected UDP socket made here, bound to req.sockaddr's port (0: any) on every
    address, blocking: one the program sends from to many peers (FLAG_BIND)."""
    sock, _, port = _socket_for(req)
    if req.socktype != socket.SOCK_DGRAM:
        sock.close()
        raise OpError(errno.EINVAL, "only a UDP socket is bound without a peer")
    try:
        sock.bind(("::" if sock.family == socket.AF_INET6 else "0.0.0.0", port))
    except OSError as e:
        sock.close()
        err = e.errno or errno.EIO
        raise OpError(err, f"bind UDP port {port}: {os.strerror(err)}") from None
    sock.setblocking(True)
    return sock


def failed(sock: socket.socket, host: str, port: int, timeout: float, e: OSError | None) -> OpError:
    """What the program gets for a connect that failed with e (None: it timed out); sock is closed."""
    sock.close()
    if e is None:
        return OpError(errno.ETIMEDOUT, f"connect to {host}:{port} timed out after {timeout:g} s")
    err = e.errno or errno.EIO
    return OpError(err, f"connect to {host}:{port}: {os.strerror(err)}")


def new_sockets(family: int, socktype: int, protocol: int, count: int) -> list[socket.socket]:
    """count TCP or UDP sockets made here, in the target's network namespace: the program
    connects them (or sends from them) itself, and they take its traffic out from here."""
    if family not in (socket.AF_INET, socket.AF_INET6) or socktype not in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        raise OpError(errno.EINVAL, f"only TCP and UDP sockets are made (family {family}, type {socktype})")
    log.debug("%d sockets (family %s, type %s)", count, family, socktype)
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(socket.socket(family, socktype, protocol))
    except OSError as e:
        for sock in socks:
            sock.close()
        raise OpError(e.errno or errno.EIO, f"socket: {e.strerror}") from None
    return socks


def sockaddr_tuple(raw: bytes) -> tuple:
    """struct sockaddr bytes as Python's address tuple (sendto's)."""
    try:
        family, host, port = decode_inet(raw)
    except SockaddrError as e:
        raise OpError(errno.EAFNOSUPPORT, str(e)) from None
    if family == socket.AF_INET6:  # sin6_flowinfo is in network order, sin6_scope_id in host order
        return host, port, struct.unpack_from(">I", raw, 4)[0], struct.unpack_from("<I", raw, 24)[0]
    return host, port


def sockaddr_bytes(address: tuple, family: int) -> bytes:
    """A socket's address (Python's tuple form) as the kernel's struct sockaddr bytes."""
    if family == socket.AF_INET6:
        return encode_inet(address[0].split("%")[0], address[1], flowinfo=address[2], scope_id=address[3])
    return encode_inet(address[0], address[1])
