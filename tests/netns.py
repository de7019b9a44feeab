#!/usr/bin/env python3
"""A throwaway target network namespace for `tether exec --target netns:NAME` tests.

    from netns import target_ns  # noqa: F401   (module-scoped pytest fixture)

    def test_something(target_ns):
        target_ns.name                    # "tether-test-<pid>-<n>", in `ip netns list`
        target_ns.run(["getent", "hosts", netns.DNS_NAME])   # ip netns exec NAME ...
        target_ns.popen([...])            # a child in the namespace, killed on exit
        target_ns.target_env              # env for an agent started in the namespace

    with TargetNamespace(veth=True) as ns:   # the same, as a context manager
        ns.veth_ns_addr                      # 198.19.0.2: reachable from the host

What the namespace holds, and why the host cannot see it:

- `lo` up with 198.18.0.1/32 and 198.18.0.53/32 (WEB_ADDR, DNS_ADDR);
- an HTTP server on 198.18.0.1:8080 answering `GET /` with `hello from netns NAME\\n`;
- a UDP echo server on 198.18.0.1:9999 replying `echo:` + datagram;
- dnsmasq on 198.18.0.53:53 only, answering `only-in-netns.test` (and subdomains) with
  198.18.0.1 (AAAA: NODATA) and every other name with NXDOMAIN (no upstream, no forwarding);
- /etc/netns/NAME/resolv.conf (`nameserver 198.18.0.53`), /etc/netns/NAME/hosts
  (`198.18.0.1 web.only-in-netns.test` and localhost), nsswitch.conf (`hosts: files dns`) and
  environment (`environment` below), which `ip netns exec` bind-mounts over their /etc
  twins for the processes it starts;
- with `veth=True`, a veth pair: host side 198.19.0.1/30, namespace side 198.19.0.2/30 (the
  next free /30 in 198.19.0.0/22 if a parallel run holds that one).

While any namespace of this module exists, the host has `unreachable 198.18.0.0/15` in its
main routing table, so a connection that tether failed to redirect gets EHOSTUNREACH at once
and no packet for a test address ever leaves the machine. The route is added only if absent,
shared by parallel runs through a lock and one holder file per namespace under
/run/tether-test/, and removed by the last holder only if one of them added it.

Everything is undone on exit, also when set-up fails. A run that died (SIGKILL, power cut of
the test process) leaves a namespace named after its dead pid: every new TargetNamespace (and
`python3 tests/netns.py cleanup`) removes those first. Services also get PR_SET_PDEATHSIG, so
they die with the test process.

Needs root (CI runs as root) and dnsmasq; `python3 tests/netns.py install-deps` installs the
Debian package dnsmasq-base if it is missing (the fixture does the same on first use).
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Self

import pytest

NAME_PREFIX = "tether-test-"
NAME_RE = re.compile(r"^tether-test-(\d+)-(\d+)$")
TMP_RE = re.compile(r"^tether-test-(\d+)-(\d+)-")

HOST_ROUTE = "198.18.0.0/15"
WEB_ADDR = "198.18.0.1"
DNS_ADDR = "198.18.0.53"
HTTP_PORT = 8080
UDP_PORT = 9999
DNS_NAME = "only-in-netns.test"          # only dnsmasq in the namespace knows it
HOSTS_NAME = "web.only-in-netns.test"    # only the namespace's hosts file lists it
VETH_PREFIX_LEN = 30
VETH_SLOTS = 256                          # 198.19.0.0/22 in /30 slots; slot 0 = .1 host, .2 ns
VETH_NS_IFNAME = "veth0"

STATE_DIR = Path("/run/tether-test")
LOCK_FILE = STATE_DIR / "lock"
HOLDERS_DIR = STATE_DIR / "holders"
ROUTE_MARKER = STATE_DIR / "route-added"          # a run of this module added HOST_ROUTE
ETC_NETNS_MARKER = STATE_DIR / "etc-netns-added"  # a run of this module created /etc/netns
ETC_NETNS = Path("/etc/netns")
RUN_NETNS = Path("/run/netns")

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY_TIMEOUT = 10.0
LOCK_TIMEOUT = 60.0
STOP_GRACE = 3.0

_counter = itertools.count()


class NetnsError(RuntimeError):
    """The namespace could not be set up or torn down; the message says what and why."""


# ---------------------------------------------------------------------------------------------
# Requirements


def require_root() -> None:
    if os.geteuid() != 0:
        raise NetnsError(
            "tests/netns.py needs root: it creates network namespaces, a host route and "
            "/etc/netns/NAME (run the tests as root, as CI does)")


def _which(prog: str) -> str | None:
    return shutil.which(prog, path=f"{os.environ.get('PATH', '')}:{SBIN_PATH}")


def ip_binary() -> str:
    path = _which("ip")
    if not path:
        raise NetnsError("`ip` (iproute2) is not installed: apt-get install -y iproute2")
    return path


def find_dnsmasq() -> str | None:
    return _which("dnsmasq")


def ensure_dnsmasq(*, timeout: float = 900.0) -> str:
    """Path of dnsmasq; installs Debian's dnsmasq-base with apt-get if it is missing.

    Raises NetnsError naming the failed command and its output if apt-get fails (no skip).
    """
    path = find_dnsmasq()
    if path:
        return path
    if not _which("apt-get"):
        raise NetnsError("dnsmasq is missing and there is no apt-get to install it: "
                         "install dnsmasq (Debian package dnsmasq-base) by hand")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "dnsmasq-base"]):
        print(f"netns: dnsmasq missing, running {' '.join(cmd)}", file=sys.stderr, flush=True)
        try:
            proc = subprocess.run(cmd, check=False, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise NetnsError(f"installing dnsmasq-base failed: `{' '.join(cmd)}`: {e}") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise NetnsError(f"installing dnsmasq-base failed: `{' '.join(cmd)}` exited "
                             f"{proc.returncode}:\n{tail}\nInstall it by hand: "
                             "apt-get install -y dnsmasq-base")
    path = find_dnsmasq()
    if not path:
        raise NetnsError("apt-get installed dnsmasq-base but no dnsmasq is on PATH or in /usr/sbin")
    return path


# ---------------------------------------------------------------------------------------------
# Small helpers


def _ip(*args: str, check: bool = True, timeout: float = 10.0) -> subprocess.CompletedProcess:
    cmd = [ip_binary(), *args]
    try:
        proc = subprocess.run(cmd, check=False, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise NetnsError(f"`{' '.join(cmd)}` did not finish in {timeout} s") from None
    if check and proc.returncode != 0:
        raise NetnsError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def list_namespaces() -> list[str]:
    out = _ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(name: str) -> list[int]:
    proc = _ip("netns", "pids", name, check=False)
    return [int(tok) for tok in proc.stdout.split() if tok.isdigit()] if proc.returncode == 0 else []


def host_route_state() -> str:
    """'absent', 'unreachable' (our kind of route is there) or 'other' (some other route)."""
    routes = json.loads(_ip("-j", "route", "show", "exact", HOST_ROUTE).stdout or "[]")
    if not routes:
        return "absent"
    if any(r.get("type") == "unreachable" for r in routes):
        return "unreachable"
    return "other"


def link_exists(ifname: str) -> bool:
    return _ip("link", "show", "dev", ifname, check=False).returncode == 0


def _pid_start_time(pid: int) -> int | None:
    """Start time of pid (clock ticks since boot), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 of proc(5); fields[0] is field 3
    except (IndexError, ValueError):
        return None


