"""What a target is, for every kind: the agent's link, its process, and how it is closed."""
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
        self.capabilities = 0  # what the agent announced in its hello (agent_wire.CAP_*)

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
