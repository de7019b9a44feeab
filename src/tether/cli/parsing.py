"""What every command's module uses to declare its command line: the help formatter, the
command itself, PROGRAM and FILE arguments, and the exit status of a usage error."""
from __future__ import annotations

import argparse
import sys

EXIT_ERROR = 2
PROGRAM_USAGE = "%(prog)s [OPTIONS] [--] PROGRAM [ARGS...]"


class DocstringFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows the commands' docstrings as laid out in the source, their indentation removed."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap  # only for help and --version (inspect.cleandoc would cost --version 5-10 ms)

        summary, _, details = text.partition("\n")
        return super()._fill_text(summary + "\n" + textwrap.dedent(details), width, indent)


def add_command(commands, name: str, function, usage: str | None = None) -> argparse.ArgumentParser:
    """A command that runs function(args), documented by its docstring (the first line in the list)."""
    parser = commands.add_parser(name, help=function.__doc__.partition("\n")[0], description=function.__doc__,
                                 usage=usage, formatter_class=DocstringFormatter, allow_abbrev=False)
    parser.set_defaults(run=function, parser=parser)
    return parser


def add_program(parser: argparse.ArgumentParser) -> None:
    # REMAINDER: everything from the first argument that is not one of our options (or from
    # --) is the program's, options such as -v or --target included.
    parser.add_argument("program", nargs=argparse.REMAINDER, metavar="PROGRAM",
                        help="The program to run and its arguments: all that follows is theirs.")


def file_argument(path: str) -> str:
    """A FILE argument: it need not exist, but must not be a directory."""
    import os

    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{path} is a directory; give a file")
    return path


def missing_command(args: argparse.Namespace) -> None:
    """`tether` or `tether config` without a command: its help, as a usage error."""
    args.parser.print_help(sys.stderr)
    sys.exit(EXIT_ERROR)
