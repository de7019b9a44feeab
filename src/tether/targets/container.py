"""`container:NAME`, `podman:NAME`, `docker:NAME`: a running container, by its name or id.

The runtime is asked for the container's main process (`inspect`), and from there it is a
pid: target (targets/pid.py): the container's network, DNS, environment and files. container:
asks podman, then docker, whichever is installed and knows the name.
"""
from __future__ import annotations

import shutil
import subprocess

from . import pid
from .target import AgentLog, Target, TargetError

RUNTIMES = ("podman", "docker")


class NotRunning(TargetError):
    """The runtime knows the container, and it is stopped."""
FORMAT = "{{.State.Pid}} {{.State.Status}}"
INSPECT_TIMEOUT_S = 30


def main_pid(runtime: str, name: str) -> int:
    """The container's main process, asking `runtime`; TargetError names what is wrong."""
    exe = shutil.which(runtime)
    if exe is None:
        raise TargetError(f"{runtime}:{name}: {runtime} is not installed (or not on PATH)")
    try:
        r = subprocess.run([exe, "inspect", "--type", "container", "--format", FORMAT, name],
                           capture_output=True, text=True, timeout=INSPECT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TargetError(f"{runtime}:{name}: `{runtime} inspect` gave no answer in {INSPECT_TIMEOUT_S} s") from None
    if r.returncode != 0:
        why = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit status {r.returncode}"
        raise TargetError(f"{runtime}:{name}: {runtime} does not know it ({why}); `{runtime} ps -a` lists "
                          "the containers it knows")
    fields = r.stdout.split()
    if len(fields) != 2 or not fields[0].isdigit():
        raise TargetError(f"{runtime}:{name}: `{runtime} inspect` said {r.stdout.strip()!r}")
    if fields[1] != "running" or int(fields[0]) == 0:
        raise NotRunning(f"{runtime}:{name}: the container is {fields[1]}, not running: "
                         f"`{runtime} start {name}` starts it")
    return int(fields[0])


def start_agent(runtime: str, name: str, wait: bool = True, log: AgentLog | None = None) -> Target:
    """The container's pid: target; runtime "container" tries each runtime installed."""
    if not name:
        raise TargetError(f"{runtime}:NAME: give a container's name or id, e.g. {runtime}:web")
    if runtime != "container":
        return pid.start_agent(str(main_pid(runtime, name)), wait, log)
    installed = [r for r in RUNTIMES if shutil.which(r)]
    if not installed:
        raise TargetError(f"container:{name}: no container runtime found (podman or docker); install one, "
                          "or give the container's process as pid:PID")
    errors = []
    for r in installed:
        try:
            return pid.start_agent(str(main_pid(r, name)), wait, log)
        except NotRunning:
            raise  # found, stopped: what the others say of the name does not matter
        except TargetError as e:
            errors.append(str(e))
    raise TargetError("; ".join(errors))
