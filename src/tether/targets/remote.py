"""`tcp://HOST:PORT` and `unix:PATH`: a `tether agent --listen` already running somewhere.

The token comes from a file (--token-file, TETHER_TOKEN_FILE or token_file in tether.toml),
read here before anything starts so that a missing or loose file is reported at once. tether
then forks a stand-in agent (agent/forward.py) that proves the token to the agent there and
forwards to it; the session and the layer use the stand-in as they use a local agent.
"""
from __future__ import annotations

from .target import AgentLog, Target, TargetError
from .local import fork_agent


def start_agent(spec: str, token_file: str | None, wait: bool = True, log: AgentLog | None = None) -> Target:
    from ..agent.listen import AddressError, parse_address
    from ..protocol.auth import TokenError, load_token_file

    try:
        address = parse_address("tcp:" + spec.removeprefix("tcp://") if spec.startswith("tcp://") else spec)
    except AddressError as e:
        raise TargetError(f"{e}; targets of this kind look like tcp://HOST:PORT or unix:PATH") from None
    if not token_file:
        raise TargetError(f"{spec} needs the agent's token: give --token-file FILE (or TETHER_TOKEN_FILE, "
                          "or token_file in tether.toml), the file the agent was started with")
    try:
        token, pin = load_token_file(token_file)
    except TokenError as e:
        raise TargetError(str(e)) from None

    return fork_agent(spec, _enter, (tuple(address), token, token_file, spec, pin), wait, log)


def _enter(address: tuple, token: bytes, token_file: str, spec: str, pin: str | None):
    """In the child: serve as the stand-in for the agent at address (over TLS if pin)."""
    import sys

    if pin:
        sys.modules.pop("ssl", None)  # kept out of the forked agent for speed (targets/early.py)
    from ..agent.forward import serving
    from ..agent.listen import Address

    return None, serving((Address(*address), token, token_file, spec, pin))
