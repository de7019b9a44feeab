"""tether's settings: flags, environment variables and a tether.toml file, in that order.

Every setting of `tether exec` has a flag, a TETHER_* environment variable and a key in the
file; the first of those that is given wins, else the default. The file is --config FILE (or
TETHER_CONFIG), else ./tether.toml when it exists. Unknown keys and wrong types are errors that
name the file, the key and the closest valid key. `tether config schema` prints the JSON
schema of the file; `tether config show` the effective values and where each came from.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

DEFAULT_FILE = "tether.toml"


class ConfigError(Exception):
    """A config file that cannot be used; the message names the file and the fix."""


class Key(NamedTuple):
    name: str  # in the file
    param: str  # the argparse dest of `tether exec`'s flag
    flag: str
    kind: str  # "string", "bool", "list" (of strings), "ports" (numbers or strings) or "table" (of strings)
    help: str
    default: object = None
    choices: tuple[str, ...] = ()  # a string's only values

    @property
    def envvar(self) -> str:
        return "TETHER_" + self.name.upper()


KEYS = [
    Key("target", "target_spec", "--target", "string",
        "Where the program's network, DNS and environment come from: netns:NAME, pid:PID, "
        "container:NAME, ssh://[USER@]HOST[:PORT], tcp://HOST:PORT or unix:PATH."),
    Key("token_file", "token_file", "--token-file", "string",
        "The token of a tcp:// or unix: agent: the file it was started with (never the token itself)."),
    Key("ssh_option", "ssh_options", "--ssh-option", "list", "Options for ssh with an ssh:// target, each as "
        "ssh's -o takes it (ConnectTimeout=5).", ()),
    Key("local", "local_rules", "--local", "list", "Destinations that stay on this machine (SPEC: ADDRESS, "
        "CIDR or HOST, each with an optional :PORT).", ()),
    Key("remote", "remote_rules", "--remote", "list", "The only destinations that go out from the target.", ()),
    Key("env", "env_overrides", "--env", "table", "Variables set for the program, whatever the target says.", ()),
    Key("env_include", "env_include", "--env-include", "list", "Take only the target's variables matching "
        "these patterns.", ()),
    Key("env_exclude", "env_exclude", "--env-exclude", "list", "Never take the target's variables matching "
        "these patterns.", ()),
    Key("incoming", "incoming", "--incoming", "string", "What happens to connections to the target's port when "
        "the program listens on one: mirror (the target's app serves them, the program gets a copy of "
        "each), steal (the program serves them) or off.", "mirror", ("mirror", "steal", "off")),
    Key("incoming_ports", "incoming_ports", "--incoming-ports", "ports", "Only listeners on these ports take the "
        "target's (the program's port numbers).", ()),
    Key("ignore_ports", "ignore_ports", "--ignore-ports", "ports", "Listeners on these ports stay on this machine.",
        ()),
    Key("port_map", "port_map", "--port-map", "list", "LOCAL:REMOTE: the program's listener on port LOCAL takes "
        "the target's port REMOTE.", ()),
    Key("incoming_loopback", "incoming_loopback", "--incoming-loopback/--no-incoming-loopback", "bool",
        "Listeners on 127.0.0.1 or ::1 take the target's port too (by default they stay on this machine: "
        "a debugger's, a metrics endpoint's).", False),
    Key("steal_header", "steal_headers", "--steal-header", "list", "A filtered steal of HTTP/1.1: the program "
        "takes requests with a header line (Name: value) matching each of these regular expressions; "
        "the target's app serves the rest.", ()),
    Key("steal_path", "steal_path", "--steal-path", "string", "A filtered steal: the program takes requests "
        "whose path matches this regular expression."),
    Key("steal_method", "steal_methods", "--steal-method", "list", "A filtered steal: the program takes "
        "requests with one of these methods (GET, POST, ...).", ()),
    Key("fs", "fs", "--fs", "string", "The target's files: read (paths the rules give the target are read "
        "there; opened for writing, here), write (read and written there) or local (all here).", "read",
        ("read", "write", "local")),
    Key("fs_not_found", "fs_not_found", "--fs-not-found", "list", "Paths matching these regular expressions do "
        "not exist for the program (ENOENT).", ()),
    Key("fs_write", "fs_write", "--fs-write", "list", "Paths matching these are read and written in the target.",
        ()),
    Key("fs_remote", "fs_remote", "--fs-remote", "list", "Paths matching these are read in the target "
        "(opened for writing: here).", ()),
    Key("fs_local", "fs_local", "--fs-local", "list", "Paths matching these stay on this machine.", ()),
    Key("fs_whole_max", "fs_whole_max", "--fs-whole-max", "string", "Through a tcp:// or ssh:// agent: the "
        "target's files up to this size (bytes, or with K or M) opened read-only come whole with their "
        "open, one round trip; larger ones are read as the program reads.", "1M"),
    Key("dns", "dns", "--dns/--no-dns", "bool", "Resolve names in the target (default) or on this machine.", True),
    Key("verbose", "verbose", "--verbose", "bool", "Write debug logs to a file (its path is printed).", False),
    Key("log_file", "log_file", "--log-file", "string", "Where debug logs go (default: a new file in /tmp)."),
]
BY_NAME = {k.name: k for k in KEYS}
_JSON_TYPES = {
    "string": {"type": "string"},
    "bool": {"type": "boolean"},
    "list": {"type": "array", "items": {"type": "string"}},
    "ports": {"type": "array", "items": {"type": ["integer", "string"]}},
    "table": {"type": "object", "additionalProperties": {"type": "string"}},
}


def schema() -> dict:
    """The JSON schema (draft 2020-12) a tether.toml, read as JSON, must satisfy."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tether.toml",
        "description": "Settings for `tether exec`; each key also has a flag and a TETHER_* variable.",
        "type": "object",
        "additionalProperties": False,
        "properties": {k.name: {**_JSON_TYPES[k.kind], **({"enum": list(k.choices)} if k.choices else {}),
                                "description": f"{k.help} Flag {k.flag}, variable {k.envvar}."} for k in KEYS},
    }


