"""`tether exec --target tcp://HOST:PORT|unix:PATH`: a `tether agent --listen` already running in
the test namespace, reached over a veth pair (TCP) or a unix socket, with a token file. Over
TCP sockets cannot cross, so the agent relays; over unix: they are handed over as for netns:.
With --tls the link is encrypted (nothing readable crosses) and the session pins the agent's
certificate. Also: the agent refuses wrong tokens, a dead or unreachable agent is a clear error within 5 s,
killing the agent mid-transfer ends the program's transfer with an error and leaves nothing
running, and a session gets its agent back when it restarts."""
from __future__ import annotations

import asyncio
import errno
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import gobuild
import pytest
from delayproxy import DelayProxy
from netns import HTTP_PORT, UDP_PORT, WEB_ADDR, TargetNamespace
from tether.agent import forward, relay
from tether.agent.listen import parse_address
from tether.protocol import agent_wire, auth, wire
from tether.protocol.sockaddr import encode_inet
from test_exec import EPOLL_FIRST_SAYS, PY_EPOLL_FIRST, TETHER, full_tour, nginx_proxies

BIG_PORT = 8090
BIG_SIZE = 100 << 20


class Agent:
    """`tether agent --listen` inside the namespace (run by prefix, a command that execs its
    arguments, if given); stderr collected in a file."""

    def __init__(self, ns: TargetNamespace, listen: str, token_file: Path, log: Path, prefix: tuple[str, ...] = (),
                 flags: tuple[str, ...] = ()):
        self.log = log
        self.proc = ns.popen([*prefix, *TETHER, "agent", "--listen", listen, "--token-file", str(token_file),
                              "--env-file", "/etc/environment", *flags], stderr=log.open("w"))
        end = time.monotonic() + 15
        while not (m := re.search(r"listening on (\S+)", log.read_text())):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                pytest.fail(f"the agent did not start: {log.read_text()}")
            time.sleep(0.02)
        self.address = m.group(1)  # tcp:HOST:PORT or unix:PATH
        self.target = "tcp://" + self.address[4:] if self.address.startswith("tcp:") else self.address

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def ns():
    with TargetNamespace(veth=True) as ns:
        big = ns.popen([sys.executable, "-I", "-c", BIG_SERVER, WEB_ADDR, str(BIG_PORT), str(BIG_SIZE)])
        try:
            yield ns
        finally:
            big.kill()
            big.wait()