def _set_pdeathsig() -> None:
    """preexec_fn: the child gets SIGKILL when the test process dies (survives exec)."""
    with contextlib.suppress(Exception):  # best effort; stale clean-up is the backstop
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen, grace: float = STOP_GRACE) -> None:
    """SIGTERM, then SIGKILL after `grace` s; always reaps. Bounded in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)


def _kill_namespace_processes(name: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL whatever still runs in the namespace; returns the pids that would not go."""
    deadline = time.monotonic() + timeout
    pids: list[int] = []
    for _ in range(200):
        pids = [p for p in namespace_pids(name) if p != os.getpid()]
        if not pids or time.monotonic() > deadline:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        time.sleep(0.05)
    return pids


def dns_a_query(server: str, name: str, timeout: float = 1.0, port: int = 53) -> tuple[int, list[str]]:
    """One DNS A query over UDP: (rcode, addresses). Stdlib only; also run inside the netns."""
    import os as _os
    import socket as _socket
    import struct as _struct

    qid = int.from_bytes(_os.urandom(2), "big")
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    query = _struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + _struct.pack(">HH", 1, 1)
    with _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((server, port))
        s.send(query)
        resp = s.recv(4096)
    rid, flags, qd, an, _ns, _ar = _struct.unpack(">HHHHHH", resp[:12])
    if rid != qid:
        raise ValueError("DNS reply with a foreign id")

    def skip_name(off: int) -> int:
        while True:
            n = resp[off]
            if n == 0:
                return off + 1
            if n & 0xC0 == 0xC0:
                return off + 2
            off += n + 1

    off = 12
    for _ in range(qd):
        off = skip_name(off) + 4
    addrs = []
    for _ in range(an):
        off = skip_name(off)
        rtype, rclass, _ttl, rdlen = _struct.unpack(">HHIH", resp[off:off + 10])
        off += 10
        if rtype == 1 and rclass == 1 and rdlen == 4:
            addrs.append(_socket.inet_ntoa(resp[off:off + 4]))
        off += rdlen
    return flags & 0xF, addrs