def find(explicit: str | None) -> Path | None:
    """The config file to read: the one named (flag or TETHER_CONFIG), else ./tether.toml."""
    if explicit:
        return Path(explicit)
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


def _check(path: Path, name: str, value: object) -> object:
    key = BY_NAME[name]
    ok = {
        "string": isinstance(value, str) and (not key.choices or value in key.choices),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "ports": isinstance(value, list) and all(isinstance(v, (int, str)) and not isinstance(v, bool)
                                                 for v in value),
        "table": isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
    }[key.kind]
    if not ok:
        want = {"string": f"one of {', '.join(key.choices)}" if key.choices else "a string",
                "bool": "true or false", "list": "a list of strings",
                "ports": "a list of port numbers", "table": "a table of strings (KEY = \"VALUE\")"}[key.kind]
        raise ConfigError(f"{path}: {name} must be {want}, not {value!r}")
    return value


def load(path: Path) -> dict[str, object]:
    """The file's settings, checked: unknown keys and wrong types raise ConfigError."""
    import tomllib  # here: most runs have no file, and start-up counts

    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    for name in data:
        if name not in BY_NAME:
            import difflib

            close = difflib.get_close_matches(name, list(BY_NAME), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(BY_NAME)}"
            raise ConfigError(f"{path}: unknown key '{name}'{hint}")
    return {name: _check(path, name, value) for name, value in data.items()}


def as_param(key: Key, value: object) -> object:
    """A file value in the shape the flag gives (cli.exec.flag_settings): lists and tables as tuples."""
    if key.kind == "list":
        return tuple(value)
    if key.kind == "ports":
        return tuple(str(v) for v in value)
    if key.kind == "table":
        return tuple(f"{k}={v}" for k, v in value.items())
    return value


def from_environment(key: Key, environ: dict[str, str]) -> object | None:
    """The value TETHER_<KEY> gives (lists: space-separated; tables: KEY=VALUE words), or None."""
    raw = environ.get(key.envvar)
    if raw is None:
        return None
    if key.kind == "bool":
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ConfigError(f"{key.envvar}={raw!r}: use 1 or 0")
        return raw.lower() in ("1", "true", "yes", "on")
    if key.kind in ("list", "ports", "table"):
        return tuple(raw.split())
    if key.choices and raw not in key.choices:
        raise ConfigError(f"{key.envvar}={raw!r}: use one of {', '.join(key.choices)}")
    return raw


def effective(flags: dict[str, object], config_path: Path | None,
              environ: dict[str, str]) -> tuple[dict[str, object], dict[str, str]]:
    """Each setting's value (by parameter name) and where it came from, first found of:
    flags (those given on the command line: cli.exec.flag_settings), environ, the file, the default."""
    in_file = load(config_path) if config_path else {}
    values, sources = {}, {}
    for key in KEYS:
        from_env = from_environment(key, environ)
        if key.param in flags:
            values[key.param], sources[key.name] = flags[key.param], f"flag {key.flag}"
        elif from_env is not None:
            values[key.param], sources[key.name] = from_env, key.envvar
        elif key.name in in_file:
            values[key.param], sources[key.name] = as_param(key, in_file[key.name]), str(config_path)
        else:
            values[key.param], sources[key.name] = key.default, "default"
    return values, sources
