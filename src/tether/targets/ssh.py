"""`ssh://[USER@]HOST[:PORT]`: a machine reached with the system's OpenSSH client.

One `ssh` connection carries everything: the agent, tether's agent code zipped (zipapp) and
sent on ssh's stdin, runs from memory in the host's python3 (>= 3.9: memfd, zipimport), so
nothing is written there; it listens on the host's loopback and ends when ssh's stdin
closes. ssh forwards a local port to it (-L), so the agent is a network agent to tether:
the stand-in (agent/forward.py) proves a token made for this run and relays each of the
program's connections over a channel of the same ssh connection, and when the connection
drops, makes it again (Ssh, its prepare). Everything ssh itself reads applies as it does for `ssh HOST`: the
user's ~/.ssh/config (from the passwd home), keys, ssh-agent, ProxyJump, known_hosts (host
keys are checked as ssh checks them); --ssh-option adds `-o` options. No crypto of ours.
"""
from __future__ import annotations

import io
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import zipfile
from pathlib import Path

from .local import fork_agent
from .target import AgentLog, Target, TargetError

READY_TIMEOUT_S = 30  # connecting, authenticating, python3 starting the agent
# Run by the host's python3 -c: the agent's zipapp arrives on stdin after its length, and is
# imported from a memfd; then the token (a line), after which stdin stays open: its end is
# the agent's end. argv[1]: the loopback port the agent listens on there.
BOOT = """\
import os, sys
if sys.version_info < (3, 9):
    sys.exit("tether: python3 here is %d.%d; the agent needs 3.9 or newer" % sys.version_info[:2])
n = int(sys.stdin.buffer.readline())
fd = os.memfd_create("tether-agent")
os.write(fd, sys.stdin.buffer.read(n))
sys.path.insert(0, "/proc/self/fd/%d" % fd)
import tether_ssh_agent
tether_ssh_agent.main(sys.argv[1])
"""
# The zipapp's entry: the agent, listening on the socket until stdin ends.
ENTRY = """\
import asyncio, os, sys, threading


def main(port):
    token = sys.stdin.buffer.readline().strip()
    from tether.agent.listen import parse_address, serve_listen

    async def serve():
        loop, task = asyncio.get_running_loop(), asyncio.current_task()

        def watch():  # ssh's stdin ends when tether's side goes away
            sys.stdin.buffer.read()
            loop.call_soon_threadsafe(task.cancel)

        threading.Thread(target=watch, daemon=True).start()
        await serve_listen(parse_address("tcp:127.0.0.1:" + port), token, lambda: dict(os.environ),
                           on_ready=lambda where: print("tether agent: listening on", where, file=sys.stderr,
                                                        flush=True))
    try:
        asyncio.run(serve())
    except asyncio.CancelledError:
        pass
    except OSError as e:
        sys.exit("tether: the agent cannot listen on 127.0.0.1:%s there: %s" % (port, e.strerror or e))
"""
# What ssh says, and what tether says instead (with the fix).
SSH_ERRORS = (
    ("Host key verification failed", "the host's key is not the one known_hosts has for it (or none is known): "
     "check it with `ssh {dest}` (accepting a new key there), or remove a stale one with `ssh-keygen -R HOST`"),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "the host's key changed since known_hosts learned it: if that is "
     "expected, `ssh-keygen -R HOST` and connect once with `ssh {dest}`"),
    ("Permission denied", "authentication failed: `ssh {dest}` must work on its own first (a key, ssh-agent, "
     "~/.ssh/config), and without a password prompt when tether has no terminal"),
    ("Could not resolve hostname", "the host name does not resolve here"),
    ("Connection refused", "nothing accepts ssh connections there (is sshd running, on that port?)"),
    ("Connection timed out", "the host does not answer"),
    ("No route to host", "the host is not reachable from here"),
)


