"""How the program's listeners are served (tether exec --incoming ...): the settings checked and
put in the shape the agent decides with (agent_wire.Incoming, sent with INCOMING)."""
from __future__ import annotations

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


def from_settings(mode: str, ports: tuple[str, ...], ignore_ports: tuple[str, ...], port_map: tuple[str, ...],
                  loopback: bool) -> agent_wire.Incoming:
    if ports and ignore_ports:
        raise IncomingError("--incoming-ports and --ignore-ports exclude each other: give one of them")
    only, ignored = parse_ports(ports, "--incoming-ports"), parse_ports(ignore_ports, "--ignore-ports")
    return agent_wire.Incoming(agent_wire.INCOMING_MODES[mode], only or ignored, bool(ignored),
                               parse_port_map(port_map), not loopback)
