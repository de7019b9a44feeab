"""The `tether` command line."""
from __future__ import annotations

import json
import sys

import click

from . import __version__
from .analysis.cache import inspect_binary
from .analysis.elf import ElfError

EXIT_SUPPORTED, EXIT_UNSUPPORTED, EXIT_ERROR = 0, 1, 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tether")
def cli() -> None:
    """Run a Linux program with its network, DNS, files and environment taken from a target.

    \b
    Working today:
      tether inspect BINARY     what tether sees in a binary and whether it can hook it
      tether trace -- PROGRAM   every syscall through tether's hooks (Go programs)
    Not built yet: `tether exec`, `tether agent` (see README.md).
    """


@cli.command()
@click.argument("binary")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (docs/inspect-json.md).")
@click.option("--no-cache", is_flag=True, help="Analyse again instead of using the report cached by build id.")
def inspect(binary: str, as_json: bool, no_cache: bool) -> None:
    """Report BINARY's ELF facts, Go version and hook plan, and whether tether can hook it.

    \b
    The hook plan lists the Go functions the layer patches (the syscall entry every Go
    syscall reaches, for the binary's Go version) and the runtime functions its trampolines
    call, with addresses read from the binary's own function table: stripped binaries get
    the same plan as unstripped ones.

    \b
    Exit status: 0 supported, 1 readable but not supported (the reason and fix are printed),
    2 not an ELF file, unreadable, truncated or corrupt.
    """
    try:
        report = inspect_binary(binary, use_cache=not no_cache)
    except ElfError as e:
        click.echo(f"tether inspect: {binary}: {e}", err=True)
        sys.exit(EXIT_ERROR)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_report(report)
    sys.exit(EXIT_SUPPORTED if report["verdict"]["supported"] else EXIT_UNSUPPORTED)


def _print_report(r: dict) -> None:
    from rich.console import Console  # imported here: --json and errors need no rich

    console = Console(highlight=False)
    kind = "shared object" if r["shared_object"] else ("PIE executable" if r["pie"] else "executable")
    facts = [
        ("file", r["path"]),
        ("ELF", f"{r['elf_class']}-bit {r['machine']} {r['elf_type']} ({kind})"),
        ("linkage", r["linkage"] + (f", interpreter {r['interpreter']}" if r["interpreter"] else "")),
        ("symbols", "stripped (no .symtab)" if r["stripped"] else "symbol table present"),
    ]
    go = r["go"]
    if go:
        facts.append(("Go", go["version"]))
        if go["path"]:
            facts.append(("main package", go["path"]))
        if go["main_module"] and go["main_module"] != go["path"]:
            facts.append(("main module", go["main_module"]))
    else:
        facts.append(("Go", "no (no Go build info)"))
    width = max(len(k) for k, _ in facts)
    for k, v in facts:
        console.print(f"[bold]{k:<{width}}[/]  {v}", soft_wrap=True)

    functions = [("patch", f) for f in r["hooks"]] + [("call", f) for f in r["runtime"]]
    if functions:
        rows = [("use", "role", "function", "ABI", "address", "offset", "size")]
        rows += [(use, f["role"], f["name"], f["abi"], f"{f['address']:#x}", f"{f['offset']:#x}",
                  str(f["size"])) for use, f in functions]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        console.print("\n[bold]hook plan[/]")
        for n, row in enumerate(rows):
            cells = [c.rjust(w) if i >= 4 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
            line = "  ".join(cells).rstrip()
            console.print(f"[bold]{line}[/]" if n == 0 else line, soft_wrap=True)
    v = r["verdict"]
    console.print()
    mark = "[green]supported[/]" if v["supported"] else "[red]unsupported[/]"
    console.print(f"{mark}: {v['reason']}", soft_wrap=True)
    if v["fix"]:
        console.print(f"fix: {v['fix']}", soft_wrap=True)
    for note in v["notes"]:
        console.print(f"note: {note}", soft_wrap=True)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the trace to FILE instead of stderr.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per syscall (see README).")
@click.option("-e", "classes", metavar="CLASS,...", help="Only these classes: net, file, process (default: all).")
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
def trace(output: str | None, as_json: bool, classes: str | None, program: tuple[str, ...]) -> None:
    """Run PROGRAM and print every syscall that passes through tether's hooks.

    \b
      tether trace -- ./server --port 8080
      tether trace -e net -o trace.txt -- go-program args
      tether trace --json -- ./client | jq .

    \b
    Lines look like strace's, tagged with pid and thread id:
      [4242 4245] connect(3, {AF_INET, 127.0.0.1:8080}, 16) = -1 ECONNREFUSED (Connection refused)
    Children are traced too. The program's own stdin, stdout and stderr are untouched; the
    trace goes to stderr or FILE. Exit status: the program's (128+N if a signal ended it);
    2 if tether itself could not start it (the reason is printed), 126/127 as a shell would.
    Go programs are hooked at their syscall entry; programs using libc are not traced yet.
    """
    from .protocol import wire
    from .session.launch import LaunchError, run
    from .session.server import LayerServer
    from .trace.printer import Printer, parse_classes

    try:
        wanted = parse_classes(classes)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    out = open(output, "w", encoding="utf-8") if output else sys.stderr
    printer = Printer(out, as_json, wanted)
    warn = lambda msg: click.echo(f"tether trace: {msg}", err=True)  # noqa: E731
    server = LayerServer(wire.MODE_TRACE, printer.event, printer.hello, warn, printer.flush)
    try:
        code = run(list(program), server, {}, started=lambda pid: setattr(printer, "main_pid", pid))
    except LaunchError as e:
        click.echo(f"tether trace: {e}", err=True)
        code = e.code
    finally:
        printer.finish()
        server.close()
        if output:
            out.close()
    sys.exit(code)


@cli.command()
@click.option("--fd", type=int, required=True,
              help="Serve the session on this inherited unix SOCK_SEQPACKET socket.")
def agent(fd: int) -> None:
    """Run inside a target and perform what the session asks there (connect, ...).

    \b
    Started by tether itself: `tether exec --target netns:NAME` runs
    `ip netns exec NAME tether agent --fd N` with one end of a socket pair.
    Network-reachable agents (--listen, with a token) come later.
    """
    import asyncio
    import logging

    from .agent.server import serve_fd

    logging.basicConfig(level=logging.WARNING, format="tether agent: %(message)s")
    try:
        asyncio.run(serve_fd(fd))
    except (OSError, ValueError) as e:
        click.echo(f"tether agent: {e}", err=True)
        sys.exit(EXIT_ERROR)


@cli.command()
def demo() -> None:
    """Show what tether does, on this machine (the full demo needs `tether exec`, not built yet)."""
    click.echo(
        "tether demo: the end-to-end demo (a throwaway network namespace reached through\n"
        "`tether exec`) is not built yet: the Go hooking core and the netns target are still\n"
        "being built. What works today is the binary analysis behind the hooks; here it is\n"
        f"on this Python interpreter ({sys.executable}):\n"
    )
    report = inspect_binary(sys.executable)
    _print_report(report)


def main() -> None:
    cli()
