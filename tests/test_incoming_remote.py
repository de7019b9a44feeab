"""`tether exec --incoming` through network agents: a `tether agent --listen` in a throwaway
namespace, reached over veth (tcp://, where the agent accepts in the target and relays each
connection over a data connection of its own) or a unix socket (unix:, where the listening
socket is handed over as on a netns: target). Real apps and clients in the namespace, as in
test_incoming.py; here what differs: accept() through the relay gives the client's real
address, libc's accept4 (Python) works as Go's, closing the listener or killing tether gives the
port back, and a killed agent's lease ends."""
from __future__ import annotations

import signal
import subprocess
import sys

import gobuild
import pytest
from netns import WEB_ADDR, TargetNamespace
from test_incoming import (APP_PORT, BACK_WITHIN_S, FREE_PORT, PY_APP_PORT, Program, check_app_back, check_mirror,
                           get, go_server, load, ruleset, wait_for)
# The agents and their token as test_remote_target.py makes them (in this module's namespace).
from test_remote_target import Agent, tcp_agent, token, unix_agent  # noqa: F401


@pytest.fixture(scope="module")
def ns(go_versions):
    exe = gobuild.build(go_versions[-1], "default", "incoming")
    with TargetNamespace(veth=True) as target:
        target.popen([str(exe), "serve", f":{APP_PORT}", "app"], stdout=subprocess.DEVNULL)
        wait_for(lambda: get(target, APP_PORT) == "app\n", 10)
        target.exe = exe
        yield target


def through(agent, token) -> tuple[str, ...]:
    return ("--target", agent.target, "--token-file", str(token))


def test_steal_of_a_free_port_through_a_tcp_agent_gives_the_clients_address(ns, tcp_agent, token):
    prog = go_server(ns, FREE_PORT, "--incoming", "steal", target=through(tcp_agent, token))
    try:
        assert prog.line("listening") == f"listening [::]:{FREE_PORT}"
        for _ in range(3):  # more than one connection through the parked data connections
            assert get(ns, FREE_PORT, "/addr").startswith(f"prog local={WEB_ADDR}:{FREE_PORT} remote={WEB_ADDR}:")
        assert get(ns, FREE_PORT) == "prog\n"
    finally:
        out, err = prog.stop()
    assert "served 4" in out, (out, err)
    assert wait_for(lambda: get(ns, FREE_PORT, timeout=0.2) is None, BACK_WITHIN_S) < BACK_WITHIN_S


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_steal_takes_the_apps_port_and_gives_it_back(ns, tcp_agent, unix_agent, token, kind):
    agent = tcp_agent if kind == "tcp" else unix_agent
    prog = go_server(ns, APP_PORT, "--incoming", "steal", target=through(agent, token))
    try:
        assert get(ns, APP_PORT) == "prog\n"
        # The redirect's original destination: the port the client asked for, its own address.
        assert get(ns, APP_PORT, "/addr").startswith(f"prog local={WEB_ADDR}:{APP_PORT} remote={WEB_ADDR}:")
        assert f"tcp dport {APP_PORT}" in ruleset(ns)
    finally:
        prog.stop()
    assert wait_for(lambda: get(ns, APP_PORT, timeout=0.2) == "app\n", BACK_WITHIN_S) < BACK_WITHIN_S
    assert "tether" not in ruleset(ns)


def test_python_program_accepts_through_libc(ns, tcp_agent, token, tmp_path):
    (tmp_path / "who").write_text("from the program\n")
    prog = Program(ns, [sys.executable, "-u", "-m", "http.server", str(PY_APP_PORT), "-d", str(tmp_path)],
                   "--incoming", "steal", target=through(tcp_agent, token))
    try:
        prog.line("Serving HTTP")
        assert get(ns, PY_APP_PORT, "/who") == "from the program\n"
    finally:
        out, err = prog.stop()
    # http.server logs each request with the client's address: the target's client, not the relay.
    assert f'{WEB_ADDR} - - ' in err and '"GET /who HTTP/1.1" 200' in err, err


