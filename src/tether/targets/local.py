"""Agents on this host: a forked child joins the target's namespaces.

A fork costs milliseconds where starting another interpreter costs hundreds. The child
(targets/early.py, forked when tether exec starts) has its own session (the terminal's ^C is
for the program, not for it), keeps only its two sockets (and a debug log), imports what it
will run while it still sees this host's files, then joins the target (a netns: or pid:
`enter` function) and serves. Besides its link to the session it listens on a socket in a
directory of its own, bound here, so hooked processes on this host reach it directly whatever
mount namespace it then joins.
"""
from __future__ import annotations

import os
import select
import socket
from collections.abc import Callable, Coroutine

from .target import AgentLog, Target

# What serves in the target, given the session's and the layer listener's descriptors, the
# session's requests already read, and the layer connections accepted already with theirs
# (targets/early.py).
Serve = Callable[[int, int, list, list], Coroutine]
Environment = Callable[[], dict[str, str]]
# Runs in the child: joins the target and returns the environment to report there (None: the
# agent is a stand-in that forwards, agent/forward.py) and what serves.
Enter = Callable[..., tuple[Environment | None, Serve]]


def serving(environment: Environment) -> tuple[Environment, Serve]:
    """Serve as the agent in the target, reporting environment() as its environment."""

    def serve(session_fd: int, listen_fd: int, pending: list, accepted: list) -> Coroutine:
        from ..agent.server import serve_fd  # loaded by now, while this host's files were in view

        return serve_fd(session_fd, environment, listen_fd, pending=pending, accepted=accepted)

    return environment, serve


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


def fork_agent(spec: str, enter: Enter, args: tuple, wait: bool = True, log: AgentLog | None = None) -> Target:
    """An agent that runs enter(*args) in its process (targets/early.py: forked at start-up,
    or now) and then serves; with wait, also until it answers. log: where it writes its
    debug log (else only its warnings, to stderr)."""
    import tempfile
    from pathlib import Path

    from . import early

    workdir = Path(tempfile.mkdtemp(prefix="tether-agent-"))
    agent_socket = str(workdir / "agent.sock")  # a path: it works across network namespaces
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(agent_socket)
    listener.listen(128)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    spare = early.take()
    spare.start(spec, enter, args, theirs, listener, log)
    theirs.close()
    listener.close()
    # What only this side needs is imported while the agent starts (asyncio there).
    from ..session.agent_link import AgentLink

    target = Target(spec, AgentLink(ours), AgentProcess(spare.pid), agent_socket, workdir)
    if wait:
        target.ready()
    return target
