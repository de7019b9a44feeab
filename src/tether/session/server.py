"""The session's side of the layer socket: every hooked process connects here.

One unix SOCK_SEQPACKET socket in a private temporary directory. A process's first frame is
HELLO (pid, executable, Go build id); the reply carries the mode and that executable's hook
plan, computed by the same analysis as `tether inspect` (cached by build id). A Go library
loaded later asks for its own plan (PLAN_REQUEST). A peer that sends a malformed frame is
logged and closed; it never stops the session.

When tracing, each process gets a trace ring with its HELLO_REPLY (ring.py) and writes its
events there. Serving copies records out of every ring as they come and decodes them later
(backlog.py holds what waits): when the rings have been quiet for a moment, when records have
waited for MAX_LAG, or when the backlog is full. A program in a burst of syscalls thus shares
its machine only with a copy, not with the decoder. Events and HELLOs reach the callbacks in one
order: a HELLO is queued behind everything the rings held when it came (the exec that started
it included).
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
from .agent_link import AgentLink
from .backlog import Backlog
from .ring import Ring

log = logging.getLogger("tether.session")
BATCH = 256  # frames served from one connection before looking at the others
RING_SIZE = 4 << 20  # bytes of records per process; TETHER_TRACE_RING sets it (tests: a small one)
DECODE_SLICE = 256  # records decoded between two looks at the rings
DECODE_SECONDS = 0.02  # decoding per poll, before the sockets are looked at again
BAD_RECORDS_SHOWN = 10
QUIET, MAX_LAG = 0.002, 1.0  # decode once the rings were quiet this long, or records waited that long
# While the rings had records lately, an empty ring is looked at again every TICK rather than
# waited on: a wait costs the next event a RING_WAKE (a syscall), and a consumer that keeps up
# would find the ring empty between nearly every two events.
TICK, IDLE = 0.001, 0.05


class LayerServer:
    def __init__(self, mode: int, on_event: Callable[[wire.SyscallEvent], None],
                 on_hello: Callable[[wire.Hello], None] = lambda h: None,
                 warn: Callable[[str], None] = lambda msg: None,
                 on_batch: Callable[[], None] = lambda: None, agent: AgentLink | None = None,
                 agent_socket: str = "", rules: str = "", on_agent_lost: Callable[[str], None] = lambda why: None,
                 ring_size: int | None = None):
        self.mode, self.on_event, self.on_hello, self.warn = mode, on_event, on_hello, warn
        # tether exec: where the layer sends CONNECT and OPEN, and which connects go there
        self.agent_socket, self.rules = agent_socket, rules
        self.on_agent_lost = on_agent_lost
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
        self._plans: dict[str, str] = {}
        self.rings: dict[socket.socket, tuple[Ring, int]] = {}  # with the pid that said HELLO
        self.ring_size = ring_size or int(os.environ.get("TETHER_TRACE_RING") or RING_SIZE)
        self.producer_wakes = 0  # of rings closed so far: producers that waited for space, woken
        self.backlog = Backlog()
        self._chunk, self._chunk_pos = b"", 0  # the chunk being decoded
        self._active = 0.0  # when a ring last had records
        self._bad_records = 0
        self._waiting_since = 0.0  # when the oldest record not yet decoded was queued

    def close(self) -> None:
        for ring, _ in self.rings.values():
            self.producer_wakes += ring.wakes
            ring.close()
        self.rings.clear()
        self.backlog.close()
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

    def _handle(self, conn: socket.socket, frame: wire.Frame) -> None:
        if frame.type == wire.MSG_SYSCALL:
            # Sent as a frame when the ring could not take it: queued behind what the rings hold.
            wire.decode_syscall(frame)
            self._queue(wire.encode_record(frame.type, frame.payload, frame.flags))
        elif frame.type == wire.MSG_RING_WAKE:
            pass  # the rings are read after every round of frames
        elif frame.type == wire.MSG_HELLO:
            hello = wire.decode_hello(frame)
            if hello.version != wire.PROTOCOL_VERSION:
                raise wire.ProtocolError(f"layer speaks protocol {hello.version}, "
                                         f"session {wire.PROTOCOL_VERSION}")
            plan = self._plan_for(hello.exe, hello.go_build_id, f"process {hello.pid} ({hello.exe})")
            if self.mode & wire.MODE_TRACE:
                self._queue(wire.encode_record(frame.type, frame.payload))
            else:
                self.on_hello(hello)
            reply = wire.encode_hello_reply(wire.HelloReply(wire.PROTOCOL_VERSION, self.mode, plan,
                                                            self.agent_socket, self.rules), frame.id)
            ring = self._new_ring(hello) if self.mode & wire.MODE_TRACE else None
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
            self.rings[conn] = ring, hello.pid
        elif frame.type == wire.MSG_PLAN_REQUEST:
            req = wire.decode_plan_request(frame)
            plan = self._plan_for(req.path, req.go_build_id, f"Go library {req.path}")
            conn.sendall(wire.encode_plan_reply(plan, frame.id))
        else:
            raise wire.ProtocolError(f"unexpected frame type {frame.type}")

    def _new_ring(self, hello: wire.Hello) -> Ring | None:
        if not hello.capabilities & wire.CAP_TRACE_RING:
            return None
        try:
            return Ring(self.ring_size)
        except (OSError, ValueError) as e:  # the layer sends frames instead
            log.warning("no trace ring for process %d: %s", hello.pid, e)
            return None

    def _queue(self, record: bytes) -> None:
        """A record that arrived on a socket, after everything already in the rings."""
        self._collect(force=True)
        self._put(record)

    def _collect(self, force: bool = False) -> bool:
        """Copy what every ring holds into the backlog, unless it is full (then the program
        waits for the decoder); True if there was anything."""
        if self.backlog.full and not force:
            return False
        got = False
        for conn, (ring, pid) in list(self.rings.items()):
            try:
                chunk = ring.collect()
            except wire.ProtocolError as e:
                self.warn(f"closing a layer connection: process {pid}: {e}")
                del self.rings[conn]
                self.producer_wakes += ring.wakes
                ring.close()
                self._drop(conn)
                continue
            if chunk:
                self._put(chunk)
                got = True
        if got:
            self._active = time.monotonic()
        return got

    def _put(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not self._pending():
            self._waiting_since = time.monotonic()
        self.backlog.put(chunk)

    def _pending(self) -> bool:
        return self._chunk_pos < len(self._chunk) or bool(self.backlog)

    def _decode_due(self) -> bool:
        now = time.monotonic()
        return self._pending() and (now - self._active >= QUIET or now - self._waiting_since >= MAX_LAG
                                    or self.backlog.full)

    def _decode(self, seconds: float | None) -> bool:
        """Decode queued records for about `seconds`, looking at the rings between slices and
        stopping while they are busy (None: all that is queued, and nothing more); True if there
        were any."""
        end = None if seconds is None else time.monotonic() + seconds
        did = False
        while True:
            for _ in range(DECODE_SLICE):
                if self._chunk_pos >= len(self._chunk):
                    self._chunk, self._chunk_pos = self.backlog.take() or b"", 0
                    if not self._chunk:
                        return did
                did = True
                try:
                    item, self._chunk_pos = wire.decode_record(self._chunk, self._chunk_pos)
                except wire.ProtocolError as e:
                    self._bad_record(e)
                    continue
                if type(item) is wire.SyscallEvent:
                    self.on_event(item)
                else:
                    self.on_hello(item)
            if end is None:
                continue
            self._collect()
            if time.monotonic() >= end or not self._decode_due():
                return did

    def _bad_record(self, e: wire.ProtocolError) -> None:
        """Skip the record at _chunk_pos, or the rest of the chunk if the records after it
        cannot be found (a program that wrote over its ring); say so, up to a point."""
        try:
            self._chunk_pos, what = wire.record_span(self._chunk, self._chunk_pos), "a trace record"
        except wire.ProtocolError:
            what = f"{len(self._chunk) - self._chunk_pos} bytes of trace records"
            self._chunk = b""
        self._bad_records += 1
        if self._bad_records <= BAD_RECORDS_SHOWN:
            more = " (further ones not shown)" if self._bad_records == BAD_RECORDS_SHOWN else ""
            self.warn(f"dropping {what}: {e}{more}")

    def _wait(self, timeout: float) -> list:
        """select() for up to `timeout`, returning early when a ring has records, or decoding
        is due."""
        end = time.monotonic() + timeout
        while self.rings and time.monotonic() - self._active < IDLE:
            ready = self.sel.select(max(0.0, min(TICK, end - time.monotonic())))
            if (ready or time.monotonic() >= end or self._decode_due()
                    or any(ring.committed for ring, _ in self.rings.values())):
                return ready
        for ring, _ in self.rings.values():  # idle: producers wake us with RING_WAKE
            ring.sleep(True)
        if any(ring.committed for ring, _ in self.rings.values()) or self._decode_due():
            ready = []
        else:
            ready = self.sel.select(max(0.0, end - time.monotonic()))
        for ring, _ in self.rings.values():
            ring.sleep(False)
        return ready

    def poll(self, timeout: float) -> bool:
        """Serve whatever is ready within `timeout`; True if anything happened."""
        # While the rings are busy they are emptied once a TICK, in slices a tick long: a
        # reader close behind the writers would pull each cache line away as it is written.
        busy = self._collect()
        ready = self.sel.select(0) if self._decode_due() else self._wait(timeout)
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
        busy |= self._collect()
        if self._decode_due():
            busy |= self._decode(DECODE_SECONDS)
        if busy:
            self.on_batch()
        return busy

    def _drop(self, conn: socket.socket) -> None:
        """The peer is gone (or closed by us): what its ring holds is read to the end."""
        if conn.fileno() < 0:
            return  # dropped already, while serving another peer
        if conn in self.rings:
            ring, pid = self.rings.pop(conn)
            try:
                self._put(ring.collect())
                if ring.unwritten:
                    self.warn(f"process {pid} ended in the middle of writing a trace event: "
                              f"the last {ring.unwritten} bytes of its trace are lost")
            except wire.ProtocolError as e:
                self.warn(f"process {pid}: {e}")
            self.producer_wakes += ring.wakes
            ring.close()
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
            log.warning("closing a layer connection: %s", e)
            self.warn(f"closing a layer connection: {e}")
            return False
        except OSError as e:
            log.warning("layer connection failed: %s", e)
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
        self._collect(force=True)
        self._decode(None)
        self.on_batch()

