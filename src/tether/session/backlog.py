"""Trace records waiting to be decoded, in the order they were taken.

The session copies records out of the rings as fast as the program writes them and decodes them
when it can, which may be long after the program has exited. What waits is kept in memory up to
a bound, and past it in a temporary file (unlinked: it goes with the session), so a program
that makes millions of calls neither waits for the decoder nor fills the memory. Past a second
bound (`full`) the session stops emptying the rings, and the program waits for the decoder:
that bounds the disk, and how long the trace goes on after the program has ended.
"""
from __future__ import annotations

import collections
import tempfile

MEMORY_LIMIT = 64 << 20
LIMIT = 256 << 20  # about 3 million events: ~15 s of decoding here


class Backlog:
    def __init__(self, memory_limit: int = MEMORY_LIMIT, limit: int = LIMIT):
        self.memory_limit, self.limit = memory_limit, limit
        self._memory: collections.deque[bytes] = collections.deque()
        self._memory_bytes = 0
        self._file = None
        self._spilled: collections.deque[int] = collections.deque()  # chunk lengths, oldest first
        self._read = self._write = 0  # file offsets

    def __bool__(self) -> bool:
        return bool(self._memory or self._spilled)

    @property
    def full(self) -> bool:
        return self._memory_bytes + self._write - self._read >= self.limit

    def put(self, chunk: bytes) -> None:
        """Queue a chunk of whole records."""
        if not chunk:
            return
        # Once anything waits in the file, later chunks go there too: order is kept.
        if not self._spilled and self._memory_bytes + len(chunk) <= self.memory_limit:
            self._memory.append(chunk)
            self._memory_bytes += len(chunk)
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="tether-trace-")
        self._file.seek(self._write)
        self._file.write(chunk)
        self._write += len(chunk)
        self._spilled.append(len(chunk))

    def take(self) -> bytes | None:
        """The oldest chunk, or None."""
        if self._memory:
            chunk = self._memory.popleft()
            self._memory_bytes -= len(chunk)
            return chunk
        if not self._spilled:
            return None
        n = self._spilled.popleft()
        self._file.seek(self._read)
        chunk = self._file.read(n)
        self._read += n
        if not self._spilled:  # all read back: start the file over
            self._file.truncate(0)
            self._read = self._write = 0
        return chunk

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._memory.clear()
        self._spilled.clear()
