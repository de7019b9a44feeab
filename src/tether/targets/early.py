"""The agent's process, forked before anything else that `tether exec` does.

An agent on this host (targets/local.py) spends most of its start importing asyncio and the
agent's code (50-90 ms here): more than this side needs to parse its command line, read its
settings and load the session's modules. So `tether exec` forks the agent's process first
thing (tether/__main__.py), before it parses its arguments; the child imports while the parent
works, then waits to be told what to serve: one message carrying the target to enter (a
module-level function and its arguments), the debug log to write, and the two sockets (the
session's link and the listener for hooked processes). A parent that exits first, or never
needs an agent, closes its end and the child leaves without a word.

This module imports only what the fork needs: it runs before the command line is parsed.
"""
from __future__ import annotations

import gc
import os
import socket
import sys

MESSAGE_MAX = 64 * 1024
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


def _child(control: socket.socket) -> None:
    code, spec = 0, "agent"
    try:
        # Objects inherited from the parent may own descriptors closed below: a collection
        # finalizing one would close whatever reuses its number (the sockets received later).
        gc.freeze()
        os.setsid()  # the terminal's ^C is for the program, not for the agent
        os.closerange(3, control.fileno())
        os.closerange(control.fileno() + 1, os.sysconf("SC_OPEN_MAX"))
        # All the code it will run, loaded while this host's files are in view: a target's
        # mount namespace (a container's) need not have Python at all.
        sys.modules["ssl"] = None  # never used by the agent; asyncio offers TLS only if ssl imports (5-10 ms)
        import asyncio
        import concurrent.futures.thread  # noqa: F401  (asyncio's resolver threads, loaded lazily)
        import ctypes
        import importlib
        import logging
        import marshal

        from ..agent import server  # noqa: F401  (serving() imports it once the target is joined)

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
        serve = getattr(importlib.import_module(module), function)(*args)
        ctypes.CDLL(None).prctl(PR_SET_NAME, AGENT_NAME, 0, 0, 0)
        asyncio.run(serve(*fds))
    except BaseException as e:  # noqa: BLE001 - the child reports and leaves, whatever happened
        print(f"tether agent: {spec}: {e}", file=sys.stderr)
        code = 2
    finally:
        os._exit(code)
