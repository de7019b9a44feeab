"""The session's side of the layer socket: every hooked process connects here.

One unix SOCK_SEQPACKET socket in a private temporary directory. A process's first frame is
HELLO (pid, executable, Go build id); the reply carries the mode and that executable's hook
plan, computed by the same analysis as `tether inspect` (cached by build id). Later frames are
events, handed to a callback. A peer that sends a malformed frame is logged and closed; it
never stops the session.
"""
from __future__ import annotations

import logging
import os
import selectors
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..analysis.cache import inspect_binary
from ..analysis.elf import ElfError
from ..layer import CannotHookError, go_plan
from ..protocol import wire

log = logging.getLogger("tether.session")


class LayerServer:
    def __init__(self, mode: int, on_event: Callable[[wire.SyscallEvent], None],
                 on_hello: Callable[[wire.Hello], None] = lambda h: None,
                 warn: Callable[[str], None] = lambda msg: None):
        self.mode, self.on_event, self.on_hello, self.warn = mode, on_event, on_hello, warn
        self.dir = Path(tempfile.mkdtemp(prefix="tether-"))
        self.path = str(self.dir / "layer.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(self.path)
        self.listener.listen(128)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.peers = 0
        self._plans: dict[str, str] = {}

    def close(self) -> None:
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _plan_for(self, hello: wire.Hello) -> str:
        if not hello.go_build_id:
            return ""  # not a Go program: nothing to patch
        if hello.go_build_id in self._plans:
            return self._plans[hello.go_build_id]
        try:
            plan = go_plan(inspect_binary(hello.exe)) or ""
        except (CannotHookError, ElfError) as e:
            self.warn(f"process {hello.pid} ({hello.exe}) runs unhooked: {e}")
            plan = ""
        self._plans[hello.go_build_id] = plan
        return plan

    def _handle(self, conn: socket.socket, frame: wire.Frame) -> None:
        if frame.type == wire.MSG_SYSCALL:
            self.on_event(wire.decode_syscall(frame))
        elif frame.type == wire.MSG_HELLO:
            hello = wire.decode_hello(frame)
            if hello.version != wire.PROTOCOL_VERSION:
                raise wire.ProtocolError(f"layer speaks protocol {hello.version}, "
                                         f"session {wire.PROTOCOL_VERSION}")
            reply = wire.HelloReply(wire.PROTOCOL_VERSION, self.mode, self._plan_for(hello))
            self.on_hello(hello)
            conn.sendall(wire.encode_hello_reply(reply, frame.id))
        else:
            raise wire.ProtocolError(f"unexpected frame type {frame.type}")

    def poll(self, timeout: float) -> bool:
        """Serve whatever is ready within `timeout`; True if anything happened."""
        busy = False
        for key, _ in self.sel.select(timeout):
            busy = True
            if key.data == "accept":
                conn, _ = self.listener.accept()
                self.sel.register(conn, selectors.EVENT_READ, "peer")
                self.peers += 1
                continue
            conn = key.fileobj
            try:
                msg = conn.recv(wire.FRAME_MAX + 1)
                if msg:
                    self._handle(conn, wire.decode_frame(msg))
                    continue
            except wire.ProtocolError as e:
                log.warning("closing a layer connection: %s", e)
                self.warn(f"closing a layer connection: {e}")
            except OSError as e:
                log.warning("layer connection failed: %s", e)
            self.sel.unregister(conn)
            conn.close()
            self.peers -= 1
        return busy

    def drain(self, quiet: float = 0.5, limit: float = 5.0) -> None:
        """After the program exits: serve until every peer has gone, or `quiet` seconds pass
        with nothing to do (a daemonised child may hold its connection), at most `limit`."""
        end = time.monotonic() + limit
        while self.peers and time.monotonic() < end:
            if not self.poll(quiet):
                break


def exit_code(status: int) -> int:
    """The shell's convention: the exit status, or 128+N for a signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code
