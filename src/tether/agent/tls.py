"""TLS for tcp:// agents (`tether agent --tls`): a tunnel under the unchanged protocol.

`tether agent --new-token FILE --tls` makes a key and a self-signed certificate with the
system's `openssl` (FILE.tls.pem, mode 0600, read by the agent) and writes the certificate's
SHA-256 fingerprint into FILE after the token (`tls-sha256 HEX`): the users' copy of FILE pins
it, so no certificate authority is involved and a man in the middle is refused at once.

This kernel path has no kTLS to lean on, so the layer's descriptors stay plaintext: each TLS
connection has a loopback TCP pair beside it, and one thread per connection (tunnel) carries the
bytes between them, encrypting one way and decrypting the other. The agent serves the pair's
other end as it serves an accepted connection, the stand-in proves the token over its end:
authentication, frames and relays run unchanged inside the tunnel. An end of stream crosses as
TLS close_notify (a half-close: the other direction goes on); a failure resets the pair.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import selectors
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from typing import NamedTuple

from ..protocol import wire
from . import relay

log = logging.getLogger("tether.agent")
FINGERPRINT_KEY = "tls-sha256"
CHUNK = 1 << 18  # bytes read per call; also what waits per direction before reading stops
RECORD = 1 << 14  # TLS's largest plaintext record: what one SSLObject.read gives at most
HANDSHAKE_TIMEOUT = 5.0
# In the clear before TLS: to a session without TLS, a refusal that names the fix.
GREETING = wire.encode_error(wire.ErrorReply(
    errno.EPROTO, "this agent encrypts its link (tether agent --tls): use the token file made with "
                  "`tether agent --new-token FILE --tls`, whose tls-sha256 line names its certificate"), 0)


class TlsError(Exception):
    """TLS cannot be set up; the message names the fix."""


def pem_path(token_file: str) -> str:
    return token_file + ".tls.pem"


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def new_credentials(token_file: str) -> str:
    """A key and self-signed certificate for the agent (pem_path, mode 0600) made by openssl;
    returns the certificate's fingerprint."""
    path = pem_path(token_file)
    with tempfile.TemporaryDirectory() as tmp:
        key, cert = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
        try:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", key, "-out", cert, "-days", "3650", "-subj", "/CN=tether agent"],
                           check=True, capture_output=True, timeout=30)
        except FileNotFoundError:
            raise TlsError("--tls needs the openssl command to make the agent's certificate "
                           "(install openssl: apt-get install openssl)") from None
        except subprocess.CalledProcessError as e:
            raise TlsError(f"openssl could not make a certificate: {e.stderr.decode(errors='replace').strip()}") \
                from None
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            raise TlsError(f"cannot create {path}: {e.strerror}") from None
        with open(key, "rb") as k, open(cert, "rb") as c, os.fdopen(fd, "wb") as out:
            pem = c.read()
            out.write(k.read() + pem)
    return fingerprint(ssl.PEM_cert_to_DER_cert(pem.decode()))


def server_context(token_file: str) -> ssl.SSLContext:
    path = pem_path(token_file)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.num_tickets = 0  # no resumption: every connection is a full handshake with the pinned key
    try:
        ctx.load_cert_chain(path)
    except (OSError, ssl.SSLError) as e:
        raise TlsError(f"cannot load the agent's TLS key {path} ({getattr(e, 'strerror', None) or e}): "
                       f"make it with `tether agent --new-token {token_file} --tls`") from None
    return ctx


