"""struct sockaddr in the kernel's byte layout, as the layer copies it from the program.

The wire carries socket addresses exactly as the program passed them to connect() or
sendto(), so the layer never converts; Python turns them into (host, port) where needed.
"""
from __future__ import annotations

import ipaddress
import socket
import struct


class SockaddrError(ValueError):
    """Bytes that are not a socket address tether can use."""


def decode_inet(raw: bytes) -> tuple[int, str, int]:
    """(family, host, port) of a sockaddr_in or sockaddr_in6."""
    if len(raw) < 2:
        raise SockaddrError("socket address shorter than its family field")
    (family,) = struct.unpack_from("<H", raw)
    if family == socket.AF_INET and len(raw) >= 8:
        return family, str(ipaddress.IPv4Address(raw[4:8])), struct.unpack_from(">H", raw, 2)[0]
    if family == socket.AF_INET6 and len(raw) >= 24:
        return family, str(ipaddress.IPv6Address(raw[8:24])), struct.unpack_from(">H", raw, 2)[0]
    raise SockaddrError(f"not an IPv4/IPv6 socket address (family {family}, {len(raw)} bytes)")


def encode_inet(host: str, port: int, flowinfo: int = 0, scope_id: int = 0) -> bytes:
    """The sockaddr_in / sockaddr_in6 bytes for host:port (a numeric address)."""
    ip = ipaddress.ip_address(host)
    if ip.version == 4:
        return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + ip.packed + b"\0" * 8
    return (struct.pack("<H", socket.AF_INET6) + struct.pack(">HI", port, flowinfo) + ip.packed
            + struct.pack("<I", scope_id))
