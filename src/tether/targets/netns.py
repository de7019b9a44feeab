"""`netns:NAME`: a network namespace made with `ip netns add`, reached by starting the agent
inside it (`ip netns exec NAME`), which also brings /etc/netns/NAME/* (resolv.conf, hosts)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from ..session.agent_link import AgentLink, LinkError

NETNS_DIR = Path("/run/netns")


class TargetError(Exception):
    """The target cannot be used; the message names the fix."""


def start_agent(name: str) -> tuple[subprocess.Popen, AgentLink]:
    if os.geteuid() != 0:
        raise TargetError(f"netns:{name} needs root (ip netns exec enters the namespace): "
                          "run tether as root, e.g. with sudo")
    if "/" in name or not (NETNS_DIR / name).exists():
        known = ", ".join(sorted(p.name for p in NETNS_DIR.iterdir())) if NETNS_DIR.is_dir() else ""
        raise TargetError(f"no network namespace {name!r} (`ip netns list` shows: {known or 'none'}); "
                          f"create it with `ip netns add {name}`")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-m", "tether", "agent", "--fd", str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    finally:
        theirs.close()
    link = AgentLink(ours)
    try:
        link.hello()
    except LinkError as e:
        proc.kill()
        _, err = proc.communicate(timeout=5)
        link.close()
        detail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise TargetError(f"the agent in netns:{name} did not start: {e} {detail[0]}".strip()) from None
    return proc, link