# ---------------------------------------------------------------------------------------------
# Scripts run inside the namespace (stdlib only)

HTTP_SERVER = '''\
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
BODY = f"hello from netns {name}\\n".encode()


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


ThreadingHTTPServer((host, port), Handler).serve_forever()
'''

UDP_ECHO = '''\
import socket, sys

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(b"echo:" + data, peer)
'''

PROBE_MAIN = '''\
import http.client, json, socket, sys, time

cfg = json.loads(sys.argv[1])
deadline = time.monotonic() + cfg["timeout"]


def http_ok():
    conn = http.client.HTTPConnection(cfg["web"], cfg["http_port"], timeout=1)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read().decode()
    finally:
        conn.close()
    if resp.status != 200 or body != cfg["body"]:
        raise ValueError(f"HTTP {resp.status} {body!r}")


def udp_ok():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(b"ping", (cfg["web"], cfg["udp_port"]))
        data = s.recv(100)
    if data != b"echo:ping":
        raise ValueError(f"UDP echo {data!r}")


def dns_ok():
    rcode, addrs = dns_a_query(cfg["dns"], cfg["dns_name"], timeout=0.5)
    if rcode != 0 or cfg["web"] not in addrs:
        raise ValueError(f"DNS rcode {rcode} addresses {addrs}")


checks = {"http": http_ok, "udp": udp_ok, "dns": dns_ok}
status = {k: "not tried" for k in checks}
for _ in range(100000):
    for k, check in checks.items():
        if status[k] == "ok":
            continue
        try:
            check()
            status[k] = "ok"
        except Exception as e:
            status[k] = f"{type(e).__name__}: {e}"
    if all(v == "ok" for v in status.values()) or time.monotonic() > deadline:
        break
    time.sleep(0.02)
print(json.dumps(status), flush=True)
sys.exit(0 if all(v == "ok" for v in status.values()) else 1)
'''


def _probe_script() -> str:
    import inspect
    return textwrap.dedent(inspect.getsource(dns_a_query)) + "\n\n" + PROBE_MAIN


# ---------------------------------------------------------------------------------------------
# Shared host state: lock, holders, route, /etc/netns


def _acquire_lock(timeout: float = LOCK_TIMEOUT) -> int:
    """flock on LOCK_FILE; survives a releasing run removing the file or its directory."""
    deadline = time.monotonic() + timeout
    for _ in range(10000):
        if time.monotonic() > deadline:
            break
        try:
            STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except (FileNotFoundError, FileExistsError):
            continue  # a releasing run removed the directory meanwhile: try again
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise NetnsError(f"{LOCK_FILE} stayed locked for {timeout} s "
                                         "(another tether test run hung?)") from None
                    time.sleep(0.02)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(LOCK_FILE))
            except FileNotFoundError:
                same = False
            if same:
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # locked a file that was unlinked meanwhile: take the new one
    raise NetnsError(f"could not lock {LOCK_FILE} in {timeout} s")


