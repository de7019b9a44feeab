"""`tether demo`: see tether work in a throwaway namespace."""
from __future__ import annotations

import argparse
import sys

from .parsing import EXIT_ERROR, add_command


def add_to(commands) -> None:
    p = add_command(commands, "demo", run)
    p.add_argument("--client", choices=["auto", "go", "python"], default="auto",
                   help="The demo's client: Go (built here), Python, or Go when a toolchain is found "
                        "(default: %(default)s).")


def run(args: argparse.Namespace) -> None:
    """See tether work: a throwaway namespace, a client run under `tether exec` (root).

      sudo tether demo
      sudo tether demo --client python

    Makes a network namespace holding an HTTP service, a host name and an environment variable
    that exist only there, runs a small client with `tether exec --target netns:...` (Go when a
    toolchain is found: `go` on PATH, Debian's golang-1.19-go or TETHER_DEMO_GO; else Python),
    says what crossed over and how fast, and removes everything it made, also on failure or ^C.
    """
    from ..demo import DemoError, run as run_demo

    try:
        # flush: each line as it happens, also into a pipe, before the programs the demo runs write
        code = run_demo(lambda line: print(f"tether demo: {line}", flush=True), args.client)
    except DemoError as e:
        print(f"tether demo: {e}", file=sys.stderr)
        code = EXIT_ERROR
    sys.exit(code)
