"""`tether trace -- PROGRAM`: every syscall that passes through tether's hooks."""
from __future__ import annotations

import argparse
import sys

from .parsing import EXIT_ERROR, PROGRAM_USAGE, add_command, add_program, file_argument


def add_to(commands) -> None:
    p = add_command(commands, "trace", run, usage=PROGRAM_USAGE)
    p.add_argument("-o", "--output", type=file_argument, metavar="FILE",
                   help="Write the trace to FILE instead of stderr.")
    p.add_argument("--json", dest="as_json", action="store_true",
                   help="One JSON object per syscall (see README).")
    p.add_argument("-e", dest="classes", metavar="CLASS,...",
                   help="Only these classes: net, file, process (default: all).")
    add_program(p)


def run(args: argparse.Namespace) -> None:
    """Run PROGRAM and print every syscall that passes through tether's hooks.

      tether trace -- ./server --port 8080
      tether trace -e net -o trace.txt -- go-program args
      tether trace --json -- ./client | jq .

    Lines look like strace's, tagged with pid and thread id:
      [4242 4245] connect(3, {AF_INET, 127.0.0.1:8080}, 16) = -1 ECONNREFUSED (Connection refused)
    Children are traced too. The program's own stdin, stdout and stderr are untouched; the
    trace goes to stderr or FILE. Exit status: the program's (128+N if a signal ended it);
    2 if tether itself could not start it (the reason is printed), 126/127 as a shell would.
    Go programs are traced at their syscall entry; programs using libc at libc's entry
    points for sockets, descriptor I/O, files, fork and exec (README lists them).
    """
    from ..protocol import layer_wire
    from ..session import launch
    from ..session.server import LayerServer
    from ..trace.printer import Printer, parse_classes

    try:
        wanted = parse_classes(args.classes)
    except ValueError as e:
        args.parser.error(str(e))
    try:
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stderr
    except OSError as e:
        print(f"tether trace: cannot write {args.output}: {e.strerror}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    warn = lambda msg: print(f"tether trace: {msg}", file=sys.stderr)  # noqa: E731
    printer = Printer(out, args.as_json, wanted, warn)
    server = LayerServer(layer_wire.MODE_TRACE, printer.event, printer.hello, warn, printer.flush)
    try:
        code = launch.run(args.program, server, started=lambda pid: setattr(printer, "main_pid", pid))
    except launch.LaunchError as e:
        print(f"tether trace: {e}", file=sys.stderr)
        code = e.code
    finally:
        printer.finish()
        server.close()
        if args.output:
            try:
                out.close()
            except OSError:
                pass  # what it could not write was reported (Printer.failed)
    sys.exit(code)
