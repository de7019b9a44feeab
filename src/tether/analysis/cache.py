"""Reports cached by build id, so analysing the same binary again costs one small read.

Key: the binary's Go build id (or GNU build id) plus its size and the analysis version. A
binary without a build id is analysed every time. A cache that cannot be written is skipped:
it only ever saves time.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from .elf import ElfFile

ANALYSIS_VERSION = "3"  # bump when the report's content or meaning changes


def cache_dir() -> Path:
    root = os.environ.get("TETHER_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tether"
    return Path(root) / "plans"


def _key(path: Path) -> str | None:
    with ElfFile(path) as elf:
        ids = elf.build_ids
        size = elf.size
    build_id = ids.get("go") or ids.get("gnu")
    if not build_id:
        return None
    raw = f"{ANALYSIS_VERSION}\0{build_id}\0{size}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def inspect_binary(path: str | Path, use_cache: bool = True) -> dict:
    """The JSON-able report for `path` (see docs/inspect-json.md)."""
    path = Path(path)
    key = _key(path) if use_cache else None
    entry = cache_dir() / f"{key}.json" if key else None
    if entry is not None:
        try:
            report = json.loads(entry.read_text())
            report["path"] = str(path)
            return report
        except (OSError, ValueError):
            pass
    from .plan import analyse  # a cache hit needs none of the analysis (tether exec's start-up)

    report = analyse(path).to_json()
    if entry is not None:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=entry.parent, delete=False) as tmp:
                json.dump(report, tmp)
            os.replace(tmp.name, entry)
        except OSError:
            pass
    return report
