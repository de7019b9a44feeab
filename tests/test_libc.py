"""Programs that use libc under `tether trace`: a C program, a Python script and curl. Their
libc calls reach the same dispatcher as Go's syscalls (layer/libc/*.c), the trace shows the
right calls with the right arguments and results, and the program's output is unchanged."""
from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading

import gobuild
import pytest
from test_trace import TETHER, calls, native, trace

FORTIFIED = ("-O2", "-Wall", "-Wextra", "-D_FORTIFY_SOURCE=2", "-pthread")  # as distributions build
STRESS_SECONDS = float(os.environ.get("TETHER_LIBC_STRESS_SECONDS", "5"))


@pytest.fixture(scope="module")
def probe():
    return gobuild.build_c("libc_probe", FORTIFIED)


def test_c_program_sockets(probe, tmp_path):
    proc, events = trace(probe, "net", tmp=tmp_path)
    ref = native(probe, "net")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, ref.stdout, ref.stderr) == (
        0, b"tcp ping\nudp pong\nlookup localhost 127.0.0.1:80\n", b"")
    assert [e["args"][:3] for e in calls(events, "socket")] == [["AF_INET", "SOCK_STREAM", "0"]] * 2 + [
        ["AF_INET", "SOCK_DGRAM", "0"]]  # server, client, udp
    binds = calls(events, "bind")
    assert [(b["args"][1], b["ret"]) for b in binds] == [("{AF_INET, 127.0.0.1:0}", 0)] * 2
    port = calls(events, "getsockname")[0]["args"][1]
    connect = calls(events, "connect")
    assert [(c["args"][1], c["ret"]) for c in connect] == [(port, 0)]
    assert calls(events, "listen")[0]["args"][:2] == ["3", "4"]
    assert calls(events, "accept4")[0]["ret"] >= 3
    # send/recv are sendto/recvfrom without an address, as glibc makes them.
    assert [e["ret"] for e in calls(events, "sendto")] == [4, 4]
    assert [e["ret"] for e in calls(events, "recvfrom")] == [4, 4]
    assert calls(events, "sendto")[1]["args"][4].startswith("{AF_INET, 127.0.0.1:")
    assert calls(events, "getpeername")[0]["args"][1] == port
    assert [e["args"][1] for e in calls(events, "shutdown")] == ["1"]
    assert calls(events, "read")[-1]["ret"] == 0  # the peer's end of stream, through __read_chk
    assert len([e for e in calls(events, "close") if e["ret"] == 0]) >= 4



def test_syscalls_by_number_are_traced_and_io_uring_left_alone(probe, tmp_path):
    """libc's syscall() goes through the dispatcher like the wrappers; tracing alone changes
    nothing, so io_uring_setup is refused only under a target (test_exec.py), not here."""
    with socket.socket() as s:  # a port nobody listens on: the connect is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc, events = trace(probe, "rawsys", "127.0.0.1", str(port), tmp=tmp_path)
    ref = native(probe, "rawsys", "127.0.0.1", str(port))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, ref.stdout, ref.stderr)
    if ref.stdout.endswith(b"io_uring error: Operation not permitted\n"):
        pytest.skip("io_uring is disabled on this machine (sysctl kernel.io_uring_disabled)")
    assert proc.stdout == b"connect error: Connection refused\nio_uring ok\n"
    assert [e["args"][:3] for e in calls(events, "socket")] == [["AF_INET", "SOCK_STREAM", "0"]]
    assert [(e["args"][1], e["errno"]) for e in calls(events, "connect")] == [
        (f"{{AF_INET, 127.0.0.1:{port}}}", "ECONNREFUSED")]
    assert [e["ret"] >= 3 for e in calls(events, "io_uring_setup")] == [True]

