"""Trace events on their way in: the traced processes' rings, what waits to be decoded, and when.

Records are copied out of every ring as they come (ring.py) and decoded later (backlog.py
holds what waits): when the rings have been quiet for QUIET, when records have waited for
MAX_LAG, or when the backlog is full. A program in a burst of syscalls thus shares its machine
only with a copy, not with the decoder. Events and HELLOs reach the callbacks in one order: a
HELLO (and an event sent as a frame) is queued behind everything the rings held when it came,
the exec that started the process included.
"""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

from ..protocol import layer_wire, trace_wire, wire
from .backlog import Backlog
from .ring import Ring

RING_SIZE = 4 << 20  # bytes of records per process; TETHER_TRACE_RING sets it (tests: a small one)
DECODE_SLICE = 256  # records decoded between two looks at the rings
QUIET, MAX_LAG = 0.002, 1.0  # decode once the rings were quiet this long, or records waited that long
BAD_RECORDS_SHOWN = 10


class Intake:
    def __init__(self, on_event: Callable[[trace_wire.SyscallEvent], None],
                 on_hello: Callable[[layer_wire.Hello], None], warn: Callable[[str], None],
                 broken: Callable[[socket.socket], None], ring_size: int | None = None):
        self.on_event, self.on_hello, self.warn = on_event, on_hello, warn
        self.broken = broken  # closes the connection of a process whose ring cannot be read
        self.ring_size = ring_size or int(os.environ.get("TETHER_TRACE_RING") or RING_SIZE)
        self.rings: dict[socket.socket, tuple[Ring, int]] = {}  # with the pid that said HELLO
        self.producer_wakes = 0  # of rings closed so far: producers that waited for space, woken
        self.backlog = Backlog()
        self._chunk, self._chunk_pos = b"", 0  # the chunk being decoded
        self.active = 0.0  # when a ring last had records
        self._waiting_since = 0.0  # when the oldest record not yet decoded was queued
        self._bad_records = 0

    def new_ring(self, pid: int) -> Ring | None:
        """A ring for process pid, or None if none can be made (it then sends frames)."""
        try:
            return Ring(self.ring_size)
        except (OSError, ValueError) as e:
            self.warn(f"process {pid}: no trace ring ({e}); its events come one frame each")
            return None

    def attach(self, conn: socket.socket, ring: Ring, pid: int) -> None:
        self.rings[conn] = ring, pid

    def detach(self, conn: socket.socket) -> None:
        """conn's process is gone: what its ring holds is read to the end."""
        if conn not in self.rings:
            return
        ring, pid = self.rings.pop(conn)
        try:
            self._put(ring.collect())
            if ring.unwritten:
                self.warn(f"process {pid} ended in the middle of writing a trace event: "
                          f"the last {ring.unwritten} bytes of its trace are lost")
        except wire.ProtocolError as e:
            self.warn(f"process {pid}: {e}")
        self._close(ring)

    def _close(self, ring: Ring) -> None:
        self.producer_wakes += ring.wakes
        ring.close()

    def queue(self, record: bytes) -> None:
        """A record that arrived on a socket, after everything already in the rings."""
        self.collect(force=True)
        self._put(record)

    def collect(self, force: bool = False) -> bool:
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
                self._close(ring)
                self.broken(conn)
                continue
            if chunk:
                self._put(chunk)
                got = True
        if got:
            self.active = time.monotonic()
        return got

    def _put(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not self._pending():
            self._waiting_since = time.monotonic()
        self.backlog.put(chunk)

    def _pending(self) -> bool:
        return self._chunk_pos < len(self._chunk) or bool(self.backlog)

    @property
    def committed(self) -> bool:
        """Whether a ring has records to collect."""
        return any(ring.committed for ring, _ in self.rings.values())

    def sleep(self, sleeping: bool) -> None:
        """Tell the producers whether a RING_WAKE is needed to bring the session back."""
        for ring, _ in self.rings.values():
            ring.sleep(sleeping)

    def decode_due(self) -> bool:
        now = time.monotonic()
        return self._pending() and (now - self.active >= QUIET or now - self._waiting_since >= MAX_LAG
                                    or self.backlog.full)

    def decode(self, seconds: float | None) -> bool:
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
                    item, self._chunk_pos = trace_wire.decode_record(self._chunk, self._chunk_pos)
                except wire.ProtocolError as e:
                    self._bad_record(e)
                    continue
                if type(item) is trace_wire.SyscallEvent:
                    self.on_event(item)
                else:
                    self.on_hello(item)
            if end is None:
                continue
            self.collect()
            if time.monotonic() >= end or not self.decode_due():
                return did

    def _bad_record(self, e: wire.ProtocolError) -> None:
        """Skip the record at _chunk_pos, or the rest of the chunk if the records after it
        cannot be found (a program that wrote over its ring); say so, up to a point."""
        try:
            self._chunk_pos, what = trace_wire.record_span(self._chunk, self._chunk_pos), "a trace record"
        except wire.ProtocolError:
            what = f"{len(self._chunk) - self._chunk_pos} bytes of trace records"
            self._chunk = b""
        self._bad_records += 1
        if self._bad_records <= BAD_RECORDS_SHOWN:
            more = " (further ones not shown)" if self._bad_records == BAD_RECORDS_SHOWN else ""
            self.warn(f"dropping {what}: {e}{more}")

    def close(self) -> None:
        for ring, _ in self.rings.values():
            self._close(ring)
        self.rings.clear()
        self.backlog.close()
