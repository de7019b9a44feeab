"""tests/netns.py makes a real, throwaway target: its services answer inside the namespace
only, the host cannot reach or resolve them, and nothing is left behind afterwards."""
# ruff: noqa: F811  (test arguments named target_ns "redefine" the imported fixture)
from __future__ import annotations

import errno
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import netns
import pytest
from netns import NetnsError, TargetNamespace, target_ns  # noqa: F401 - the fixture

TESTS = Path(__file__).resolve().parent
UNREACHABLE = (errno.EHOSTUNREACH, errno.ENETUNREACH)


def route_present() -> bool:
    return netns.host_route_state() == "unreachable"


def pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (dead, waiting for its reaper) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def assert_all_gone(name: str, pids: list[int], veth: str | None, tmpdir: Path,
                    route_before: bool, etc_before: bool) -> None:
    assert name not in netns.list_namespaces()
    assert not (netns.RUN_NETNS / name).exists()
    assert not (netns.ETC_NETNS / name).exists()
    assert not (netns.HOLDERS_DIR / f"{name}.json").exists()
    assert not tmpdir.exists()
    if veth:
        assert not netns.link_exists(veth)
    assert [p for p in pids if pid_alive(p)] == []
    with netns._state_lock():  # a parallel run may hold (or be adding) the shared route
        others, route_now, etc_now = netns.live_holders(), route_present(), netns.ETC_NETNS.exists()
    if route_before:
        assert route_now, "a route that existed before was removed"
    elif not others:
        assert not route_now, "the unreachable route we added is still there"
    if not etc_before and not others:
        assert not etc_now, "the /etc/netns we created is still there"


def shared_state_before() -> tuple[bool, bool]:
    """(route, /etc/netns) present before any run of tests/netns.py added them."""
    with netns._state_lock():
        return (route_present() and not netns.ROUTE_MARKER.exists(),
                netns.ETC_NETNS.exists() and not netns.ETC_NETNS_MARKER.exists())


# These two come first, before the module-scoped target_ns exists, so that "the route is gone
# afterwards" is checked for real.

def test_lifecycle_with_veth_leaves_nothing_behind():
    route_before, etc_before = shared_state_before()
    with TargetNamespace(veth=True) as ns:
        name, tmpdir, veth = ns.name, ns.tmpdir, ns.veth_host_ifname
        assert re.fullmatch(rf"tether-test-{os.getpid()}-\d+", name)
        assert name in netns.list_namespaces()
        assert route_present()
        assert ns.setup_seconds < 10
        sleeper = ns.popen(["sleep", "60"])
        listener = ns.popen([sys.executable, "-c", (
            "import socket, sys\n"
            "s = socket.create_server((sys.argv[1], 7070))\n"
            "print('listening', flush=True)\n"
            "c, _ = s.accept()\n"
            "c.sendall(b'via veth')\n"), ns.veth_ns_addr], stdout=subprocess.PIPE)
        ready, _, _ = select.select([listener.stdout], [], [], 10)
        assert ready and listener.stdout.readline() == b"listening\n"
        pids = [p.pid for p in ns.services.values()] + [sleeper.pid, listener.pid]
        assert set(pids) <= set(ns.pids())

        # The veth side is reachable from the host; the services' addresses are still not.
        with socket.create_connection((ns.veth_ns_addr, 7070), timeout=2) as c:
            c.settimeout(2)
            assert c.recv(100) == b"via veth"
        with pytest.raises(OSError) as e:
            socket.create_connection(ns.http_addr, timeout=1)
        assert e.value.errno in UNREACHABLE
    assert sleeper.returncode is not None
    assert_all_gone(name, pids, veth, tmpdir, route_before, etc_before)


