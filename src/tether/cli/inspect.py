"""`tether inspect BINARY`: what tether sees in an ELF file, and whether it can hook it."""
from __future__ import annotations

import argparse
import sys

from .parsing import EXIT_ERROR, add_command

EXIT_SUPPORTED, EXIT_UNSUPPORTED = 0, 1


def add_to(commands) -> None:
    p = add_command(commands, "inspect", run)
    p.add_argument("binary", metavar="BINARY", help="The ELF file to analyse.")
    p.add_argument("--json", dest="as_json", action="store_true",
                   help="Print the report as JSON (docs/inspect-json.md).")
    p.add_argument("--no-cache", action="store_true",
                   help="Analyse again instead of using the cached report.")


def run(args: argparse.Namespace) -> None:
    """Report BINARY's ELF facts, Go version and hook plan, and whether tether can hook it.

      tether inspect ./server
      tether inspect --json --no-cache "$(command -v gofmt)" | jq .verdict

    The hook plan lists the Go functions the layer patches (the syscall entry every Go
    syscall reaches, for the binary's Go version) and the runtime functions its trampolines
    call, with addresses read from the binary's own function table: stripped binaries get
    the same plan as unstripped ones.

    Exit status: 0 supported, 1 readable but not supported (the reason and fix are printed),
    2 not an ELF file, unreadable, truncated or corrupt.
    """
    from ..analysis.cache import inspect_binary
    from ..analysis.elf import ElfError

    try:
        report = inspect_binary(args.binary, use_cache=not args.no_cache)
    except ElfError as e:
        print(f"tether inspect: {args.binary}: {e}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    if args.as_json:
        import json

        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    sys.exit(EXIT_SUPPORTED if report["verdict"]["supported"] else EXIT_UNSUPPORTED)


def print_report(r: dict) -> None:
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
