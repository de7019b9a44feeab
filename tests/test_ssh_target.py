"""`--target ssh://USER@HOST:PORT` against a real sshd (Debian's openssh-server) that this test
runs inside a throwaway network namespace, on its own port, with a throwaway host key and
user key, and known_hosts checking on. The programs reach services that exist only in that
namespace; the agent runs there from memory and leaves nothing behind.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import gobuild
import pytest
from netns import HTTP_PORT, WEB_ADDR, TargetNamespace

TETHER = [sys.executable, "-m", "tether"]
SSHD = "/usr/sbin/sshd"
SSH_PORT = 2222
NO_PYTHON_PORT = 2223  # the same sshd, with a PATH that has no python3
WEB = f"{WEB_ADDR}:{HTTP_PORT}"

pytestmark = pytest.mark.skipif(not Path(SSHD).exists() or shutil.which("ssh") is None,
                                reason="needs openssh-server and openssh-client (.ci/run installs them)")


class Sshd:
    def __init__(self, ns: TargetNamespace, d: Path):
        self.ns, self.dir = ns, d
        for name in ("host", "user", "other"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
        (d / "authorized_keys").write_text((d / "user.pub").read_text())
        host = f"[{ns.veth_ns_addr}]:{SSH_PORT},[{ns.veth_ns_addr}]:{NO_PYTHON_PORT}"
        (d / "known_hosts").write_text(f"{host} {(d / 'host.pub').read_text()}")
        (d / "wrong_known_hosts").write_text(f"{host} {(d / 'other.pub').read_text()}")
        (d / "sshd_config").write_text(f"""\
Port {SSH_PORT}
Port {NO_PYTHON_PORT}
ListenAddress {ns.veth_ns_addr}
HostKey {d / 'host'}
AuthorizedKeysFile {d / 'authorized_keys'}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
AcceptEnv TETHER_TEST_*
LogLevel ERROR
Match LocalPort {NO_PYTHON_PORT}
    SetEnv PATH=/nonexistent
""")
        Path("/run/sshd").mkdir(exist_ok=True)  # its privilege separation directory
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns.name, SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
                                     stderr=subprocess.PIPE)
        for _ in range(100):
            try:
                socket.create_connection((ns.veth_ns_addr, SSH_PORT), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"sshd did not start: {self.proc.stderr.read1().decode()}")
        self.target = f"ssh://root@{ns.veth_ns_addr}:{SSH_PORT}"

    def options(self, known_hosts: str = "known_hosts", key: str = "user") -> list[str]:
        opts = [f"UserKnownHostsFile={self.dir / known_hosts}", "GlobalKnownHostsFile=/dev/null",
                "StrictHostKeyChecking=yes", f"IdentityFile={self.dir / key}", "IdentitiesOnly=yes", "BatchMode=yes"]
        return [flag for o in opts for flag in ("--ssh-option", o)]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with TargetNamespace(veth=True) as ns:
        server = Sshd(ns, tmp_path_factory.mktemp("ssh"))
        try:
            yield server
        finally:
            server.close()


def tether_exec(sshd: Sshd, *argv: str, options: list[str] | None = None, timeout: float = 60):
    return subprocess.run([*TETHER, "exec", "--target", sshd.target, *(options or sshd.options()), "--", *argv],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def leftovers(sshd: Sshd) -> list[str]:
    return subprocess.run(["pgrep", "-f", "import tether_ssh_agent"], capture_output=True, text=True).stdout.split()


def test_a_go_program_reaches_services_only_the_host_has(go_versions, sshd):
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    r = tether_exec(sshd, str(exe), "http", sshd.ns.http_url, "lookup", sshd.ns.hosts_name, "dial", WEB,
                    "env", "TETHER_TEST_REMOTE",
                    options=[*sshd.options(), "--ssh-option", "SetEnv=TETHER_TEST_REMOTE=from-the-host"])
    body = sshd.ns.http_body.strip()
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert r.stdout.splitlines() == [f"http 200 {body}", f"lookup {sshd.ns.hosts_name} {WEB_ADDR}",
                                     f"dial ok peer={WEB}", "env TETHER_TEST_REMOTE=from-the-host"]
    time.sleep(0.5)
    assert leftovers(sshd) == []  # the agent and its socket are gone with the session


def test_a_static_go_program_and_python_too(go_versions, sshd):
    exe = gobuild.build(go_versions[-1], "static", "netclient")
    r = tether_exec(sshd, str(exe), "http", f"http://{sshd.ns.hosts_name}:{HTTP_PORT}/")
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, f"http 200 {sshd.ns.http_body.strip()}", "")
    script = f"import urllib.request; print(urllib.request.urlopen('http://{sshd.ns.hosts_name}:{HTTP_PORT}/').read().decode())"
    r = tether_exec(sshd, sys.executable, "-c", script)
    assert (r.returncode, r.stdout.strip()) == (0, sshd.ns.http_body.strip()), r.stderr


def test_the_hosts_files_are_the_programs(sshd):
    """The host's /etc/hosts (its namespace's, from /etc/netns) comes through the stand-in's
    FUSE file system; /proc stays this machine's (a built-in rule)."""
    r = tether_exec(sshd, "sh", "-c", "grep -c '{0}$' /etc/hosts; stat -f -c %T /etc/hosts; cat /proc/sys/kernel/ostype"
                    .format(sshd.ns.hosts_name))
    assert (r.returncode, r.stdout.split(), r.stderr) == (0, ["1", "fuseblk", "Linux"], "")