def test_namespace_of_a_killed_run_is_cleaned_up():
    route_before, etc_before = shared_state_before()
    code = (
        "import json, sys, time\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "import netns\n"
        "ns = netns.TargetNamespace(veth=True).__enter__()\n"
        "print(json.dumps({'name': ns.name, 'pids': ns.pids(), 'veth': ns.veth_host_ifname,\n"
        "                  'tmpdir': str(ns.tmpdir)}), flush=True)\n"
        "time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
    try:
        ready, _, _ = select.select([child.stdout], [], [], 30)
        assert ready, "the child did not set up its namespace in 30 s"
        info = json.loads(child.stdout.readline())
    except BaseException:
        child.kill()
        child.wait(timeout=10)
        raise
    name = info["name"]
    # Under the lock, so that a parallel run's stale clean-up cannot take our evidence away.
    with netns._state_lock():
        child.kill()  # no clean-up runs in the child: a crashed test run
        child.wait(timeout=10)
        assert name in netns.list_namespaces()
        assert (netns.ETC_NETNS / name).is_dir()
        assert netns.link_exists(info["veth"])

        # The services die with the test process that started them (PR_SET_PDEATHSIG).
        deadline = time.monotonic() + 5
        while netns.namespace_pids(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert netns.namespace_pids(name) == []

        assert name in netns._cleanup_stale_locked()
    assert_all_gone(name, info["pids"], info["veth"], Path(info["tmpdir"]), route_before, etc_before)


def test_failed_set_up_leaves_nothing_behind(monkeypatch):
    route_before, etc_before = shared_state_before()
    monkeypatch.setattr(netns, "ensure_dnsmasq", lambda: "/bin/false")  # DNS exits at once
    ns = TargetNamespace()
    with pytest.raises(NetnsError, match="the dns service exited"):
        ns.__enter__()
    assert_all_gone(ns.name, [p.pid for p in ns.services.values()], None, ns.tmpdir,
                    route_before, etc_before)


def test_needs_root(monkeypatch):
    def ours():
        return [n for n in netns.list_namespaces() if n.startswith(f"tether-test-{os.getpid()}-")]

    before = ours()
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(NetnsError, match="needs root"):
        TargetNamespace().__enter__()
    monkeypatch.undo()
    assert ours() == before


def test_ensure_dnsmasq(monkeypatch):
    def no_apt(cmd, **kw):
        raise AssertionError(f"ran {cmd} although dnsmasq is installed")

    monkeypatch.setattr(netns.subprocess, "run", no_apt)
    assert os.access(netns.ensure_dnsmasq(), os.X_OK)

    # dnsmasq missing and apt-get failing: a clear error, not a skip.
    ran = []

    def failing_apt(cmd, **kw):
        ran.append(cmd)
        return subprocess.CompletedProcess(cmd, 100, "", "E: Unable to locate package dnsmasq-base\n")

    monkeypatch.setattr(netns, "find_dnsmasq", lambda: None)
    monkeypatch.setattr(netns.subprocess, "run", failing_apt)
    with pytest.raises(NetnsError, match=r"installing dnsmasq-base failed: `apt-get update -q` "
                                         r"exited 100:\nE: Unable to locate package"):
        netns.ensure_dnsmasq()
    assert ran == [["apt-get", "update", "-q"]]


# Inside the namespace

def test_services_run_inside_the_namespace(target_ns):
    host_netns = os.readlink("/proc/self/ns/net")
    in_ns = set(target_ns.pids())
    for key, proc in target_ns.services.items():
        assert proc.poll() is None, f"{key} exited: {target_ns.service_log(key)}"
        assert proc.pid in in_ns
        assert os.readlink(f"/proc/{proc.pid}/ns/net") != host_netns


def test_http_server_answers_inside(target_ns):
    r = target_ns.python(
        "import http.client, sys\n"
        "c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=5)\n"
        "c.request('GET', '/')\n"
        "resp = c.getresponse()\n"
        "print(resp.status, resp.read().decode(), end='')\n",
        *map(str, target_ns.http_addr))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"200 hello from netns {target_ns.name}\n"


def test_udp_echo_inside(target_ns):
    r = target_ns.python(
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.settimeout(5)\n"
        "s.sendto(b'hi there', (sys.argv[1], int(sys.argv[2])))\n"
        "print(s.recv(100).decode(), end='')\n",
        *map(str, target_ns.udp_addr))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "echo:hi there"


def test_dnsmasq_resolves_the_netns_only_name(target_ns):
    r = target_ns.run(["getent", "hosts", netns.DNS_NAME])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [netns.WEB_ADDR, netns.DNS_NAME]
    # Not from a hosts file: from dnsmasq, through the namespace's resolv.conf.
    assert target_ns.run(["getent", "-s", "files", "hosts", netns.DNS_NAME]).returncode == 2
    assert target_ns.run(["cat", "/etc/resolv.conf"]).stdout.splitlines()[0] == \
        f"nameserver {netns.DNS_ADDR}"
    r = target_ns.python(
        "import socket, sys\n"
        "print(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 80)}))\n", netns.DNS_NAME)
    assert r.stdout.strip() == f"['{netns.WEB_ADDR}']", r.stderr
    # dnsmasq forwards nothing: any other name fails at once.
    t0 = time.monotonic()
    assert target_ns.run(["getent", "hosts", "example.com"]).returncode == 2
    assert time.monotonic() - t0 < 2


def test_hosts_file_of_the_namespace(target_ns):
    r = target_ns.run(["getent", "-s", "files", "hosts", netns.HOSTS_NAME])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [netns.WEB_ADDR, netns.HOSTS_NAME]
    assert target_ns.run(["getent", "-s", "files", "hosts", "localhost"]).returncode == 0


def test_target_env(target_ns):
    env = target_ns.target_env
    assert env["TETHER_TARGET_ONLY"] == "from-netns"
    assert "TETHER_TARGET_ONLY" not in os.environ
    r = target_ns.run(["python3", "-c", "import os; print(os.environ['TETHER_TARGET_ONLY'])"], env=env)
    assert r.stdout == "from-netns\n", r.stderr


# From the host

def test_host_cannot_reach_the_services(target_ns):
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        socket.create_connection(target_ns.http_addr, timeout=1)
    assert e.value.errno in UNREACHABLE, e.value
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(OSError) as e:
        s.sendto(b"ping", target_ns.udp_addr)
    assert e.value.errno in UNREACHABLE, e.value
    assert time.monotonic() - t0 < 1


def test_host_cannot_resolve_the_names(target_ns):
    # Checked without a real DNS lookup on the host: that would send a query to the machine's
    # own resolver, off the machine. Its files do not know the names, its resolv.conf does not
    # name the namespace's server, and that server cannot be reached from the host.
    for name in (netns.DNS_NAME, netns.HOSTS_NAME):
        assert subprocess.run(["getent", "-s", "files", "hosts", name], check=False,
                              capture_output=True,
                              timeout=10).returncode == 2
    assert netns.DNS_ADDR not in Path("/etc/resolv.conf").read_text()
    t0 = time.monotonic()
    with pytest.raises(OSError) as e:
        netns.dns_a_query(netns.DNS_ADDR, netns.DNS_NAME, timeout=1)
    assert e.value.errno in UNREACHABLE, e.value
    assert time.monotonic() - t0 < 1
    # ... while the same query from inside the namespace is answered.
    r = target_ns.python(
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); import netns\n"
        "print(netns.dns_a_query(netns.DNS_ADDR, netns.DNS_NAME))\n")
    assert r.stdout.strip() == f"(0, ['{netns.WEB_ADDR}'])", r.stderr
