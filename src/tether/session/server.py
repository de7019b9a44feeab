"""The session's side of the layer socket: every hooked process connects here.

One unix SOCK_SEQPACKET socket in a private temporary directory. A process's first frame is
HELLO (pid, executable, Go build id); the reply carries the mode and that executable's hook
plan, computed by the same analysis as `tether inspect` (cached by build id). A Go library
loaded later asks for its own plan (PLAN_REQUEST). A peer that sends a malformed frame is
logged and closed; it never stops the session.

When tracing, each process gets a trace ring with its HELLO_REPLY (ring.py) and writes its
events there; intake.py takes them in and says when to decode them.
"""
from __future__ import annotations

import errno
import os
import selectors
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..analysis import ElfError
from ..analysis.cache import inspect_binary
from ..layer import CannotHookError, go_plan
from ..protocol import files_wire, layer_wire, trace_wire, wire
from . import inject
from .agent_link import AgentLink
from .intake import Intake
from .ring import Ring

BATCH = 256  # frames served from one connection before looking at the others
DECODE_SECONDS = 0.02  # decoding per poll, before the sockets are looked at again
# While the rings had records lately, an empty ring is looked at again every TICK rather than
# waited on: a wait costs the next event a RING_WAKE (a syscall), and a consumer that keeps up
# would find the ring empty between nearly every two events.
TICK, IDLE = 0.001, 0.05

if TYPE_CHECKING:
    from .files import FileRules


