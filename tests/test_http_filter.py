"""The filtered steal's router (agent/http_filter.py): each request whole to its side, bytes
unchanged, answers back in order; what is not HTTP to the app as it is."""
from __future__ import annotations

import subprocess
import sys

import hypothesis.strategies as st
from hypothesis import given, settings

from tether.agent.http_filter import APP, CLIENT, PROGRAM, Matcher, Router
from tether.protocol.agent_wire import HttpFilter


def test_the_relay_numbers_the_sides_as_the_router_and_the_agent_starts_without_it():
    from tether.agent import incoming
    assert (incoming.APP, incoming.PROGRAM, incoming.CLIENT) == (APP, PROGRAM, CLIENT)
    loaded = subprocess.run([sys.executable, "-c", "import sys, tether.agent.server, tether.agent.listen; "
                             "print('tether.agent.http_filter' in sys.modules)"], capture_output=True, text=True)
    assert loaded.stdout.strip() == "False", loaded.stderr  # imported once a filtered steal is made


def router(**f) -> Router:
    return Router(Matcher(HttpFilter(**f)))


def request(path: str, *, method="GET", headers=(), body=b"", chunked=False) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: svc", *headers]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 3]), body[i:i + 3]) for i in range(0, len(body), 3))
        payload += b"0\r\n\r\n"
    else:
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        payload = body
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def response(text: str, status="200 OK", close=False, length=True) -> bytes:
    body = text.encode()
    head = f"HTTP/1.1 {status}\r\n" + (f"Content-Length: {len(body)}\r\n" if length else "")
    return (head + ("Connection: close\r\n" if close else "") + "\r\n").encode() + body


def take(r: Router, side: int) -> bytes:
    data = bytes(r.out[side])
    r.out[side].clear()
    return data


def head(method: str, target: str, *fields: str) -> bytes:
    return "\r\n".join([f"{method} {target} HTTP/1.1", "Host: svc", *fields, "", ""]).encode()


def test_matcher_needs_every_filter_given():
    m = Matcher(HttpFilter(methods=("GET", "PUT"), path=r"^/api/", headers=(r"^X-User: alice$",)))
    assert m(b"GET", head("GET", "/api/x?q=1", "X-User: alice"))
    assert m(b"PUT", head("PUT", "/api/x", "x-user: alice"))  # the name's canonical form matches
    assert not m(b"POST", head("POST", "/api/x", "X-User: alice"))
    assert not m(b"GET", head("GET", "/web/api/", "X-User: alice"))
    assert not m(b"GET", head("GET", "/x?/api/", "X-User: alice"))  # the path is before the '?'
    assert not m(b"GET", head("GET", "/api/x", "X-User: bob"))
    assert not m(b"GET", head("GET", "/api/x"))
    assert Matcher(HttpFilter(headers=(r"^x-user: a",)))(b"GET", head("GET", "/", "X-User: a"))  # lower case too


def test_matcher_reads_header_values_as_llhttp_delimits_them():
    m = Matcher(HttpFilter(headers=(r"^X-User: alice smith$",)))
    assert m(b"GET", head("GET", "/", "X-User:alice smith \t"))  # white space around a value is not in it
    assert not m(b"GET", head("GET", "/", "X-User: alice", "X-Other: smith"))
    assert not m(b"GET", head("GET", "/", "X-User: alice smith and more"))
    r = router(headers=(r"^X-User: alice smith$",))
    r.client_data(request("/", headers=["X-User: alice", "  smith"]))  # obs-fold: llhttp refuses it
    assert take(r, APP) and not take(r, PROGRAM) and "not HTTP/1.1" in r.notes[0]


def test_keep_alive_mixed_requests_go_whole_to_their_sides_and_answers_come_in_order():
    r = router(path=r"^/mine")
    reqs = [request("/theirs/1"), request("/mine/2", method="POST", body=b"hello world"),
            request("/mine/3", method="PUT", body=b"chunked body!", chunked=True), request("/theirs/4")]
    r.client_data(b"".join(reqs))  # pipelined, all in one read
    assert take(r, APP) == reqs[0] and take(r, PROGRAM) == b""  # the program's wait for the app's answer
    r.side_data(APP, response("one"))
    assert take(r, CLIENT) == response("one")
    assert take(r, PROGRAM) == reqs[1] + reqs[2]  # same side: sent on without waiting
    r.side_data(PROGRAM, response("two") + response("three")[:10])
    assert take(r, CLIENT) == response("two") + response("three")[:10]
    assert take(r, APP) == b""
    r.side_data(PROGRAM, response("three")[10:])
    assert take(r, APP) == reqs[3]
    r.side_data(APP, response("four"))
    assert take(r, CLIENT) == response("three")[10:] + response("four")
    assert (r.requests, r.matched) == (4, 2)


def test_not_http_goes_to_the_app_as_it_is():
    r = router(path="/")
    hello = bytes.fromhex("160301") + b"\x00\x05hello"
    r.client_data(hello)
    assert take(r, APP) == hello and r.raw == APP and "not HTTP/1.1" in r.notes[0]
    r.client_data(b"more")
    r.side_data(APP, b"server bytes")
    assert take(r, APP) == b"more" and take(r, CLIENT) == b"server bytes"


def test_malformed_request_after_the_programs_goes_to_the_app_after_its_answer():
    r = router(path="/mine")
    r.client_data(request("/mine") + b"BAD\x01 REQUEST\r\n\r\n")
    assert take(r, PROGRAM) == request("/mine") and take(r, APP) == b""
    r.side_data(PROGRAM, response("ok"))
    assert take(r, CLIENT) == response("ok")
    assert take(r, APP) == b"BAD\x01 REQUEST\r\n\r\n" and r.raw == APP


