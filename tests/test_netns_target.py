"""The agent started in a real network namespace (`netns:NAME`): connections made there come
back as working sockets, although this host cannot reach those addresses at all."""
from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from netns import HTTP_PORT, UDP_PORT, WEB_ADDR, target_ns  # noqa: F401  (fixture)

from tether.protocol import agent_wire
from tether.protocol.sockaddr import encode_inet
from tether.session.agent_link import AgentError, LinkError
from tether.targets.netns import TargetError, start_agent


@pytest.fixture
def link(target_ns):  # noqa: F811
    target = start_agent(target_ns.name)
    yield target.proc, target.link
    try:
        target.close()
    finally:
        target.proc.kill()


def test_tcp_connect_happens_in_the_namespace(target_ns, link):  # noqa: F811
    _, agent = link
    with socket.socket() as direct:  # the host itself has no way there
        direct.settimeout(1)
        with pytest.raises(OSError) as e:
            direct.connect((WEB_ADDR, HTTP_PORT))
        assert e.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)
    conn = agent.connect(socket.AF_INET, socket.SOCK_STREAM, encode_inet(WEB_ADDR, HTTP_PORT))
    with conn:
        conn.settimeout(10)
        conn.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        response = b""
        while chunk := conn.recv(4096):
            response += chunk
    assert response.startswith(b"HTTP/1.") and response.endswith(f"hello from netns {target_ns.name}\n".encode())
    assert conn.fileno() == -1


def test_udp_connect_happens_in_the_namespace(link):
    _, agent = link
    with agent.connect(socket.AF_INET, socket.SOCK_DGRAM, encode_inet(WEB_ADDR, UDP_PORT)) as udp:
        udp.settimeout(5)
        udp.send(b"ping")
        assert udp.recv(100) == b"echo:ping"


def test_errors_come_back_as_the_programs_errno(link):
    _, agent = link
    with pytest.raises(AgentError) as refused:
        agent.connect(socket.AF_INET, socket.SOCK_STREAM, encode_inet(WEB_ADDR, HTTP_PORT + 1))
    assert refused.value.errno == errno.ECONNREFUSED
    start = time.monotonic()
    with pytest.raises(AgentError) as unreachable:  # no route in the namespace: fails at once
        agent.connect(socket.AF_INET, socket.SOCK_STREAM, encode_inet("198.20.0.1", 80))
    assert unreachable.value.errno == errno.ENETUNREACH and time.monotonic() - start < 2


def test_agent_that_dies_fails_fast(link):
    proc, agent = link
    proc.kill()
    proc.wait(timeout=10)
    start = time.monotonic()
    with pytest.raises(LinkError):
        agent.connect(socket.AF_INET, socket.SOCK_STREAM, encode_inet(WEB_ADDR, HTTP_PORT))
    assert time.monotonic() - start < 5


def test_unknown_namespace_names_the_fix():
    with pytest.raises(TargetError, match=r"no network namespace 'no-such-ns-4711'.*ip netns add no-such-ns-4711"):
        start_agent("no-such-ns-4711")


def test_names_resolve_as_in_the_namespace(target_ns, link):  # noqa: F811
    _, agent = link
    assert agent.resolve(target_ns.hosts_name) == [WEB_ADDR]  # its hosts file
    assert agent.resolve(target_ns.dns_name) == [WEB_ADDR]  # only its dnsmasq knows this one
    with pytest.raises(AgentError) as missing:
        agent.resolve("no-such-host.test")
    assert missing.value.errno == errno.ENOENT


def test_environment_is_the_namespace_file(target_ns, link):  # noqa: F811
    _, agent = link
    assert agent.env() == target_ns.environment


EARLY = """
import json, logging, os, socket, sys
from tether.protocol import agent_wire, wire
from tether.protocol.sockaddr import encode_inet
from tether.targets.netns import start_agent
name, hosts_name, web, port, log = sys.argv[1:]


def ask(sock, request):
    sock.send(request)
    msg, fds, _, _ = socket.recv_fds(sock, wire.FRAME_MAX, 4)
    return wire.decode_frame(msg).type, fds


target = start_agent(name, wait=False, log=(log, "%(message)s", logging.DEBUG))
out = {}
try:
    target.ready()
    out["env"] = target.link.env()
    out["hosts"] = target.link.read_file("/etc/hosts").decode()
    layer = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # as a hooked process does
    layer.connect(target.agent_socket)
    kind, fds = ask(layer, agent_wire.encode_socket(socket.AF_INET, socket.SOCK_STREAM, 0, 1, count=2))
    out["sockets"] = [kind, len(fds)]
    kind, fds2 = ask(layer, agent_wire.encode_open(agent_wire.Open(os.O_RDONLY, 0, "/etc/hosts"), 2))
    out["opened"] = [kind, os.read(fds2[0], 1 << 16).decode()]
    req = agent_wire.Connect(socket.AF_INET, socket.SOCK_STREAM, 0, 5000, encode_inet(web, int(port)))
    kind, fds3 = ask(layer, agent_wire.encode_connect(req, 3))  # has to wait: asyncio takes over
    with socket.socket(fileno=fds3[0]) as conn:
        conn.setblocking(True)
        conn.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        out["fetched"] = conn.recv(12).decode()
    for fd in fds + fds2:
        os.close(fd)
    out["resolved"] = target.link.resolve(hosts_name)
    out["env again"] = target.link.env()
finally:
    target.close()
out["status"] = target.proc.returncode
out["asyncio here"] = "asyncio" in sys.modules
print(json.dumps(out))
"""


def test_requests_answered_while_the_agent_loads_asyncio(target_ns, tmp_path):  # noqa: F811
    """The forked agent answers what needs no waiting, from the session (hello, environment,
    files) and from hooked processes on its listener (sockets, files), while a thread imports
    asyncio; the first request that has to wait (a layer's connect) is handed to the asyncio
    server with every connection, and nothing is lost on the way. Run from a fresh
    interpreter: a child forked from one that has asyncio loaded (this one) has nothing left
    to import."""
    log = tmp_path / "agent.log"
    r = subprocess.run([sys.executable, "-c", EARLY, target_ns.name, target_ns.hosts_name, WEB_ADDR,
                        str(HTTP_PORT), str(log)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["env"] == out["env again"] == target_ns.environment
    assert target_ns.hosts_name in out["hosts"] and out["opened"] == [agent_wire.MSG_OPEN_REPLY, out["hosts"]]
    assert out["sockets"] == [agent_wire.MSG_SOCKET_REPLY, 2]
    assert out["fetched"].startswith("HTTP/1.")
    assert out["resolved"] == [WEB_ADDR]
    assert out["status"] == 0 and not out["asyncio here"]
    # hello, environment, hosts; sockets, open. The connect then waits for asyncio, unless the
    # importing thread is done first (on a loaded machine the connect can come late): either
    # way it is served, as "fetched" shows.
    early = re.search(r"(\d+) requests answered before asyncio had loaded(; type (\d+) waits for it)?$", log.read_text(),
                      re.M)
    assert early and int(early.group(1)) == 5 and early.group(3) in (None, "32"), log.read_text()


def test_agent_leaves_at_once_when_the_session_ends_before_asyncio_loaded(target_ns):  # noqa: F811
    target = start_agent(target_ns.name, wait=False)
    target.link.close()
    assert target.proc.wait(timeout=10) == 0
    target.close()
    assert not os.path.exists(target.agent_socket)
