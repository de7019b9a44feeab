"""`tether exec --incoming`: a program that listens on a TCP port gets the target's port.

Real target apps (a Go net/http server, `python3 -m http.server`) run in a throwaway namespace,
real clients in it (curl, the Go load client) connect to the port, and the program under tether
(Go or Python) steals or mirrors it. Whatever tether sets up there must be gone, and the app
serving again within 1 s, when the program closes its listener, when tether ends, and when
tether or its agent is killed mid-load."""
from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import gobuild
import pytest
from hypothesis import given
from hypothesis import strategies as st
from netns import WEB_ADDR, TargetNamespace

from tether.agent import conntrack, nft

TETHER = [sys.executable, "-m", "tether"]
APP_PORT, PY_APP_PORT, FREE_PORT, LOCAL_PORT = 8090, 8091, 8092, 18090
BACK_WITHIN_S = 1.0


@pytest.fixture(scope="module")
def ns(go_versions):
    """The namespace, with a Go app on APP_PORT and python3 -m http.server on PY_APP_PORT."""
    exe = gobuild.build(go_versions[-1], "default", "incoming")
    with TargetNamespace() as target:
        root = target.tmpdir / "www"
        root.mkdir()
        (root / "who").write_text("py-app\n")
        target.popen([str(exe), "serve", f":{APP_PORT}", "app"], stdout=subprocess.DEVNULL)
        target.popen([sys.executable, "-m", "http.server", str(PY_APP_PORT), "-d", str(root)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port, body in ((APP_PORT, "app\n"), (PY_APP_PORT, "py-app\n")):
            wait_for(lambda: get(target, port, "/who" if port == PY_APP_PORT else "/") == body, 10)
        target.exe = exe
        yield target


def wait_for(check, seconds: float, step: float = 0.02) -> float:
    """Seconds until check() is true; fails after `seconds`."""
    start = time.monotonic()
    for _ in range(int(seconds / step) + 1):
        if check():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"not within {seconds} s")


def get(ns, port: int, path: str = "/", timeout: float = 2, header: str = "") -> str | None:
    """A GET from inside the namespace with curl: the body, or None if it failed."""
    r = ns.run(["curl", "-s", "-f", "-m", str(timeout), *(["-H", header] if header else []),
                f"http://{WEB_ADDR}:{port}{path}"], timeout=10)
    return r.stdout if r.returncode == 0 else None


def ruleset(ns) -> str:
    return ns.run(["nft", "list", "ruleset"], check=True).stdout


class Program:
    """`tether exec --target netns:NAME FLAGS -- ARGV` (or another target: target's flags), its
    output read line by line."""

    def __init__(self, ns, argv: list[str], *flags: str, target: tuple[str, ...] = ()):
        target = target or ("--target", f"netns:{ns.name}")
        self.proc = subprocess.Popen([*TETHER, "exec", *target, *flags, "--", *argv],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []

    def line(self, prefix: str, seconds: float = 20) -> str:
        """The first line of output starting with prefix (waiting at most `seconds`)."""
        end = time.monotonic() + seconds
        while not any(line.startswith(prefix) for line in self.lines):
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise AssertionError(f"no {prefix!r} line in {seconds} s; so far {self.lines}; "
                                     f"stderr: {self.stop()[1]}")
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"ended without a {prefix!r} line; {self.lines}; stderr: {self.stop()[1]}")
            self.lines.append(line.rstrip("\n"))
        return next(line for line in self.lines if line.startswith(prefix))

    def agent(self) -> int:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid), "tether-agent"], capture_output=True,
                             text=True).stdout.split()
        assert len(out) == 1, out
        return int(out[0])

    def program(self) -> int:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        return next(int(p) for p in out if int(p) != self.agent())

    def served(self, seconds: float = 10) -> int:
        """The requests the program (tests/go/incoming serve) has served so far: SIGUSR1, and the
        "served N" line it prints for it."""
        before = sum(line.startswith("served ") for line in self.lines)
        os.kill(self.program(), signal.SIGUSR1)
        end = time.monotonic() + seconds
        while sum(line.startswith("served ") for line in self.lines) == before:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise AssertionError(f"no answer to SIGUSR1 in {seconds} s; so far {self.lines}")
            self.lines.append(self.proc.stdout.readline().rstrip("\n"))
        return int(self.lines[-1].split()[1])

    def stop(self, sig: int = signal.SIGTERM) -> tuple[str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        self.lines += out.splitlines()
        return "\n".join(self.lines), err


def go_server(ns, port: int, *flags: str, name: str = "prog", target: tuple[str, ...] = ()) -> Program:
    prog = Program(ns, [str(ns.exe), "serve", f":{port}", name], *flags, target=target)
    prog.line("listening")
    return prog


def test_steal_of_a_free_port_binds_it_in_the_target(ns):
    prog = go_server(ns, FREE_PORT, "--incoming", "steal")
    try:
        assert prog.line("listening") == f"listening [::]:{FREE_PORT}"
        # The client's own address, and the port itself: the socket is the target's.
        assert get(ns, FREE_PORT, "/addr").startswith(f"prog local={WEB_ADDR}:{FREE_PORT} remote={WEB_ADDR}:")
        assert "table inet tether-8092" in ruleset(ns)
    finally:
        out, err = prog.stop()
    assert "served 1" in out, (out, err)
    assert get(ns, FREE_PORT) is None and "tether" not in ruleset(ns)


@pytest.mark.parametrize("program", ["go", "python"])
def test_steal_takes_the_port_from_the_targets_app(ns, program, tmp_path):
    port, body = (APP_PORT, "prog\n") if program == "go" else (PY_APP_PORT, "from the program\n")
    if program == "go":
        prog = go_server(ns, port, "--incoming", "steal")
        assert prog.line("listening") == f"listening [::]:{port}"  # the port it asked for
    else:
        (tmp_path / "who").write_text(body)
        prog = Program(ns, [sys.executable, "-u", "-m", "http.server", str(port), "-d", str(tmp_path)],
                       "--incoming", "steal")
        assert prog.line("Serving HTTP") == f"Serving HTTP on 0.0.0.0 port {port} (http://0.0.0.0:{port}/) ..."
    try:
        path = "/" if program == "go" else "/who"
        assert get(ns, port, path) == body
        if program == "go":
            # accept() gives the client's real address (the redirect keeps it), and the accepted
            # socket's name is the port the client asked for, not the one redirected to.
            assert get(ns, port, "/addr").startswith(f"prog local={WEB_ADDR}:{port} remote={WEB_ADDR}:")
        assert f"tcp dport {port}" in ruleset(ns)
    finally:
        prog.stop()
    assert wait_for(lambda: get(ns, port, path) in ("app\n", "py-app\n"), BACK_WITHIN_S) < BACK_WITHIN_S
    assert "tether" not in ruleset(ns)


def test_a_second_steal_of_a_port_gets_eaddrinuse_and_the_reason(ns):
    first = go_server(ns, APP_PORT, "--incoming", "steal", name="first")
    try:
        second = Program(ns, [str(ns.exe), "serve", f":{APP_PORT}", "second"], "--incoming", "steal")
        assert "address already in use" in second.line("listen error")
        out, err = second.stop()
        assert f"tether: listen on port {APP_PORT}: port {APP_PORT} in the target is already mirrored or stolen " \
               "by another tether session" in err, err
        assert get(ns, APP_PORT) == "first\n"
    finally:
        first.stop()
    assert wait_for(lambda: get(ns, APP_PORT) == "app\n", BACK_WITHIN_S) < BACK_WITHIN_S


def test_port_map_and_port_selection(ns):
    prog = go_server(ns, LOCAL_PORT, "--incoming", "steal", "--port-map", f"{LOCAL_PORT}:{APP_PORT}")
    try:
        assert prog.line("listening") == f"listening [::]:{LOCAL_PORT}"
        assert get(ns, APP_PORT) == "prog\n"
    finally:
        prog.stop()
    for flags in (["--ignore-ports", f"1,{APP_PORT}"], ["--incoming-ports", "1,2"], ["--incoming", "off"]):
        prog = go_server(ns, APP_PORT, "--incoming", "steal", *flags)
        try:
            assert get(ns, APP_PORT) == "app\n" and "tether" not in ruleset(ns), flags
        finally:
            prog.stop()
    # Loopback listeners stay here unless --incoming-loopback.
    prog = Program(ns, [str(ns.exe), "serve", f"127.0.0.1:{APP_PORT}", "prog"], "--incoming", "steal")
    try:
        prog.line("listening")
        assert get(ns, APP_PORT) == "app\n" and "tether" not in ruleset(ns)
    finally:
        prog.stop()


def test_closing_the_listener_gives_the_port_back(ns):
    code = ("import socket, sys\n"
            f"s = socket.create_server(('', {APP_PORT}))\n"
            "print('listening', s.getsockname(), flush=True)\n"
            "sys.stdin.readline(); s.close(); print('closed', flush=True)\n"
            "sys.stdin.readline()\n")
    prog = Program(ns, [sys.executable, "-c", code], "--incoming", "steal")
    try:
        assert prog.line("listening") == f"listening ('0.0.0.0', {APP_PORT})"
        assert get(ns, APP_PORT) is None  # taken, and the program does not answer
        prog.proc.stdin.write("\n")
        prog.proc.stdin.flush()
        prog.line("closed")
        assert wait_for(lambda: get(ns, APP_PORT) == "app\n", BACK_WITHIN_S) < BACK_WITHIN_S
        assert "tether" not in ruleset(ns) and prog.proc.poll() is None
    finally:
        prog.stop()


def load(ns, port: int, seconds: float, conns: int = 32, mode: str = "keepalive") -> subprocess.Popen:
    return ns.popen([str(ns.exe), "load", f"http://{WEB_ADDR}:{port}/", str(conns), str(seconds), mode],
                    stdout=subprocess.PIPE, text=True)


def load_result(client: subprocess.Popen) -> tuple[int, int, str]:
    out = client.communicate(timeout=60)[0].split("\n", 1)
    _, requests, errors, *_ = out[0].split()
    return int(requests), int(errors), out[1]


def check_mirror(ns, prog: Program) -> None:
    """prog mirrors APP_PORT: the app answers every request of a load, the program gets a copy
    of each (held while the load keeps the CPUs busy, then all of them), and the table is gone
    once prog is stopped."""
    try:
        assert get(ns, APP_PORT) == "app\n"  # the app answers: the program's replies go nowhere
        client = load(ns, APP_PORT, 2)
        requests, errors, first = load_result(client)
        assert errors == 0 and requests > 100, first
        # The program got a copy of (nearly) every request (+1: the GET above; up to one per
        # connection more, cut short when the load ended); the client saw only the app's answers.
        wait_for(lambda: prog.served() >= 0.99 * (requests + 1), 30, step=0.2)
    finally:
        out, err = prog.stop()
    served = int(out.split("served ")[-1].split()[0])
    assert 0.99 * (requests + 1) <= served <= requests + 1 + 32, (served, requests, err)
    assert wait_for(lambda: "tether" not in ruleset(ns), BACK_WITHIN_S) < BACK_WITHIN_S


def test_mirror_serves_the_app_and_copies_every_request(ns):
    check_mirror(ns, go_server(ns, APP_PORT))  # mirror: the default


# A client in the target from a port of its own: GET /addr, prints the body.
ADDR_CLIENT = r"""
import socket, sys
host, port, source = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port), timeout=5, source_address=(host, source))
s.sendall(b"GET /addr HTTP/1.0\r\n\r\n")
print(b"".join(iter(lambda: s.recv(4096), b"")).split(b"\r\n\r\n", 1)[1].decode().strip())
"""


def test_a_mirrored_app_sees_its_clients_as_without_tether(ns):
    """A mirror touches nothing on the clients' way to the app: the app sees each client's own
    address and port, over IPv4 and IPv6, the port's table (its lock) holds no rule, and the
    program gets a copy of each request."""
    prog = go_server(ns, APP_PORT)
    try:
        for host, source, shown in ((WEB_ADDR, 40321, f"{WEB_ADDR}:"), ("::1", 40322, "[::1]:")):
            r = ns.run([sys.executable, "-c", ADDR_CLIENT, host, str(APP_PORT), str(source)], timeout=20)
            assert r.stdout.strip() == f"app local={shown}{APP_PORT} remote={shown}{source}", r.stderr
        assert f"table inet tether-{APP_PORT}" in ruleset(ns) and "redirect" not in ruleset(ns)
        wait_for(lambda: prog.served() == 2, 5, step=0.2)
    finally:
        prog.stop()


def check_app_back(ns, client: subprocess.Popen) -> None:
    """Right after tether or its agent was killed mid-load: the app serves its port again and
    the table is gone, each within BACK_WITHIN_S; then the load stops."""
    # Short tries: a connection redirected just before the table went is cut off with it
    # (the kernel drops the NAT bindings of a deleted table's rules) and would only time out.
    back = wait_for(lambda: get(ns, APP_PORT, timeout=0.2) == "app\n", BACK_WITHIN_S)
    assert back < BACK_WITHIN_S
    assert wait_for(lambda: "tether" not in ruleset(ns), BACK_WITHIN_S) < BACK_WITHIN_S
    client.kill()
    client.wait(timeout=10)


@pytest.mark.parametrize("mode", ["steal", "mirror", "filtered"])
@pytest.mark.parametrize("victim", ["tether", "agent"])
def test_sigkill_mid_load_leaves_the_target_serving(ns, victim, mode):
    flags = ["--steal-path", "^/"] if mode == "filtered" else ["--incoming", mode]
    prog = go_server(ns, APP_PORT, *flags)
    orphan = None
    try:
        client = load(ns, APP_PORT, 30)
        time.sleep(1)
        orphan = prog.program()
        os.kill(prog.agent() if victim == "agent" else prog.proc.pid, signal.SIGKILL)
        check_app_back(ns, client)
    finally:
        if orphan:
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
        prog.stop(signal.SIGKILL)
    assert get(ns, APP_PORT) == "app\n"



# A client in the target from a given port: a GET on a keep-alive connection, its answer's body
# printed; the connection closed when a line comes on stdin.
GET_FROM_PORT = r"""
import socket, sys
host, port, source = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.settimeout(5)
s.bind((host, source))
s.connect((host, port))
s.sendall(b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
print(s.recv(4096).split(b"\r\n\r\n", 1)[1].decode().strip(), flush=True)
sys.stdin.readline()
s.close()
"""


STEAL, FILTERED = ("--incoming", "steal"), ("--steal-path", "^/")


@pytest.mark.parametrize("flags, then", [(STEAL, FILTERED), (FILTERED, STEAL)], ids=["steal", "filtered"])
def test_connections_a_killed_agent_redirected_do_not_refuse_the_next_sessions(ns, flags, then):
    """The agent and then the program killed while a redirected connection is open: the kernel
    keeps its conntrack entry, bound to a port nothing listens on. The next session on the port
    (a steal after a filtered steal, or the other way) clears it, so a client that reuses its
    address pair reaches the new program (without that: refused, by the old binding)."""
    source = 40333
    first = go_server(ns, APP_PORT, *flags, name="first")
    orphan, second = first.program(), None
    try:
        client = ns.popen([sys.executable, "-c", GET_FROM_PORT, WEB_ADDR, str(APP_PORT), str(source)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert client.stdout.readline().strip() == "first"
        os.kill(first.agent(), signal.SIGKILL)
        assert wait_for(lambda: "tether" not in ruleset(ns), BACK_WITHIN_S) < BACK_WITHIN_S
        os.kill(orphan, signal.SIGKILL)
        client.communicate("\n", timeout=10)
        entry = ["conntrack", "-L", "-p", "tcp", "--sport", str(source), "--dport", str(APP_PORT)]
        left = ns.run(entry).stdout
        # Still there (ESTABLISHED, or FIN_WAIT if the relay's end was seen), bound to the dead port.
        assert left and f"sport={APP_PORT} " not in left and "TIME_WAIT" not in left, left
        second = go_server(ns, APP_PORT, *then, name="second")
        assert ns.run(entry).stdout == ""  # cleared before the second session's redirect
        r = ns.run([sys.executable, "-c", GET_FROM_PORT, WEB_ADDR, str(APP_PORT), str(source)], input="\n",
                   timeout=20)
        assert r.stdout.strip() == "second", r.stderr
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(orphan, signal.SIGKILL)
        first.stop(signal.SIGKILL)
        if second:
            second.stop()


# A client in the target: one keep-alive connection, requests with and without the header the
# filter steals on, first one at a time, then pipelined in one write; prints each answer's body.
KEEPALIVE_CLIENT = r"""
import re, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
def req(path, mine):
    return (f"GET {path} HTTP/1.1\r\nHost: svc\r\n" + ("X-Route: me\r\n" if mine else "") + "\r\n").encode()
s = socket.create_connection((host, port), timeout=5)
f = s.makefile("rb")
def answer():
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += f.readline()
    n = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    return f.read(n).decode().strip()
order = [False, True, True, False, True, False]
for mine in order:
    s.sendall(req("/", mine))
    print("one", answer())
s.sendall(b"".join(req("/", mine) for mine in order))
for _ in order:
    print("pipelined", answer())
s.sendall(req("/upgrade", True).replace(b"\r\n\r\n", b"\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"))
head = b""
while not head.endswith(b"\r\n\r\n"):
    head += f.readline()
print("upgrade", head.split(b"\r\n")[0].decode())
s.sendall(b"hello\n")
print("raw", f.readline().decode().strip())
"""


def test_filtered_steal_splits_a_keep_alive_connection_and_hands_over_an_upgrade(ns):
    prog = go_server(ns, APP_PORT, "--steal-header", "^X-Route: me$")  # implies --incoming steal
    try:
        r = ns.run([sys.executable, "-c", KEEPALIVE_CLIENT, WEB_ADDR, str(APP_PORT)], timeout=30)
        assert r.returncode == 0, r.stderr
        want = ["app", "prog", "prog", "app", "prog", "app"]
        assert r.stdout.split("\n")[:12] == [f"one {w}" for w in want] + [f"pipelined {w}" for w in want]
        assert "upgrade HTTP/1.1 101 Switching Protocols" in r.stdout and "raw prog hello" in r.stdout
        assert get(ns, APP_PORT) == "app\n"  # curl sends no X-Route
        assert f"tcp dport {APP_PORT}" in ruleset(ns) and "ct label set 81" in ruleset(ns)
    finally:
        out, err = prog.stop()
    assert "served 7" in out, (out, err)  # 3 one at a time, 3 pipelined and the upgrade
    assert wait_for(lambda: "tether" not in ruleset(ns), BACK_WITHIN_S) < BACK_WITHIN_S


def test_filtered_steal_by_path_and_method_with_a_python_program(ns, tmp_path):
    (tmp_path / "api").mkdir()
    (tmp_path / "api" / "who").write_text("from the program\n")
    prog = Program(ns, [sys.executable, "-u", "-m", "http.server", str(PY_APP_PORT), "-d", str(tmp_path)],
                   "--steal-path", "^/api/", "--steal-method", "GET,HEAD")
    try:
        prog.line("Serving HTTP")
        assert get(ns, PY_APP_PORT, "/api/who") == "from the program\n"
        assert get(ns, PY_APP_PORT, "/who") == "py-app\n"
        head = ns.run(["curl", "-s", "-I", "-m", "2", f"http://{WEB_ADDR}:{PY_APP_PORT}/api/who"])
        assert head.stdout.startswith("HTTP/1.0 200") and "Content-Length: 17" in head.stdout, head.stdout
    finally:
        prog.stop()


def test_filtered_steal_passes_what_is_not_http_to_the_app_and_says_so(ns):
    prog = go_server(ns, APP_PORT, "--steal-header", "^X-Route: me$")
    try:
        code = ("import socket, sys\n"
                "s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)\n"
                "s.sendall(bytes.fromhex('160301') + b'\\x00\\x05hello\\r\\n\\r\\n')\n"
                "print(s.recv(100).split(b'\\r\\n')[0].decode())\n")
        r = ns.run([sys.executable, "-c", code, WEB_ADDR, str(APP_PORT)], timeout=30)
        assert r.stdout.strip() == "HTTP/1.1 400 Bad Request", r  # the app's own answer to it
        assert get(ns, APP_PORT) == "app\n"  # the port still works for others
    finally:
        out, err = prog.stop()
    assert "not HTTP/1.1" in err and "goes to the target's app as it is" in err, err


def test_filtered_steal_after_the_program_closes_its_listener_serves_from_the_app(ns):
    code = ("import socket, sys\n"
            f"s = socket.create_server(('', {APP_PORT}))\n"
            "print('listening', flush=True)\n"
            "sys.stdin.readline(); s.close(); print('closed', flush=True)\n"
            "sys.stdin.readline()\n")
    prog = Program(ns, [sys.executable, "-c", code], "--steal-path", "^/")
    try:
        prog.line("listening")
        prog.proc.stdin.write("\n")
        prog.proc.stdin.flush()
        prog.line("closed")
        assert wait_for(lambda: get(ns, APP_PORT) == "app\n", BACK_WITHIN_S) < BACK_WITHIN_S
        assert "tether" not in ruleset(ns)
    finally:
        prog.stop()


@given(st.binary(max_size=200))
def test_netlink_ack_parser_survives_garbage(blob):
    try:
        acks = nft.parse_acks(blob)
    except nft.NftError as e:
        assert "\n" not in str(e)
    else:
        assert all(0 <= seq < 2**32 for seq, _ in acks)


@given(st.binary(max_size=300))
def test_conntrack_dump_parser_survives_garbage(blob):
    try:
        entries, _, err = conntrack.parse_entries(blob)
    except nft.NftError as e:
        assert "\n" not in str(e)
    else:
        assert abs(err) <= 2**31 and all(conntrack.labels(e) >= 0 for e in entries)


def test_settings_mistakes_are_usage_errors(tmp_path):
    token = tmp_path / "agent.token"
    subprocess.run([*TETHER, "agent", "--new-token", str(token)], check=True, capture_output=True)
    # A unix: target is not reached before the settings are read: their errors come first.
    target = ["exec", "-t", f"unix:{tmp_path}/none.sock", "--token-file", str(token)]
    for flags, message in ((["--incoming-ports", "80", "--ignore-ports", "81"], "exclude each other"),
                           (["--port-map", "8080"], "give LOCAL:REMOTE"),
                           (["--incoming-ports", "http"], "'http' is not a port number"),
                           (["--incoming", "stael"], "invalid choice: 'stael'"),
                           (["--steal-path", "(", "--incoming", "steal"], "--steal-path '(': not a regular expression"),
                           (["--steal-header", "^X: 1", "--incoming", "mirror"], "cannot be used with --incoming mirror"),
                           (["--steal-method", "G T"], "'G T': not an HTTP method")):
        r = subprocess.run([*TETHER, *target, *flags, "--", "true"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and message in r.stderr, (flags, r.stderr)
    (tmp_path / "tether.toml").write_text('incoming = "stael"\n')
    r = subprocess.run([*TETHER, *target, "--", "true"], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode == 2 and "incoming must be one of mirror, steal, off" in r.stderr, r.stderr


def test_filtered_steals_of_one_port_by_two_sessions_coexist(ns):
    a = go_server(ns, APP_PORT, "--steal-header", "^X-Route: a$", name="a")
    b = go_server(ns, APP_PORT, "--steal-header", "^X-Route: b$", name="b")
    whole = None
    try:
        for route, body in (("a", "a\n"), ("b", "b\n"), ("c", "app\n")):
            assert get(ns, APP_PORT, header=f"X-Route: {route}") == body, route
        assert "tether-8090-filter-1" in ruleset(ns) and "tether-8090-filter-2" in ruleset(ns)
        # The whole port cannot be taken while they filter it.
        whole = Program(ns, [str(ns.exe), "serve", f":{APP_PORT}", "whole"], "--incoming", "steal")
        assert "address already in use" in whole.line("listen error")
        assert "has filtered steals of other tether sessions" in whole.stop()[1]
        a.stop()
        # The first gone, the second still gets its requests; the first's go to the app again.
        for route, body in (("a", "app\n"), ("b", "b\n")):
            assert get(ns, APP_PORT, header=f"X-Route: {route}") == body, route
    finally:
        for prog in (a, b, whole):
            if prog:
                prog.stop()
    assert wait_for(lambda: "tether" not in ruleset(ns), BACK_WITHIN_S) < BACK_WITHIN_S


def test_a_filtered_steal_of_a_port_stolen_whole_is_refused(ns):
    whole = go_server(ns, APP_PORT, "--incoming", "steal", name="whole")
    try:
        filtered = Program(ns, [str(ns.exe), "serve", f":{APP_PORT}", "f"], "--steal-path", "^/")
        assert "address already in use" in filtered.line("listen error")
        assert "is mirrored or stolen whole by another tether session" in filtered.stop()[1]
        assert get(ns, APP_PORT) == "whole\n"
    finally:
        whole.stop()
