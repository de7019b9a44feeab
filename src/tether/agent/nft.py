"""nf_tables over netlink, the little the agent needs: a table owned by its netlink socket
(NFT_TABLE_F_OWNER, Linux 5.12: the kernel deletes it when that socket closes, so its rules
die with the agent even under SIGKILL) holding NAT chains that redirect one TCP port.

Why by hand: the owner flag ties the rules to the socket that made them, so that socket must
stay open in the agent for as long as they should live; `nft -f` is a process that exits (and
takes its table with it). libnftables would keep one open, but it is a system library
(python3-nftables, not on PyPI) that a pid: target's agent would have to load before joining
the target; pyroute2 is a large dependency (and import) for what is five kinds of message of a
few attributes each, written once and checked against the kernel by the tests.

Sans-IO: the encode_* functions build a batch's bytes and parse_acks reads the kernel's
answers (never trusting a length); Table does the I/O on a socket of its own.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
from typing import NamedTuple

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 16, 17
NFT_MSG_NEWTABLE, NFT_MSG_GETTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE = 0, 1, 3, 6
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 1, 4, 0x200, 0x400, 0x800
NLMSG_ERROR = 2
NLA_F_NESTED = 0x8000
NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6 = 1, 2, 10
NFT_TABLE_F_OWNER = 2
NF_INET_PRE_ROUTING, NF_INET_LOCAL_OUT = 0, 3
NAT_PRIORITY = -100  # dstnat: where `nft` puts a redirect
NFT_REG_1 = 1
NFT_META_MARK, NFT_META_NFPROTO, NFT_META_L4PROTO = 3, 15, 16
NFT_CMP_EQ, NFT_CMP_LT = 0, 2
NFT_BYTEORDER_HTON = 1
NFT_PAYLOAD_TRANSPORT_HEADER = 2
NFT_FIB_RESULT_ADDRTYPE, NFTA_FIB_F_DADDR, RTN_LOCAL = 3, 2, 2
NFT_CT_LABELS = 13
CT_LABELS_BYTES = 16
NF_NAT_RANGE_PROTO_SPECIFIED = 2

NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, portid
NFGENMSG = struct.Struct("=BBH")  # family, version, resource id (big-endian)
NLATTR = struct.Struct("=HH")  # length, type
ACK_TIMEOUT_S = 2.0


class NftError(Exception):
    """The kernel refused a batch (errno as it said), or answered nonsense."""

    def __init__(self, err: int, message: str):
        super().__init__(message)
        self.errno = err


class Redirect(NamedTuple):
    """TCP to a local address on port `port` goes to port `to` instead (both families unless
    nfproto names one); with below_mark, only those of sockets whose mark is less (unmarked
    ones included); with a label, their conntrack entries carry that label bit."""

    port: int
    to: int
    nfproto: int = 0
    below_mark: int = 0
    label: int = -1  # a conntrack label bit set on the connections redirected (conntrack.py: forget)


def attr(type: int, payload: bytes) -> bytes:
    pad = -len(payload) % 4
    return NLATTR.pack(NLATTR.size + len(payload), type) + payload + b"\0" * pad


def nested(type: int, *attrs: bytes) -> bytes:
    return attr(type | NLA_F_NESTED, b"".join(attrs))


def _be32(v: int) -> bytes:
    return struct.pack(">i" if v < 0 else ">I", v)


def _name(s: str) -> bytes:
    return s.encode() + b"\0"


def _message(type: int, flags: int, seq: int, family: int, attrs: bytes, res_id: int = 0) -> bytes:
    body = NFGENMSG.pack(family, 0, socket.htons(res_id)) + attrs
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), type, flags, seq, 0) + body


def label_bits(bit: int) -> bytes:
    """Conntrack labels with one bit set, as the kernel keeps them (32-bit words, host order)."""
    words = [0] * (CT_LABELS_BYTES // 4)
    words[bit // 32] = 1 << bit % 32
    return struct.pack(f"={len(words)}I", *words)


def _nft(msg: int) -> int:
    return NFNL_SUBSYS_NFTABLES << 8 | msg


def _expr(name: str, *attrs: bytes) -> bytes:
    return nested(1, attr(1, _name(name)), nested(2, *attrs))  # NFTA_LIST_ELEM: NAME, DATA


def _load_meta(key: int) -> bytes:
    return _expr("meta", attr(1, _be32(NFT_REG_1)), attr(2, _be32(key)))  # DREG, KEY


def _cmp(op: int, data: bytes) -> bytes:
    return _expr("cmp", attr(1, _be32(NFT_REG_1)), attr(2, _be32(op)),  # SREG, OP
                 nested(3, attr(1, data)))  # DATA: VALUE


def redirect_expressions(r: Redirect) -> bytes:
    """`fib daddr type local [meta nfproto F] meta l4proto tcp tcp dport PORT [meta mark <
    MARK] [ct label set BIT] redirect to :TO`, as nft itself encodes it. Only local destinations: the target's
    own outgoing connections to that port elsewhere, and traffic it routes, are left alone."""
    exprs = [_expr("fib", attr(1, _be32(NFT_REG_1)), attr(2, _be32(NFT_FIB_RESULT_ADDRTYPE)),
                   attr(3, _be32(NFTA_FIB_F_DADDR))),
             _cmp(NFT_CMP_EQ, struct.pack("=I", RTN_LOCAL))]
    if r.nfproto:
        exprs += [_load_meta(NFT_META_NFPROTO), _cmp(NFT_CMP_EQ, bytes([r.nfproto]))]
    exprs += [_load_meta(NFT_META_L4PROTO), _cmp(NFT_CMP_EQ, bytes([socket.IPPROTO_TCP])),
              _expr("payload", attr(1, _be32(NFT_REG_1)), attr(2, _be32(NFT_PAYLOAD_TRANSPORT_HEADER)),
                    attr(3, _be32(2)), attr(4, _be32(2))),  # DREG, BASE, OFFSET, LEN: the port
              _cmp(NFT_CMP_EQ, struct.pack(">H", r.port))]
    if r.below_mark:  # `meta mark < MARK`: the mark in network order, compared as bytes
        exprs += [_load_meta(NFT_META_MARK),
                  _expr("byteorder", attr(1, _be32(NFT_REG_1)), attr(2, _be32(NFT_REG_1)),  # SREG, DREG
                        attr(3, _be32(NFT_BYTEORDER_HTON)), attr(4, _be32(4)), attr(5, _be32(4))),  # OP, LEN, SIZE
                  _cmp(NFT_CMP_LT, struct.pack(">I", r.below_mark))]
    if r.label >= 0:  # `ct label set BIT` (it adds the bit; the target's own labels stay)
        exprs += [_expr("immediate", attr(1, _be32(NFT_REG_1)), nested(2, attr(1, label_bits(r.label)))),
                  _expr("ct", attr(2, _be32(NFT_CT_LABELS)), attr(4, _be32(NFT_REG_1)))]  # KEY, SREG
    exprs += [_expr("immediate", attr(1, _be32(NFT_REG_1)), nested(2, attr(1, struct.pack(">H", r.to)))),
              _expr("redir", attr(1, _be32(NFT_REG_1)), attr(3, _be32(NF_NAT_RANGE_PROTO_SPECIFIED)))]
    return nested(4, *exprs)  # NFTA_RULE_EXPRESSIONS


def encode_batch(seq: int, table: str, *, create: bool, redirects: tuple[Redirect, ...] = (),
                 priority: int = NAT_PRIORITY) -> tuple[bytes, int]:
    """One batch (family inet): with create, the owner table (NLM_F_EXCL: EEXIST if anyone has
    it); with redirects, its two NAT chains at priority (incoming packets, and the target's own
    connections to itself) and a rule per redirect in each. The bytes and how many acks are
    due."""
    msgs = [_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, 0, b"", NFNL_SUBSYS_NFTABLES)]
    ask = NLM_F_REQUEST | NLM_F_ACK
    if create:
        msgs.append(_message(_nft(NFT_MSG_NEWTABLE), ask | NLM_F_CREATE | NLM_F_EXCL, seq + len(msgs), NFPROTO_INET,
                             attr(1, _name(table)) + attr(2, _be32(NFT_TABLE_F_OWNER))))
    for chain, hook in (("prerouting", NF_INET_PRE_ROUTING), ("output", NF_INET_LOCAL_OUT)) if redirects else ():
        msgs.append(_message(_nft(NFT_MSG_NEWCHAIN), ask | NLM_F_CREATE, seq + len(msgs), NFPROTO_INET,
                             attr(1, _name(table)) + attr(3, _name(chain))
                             + nested(4, attr(1, _be32(hook)), attr(2, _be32(priority)))
                             + attr(7, _name("nat"))))
        for r in redirects:
            msgs.append(_message(_nft(NFT_MSG_NEWRULE), ask | NLM_F_CREATE | NLM_F_APPEND, seq + len(msgs),
                                 NFPROTO_INET, attr(1, _name(table)) + attr(2, _name(chain))
                                 + redirect_expressions(r)))
    acks = len(msgs) - 1
    msgs.append(_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + len(msgs), 0, b"", NFNL_SUBSYS_NFTABLES))
    return b"".join(msgs), acks


def messages(data: bytes):
    """Each netlink message in data: (type, seq, where its body starts, where it ends).
    NftError if a message's length does not fit."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < NLMSGHDR.size:
            raise NftError(errno.EPROTO, f"netlink message header cut at {len(data) - pos} bytes")
        length, type, _, seq, _ = NLMSGHDR.unpack_from(data, pos)
        if length < NLMSGHDR.size or pos + length > len(data):
            raise NftError(errno.EPROTO, f"netlink message of {length} bytes in {len(data) - pos}")
        yield type, seq, pos + NLMSGHDR.size, pos + length
        pos += (length + 3) & ~3


