"""`tether config show|schema`: the settings of `tether exec`, and the schema of their file."""
from __future__ import annotations

import argparse
import sys

from .parsing import EXIT_ERROR, add_command, file_argument, missing_command


def add_to(commands) -> None:
    p = add_command(commands, "config", run)
    config_commands = p.add_subparsers(title="commands", metavar="COMMAND",
                                       help="`tether config COMMAND -h` tells more")
    add_command(config_commands, "schema", schema)
    p = add_command(config_commands, "show", show)
    p.add_argument("--config", dest="config_file", type=file_argument, metavar="FILE",
                   help="Settings file (default: TETHER_CONFIG, else ./tether.toml if there).")


def run(args: argparse.Namespace) -> None:
    """The settings of `tether exec`: where they come from, and the file's schema.

      tether config show
      tether config schema
    """
    missing_command(args)


def schema(args: argparse.Namespace) -> None:
    """Print the JSON schema of tether.toml (for editors and validators).

      tether config schema > tether.schema.json
    """
    import json

    from .. import config

    print(json.dumps(config.schema(), indent=2))


def show(args: argparse.Namespace) -> None:
    """Print the settings `tether exec` would use here (before its flags) and their sources.

      TETHER_TARGET=netns:blue tether config show
    """
    import json
    import os

    from .. import config

    try:
        path = config.find(args.config_file or os.environ.get("TETHER_CONFIG"))
        settings, sources = config.effective({}, path, dict(os.environ))
    except config.ConfigError as e:
        print(f"tether config: {e}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    print(f"# file: {path or 'none (no ./tether.toml)'}; flags of `tether exec` override all of these")
    for key in config.KEYS:
        value = settings[key.param]
        shown = json.dumps(list(value) if isinstance(value, tuple) else value)
        print(f"{key.name} = {shown}  # {sources[key.name]}")
