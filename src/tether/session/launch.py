"""Start a program under the layer and serve it until it and its children are done."""
from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..analysis import ELF_MAGIC, ElfError
from ..analysis.cache import inspect_binary
from ..analysis.elf import ElfFile
from ..layer import STATIC_LIBRARY_NAME, CannotHookError, go_plan, layer_path, preload_env
from ..protocol import layer_wire
from . import inject
from .server import LayerServer


class LaunchError(Exception):
    """The program cannot be started; the message says why and what to do."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def resolve(program: str) -> Path:
    """The executable `program` names, as a shell would find it."""
    found = shutil.which(program) if "/" not in program else program
    if found is None or not Path(found).exists():
        raise LaunchError(f"{program}: command not found", 127)
    path = Path(found)
    if not os.access(path, os.X_OK) or path.is_dir():
        raise LaunchError(f"{program}: permission denied (not an executable file)", 126)
    return path


def hook_method(path: Path) -> str:
    """How the layer gets into `path`: "preload" or "inject" (a static Go program), refusing
    up front what cannot be hooked. A script's interpreter is analysed when it starts."""
    with open(path, "rb") as f:
        if f.read(4) != ELF_MAGIC:
            return "preload"
    try:
        report = inspect_binary(path)
        go_plan(report)  # raises for a Go program tether refuses
    except (ElfError, CannotHookError) as e:
        raise LaunchError(f"cannot hook {path}: {e}") from None
    verdict = report["verdict"]
    if not verdict["supported"]:
        raise LaunchError(f"cannot hook {path}: {verdict['reason']}; {verdict['fix']}")
    return verdict["hook"]


def program_env(base: Mapping[str, str], session: str) -> dict[str, str]:
    """The layer's environment, on top of base: LD_PRELOAD and TETHER_SESSION.

    No plan goes into it: every process asks the session for its own (HELLO)."""
    env = preload_env(dict(base))
    env.pop("TETHER_GO_PLAN", None)  # one inherited from the caller would not be this program's
    env["TETHER_SESSION"] = session
    return env


def injected_env(base: Mapping[str, str], session: str) -> tuple[dict[str, str], dict[str, str]]:
    """For a static program: its environment, as base without the layer's variables, and the
    injected layer's own (session/inject.py), which passes them on to the programs it execs."""
    program = {k: v for k, v in base.items() if k != "TETHER_GO_PLAN"}
    layer = {k: v for k, v in program_env(base, session).items() if k.startswith("TETHER_") or k == "LD_PRELOAD"}
    return program, layer


