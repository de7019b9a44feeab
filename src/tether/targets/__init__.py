"""Targets: where a program's syscalls go, and how the agent there is reached.

`open_target(spec)` gives a Target whose link is ready (hello done). Kinds: netns:NAME and
pid:PID (targets/local.py forks their agents), container:NAME, podman:NAME and docker:NAME (a
pid: target, the runtime asked for the pid: targets/container.py), tcp://HOST:PORT and
unix:PATH (a running `tether agent --listen`, reached through a forked stand-in:
targets/remote.py). A kind is one module with a start_agent that gives a Target.
"""
from __future__ import annotations

from .target import AgentLog, Target, TargetError

KINDS = ("netns:NAME (a namespace made with `ip netns add NAME`), pid:PID (a running process's namespaces), "
         "container:NAME, podman:NAME or docker:NAME (a running container), ssh://[USER@]HOST[:PORT], "
         "tcp://HOST:PORT or unix:PATH (a running `tether agent --listen`, with --token-file)")


def open_target(spec: str, wait: bool = True, token_file: str | None = None, log: AgentLog | None = None,
                ssh_options: tuple[str, ...] = ()) -> Target:
    """The target spec names, its agent started; with wait=False the caller does other work
    while the agent starts and then calls Target.ready(). token_file: for network agents;
    log: the agent's debug log."""
    kind, sep, rest = spec.partition(":")
    if kind == "netns" and sep:
        from . import netns

        return netns.start_agent(rest, wait, log)
    if kind == "pid" and sep:
        from . import pid

        return pid.start_agent(rest, wait, log)
    if kind in ("container", "podman", "docker") and sep:
        from . import container

        return container.start_agent(kind, rest, wait, log)
    if kind == "ssh" and rest.startswith("//"):
        from . import ssh

        return ssh.start_agent(spec, ssh_options, wait, log)
    if (kind == "tcp" and rest.startswith("//")) or (kind == "unix" and sep):
        from . import remote

        return remote.start_agent(spec, token_file, wait, log)
    raise TargetError(f"unknown target {spec!r}; targets: {KINDS}")
