"""A TCP proxy that delays and paces what it forwards: a real-latency link for tests and bench/
(this kernel has no netem).

Every chunk read from one side is written to the other `delay` seconds after it arrived, and
each direction moves at most `rate` bytes a second (None: as fast as it can). What is in
flight is bounded by flight_max bytes per direction: beyond that the proxy stops reading, so
TCP's flow control holds the sender back as a slow link would. An end of stream is passed on
after the same delay (half-close); a reset or error closes both sides. cut() resets every
connection open now (RST both ways: a link that broke); the proxy goes on accepting. With record=True,
`seen` keeps the first SEEN_MAX bytes that crossed (both directions), to look for plaintext.

    with DelayProxy(("127.0.0.1", 0), ("198.18.0.1", 7411), delay=0.010) as proxy:
        ... connect to proxy.address: 20 ms round trips ...
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

CHUNK = 1 << 16
SEEN_MAX = 64 << 20
PACE_SLACK = 0.002  # seconds: pacing sleeps only when this far ahead, and forgives this much behind
LINGER_RESET = struct.pack("ii", 1, 0)  # close sends RST


class DelayProxy:
    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], delay: float,
                 rate: float | None = None, flight_max: int = 64 << 20, record: bool = False):
        self.upstream, self.delay, self.rate, self.flight_max = upstream, delay, rate, flight_max
        self.seen = bytearray() if record else None
        self.open: set[asyncio.StreamWriter] = set()  # both sides of every connection, for cut()
        self.sock = socket.create_server(listen)
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()[:2]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="delayproxy")
        self.server: asyncio.AbstractServer | None = None

    def __enter__(self) -> "DelayProxy":
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, sock=self.sock, limit=CHUNK), self.loop).result(5)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def cut(self) -> None:
        def abort() -> None:
            for writer in self.open:
                _reset_on_close(writer)
                writer.transport.abort()
        self.loop.call_soon_threadsafe(abort)

    def close(self) -> None:
        async def stop() -> None:
            if self.server:
                self.server.close()
            for writer in self.open:  # each connection's tasks then end on their own (cancelling
                writer.transport.abort()  # a connection's task makes asyncio log it)
            for _ in range(100):
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                if not tasks:
                    return
                await asyncio.sleep(self.delay + 0.01)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        self.sock.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream, limit=CHUNK)
        except OSError:
            client_w.transport.abort()
            return
        for w in (client_w, up_w):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.open.add(w)
        directions = [asyncio.ensure_future(self._pipe(client_r, up_w)),
                      asyncio.ensure_future(self._pipe(up_r, client_w))]
        try:
            await asyncio.gather(*directions)
        except (OSError, asyncio.IncompleteReadError):  # a reset on one side is one on both
            for w in (client_w, up_w):
                _reset_on_close(w)
        finally:
            for task in directions:
                task.cancel()
            for w in (client_w, up_w):
                w.transport.abort()
                self.open.discard(w)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One direction: chunks stamped as they arrive, written delay later, paced by rate."""
        queue: asyncio.Queue = asyncio.Queue()
        room = asyncio.Semaphore(max(1, self.flight_max // CHUNK))

        async def read() -> None:
            while True:
                await room.acquire()
                try:
                    data = await reader.read(CHUNK)
                except OSError as e:  # a reset: it crosses the link too, after the delay
                    queue.put_nowait((time.monotonic(), e))
                    return
                if self.seen is not None and len(self.seen) < SEEN_MAX:
                    self.seen += data
                queue.put_nowait((time.monotonic(), data))
                if not data:
                    return

        reading = asyncio.ensure_future(read())
        sent_until = time.monotonic()  # when the paced link is free again
        try:
            while True:
                arrived, data = await queue.get()
                wait = arrived + self.delay - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if isinstance(data, OSError):
                    raise data
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                if self.rate:  # sleeps overshoot: credit up to PACE_SLACK of lateness to later chunks
                    sent_until = max(sent_until, time.monotonic() - PACE_SLACK) + len(data) / self.rate
                    pause = sent_until - time.monotonic()
                    if pause > PACE_SLACK:
                        await asyncio.sleep(pause)
                writer.write(data)
                await writer.drain()
                room.release()
        finally:
            reading.cancel()


def _reset_on_close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    except OSError:
        pass
