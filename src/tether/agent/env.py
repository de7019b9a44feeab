"""The target's environment, as the agent reports it to the session.

An agent started into a target by tether (netns) has the session's own environment, which is
not the target's: it is then given a file to read instead, in /etc/environment's format
(KEY=VALUE lines, optional quotes, # comments), as the target sees that file."""
from __future__ import annotations


def parse_env_file(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq or not key or not all(c.isalnum() or c == "_" for c in key):
            continue  # not an assignment: pam_env skips such lines too
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


def target_env(env_file: str) -> dict[str, str]:
    try:
        with open(env_file, encoding="utf-8", errors="surrogateescape") as f:
            return parse_env_file(f.read())
    except FileNotFoundError:
        return {}
