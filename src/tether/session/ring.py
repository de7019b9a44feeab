"""The session's side of a trace ring: shared memory the hooked process writes its SYSCALL
events into without a syscall (layer/link/protocol.h has the layout and the protocol, layer/trace/ring.c
the writing side).

The session makes the ring (a memfd), passes it with HELLO_REPLY, and reads it: the records
from tail to published (the producers keep everything before it written, in order) are copied
out in one slice, their bytes zeroed (a zero header is how a record that is not written yet
looks to the producers), and tail moved past them, all before any of them is decoded, so the
program waits for nothing but a copy. Nothing here looks at records one by one: in Python
that would cost more per record than the program spends making its call. Producers blocked on
a full ring sleep on a futex in the ring; the session wakes them only when they say they wait.
"""
from __future__ import annotations

import functools
import mmap
import os

from ..protocol import trace_wire, wire

SYS_FUTEX = 202
FUTEX_WAKE = 1  # not _PRIVATE: the waiters are in another process


@functools.cache
def _libc():
    import ctypes

    return ctypes.CDLL(None)


@functools.cache
def _zeros(n: int) -> bytes:
    """n zero bytes to copy over freed records (one buffer per ring size)."""
    return bytes(n)


class Ring:
    """One process's trace ring. `fd` is the memfd to pass to the layer (close it once sent)."""

    def __init__(self, size: int):
        if size & (size - 1) or size <= trace_wire.RECORD_MAX:
            raise ValueError(f"a trace ring holds a power of two bytes above {trace_wire.RECORD_MAX}, not {size}")
        self.size, self._mask = size, size - 1
        self.fd = os.memfd_create("tether-trace", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, trace_wire.RING.size + size)
            self._map = mmap.mmap(self.fd, trace_wire.RING.size + size)
        except OSError:
            os.close(self.fd)
            raise
        trace_wire.RING.pack_into(self._map, 0, trace_wire.RING_MAGIC, trace_wire.RING_VERSION, size, *[0] * 7)
        view = memoryview(self._map)
        # Native-size element views: head, published and tail are read and written as single
        # 8-byte loads and stores (struct would write a byte at a time, and a producer could
        # read a torn tail).
        self._u64 = view[:trace_wire.RING.size].cast("Q")
        self._u32 = view[:trace_wire.RING.size].cast("I")
        self._data = view[trace_wire.RING.size:]
        self._zero = memoryview(_zeros(size))
        self._space_addr = 0  # the futex word's address, once a producer has waited
        self.tail = 0
        self.wakes = 0  # times producers waiting for space were woken

    def _word(self, offset: int) -> int:
        return self._u32[offset // 4]

    def collect(self) -> bytes:
        """The records from tail to published, in ring order (each as the layer wrote it; the
        decoder checks them), their space given back. ProtocolError if published is no
        position the producers could have left it at."""
        tail, mask = self.tail, self._mask
        published = self._u64[trace_wire.RING_PUBLISHED // 8]
        if published == tail:
            return b""
        head = self._u64[trace_wire.RING_HEAD // 8]  # after published: both only grow, head ahead
        if not tail < published <= min(head, tail + self.size) or published & 7:
            raise wire.ProtocolError(f"trace ring: published at byte {published} (tail {tail}, head {head})")
        a, b = tail & mask, published & mask
        if a < b:
            chunk = bytes(self._data[a:b])
            self._data[a:b] = self._zero[:b - a]
        else:  # runs over the end of the area and on at its start (or is the whole ring)
            chunk = bytes(self._data[a:]) + bytes(self._data[:b])
            self._data[a:] = self._zero[a:]
            self._data[:b] = self._zero[:b]
        self.tail = published
        self._u64[trace_wire.RING_TAIL // 8] = published  # after the zeroing: x86 keeps stores in order
        if self._word(trace_wire.RING_WAITERS):
            self._wake_producers()
        return chunk

    def _wake_producers(self) -> None:
        import ctypes  # only once a producer has waited: most traces never need it

        if not self._space_addr:
            word = ctypes.c_uint32.from_buffer(self._map, trace_wire.RING_SPACE)
            self._space_addr = ctypes.addressof(word)
            del word  # the address stays valid while the map is open; the export must not
        i = trace_wire.RING_SPACE // 4
        self._u32[i] = (self._u32[i] + 1) & 0xFFFFFFFF
        _libc().syscall(ctypes.c_long(SYS_FUTEX), ctypes.c_void_p(self._space_addr), ctypes.c_long(FUTEX_WAKE),
                        ctypes.c_long(0x7FFFFFFF), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
        self.wakes += 1

    @property
    def committed(self) -> bool:
        """Whether there are records to collect."""
        return self._u64[trace_wire.RING_PUBLISHED // 8] != self.tail

    @property
    def unwritten(self) -> int:
        """Bytes reserved by producers and not published (after collect): once the process is
        gone, what it was killed in the middle of writing, and what it wrote after that."""
        return max(0, self._u64[trace_wire.RING_HEAD // 8] - self.tail)

    def sleep(self, sleeping: bool) -> None:
        """Say whether the session waits for a RING_WAKE before it looks at the ring again."""
        self._u32[trace_wire.RING_SLEEPING // 4] = int(sleeping)

    def close(self) -> None:
        """Read no more: producers stop writing (and waiting), the memory goes."""
        self._u32[trace_wire.RING_CLOSED // 4] = 1
        if self._word(trace_wire.RING_WAITERS):
            self._wake_producers()
        for view in (self._u64, self._u32, self._data):
            view.release()
        self._map.close()
