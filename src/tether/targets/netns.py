"""`netns:NAME`: a network namespace made with `ip netns add`, reached by starting the agent
inside it (`ip netns exec NAME`), which also mounts /etc/netns/NAME/* over /etc/* for it:
resolv.conf and hosts as the namespace sees them, and /etc/environment, which the agent
reports as the target's environment."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from ..session.agent_link import AgentLink, LinkError
from . import TargetError

NETNS_DIR = Path("/run/netns")


def start_agent(name: str, on_log: Callable[[str], None] = lambda line: None
                ) -> tuple[subprocess.Popen, AgentLink]:
    if os.geteuid() != 0:
        raise TargetError(f"netns:{name} needs root (ip netns exec enters the namespace): "
                          "run tether as root, e.g. with sudo")
    if not name or "/" in name or not (NETNS_DIR / name).exists():
        known = ", ".join(sorted(p.name for p in NETNS_DIR.iterdir())) if NETNS_DIR.is_dir() else ""
        raise TargetError(f"no network namespace {name!r} (`ip netns list` shows: {known or 'none'}); "
                          f"create it with `ip netns add {name}`")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        # Its own session: the terminal's ^C is for the program, not for the agent.
        proc = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-m", "tether", "agent",
             "--fd", str(theirs.fileno()), "--env-file", "/etc/environment"],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True)
    finally:
        theirs.close()
    lines: list[str] = []

    def pump() -> None:  # the agent's complaints, as they come
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            on_log(line)

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    link = AgentLink(ours)
    try:
        link.hello()
    except LinkError as e:
        proc.kill()
        proc.wait(timeout=5)
        pumping.join(timeout=2)
        link.close()
        detail = (lines[-1:] or [""])[0]
        raise TargetError(f"the agent in netns:{name} did not start: {e} {detail}".strip()) from None
    return proc, link
