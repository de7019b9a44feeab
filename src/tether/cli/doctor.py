"""`tether doctor`: what this machine offers tether, what each missing part disables, and the fix."""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from .parsing import add_command

CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_NET_ADMIN = 19, 21, 12


class Check(NamedTuple):
    ok: bool
    name: str
    found: str  # what was found, in a few words
    needed_for: str  # what works only with it
    fix: str = ""  # what to do when it is missing


def add_to(commands) -> None:
    add_command(commands, "doctor", run)


def run(args: argparse.Namespace) -> None:
    """Check what this machine offers tether, and what each missing part disables.

      tether doctor          # as the user that will run tether (root for most targets)

    Looks at: privileges, the layer's two builds, glibc, the kernel's namespaces, ptrace
    (its Yama scope, and whether this process may trace a child), nftables, seccomp, and a Go
    toolchain for `tether demo`. Each line says what was found; a missing part says what it
    disables and how to fix it. Exit status 0 when everything is there, 1 otherwise.
    """
    checks = [check() for check in CHECKS]
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{'ok  ' if c.ok else 'MISS'}  {c.name:<{width}}  {c.found}")
        if not c.ok:
            print(f"      {'':<{width}}  disables: {c.needed_for}")
            if c.fix:
                print(f"      {'':<{width}}  fix: {c.fix}")
    missing = sum(not c.ok for c in checks)
    print(f"{len(checks) - missing} of {len(checks)} checks passed" + (f"; {missing} missing" if missing else ""))
    sys.exit(1 if missing else 0)


def _capabilities() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def privileges() -> Check:
    caps = _capabilities()
    wanted = {"CAP_SYS_ADMIN": CAP_SYS_ADMIN, "CAP_NET_ADMIN": CAP_NET_ADMIN, "CAP_SYS_PTRACE": CAP_SYS_PTRACE}
    lacking = [name for name, bit in wanted.items() if not caps >> bit & 1]
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    return Check(not lacking, "privileges", f"{who}" + (f", without {', '.join(lacking)}" if lacking else ""),
                 "netns: and pid: targets (joining namespaces), static Go programs under another user's "
                 "session, tether trace -p", "run tether as root: sudo tether ...")


def layer() -> Check:
    from ..layer import STATIC_LIBRARY_NAME, LayerNotFoundError, layer_path
    from ..session import inject

    try:
        paths = [layer_path(), layer_path(STATIC_LIBRARY_NAME)]
        inject.image(paths[1])  # only RELATIVE relocations, an entry point: loadable by the injector
    except (LayerNotFoundError, inject.InjectError) as e:
        return Check(False, "layer", str(e).split(". ")[0], "everything: the layer is what tether loads",
                     "reinstall tether (pip or pipx install, see README's Set-up)")
    return Check(True, "layer", ", ".join(f"{p.name} ({p.stat().st_size // 1024} KiB)" for p in paths),
                 "everything")


def glibc() -> Check:
    version = os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names else ""
    parts = version.split()[-1].split(".") if version else []
    ok = len(parts) >= 2 and (int(parts[0]), int(parts[1])) >= (2, 34)
    return Check(ok, "glibc", version or "not glibc",
                 "programs that use libc and dynamically linked Go programs (libtether.so's dlsym)",
                 "a distribution with glibc 2.34 or newer (Debian 12, Ubuntu 22.04 and later)")


def kernel() -> Check:
    release = platform.release()
    major, minor = (int(x) for x in release.split(".")[:2])
    return Check((major, minor) >= (5, 12), "kernel", f"Linux {release}",
                 "incoming traffic's redirects that die with tether (nftables owner flag, 5.12)",
                 "a kernel 5.12 or newer")


