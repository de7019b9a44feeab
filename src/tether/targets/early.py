"""The agent's process, forked before anything else that `tether exec` does.

An agent on this host (targets/local.py) spends most of its start importing asyncio and the
agent's code (40-90 ms here): more than this side needs to parse its command line, read its
settings and load the session's modules. So `tether exec` forks the agent's process first
thing (tether/__main__.py), before its command line is even parsed. The child starts a thread
that imports asyncio and the server, then waits to be told what to serve: one message carrying
the target to enter (a module-level function and its arguments), the debug log to write, and
the two sockets (the session's link and the listener for hooked processes). Its main thread
joins the target and answers what needs no waiting (agent/answers.py: the session's hello,
environment and resolv.conf; the program's first sockets and resolver files) while the
imports go on, then serves with asyncio once they are over or a request has to wait. A
parent that exits first, or never needs an agent, closes its end and the child leaves
without a word.

Namespaces belong to threads: the main thread alone joins the target's; the importing thread
stays in this host's mount namespace, which has the Python files (a container's need not).

This module imports only what the fork needs: it runs before the command line is parsed.
"""
from __future__ import annotations

import gc
import os
import socket
import sys

MESSAGE_MAX = 64 * 1024
SWITCH_INTERVAL = 0.0005  # s; the GIL's (5 ms by default): a request waits at most this for the importing thread
PR_SET_NAME = 15
AGENT_NAME = b"tether-agent"  # what ps and pgrep show for it


class Spare:
    """A forked agent process waiting for its target (parent side)."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # else the child would write the parent's buffered output again
        self.pid = os.fork()
        if self.pid == 0:
            ours.close()
            _child(theirs)
        theirs.close()
        self.control = ours

    def start(self, spec: str, enter, args: tuple, session: socket.socket, listener: socket.socket,
              log: tuple[str, str, int] | None) -> None:
        """Send the child its target: it calls enter(*args) there, which joins the target and
        returns the coroutine function to serve. enter must be a module-level function and
        args plain values (they travel with marshal). log: (path, format, level) or None."""
        import marshal

        if "." in enter.__qualname__ or "<" in enter.__qualname__:
            raise TypeError(f"{enter.__qualname__} is not a module-level function")
        message = marshal.dumps((spec, enter.__module__, enter.__qualname__, args, log))
        try:
            socket.send_fds(self.control, [message], [session.fileno(), listener.fileno()])
        finally:
            self.control.close()


_spare: Spare | None = None


def fork_spare() -> None:
    """Fork the agent's process now, for fork_agent to take later."""
    global _spare
    _spare = Spare()


def take() -> Spare:
    """The process forked at start-up, or a new one."""
    global _spare
    spare, _spare = _spare or Spare(), None
    return spare


def _load(done: int, failed: list[BaseException]) -> None:
    """The agent's imports, in a thread that stays in this host's mount namespace (a target's,
    a container's, need not have Python at all); closes done when they are over."""
    try:
        sys.modules["ssl"] = None  # never used by the agent; asyncio offers TLS only if ssl imports (5-10 ms)
        import asyncio  # noqa: F401
        import concurrent.futures.thread  # noqa: F401  (asyncio's resolver threads, loaded lazily)

        from ..agent import server  # noqa: F401  (serving() imports it once the target is joined)
    except BaseException as e:  # noqa: BLE001 - reported by the thread that serves
        failed.append(e)
    finally:
        os.close(done)


def _child(control: socket.socket) -> None:
    code, spec = 0, "agent"
    try:
        # Objects inherited from the parent may own descriptors closed below: a collection
        # finalizing one would close whatever reuses its number (the sockets received later).
        gc.freeze()
        os.setsid()  # the terminal's ^C is for the program, not for the agent
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)  # a pipe from tether's stdout must not wait for the agent to end too
        os.closerange(3, control.fileno())
        os.closerange(control.fileno() + 1, os.sysconf("SC_OPEN_MAX"))
        # What this thread needs to join the target and answer the session's first requests
        # (15-20 ms here), before the parent sends them; asyncio and the server (40-60 ms) load in
        # another thread meanwhile.
        import ctypes
        import importlib
        import logging
        import marshal
        import threading

        from ..agent import answers

        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        loaded, done = os.pipe()
        failed: list[BaseException] = []
        threading.Thread(target=_load, args=(done, failed), name="tether-imports", daemon=True).start()
        try:
            message, fds, _, _ = socket.recv_fds(control, MESSAGE_MAX, 2)
        except ConnectionError:
            message, fds = b"", []
        control.close()
        if not message or len(fds) != 2:
            os._exit(0)  # tether stopped before it needed an agent
        spec, module, function, args, log = marshal.loads(message)
        # Handlers inherited from the parent wrote to descriptors closed above: dropped, not
        # closed (closing would close whatever now has their numbers).
        logging.root.handlers.clear()
        if log:
            path, fmt, level = log
            logging.basicConfig(filename=path, format=fmt, level=level)
        else:
            logging.basicConfig(level=logging.WARNING, format="tether agent: %(message)s")
        environment, serve = getattr(importlib.import_module(module), function)(*args)
        ctypes.CDLL(None).prctl(PR_SET_NAME, AGENT_NAME, 0, 0, 0)
        pending, accepted = [], []
        if environment is not None:
            session, listener = socket.socket(fileno=fds[0]), socket.socket(fileno=fds[1])
            handover = answers.answer_until(session, listener, environment, loaded)
            if handover is None:
                os._exit(0)  # the session is over
            pending = handover.pop(session)
            accepted = list(handover.items())
            session.detach()
            listener.detach()
        os.read(loaded, 1)  # EOF once the imports are over
        if failed:
            raise failed[0]
        sys.setswitchinterval(switch_interval)
        import asyncio

        asyncio.run(serve(*fds, pending, accepted))
    except BaseException as e:  # noqa: BLE001 - the child reports and leaves, whatever happened
        print(f"tether agent: {spec}: {e}", file=sys.stderr)
        code = 2
    finally:
        os._exit(code)
