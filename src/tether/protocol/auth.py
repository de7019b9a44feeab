"""Who may use a network-reachable agent: a shared token, proven without sending it.

Every connection to `tether agent --listen` starts with a challenge-response, sans-IO here:

    agent   -> AUTH_CHALLENGE  nonce_a (32 random bytes)
    session -> AUTH_RESPONSE   nonce_s, HMAC-SHA256(token, "tether session" nonce_a nonce_s)
    agent   -> AUTH_OK         HMAC-SHA256(token, "tether agent" nonce_a nonce_s)
               or ERROR EACCES, and the agent closes the connection

Both sides prove they hold the token; the token never crosses the wire, and a recorded
exchange cannot be replayed (the other side's nonce is fresh). Proofs are compared in
constant time. The data that follows is not encrypted: across networks you do not trust,
carry the agent's port over SSH or a VPN.

Tokens come from files only (never argv or the environment, which other processes can read);
a token file must not be readable by group or others, as ssh insists for keys.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat

from . import wire

TOKEN_MIN = 16  # bytes: shorter tokens are refused
PIN_KEY = "tls-sha256"  # a token file's line naming the agent's TLS certificate (agent/tls.py)
SESSION_LABEL = b"tether session\0"
AGENT_LABEL = b"tether agent\0"
MSG_AUTH_CHALLENGE = 7  # network agents only: the agent's nonce
MSG_AUTH_RESPONSE = 8  # the session's nonce and proof of the token
MSG_AUTH_OK = 9  # the agent's proof of the token
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
    size = 2 * NONCE if type == MSG_AUTH_RESPONSE else NONCE
    if f.type != type or len(f.payload) != size:
        raise wire.ProtocolError(f"expected an authentication frame (type {type}), got type {f.type}")
    return f.payload


def nonce() -> bytes:
    return secrets.token_bytes(NONCE)


def session_proof(token: bytes, agent_nonce: bytes, session_nonce: bytes) -> bytes:
    return hmac.new(token, SESSION_LABEL + agent_nonce + session_nonce, hashlib.sha256).digest()


def agent_proof(token: bytes, agent_nonce: bytes, session_nonce: bytes) -> bytes:
    return hmac.new(token, AGENT_LABEL + agent_nonce + session_nonce, hashlib.sha256).digest()


def respond(token: bytes, challenge: wire.Frame) -> tuple[bytes, bytes]:
    """The session's side: (the AUTH_RESPONSE frame to send, the AUTH_OK proof to expect)."""
    agent_nonce = decode_auth(challenge, MSG_AUTH_CHALLENGE)
    ours = nonce()
    return (encode_auth_response(ours, session_proof(token, agent_nonce, ours)),
            agent_proof(token, agent_nonce, ours))


def check_response(token: bytes, agent_nonce: bytes, response: wire.Frame) -> bytes | None:
    """The agent's side: the AUTH_OK frame if response proves the token, else None."""
    payload = decode_auth(response, MSG_AUTH_RESPONSE)
    session_nonce, proof = payload[:NONCE], payload[NONCE:]
    if not hmac.compare_digest(proof, session_proof(token, agent_nonce, session_nonce)):
        return None
    return encode_auth_ok(agent_proof(token, agent_nonce, session_nonce))


def check_ok(expected: bytes, ok: wire.Frame) -> bool:
    """The session's side: does the agent's AUTH_OK prove it holds the token?"""
    return hmac.compare_digest(decode_auth(ok, MSG_AUTH_OK), expected)
