"""agent/tls.py on its own: the tunnel carries bytes both ways unchanged, passes a half-close
on as one, turns a cut (no close_notify) into an error rather than a clean end, and the client
refuses a certificate other than the pinned one. Real TLS over loopback TCP."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading

import pytest

from tether.agent import relay, tls
from tether.protocol.auth import load_token_file

TETHER = [sys.executable, "-m", "tether"]


@pytest.fixture(scope="module")
def credentials(tmp_path_factory):
    """(token file, server context, pin) from `tether agent --new-token F --tls`."""
    path = tmp_path_factory.mktemp("tls") / "agent.token"
    r = subprocess.run([*TETHER, "agent", "--new-token", str(path), "--tls"], capture_output=True, text=True)
    assert r.returncode == 0 and f"TLS key in {path}.tls.pem" in r.stderr, r.stderr
    return path, tls.server_context(str(path)), load_token_file(str(path))[1]


def tunnels(server_ctx, pin, direct=False):
    """Both plaintext ends of one TLS connection over loopback: (client's, server's)."""
    with socket.create_server(("127.0.0.1", 0)) as ls:
        accepted = {}

        def serve():
            conn, _ = ls.accept()
            try:
                accepted["end"] = tls.tunnel(tls.handshake(conn, server_ctx), "server", direct)
            except Exception as e:  # noqa: BLE001 - the test reads it
                accepted["error"] = e
        t = threading.Thread(target=serve)
        t.start()
        try:
            client = tls.tunnel(tls.handshake(socket.create_connection(ls.getsockname()), tls.client_context(), pin),
                                "client")
        finally:
            t.join(10)
    if "error" in accepted:
        raise accepted["error"]
    return client, accepted["end"]


def drain(sock: socket.socket, got: dict, key: str) -> None:
    """got[key]: all sock gives until its end."""
    parts = []
    while chunk := sock.recv(1 << 16):
        parts.append(chunk)
    got[key] = b"".join(parts)


def test_new_token_tls_writes_the_pin_of_a_private_key(credentials):
    path, _, pin = credentials
    assert path.read_text().splitlines()[1] == f"tls-sha256 {pin}"
    pem = path.with_name(path.name + ".tls.pem")
    assert pem.stat().st_mode & 0o777 == 0o600
    der = subprocess.run(["openssl", "x509", "-in", str(pem), "-outform", "DER"], capture_output=True, check=True)
    assert hashlib.sha256(der.stdout).hexdigest() == pin
    before = path.read_bytes(), pem.read_bytes()
    r = subprocess.run([*TETHER, "agent", "--new-token", str(path), "--tls"], capture_output=True, text=True)
    assert r.returncode == 2 and "File exists" in r.stderr  # never overwritten
    assert (path.read_bytes(), pem.read_bytes()) == before
    fresh = path.with_name("fresh.token")
    fresh.write_text("")
    r = subprocess.run([*TETHER, "agent", "--new-token", str(fresh), "--tls"], capture_output=True, text=True)
    assert r.returncode == 2 and "cannot create token file" in r.stderr
    assert not fresh.with_name("fresh.token.tls.pem").exists()  # nothing half made left


def test_bytes_cross_unchanged_both_ways_and_a_half_close_is_one(credentials):
    _, ctx, pin = credentials
    client, server = tunnels(ctx, pin)
    up, down = os.urandom(3 << 20), os.urandom(5 << 20)
    got = {}
    readers = [threading.Thread(target=drain, args=(server, got, "up")),
               threading.Thread(target=drain, args=(client, got, "down"))]
    for r in readers:
        r.start()
    client.sendall(up)
    client.shutdown(socket.SHUT_WR)  # the server reads an end, and may still answer
    readers[0].join(20)
    assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(up).digest()
    server.sendall(down)
    server.shutdown(socket.SHUT_WR)
    readers[1].join(20)
    assert hashlib.sha256(got["down"]).digest() == hashlib.sha256(down).digest()
    client.close()
    server.close()


def test_a_cut_without_close_notify_is_an_error_not_an_end(credentials):
    _, ctx, pin = credentials
    # The server's side is handled by hand: handshake, one record, then a TCP close without close_notify.
    with socket.create_server(("127.0.0.1", 0)) as ls:
        done = {}

        def serve():
            conn, _ = ls.accept()
            t = tls.handshake(conn, ctx)
            t.obj.write(b"partial")
            t.sock.setblocking(True)
            t.sock.sendall(t.outgoing.read())
            t.sock.close()
            done["ok"] = True
        s = threading.Thread(target=serve)
        s.start()
        client = tls.tunnel(tls.handshake(socket.create_connection(ls.getsockname()), tls.client_context(), pin),
                            "client")
        s.join(10)
    client.settimeout(10)
    assert client.recv(100) == b"partial"
    with pytest.raises(ConnectionResetError):
        client.recv(100)
    client.close()


def test_a_certificate_other_than_the_pinned_one_is_refused(credentials):
    _, ctx, pin = credentials
    other = ("0" if pin[0] != "0" else "1") + pin[1:]
    with pytest.raises(tls.TlsError, match="not the one its token file names"):
        tunnels(ctx, other)


def test_a_relayed_stream_is_carried_straight_to_its_target_in_order(credentials):
    """The agent's side: relay_tcp hands the tunnel's thread the target socket. Bytes the client
    sent before that (still in the pair), the reply, and all after arrive whole and in order;
    an end of stream still crosses each way."""
    _, ctx, pin = credentials
    client, server = tunnels(ctx, pin, direct=True)
    early, up, down = os.urandom(300_000), os.urandom(4 << 20), os.urandom(6 << 20)
    client.sendall(early)  # in the pair's buffers when the switch comes
    target, app = tls.loopback_pair()  # app: the target's peer
    got = {}
    readers = [threading.Thread(target=drain, args=(app, got, "up")),
               threading.Thread(target=drain, args=(client, got, "down"))]
    relay.relay_tcp(server, target, "test", preface=b"reply:")
    assert server not in relay.DIRECT
    for r in readers:
        r.start()
    client.sendall(up)
    client.shutdown(socket.SHUT_WR)
    app.sendall(down)
    app.shutdown(socket.SHUT_WR)
    for r in readers:
        r.join(30)
    assert hashlib.sha256(got["up"]).digest() == hashlib.sha256(early + up).digest()
    assert hashlib.sha256(got["down"]).digest() == hashlib.sha256(b"reply:" + down).digest()
    client.close()
    app.close()


def test_a_reset_by_the_target_reaches_the_client_as_one(credentials):
    _, ctx, pin = credentials
    client, server = tunnels(ctx, pin, direct=True)
    target, app = tls.loopback_pair()
    relay.relay_tcp(server, target, "test")
    client.sendall(b"hello")
    app.settimeout(10)
    assert app.recv(5) == b"hello"
    app.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, relay.LINGER_RESET)
    app.close()
    client.settimeout(10)
    with pytest.raises(ConnectionResetError):
        client.recv(100)
    client.close()
