"""`netns:NAME`: a network namespace made with `ip netns add`.

The agent (forked, targets/local.py) joins the namespace (setns on /run/netns/NAME) and, in a
mount namespace of its own, mounts /etc/netns/NAME/* over /etc/* as `ip netns exec` does, so
it sees the namespace's resolv.conf, hosts and environment (which it reports as the target's).
"""
from __future__ import annotations

import os
from pathlib import Path

from .target import AgentLog, Target, TargetError
from .local import fork_agent, libc, serving

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")
CLONE_NEWNET, CLONE_NEWNS = 0x40000000, 0x00020000
MS_BIND, MS_REC, MS_SLAVE = 4096, 16384, 1 << 19


def _enter(name: str):
    """In the child: join the namespace and see its /etc/netns files over /etc."""
    from ..agent.env import target_env

    lib, check = libc()
    fd = os.open(NETNS_DIR / name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(lib.setns(fd, CLONE_NEWNET), f"entering network namespace {name}")
    finally:
        os.close(fd)
    check(lib.unshare(CLONE_NEWNS), "making a mount namespace")
    check(lib.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None), "making / a mount slave")
    etc = ETC_NETNS / name
    if etc.is_dir():
        for entry in sorted(etc.iterdir()):
            target = Path("/etc") / entry.name
            if target.exists() or target.is_symlink():
                check(lib.mount(bytes(entry), bytes(target), b"none", MS_BIND, None),
                      f"mounting {entry} over {target}")
    return serving(lambda: target_env("/etc/environment"))


def start_agent(name: str, wait: bool = True, log: AgentLog | None = None) -> Target:
    """Fork the agent into namespace name; with wait, also until it answers (Target.ready)."""
    if os.geteuid() != 0:
        raise TargetError(f"netns:{name} needs root (joining a network namespace does): "
                          "run tether as root, e.g. with sudo")
    if not name or "/" in name or not (NETNS_DIR / name).exists():
        known = ", ".join(sorted(p.name for p in NETNS_DIR.iterdir())) if NETNS_DIR.is_dir() else ""
        raise TargetError(f"no network namespace {name!r} (`ip netns list` shows: {known or 'none'}); "
                          f"create it with `ip netns add {name}`")
    return fork_agent(f"netns:{name}", _enter, (name,), wait, log)
