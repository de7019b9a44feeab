"""The layer's folders depend on each other one way (layer/core/core.h says how).

Two views of the same rule: the includes each file writes, and the symbols each object file
takes from another folder (what it really calls). Ranks: core/ uses no other folder, link/ only
core/, the capabilities (every other folder but start/) core/, link/ and each other without a
cycle, and start/, which puts them together, is used by none. A file uses another folder only
through that folder's own header, FOLDER/FOLDER.h; any other header is private to its folder.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

LAYER = Path(__file__).resolve().parents[1] / "layer"
RANK = {"core": 0, "link": 1, "start": 3}
CAPABILITY = 2
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
SOURCES = ("*.c", "*.S")


def rank(folder: str) -> int:
    return RANK.get(folder, CAPABILITY)


def folders(layer: Path) -> list[str]:
    return sorted(p.name for p in layer.iterdir() if p.is_dir())


def include_edges(layer: Path) -> tuple[dict[str, set[str]], list[str]]:
    """Folder -> folders it includes, and every include that breaks the header rules."""
    edges: dict[str, set[str]] = {f: set() for f in folders(layer)}
    errors = []
    for path in sorted(layer.rglob("*")):
        if path.suffix not in (".c", ".S", ".h"):
            continue
        where = path.relative_to(layer)
        if len(where.parts) != 2:
            errors.append(f"{where}: every file of the layer lives in a folder")
            continue
        own = where.parts[0]
        for name in INCLUDE.findall(path.read_text()):
            parts = name.split("/")
            if len(parts) != 2 or not (layer / name).is_file():
                errors.append(f'{where}: #include "{name}" names no FOLDER/FILE.h of the layer')
                continue
            folder, header = parts
            if folder != own:
                if header != f"{folder}.h":
                    errors.append(f'{where}: #include "{name}" is private to {folder}/ '
                                  f'(use "{folder}/{folder}.h")')
                edges[own].add(folder)
    return edges, errors


def object_edges(layer: Path, build: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Folder -> folders whose symbols its objects take; and the symbols each folder takes
    from outside the layer (libc), from the objects compiled here as CMakeLists.txt does."""
    defined: dict[str, str] = {}
    undefined: dict[str, set[str]] = {f: set() for f in folders(layer)}
    for source in sorted(s for pattern in SOURCES for s in layer.rglob(pattern)):
        folder = source.parent.name
        obj = build / f"{folder}-{source.name}.o"
        subprocess.run(["gcc", "-c", "-O2", "-std=c11", "-fPIC", "-ffreestanding", "-fno-builtin",
                        "-fvisibility=hidden", "-I", str(layer), str(source), "-o", str(obj)],
                       check=True, capture_output=True, text=True)
        for line in subprocess.run(["nm", str(obj)], check=True, capture_output=True,
                                   text=True).stdout.splitlines():
            fields = line.split()
            if len(fields) == 2 and fields[0] == "U":
                undefined[folder].add(fields[1])
            elif len(fields) == 3 and fields[1] in "TDBRCV":
                defined[fields[2]] = folder
    edges = {f: {defined[s] for s in syms if s in defined} - {f} for f, syms in undefined.items()}
    outside = {f: {s for s in syms if s not in defined and s != "_GLOBAL_OFFSET_TABLE_"}
               for f, syms in undefined.items()}
    return edges, outside


def direction_errors(edges: dict[str, set[str]]) -> list[str]:
    """Edges against the ranks, and cycles, each with its chain."""
    errors = [f"{a}/ uses {b}/: {a}/ (rank {rank(a)}) may use only folders below it"
              for a, targets in sorted(edges.items()) for b in sorted(targets)
              if rank(b) > rank(a) or (rank(b) == rank(a) != CAPABILITY)]
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                chain = path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt]
                errors.append("cycle: " + " -> ".join(f"{f}/" for f in chain))
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return errors


def test_includes_follow_the_folders():
    edges, errors = include_edges(LAYER)
    assert not errors, "\n".join(errors)
    assert not direction_errors(edges), "\n".join(direction_errors(edges))


