"""Agents on this host: tether forks, and the child joins the target's namespaces.

A fork costs milliseconds where starting another interpreter costs hundreds. The child has its
own session (the terminal's ^C is for the program, not for it), keeps only its two sockets
(and a debug log), imports what it will run while it still sees this host's files, then joins
the target (a netns: or pid: `enter` function) and serves. Besides its link to the session it
listens on a socket in a directory of its own, bound here before the fork, so hooked processes
on this host reach it directly whatever mount namespace it then joins.
"""
from __future__ import annotations

import logging
import os
import select
import socket
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path

from . import Target

PR_SET_NAME = 15
AGENT_NAME = b"tether-agent"  # what ps and pgrep show for it

# Runs in the child: joins the target, returns what serves there (given the session's and the
# layer listener's descriptors); serving() makes that for an agent of this host's kind.
Serve = Callable[[int, int], Coroutine]
Enter = Callable[[], Serve]


def serving(environment: Callable[[], dict[str, str]]) -> Serve:
    """Serve as the agent in the target, reporting environment() as its environment."""
    from ..agent.server import serve_fd

    return lambda session_fd, listen_fd: serve_fd(session_fd, environment, listen_fd)


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


def libc():
    """libc through ctypes, with a check that turns a failed call into OSError."""
    import ctypes

    lib = ctypes.CDLL(None, use_errno=True)

    def check(ret: int, what: str) -> None:
        if ret != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    return lib, check


def _agent_child(spec: str, enter: Enter, sock: socket.socket, listener: socket.socket) -> None:
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
        # All the code it will run, loaded while this host's files are in view: a target's
        # mount namespace (a container's) need not have Python at all.
        import asyncio
        import concurrent.futures.thread  # noqa: F401  (asyncio's resolver threads, loaded lazily)

        from ..agent import server  # noqa: F401  (serving() imports it once the target is joined)
        serve = enter()
        lib, _ = libc()
        lib.prctl(PR_SET_NAME, AGENT_NAME, 0, 0, 0)
        asyncio.run(serve(sock.fileno(), listener.fileno()))
    except BaseException as e:  # noqa: BLE001 - the child reports and leaves, whatever happened
        print(f"tether agent: {spec}: {e}", file=sys.stderr)
        code = 2
    finally:
        os._exit(code)


def fork_agent(spec: str, enter: Enter, wait: bool = True) -> Target:
    """Fork an agent that runs `enter` and then serves; with wait, also until it answers."""
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
        _agent_child(spec, enter, theirs, listener)
    theirs.close()
    listener.close()
    # What only this side needs is imported while the agent starts (asyncio there).
    from ..session.agent_link import AgentLink

    target = Target(spec, AgentLink(ours), AgentProcess(pid), agent_socket, workdir)
    if wait:
        target.ready()
    return target