def test_c_program_files(probe, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc, events = trace(probe, "files", str(work), tmp=tmp_path)
    ref = native(probe, "files", str(work))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, ref.stdout, ref.stderr)
    assert proc.stdout == b"file cd!abcd 6\nentries 2\nfiles ok\n"
    mine = [e for e in events if any(str(work) in str(a) for a in e["args"])]
    probe_txt = f'"{work}/probe.txt"'
    opened = [e for e in calls(mine, "openat") if e["args"][1] == probe_txt]
    assert [e["args"][2] for e in opened] == ["O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC", "O_RDONLY",
                                              "O_RDWR|O_CREAT|O_APPEND", "O_RDONLY"]  # open, open, fopen, freopen
    assert all(e["ret"] >= 3 for e in opened)
    assert [e["ret"] for e in calls(events, "writev")] == [4]
    assert [(e["args"][3], e["ret"]) for e in calls(events, "pwrite64")] == [("4", 2)]
    assert [(e["args"][3], e["ret"]) for e in calls(events, "pread64")] == [("2", 3)]
    assert calls(events, "dup") and calls(events, "dup2") and calls(events, "fcntl")
    stats = [(e["args"][3], e["ret"], e["errno"]) for e in calls(mine, "newfstatat")]
    assert stats == [("0", 0, None), ("0x100", 0, None), ("0", -1, "ENOENT")]  # stat, lstat, moved away
    assert [e["ret"] for e in calls(mine, "access")] == [0]
    assert [e["args"] for e in calls(mine, "rename")] == [[probe_txt, f'"{work}/moved.txt"']]
    assert [e["args"][0] for e in calls(mine, "mkdir")] == [f'"{work}/sub"']
    assert [e["args"][2] for e in calls(mine, "openat") if e["args"][1] == f'"{work}"'] == [
        "O_RDONLY|O_NONBLOCK|O_DIRECTORY|O_CLOEXEC"]  # opendir
    assert [e["ret"] for e in calls(mine, "unlink") + calls(mine, "rmdir")] == [0, 0]
    assert not list(work.iterdir())


def test_c_program_fork_and_exec(probe, tmp_path):
    """fork is reported in parent and child; execlp searches PATH with traced execve calls
    (misses fail with ENOENT, the hit is ret 0: the new image's layer said hello); children
    given an environment without the layer (execle, posix_spawnp) are still hooked."""
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    proc, events = trace(probe, "spawn", tmp=tmp_path, env=env)
    ref = subprocess.run([str(probe), "spawn"], capture_output=True, timeout=60, env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, ref.stdout, ref.stderr)
    assert proc.stdout == b"from-child\necho exited 0\nsh exited 7\nsh exited 9\nspawned sh exited 5\n"
    forks = calls(events, "fork")
    parent = next(e["pid"] for e in forks if e["ret"] > 0)  # a child may report before its parent
    children = [e["ret"] for e in forks if e["pid"] == parent]
    assert len(children) == 3 and all(c > 0 for c in children)
    assert sorted(e["pid"] for e in forks if e["ret"] == 0) == sorted(children)  # each child's own line
    echo = [(e["args"][0], e["errno"]) for e in calls(events, "execve", children[0])]
    assert echo == [(f'"{tmp_path}/echo"', "ENOENT"), ('"/usr/bin/echo"', None)]
    for child in children[1:]:  # execle (its envp read past the list's NULL) and execv
        assert [(e["args"][0], e["ret"]) for e in calls(events, "execve", child)] == [('"/bin/sh"', 0)]
    # posix_spawnp execs inside glibc: reported as the child's, settled by its hooked image.
    spawned = [e for e in calls(events, "execve") if e["args"][0] == '"sh"']
    assert len(spawned) == 1 and spawned[0]["ret"] == 0 and spawned[0]["pid"] not in (parent, *children)
    missing = [e for e in calls(events, "execve", parent) if "no-such-program-here" in e["args"][0]]
    assert len(missing) == 3 and all(e["errno"] == "ENOENT" for e in missing)  # one per PATH entry


def test_a_program_taking_the_layers_descriptor_numbers(probe, tmp_path):
    """dup2 onto every number from 700 (where the layer keeps its session socket): the layer
    moves its socket away first, so the trace goes on and nothing of it reaches the program."""
    proc, events = trace(probe, "dupover", str(tmp_path), tmp=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"dupover ok\n", b"")
    assert [e["ret"] for e in calls(events, "dup2")] == list(range(700, 764))
    assert [e["ret"] for e in calls(events, "unlink")] == [0]  # reported after all the dup2s