def _exit_watch(pid: int, server: LayerServer) -> int | None:
    """A pidfd in the server's selector, so that its poll returns the moment the program
    exits (else the loop notices within its poll interval)."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        return None
    server.sel.register(fd, selectors.EVENT_READ, "exit")
    return fd


def _unwatch(fd: int | None, server: LayerServer) -> None:
    if fd is not None:
        server.sel.unregister(fd)
        os.close(fd)


def run(argv: list[str], server: LayerServer, base_env: Mapping[str, str] | None = None,
        started: Callable[[int], None] = lambda pid: None) -> int:
    """Run argv under the layer, serving `server` meanwhile; returns the shell-style status.

    base_env is the program's environment before the layer's variables (default: ours).
    `started` gets the program's pid before any of its syscalls is served (a static program's
    layer has said hello by then: session/inject.py)."""
    path = resolve(argv[0])
    method = hook_method(path)
    base = os.environ if base_env is None else base_env
    static_env, layer_env = injected_env(base, server.path)
    # Static programs it execs get the layer at their exec too (EXEC_NOTICE, inject.ExecWatch).
    server.inject_layer = (layer_path(STATIC_LIBRARY_NAME), layer_env)
    server.mode |= layer_wire.MODE_INJECT
    # The terminal's ^C and ^\ reach the program directly; tether stays to report its end.
    old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGQUIT)}
    exited = None
    try:
        # argv[0] as typed, as a shell passes it; the file found for it is what runs.
        executable = str(path.absolute())
        if method == "inject":
            try:
                proc = inject.spawn(argv, executable, static_env, *server.inject_layer,
                                    pump=lambda: server.poll(inject.POLL_S))
            except inject.InjectError as e:
                raise LaunchError(f"cannot hook {path}: {e}") from None
        else:
            proc = subprocess.Popen(argv, env=program_env(base, server.path), executable=executable)
        started(proc.pid)
        forward = lambda sig, _frame: proc.send_signal(sig)  # noqa: E731
        for s in (signal.SIGTERM, signal.SIGHUP):
            old.setdefault(s, signal.signal(s, forward))
        exited = _exit_watch(proc.pid, server)
        # While the program is attached for an exec (it execs a static program itself), its
        # stops are the watch's: waiting for it here would take them.
        while server.watching(proc.pid) or proc.poll() is None:
            server.poll(0.05)
        exited = _unwatch(exited, server)  # readable from now on: it would wake every poll
        server.drain()
        # The shell's convention: the exit status, or 128+N for signal N.
        return proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    finally:
        _unwatch(exited, server)  # also when serving failed: the server's close() closes only sockets
        for s, handler in old.items():
            signal.signal(s, handler)


def attach(pid: int, server: LayerServer, duration: float | None = None,
           started: Callable[[int], None] = lambda pid: None) -> int:
    """Serve the running Go program pid with the layer loaded into it (inject.attach), until
    ^C, `duration` seconds or its end; then switch its hooks off and let it run on as before.
    Returns 0; LaunchError when it cannot be attached to (the reason names the fix)."""
    funnel, patched, static = _attach_plan(pid)
    _, layer_env = injected_env(os.environ, server.path)
    server.inject_layer = (layer_path(STATIC_LIBRARY_NAME), layer_env)
    server.mode |= layer_wire.MODE_INJECT
    stop = []
    old = {s: signal.signal(s, lambda sig, _frame: stop.append(sig)) for s in (signal.SIGINT, signal.SIGTERM)}
    exited = None
    try:
        try:
            attached = inject.attach(pid, *server.inject_layer, funnel, patched, static,
                                     pump=lambda: server.poll(inject.POLL_S))
        except PermissionError:
            raise LaunchError(f"ptrace refused attaching to process {pid}: run tether as root (CAP_SYS_PTRACE), "
                              "or allow it (sysctl kernel.yama.ptrace_scope=0 or 1)") from None
        except (inject.InjectError, OSError) as e:
            raise LaunchError(f"cannot attach to process {pid}: {e}") from None
        started(pid)
        exited = _exit_watch(pid, server)
        end = None if duration is None else time.monotonic() + duration
        while not stop and (end is None or time.monotonic() < end) and os.path.exists(f"/proc/{pid}/exe"):
            server.poll(0.05 if end is None else max(0.0, min(0.05, end - time.monotonic())))
        attached.detach()
        exited = _unwatch(exited, server)
        server.drain(quiet=0.2)
        return 0
    finally:
        _unwatch(exited, server)
        for s, handler in old.items():
            signal.signal(s, handler)


def _attach_plan(pid: int) -> tuple[int, list[tuple[int, int]], bool]:
    """For attaching to pid: its funnel's address, the other ranges the layer patches, and
    whether it is static; LaunchError for what cannot be attached to."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        report = inspect_binary(exe)
        with ElfFile(exe) as elf:
            bias = inject.entry_of(pid) - elf.e_entry  # where it was loaded (PIE)
    except FileNotFoundError:
        raise LaunchError(f"no process {pid}") from None
    except PermissionError:
        raise LaunchError(f"process {pid}: not permitted to look at it; run tether as root") from None
    except (ElfError, OSError) as e:
        raise LaunchError(f"process {pid}: {e}") from None
    verdict = report["verdict"]
    if report["go"] is None or not verdict["supported"]:
        why = verdict["reason"] if report["go"] is not None else "not a Go program"
        raise LaunchError(f"cannot attach to process {pid} ({exe}): {why}; tether attaches to Go programs "
                          f"only: start it under tether instead (tether trace -- {Path(exe).name} ...)")
    hooks = {h["role"]: (bias + h["address"], h["code"]) for h in report["hooks"]}
    funnel, code = hooks["syscall-funnel"]
    if inject.read_memory(pid, funnel, 6).hex() != code[:12]:
        # The layer would refuse a funnel that is not the plan's, and end the program: say so here.
        raise LaunchError(f"process {pid} was hooked by tether before (its Go syscall entry is patched; the "
                          "hooks were switched off when that tether detached); attaching again is not "
                          "supported: restart the program to trace it again")
    patched = [(hooks["vfork"][0], hooks["vfork"][0] + 14)] if "vfork" in hooks else []
    return funnel, patched, report["linkage"] == "static"
