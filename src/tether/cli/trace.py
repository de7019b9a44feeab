"""`tether trace -- PROGRAM`: every syscall that passes through tether's hooks."""
from __future__ import annotations

import argparse
import sys

from .parsing import EXIT_ERROR, PROGRAM_USAGE, add_command, add_program, file_argument


def add_to(commands) -> None:
    p = add_command(commands, "trace", run, usage=f"{PROGRAM_USAGE}\n       %(prog)s [OPTIONS] -p PID [--duration S]")
    p.add_argument("-o", "--output", type=file_argument, metavar="FILE",
                   help="Write the trace to FILE instead of stderr.")
    p.add_argument("--json", dest="as_json", action="store_true",
                   help="One JSON object per syscall (see README).")
    p.add_argument("-e", dest="classes", metavar="CLASS,...",
                   help="Only these classes: net, file, process (default: all).")
    p.add_argument("-p", "--pid", type=int, metavar="PID",
                   help="Attach to the running Go program PID instead of starting one; ^C (or --duration) "
                        "detaches and leaves it running as before.")
    p.add_argument("--duration", type=float, metavar="S", help="With -p: detach after S seconds.")
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

      tether trace -p 4242 --duration 10 -o trace.txt

    -p attaches to a running Go program (static or not): tether stops it for a moment,
    loads the layer with ptrace and lets it go on; ^C or --duration switches the hooks off
    again (they stay in place, passing every call straight to the kernel) and the program
    runs on. Needs root (or CAP_SYS_PTRACE). Exit status 0 when it detached, 2 if it could
    not attach (the reason is printed).
    """
    from ..protocol import layer_wire
    from ..session import launch
    from ..session.server import LayerServer
    from ..trace.printer import Printer, parse_classes

    try:
        wanted = parse_classes(args.classes)
    except ValueError as e:
        args.parser.error(str(e))
    if args.pid is not None and args.program:
        args.parser.error("give -p PID or a PROGRAM, not both")
    if args.pid is None and args.duration is not None:
        args.parser.error("--duration goes with -p PID")
    try:
        out = open(args.output, "w", encoding="utf-8") if args.output else sys.stderr
    except OSError as e:
        print(f"tether trace: cannot write {args.output}: {e.strerror}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    warn = lambda msg: print(f"tether trace: {msg}", file=sys.stderr)  # noqa: E731
    printer = Printer(out, args.as_json, wanted, warn)
    server = LayerServer(layer_wire.MODE_TRACE, printer.event, printer.hello, warn, printer.flush)
    try:
        started = lambda pid: setattr(printer, "main_pid", pid)  # noqa: E731
        if args.pid is not None:
            code = launch.attach(args.pid, server, args.duration, started)
        else:
            code = launch.run(args.program, server, started=started)
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
