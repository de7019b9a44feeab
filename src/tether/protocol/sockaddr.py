"""struct sockaddr in the kernel's byte layout, as the layer copies it from the program.

The wire carries socket addresses exactly as the program passed them to connect() or
sendto(), so the layer never converts; Python turns them into (host, port) where needed.
"""
from __future__ import annotations

import socket


class SockaddrError(ValueError):
    """Bytes that are not a socket address tether can use."""


def decode_inet(raw: bytes) -> tuple[int, str, int]:
    """(family, host, port) of a sockaddr_in or sockaddr_in6."""
    if len(raw) < 2:
        raise SockaddrError("socket address shorter than its family field")
    # inet_ntop, not ipaddress: this runs per relayed connect and datagram, where ipaddress's
    # Python costs tens of microseconds on a cold CPU.
    family = raw[0] | raw[1] << 8
    if family == socket.AF_INET and len(raw) >= 8:
        return family, socket.inet_ntop(socket.AF_INET, raw[4:8]), raw[2] << 8 | raw[3]
    if family == socket.AF_INET6 and len(raw) >= 24:
        return family, socket.inet_ntop(socket.AF_INET6, raw[8:24]), raw[2] << 8 | raw[3]
    raise SockaddrError(f"not an IPv4/IPv6 socket address (family {family}, {len(raw)} bytes)")


def encode_inet(host: str, port: int, flowinfo: int = 0, scope_id: int = 0) -> bytes:
    """The sockaddr_in / sockaddr_in6 bytes for host:port (a numeric address)."""
    try:
        return _AF_INET + port.to_bytes(2, "big") + socket.inet_pton(socket.AF_INET, host) + bytes(8)
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        raise SockaddrError(f"not a numeric IPv4/IPv6 address: {host!r}") from None
    return (_AF_INET6 + port.to_bytes(2, "big") + flowinfo.to_bytes(4, "big") + packed
            + scope_id.to_bytes(4, "little"))


_AF_INET = socket.AF_INET.to_bytes(2, "little")
_AF_INET6 = socket.AF_INET6.to_bytes(2, "little")
