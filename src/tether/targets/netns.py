"""`netns:NAME`: a network namespace made with `ip netns add`.

The agent is this process forked: the child joins the namespace (setns on /run/netns/NAME)
and, in a mount namespace of its own, mounts /etc/netns/NAME/* over /etc/* as `ip netns exec`
does, so it sees the namespace's resolv.conf, hosts and environment (which it reports as the
target's). A fork costs milliseconds where starting another interpreter costs hundreds; the
child has its own session, so the terminal's ^C is for the program, not for it. Besides its
link to the session it listens on a socket in a directory of its own, where hooked processes
send CONNECT and OPEN directly.
"""
from __future__ import annotations

import logging
import os
import select
import socket
import sys
import tempfile
from pathlib import Path

from . import Target, TargetError

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
CLONE_NEWNET, CLONE_NEWNS = 0x40000000, 0x00020000
MS_BIND, MS_REC, MS_SLAVE = 4096, 16384, 1 << 19
PR_SET_NAME = 15
AGENT_NAME = b"tether-agent"  # what ps and pgrep show for it


class AgentProcess:
    """The forked agent: enough of subprocess.Popen's interface for its owner."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.poll() is not None:
            return self.returncode
        pidfd = os.pidfd_open(self.pid)  # readable when it exits: no polling interval to sleep out
        try:
            if not select.select([pidfd], [], [], timeout)[0]:
                import subprocess

                raise subprocess.TimeoutExpired(f"agent {self.pid}", timeout)
        finally:
            os.close(pidfd)
        pid, status = os.waitpid(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, 9)


def _enter(name: str) -> None:
    """In the child: join the namespace and see its /etc/netns files over /etc."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def check(ret: int, what: str) -> None:
        if ret != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(libc.setns(fd, CLONE_NEWNET), f"entering network namespace {name}")
    finally:
        os.close(fd)
    check(libc.unshare(CLONE_NEWNS), "making a mount namespace")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "making / a mount slave")
    etc = ETC_NETNS / name
    if etc.is_dir():
        for entry in sorted(etc.iterdir()):
            target = Path("/etc") / entry.name
            if target.exists() or target.is_symlink():
                check(libc.mount(bytes(entry), bytes(target), b"none", MS_BIND, None),
                      f"mounting {entry} over {target}")
    libc.prctl(PR_SET_NAME, AGENT_NAME, 0, 0, 0)


def _agent_child(name: str, sock: socket.socket, listener: socket.socket) -> None:
    code = 0
    try:
        os.setsid()
        # Only the two sockets and a debug log file (tether exec -v) stay open.
        keep = {sock.fileno(), listener.fileno()}
        logs = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
        keep.update(h.stream.fileno() for h in logs)
        if not logs:
            logging.basicConfig(level=logging.WARNING, format="tether agent: %(message)s", force=True)
        low = 3
        for fd in sorted(keep):
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))
        _enter(name)
        import asyncio

        from ..agent.server import serve_fd
        asyncio.run(serve_fd(sock.fileno(), "/etc/environment", listener.fileno()))
    except BaseException as e:  # noqa: BLE001 - the child reports and leaves, whatever happened
        print(f"tether agent: netns:{name}: {e}", file=sys.stderr)
        code = 2
    finally:
        os._exit(code)


def start_agent(name: str, wait: bool = True) -> Target:
    """Fork the agent into namespace name; with wait, also until it answers (Target.ready)."""
    if os.geteuid() != 0:
        raise TargetError(f"netns:{name} needs root (joining a network namespace does): "
                          "run tether as root, e.g. with sudo")
    if not name or "/" in name or not (NETNS_DIR / name).exists():
        known = ", ".join(sorted(p.name for p in NETNS_DIR.iterdir())) if NETNS_DIR.is_dir() else ""
        raise TargetError(f"no network namespace {name!r} (`ip netns list` shows: {known or 'none'}); "
                          f"create it with `ip netns add {name}`")
    workdir = Path(tempfile.mkdtemp(prefix="tether-agent-"))
    agent_socket = str(workdir / "agent.sock")  # a path: it works across network namespaces
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(agent_socket)
    listener.listen(128)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        ours.close()
        _agent_child(name, theirs, listener)
    theirs.close()
    listener.close()
    # What only this side needs is imported while the agent starts (asyncio there).
    from ..session.agent_link import AgentLink

    target = Target(f"netns:{name}", AgentLink(ours), AgentProcess(pid), agent_socket, workdir)
    if wait:
        target.ready()
    return target
