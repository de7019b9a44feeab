"""Locate libtether.so, the native syscall layer built at install time."""

from __future__ import annotations

from pathlib import Path

import tether

LIBRARY_NAME = "libtether.so"
STATIC_LIBRARY_NAME = "libtether-static.so"  # injected into static programs (session/inject.py)


class LayerNotFoundError(FileNotFoundError):
    """libtether.so is not where the install should have put it."""


def layer_path(name: str = LIBRARY_NAME) -> Path:
    """Return the absolute path of the built libtether.so (or of name, libtether-static.so).

    CMake installs the library into the tether package directory.  A normal
    install has one such directory (site-packages/tether).  A scikit-build-core
    editable install (redirect mode) lists two in ``tether.__path__``: the
    environment's site-packages/tether, which holds the library, and the
    source tree's src/tether, which holds the Python files.  Searching
    ``__path__`` covers both without depending on how the package got there.
    """
    searched = [Path(entry) for entry in tether.__path__]
    for directory in searched:
        candidate = directory / name
        if candidate.is_file():
            return candidate.absolute()
    places = ", ".join(str(d) for d in searched) or "(tether has no __path__)"
    raise LayerNotFoundError(
        f"{name} not found in {places}. It is compiled when the "
        "package is installed: run `pip install -e .` in the tether source "
        "tree to rebuild it (needs gcc; CMake and Ninja come from PyPI if "
        "missing)."
    )


class CannotHookError(Exception):
    """The program cannot be hooked; the message names the reason and the fix."""


def go_plan(report: dict) -> str | None:
    """The TETHER_GO_PLAN value for an inspect report (layer/go/hook.c documents and parses it).

    None for programs that are not Go; CannotHookError for Go programs that tether refuses.
    """
    if report["go"] is None:
        return None
    verdict = report["verdict"]
    if not verdict["supported"]:
        fix = f" Fix: {verdict['fix']}" if verdict["fix"] else ""
        raise CannotHookError(f"{report['path']}: {verdict['reason']}.{fix}")
    build_id = report["build_id"].get("go")
    if not build_id or ";" in build_id:
        raise CannotHookError(f"{report['path']}: Go build id missing or malformed; rebuild without -buildid=")
    names = {"syscall-funnel": "funnel", "vfork": "vfork", "asmcgocall": "asmcgocall",
             "entersyscall": "enter", "exitsyscall": "exit"}
    offsets = report["go"]["g_offsets"]
    parts = ["1", build_id, f"g={offsets['g_m']:x}:{offsets['m_curg']:x}:{offsets['g_syscallsp']:x}"]
    for f in report["hooks"] + report["runtime"]:
        name = names.get(f["role"])
        if name is None:
            continue
        part = f"{name}={f['address']:x}:{f['code']}"
        if f["role"] == "vfork":
            part += f":{f['args']:x}"
        parts.append(part)
    return ";".join(parts)


def preload_env(env: dict[str, str]) -> dict[str, str]:
    """`env` with the layer first in LD_PRELOAD."""
    path = str(layer_path())
    if any(c in path for c in " :"):
        raise CannotHookError(f"{path}: LD_PRELOAD cannot name a path with spaces or colons; "
                              "install tether somewhere without them")
    out = dict(env)
    out["LD_PRELOAD"] = f"{path}:{env['LD_PRELOAD']}" if env.get("LD_PRELOAD") else path
    return out


def hooked_env(report: dict, env: dict[str, str]) -> dict[str, str]:
    """`env` plus what the layer needs to hook the program described by `report` with LD_PRELOAD."""
    plan = go_plan(report)
    if report["verdict"]["hook"] == "inject":
        raise CannotHookError(f"{report['path']}: statically linked, LD_PRELOAD cannot load into it; the "
                              "layer is injected at exec by tether exec and tether trace (session/inject.py)")
    out = preload_env(env)
    if plan is not None:
        out["TETHER_GO_PLAN"] = plan
    else:
        out.pop("TETHER_GO_PLAN", None)
    return out
