"""Filtered steals (tether exec --steal-header/--steal-path/--steal-method): which requests of an
HTTP/1.1 connection the program serves and which the target's app does; sans-IO.

A Router is one client connection. It is fed the bytes that come from the client, the app and
the program, and leaves in `out` the bytes each of them is to be sent, unchanged: the client's
requests are cut at their exact ends and each goes whole to one side, and the sides' responses
go back in the order of the requests. llhttp (pyllhttp) finds those ends: pausing it in a
callback makes it return the offset where it stopped, which httptools cannot report, and h11
costs ~90 us a request here and rewrites what it forwards.

Order is kept by one rule: a request is sent to a side only when every request still waiting
for its answer went to that same side. Each side answers its own requests in order (HTTP/1.1
says it must), so one side's responses never need cutting from the other's; a client that
pipelines across sides waits, as behind a slow server.

What is not HTTP/1.1 goes to the app as it is, from the first byte that does not parse to the
end of the connection: TLS, HTTP/2, a protocol whose server speaks first, malformed requests
(the app answers them as it would without tether). An upgrade (101 to an Upgrade request, 2xx
to CONNECT) makes the connection a raw one with the side that accepted it.
"""
from __future__ import annotations

import functools
import re
from collections import deque
from typing import NamedTuple

from ..protocol.agent_wire import HttpFilter

APP, PROGRAM, CLIENT = 0, 1, 2
NAMES = {APP: "the target's app", PROGRAM: "the program", CLIENT: "the client"}
HEAD_MAX = 64 << 10  # a request head longer than this is not routed: it goes to the app as it is
UPGRADE = re.compile(rb"\r\nupgrade:", re.IGNORECASE)  # in a head llhttp accepted: a header's name starts a line


class Matcher:
    def __init__(self, f: HttpFilter):
        self.methods = frozenset(m.encode() for m in f.methods)
        self.path = re.compile(f.path.encode()) if f.path else None
        self.headers = [re.compile(h.encode()) for h in f.headers]

    def __call__(self, method: bytes, head: bytes) -> bool:
        """Whether a request, its head as llhttp accepted it, is the program's."""
        if self.methods and method not in self.methods:
            return False
        if self.path is not None and not self.path.search(head.split(b" ", 2)[1].partition(b"?")[0]):
            return False
        if not self.headers:
            return True
        lines = [prefix + value for name, value in _fields(head) for prefix in _prefixes(name)]
        return all(any(map(p.search, lines)) for p in self.headers)


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """The (name, value) of each header line of a head llhttp accepted, whose syntax it checked:
    a name, a colon, the value between optional white space (it refuses folded lines)."""
    fields = []
    for line in head.split(b"\r\n")[1:]:
        if not line:
            break
        name, _, value = line.partition(b":")
        fields.append((name, value.strip(b" \t")))
    return fields


@functools.lru_cache(maxsize=256)
def _prefixes(name: bytes) -> tuple[bytes, ...]:
    """A header's line as the filter sees it: "Name: value", in the name's case as sent, lower
    case and canonical (X-Forwarded-For), so a pattern written any of those ways matches."""
    lower = name.lower()
    canonical = b"-".join(word[:1].upper() + word[1:] for word in lower.split(b"-"))
    return tuple(dict.fromkeys(n + b": " for n in (name, lower, canonical)))


class Due(NamedTuple):
    """A request sent to a side and not answered yet."""

    side: int
    head: bool  # a HEAD: its answer has no body, whatever the answer's head says
    connect: bool  # a CONNECT: a 2xx answer makes the connection raw
    upgrade: bool  # an Upgrade header: a 101 answer makes the connection raw


def _parsers():
    import llhttp  # here: only a filtered steal needs it

    class Request(llhttp.Request):
        """Pauses where its head ends and where it ends, so execute says where that is. (pyllhttp
        calls every callback there is; those not defined here are C no-ops: the head's fields
        are read from its bytes once it is whole, not built up a callback at a time.)"""

        def start(self):
            self.reset()
            self.head_done = self.done = False

        def on_headers_complete(self):
            self.head_done = True
            self.pause()

        def on_message_complete(self):
            self.done = True
            self.pause()

    class Response(llhttp.Response):
        closing = False  # finish(): pausing there would make it fail (pyllhttp has no error for that)
        stop_at_head = False  # pause where the head ends: its status decides what follows

        def on_headers_complete(self):
            if self.stop_at_head:
                self.head_done = True
                self.pause()

        def on_message_complete(self):
            self.done = True
            if not self.closing:
                self.pause()

    return llhttp.Error, Request, Response


