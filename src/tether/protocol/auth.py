"""Who may use a network-reachable agent: a shared token, proven without sending it.

Every connection to `tether agent --listen` starts with a challenge-response, sans-IO here:

    agent   -> AUTH_CHALLENGE  nonce_a (32 random bytes)
    session -> AUTH_RESPONSE   nonce_s, HMAC-SHA256(token, "tether session" nonce_a nonce_s)
    agent   -> AUTH_OK         HMAC-SHA256(token, "tether agent" nonce_a nonce_s)
               or ERROR EACCES, and the agent closes the connection

Both sides prove they hold the token; the token never crosses the wire, and a recorded
exchange cannot be replayed (the other side's nonce is fresh). Proofs are compared in
constant time. The data that follows is not encrypted: across networks you do not trust,
carry the agent's port over SSH or a VPN, or use --tls (agent/tls.py).

A session's further data connections prove themselves with a ticket instead, sent at once
without waiting for the challenge (which the session reads and drops before using the
connection), so a spare costs its TCP handshake and one frame, not two more round trips:

    session -> AUTH_TICKET  nonce_a of its control link, n, HMAC-SHA256(key, "tether ticket" n)
               key = HMAC-SHA256(token, "tether tickets" nonce_a nonce_s), that link's nonces

The agent keeps a control link's key while the link is open and takes each n once (tickets
may arrive out of order, within TICKET_WINDOW); a ticket it refuses gets ERROR EACCES. The
agent does not prove itself again on such a connection: its control link at the same
address did, and with --tls the pinned certificate does on every connection.

Tokens come from files only (never argv or the environment, which other processes can read);
a token file must not be readable by group or others, as ssh insists for keys.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
import struct
from typing import NamedTuple

from . import wire

TOKEN_MIN = 16  # bytes: shorter tokens are refused
PIN_KEY = "tls-sha256"  # a token file's line naming the agent's TLS certificate (agent/tls.py)
SESSION_LABEL = b"tether session\0"
AGENT_LABEL = b"tether agent\0"
TICKETS_LABEL = b"tether tickets\0"
TICKET_LABEL = b"tether ticket\0"
TICKET = struct.Struct(">32sQ32s")  # AUTH_TICKET: the control link's nonce_a, n, the proof
TICKET_WINDOW = 4096  # tickets taken out of order: n at most this far below the highest taken
MSG_AUTH_CHALLENGE = 7  # network agents only: the agent's nonce
MSG_AUTH_RESPONSE = 8  # the session's nonce and proof of the token
MSG_AUTH_OK = 9  # the agent's proof of the token
MSG_AUTH_TICKET = 10  # a data connection's proof: its control link's nonce_a, n, and the ticket
NONCE = 32  # AUTH_CHALLENGE: the nonce; AUTH_RESPONSE: nonce + proof; AUTH_OK: proof (HMAC-SHA256)


class TokenError(Exception):
    """The token file cannot be used; the message names the fix."""


class AuthRefused(Exception):
    """The agent refused the session (wrong token, or too many sessions)."""

    def __init__(self, errno: int, message: str):
        super().__init__(message)
        self.errno = errno


def load_token(path: str) -> bytes:
    """The token in path: its first line (surrounding whitespace removed)."""
    return load_token_file(path)[0]


def load_token_file(path: str) -> tuple[bytes, str | None]:
    """The token in path and, if the agent uses TLS (a `tls-sha256 HEX` line), the SHA-256
    fingerprint of its certificate."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise TokenError(f"cannot read token file {path}: {e.strerror} "
                         f"(make one with `tether agent --new-token {path}`)") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise TokenError(f"token file {path} is not a regular file")
        if mode & 0o077:
            raise TokenError(f"token file {path} is readable by others (mode {stat.S_IMODE(mode):04o}): "
                             f"chmod 600 {path}")
        token, _, rest = f.read(4096).strip().partition(b"\n")
        token = token.strip()
    if len(token) < TOKEN_MIN:
        raise TokenError(f"token in {path} is {len(token)} bytes; at least {TOKEN_MIN} are needed "
                         f"(make one with `tether agent --new-token {path}`)")
    pin = None
    for line in rest.decode(errors="replace").splitlines():
        key, _, value = line.strip().partition(" ")
        if key == PIN_KEY:
            pin = value.strip().lower()
            if len(pin) != 64 or not all(c in "0123456789abcdef" for c in pin):
                raise TokenError(f"{path}: {PIN_KEY} is not a SHA-256 in hex")
    return token, pin


