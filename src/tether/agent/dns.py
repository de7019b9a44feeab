"""Name lookups the agent performs inside the target: getaddrinfo() here reads the target's
resolv.conf, hosts and nsswitch.conf and asks its name servers, so the program gets the answer
the target would get. The layer's getaddrinfo and getnameinfo (layer/net/dns.c) and the session's
host-name rules ask through this."""
from __future__ import annotations

import asyncio
import logging
import socket
import struct

from ..protocol import agent_wire
from ..protocol.sockaddr import SockaddrError, decode_inet, encode_inet

log = logging.getLogger("tether.agent")
EAI_FAMILY = -6  # glibc's number


def _entry(family: int, socktype: int, protocol: int, sockaddr: tuple) -> agent_wire.AddrInfo:
    host, port = sockaddr[0], sockaddr[1]
    if family == socket.AF_INET6:
        raw = encode_inet(host.split("%")[0], port, flowinfo=sockaddr[2], scope_id=sockaddr[3])
    else:
        raw = encode_inet(host, port)
    return agent_wire.AddrInfo(family, socktype, protocol, raw)


async def resolve(req: agent_wire.Resolve) -> agent_wire.ResolveReply:
    """getaddrinfo(req.node, req.service, hints) as the target answers it. Names pass as bytes,
    exactly as the program gave them (no IDNA re-encoding on the way)."""
    node = req.node.encode("utf-8", "surrogateescape")
    service = req.service.encode("utf-8", "surrogateescape") or None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            node, service, family=req.family, type=req.socktype, proto=req.protocol, flags=req.flags)
    except socket.gaierror as e:
        log.debug("resolve %s: %s", req.node, e.strerror)
        return agent_wire.ResolveReply(status=e.errno)
    except OSError as e:  # EAI_SYSTEM: Python raises the errno
        log.debug("resolve %s: %s", req.node, e.strerror)
        return agent_wire.ResolveReply(status=agent_wire.EAI_SYSTEM, errno=e.errno or 5)
    entries = tuple(_entry(family, socktype, protocol, sockaddr) for family, socktype, protocol, _, sockaddr in infos
                    if family in (socket.AF_INET, socket.AF_INET6))
    canonname = next((name for *_, name, _ in infos if name), "")
    log.debug("resolve %s: %d addresses", req.node, len(entries))
    return agent_wire.ResolveReply(0, 0, canonname, entries)


async def nameinfo(sockaddr: bytes, flags: int) -> agent_wire.NameInfo:
    """getnameinfo(sockaddr, flags) as the target answers it (its hosts file, its name servers'
    PTR records)."""
    try:
        family, host, port = decode_inet(sockaddr)
    except SockaddrError:
        return agent_wire.NameInfo(status=EAI_FAMILY)
    address = (host, port) if family == socket.AF_INET else (
        host, port, *struct.unpack_from(">I", sockaddr, 4), *struct.unpack_from("<I", sockaddr, 24))
    try:
        name, service = await asyncio.get_running_loop().getnameinfo(address, flags)
    except socket.gaierror as e:
        log.debug("nameinfo %s: %s", host, e.strerror)
        return agent_wire.NameInfo(status=e.errno)
    except OSError as e:
        return agent_wire.NameInfo(status=agent_wire.EAI_SYSTEM, errno=e.errno or 5)
    log.debug("nameinfo %s: %s", host, name)
    return agent_wire.NameInfo(0, 0, name, service)