class Router:
    """One client connection of a filtered steal.

    The I/O feeds it (client_data, side_data, client_eof, side_eof, program_failed), then sends
    what `out` holds and deletes what it sent; connects the sides in `wanted` (a side it closed
    after side_eof is connected again if it is wanted again); sends EOF to each of `shut` once
    its out is empty; and closes everything once `over` and the outs are empty. `notes` are
    lines for the user's log, each about something this connection did that they should know."""

    def __init__(self, matches: Matcher):
        self.Error, Request, Response = _parsers()
        self.matches = matches
        self.out = {APP: bytearray(), PROGRAM: bytearray(), CLIENT: bytearray()}
        self.wanted = {APP}  # from the start: the app may be a server that speaks first
        self.shut: set[int] = set()
        self.over = False
        self.notes: list[str] = []
        self.request = Request()
        self.request.start()
        self.responses = {APP: Response(), PROGRAM: Response()}
        self.due: deque[Due] = deque()
        self.held = {APP: bytearray(), PROGRAM: bytearray()}  # a side's bytes before its turn
        self.inbox = bytearray()  # the client's bytes not sent anywhere yet
        self.head_len = 0  # of inbox: the request head parsed so far
        self.side: int | None = None  # where the request being read goes, once its head is read
        self.raw: int | None = None  # the side of a raw connection
        self.raw_next: int | None = None  # the side it goes raw with once the other's answers are sent
        self.client_done = self.raw_side_done = self.program_gone = False
        self.requests = self.matched = 0

    @property
    def client_paused(self) -> bool:
        """Stop reading the client: enough of its bytes wait already."""
        return len(self.inbox) > HEAD_MAX

    # the client

    def client_data(self, data) -> None:
        if self.over:
            return
        if self.raw is not None:
            self._send(self.raw, data)
        else:
            self.inbox += data
            self._route()

    def client_eof(self) -> None:
        self.client_done = True
        if self.raw is None and self.side is None and self.inbox and self.raw_next is None:
            self._not_http("the client ended inside a request head")
        self._route()
        self._maybe_done()

    def _route(self) -> None:
        while self.inbox and self.raw is None and self.raw_next is None:
            if self.side is None and not self._read_head():
                return
            if self.due and (self.due[-1].side != self.side or self.due[-1].connect or self.due[-1].upgrade):
                return  # the other side's answers first; after an upgrade, its answer says what follows
            if not self._read_request():
                return

    def _read_head(self) -> bool:
        """Parse the next request's head; True once it is whole and its side chosen."""
        try:
            self.head_len += self.request.execute(bytes(self.inbox[self.head_len:]))
        except self.Error as e:
            self._not_http(f"the client sent bytes that are not HTTP/1.1 ({e})")
            return False
        if not self.request.head_done:
            if self.head_len > HEAD_MAX:
                self._not_http(f"a request head is longer than {HEAD_MAX} bytes")
            return False
        self.request.unpause()
        head = bytes(self.inbox[:self.head_len])
        self.method = self.request.method.encode()
        self.upgrade = UPGRADE.search(head) is not None
        self.requests += 1
        take = not self.program_gone and self.matches(self.method, head)
        self.matched += take
        self.side = PROGRAM if take else APP
        return True

    def _read_request(self) -> bool:
        """Send the request read so far, its head first, to its side; True once it is whole."""
        side = self.side
        if self.head_len:
            self._send(side, self.inbox[:self.head_len])
            del self.inbox[:self.head_len]
            self.head_len = 0
            self.due.append(Due(side, self.method == b"HEAD", self.method == b"CONNECT", self.upgrade))
        if not self.request.done:
            try:
                n = self.request.execute(bytes(self.inbox))
            except self.Error as e:
                self.notes.append(f"a request body is malformed ({e}); the rest of the connection "
                                  f"goes to {NAMES[side]} as it is")
                self._go_raw(side)
                return False
            self._send(side, self.inbox[:n])
            del self.inbox[:n]
            if not self.request.done:
                return False
        self.side = None
        self.request.start()
        return True

    def _not_http(self, why: str) -> None:
        """From here on the client's bytes go to the app as they are, after the program's
        answers due (if any) are sent."""
        self.notes.append(f"{why}; the rest of the connection goes to {NAMES[APP]} as it is")
        self.side, self.head_len = None, 0
        if self.due and self.due[-1].side == PROGRAM:
            self.raw_next = APP
        else:
            self._go_raw(APP)

    def _go_raw(self, side: int) -> None:
        self.raw, self.raw_next = side, None
        self._send(side, self.inbox)
        self.inbox.clear()
        self.out[CLIENT] += self.held[side]
        self.held[side].clear()
        if self.client_done:
            self.shut.add(side)
            self._maybe_done()

    # the sides

    def side_data(self, side: int, data) -> None:
        if self.over:
            return
        if self.raw is not None:
            if side == self.raw:
                self.out[CLIENT] += data
        elif not self.due:
            if side == APP and not self.requests:
                self.notes.append(f"{NAMES[APP]} spoke first: not HTTP; the connection goes to it as it is")
                self.out[CLIENT] += data
                self._go_raw(APP)
            else:
                self.out[CLIENT] += data  # not asked for (a 408 before closing): the client hears it
        elif self.due[0].side != side:
            self.held[side] += data
        else:
            self._answer(side, bytes(data))

    def _answer(self, side: int, data: bytes) -> None:
        """A side's bytes in its turn go to the client; each answer's end is found."""
        parser = self.responses[side]
        while data and self.due and self.due[0].side == side and self.raw is None:
            due = self.due[0]
            parser.head_done = parser.done = False
            parser.stop_at_head = due.head or due.upgrade or due.connect
            status = None
            try:
                n = parser.execute(data)
            except self.Error as e:
                self.notes.append(f"{NAMES[side]} answered with bytes that are not HTTP/1.1 ({e}); "
                                  "the connection goes to it as it is")
                self.out[CLIENT] += data
                self._go_raw(side)
                return
            self.out[CLIENT] += data[:n]
            data = data[n:]
            if parser.head_done:
                parser.unpause()
                status = parser.status
                if (due.upgrade and status == 101) or (due.connect and 200 <= status < 300):
                    self.due.popleft()
                    self.out[CLIENT] += data
                    self._go_raw(side)
                    return
                if due.head:
                    parser.reset()
                    parser.done = True
            if parser.done:
                parser.unpause()
                self._answered(status or parser.status)
        if data:
            self.out[CLIENT] += data  # past every answer due: not asked for, as it is

    def _answered(self, status: int) -> None:
        if 100 <= status < 200:
            return  # informational: the final answer is still due
        self.due.popleft()
        if self.due:
            nxt = self.due[0].side
            if self.held[nxt]:
                data = bytes(self.held[nxt])
                self.held[nxt].clear()
                self._answer(nxt, data)
            return
        if self.raw_next is not None:
            self._go_raw(self.raw_next)
        else:
            self._route()
        self._maybe_done()

    def side_eof(self, side: int) -> None:
        """A side closed. With answers of its due (one that ends with the close, or lost), the
        client's connection ends after what came; idle, the side is connected again if needed."""
        if self.over:
            return
        if self.raw is not None:
            if side == self.raw:
                self.raw_side_done = True
                self.shut.add(CLIENT)
                self._maybe_done()
            return
        if any(d.side == side for d in self.due):
            parser = self.responses[side]
            parser.closing, parser.done = True, False
            try:
                parser.finish()  # an answer whose body runs to the close ends here
            except self.Error:
                pass
            else:
                if self.due[0].side == side and parser.done:
                    self._answered(parser.status)
            self.shut.add(CLIENT)
            self.over = True
            return
        self.wanted.discard(side)
        self.responses[side].reset()
        if self.client_done:
            self._maybe_done()

    def program_failed(self) -> None:
        """The program cannot be reached (it stopped listening): its requests, those sent and
        those to come, go to the app."""
        if not self.program_gone:
            self.notes.append("the program is not accepting connections: its requests go to the target's app")
        self.program_gone = True
        self.due = deque(d._replace(side=APP) for d in self.due)
        if self.side == PROGRAM:
            self.side = APP
        self._send(APP, self.out[PROGRAM])
        self.out[PROGRAM].clear()
        self.wanted.discard(PROGRAM)

    def _send(self, side: int, data) -> None:
        if side == PROGRAM and self.program_gone:
            side = APP
        self.out[side] += data
        self.wanted.add(side)

    def _maybe_done(self) -> None:
        """The client has ended: once all it sent is routed, the sides hear that too; and once
        nothing is due, the connection is over."""
        if not self.client_done:
            return
        if self.raw is not None:
            self.shut.add(self.raw)
            if self.raw_side_done:
                self.over = True
            return
        if self.inbox or self.raw_next is not None:
            return
        self.shut |= self.wanted & {APP, PROGRAM}
        if not self.due:
            self.shut.add(CLIENT)
            self.over = True