PY_SCRIPT = r'''
import http.server, os, socket, subprocess, sys, threading, urllib.request
d = sys.argv[1]
with open(os.path.join(d, "f.txt"), "w") as f:
    f.write("hello")
print(sorted(os.listdir(d)), os.stat(os.path.join(d, "f.txt")).st_size)
handler = type("H", (http.server.BaseHTTPRequestHandler,), {
    "do_GET": lambda self: (self.send_response(200), self.end_headers(), self.wfile.write(b"ok")),
    "log_message": lambda *a: None})
srv = http.server.HTTPServer(("127.0.0.1", 0), handler)
threading.Thread(target=srv.serve_forever, daemon=True).start()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
print(opener.open(f"http://127.0.0.1:{srv.server_port}/", timeout=5).read().decode())
print(subprocess.run(["/bin/echo", "child"], capture_output=True, text=True).stdout.strip())
os.unlink(os.path.join(d, "f.txt"))
'''


def test_python_script(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    argv = [sys.executable, "-I", "-c", PY_SCRIPT, str(work)]
    proc, events = trace(*argv, tmp=tmp_path)
    ref = native(*argv)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, ref.stdout, ref.stderr)
    assert proc.stdout == b"['f.txt'] 5\nok\nchild\n"
    f_txt = f'"{work}/f.txt"'
    assert any(e["args"][1] == f_txt and "O_CREAT" in e["args"][2] and e["ret"] >= 3 for e in calls(events, "openat"))
    assert any(e["args"][1] == f'"{work}"' and "O_DIRECTORY" in e["args"][2] for e in calls(events, "openat"))
    assert any(e["args"][1] == f_txt and e["ret"] == 0 for e in calls(events, "newfstatat"))
    port = next(e["args"][1] for e in calls(events, "getsockname") if e["args"][1].startswith("{AF_INET, 127"))
    # urllib with a timeout connects non-blocking: EINPROGRESS, then poll.
    assert [(e["args"][1], e["errno"]) for e in calls(events, "connect")] in ([(port, None)], [(port, "EINPROGRESS")])
    assert calls(events, "accept4") and any(e["ret"] == 5 for e in calls(events, "write") + calls(events, "sendto"))
    assert [(e["args"][0], e["ret"]) for e in calls(events, "unlink")] == [(f_txt, 0)]
    # subprocess: the child's execve (_posixsubprocess calls execve/execv) runs /bin/echo.
    python = next(e["pid"] for e in calls(events, "unlink"))
    assert [(e["args"][0], e["ret"]) for e in calls(events, "execve") if e["pid"] != python] == [('"/bin/echo"', 0)]


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from loopback\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_curl_against_a_loopback_server(tmp_path):
    curl = shutil.which("curl")
    assert curl, "curl is missing: .ci/run installs it (apt install curl)"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        argv = [curl, "-sS", "--noproxy", "*", "-m", "10", f"http://127.0.0.1:{server.server_port}/"]
        proc, events = trace(*argv, tmp=tmp_path)
        ref = native(*argv)
    finally:
        server.shutdown()
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, ref.stdout, ref.stderr) == (0, b"hello from loopback\n", b"")
    target = f"{{AF_INET, 127.0.0.1:{server.server_port}}}"
    connects = [e for e in calls(events, "connect") if e["args"][1] == target]
    assert connects and connects[0]["errno"] in (None, "EINPROGRESS")  # curl connects non-blocking
    assert any(e["ret"] > 0 for e in calls(events, "sendto") + calls(events, "write"))
    assert any(e["ret"] > 0 for e in calls(events, "recvfrom") + calls(events, "read"))


@pytest.mark.parametrize("how", ["layer", "trace"])
def test_threads_hammering_hooked_calls(probe, how, tmp_path):
    """16 threads doing socketpair/read/write/open/fstat/dup/stat/close for STRESS_SECONDS (30 in
    CI's slow step): no crash, no deadlock, every call right (the program checks each)."""
    from tether.layer import preload_env

    argv = [str(probe), "threads", "16", str(STRESS_SECONDS)]
    if how == "trace":
        proc = subprocess.run([*TETHER, "trace", "-o", os.devnull, "--", *argv], capture_output=True,
                              timeout=STRESS_SECONDS + 120)
    else:
        proc = subprocess.run(argv, env=preload_env(os.environ), capture_output=True, timeout=STRESS_SECONDS + 60)
    assert (proc.returncode, proc.stdout) == (0, b"threads 16 ok\n"), proc.stderr
