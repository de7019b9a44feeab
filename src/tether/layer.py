"""Locate libtether.so, the native syscall layer built at install time."""

from __future__ import annotations

from pathlib import Path

import tether

LIBRARY_NAME = "libtether.so"


class LayerNotFoundError(FileNotFoundError):
    """libtether.so is not where the install should have put it."""


def layer_path() -> Path:
    """Return the absolute path of the built libtether.so.

    CMake installs the library into the tether package directory.  A normal
    install has one such directory (site-packages/tether).  A scikit-build-core
    editable install (redirect mode) lists two in ``tether.__path__``: the
    environment's site-packages/tether, which holds the library, and the
    source tree's src/tether, which holds the Python files.  Searching
    ``__path__`` covers both without depending on how the package got there.
    """
    searched = [Path(entry) for entry in tether.__path__]
    for directory in searched:
        candidate = directory / LIBRARY_NAME
        if candidate.is_file():
            return candidate.absolute()
    places = ", ".join(str(d) for d in searched) or "(tether has no __path__)"
    raise LayerNotFoundError(
        f"{LIBRARY_NAME} not found in {places}. It is compiled when the "
        "package is installed: run `pip install -e .` in the tether source "
        "tree to rebuild it (needs gcc; CMake and Ninja come from PyPI if "
        "missing)."
    )