def client_context() -> ssl.SSLContext:
    """No certificate authority: the certificate is checked against the pinned fingerprint."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Tls(NamedTuple):
    """A TLS connection as memory: records go between sock and the two BIOs by plain socket
    calls, so one recv of many records costs one system call (an SSLSocket makes two per record)."""
    sock: socket.socket
    obj: ssl.SSLObject
    incoming: ssl.MemoryBIO
    outgoing: ssl.MemoryBIO


def handshake(sock: socket.socket, ctx: ssl.SSLContext, pin: str | None = None) -> Tls:
    """TLS on a connected socket (blocking; at most HANDSHAKE_TIMEOUT in all), the peer's
    certificate checked against pin on the client's side. The socket is consumed either way.

    The agent's side first sends GREETING in the clear: a session without TLS reads it as the
    agent's refusal and says why, and the client's side knows a plaintext agent by its
    first bytes, both at once rather than after a timeout."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    greeting = memoryview(GREETING if pin is not None else b"")  # still to be read
    try:
        if pin is None:
            sock.sendall(GREETING)
        obj = ctx.wrap_bio(incoming, outgoing, server_side=pin is None)
        while True:
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.sendall(outgoing.read())
                data = sock.recv(CHUNK)
                if greeting:
                    head = data[:len(greeting)]
                    if not data or head != greeting[:len(head)]:
                        raise TlsError("the agent does not encrypt its link, but the token file names a "
                                       f"certificate ({FINGERPRINT_KEY}): start the agent with --tls and the "
                                       "key made with this token file, or use the agent's own token file")
                    greeting, data = greeting[len(head):], data[len(head):]
                elif not data:
                    raise ConnectionResetError(errno.ECONNRESET, "the peer closed during the TLS handshake")
                incoming.write(data)
        sock.sendall(outgoing.read())
        if pin is not None and fingerprint(obj.getpeercert(binary_form=True) or b"") != pin:
            raise TlsError("the agent's certificate is not the one its token file names "
                           f"({FINGERPRINT_KEY}): it is not the agent you meant, or it has a new key")
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return Tls(sock, obj, incoming, outgoing)


def tunnel(tls: Tls, name: str, direct: bool = False) -> socket.socket:
    """The plaintext end of tls: a loopback TCP socket whose bytes a thread carries over tls.
    direct (the agent's side): a relay may hand the thread its target socket instead
    (relay.DIRECT), so a relayed stream's bytes skip the pair and the relay's own threads."""
    try:
        ours, theirs = loopback_pair()
    except BaseException:
        tls.sock.close()
        raise
    switch = Switch()
    if direct:
        relay.DIRECT[theirs] = switch.to
    threading.Thread(target=_carry, args=(tls, ours, name, switch), daemon=True, name="tls").start()
    return theirs


class Switch:
    """A target socket the carrying thread takes in place of the pair, with the pair's other
    end: set, then that end shut for writing, so the thread's read of an end of stream on its
    own end is the sign (everything written before it has been read)."""

    def __init__(self) -> None:
        self.target: socket.socket | None = None
        self.theirs: socket.socket | None = None

    def to(self, theirs: socket.socket, target: socket.socket) -> None:
        self.target, self.theirs = target, theirs
        theirs.shutdown(socket.SHUT_WR)


def _switched(sel: selectors.BaseSelector, ours: socket.socket, switch: Switch, pending: memoryview) -> bytes:
    """Leave the pair for switch.target: what is still on its way to the pair's other end (read
    there until its end, which shutting ours sends), then pending, are the target's first bytes."""
    ours.shutdown(socket.SHUT_WR)
    theirs = switch.theirs
    theirs.setblocking(True)
    theirs.settimeout(HANDSHAKE_TIMEOUT)
    parts = []
    while chunk := theirs.recv(CHUNK):
        parts.append(chunk)
    parts.append(bytes(pending))
    with contextlib.suppress(KeyError):
        sel.unregister(ours)
    theirs.close()
    ours.close()
    switch.target.setblocking(False)
    switch.target.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, relay.LINGER_RESET)  # as relay.Pair does
    return b"".join(parts)


def loopback_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected TCP sockets on 127.0.0.1. Not a unix pair: a reset must reach the program as
    ECONNRESET, not as a clean end of stream, and its TCP options must apply."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        try:
            listener.bind(("127.0.0.1", 0))
        except OSError as e:
            raise OSError(e.errno, f"TLS tunnels need the loopback interface (127.0.0.1): {e.strerror}") from None
        listener.listen(8)
        listener.settimeout(HANDSHAKE_TIMEOUT)
        theirs = socket.create_connection(listener.getsockname(), timeout=HANDSHAKE_TIMEOUT)
        try:
            for _ in range(8):  # another local process may have raced to connect: only ours is taken
                ours, peer = listener.accept()
                if peer == theirs.getsockname():
                    break
                ours.close()
            else:
                raise OSError(errno.EADDRINUSE, "could not pair a TLS tunnel on 127.0.0.1")
        except BaseException:
            theirs.close()
            raise
    for sock in (ours, theirs):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    theirs.settimeout(None)
    return ours, theirs