def test_calls_follow_the_folders(tmp_path):
    includes, _ = include_edges(LAYER)
    calls, outside = object_edges(LAYER, tmp_path)
    assert not direction_errors(calls), "\n".join(direction_errors(calls))
    hidden = [f"{a}/ calls into {b}/ without including {b}/{b}.h"
              for a, targets in sorted(calls.items()) for b in sorted(targets - includes[a])]
    assert not hidden, "\n".join(hidden)
    # core/ is freestanding: the dispatcher and everything under it run in programs with no libc.
    assert not outside["core"], f"core/ takes {sorted(outside['core'])} from outside the layer"


def test_every_folder_says_what_it_owns():
    for folder in folders(LAYER):
        header = LAYER / folder / f"{folder}.h"
        assert header.is_file(), f"{folder}/ has no interface header {folder}/{folder}.h"
        assert header.read_text().startswith(f"/* {folder}/ - "), \
            f"{header.relative_to(LAYER)} starts with a comment saying what {folder}/ owns"


def test_every_source_is_built():
    listed = set(re.findall(r"layer/(\S+\.[cS])\b", (LAYER.parent / "CMakeLists.txt").read_text()))
    present = {str(p.relative_to(LAYER)) for pattern in SOURCES for p in LAYER.rglob(pattern)}
    assert listed == present, f"not built: {sorted(present - listed)}; missing: {sorted(listed - present)}"


@pytest.mark.parametrize("bad, expected", [
    ({"core": {"net"}, "net": {"core"}}, ["core/ uses net/", "cycle: core/ -> net/ -> core/"]),
    ({"net": {"files"}, "files": {"trace"}, "trace": {"net"}}, ["cycle: files/ -> trace/ -> net/ -> files/"]),
    ({"link": {"net"}, "net": {"start"}}, ["link/ uses net/", "net/ uses start/"]),
])
def test_the_checks_catch_a_wrong_direction(bad, expected):
    errors = direction_errors(bad)
    for message in expected:
        assert any(e.startswith(message) for e in errors), (message, errors)


def test_the_checks_catch_a_private_header(tmp_path):
    for folder, text in {"core": '#include "core/core.h"\n', "net": '#include "core/core.h"\n',
                         "files": '#include "net/internal.h"\n#include "trace/trace.h"\n'}.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{folder}.h").write_text(text)
    (tmp_path / "net" / "internal.h").write_text("")
    _, errors = include_edges(tmp_path)
    assert errors == ['files/files.h: #include "net/internal.h" is private to net/ (use "net/net.h")',
                      'files/files.h: #include "trace/trace.h" names no FOLDER/FILE.h of the layer']


# Functions that run only at start-up, on the program's (or the injector's) own stack, or
# only for tests (tether_route_verdict): the rest may run on a static Go program's g0.
START_UP = {"tether_session_open", "tether_session_plan", "tether_session_files", "tether_main_exe",
            "tether_route_verdict"}
G0_FRAME_MAX = 1536  # bytes; g0 is 8 KiB in Go 1.19's static programs, 16 KiB from 1.21


def test_detours_fit_a_small_g0_stack(tmp_path):
    """Detours run on the thread's g0 stack, which a static Go program allocates itself (8 KiB,
    Go 1.19): no frame of the build injected into them may be large (gcc -fstack-usage)."""
    cmake = (LAYER.parent / "CMakeLists.txt").read_text()
    common = re.search(r"set\(TETHER_COMMON(.*?)\)", cmake, re.S).group(1).split()
    injected = re.search(r"add_library\(tether_static SHARED(.*?)\)", cmake, re.S).group(1).split()
    sources = [LAYER.parent / s for s in common + injected if s.endswith(".c")]
    assert len(sources) > 20, sources
    frames = {}
    for source in sources:
        obj = tmp_path / f"{source.parent.name}-{source.stem}.o"
        subprocess.run(["gcc", "-c", "-O2", "-std=c11", "-fPIC", "-ffreestanding", "-fno-builtin",
                        "-fno-stack-protector", "-fvisibility=hidden", "-DTETHER_NO_TLS", "-fstack-usage",
                        "-I", str(LAYER), str(source), "-o", str(obj)], check=True, capture_output=True)
        for line in obj.with_suffix(".su").read_text().splitlines():
            where, size, _ = line.split("\t")
            frames[where.rsplit(":", 1)[-1]] = int(size)
    large = {f: n for f, n in frames.items() if n > G0_FRAME_MAX and f not in START_UP}
    assert not large, f"frames over {G0_FRAME_MAX} bytes: {large}"
    assert "tether_go_call" in frames and START_UP <= set(frames)