class LayerServer:
    def __init__(self, mode: int, on_event: Callable[[trace_wire.SyscallEvent], None],
                 on_hello: Callable[[layer_wire.Hello], None] = lambda h: None,
                 warn: Callable[[str], None] = lambda msg: None,
                 on_batch: Callable[[], None] = lambda: None, agent: AgentLink | None = None,
                 agent_socket: str = "", rules: str = "", on_agent_lost: Callable[[str], None] = lambda why: None,
                 ring_size: int | None = None, files: FileRules | None = None, files_log=None):
        self.mode, self.on_event, self.on_hello, self.warn = mode, on_event, on_hello, warn
        # tether exec: where the layer sends CONNECT and OPEN, and which connects go there
        self.agent_socket, self.rules = agent_socket, rules
        self.on_agent_lost = on_agent_lost
        # MODE_FILES: the file rules the layer asks for, and what it says of paths: -v's log
        # (files_log) gets each decision once; a READ path written here is said once.
        self.files, self.files_log = files, files_log
        self._files_said: set[tuple[str, int]] = set()
        self.on_batch = on_batch  # after each round of frames: flush output
        self.dir = Path(tempfile.mkdtemp(prefix="tether-"))
        self.path = str(self.dir / "layer.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(self.path)
        self.listener.listen(128)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        if agent:  # watched so that its loss is reported when it happens
            self.sel.register(agent, selectors.EVENT_READ, "agent")
        self.peers = 0
        self.frame_events = 0  # events that came as frames, not through a ring (a vfork child's)
        self._plans: dict[str, str] = {}
        # Static programs that hooked ones exec get the layer at the exec (MODE_INJECT): the
        # static layer and its environment (launch.run sets them), and one watch per process.
        self.inject_layer: tuple[Path, dict[str, str]] | None = None
        self.exec_watches: dict[int, inject.ExecWatch] = {}
        self.intake = Intake(on_event, on_hello, warn, self._drop, ring_size)

    @property
    def producer_wakes(self) -> int:
        """Times producers that waited for room in a ring were woken, over the rings closed."""
        return self.intake.producer_wakes

    def close(self) -> None:
        self.intake.close()
        for key in list(self.sel.get_map().values()):
            if key.data != "agent":  # the link belongs to whoever made it
                key.fileobj.close()
        self.sel.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _plan_for(self, path: str, go_build_id: str, who: str) -> str:
        if not go_build_id:
            return ""  # not Go: nothing to patch
        if go_build_id in self._plans:
            return self._plans[go_build_id]
        try:
            report = inspect_binary(path)
            if report["build_id"].get("go") != go_build_id:
                raise CannotHookError(f"{path} changed on disk since it was loaded")
            plan = go_plan(report) or ""
        except (CannotHookError, ElfError, OSError) as e:
            self.warn(f"{who} runs unhooked: {e}")
            plan = ""
        self._plans[go_build_id] = plan
        return plan

    def _reply_with_ring(self, conn: socket.socket, reply: bytes, ring: Ring | None, pid: int) -> None:
        """Send reply, with ring's memfd if there is a ring: pid's events are read from it."""
        if conn in self.intake.rings:
            if ring is not None:
                ring.close()
            raise wire.ProtocolError(f"process {pid} asked for a second trace ring on one connection")
        if ring is None:
            conn.sendall(reply)
            return
        try:
            socket.send_fds(conn, [reply], [ring.fd])
        except OSError:
            ring.close()
            raise
        finally:
            os.close(ring.fd)
        self.intake.attach(conn, ring, pid)

    def _handle(self, conn: socket.socket, frame: wire.Frame) -> None:
        if frame.type == trace_wire.MSG_SYSCALL:
            # Sent as a frame when the ring could not take it: queued behind what the rings hold.
            trace_wire.decode_syscall(frame)
            self.frame_events += 1
            self.intake.queue(trace_wire.encode_record(frame.type, frame.payload, frame.flags))
        elif frame.type == layer_wire.MSG_RING_WAKE:
            pass  # the rings are read after every round of frames
        elif frame.type == layer_wire.MSG_HELLO:
            hello = layer_wire.decode_hello(frame)
            if hello.version != wire.PROTOCOL_VERSION:
                raise wire.ProtocolError(f"layer speaks protocol {hello.version}, "
                                         f"session {wire.PROTOCOL_VERSION}")
            plan = self._plan_for(hello.exe, hello.go_build_id, f"process {hello.pid} ({hello.exe})")
            if self.mode & layer_wire.MODE_TRACE:
                self.intake.queue(trace_wire.encode_record(frame.type, frame.payload))
            else:
                self.on_hello(hello)
            reply = layer_wire.encode_hello_reply(layer_wire.HelloReply(
                wire.PROTOCOL_VERSION, self.mode, plan, self.agent_socket, self.rules), frame.id)
            ring = (self.intake.new_ring(hello.pid) if self.mode & layer_wire.MODE_TRACE and
                    hello.capabilities & layer_wire.CAP_TRACE_RING else None)
            self._reply_with_ring(conn, reply, ring, hello.pid)
        elif frame.type == layer_wire.MSG_RING_REQUEST:
            # A child forked without exec, on a line of its own: no HELLO (it is the same
            # program, already announced), only a ring of its own.
            pid = layer_wire.decode_ring_request(frame)
            ring = self.intake.new_ring(pid) if self.mode & layer_wire.MODE_TRACE else None
            if ring is None:
                conn.sendall(wire.encode_error(wire.ErrorReply(errno.ENOBUFS, "no trace ring"), frame.id))
                return
            self._reply_with_ring(conn, layer_wire.encode_ring_reply(frame.id), ring, pid)
        elif frame.type == layer_wire.MSG_EXEC_NOTICE:
            # On a line of its own, like RING_REQUEST: a thread about to exec a static program.
            status = self._watch_exec(layer_wire.decode_exec_notice(frame))
            conn.sendall(layer_wire.encode_exec_notice_reply(status, frame.id))
        elif frame.type == files_wire.MSG_FILES_REQUEST:
            if self.files is None:
                raise wire.ProtocolError("FILES_REQUEST without file rules")
            for part in self.files.encode(self.files_log is not None, frame.id):
                conn.sendall(part)
        elif frame.type == files_wire.MSG_FILES_NOTICE:
            self._files_notice(files_wire.decode_notice(frame))
        elif frame.type == layer_wire.MSG_PLAN_REQUEST:
            req = layer_wire.decode_plan_request(frame)
            plan = self._plan_for(req.path, req.go_build_id, f"Go library {req.path}")
            conn.sendall(layer_wire.encode_plan_reply(plan, frame.id))
        else:
            raise wire.ProtocolError(f"unexpected frame type {frame.type}")

    def _files_notice(self, n: files_wire.Notice) -> None:
        if self.files is None or (n.path, n.what) in self._files_said:
            return
        self._files_said.add((n.path, n.what))
        if n.what == files_wire.WRITTEN_HERE:
            self.warn(f"{n.path} is the target's to read: the program's writes and changes to it happen on "
                      "this machine (--fs write or --fs-write REGEX makes them in the target)")
        elif self.files_log is not None:
            self.files_log.info("files: %s: %s", n.path, self.files.explain(n.rule, n.action))

    def _watch_exec(self, notice: layer_wire.ExecNotice) -> int:
        """Attach to the thread about to exec a static program and load the layer at the exec
        (inject.ExecWatch); 0, or the errno why the program will run unhooked (said here)."""
        path = notice.path
        who = f"process {notice.pid}"
        try:
            if not path.startswith("/"):
                path = os.path.join(os.readlink(f"/proc/{notice.pid}/cwd"), path)
            verdict = inspect_binary(path)["verdict"]
        except (ElfError, OSError) as e:
            self.warn(f"{who} execs {path}, which runs unhooked: {e}")
            return errno.ENOEXEC
        if verdict["hook"] != "inject" or self.inject_layer is None:
            self.warn(f"{who} execs {path}, which runs unhooked: {verdict['reason']}")
            return errno.ENOEXEC
        watch = self.exec_watches.get(notice.pid)
        if watch is not None and not watch.done:
            return 0  # attached already: the exec before this one failed (execvp goes on along PATH)
        watch = inject.ExecWatch(notice.pid, notice.tid, path, *self.inject_layer)
        err = watch.start()
        if err:
            self.warn(f"{who} execs {path}, which runs unhooked: cannot attach to it ({os.strerror(err)})")
            return err
        self.exec_watches[notice.pid] = watch
        return 0

    def watching(self, pid: int) -> bool:
        """Whether pid is attached, waiting for its exec: its stops are the watch's to wait for."""
        watch = self.exec_watches.get(pid)
        return watch is not None and not watch.done

    def _reap_watches(self) -> None:
        for pid, watch in list(self.exec_watches.items()):
            if watch.done:
                del self.exec_watches[pid]
                if watch.failure:
                    self.warn(watch.failure)

    def _wait(self, timeout: float) -> list:
        """select() for up to `timeout`, returning early when a ring has records, or decoding
        is due."""
        intake, end = self.intake, time.monotonic() + timeout
        while intake.rings and time.monotonic() - intake.active < IDLE:
            ready = self.sel.select(max(0.0, min(TICK, end - time.monotonic())))
            if ready or time.monotonic() >= end or intake.decode_due() or intake.committed:
                return ready
        intake.sleep(True)  # idle: producers wake us with RING_WAKE
        if intake.committed or intake.decode_due():
            ready = []
        else:
            ready = self.sel.select(max(0.0, end - time.monotonic()))
        intake.sleep(False)
        return ready

    def poll(self, timeout: float) -> bool:
        """Serve whatever is ready within `timeout`; True if anything happened."""
        # While the rings are busy they are emptied once a TICK, in slices a tick long: a
        # reader close behind the writers would pull each cache line away as it is written.
        busy = self.intake.collect()
        ready = self.sel.select(0) if self.intake.decode_due() else self._wait(timeout)
        for key, _ in ready:
            busy = True
            if key.data == "accept":
                conn, _ = self.listener.accept()
                self.sel.register(conn, selectors.EVENT_READ, "peer")
                self.peers += 1
                if not self._serve(conn):  # its first frame is usually there already
                    self._drop(conn)
            elif key.data == "exit":
                pass  # the program ended: the caller's loop sees it
            elif key.data == "agent":
                key.fileobj.read_ready()
                if key.fileobj.dead:
                    self.sel.unregister(key.fileobj)
                    self.on_agent_lost(key.fileobj.dead)
            elif not self._serve(key.fileobj):
                self._drop(key.fileobj)
        busy |= self.intake.collect()
        if self.intake.decode_due():
            busy |= self.intake.decode(DECODE_SECONDS)
        if self.exec_watches:
            self._reap_watches()
        if busy:
            self.on_batch()
        return busy

    def _drop(self, conn: socket.socket) -> None:
        """The peer is gone (or closed by us): what its ring holds is read to the end."""
        if conn.fileno() < 0:
            return  # dropped already, while serving another peer
        self.intake.detach(conn)
        self.sel.unregister(conn)
        conn.close()
        self.peers -= 1

    def _serve(self, conn: socket.socket) -> bool:
        """Handle the frames waiting on conn (a bounded batch); False once it is closed."""
        try:
            for _ in range(BATCH):
                msg = conn.recv(wire.FRAME_MAX + 1, socket.MSG_DONTWAIT)
                if not msg:
                    return False
                self._handle(conn, wire.decode_frame(msg))
        except BlockingIOError:
            pass
        except wire.ProtocolError as e:
            self.warn(f"closing a layer connection: {e}")
            return False
        except OSError as e:
            self.warn(f"layer connection failed: {e}")
            return False
        return True

    def drain(self, quiet: float = 0.5, limit: float = 5.0) -> None:
        """After the program exits: serve until every peer has gone, or `quiet` seconds pass
        with nothing to do (a daemonised child may hold its connection), at most `limit`."""
        end = time.monotonic() + limit
        while self.peers and time.monotonic() < end:
            if not self.poll(quiet):
                break
        # Decoding may lag behind the program: whatever waits is decoded now, all of it (a
        # daemonised child's later events are not waited for).
        self.intake.collect(force=True)
        self.intake.decode(None)
        self.on_batch()

