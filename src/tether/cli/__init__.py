"""The `tether` command line: one module per command, each declaring its options (add_to)
and running it (run, whose docstring is its help); parsing.py has what they share. Building
the parser imports only these modules: each command imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from . import agent, completion, config, demo, doctor, exec, inspect, trace
from .parsing import DocstringFormatter, missing_command


def main(argv: list[str] | None = None) -> None:
    """Run a Linux program with its network, DNS, files and environment taken from a target.

      tether exec --target netns:NAME -- PROGRAM   run PROGRAM with the target's network,
                                                   DNS and environment
      tether trace -- PROGRAM   every syscall through tether's hooks
      tether inspect BINARY     what tether sees in a binary and whether it can hook it
      tether demo               see it work, in a throwaway namespace (root)
      tether doctor             what this machine offers tether, and the fix for what it lacks
    Go programs are hooked at their own syscall entry, programs using libc (C, Python, curl,
    ...) at libc's entry points for sockets, I/O, files, name lookups, fork and exec.
    """
    args = parse(sys.argv[1:] if argv is None else argv)
    args.run(args)


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line: args.run(args) runs the command, args.parser reports its usage errors.
    Usage errors exit 2 with the reason; --help and --version exit 0."""
    return _checked(*parser().parse_known_args(argv))


def parser() -> argparse.ArgumentParser:
    """The whole command line's parser."""
    top = argparse.ArgumentParser(prog="tether", description=main.__doc__,
                                  formatter_class=DocstringFormatter, allow_abbrev=False)
    top.add_argument("--version", action="version", version=f"tether, version {__version__}")
    top.set_defaults(run=missing_command, parser=top, top=top)  # top: for completion.py
    commands = top.add_subparsers(title="commands", metavar="COMMAND", help="`tether COMMAND -h` tells more")
    for command in (exec, trace, inspect, agent, demo, doctor, config, completion):
        command.add_to(commands)
    return top


def _checked(args: argparse.Namespace, unknown: list[str]) -> argparse.Namespace:
    if unknown:  # argparse would show the top usage for a command's unknown options: show the command's
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)} "
                          f"(`{args.parser.prog} -h` lists the options)")
    if "program" in args:
        if args.program[:1] == ["--"]:  # the -- that ends tether's options (REMAINDER keeps it)
            del args.program[0]
        if not args.program and getattr(args, "pid", None) is None:  # trace -p, exec --attach need none
            args.parser.error(f"no PROGRAM: give it after the options, "
                              f"e.g. `{args.parser.prog} -- ./program`")
    return args