def parse(spec: str) -> tuple[str, str | None]:
    """ssh://[USER@]HOST[:PORT] -> (ssh's destination, its port or None)."""
    rest = spec.removeprefix("ssh://")
    if not rest or "/" in rest:
        raise TargetError(f"{spec}: give ssh://[USER@]HOST[:PORT], e.g. ssh://deploy@staging.example.com")
    user, at, hostport = rest.rpartition("@")
    host, port = hostport, None
    if hostport.startswith("["):  # [IPv6]:PORT
        host, _, tail = hostport[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else None
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    if not host or (port is not None and not port.isdigit()):
        raise TargetError(f"{spec}: give ssh://[USER@]HOST[:PORT] (PORT a number)")
    return f"{user}{at}{host}", port


def start_agent(spec: str, ssh_options: tuple[str, ...] = (), wait: bool = True,
                log: AgentLog | None = None) -> Target:
    dest, port = parse(spec)
    if shutil.which("ssh") is None:
        raise TargetError(f"{spec}: the ssh command is not installed (apt-get install openssh-client)")
    for option in ssh_options:
        if "=" not in option and " " not in option:
            raise TargetError(f"--ssh-option {option!r}: give it as ssh's -o takes it, e.g. ConnectTimeout=5")
    token = secrets.token_hex(32).encode()
    return fork_agent(spec, _enter, (dest, port or "", tuple(ssh_options), token, spec), wait, log)


def zipapp() -> bytes:
    """tether's agent and what it imports (the wire, descriptor passing), as one zip file."""
    import tether.agent

    package = Path(tether.agent.__file__).resolve().parent.parent
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("tether_ssh_agent.py", ENTRY)
        for path in [package / "__init__.py", package / "fdpass.py", *sorted((package / "agent").glob("*.py")),
                     *sorted((package / "protocol").glob("*.py"))]:
            z.write(path, "tether/" + path.relative_to(package).as_posix())
    return out.getvalue()


def _enter(dest: str, port: str, options: tuple, token: bytes, spec: str):
    """In the agent's process: be the stand-in here for the agent that ssh starts there."""
    from ..agent.forward import serving
    from ..agent.listen import Address

    with socket.socket() as probe:  # a free port for ssh's -L (ExitOnForwardFailure if taken meanwhile)
        probe.bind(("127.0.0.1", 0))
        local_port = probe.getsockname()[1]
    return None, serving((Address("tcp", "127.0.0.1", local_port), token, "", spec, None),
                         prepare=Ssh(dest, port, options, token, local_port))


class Ssh:
    """The ssh connection that carries the agent, (re)started by the stand-in before each
    connection to it (agent/forward.py's prepare): a dropped one is made again."""

    def __init__(self, dest: str, port: str, options: tuple, token: bytes, local_port: int):
        self.dest, self.port, self.options, self.token, self.local_port = dest, port, options, token, local_port
        self.proc: subprocess.Popen | None = None

    def __call__(self) -> str | None:
        """ssh to dest, start the agent there, forward local_port to it; None, or why not.
        The agent listens on the host's loopback (the token keeps others out), on a port
        picked at random: one taken there is tried again with another."""
        if self.proc is not None:  # the last one, gone or going: its agent ends with it
            self.proc.kill()
            self.proc.wait()
        for _ in range(3):
            why = self._start_once(20000 + secrets.randbelow(40000))
            if not why or "cannot listen" not in why:
                return why
        return why

    def _start_once(self, remote_port: int) -> str | None:
        dest, port, options, token, local_port = self.dest, self.port, self.options, self.token, self.local_port
        argv = ["ssh", "-T", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=5",
                "-L", f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}"]
        for option in options:
            argv += ["-o", option]
        if port:
            argv += ["-p", port]
        argv += [dest, shlex.join(["python3", "-c", BOOT, str(remote_port)])]
        code = zipapp()
        ssh = self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
        try:
            ssh.stdin.write(b"%d\n" % len(code) + code + token + b"\n")
            ssh.stdin.flush()
        except BrokenPipeError:
            pass  # ssh ended already: its stderr says why
        said = _wait_until_listening(ssh)
        if said is None:
            return None
        try:
            ssh.wait(timeout=5)  # it has said its last, or the time is up
        except subprocess.TimeoutExpired:
            ssh.kill()
            return f"no agent after {READY_TIMEOUT_S} s ({'; '.join(said[-3:]) or 'ssh said nothing'})"
        text = " ".join(dict.fromkeys(said or []))
        if ssh.returncode == 127:  # the host's shell found no python3 it could run
            return f"the host has no python3 it can run ({text or 'command not found'}): tether's agent runs in " \
                   "python3 >= 3.9 there (e.g. `apt-get install python3-minimal`)"
        return next((fix.format(dest=dest) for key, fix in SSH_ERRORS if key in text),
                    text or f"ssh ended with status {ssh.returncode}")


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the stand-in's end is ssh's


def _wait_until_listening(ssh: subprocess.Popen) -> list[str] | None:
    """Read ssh's stderr until the agent says it listens (None), or ssh ends or time runs
    out (what ssh said). Later lines (the agent's warnings) go to tether's stderr."""
    said: list[str] = []
    ready, listening = threading.Event(), []

    def read() -> None:
        for raw in ssh.stderr:
            line = raw.decode(errors="replace").rstrip()
            if ready.is_set():
                os.write(2, raw)
            elif line.startswith("tether agent: listening on"):
                listening.append(line)
                ready.set()
            else:
                said.append(line)
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(READY_TIMEOUT_S)
    return None if listening else said