@contextlib.contextmanager
def _state_lock():
    fd = _acquire_lock()
    try:
        yield
    finally:
        try:
            _remove_state_dir_if_unused()
        finally:
            os.close(fd)


def _remove_state_dir_if_unused() -> None:
    """Called with the lock held: remove /run/tether-test when no run needs it any more."""
    if any(HOLDERS_DIR.glob("*.json")) or ROUTE_MARKER.exists() or ETC_NETNS_MARKER.exists():
        return
    with contextlib.suppress(OSError):
        HOLDERS_DIR.rmdir()
    with contextlib.suppress(OSError):
        LOCK_FILE.unlink()
    with contextlib.suppress(OSError):
        STATE_DIR.rmdir()


def _read_holders() -> dict[str, dict]:
    holders = {}
    for path in HOLDERS_DIR.glob("*.json") if HOLDERS_DIR.is_dir() else ():
        try:
            holders[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError):
            holders[path.stem] = {}
    return holders


def _holder_alive(record: dict) -> bool:
    pid, start = record.get("pid"), record.get("start")
    return isinstance(pid, int) and start is not None and _pid_start_time(pid) == start


def live_holders() -> list[str]:
    """Names of namespaces currently held by a live process (any run, this one included)."""
    return sorted(n for n, r in _read_holders().items() if _holder_alive(r))


def _owner_alive(name: str, holders: dict[str, dict]) -> bool:
    if name in holders:
        return _holder_alive(holders[name])
    m = NAME_RE.match(name) or TMP_RE.match(name)
    return bool(m) and _pid_start_time(int(m.group(1))) is not None


def _safe_tmpdir(path: str | None) -> Path | None:
    if not path:
        return None
    p = Path(path)
    if p.parent == Path(tempfile.gettempdir()) and TMP_RE.match(p.name):
        return p
    return None


def _destroy(name: str, record: dict) -> list[str]:
    """Remove everything of one namespace; returns problems (empty when all is gone)."""
    problems = []
    if NAME_RE.match(name) is None:
        return [f"refusing to destroy {name!r}: not a {NAME_PREFIX}* namespace"]
    exists = (RUN_NETNS / name).exists()
    if exists:
        left = _kill_namespace_processes(name)
        if left:
            problems.append(f"processes {left} in {name} would not die")
    veth = record.get("veth_host")
    if veth and link_exists(veth):
        proc = _ip("link", "del", "dev", veth, check=False)
        if proc.returncode != 0 and link_exists(veth):
            problems.append(f"ip link del {veth}: {proc.stderr.strip()}")
    if exists:
        proc = _ip("netns", "delete", name, check=False)
        if proc.returncode != 0 and (RUN_NETNS / name).exists():
            problems.append(f"ip netns delete {name}: {proc.stderr.strip()}")
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
    tmp = _safe_tmpdir(record.get("tmpdir"))
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (HOLDERS_DIR / f"{name}.json").unlink()
    return problems


def _cleanup_stale_locked() -> list[str]:
    """With the lock held: remove what runs with dead pids left behind. Returns removed names."""
    holders = _read_holders()
    removed = []
    names = set(list_namespaces()) | set(holders)
    if ETC_NETNS.is_dir():
        names |= {p.name for p in ETC_NETNS.iterdir()}
    for name in sorted(names):
        if NAME_RE.match(name) and not _owner_alive(name, holders):
            _destroy(name, holders.get(name, {}))
            removed.append(name)
    tmp_root = Path(tempfile.gettempdir())
    for p in tmp_root.glob(f"{NAME_PREFIX}*"):
        if TMP_RE.match(p.name) and p.is_dir() and not _owner_alive(p.name, {}):
            shutil.rmtree(p, ignore_errors=True)
    _release_shared_if_unused()
    return removed


def cleanup_stale() -> list[str]:
    """Remove namespaces, /etc/netns dirs, temp dirs and holders of dead runs; with no live run
    left, also the host route and /etc/netns if a run of this module created them."""
    require_root()
    with _state_lock():
        return _cleanup_stale_locked()