@pytest.mark.parametrize("what, options, message", [
    ("host key", dict(known_hosts="wrong_known_hosts"), "is not the one known_hosts has"),
    ("user key", dict(key="other"), "authentication failed"),
])
def test_ssh_failures_are_clear(sshd, what, options, message):
    r = tether_exec(sshd, "true", options=sshd.options(**options), timeout=60)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (what, r.stderr)


def test_no_python3_on_the_host_is_clear(sshd):
    r = subprocess.run([*TETHER, "exec", "--target", f"ssh://root@{sshd.ns.veth_ns_addr}:{NO_PYTHON_PORT}",
                        *sshd.options(), "--", "true"], capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "has no python3" in r.stderr, r.stderr


def test_the_link_cut_mid_run_gives_errors_then_comes_back(go_versions, sshd, tmp_path):
    """The ssh connection dies (its client killed) between two connects: the next fails at
    once (no hang), tether connects again (ssh and the agent started anew) and says so, and
    a later connect works. The program keeps running throughout."""
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    cut, back = tmp_path / "cut", tmp_path / "back"
    proc = subprocess.Popen([*TETHER, "exec", "--target", sshd.target, *sshd.options(), "--", str(exe),
                             "dial", WEB, "wait", str(cut), "dial", WEB, "wait", str(back), "dial", WEB],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # the first dial, through the link, is done
        pids = subprocess.run(["pgrep", "-f", f"ssh -T .*{sshd.ns.veth_ns_addr}"], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.3)  # the stand-in notices the link is gone
        cut.touch()
        time.sleep(3)  # it connects again: a new ssh, a new agent there
        back.touch()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = [first.rstrip(), *out.splitlines()]
    assert lines[:2] == [f"dial ok peer={WEB}", "wait ok"], (out, err)
    assert lines[2].startswith("dial error"), (out, err)
    assert lines[3:] == ["wait ok", f"dial ok peer={WEB}"], (out, err)
    assert "is back" in err, err


def test_a_go_server_steals_a_port_on_the_host(go_versions, sshd):
    """Incoming through ssh://: the agent listens on the host and relays each connection over
    the same SSH connection; accept() gives the client's address there."""
    from test_incoming import Program, get

    exe = gobuild.build(go_versions[-1], "default", "incoming")
    port = 8093
    prog = Program(sshd.ns, [str(exe), "serve", f":{port}", "prog"], "--incoming", "steal",
                   target=("--target", sshd.target, *sshd.options()))
    try:
        assert prog.line("listening") == f"listening [::]:{port}"
        assert get(sshd.ns, port, "/addr").startswith(f"prog local={WEB_ADDR}:{port} remote={WEB_ADDR}:")
    finally:
        out, err = prog.stop()
    assert "served 1" in out, (out, err)
    assert get(sshd.ns, port, timeout=0.5) is None  # the port is the host's again: nothing listens
