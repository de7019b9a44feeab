"""Targets: where a program's syscalls go, and how the agent there is reached.

`open_target(spec)` gives a Target whose link is ready (hello done). Kinds: netns:NAME and
pid:PID (targets/local.py forks their agents), tcp://HOST:PORT and unix:PATH (a running
`tether agent --listen`, reached through a forked stand-in: targets/remote.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the link's module is imported once the agent is on its way
    from pathlib import Path

    from ..session.agent_link import AgentLink


# A debug log for the agent: (file, logging format, level).
AgentLog = tuple[str, str, int]


class TargetError(Exception):
    """The target cannot be used; the message names the fix."""


class Target:
    # A plain class: this package is imported before the agent's process is forked, and
    # dataclasses (inspect, ast, ...) would cost both processes ~12 ms of start-up.
    def __init__(self, spec: str, link: AgentLink, proc: object | None, agent_socket: str = "",
                 workdir: Path | None = None):
        self.spec = spec
        self.link = link
        self.proc = proc  # the agent when tether started it (wait, kill, poll as subprocess.Popen's)
        self.agent_socket = agent_socket  # where hooked processes reach the agent directly (same host)
        self.workdir = workdir  # made for this target, removed by close()
        self.capabilities = 0  # what the agent announced in its hello (wire.CAP_*)

    def ready(self) -> None:
        """Wait until the agent answers its hello; TargetError (and all cleaned up) if not."""
        from ..session.agent_link import AgentError, LinkError

        try:
            _, self.capabilities = self.link.hello()
        except (LinkError, AgentError) as e:
            if self.proc is not None:
                self.proc.kill()
            self.close()
            if isinstance(e, AgentError):  # the stand-in for a network agent says why it cannot reach it
                raise TargetError(f"{self.spec}: {e}") from None
            raise TargetError(f"the agent for {self.spec} did not start: {e}") from None

    def close(self) -> None:
        import shutil
        import subprocess

        self.link.close()  # the agent exits when its session hangs up
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


KINDS = ("netns:NAME (a namespace made with `ip netns add NAME`), pid:PID (a running process's namespaces), "
         "tcp://HOST:PORT or unix:PATH (a running `tether agent --listen`, with --token-file)")


def open_target(spec: str, wait: bool = True, token_file: str | None = None, log: AgentLog | None = None) -> Target:
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
    if (kind == "tcp" and rest.startswith("//")) or (kind == "unix" and sep):
        from . import remote

        return remote.start_agent(spec, token_file, wait, log)
    raise TargetError(f"unknown target {spec!r}; targets: {KINDS}")