def _acquire_shared_locked() -> None:
    """With the lock held: make sure the unreachable route and /etc/netns exist."""
    state = host_route_state()
    if state == "other":
        raise NetnsError(f"the host has a route for {HOST_ROUTE} that is not `unreachable` "
                         f"(`ip route show exact {HOST_ROUTE}`): refusing to run, test traffic "
                         "could leave the machine")
    if state == "absent":
        if not ROUTE_MARKER.exists():
            ROUTE_MARKER.write_text(f"{os.getpid()}\n")  # before adding: a crash leaves a marker
        _ip("route", "add", "unreachable", HOST_ROUTE)
    # state == "unreachable" without our marker: it existed before us, never remove it.
    if not ETC_NETNS.is_dir():
        ETC_NETNS_MARKER.write_text(f"{os.getpid()}\n")
        ETC_NETNS.mkdir(mode=0o755, exist_ok=True)


def _release_shared_if_unused() -> None:
    """With the lock held: if no live run holds a namespace, undo what runs of this module added."""
    if live_holders():
        return
    if ROUTE_MARKER.exists():
        if host_route_state() == "unreachable":
            _ip("route", "del", "unreachable", HOST_ROUTE)
        ROUTE_MARKER.unlink()
    if ETC_NETNS_MARKER.exists():
        with contextlib.suppress(OSError):
            ETC_NETNS.rmdir()  # only if empty
        ETC_NETNS_MARKER.unlink()


def _free_veth_slot(holders: dict[str, dict]) -> int:
    used = {r.get("veth_slot") for r in holders.values() if _holder_alive(r)}
    addrs = json.loads(_ip("-j", "-4", "addr", "show").stdout or "[]")
    host_addrs = {a.get("local") for link in addrs for a in link.get("addr_info", [])}
    for slot in range(VETH_SLOTS):
        if slot not in used and _veth_addrs(slot)[0] not in host_addrs:
            return slot
    raise NetnsError(f"no free /30 for a veth pair in 198.19.0.0/22 ({VETH_SLOTS} in use)")


def _veth_addrs(slot: int) -> tuple[str, str]:
    base = (198 << 24) | (19 << 16) | (slot * 4)

    def dotted(n: int) -> str:
        return ".".join(str((n >> s) & 255) for s in (24, 16, 8, 0))

    return dotted(base + 1), dotted(base + 2)


# ---------------------------------------------------------------------------------------------
# The namespace


