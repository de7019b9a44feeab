"""How the program's listeners are served (tether exec --incoming ...): the settings checked and
put in the shape the agent decides with (agent_wire.Incoming, sent with INCOMING)."""
from __future__ import annotations

import re

from ..protocol import agent_wire


class IncomingError(ValueError):
    """Settings that cannot be used; the message names the flag and the fix."""


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise IncomingError(f"{what}: {text!r} is not a port number (1-65535)")
    return int(text)


def parse_ports(items: tuple[str, ...], what: str) -> tuple[int, ...]:
    """Port numbers from items, each one or more separated by commas."""
    return tuple(_port(p.strip(), what) for item in items for p in item.split(",") if p.strip())


def parse_port_map(items: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """(the program's port, the target's) from LOCAL:REMOTE items."""
    pairs = []
    for item in items:
        local, colon, remote = item.partition(":")
        if not colon:
            raise IncomingError(f"--port-map {item!r}: give LOCAL:REMOTE, e.g. 8080:80")
        pairs.append((_port(local, "--port-map"), _port(remote, "--port-map")))
    locals_ = [local for local, _ in pairs]
    if len(set(locals_)) != len(locals_):
        raise IncomingError("--port-map: a local port is mapped twice")
    return tuple(pairs)


HTTP_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110's token


def http_filter(headers: tuple[str, ...], path: str | None, methods: tuple[str, ...]) -> agent_wire.HttpFilter:
    """The filtered steal the flags ask for (empty: none), each regex checked as the agent will
    compile it."""
    for flag, pattern in [("--steal-header", h) for h in headers] + [("--steal-path", path or "")]:
        try:
            re.compile(pattern.encode())
        except re.error as e:
            raise IncomingError(f"{flag} {pattern!r}: not a regular expression: {e}") from None
    names = tuple(m.strip() for item in methods for m in item.split(",") if m.strip())
    for m in names:
        if not HTTP_METHOD.fullmatch(m):
            raise IncomingError(f"--steal-method {m!r}: not an HTTP method (GET, POST, ...)")
    return agent_wire.HttpFilter(names, path or "", tuple(headers))


def from_settings(mode: str, ports: tuple[str, ...], ignore_ports: tuple[str, ...], port_map: tuple[str, ...],
                  loopback: bool, http: agent_wire.HttpFilter = agent_wire.HttpFilter(),
                  mode_given: bool = True) -> agent_wire.Incoming:
    if ports and ignore_ports:
        raise IncomingError("--incoming-ports and --ignore-ports exclude each other: give one of them")
    if http and mode != "steal":
        if mode_given:
            raise IncomingError(f"--steal-header/--steal-path/--steal-method filter a steal: they cannot be "
                                f"used with --incoming {mode}; drop one or the other")
        mode = "steal"
    only, ignored = parse_ports(ports, "--incoming-ports"), parse_ports(ignore_ports, "--ignore-ports")
    return agent_wire.Incoming(agent_wire.INCOMING_MODES[mode], only or ignored, bool(ignored),
                               parse_port_map(port_map), not loopback, http)
