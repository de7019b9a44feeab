"""Where `tether trace` output goes: filtering by class, text or JSON lines, held execve lines."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import TextIO

from ..protocol.layer_wire import Hello
from ..protocol.trace_wire import SyscallEvent
from .format import CLASSES, class_of_nr, format_line, to_json

EXEC_CALLS = (59, 322)  # execve, execveat


class Printer:
    def __init__(self, out: TextIO, as_json: bool, classes: set[str] | None,
                 warn: Callable[[str], None] = lambda msg: None):
        self.out, self.as_json, self.classes, self.warn = out, as_json, classes, warn
        self.failed = False  # the output could not be written: the program runs on, untraced
        # execve is reported before it runs; its line waits for the outcome: a result frame
        # if it failed, the new image's HELLO (same pid) if it succeeded. The HELLO comes on
        # the new image's own connection and may be served first: then it waits here.
        self._pending_exec: dict[int, SyscallEvent] = {}
        self._early_hellos: dict[int, int] = {}
        self.main_pid: int | None = None  # its first HELLO is the start, not an exec

    def _emit(self, e: SyscallEvent, result: str | None = None) -> None:
        if self.classes is not None and class_of_nr(e.nr) not in self.classes:
            return
        if self.as_json:
            obj = to_json(e)
            if result == "0":
                obj.update(ret=0, entry=False)
            self._write(json.dumps(obj) + "\n")
        else:
            line = format_line(e)
            if result is not None:
                line = line[: line.rfind("= ?")] + f"= {result}"
            self._write(line + "\n")

    def _write(self, text: str) -> None:
        if self.failed:
            return
        try:
            self.out.write(text)
        except OSError as e:
            self._fail(e)

    def _fail(self, e: OSError) -> None:
        self.failed = True
        self.warn(f"cannot write the trace to {getattr(self.out, 'name', 'its output')}: "
                  f"{e.strerror or e}; the rest of it is lost (the program runs on)")

    def flush(self) -> None:
        if self.failed:
            return
        try:
            self.out.flush()
        except OSError as e:
            self._fail(e)

    def event(self, e: SyscallEvent) -> None:
        if e.nr in EXEC_CALLS:
            if e.entry:
                if self._early_hellos.get(e.pid):
                    self._early_hellos[e.pid] -= 1
                    self._emit(e, "0")
                else:
                    self._pending_exec[e.pid] = e
                return
            self._pending_exec.pop(e.pid, None)  # failed: the result frame says how
        self._emit(e)

    def hello(self, h: Hello) -> None:
        if h.pid == self.main_pid:
            self.main_pid = None  # later HELLOs of this pid come from its execs
            return
        held = self._pending_exec.pop(h.pid, None)
        if held is not None:
            self._emit(held, "0")
        else:
            self._early_hellos[h.pid] = self._early_hellos.get(h.pid, 0) + 1

    def finish(self) -> None:
        for e in self._pending_exec.values():
            self._emit(e)
        self._pending_exec.clear()
        self.flush()


def parse_classes(spec: str | None) -> set[str] | None:
    if not spec or spec == "all":
        return None
    chosen = {c.strip() for c in spec.split(",") if c.strip()}
    unknown = chosen - CLASSES.keys()
    if unknown:
        raise ValueError(f"unknown class {', '.join(sorted(unknown))}; "
                         f"choose from {', '.join(sorted(CLASSES))} or all")
    return chosen