def new_token_file(path: str, pin: str | None = None) -> None:
    """Write a fresh random token to path (mode 0600), and the agent's certificate fingerprint
    if it uses TLS; refuses to overwrite."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise TokenError(f"cannot create token file {path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n" + (f"{PIN_KEY} {pin}\n" if pin else ""))


def encode_auth_challenge(nonce: bytes) -> bytes:
    return _fixed(MSG_AUTH_CHALLENGE, nonce, NONCE)


def encode_auth_response(nonce: bytes, proof: bytes) -> bytes:
    return _fixed(MSG_AUTH_RESPONSE, nonce + proof, 2 * NONCE)


def encode_auth_ok(proof: bytes) -> bytes:
    return _fixed(MSG_AUTH_OK, proof, NONCE)


def _fixed(type: int, payload: bytes, size: int) -> bytes:
    if len(payload) != size:
        raise wire.ProtocolError(f"frame type {type} takes {size} bytes, not {len(payload)}")
    return wire.encode_frame(type, payload)


def decode_auth(f: wire.Frame, type: int) -> bytes:
    """The payload of an AUTH_* frame of the expected type (an ERROR raises AuthRefused)."""
    if f.type == wire.MSG_ERROR:
        err = wire.decode_error(f)
        raise AuthRefused(err.errno, err.message)
    size = {MSG_AUTH_RESPONSE: 2 * NONCE, MSG_AUTH_TICKET: TICKET.size}.get(type, NONCE)
    if f.type != type or len(f.payload) != size:
        raise wire.ProtocolError(f"expected an authentication frame (type {type}), got type {f.type}")
    return f.payload


def nonce() -> bytes:
    return secrets.token_bytes(NONCE)


def session_proof(token: bytes, agent_nonce: bytes, session_nonce: bytes) -> bytes:
    return hmac.new(token, SESSION_LABEL + agent_nonce + session_nonce, hashlib.sha256).digest()


def agent_proof(token: bytes, agent_nonce: bytes, session_nonce: bytes) -> bytes:
    return hmac.new(token, AGENT_LABEL + agent_nonce + session_nonce, hashlib.sha256).digest()


class Proof(NamedTuple):
    """A full proof's nonces: what a control link's tickets are keyed by."""
    agent_nonce: bytes
    session_nonce: bytes


def respond(token: bytes, challenge: wire.Frame) -> tuple[bytes, bytes, Proof]:
    """The session's side: (the AUTH_RESPONSE frame to send, the AUTH_OK proof to expect,
    the nonces)."""
    agent_nonce = decode_auth(challenge, MSG_AUTH_CHALLENGE)
    ours = nonce()
    return (encode_auth_response(ours, session_proof(token, agent_nonce, ours)),
            agent_proof(token, agent_nonce, ours), Proof(agent_nonce, ours))


def check_response(token: bytes, agent_nonce: bytes, response: wire.Frame) -> tuple[bytes, Proof] | None:
    """The agent's side: the AUTH_OK frame and the nonces if response proves the token, else
    None."""
    payload = decode_auth(response, MSG_AUTH_RESPONSE)
    session_nonce, proof = payload[:NONCE], payload[NONCE:]
    if not hmac.compare_digest(proof, session_proof(token, agent_nonce, session_nonce)):
        return None
    return encode_auth_ok(agent_proof(token, agent_nonce, session_nonce)), Proof(agent_nonce, session_nonce)


def check_ok(expected: bytes, ok: wire.Frame) -> bool:
    """The session's side: does the agent's AUTH_OK prove it holds the token?"""
    return hmac.compare_digest(decode_auth(ok, MSG_AUTH_OK), expected)


def _ticket_key(token: bytes, proof: Proof) -> bytes:
    return hmac.new(token, TICKETS_LABEL + proof.agent_nonce + proof.session_nonce, hashlib.sha256).digest()


def _ticket_proof(key: bytes, n: int) -> bytes:
    return hmac.new(key, TICKET_LABEL + n.to_bytes(8, "big"), hashlib.sha256).digest()


class Tickets:
    """The session's side: AUTH_TICKET frames from its control link's proof, each n once."""

    def __init__(self, token: bytes, proof: Proof):
        self.link, self.key = proof.agent_nonce, _ticket_key(token, proof)
        self.n = 0

    def next(self) -> bytes:
        self.n += 1
        return wire.encode_frame(MSG_AUTH_TICKET, TICKET.pack(self.link, self.n, _ticket_proof(self.key, self.n)))


def ticket_link(ticket: wire.Frame) -> bytes:
    """The agent's side: which control link (its nonce_a) an AUTH_TICKET names."""
    return TICKET.unpack(decode_auth(ticket, MSG_AUTH_TICKET))[0]


class TicketBook:
    """The agent's side: one control link's tickets, each taken once."""

    def __init__(self, token: bytes, proof: Proof):
        self.key = _ticket_key(token, proof)
        self.taken: set[int] = set()
        self.floor = 0  # every n at or below it counts as taken

    def take(self, ticket: wire.Frame) -> bool:
        """Whether ticket is a valid one not taken before (it is taken now)."""
        _, n, proof = TICKET.unpack(decode_auth(ticket, MSG_AUTH_TICKET))
        if n <= self.floor or n in self.taken or not hmac.compare_digest(proof, _ticket_proof(self.key, n)):
            return False
        self.taken.add(n)
        if len(self.taken) > 2 * TICKET_WINDOW:
            self.floor = max(self.taken) - TICKET_WINDOW
            self.taken = {k for k in self.taken if k > self.floor}
        return True