def namespaces() -> Check:
    kinds = [k for k in ("net", "mnt", "pid", "user") if Path(f"/proc/self/ns/{k}").exists()]
    ok = {"net", "mnt"} <= set(kinds)
    return Check(ok, "namespaces", " ".join(kinds) or "none",
                 "netns: and pid: targets (network and mount namespaces)",
                 "a kernel built with CONFIG_NET_NS and CONFIG_NAMESPACES")


def ptrace() -> Check:
    scope_file = Path("/proc/sys/kernel/yama/ptrace_scope")
    scope = scope_file.read_text().strip() if scope_file.exists() else "no Yama"
    works = _can_trace_a_child()
    ok = works and scope != "3"
    found = f"Yama ptrace_scope {scope}; " + ("tracing a child works" if works else "tracing a child is refused")
    return Check(ok, "ptrace", found,
                 "static Go programs (the layer is loaded at their exec with ptrace) and tether trace -p",
                 "kernel.yama.ptrace_scope below 3 (3 needs a reboot to lower); in a container, "
                 "CAP_SYS_PTRACE and a seccomp profile that permits ptrace")


def _can_trace_a_child() -> bool:
    from ..session import inject

    try:
        proc = subprocess.Popen(["/bin/true"], preexec_fn=inject.traceme, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return False
    _, status = os.waitpid(proc.pid, 0)
    traced = os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP
    if os.WIFSTOPPED(status):
        os.kill(proc.pid, signal.SIGKILL)
        os.waitpid(proc.pid, 0)
    proc.returncode = 0  # reaped here
    return traced


def _nf_tables_answers() -> bool:
    """Whether the kernel's nf_tables answers a GETGEN request (netlink, NETLINK_NETFILTER)."""
    import socket
    import struct

    nfnl_subsys_nftables, nft_msg_getgen, nft_msg_newgen = 10, 16, 15
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12) as s:
            s.settimeout(2)
            s.send(struct.pack("=IHHII", 20, nfnl_subsys_nftables << 8 | nft_msg_getgen, 1, 1, 0) + bytes(4))
            reply = s.recv(4096)
    except OSError:
        return False
    return len(reply) >= 16 and struct.unpack_from("=H", reply, 4)[0] == nfnl_subsys_nftables << 8 | nft_msg_newgen


def nftables() -> Check:
    built = _nf_tables_answers()
    return Check(built, "nftables", "nf_tables answers" if built else "nf_tables does not answer",
                 "incoming traffic to ports the target's own app serves (steal and mirror redirect there)",
                 "modprobe nf_tables (or a kernel with CONFIG_NF_TABLES)")


def seccomp() -> Check:
    actions = Path("/proc/sys/kernel/seccomp/actions_avail")
    avail = actions.read_text().split() if actions.exists() else []
    ok = "user_notif" in avail
    return Check(ok, "seccomp", "user notification available" if ok else "no seccomp user notification",
                 "nothing yet (kept for injection without ptrace)", "a kernel with CONFIG_SECCOMP_FILTER")


def go_toolchain() -> Check:
    from ..demo import DemoError, find_go

    try:
        go = find_go()
    except DemoError as e:
        return Check(False, "Go toolchain", str(e), "tether demo's Go client (it uses Python then)",
                     "unset TETHER_DEMO_GO or point it at a go command")
    if go is None:
        return Check(False, "Go toolchain", "none found", "tether demo's Go client (it uses Python instead)",
                     "apt-get install golang-go, or TETHER_DEMO_GO=/path/to/go")
    version = subprocess.run([go, "version"], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "GOTOOLCHAIN": "local"}).stdout.strip()
    return Check(True, "Go toolchain", version or go, "tether demo's Go client")


def iproute() -> Check:
    ip = shutil.which("ip")
    return Check(ip is not None, "ip (iproute2)", ip or "not found",
                 "making network namespaces to use as netns: targets, and tether demo",
                 "apt-get install iproute2")


CHECKS: list[Callable[[], Check]] = [privileges, layer, glibc, kernel, namespaces, ptrace, nftables, seccomp,
                                     iproute, go_toolchain]