@pytest.fixture(scope="module")
def token(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("token") / "agent.token"
    subprocess.run([*TETHER, "agent", "--new-token", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def tcp_agent(ns, token, tmp_path_factory):
    agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:0", token, tmp_path_factory.mktemp("agent") / "agent.log")
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def tls_token(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tls") / "agent.token"
    subprocess.run([*TETHER, "agent", "--new-token", str(path), "--tls"], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def tls_agent(ns, tls_token, tmp_path_factory):
    agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:0", tls_token, tmp_path_factory.mktemp("agent") / "tls.log",
                  flags=("--tls",))
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def unix_agent(ns, token, tmp_path_factory):
    path = tmp_path_factory.mktemp("unix") / "agent.sock"
    agent = Agent(ns, f"unix:{path}", token, path.parent / "agent.log")
    yield agent
    agent.stop()


# A server in the namespace that sends size bytes of zeros to each client, in 64 KiB writes.
BIG_SERVER = """
import socket, sys, threading
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
size = int(sys.argv[3])
def serve(c):
    chunk = bytes(65536)
    with c:
        try:
            for _ in range(size // len(chunk)):
                c.sendall(chunk)
        except OSError:
            pass
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""


def run(target: str, token: Path | None, program, *args: str, timeout: float = 60,
        **kw) -> subprocess.CompletedProcess:
    flags = ["--token-file", str(token)] if token else []
    return subprocess.run([*TETHER, "exec", "--target", target, *flags, "--", str(program), *args],
                          capture_output=True, text=True, timeout=timeout, stdin=kw.pop("stdin", subprocess.DEVNULL),
                          **kw)


@pytest.mark.parametrize("link", ["plain", "tls"])
def test_every_go_version_through_a_tcp_agent(go_versions, ns, tcp_agent, token, tls_agent, tls_token, link):
    agent, token = (tcp_agent, token) if link == "plain" else (tls_agent, tls_token)
    steps, expected = full_tour(ns)  # unconnected UDP too: datagram records name their peers
    for version in go_versions:
        r = run(agent.target, token, gobuild.build(version, "default", "netclient"), *steps)
        assert (version, r.returncode, r.stdout.splitlines(), r.stderr) == (version, 0, expected, "")


def test_unconnected_udp_through_a_tcp_agent_loses_nothing(go_versions, ns, tcp_agent, token):
    """2,000 request/response pairs on one unconnected UDP socket (bench/link.py runs 10,000)."""
    r = run(tcp_agent.target, token, gobuild.build(go_versions[-1], "default", "netclient"),
            "pairs", f"{WEB_ADDR}:{UDP_PORT}", "2000")
    assert (r.returncode, r.stdout.split()[:3], r.stderr) == (0, ["pairs", "lost", "0"], "")



def test_a_relayed_udp_socket_dupped_and_asked_its_type_stays_udp(go_versions, ns, tcp_agent, token):
    """Through the agent a UDP socket is a record stream here: its dups (Go's File, FileConn)
    frame their datagrams too, and getsockopt names the UDP socket it stands for (FileConn
    asks); before, a datagram sent on a dup ended the relay (ENETDOWN)."""
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    r = run(tcp_agent.target, token, exe, "udpdup", f"{WEB_ADDR}:{UDP_PORT}", "dup", "udp", f"{WEB_ADDR}:{UDP_PORT}",
            "after")
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (
        0, ["udpdup *net.UDPConn echo:dup", "udp echo:after"], "")
    probe = ("import os, socket, sys\n"
             "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "u.settimeout(5)\n"
             "u.connect((sys.argv[1], int(sys.argv[2])))\n"
             "d = socket.socket(fileno=os.dup(u.fileno()))\n"
             "print(d.family.name, d.type.name, d.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL))\n"
             "d.send(b'via-dup')\n"
             "print(u.recv(100).decode())\n")
    r = run(tcp_agent.target, token, sys.executable, "-I", "-c", probe, WEB_ADDR, str(UDP_PORT))
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, ["AF_INET SOCK_DGRAM 17", "echo:via-dup"], "")

# A listener whose accept queue one connection fills (backlog 0): the kernel drops every later
# SYN, so a connect to it neither succeeds nor fails until its timeout.
UNANSWERED = """
import socket, sys, time
srv = socket.socket()
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(0)
filler = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
time.sleep(120)
"""
UNANSWERED_PORT = 8094


def test_go_dial_deadlines_and_cancellation_act_on_a_relayed_connect(go_versions, ns, tcp_agent, token):
    """A relayed connect is non-blocking for Go: EINPROGRESS, finished through its poller, so a
    dial's deadline and its context's cancellation end it on time; the agent gives the connect
    up too (no SYN_SENT left in the target)."""
    web = f"{WEB_ADDR}:{HTTP_PORT}"
    server = ns.popen([sys.executable, "-I", "-c", UNANSWERED, WEB_ADDR, str(UNANSWERED_PORT)],
                      stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "ready\n"
        for version in (go_versions[0], go_versions[-1]):
            start = time.monotonic()
            r = run(tcp_agent.target, token, gobuild.build(version, "default", "netclient"),
                    "within", f"{WEB_ADDR}:{UNANSWERED_PORT}", "300", "within", web, "300", "dial", web,
                    "dial", f"{WEB_ADDR}:{HTTP_PORT + 1}")
            assert (version, r.returncode, r.stdout.splitlines(), r.stderr) == (
                version, 0, ["within timeout canceled", "within ok ok", f"dial ok peer={web}", "dial error: refused"],
                "")
            assert time.monotonic() - start < 10
        end = time.monotonic() + 5
        while f":{UNANSWERED_PORT}" in (sent := ns.run(["ss", "-tnH", "state", "syn-sent"]).stdout):
            assert time.monotonic() < end, sent
            time.sleep(0.1)
        assert str(UNANSWERED_PORT) not in sent
    finally:
        server.kill()
        server.wait()


def test_go_through_a_unix_agent_gets_sockets_handed_over(go_versions, ns, unix_agent, token):
    steps, expected = full_tour(ns)  # with unconnected UDP: descriptors cross a unix socket
    r = run(unix_agent.target, token, gobuild.build(go_versions[-1], "default", "netclient"), *steps)
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, expected, "")


PY_CLIENT = """
import errno, os, select, socket, sys, urllib.request
print(socket.gethostbyname(sys.argv[1]))
print(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(sys.argv[2], timeout=5).read().decode().strip())
s = socket.create_connection((sys.argv[1], %d), timeout=5)
print(s.getpeername()[0], s.getsockname()[0])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.connect((sys.argv[3], %d))
u.send(b"ping")
print(u.recv(100).decode(), u.getpeername())
u.send(b"again")
print(u.recvfrom(100))  # a connected socket's receive names its peer too
v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
v.settimeout(5)
v.sendto(b"one", (sys.argv[3], %d))
print(v.recvfrom(100), v.getsockname()[0])
v.sendmsg([b"t", b"wo"], [], 0, (sys.argv[3], %d))
data, _, flags, peer = v.recvmsg(100)
print(data, flags, peer)
v.sendto(b"three", (sys.argv[3], %d))
select.select([v], [], [], 5)
print(os.read(v.fileno(), 100))
try:
    v.getpeername()
except OSError as e:
    print(errno.errorcode[e.errno])
print(os.environ.get("TARGET_ONLY_VAR"))
""" % (HTTP_PORT, UDP_PORT, UDP_PORT, UDP_PORT, UDP_PORT)


@pytest.mark.parametrize("kind", ["tcp", "unix", "tls"])
def test_python_client_through_an_agent(ns, tcp_agent, unix_agent, tls_agent, token, tls_token, kind):
    agent = {"tcp": tcp_agent, "unix": unix_agent, "tls": tls_agent}[kind]
    url = f"http://{ns.dns_name}:{HTTP_PORT}/"
    argv = [*TETHER, "exec", "--target", agent.target, "--token-file", str(tls_token if kind == "tls" else token), "--",
            sys.executable, "-I", "-c", PY_CLIENT, ns.hosts_name, url, WEB_ADDR]
    sessions = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 stdin=subprocess.DEVNULL) for _ in range(3)]  # served at once
    for proc in sessions:
        out, err = proc.communicate(timeout=60)
        assert (proc.returncode, out.splitlines(), err) == (
            0, [WEB_ADDR, ns.http_body.strip(), f"{WEB_ADDR} {WEB_ADDR}", f"echo:ping ('{WEB_ADDR}', {UDP_PORT})",
                f"(b'echo:again', ('{WEB_ADDR}', {UDP_PORT}))", f"(b'echo:one', ('{WEB_ADDR}', {UDP_PORT})) 0.0.0.0",
                f"b'echo:two' 0 ('{WEB_ADDR}', {UDP_PORT})", "b'echo:three'",
                "ENOTCONN", "from-netns"], "")


def test_curl_by_name_through_a_tcp_agent(ns, tcp_agent, token):
    r = run(tcp_agent.target, token, "curl", "-sS", "--noproxy", "*", "-m", "5", f"http://{ns.dns_name}:{HTTP_PORT}/")
    assert (r.returncode, r.stdout, r.stderr) == (0, ns.http_body, "")


def test_wrong_missing_and_loose_tokens_are_refused(ns, tcp_agent, token, tmp_path):
    wrong = tmp_path / "wrong.token"
    subprocess.run([*TETHER, "agent", "--new-token", str(wrong)], check=True, capture_output=True)
    start = time.monotonic()
    r = run(tcp_agent.target, wrong, "true")
    assert r.returncode == 2 and "refused the token" in r.stderr, r.stderr
    assert "wrong token" in tcp_agent.log.read_text()  # and the agent logged it
    r = run(tcp_agent.target, None, "true")
    assert r.returncode == 2 and "needs the agent's token: give --token-file" in r.stderr, r.stderr
    wrong.chmod(0o644)
    r = run(tcp_agent.target, wrong, "true")
    assert r.returncode == 2 and f"chmod 600 {wrong}" in r.stderr, r.stderr
    r = run(tcp_agent.target, tmp_path / "none", "true")
    assert r.returncode == 2 and "cannot read token file" in r.stderr, r.stderr
    assert time.monotonic() - start < 20


def test_a_peer_without_the_token_learns_nothing(ns, tcp_agent):
    import socket

    host, port = tcp_agent.address[4:].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not a tether frame: refused and closed
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except ConnectionResetError:  # closed with our request unread
            pass
    assert b"hello" not in data and len(data) < 200
    assert "refused" in tcp_agent.log.read_text()


def test_dead_and_unreachable_agents_are_clear_errors_at_once(ns, token):
    for target, reason in [(f"tcp://{ns.veth_host_addr}:9", "nothing listens at"),  # this host, closed port
                           ("tcp://198.18.200.1:7070", "cannot reach"),  # unreachable route (fixture)
                           ("unix:/nonexistent/agent.sock", "no socket at"),
                           ("tcp://nowhere", "bad agent address")]:
        start = time.monotonic()
        r = run(target, token, "true", timeout=10)
        assert r.returncode == 2 and reason in r.stderr, (target, r.stderr)
        assert time.monotonic() - start < 5, target


def _children(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo.extend(kids - found)
            found |= kids
    return found


DOWNLOAD = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
got = 0
print("started", flush=True)
try:
    while chunk := s.recv(1 << 16):
        got += len(chunk)
        time.sleep(0.002)  # slow (about 30 MiB/s at most), so the agent dies mid-transfer
except OSError as e:
    print("error", e.errno, flush=True)
print("got", got, flush=True)
sys.exit(0 if got == int(sys.argv[3]) else 3)
"""


def test_killing_the_agent_mid_transfer_fails_the_transfer_and_leaves_nothing(ns, token, tmp_path):
    agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:0", token, tmp_path / "agent.log")
    try:
        proc = subprocess.Popen([*TETHER, "exec", "--target", agent.target, "--token-file", str(token), "--",
                                 sys.executable, "-I", "-c", DOWNLOAD, WEB_ADDR, str(BIG_PORT), str(BIG_SIZE)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "started\n"
        time.sleep(0.3)
        helpers = _children(proc.pid)
        agent.stop(signal.SIGKILL)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=15)
        assert time.monotonic() - killed < 5
    finally:
        agent.stop()
    got = int(re.search(r"got (\d+)", out).group(1))
    assert proc.returncode == 3 and "error 104" in out and 0 < got < BIG_SIZE, (proc.returncode, out, err)  # reset
    alive = {p for p in helpers if Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text()}
    assert not alive, f"left running: {alive}"


RECONNECT = """
import socket, sys
for line in sys.stdin:
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            print("ok" if b"hello" in s.makefile("rb").read() else "bad", flush=True)
    except OSError as e:
        print("error", e.strerror, flush=True)
"""


def ask(proc: subprocess.Popen) -> str:
    """One line to RECONNECT: its answer."""
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def test_a_session_gets_its_agent_back_when_it_restarts(ns, token, tmp_path):
    agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:0", token, tmp_path / "agent.log")
    port = agent.address.rsplit(":", 1)[1]
    proc = subprocess.Popen([*TETHER, "exec", "--target", agent.target, "--token-file", str(token), "--",
                             sys.executable, "-I", "-c", RECONNECT, WEB_ADDR, str(HTTP_PORT)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert ask(proc) == "ok"
        agent.stop()
        start = time.monotonic()
        assert ask(proc) == "error Network is unreachable"  # fails at once, not after a timeout
        assert time.monotonic() - start < 5
        agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:{port}", token, tmp_path / "agent2.log")
        for _ in range(50):  # the session retries every 2 s at most (bounded: 10 s)
            if (answer := ask(proc)) == "ok":
                break
            time.sleep(0.2)
        assert answer == "ok"
        out, err = proc.communicate(timeout=10)  # closes its input: it ends
        assert proc.returncode == 0
        assert "lost the agent at" in err and "is back" in err, err
    finally:
        proc.kill()
        agent.stop()


def test_a_go_program_gets_its_agent_back_when_it_restarts(go_versions, ns, token, tmp_path):
    """Go's connects are pending (EINPROGRESS) while the agent answers; the data connections the
    layer holds die with the agent, and a connect on one is made again through the stand-in."""
    agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:0", token, tmp_path / "agent.log")
    port = agent.address.rsplit(":", 1)[1]
    web, stopped, back, log = f"{WEB_ADDR}:{HTTP_PORT}", tmp_path / "stopped", tmp_path / "back", tmp_path / "log"
    proc = subprocess.Popen([*TETHER, "exec", "--target", agent.target, "--token-file", str(token), "--",
                             gobuild.build(go_versions[-1], "default", "netclient"), "dial", web, "wait", str(stopped),
                             "dial", web, "wait", str(back), "dial", web],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    try:
        while "dial" not in (proc.stdout.readline() or "dial"):
            pass
        agent.stop(signal.SIGKILL)
        stopped.touch()
        agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:{port}", token, tmp_path / "agent2.log")
        end = time.monotonic() + 15
        while f"{port} is back" not in log.read_text():
            assert time.monotonic() < end, log.read_text()
            time.sleep(0.1)
        back.touch()
        out, _ = proc.communicate(timeout=20)
        assert (proc.returncode, out.splitlines()) == (
            0, ["wait ok", "dial error: unreachable", "wait ok", f"dial ok peer={web}"]), log.read_text()
    finally:
        proc.kill()
        agent.stop()


def test_a_cut_link_ends_the_transfer_within_seconds(ns, token, tmp_path):
    """No FIN, no RST: the veth pair stops carrying packets. The data connection's keepalive
    (and user timeout) notice; the program is not left waiting forever."""
    agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:0", token, tmp_path / "agent.log")
    proc = subprocess.Popen([*TETHER, "exec", "--target", agent.target, "--token-file", str(token), "--",
                             sys.executable, "-I", "-c", DOWNLOAD, WEB_ADDR, str(BIG_PORT), str(BIG_SIZE)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "started\n"
        subprocess.run(["ip", "link", "set", ns.veth_host_ifname, "down"], check=True)
        cut = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - cut
    finally:
        subprocess.run(["ip", "link", "set", ns.veth_host_ifname, "up"], check=True)
        proc.kill()
        agent.stop()
    assert proc.returncode == 3 and "error 110" in out, (proc.returncode, out, err)  # ETIMEDOUT
    assert took < 10, took


def test_a_tls_link_carries_nothing_readable(go_versions, ns, tcp_agent, token, tls_agent, tls_token):
    """The bytes between session and agent, recorded by a proxy: through --tls neither the page,
    the target's environment nor the token appear; without --tls the first two do (so the check
    can fail; the token never crosses either way)."""
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    for agent, tok, readable in ((tcp_agent, token, True), (tls_agent, tls_token, False)):
        host, port = agent.address[4:].rsplit(":", 1)
        with DelayProxy(("127.0.0.1", 0), (host, int(port)), 0, record=True) as proxy:
            r = run(f"tcp://127.0.0.1:{proxy.address[1]}", tok, exe, "http", ns.http_url, "env", "TARGET_ONLY_VAR")
            seen = bytes(proxy.seen)
        assert (r.returncode, r.stdout.splitlines(), r.stderr) == (
            0, [f"http 200 {ns.http_body.strip()}", "env TARGET_ONLY_VAR=from-netns"], "")
        for secret in (ns.http_body.strip().encode(), b"TARGET_ONLY_VAR=from-netns"):
            assert (secret in seen) == readable, (agent.target, secret)
        assert tok.read_text().split()[0].encode() not in seen


def test_tls_mismatches_are_clear_errors_at_once(ns, tcp_agent, token, tls_agent, tls_token, tmp_path):
    token_line, pin_line = tls_token.read_text().splitlines()

    def token_file(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o600)
        return path

    cases = [(tls_agent, token_file("other-key", f"{token_line}\ntls-sha256 {'0' * 64}\n"),
              "certificate is not the one its token file names"),
             (tls_agent, token_file("no-pin", token_line + "\n"), "this agent encrypts its link (tether agent --tls)"),
             (tcp_agent, token_file("pin-for-plain", f"{token.read_text().strip()}\n{pin_line}\n"),
              "the agent does not encrypt its link, but the token file names a certificate")]
    for agent, path, reason in cases:
        start = time.monotonic()
        r = run(agent.target, path, "true", timeout=20)
        assert r.returncode == 2 and reason in r.stderr, (path.name, r.stderr)
        assert time.monotonic() - start < 5, path.name
    r = subprocess.run([*TETHER, "agent", "--listen", "tcp:127.0.0.1:0", "--token-file", str(token), "--tls"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and f"make it with `tether agent --new-token {token} --tls`" in r.stderr, r.stderr
    assert "is not encrypted" in tcp_agent.log.read_text()  # a tcp: listener off loopback without --tls
    assert "not encrypted" not in tls_agent.log.read_text()


# Non-blocking connects of a libc program through an agent: asyncio (epoll), a socket with a
# timeout (poll), select, and the kernel's answers to a send or a second connect in flight.
NONBLOCKING = """
import asyncio, errno, select, socket, sys, time
host, port, unanswered, refused = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
GET = b"GET / HTTP/1.0\\r\\n\\r\\n"

async def main():
    ticks = 0
    async def ticker():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1
    task = asyncio.create_task(ticker())
    start = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.open_connection(host, unanswered), 0.5)
        print("epoll connected to the unanswered port")
    except asyncio.TimeoutError:
        print(f"epoll timeout {time.monotonic() - start < 1.5} loop ran {ticks >= 5}")
    r, w = await asyncio.open_connection(host, port)
    w.write(GET)
    print("epoll", (await r.read()).split(b"\\r\\n")[0].decode())
    w.close()
    try:
        await asyncio.open_connection(host, refused)
    except ConnectionRefusedError:
        print("epoll refused")
    task.cancel()

asyncio.run(main())
start = time.monotonic()
try:
    socket.create_connection((host, unanswered), timeout=0.5)
except TimeoutError:
    print(f"poll timeout {time.monotonic() - start < 1.5}")
with socket.create_connection((host, port), timeout=5) as s:
    s.sendall(GET)
    print("poll", s.recv(100).split(b"\\r\\n")[0].decode())
with socket.socket() as s:
    s.setblocking(False)
    print("select", s.connect_ex((host, port)) == errno.EINPROGRESS, end=" ")
    _, ready, _ = select.select([], [s], [], 5)
    print(ready == [s], s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), errno.errorcode[s.connect_ex((host, port))])
with socket.socket() as s, select.epoll() as ep:
    s.setblocking(False)
    s.connect_ex((host, port))
    ep.register(s, select.EPOLLOUT | select.EPOLLET)
    events = ep.poll(5)
    print("epoll edge", events == [(s.fileno(), select.EPOLLOUT)], s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
with socket.socket() as s:
    s.setblocking(False)
    s.connect_ex((host, unanswered))
    try:
        s.send(b"early")
    except BlockingIOError:
        print("send in flight EAGAIN", end=" ")
    print("connect again", errno.errorcode.get(s.connect_ex((host, unanswered))))
"""


def test_libc_programs_connect_without_blocking_through_an_agent(ns, tcp_agent, token):
    """asyncio's wait_for ends a relayed connect on time while its loop goes on; poll, select,
    send and a second connect see a connect in flight as the kernel shows one."""
    server = ns.popen([sys.executable, "-I", "-c", UNANSWERED, WEB_ADDR, str(UNANSWERED_PORT)],
                      stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == "ready\n"
        r = run(tcp_agent.target, token, sys.executable, "-I", "-c", NONBLOCKING, WEB_ADDR, str(HTTP_PORT),
                str(UNANSWERED_PORT), str(HTTP_PORT + 1), timeout=30)
    finally:
        server.kill()
        server.wait()
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, [
        "epoll timeout True loop ran True", "epoll HTTP/1.0 200 OK", "epoll refused", "poll timeout True",
        "poll HTTP/1.0 200 OK", "select True True 0 EISCONN", "epoll edge True 0", "send in flight EAGAIN connect again EALREADY"],
        "")


def test_a_socket_registered_with_epoll_before_its_connect_hears_the_agents_answer(ns, tcp_agent, token):
    """nginx registers a socket with epoll before it connects: the data connection put in its
    place is registered again, waited on for the agent's answer and then reported writable,
    or failed (without: no event within 5 s)."""
    r = run(tcp_agent.target, token, sys.executable, "-I", "-c", PY_EPOLL_FIRST, WEB_ADDR, str(HTTP_PORT),
            str(HTTP_PORT + 1), timeout=30)
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, EPOLL_FIRST_SAYS, "")


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (.ci/run installs it)")
def test_nginx_proxies_to_an_upstream_through_a_tcp_agent(ns, tcp_agent, token, tmp_path):
    """nginx's upstream connects (each socket registered with epoll before its connect) through
    the agent: answered, or nginx's own 502 when the agent's connect is refused."""
    nginx_proxies([*TETHER, "exec", "--target", tcp_agent.target, "--token-file", str(token), "--incoming", "off",
                   "--"], ns.http_body, tmp_path)


def _frame(sock: socket.socket) -> wire.Frame:
    head = sock.recv(wire.FRAME.size, socket.MSG_WAITALL)
    rest = wire.frame_length(head) - wire.FRAME.size
    return wire.decode_frame(head + (sock.recv(rest, socket.MSG_WAITALL) if rest else b""))


def test_any_number_of_proven_connections_wait_without_a_thread_each(ns, tcp_agent, token):
    """A peer that proved the token may open any number of data connections: the Splicers
    wait on their first frames on epoll, so the agent's threads stay few, and a STREAM on the
    last one still connects."""
    host, port = tcp_agent.address[4:].rsplit(":", 1)
    secret = auth.load_token(str(token))
    status = Path(f"/proc/{tcp_agent.proc.pid}/status")

    def threads() -> int:
        return int(re.search(r"Threads:\s+(\d+)", status.read_text()).group(1))

    before = threads()  # what earlier tests left (relay threads kept idle for UDP)
    conns = []
    try:
        for _ in range(300):
            sock = socket.create_connection((host, int(port)), timeout=5)
            conns.append(sock)
            response, expected, _ = auth.respond(secret, _frame(sock))
            sock.sendall(response)
            assert auth.check_ok(expected, _frame(sock))
        time.sleep(0.5)  # the agent has taken the last proofs' connections where they wait
        assert threads() <= before + relay.SPLICERS, (before, threads())  # at most the Splicers, made on first use
        last = conns[-1]
        sockaddr = encode_inet(WEB_ADDR, HTTP_PORT)
        last.sendall(agent_wire.encode_stream(agent_wire.Connect(socket.AF_INET, socket.SOCK_STREAM, 0, 5000,
                                                                 sockaddr), 7))
        reply = _frame(last)
        assert (reply.type, reply.id) == (agent_wire.MSG_STREAM_REPLY, 7), reply
        last.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = b"".join(iter(lambda: last.recv(4096), b""))
        assert answer.startswith(b"HTTP/1.0 200") and ns.http_body.encode() in answer, answer[:200]
    finally:
        for sock in conns:
            sock.close()


def _proven(host: str, port: int, secret: bytes) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=5)
    response, expected, _ = auth.respond(secret, _frame(sock))
    sock.sendall(response)
    assert auth.check_ok(expected, _frame(sock))
    return sock


def test_the_agent_keeps_a_connects_deadline_and_its_early_bytes(ns, tcp_agent, token):
    """The agent's side of a relayed connect, on proven connections: a STREAM to a listener that
    never answers ends in ETIMEDOUT at its timeout_ms, not before, while other connects go on;
    a STREAM that comes a byte at a time is still read whole; bytes sent right behind a STREAM,
    before its connect completes, are relayed once it has."""
    host, port = tcp_agent.address[4:].rsplit(":", 1)
    secret = auth.load_token(str(token))
    server = ns.popen([sys.executable, "-I", "-c", UNANSWERED, WEB_ADDR, str(UNANSWERED_PORT)],
                      stdout=subprocess.PIPE, text=True)
    slow = _proven(host, int(port), secret)
    pieces = _proven(host, int(port), secret)
    early = _proven(host, int(port), secret)
    try:
        assert server.stdout.readline() == "ready\n"
        start = time.monotonic()
        slow.sendall(agent_wire.encode_stream(agent_wire.Connect(
            socket.AF_INET, socket.SOCK_STREAM, 0, 700, encode_inet(WEB_ADDR, UNANSWERED_PORT)), 1))
        web = agent_wire.Connect(socket.AF_INET, socket.SOCK_STREAM, 0, 5000, encode_inet(WEB_ADDR, HTTP_PORT))
        for byte in agent_wire.encode_stream(web, 2):
            pieces.sendall(bytes([byte]))
            time.sleep(0.002)
        early.sendall(agent_wire.encode_stream(web, 3) + b"GET / HTTP/1.0\r\n\r\n")
        for sock, id in ((pieces, 2), (early, 3)):
            reply = _frame(sock)
            assert (reply.type, reply.id) == (agent_wire.MSG_STREAM_REPLY, id), reply
        assert time.monotonic() - start < 0.6  # not held up by the connect still in flight
        answer = b"".join(iter(lambda: early.recv(4096), b""))
        assert answer.startswith(b"HTTP/1.0 200") and ns.http_body.encode() in answer, answer[:200]
        reply = _frame(slow)
        took = time.monotonic() - start
        assert reply.type == wire.MSG_ERROR and wire.decode_error(reply).errno == errno.ETIMEDOUT, reply
        assert 0.65 < took < 3, took
    finally:
        for sock in (slow, pieces, early):
            sock.close()
        server.kill()
        server.wait()


def test_sockets_made_ahead_for_connects_are_not_left_open(ns, tcp_agent, token):
    """A Splicer waiting on a proven connection holds a TCP/IPv4 socket made ahead for its
    connect. Connections closed unused, a UDP STREAM and a STREAM the agent refuses leave none
    of them open; a TCP one is the target's socket until its relay ends."""
    host, port = tcp_agent.address[4:].rsplit(":", 1)
    secret = auth.load_token(str(token))
    fds = Path(f"/proc/{tcp_agent.proc.pid}/fd")

    def settled(most: int = 1 << 30) -> int:  # the agent's descriptors once it has caught up
        end = time.monotonic() + 5  # a UDP relay looks whether its stream ended once a second
        while len(list(fds.iterdir())) > most and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.3)
        return len(list(fds.iterdir()))

    before = settled()
    conns = [_proven(host, int(port), secret) for _ in range(12)]
    assert settled() >= before + 2 * len(conns)  # each: the connection and the socket made ahead
    for sock in conns[:4]:
        sock.close()
    udp = agent_wire.Connect(socket.AF_INET, socket.SOCK_DGRAM, 0, 5000, encode_inet(WEB_ADDR, UDP_PORT))
    refused = agent_wire.Connect(socket.AF_INET, socket.SOCK_STREAM, 0, 5000, encode_inet(WEB_ADDR, 1))
    tcp = agent_wire.Connect(socket.AF_INET, socket.SOCK_STREAM, 0, 5000, encode_inet(WEB_ADDR, HTTP_PORT))
    for i, (sock, req) in enumerate(zip(conns[4:], [udp] * 3 + [refused] * 3 + [tcp] * 2)):
        sock.sendall(agent_wire.encode_stream(req, i + 1))
        reply = _frame(sock)
        expected = wire.MSG_ERROR if req is refused else agent_wire.MSG_STREAM_REPLY
        assert (reply.type, reply.id) == (expected, i + 1), reply
    for sock in conns[4:]:
        sock.close()
    assert settled(before) <= before


def test_spare_data_connections_are_dialled_side_by_side(ns, tcp_agent, token):
    """The stand-in keeps SPARE_STREAMS data connections ready ahead of need, each proven by a
    ticket sent with its first bytes. At 20 ms round trip the control link takes four round
    trips (handshake, challenge, proof, hello); the spares, dialled side by side, all about
    one (not SPARE_STREAMS of them, nor a proof's two more); one taken before its challenge
    came carries a STREAM once it has; and a connect that finds none waits for the next one
    on its way rather than dialling one more."""
    host, port = tcp_agent.address[4:].rsplit(":", 1)

    async def main(proxy_port: int) -> None:
        remote = forward.Remote(parse_address(f"tcp:127.0.0.1:{proxy_port}"), auth.load_token(str(token)),
                                str(token), "test")
        dial = remote.dial
        dials = 0

        async def counted(**how):
            nonlocal dials
            dials += 1
            return await dial(**how)

        remote.dial = counted
        taken = []
        try:
            start = time.monotonic()
            await remote.start()  # the control link (a dial, the proof and a hello), then the refill
            control_s = time.monotonic() - start
            assert remote.down is None, remote.down
            start = time.monotonic()
            while len(remote.spares) < forward.SPARE_STREAMS and time.monotonic() - start < 10:
                await asyncio.sleep(0.002)
            filled_s = time.monotonic() - start
            assert len(remote.spares) == forward.SPARE_STREAMS
            assert filled_s < control_s / 2, (filled_s, control_s)  # no proof's round trips, side by side
            assert all(peer.challenge_due for peer in remote.spares)
            taken += await remote.data_connections(forward.SPARE_STREAMS)  # waits for the challenges
            assert len(taken) == forward.SPARE_STREAMS and not any(peer.challenge_due for peer in taken)
            stream = taken[0].sock
            stream.setblocking(True)
            stream.settimeout(5)
            stream.sendall(agent_wire.encode_stream(agent_wire.Connect(
                socket.AF_INET, socket.SOCK_STREAM, 0, 5000, encode_inet(WEB_ADDR, HTTP_PORT)), 3))
            reply = _frame(stream)
            assert (reply.type, reply.id) == (agent_wire.MSG_STREAM_REPLY, 3), reply
            dials = 0
            remote._refill()
            taken += await remote.data_connections(1)  # none left: the first of the refill's
            assert dials == forward.SPARE_STREAMS, dials
        finally:
            for peer in [remote.control, *remote.spares, *taken]:
                peer.sock.close()
            for task in list(remote.tasks):
                task.cancel()

    with DelayProxy(("127.0.0.1", 0), (host, int(port)), 0.010) as proxy:
        asyncio.run(main(proxy.address[1]))


def test_a_ticket_is_taken_once_and_only_while_its_control_link_is_open(ns, tcp_agent, token):
    """A data connection's ticket proves it only for its session's open control link, once;
    a replayed or stale ticket is refused with EACCES and the connection closed."""
    host, port = tcp_agent.address[4:].rsplit(":", 1)
    secret = auth.load_token(str(token))
    stream_req = agent_wire.encode_stream(agent_wire.Connect(
        socket.AF_INET, socket.SOCK_STREAM, 0, 5000, encode_inet(WEB_ADDR, HTTP_PORT)), 5)

    def ticketed(ticket: bytes) -> wire.Frame:
        """The agent's first frame after the challenge, for a connection proven by ticket."""
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(ticket + stream_req)
            assert _frame(sock).type == auth.MSG_AUTH_CHALLENGE
            return _frame(sock)

    control = socket.create_connection((host, int(port)), timeout=5)
    try:
        response, expected, proof = auth.respond(secret, _frame(control))
        control.sendall(response)
        assert auth.check_ok(expected, _frame(control))
        control.sendall(agent_wire.encode_agent_hello(wire.PROTOCOL_VERSION, 0, 1))
        assert _frame(control).type == agent_wire.MSG_AGENT_HELLO_REPLY
        tickets = auth.Tickets(secret, proof)
        first = tickets.next()
        assert ticketed(first).type == agent_wire.MSG_STREAM_REPLY
        replayed = ticketed(first)
        assert replayed.type == wire.MSG_ERROR and wire.decode_error(replayed).errno == errno.EACCES
    finally:
        control.close()
    time.sleep(0.3)  # the agent has seen the control link end
    stale = ticketed(tickets.next())
    assert stale.type == wire.MSG_ERROR and wire.decode_error(stale).errno == errno.EACCES


def test_silent_peers_do_not_hold_up_a_tls_agents_sessions(go_versions, ns, tls_agent, tls_token):
    """Peers that connect and say nothing wait out the TLS handshake's 5 s each; more of them
    than the default executor has threads must not delay a session's start or its lookups."""
    host, port = tls_agent.address[4:].rsplit(":", 1)
    silent = [socket.create_connection((host, int(port)), timeout=5) for _ in range(12)]
    try:
        start = time.monotonic()
        r = run(tls_agent.target, tls_token, gobuild.build(go_versions[-1], "default", "netclient"),
                "lookup", ns.dns_name, "http", ns.http_url, timeout=20)
        took = time.monotonic() - start
    finally:
        for sock in silent:
            sock.close()
    assert (r.returncode, r.stdout.splitlines()[1:], r.stderr) == (0, [f"http 200 {ns.http_body.strip()}"], "")
    assert r.stdout.startswith(f"lookup {ns.dns_name} 198.18."), r.stdout
    assert took < 3, took


@pytest.mark.parametrize("link", ["plain", "tls"])
@pytest.mark.parametrize("failure", ["kill", "reset"])
def test_at_20_ms_a_lost_agent_fails_the_transfer_within_5_s(ns, token, tls_token, tmp_path, link, failure):
    """Through a 20 ms round-trip link: the agent killed, or the link reset (RST both ways), mid-
    transfer: the program gets an error in time and nothing is left running."""
    tok, flags = (tls_token, ("--tls",)) if link == "tls" else (token, ())
    agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:0", tok, tmp_path / "agent.log", flags=flags)
    host, port = agent.address[4:].rsplit(":", 1)
    try:
        with DelayProxy(("127.0.0.1", 0), (host, int(port)), 0.010) as proxy:
            proc = subprocess.Popen([*TETHER, "exec", "--target", f"tcp://127.0.0.1:{proxy.address[1]}",
                                     "--token-file", str(tok), "--", sys.executable, "-I", "-c", DOWNLOAD, WEB_ADDR,
                                     str(BIG_PORT), str(BIG_SIZE)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert proc.stdout.readline() == "started\n"
            time.sleep(0.5)
            helpers = _children(proc.pid)
            agent.stop(signal.SIGKILL) if failure == "kill" else proxy.cut()
            lost = time.monotonic()
            out, err = proc.communicate(timeout=15)
            took = time.monotonic() - lost
    finally:
        proc.kill()
        agent.stop()
    got = int(re.search(r"got (\d+)", out).group(1))
    assert proc.returncode == 3 and "error 104" in out and 0 < got < BIG_SIZE, (proc.returncode, out, err)
    assert took < 5, took
    alive = {p for p in helpers if Path(f"/proc/{p}").exists() and "zombie" not in Path(f"/proc/{p}/status").read_text()}
    assert not alive, f"left running: {alive}"


@pytest.mark.parametrize("link", ["plain", "tls"])
def test_at_20_ms_a_session_reconnects_after_its_link_is_reset(ns, token, tls_token, tmp_path, link):
    tok, flags = (tls_token, ("--tls",)) if link == "tls" else (token, ())
    agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:0", tok, tmp_path / "agent.log", flags=flags)
    host, port = agent.address[4:].rsplit(":", 1)
    with DelayProxy(("127.0.0.1", 0), (host, int(port)), 0.010) as proxy:
        proc = subprocess.Popen([*TETHER, "exec", "--target", f"tcp://127.0.0.1:{proxy.address[1]}", "--token-file",
                                 str(tok), "--", sys.executable, "-I", "-c", RECONNECT, WEB_ADDR, str(HTTP_PORT)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert ask(proc) == "ok"
            proxy.cut()  # the control link and the spare data connections
            answers = []
            for _ in range(50):  # the session reconnects within seconds (bounded: 10 s)
                if (answer := ask(proc)) == "ok":
                    break
                answers.append(answer)
                time.sleep(0.2)
            assert answer == "ok", answers
            out, err = proc.communicate(timeout=10)
            assert proc.returncode == 0, err
            assert "lost the agent at" in err and "is back" in err, err
        finally:
            proc.kill()
            agent.stop()
