"""Conntrack entries a redirect left behind (ctnetlink), forgotten before a port's redirect is
set up again.

A redirect's NAT binding lives in the connection's conntrack entry, not in the nf_tables rule
that made it. When a session's table goes while its redirected connections are open (the agent
killed, or its relay closing after the table), the kernel never sees those connections end:
their entries stay (ESTABLISHED, up to 5 days) bound to a port nothing listens on now. A later
connection that happens to reuse one's address pair (loopback clients reuse ports all the
time) is sent by that binding to the dead port and refused, whenever a NAT hook is registered
in the namespace, as it is again the moment the port is redirected anew. Each redirect labels
its connections (nft.Redirect.label: one conntrack label bit per table of a port); a session
that takes one of the port's tables drops the port's entries labelled by tables nobody holds
now, its own included, before its redirect exists, so none of its own can be among them.

Sans-IO: encode_dump/encode_delete build requests, parse_entries reads a dump's messages;
forget() does the I/O on a netlink socket of its own.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from typing import NamedTuple

from .nft import CT_LABELS_BYTES, NETLINK_NETFILTER, NFGENMSG, NLA_F_NESTED, NLATTR, NLM_F_ACK, NLM_F_REQUEST, \
    NLMSG_ERROR, NLMSGHDR, NftError, attr, error_of, messages, nested

NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
NLM_F_DUMP = 0x300
NLMSG_DONE = 3
CTA_TUPLE_ORIG, CTA_ID, CTA_LABELS, CTA_FILTER = 1, 12, 22, 25
CTA_TUPLE_PROTO, CTA_PROTO_NUM, CTA_PROTO_DST_PORT = 2, 1, 3
CTA_FILTER_ORIG_FLAGS = 1
CTA_FILTER_FLAG_PROTO_NUM, CTA_FILTER_FLAG_PROTO_DST_PORT = 1 << 3, 1 << 5
TIMEOUT_S = 2.0


class Entry(NamedTuple):
    """One conntrack entry of a dump: its family, original tuple and id as the kernel encoded
    them (sent back as they are to delete it), and its labels (b"" if it has none)."""

    family: int
    tuple_orig: bytes
    id: bytes
    labels: bytes


def _message(type: int, flags: int, seq: int, family: int, attrs: bytes) -> bytes:
    body = NFGENMSG.pack(family, 0, 0) + attrs
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), NFNL_SUBSYS_CTNETLINK << 8 | type, flags, seq, 0) + body


def encode_dump(seq: int, family: int, port: int) -> bytes:
    """Ask for the entries of family whose original direction is TCP to port (the kernel
    filters: CTA_FILTER, Linux 5.8)."""
    proto = nested(CTA_TUPLE_PROTO, attr(CTA_PROTO_NUM, bytes([socket.IPPROTO_TCP])),
                   attr(CTA_PROTO_DST_PORT, struct.pack(">H", port)))
    flags = struct.pack("=I", CTA_FILTER_FLAG_PROTO_NUM | CTA_FILTER_FLAG_PROTO_DST_PORT)  # NLA_U32: host order
    return _message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family,
                    nested(CTA_TUPLE_ORIG, proto) + nested(CTA_FILTER, attr(CTA_FILTER_ORIG_FLAGS, flags)))


def encode_delete(seq: int, entry: Entry) -> bytes:
    """Delete that entry (by its tuple, and its id: not a new one that took the tuple since)."""
    return _message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, entry.family,
                    attr(CTA_TUPLE_ORIG | NLA_F_NESTED, entry.tuple_orig) + attr(CTA_ID, entry.id))


def _attrs(data: bytes, pos: int, end: int) -> dict[int, bytes]:
    found = {}
    while end - pos >= NLATTR.size:
        length, type = NLATTR.unpack_from(data, pos)
        if length < NLATTR.size or pos + length > end:
            raise NftError(errno.EPROTO, f"conntrack attribute of {length} bytes in {end - pos}")
        found[type & ~NLA_F_NESTED] = data[pos + NLATTR.size:pos + length]
        pos += (length + 3) & ~3
    return found


def parse_entries(data: bytes) -> tuple[list[Entry], bool, int]:
    """The entries in data (a recv's worth of a dump), whether the dump is done, and the
    errno it ended with (0: none). NftError if a length does not fit."""
    entries = []
    for type, _, body, end in messages(data):
        if type == NLMSG_DONE:
            return entries, True, 0
        if type == NLMSG_ERROR:
            return entries, True, error_of(data, body, end)
        if type == NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW and end - body >= NFGENMSG.size:
            found = _attrs(data, body + NFGENMSG.size, end)
            if CTA_TUPLE_ORIG in found and CTA_ID in found:
                entries.append(Entry(data[body], found[CTA_TUPLE_ORIG], found[CTA_ID], found.get(CTA_LABELS, b"")))
    return entries, False, 0


def labels(entry: Entry) -> int:
    """The entry's label bits as one number (bit i: label i)."""
    words = struct.unpack(f"={len(entry.labels) // 4}I", entry.labels[:len(entry.labels) // 4 * 4])
    return sum(word << 32 * i for i, word in enumerate(words))


def forget(port: int, bits: list[int]) -> int:
    """Delete the entries of TCP connections to port that carry any of the label bits (both
    families): how many. NftError if the kernel refuses (no conntrack, no CAP_NET_ADMIN)."""
    assert all(0 <= bit < CT_LABELS_BYTES * 8 for bit in bits)
    mask = sum(1 << bit for bit in bits)
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
    sock.settimeout(TIMEOUT_S)
    seq, gone = 0, 0
    try:
        for family in (socket.AF_INET, socket.AF_INET6):
            seq += 1
            sock.send(encode_dump(seq, family, port))
            stale, done = [], False
            while not done:
                entries, done, err = parse_entries(sock.recv(1 << 16))
                if err:
                    raise NftError(err, f"conntrack: listing port {port}'s connections: {os.strerror(err)}")
                stale += [e for e in entries if labels(e) & mask]
            for entry in stale:
                seq += 1
                sock.send(encode_delete(seq, entry))
                _, _, err = parse_entries(sock.recv(1 << 16))
                gone += err == 0  # ENOENT: it ended on its own meanwhile
                if err not in (0, errno.ENOENT):
                    raise NftError(err, f"conntrack: deleting a connection to port {port}: {os.strerror(err)}")
    except TimeoutError:
        raise NftError(errno.ETIMEDOUT, f"conntrack did not answer within {TIMEOUT_S:g} s") from None
    except OSError as e:
        raise NftError(e.errno or errno.EIO, f"conntrack: {e.strerror or e}") from None
    finally:
        sock.close()
    return gone
