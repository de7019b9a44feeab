"""Targets: where a program's syscalls go, and how the agent there is reached.

`open_target(spec)` gives a Target whose link is ready (hello done). Kinds today: netns:NAME.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass

from ..session.agent_link import AgentLink


class TargetError(Exception):
    """The target cannot be used; the message names the fix."""


@dataclass
class Target:
    spec: str
    link: AgentLink
    proc: object | None  # the agent when tether started it (wait, kill, poll as subprocess.Popen's)

    def close(self) -> None:
        self.link.close()  # the agent exits when its session hangs up
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


KINDS = "netns:NAME (a namespace made with `ip netns add NAME`)"


def open_target(spec: str) -> Target:
    kind, sep, rest = spec.partition(":")
    if kind == "netns" and sep:
        from . import netns

        proc, link = netns.start_agent(rest)
        return Target(spec, link, proc)
    raise TargetError(f"unknown target {spec!r}; targets: {KINDS}")