def _carry(tls: Tls, plain: socket.socket, name: str, switch: Switch) -> None:
    """Both directions on one thread (an SSL object is not for concurrent use), each holding at
    most about CHUNK bytes at a time. Bytes are copied as little as the ssl module allows: read
    into one buffer, decrypted into another, records sent as the BIO hands them out."""
    sock, obj, incoming, outgoing = tls
    plain.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, relay.LINGER_RESET)  # if this process dies: RST
    received = memoryview(bytearray(CHUNK))  # what recv_into gives, from either socket
    down = memoryview(bytearray(CHUNK + RECORD))  # plaintext for plain: [sent:filled] not yet written
    sent = filled = 0
    up = memoryview(b"")  # records for sock not yet written (more wait in outgoing)
    backlog = memoryview(b"")  # for plain before down: what was on its way when plain was switched
    tls_open = plain_open = True  # still read from
    plain_shut = tls_shut = False
    sel = selectors.DefaultSelector()
    try:
        while tls_open or plain_open or up or outgoing.pending or filled or backlog:
            moved = False
            if tls_open and not incoming.eof and incoming.pending < CHUNK:
                try:
                    n = sock.recv_into(received)
                    incoming.write(received[:n]) if n else incoming.write_eof()  # EOF without close_notify: an error
                    moved = True
                except BlockingIOError:
                    pass
            while tls_open and filled < CHUNK:
                try:
                    n = obj.read(RECORD, down[filled:])
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:  # close_notify: the peer sends no more
                    n = 0
                filled += n
                tls_open = n > 0
                moved = True
            if backlog:
                n = _send(plain, backlog)
                backlog, moved = backlog[n:], moved or n > 0
            elif sent < filled:
                n = _send(plain, down[sent:filled])
                sent, moved = sent + n, moved or n > 0
                if sent == filled:
                    sent = filled = 0
            elif not tls_open and not plain_shut:
                plain.shutdown(socket.SHUT_WR)
                plain_shut = moved = True
            if plain_open and len(up) + outgoing.pending < CHUNK:
                try:
                    n = plain.recv_into(received)
                    if n:
                        obj.write(received[:n])
                    elif switch.target:
                        backlog = memoryview(_switched(sel, plain, switch, down[sent:filled]))
                        plain, switch.target, sent, filled, plain_shut = switch.target, None, 0, 0, False
                    else:
                        plain_open = False
                    moved = True
                except BlockingIOError:
                    pass
            if not plain_open and not tls_shut:
                tls_shut = True
                try:
                    obj.unwrap()  # close_notify; the peer's comes later, as the end of what it sends
                except ssl.SSLWantReadError:
                    pass
            if not up and outgoing.pending:
                up = memoryview(outgoing.read())
            if up:
                n = _send(sock, up)
                up, moved = up[n:], moved or n > 0
            if not moved:
                _wait(sel, sock, plain, tls_open and not incoming.eof and incoming.pending < CHUNK, bool(up),
                      plain_open and len(up) + outgoing.pending < CHUNK, bool(backlog) or sent < filled)
        for s in (sock, plain):  # both ends done: a clean close
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, relay.LINGER_OFF)
    except (OSError, ssl.SSLError) as e:
        log.debug("tls %s: %s", name, e)
        try:
            plain.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, relay.LINGER_RESET)
        except OSError:
            pass
    finally:
        sel.close()
        plain.close()
        sock.close()


def _send(sock: socket.socket, data: memoryview) -> int:
    """Bytes of data sock took now (0: its buffer is full)."""
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0


def _wait(sel: selectors.BaseSelector, sock: socket.socket, plain: socket.socket, sock_read: bool, sock_write: bool,
          plain_read: bool, plain_write: bool) -> None:
    for s, read, write in ((sock, sock_read, sock_write), (plain, plain_read, plain_write)):
        events = (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if write else 0)
        try:
            key = sel.get_key(s)
        except KeyError:
            key = None
        if key and not events:
            sel.unregister(s)
        elif key and key.events != events:
            sel.modify(s, events)
        elif not key and events:
            sel.register(s, events)
    sel.select()