def test_closing_the_listener_ends_the_lease(ns, tcp_agent, token):
    code = ("import socket, sys\n"
            f"s = socket.create_server(('', {APP_PORT}))\n"
            "print('listening', flush=True)\n"
            # read the request first: closing with it unread would reset the connection, data and all
            "c, peer = s.accept(); c.recv(4096); c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nfirst\\n'); c.close()\n"
            "print('accepted', peer[0], flush=True)\n"
            "sys.stdin.readline(); s.close(); print('closed', flush=True)\n"
            "sys.stdin.readline()\n")
    prog = Program(ns, [sys.executable, "-c", code], "--incoming", "steal", target=through(tcp_agent, token))
    try:
        prog.line("listening")
        assert get(ns, APP_PORT) == "first\n"
        assert prog.line("accepted") == f"accepted {WEB_ADDR}"
        prog.proc.stdin.write("\n")
        prog.proc.stdin.flush()
        prog.line("closed")
        assert wait_for(lambda: get(ns, APP_PORT, timeout=0.2) == "app\n", BACK_WITHIN_S) < BACK_WITHIN_S
        assert "tether" not in ruleset(ns) and prog.proc.poll() is None
    finally:
        prog.stop()


def test_mirror_through_a_tcp_agent_copies_every_request(ns, tcp_agent, token):
    check_mirror(ns, go_server(ns, APP_PORT, target=through(tcp_agent, token)))  # mirror: the default


def test_filtered_steal_through_a_tcp_agent(ns, tcp_agent, token):
    prog = go_server(ns, APP_PORT, "--steal-path", "^/addr", target=through(tcp_agent, token))
    try:
        assert get(ns, APP_PORT) == "app\n"
        assert get(ns, APP_PORT, "/addr").startswith("prog local=")
    finally:
        out, err = prog.stop()
    assert "served 1" in out, (out, err)


@pytest.mark.parametrize("victim", ["tether", "agent"])
def test_sigkill_mid_load_gives_the_port_back(ns, token, tmp_path, victim):
    agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:0", token, tmp_path / "agent.log")
    prog = go_server(ns, APP_PORT, "--incoming", "steal", target=through(agent, token))
    try:
        client = load(ns, APP_PORT, 30)
        wait_for(lambda: get(ns, APP_PORT, timeout=0.5) == "prog\n", 5)
        (agent.proc if victim == "agent" else prog.proc).send_signal(signal.SIGKILL)
        check_app_back(ns, client)
    finally:
        prog.stop(signal.SIGKILL)
        agent.stop(signal.SIGKILL)
    assert get(ns, APP_PORT) == "app\n"


ECHO_CLIENT = ("import socket, sys\n"
               "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
               "f = s.makefile('rwb')\n"
               "for word in ('one', 'two'):\n"
               "    f.write(word.encode() + b'\\n'); f.flush(); print(f.readline().decode().strip())\n")


@pytest.mark.parametrize("kind", ["netns", "tcp"])
def test_a_c_echo_server_with_blocking_accept(ns, tcp_agent, token, kind):
    """libc's accept() (not accept4) on a blocking listener, getpeername/getsockname after it."""
    exe = gobuild.build_c("tcp_echo")
    target = through(tcp_agent, token) if kind == "tcp" else ()
    prog = Program(ns, [str(exe), str(FREE_PORT)], "--incoming", "steal", target=target)
    try:
        prog.line("listening")
        for _ in range(2):
            r = ns.run([sys.executable, "-c", ECHO_CLIENT, WEB_ADDR, str(FREE_PORT)], timeout=30)
            assert r.stdout.split() == ["echo", "one", "echo", "two"], r
        assert prog.line("client").startswith(f"client {WEB_ADDR}:")
        assert prog.line("client").endswith(f" local {WEB_ADDR}:{FREE_PORT}")
    finally:
        prog.stop()


def test_a_listener_takes_the_port_again_when_the_agent_is_back(ns, token, tmp_path):
    agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:0", token, tmp_path / "agent.log")
    port = agent.address.rsplit(":", 1)[1]
    prog = go_server(ns, FREE_PORT, "--incoming", "steal", target=through(agent, token))
    try:
        assert get(ns, FREE_PORT) == "prog\n"
        agent.stop()
        assert wait_for(lambda: get(ns, FREE_PORT, timeout=0.2) is None, BACK_WITHIN_S) < BACK_WITHIN_S
        agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:{port}", token, tmp_path / "agent2.log")
        wait_for(lambda: get(ns, FREE_PORT, timeout=0.5) == "prog\n", 15, step=0.2)
    finally:
        out, err = prog.stop()
        agent.stop()
    assert "gets no more connections from the target" in err and "gets the target's connections again" in err, err
