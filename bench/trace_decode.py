#!/usr/bin/env python3
"""How long `tether trace` takes per event after the ring: decoding a record, and decoding
plus printing it as text or JSON (Printer into memory), for a mix of records like a busy
program's (pread, openat with a path, a failed close, getppid).

    python3 bench/trace_decode.py [--records 100000] [--rounds 5]

Medians of the rounds, in microseconds per record. A traced program that outruns this rate
makes the trace end after it (the ring and the backlog hold up to 256 MiB; then the program
goes at this pace): compare with a syscall's own cost, well under a microsecond.
"""
from __future__ import annotations

import argparse
import io
import statistics
import time

from tether.protocol import trace_wire, wire
from tether.trace.printer import Printer

EVENTS = [
    trace_wire.SyscallEvent(100, 101, 17, (3, 0x7F0000001000, 1, 42, 0, 0), 1, False, ()),
    trace_wire.SyscallEvent(100, 101, 257, (-100, 0x7F0000002000, 0o2000000, 0, 0, 0), 3, False,
                            (trace_wire.Data(1, trace_wire.DATA_STRING, b"/etc/hosts", 10),)),
    trace_wire.SyscallEvent(100, 102, 3, (5, 0, 0, 0, 0, 0), -9, False, ()),
    trace_wire.SyscallEvent(100, 102, 110, (0, 0, 0, 0, 0, 0), 1, False, ()),
]


def records(n: int) -> bytes:
    one = []
    for e in EVENTS:
        frame = wire.decode_frame(trace_wire.encode_syscall(e))
        one.append(trace_wire.encode_record(trace_wire.MSG_SYSCALL, frame.payload, frame.flags))
    return b"".join(one[i % len(one)] for i in range(n))


def per_record(chunk: bytes, printer: Printer | None) -> float:
    start, pos, n = time.perf_counter(), 0, 0
    while pos < len(chunk):
        item, pos = trace_wire.decode_record(chunk, pos)
        if printer:
            printer.event(item)
        n += 1
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    chunk = records(args.records)
    modes = {"decode": lambda: None, "decode + text": lambda: Printer(io.StringIO(), False, None),
             "decode + JSON": lambda: Printer(io.StringIO(), True, None)}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.rounds):
        for mode, make in modes.items():
            times[mode].append(per_record(chunk, make()))
    for mode, t in times.items():
        print(f"{mode:<14} {statistics.median(t):6.2f} us a record (min {min(t):.2f})")


if __name__ == "__main__":
    main()