class TargetNamespace:
    """A network namespace with HTTP, UDP echo and DNS services that exist only inside it."""

    def __init__(self, *, veth: bool = False, ready_timeout: float = READY_TIMEOUT):
        self.veth = veth
        self.ready_timeout = ready_timeout
        self.name: str = ""
        self.tmpdir: Path | None = None
        self.services: dict[str, subprocess.Popen] = {}
        self.children: list[subprocess.Popen] = []
        self.veth_host_ifname: str | None = None
        self.veth_ns_ifname: str | None = None
        self.veth_host_addr: str | None = None
        self.veth_ns_addr: str | None = None
        self.setup_seconds: float | None = None
        self.target_env: dict[str, str] = {}
        self._holding = False
        self._entered = False

    # Addresses, for tests
    web_addr = WEB_ADDR
    dns_addr = DNS_ADDR
    dns_name = DNS_NAME
    hosts_name = HOSTS_NAME
    http_addr = (WEB_ADDR, HTTP_PORT)
    udp_addr = (WEB_ADDR, UDP_PORT)
    http_url = f"http://{WEB_ADDR}:{HTTP_PORT}/"

    @property
    def environment(self) -> dict[str, str]:
        """/etc/netns/NAME/environment: what `tether exec` reports as the target's environment.
        PATH and LANG are there to prove that the local ones are kept."""
        return {"TARGET_ONLY_VAR": "from-netns", "TARGET_NETNS": self.name, "PATH": "/nonexistent/target/bin",
                "LANG": "xx_TARGET.UTF-8"}

    @property
    def http_body(self) -> str:
        return f"hello from netns {self.name}\n"

    # Running things inside

    def exec_argv(self, argv: list[str]) -> list[str]:
        """argv prefixed with `ip netns exec NAME`."""
        return [ip_binary(), "netns", "exec", self.name, *map(str, argv)]

    def run(self, argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 10.0,
            input: str | None = None, check: bool = False) -> subprocess.CompletedProcess:
        """Run argv inside the namespace; text output captured. env=None inherits ours."""
        return subprocess.run(self.exec_argv(argv), env=env, input=input, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              capture_output=True, text=True, check=check)

    def python(self, code: str, *args: str, **kw) -> subprocess.CompletedProcess:
        """Run `python3 -c code args...` (this interpreter) inside the namespace."""
        return self.run([sys.executable, "-c", code, *args], **kw)

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        """Start argv inside the namespace; it is stopped (and reaped) when the namespace goes."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("preexec_fn", _set_pdeathsig)
        proc = subprocess.Popen(self.exec_argv(argv), **kw)
        self.children.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Pids of every process in the namespace (`ip netns pids NAME`)."""
        return namespace_pids(self.name)

    # Life cycle

    def __enter__(self) -> Self:
        if self._entered:
            raise NetnsError("a TargetNamespace can be entered only once")
        self._entered = True
        require_root()
        ip_binary()
        dnsmasq = ensure_dnsmasq()
        t0 = time.monotonic()
        try:
            with _state_lock():
                _cleanup_stale_locked()
                self._create_locked()
            self._write_etc()
            self._start_services(dnsmasq)
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        self.setup_seconds = time.monotonic() - t0
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _create_locked(self) -> None:
        existing = set(list_namespaces())
        for _ in range(1000):
            n = next(_counter)
            name = f"{NAME_PREFIX}{os.getpid()}-{n}"
            if name not in existing and not (HOLDERS_DIR / f"{name}.json").exists():
                break
        else:
            raise NetnsError("no free tether-test-<pid>-<n> name")
        self.name = name
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        record = {"pid": os.getpid(), "start": _pid_start_time(os.getpid()),
                  "tmpdir": str(self.tmpdir)}
        if self.veth:
            slot = _free_veth_slot(_read_holders())
            self.veth_host_ifname = f"tt{os.getpid()}n{n}"
            self.veth_ns_ifname = VETH_NS_IFNAME
            self.veth_host_addr, self.veth_ns_addr = _veth_addrs(slot)
            record.update(veth_host=self.veth_host_ifname, veth_slot=slot)
        HOLDERS_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        (HOLDERS_DIR / f"{name}.json").write_text(json.dumps(record))
        self._holding = True
        _acquire_shared_locked()

        _ip("netns", "add", name)
        _ip("-n", name, "link", "set", "lo", "up")
        for addr in (WEB_ADDR, DNS_ADDR):
            _ip("-n", name, "addr", "add", f"{addr}/32", "dev", "lo")
        if self.veth:
            host_if, ns_if = self.veth_host_ifname, self.veth_ns_ifname
            _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name)
            _ip("addr", "add", f"{self.veth_host_addr}/{VETH_PREFIX_LEN}", "dev", host_if)
            _ip("-n", name, "addr", "add", f"{self.veth_ns_addr}/{VETH_PREFIX_LEN}", "dev", ns_if)
            _ip("link", "set", host_if, "up")
            _ip("-n", name, "link", "set", ns_if, "up")

    def _write_etc(self) -> None:
        etc = ETC_NETNS / self.name
        etc.mkdir(mode=0o755)
        (etc / "resolv.conf").write_text(f"nameserver {DNS_ADDR}\noptions timeout:1 attempts:2\n")
        (etc / "hosts").write_text(
            "127.0.0.1\tlocalhost\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
            f"{WEB_ADDR}\t{HOSTS_NAME}\n")
        (etc / "nsswitch.conf").write_text("hosts: files dns\n")
        (etc / "environment").write_text("".join(f'{k}="{v}"\n' for k, v in self.environment.items()))
        self.target_env = {
            "PATH": f"{Path(sys.executable).parent}:{SBIN_PATH}",
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "TETHER_TARGET_ONLY": "from-netns",
            "TETHER_TARGET_NETNS": self.name,
        }

    def _start(self, key: str, argv: list[str]) -> None:
        log = open(self.tmpdir / f"{key}.log", "wb")  # noqa: SIM115 - closed right after Popen
        try:
            self.services[key] = subprocess.Popen(
                self.exec_argv(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.target_env, start_new_session=True,
                preexec_fn=_set_pdeathsig)  # noqa: PLW1509 - no threads started here
        finally:
            log.close()

    def _start_services(self, dnsmasq: str) -> None:
        tmp = self.tmpdir
        (tmp / "http_server.py").write_text(HTTP_SERVER)
        (tmp / "udp_echo.py").write_text(UDP_ECHO)
        (tmp / "probe.py").write_text(_probe_script())
        py = sys.executable
        self._start("http", [py, "-I", tmp / "http_server.py", WEB_ADDR, str(HTTP_PORT), self.name])
        self._start("udp", [py, "-I", tmp / "udp_echo.py", WEB_ADDR, str(UDP_PORT)])
        self._start("dns", [
            dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            "--bind-interfaces", f"--listen-address={DNS_ADDR}", "--port=53",
            f"--address=/{DNS_NAME}/{WEB_ADDR}", f"--local=/{DNS_NAME}/", "--local=/#/",
            f"--pid-file={tmp / 'dnsmasq.pid'}",
            "--user=root", "--group=root", "--log-facility=-", "--log-queries"])

    def service_log(self, key: str, lines: int = 20) -> str:
        try:
            text = (self.tmpdir / f"{key}.log").read_text(errors="replace")
        except (OSError, TypeError):
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def _wait_ready(self) -> None:
        cfg = {"timeout": self.ready_timeout, "web": WEB_ADDR, "http_port": HTTP_PORT,
               "udp_port": UDP_PORT, "dns": DNS_ADDR, "dns_name": DNS_NAME, "body": self.http_body}
        probe = subprocess.Popen(
            self.exec_argv([sys.executable, "-I", self.tmpdir / "probe.py", json.dumps(cfg)]),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=self.target_env, preexec_fn=_set_pdeathsig)  # noqa: PLW1509
        deadline = time.monotonic() + self.ready_timeout + 5.0
        try:
            while probe.poll() is None:
                dead = {k: p.returncode for k, p in self.services.items() if p.poll() is not None}
                if dead:
                    k, rc = next(iter(dead.items()))
                    raise NetnsError(f"{self.name}: the {k} service exited ({rc}) while starting:\n"
                                     f"{self.service_log(k)}")
                if time.monotonic() > deadline:
                    raise NetnsError(f"{self.name}: the readiness probe did not finish in "
                                     f"{self.ready_timeout + 5.0} s")
                time.sleep(0.02)
            out, err = probe.communicate(timeout=5)
        finally:
            if probe.poll() is None:
                probe.kill()
                probe.wait(timeout=5)
        if probe.returncode != 0:
            try:
                status = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise NetnsError(f"{self.name}: the readiness probe failed ({probe.returncode}): "
                                 f"{err.strip()[-2000:]}") from None
            bad = {k: v for k, v in status.items() if v != "ok"}
            logs = "\n".join(f"--- {k} log:\n{self.service_log(k)}" for k in bad)
            raise NetnsError(f"{self.name}: not ready within {self.ready_timeout} s: {bad}\n{logs}")

    def close(self) -> None:
        """Stop every process, remove the namespace, veth, /etc/netns/NAME, temp dir, and (when
        no other live run holds a namespace) the host route if a run of this module added it."""
        for proc in [*self.children, *self.services.values()]:
            _stop(proc)
        problems = []
        if self._holding:
            with _state_lock():
                record = {"veth_host": self.veth_host_ifname, "tmpdir": str(self.tmpdir)}
                problems = _destroy(self.name, record)
                self._holding = False
                _release_shared_if_unused()
        elif self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        if problems:
            raise NetnsError(f"cleaning up {self.name}: " + "; ".join(problems))


@pytest.fixture(scope="module")
def target_ns():
    """A TargetNamespace (no veth) shared by the tests of one module."""
    with TargetNamespace() as ns:
        yield ns


def main(argv: list[str]) -> int:
    if argv == ["install-deps"]:
        print(f"dnsmasq: {ensure_dnsmasq()}")
        return 0
    if argv == ["cleanup"]:
        removed = cleanup_stale()
        print(f"removed: {', '.join(removed) or 'nothing'}")
        return 0
    print("usage: python3 tests/netns.py install-deps | cleanup", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except NetnsError as e:
        print(f"netns: {e}", file=sys.stderr)
        sys.exit(1)
