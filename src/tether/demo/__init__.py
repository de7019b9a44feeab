"""`tether demo`: a throwaway target namespace, a client run under `tether exec`, narrated.

The client is Go when a Go toolchain is at hand (`go` on PATH, Debian's golang-1.19-go, or
TETHER_DEMO_GO), else Python: both kinds of program are hooked, Go's syscalls and libc's.

The namespace holds what exists only there: an address with an HTTP service, a host name in
its own hosts file, and an environment variable. Everything made is removed at the end, also
after a failure or ^C.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ADDR, PORT = "198.18.0.1", 8080  # 198.18.0.0/15: benchmarking space, unused on real networks
NAME = "api.demo.internal"
GREETING = "hello from the target's environment"
SERVER = '''
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from a service that lives only in namespace " + sys.argv[1].encode() + b"\\n"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])), H).serve_forever()
'''


class DemoError(Exception):
    pass


def find_go() -> str | None:
    """The go command the demo builds its client with, or None."""
    chosen = os.environ.get("TETHER_DEMO_GO")
    if chosen:
        if not (Path(chosen).is_file() and os.access(chosen, os.X_OK)):
            raise DemoError(f"TETHER_DEMO_GO={chosen} is not an executable go command")
        return chosen
    for candidate in (shutil.which("go"), "/usr/lib/go-1.19/bin/go"):  # the latter: Debian's golang-1.19-go
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _run(*argv: str) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if r.returncode:
        raise DemoError(f"{' '.join(argv)}: {r.stderr.strip()}")


def _build_client(go: str, workdir: Path) -> Path:
    src = workdir / "client"
    src.mkdir()
    shutil.copy(Path(__file__).with_name("client.go"), src / "main.go")
    (src / "go.mod").write_text("module tether.demo/client\n\ngo 1.19\n")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOPROXY": "off", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "1"}
    r = subprocess.run([go, "build", "-o", str(workdir / "demo-client"), "."], cwd=src, env=env,
                       capture_output=True, text=True, timeout=300)
    if r.returncode:
        raise DemoError(f"building the Go client failed: {r.stderr.strip()}")
    return workdir / "demo-client"


def run(say, client: str = "auto") -> int:
    """The demo; say(text) prints one narrated line. client: go, python or auto (Go when a
    toolchain is found). Returns the exit status."""
    if os.geteuid() != 0:
        say("the demo makes a network namespace, which needs root: run `sudo tether demo`")
        return 2
    if not shutil.which("ip"):
        say("the demo needs the `ip` command (Debian/Ubuntu: apt install iproute2)")
        return 2
    go = find_go() if client != "python" else None
    if client == "go" and go is None:
        say("--client go: no Go toolchain was found (`go` on PATH, or TETHER_DEMO_GO=/path/to/go)")
        return 2
    ns = f"tether-demo-{os.getpid()}"
    etc = Path("/etc/netns") / ns
    workdir = Path(tempfile.mkdtemp(prefix="tether-demo-"))
    server = None
    made_ns = made_route = False
    try:
        if go:
            say(f"building a small Go client with {go} ...")
            argv = [str(_build_client(go, workdir))]
        else:
            say("no Go toolchain here: the client is a Python program (its libc calls are hooked)")
            argv = [sys.executable, "-I", str(Path(__file__).with_name("client.py"))]
        # While the demo runs, this machine refuses the demo's address outright: a connection
        # tether failed to send to the target fails at once instead of leaving the machine.
        if not subprocess.run(["ip", "route", "show", f"{ADDR}/32"], capture_output=True, text=True).stdout.strip():
            _run("ip", "route", "add", "unreachable", f"{ADDR}/32")
            made_route = True
        _run("ip", "netns", "add", ns)
        made_ns = True
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "addr", "add", f"{ADDR}/32", "dev", "lo")
        etc.mkdir(parents=True)
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{ADDR}\t{NAME}\n")
        (etc / "nsswitch.conf").write_text("hosts: files dns\n")
        (etc / "environment").write_text(f'DEMO_GREETING="{GREETING}"\n')
        (workdir / "server.py").write_text(SERVER)
        server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-I", str(workdir / "server.py"),
                                   ns, ADDR, str(PORT)], stdin=subprocess.DEVNULL, start_new_session=True)
        _wait_for_server(ns)
        say(f"made namespace {ns}: {ADDR}:{PORT} serves HTTP there only, its hosts file names it "
            f"{NAME}, its environment sets DEMO_GREETING; this machine has none of them")
        url = f"http://{NAME}:{PORT}/"
        say(f"running: tether exec --target netns:{ns} -- {'demo-client' if go else 'python3 client.py'} {url}")
        start = time.monotonic()
        # The demo's own settings only: no tether.toml or TETHER_* variable of the user's applies.
        env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
        r = subprocess.run([sys.executable, "-m", "tether", "exec", "--config", os.devnull, "--target",
                            f"netns:{ns}", "--", *argv, url], capture_output=True, text=True, timeout=60, env=env)
        took = time.monotonic() - start
        lines = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
        if r.returncode or "get" not in lines:
            raise DemoError(f"the client failed ({r.returncode}): {r.stdout.strip()} {r.stderr.strip()}")
        say(f"  the name {NAME} resolved in the target (its hosts file), and GET {url} answered: "
            f"{lines['get']}")
        say(f"  the environment came from the target: DEMO_GREETING={lines.get('env', '')!r}")
        say(f"  each connect was made inside the namespace and the socket handed to the client: "
            f"p50 {lines.get('connect_p50_us', '?')} us per connect; the data then flows at native "
            f"speed, no relay")
        say(f"  the whole run, tether and agent start-up included, took {took * 1000:.0f} ms")
        return 0
    finally:
        if server is not None:
            server.kill()
            server.wait()
        if made_ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if made_route:
            subprocess.run(["ip", "route", "del", "unreachable", f"{ADDR}/32"], capture_output=True)
        shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
        say(f"removed namespace {ns} and everything the demo made")


def _wait_for_server(ns: str) -> None:
    probe = (f"import socket,time\nfor _ in range(500):\n try: socket.create_connection(('{ADDR}',{PORT}),1).close();"
             f" break\n except OSError: time.sleep(0.01)\nelse: raise SystemExit(1)")
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-I", "-c", probe], capture_output=True, timeout=30)
    if r.returncode:
        raise DemoError("the demo's HTTP server did not start in the namespace")
