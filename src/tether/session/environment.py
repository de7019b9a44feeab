"""The program's environment under `tether exec`: the target's, merged with the local one.

The target's variables win, except those that describe this machine and the user's tools
(PATH, HOME, TERM, LANG, SHELL, PWD, the loader's LD_*, tool settings such as GO*, PYTHON*):
those stay local unless --env-include names them. --env-include PATTERN takes only matching
variables from the target; --env-exclude PATTERN never takes them; --env KEY=VALUE sets a
value outright. Patterns are shell-style (fnmatch, case-sensitive).
"""
from __future__ import annotations

from fnmatch import fnmatchcase

KEEP_LOCAL = ["PATH", "HOME", "TERM", "LANG", "LANGUAGE", "LC_*", "SHELL", "PWD", "OLDPWD", "USER",
              "LOGNAME", "TMPDIR", "DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY", "XDG_*", "COLORTERM",
              "TERM_*", "SSH_AUTH_SOCK", "EDITOR", "VISUAL", "PAGER", "LD_*",
              "TETHER_SESSION", "TETHER_GO_PLAN", "TETHER_ROUTE_ALL", "TETHER_LAYER_DEBUG",
              "GO*", "CGO_*", "PYTHON*", "VIRTUAL_ENV", "CONDA_*", "NODE_*", "NPM_*", "CARGO_*",
              "RUSTUP_*", "JAVA_HOME", "DEBUGINFOD_*"]


class EnvError(ValueError):
    """A malformed --env option."""


class EnvRules:
    # A plain class, as in all of tether exec's start-up path: dataclasses costs 5-10 ms to import.
    def __init__(self, include: list[str] = (), exclude: list[str] = (), override: dict[str, str] | None = None):
        self.include = list(include)
        self.exclude = list(exclude)
        self.override = dict(override or {})

    @staticmethod
    def parse_overrides(items: list[str]) -> dict[str, str]:
        out = {}
        for item in items:
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise EnvError(f"--env {item!r}: expected KEY=VALUE")
            out[key] = value
        return out


def _any(key: str, patterns: list[str]) -> bool:
    return any(fnmatchcase(key, p) for p in patterns)


def merge(local: dict[str, str], target: dict[str, str], rules: EnvRules) -> tuple[dict[str, str], list[str]]:
    """(the program's environment, the names whose value came from the target)."""
    env = dict(local)
    taken = []
    for key, value in target.items():
        if rules.include:
            wanted = _any(key, rules.include)
        else:
            wanted = not _any(key, KEEP_LOCAL)
        if wanted and not _any(key, rules.exclude):
            env[key] = value
            taken.append(key)
    env.update(rules.override)
    return env, sorted(k for k in taken if k not in rules.override)
