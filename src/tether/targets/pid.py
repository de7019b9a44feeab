"""`pid:PID`: the namespaces of a running process, e.g. a container's.

The agent (forked, targets/local.py) joins the process's network, UTS and mount namespaces
(setns on /proc/PID/ns/*), so connections start from its network, names resolve with its
resolv.conf and hosts, and files are its files. The environment is the process's own
(/proc/PID/environ, read before joining: a container's /proc shows other pids).
"""
from __future__ import annotations

import os

from .target import AgentLog, Target, TargetError
from .local import fork_agent, libc, serving

CLONE_FS, CLONE_NEWNET, CLONE_NEWUTS, CLONE_NEWNS = 0x00000200, 0x40000000, 0x04000000, 0x00020000
NAMESPACES = (("net", CLONE_NEWNET), ("uts", CLONE_NEWUTS), ("mnt", CLONE_NEWNS))  # mnt last


def parse_environ(raw: bytes) -> dict[str, str]:
    """/proc/PID/environ: NUL-terminated KEY=VALUE entries."""
    env = {}
    for entry in raw.split(b"\0"):
        key, eq, value = entry.partition(b"=")
        if eq and key:
            env[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    return env


def _enter(pid: int):
    """In the child: take the process's environment, then join its namespaces."""
    import socket

    socket.getaddrinfo("localhost", None)  # glibc loads its resolver modules now, from this host
    lib, check = libc()
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = parse_environ(f.read())
    fds = [(os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), name, kind)
           for name, kind in NAMESPACES]
    # This thread alone joins them: another still imports the agent from this host's files
    # (targets/early.py), and a mount namespace is joined only by a thread with its own root
    # and working directory.
    try:
        check(lib.unshare(CLONE_FS), "unsharing the working directory")
        for fd, name, kind in fds:
            check(lib.setns(fd, kind), f"entering the {name} namespace of process {pid}")
    finally:
        for fd, _, _ in fds:
            os.close(fd)
    os.chdir("/")  # the old directory is this host's, not a path in the target's tree
    return serving(lambda: dict(env))


def start_agent(spec: str, wait: bool = True, log: AgentLog | None = None) -> Target:
    """Fork the agent into the namespaces of process `spec` (a pid)."""
    if not spec.isdigit() or int(spec) <= 0:
        raise TargetError(f"pid:{spec}: give a process id, e.g. pid:1234 (`pgrep NAME` finds one)")
    pid = int(spec)
    if os.geteuid() != 0:
        raise TargetError(f"pid:{pid} needs root (joining another process's namespaces does): "
                          "run tether as root, e.g. with sudo")
    if not os.path.exists(f"/proc/{pid}/ns/net"):
        raise TargetError(f"no process {pid} (it may have exited; `ps -p {pid}` shows it while it runs)")
    return fork_agent(f"pid:{pid}", _enter, (pid,), wait, log)