def test_a_server_that_speaks_first_gets_the_connection():
    r = router(path="/")
    r.side_data(APP, b"220 smtp ready\r\n")
    assert take(r, CLIENT) == b"220 smtp ready\r\n" and r.raw == APP
    r.client_data(b"EHLO x\r\n")
    assert take(r, APP) == b"EHLO x\r\n"


def test_an_upgrade_the_program_accepts_makes_the_connection_raw_with_it():
    r = router(path="/ws")
    up = request("/ws", headers=("Upgrade: websocket", "Connection: Upgrade"))
    r.client_data(up + b"\x81\x05frame")
    assert take(r, PROGRAM) == up  # the frame waits for the answer
    r.side_data(PROGRAM, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi")
    assert take(r, CLIENT).endswith(b"\r\n\r\n\x81\x02hi")
    assert r.raw == PROGRAM and take(r, PROGRAM) == b"\x81\x05frame"


def test_an_upgrade_refused_keeps_routing_http():
    r = router(path="/ws")
    up = request("/ws", headers=("Upgrade: h2c", "Connection: Upgrade"))
    r.client_data(up + request("/other"))
    assert take(r, PROGRAM) == up
    r.side_data(PROGRAM, response("no upgrade"))
    assert r.raw is None and take(r, APP) == request("/other")


def test_head_interim_and_close_delimited_answers():
    r = router(path="/mine")
    r.client_data(request("/a", method="HEAD"))
    r.side_data(APP, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")  # no body follows a HEAD's answer
    r.client_data(request("/mine", method="POST", headers=("Expect: 100-continue",), body=b"xyz"))
    assert take(r, PROGRAM).endswith(b"xyz")
    r.side_data(PROGRAM, b"HTTP/1.1 100 Continue\r\n\r\n")
    r.client_data(request("/b"))
    assert take(r, APP) == request("/a", method="HEAD")  # /b waits: the 100 was not the answer
    r.side_data(PROGRAM, response("done"))
    assert take(r, APP) == request("/b")
    r.side_data(APP, response("to the close", length=False, close=True))
    r.side_eof(APP)
    assert take(r, CLIENT).endswith(response("to the close", length=False, close=True))
    assert CLIENT in r.shut and r.over


def test_a_program_that_stopped_accepting_hands_its_requests_to_the_app():
    r = router(path="/mine")
    r.client_data(request("/mine"))
    assert PROGRAM in r.wanted
    r.program_failed()
    assert take(r, APP) == request("/mine") and take(r, PROGRAM) == b""
    assert "not accepting" in r.notes[0]
    r.side_data(APP, response("app"))
    r.client_data(request("/mine/2"))
    assert take(r, APP) == request("/mine/2") and take(r, CLIENT) == response("app")


def test_client_end_is_passed_on_once_everything_is_answered():
    r = router(path="/mine")
    r.client_data(request("/x"))
    r.client_eof()
    assert APP in r.shut and not r.over
    r.side_data(APP, response("x"))
    assert r.over and CLIENT in r.shut


@st.composite
def conversations(draw):
    reqs = []
    for i in range(draw(st.integers(1, 8))):
        mine = draw(st.booleans())
        body = draw(st.binary(max_size=20))
        method = draw(st.sampled_from(["GET", "POST"])) if not body else "POST"
        headers = ("X-Route: me",) if mine else ()
        reqs.append((mine, request(f"/r{i}", method=method, headers=headers, body=body,
                                   chunked=bool(body) and draw(st.booleans()))))
    stream = b"".join(r for _, r in reqs)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    return reqs, [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]


@settings(max_examples=200, deadline=None)
@given(conversations())
def test_any_interleaving_routes_exactly_and_in_order(conv):
    """Each side gets exactly its requests' bytes, the client every answer in request order,
    however the client's stream is cut into reads."""
    reqs, pieces = conv
    r = router(headers=(r"^X-Route: me$",))
    expected = {APP: [q for mine, q in reqs if not mine], PROGRAM: [q for mine, q in reqs if mine]}
    got = {APP: b"", PROGRAM: b""}
    answered = {APP: 0, PROGRAM: 0}
    client = b""

    def serve():
        """Each side answers every request it has whole, naming it."""
        nonlocal client
        progress = True
        while progress:
            progress = False
            for side in (APP, PROGRAM):
                got[side] += take(r, side)
                done = b"".join(expected[side][:answered[side] + 1])
                if answered[side] < len(expected[side]) and got[side].startswith(done):
                    q = expected[side][answered[side]]
                    answered[side] += 1
                    r.side_data(side, response(q.split(b" ")[1].decode()))
                    progress = True
            client += take(r, CLIENT)

    for piece in pieces:
        r.client_data(piece)
        serve()
    r.client_eof()
    serve()
    assert got == {side: b"".join(qs) for side, qs in expected.items()}
    assert client == b"".join(response(q.split(b" ")[1].decode()) for _, q in reqs)
    assert r.over and r.matched == len(expected[PROGRAM])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([CLIENT, APP, PROGRAM, "eof"]),
                          st.one_of(st.binary(max_size=60), st.sampled_from([request("/"), response("x"),
                                                                              request("/", headers=("X-Route: me",))]))),
                max_size=12))
def test_any_bytes_from_anyone_are_handled_without_an_exception(events):
    """Garbage, truncations and answers nobody asked for: the router routes or goes raw, never raises."""
    r = router(headers=(r"^X-Route: me$",))
    for who, data in events:
        if who == CLIENT:
            r.client_data(data)
        elif who == "eof":
            r.client_eof()
        else:
            r.side_data(who, data)
        for side in (APP, PROGRAM, CLIENT):
            take(r, side)
    r.side_eof(APP)
    r.side_eof(PROGRAM)
