"""The agent started in a real network namespace (`netns:NAME`): connections made there come
back as working sockets, although this host cannot reach those addresses at all."""
from __future__ import annotations

import errno
import logging
import os
import re
import socket
import time

import pytest
from netns import HTTP_PORT, UDP_PORT, WEB_ADDR, target_ns  # noqa: F401  (fixture)

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


def test_requests_answered_while_the_agent_loads_asyncio(target_ns, tmp_path):  # noqa: F811
    """The forked agent answers hello, environment and files while a thread imports asyncio;
    the first request that has to wait (a name lookup) is handed to the asyncio server, and
    nothing is lost on the way."""
    log = tmp_path / "agent.log"
    target = start_agent(target_ns.name, wait=False, log=(str(log), "%(message)s", logging.DEBUG))
    try:
        target.ready()
        assert target.link.env() == target_ns.environment
        hosts = target.link.read_file("/etc/hosts")
        assert target_ns.hosts_name.encode() in hosts
        assert target.link.resolve(target_ns.hosts_name) == [WEB_ADDR]
        assert target.link.read_file("/etc/hosts") == hosts
        assert target.link.env() == target_ns.environment
    finally:
        target.close()
    assert target.proc.returncode == 0
    early = re.search(r"(\d+) requests answered before asyncio had loaded", log.read_text())
    assert early and int(early.group(1)) >= 1, "every request waited for asyncio"


def test_agent_leaves_at_once_when_the_session_ends_before_asyncio_loaded(target_ns):  # noqa: F811
    target = start_agent(target_ns.name, wait=False)
    target.link.close()
    assert target.proc.wait(timeout=10) == 0
    target.close()
    assert not os.path.exists(target.agent_socket)