def error_of(data: bytes, body: int, end: int) -> int:
    """The errno an NLMSG_ERROR message says (0: an acknowledgement)."""
    if end - body < 4:
        raise NftError(errno.EPROTO, "netlink acknowledgement without its error")
    return -struct.unpack_from("=i", data, body)[0]


def parse_acks(data: bytes) -> list[tuple[int, int]]:
    """The (seq, errno) of every acknowledgement in data (errno 0: done); other messages are
    skipped. NftError if a message's length does not fit."""
    return [(seq, error_of(data, body, end)) for type, seq, body, end in messages(data) if type == NLMSG_ERROR]


def encode_get_table(seq: int, table: str) -> bytes:
    """Ask whether a table (family inet) exists: its ack says 0 or ENOENT."""
    return _message(_nft(NFT_MSG_GETTABLE), NLM_F_REQUEST | NLM_F_ACK, seq, NFPROTO_INET, attr(1, _name(table)))


class Table:
    """An owner table, alive while this object's netlink socket is open (close() or the
    agent's death deletes it). Its NAT chains run at priority: where several tables redirect
    one port, the lowest runs first, and the first redirect a connection meets is the one."""

    def __init__(self, name: str, priority: int = NAT_PRIORITY):
        self.name, self.priority = name, priority
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        self.sock.settimeout(ACK_TIMEOUT_S)
        self.seq = 1

    def create(self) -> None:
        """The table itself; NftError EEXIST (or EPERM, owned elsewhere) if it exists."""
        self._send(create=True)

    def redirect(self, *redirects: Redirect) -> None:
        self._send(create=False, redirects=redirects, priority=self.priority)

    def exists(self, name: str) -> bool:
        """Whether another table of that name is there now."""
        self.seq += 1
        err = self._exchange(encode_get_table(self.seq, name), self.seq, 1)[self.seq]
        if err not in (0, errno.ENOENT):
            raise NftError(err, f"nf_tables: looking for table {name}: {os.strerror(err)}")
        return err == 0

    def _exchange(self, data: bytes, first: int, due: int) -> dict[int, int]:
        """Send data; the errno of each ack from first on, once due have come."""
        try:
            self.sock.send(data)
            got: dict[int, int] = {}
            while sum(first <= seq < first + due for seq in got) < due:
                got.update(parse_acks(self.sock.recv(1 << 16)))
        except TimeoutError:
            raise NftError(errno.ETIMEDOUT, f"nf_tables did not answer within {ACK_TIMEOUT_S:g} s") from None
        except OSError as e:
            raise NftError(e.errno or errno.EIO, f"nf_tables: {e.strerror or e}") from None
        return got

    def _send(self, **what) -> None:
        batch, due = encode_batch(self.seq, self.name, **what)
        first, self.seq = self.seq + 1, self.seq + due + 2
        got = self._exchange(batch, first, due)
        for seq in range(first, first + due):
            if got.get(seq):
                raise NftError(got[seq], f"nf_tables refused table {self.name}: {os.strerror(got[seq])}")

    def close(self) -> None:
        self.sock.close()
