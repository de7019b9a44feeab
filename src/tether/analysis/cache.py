"""Reports cached, so analysing the same binary again costs one small read.

Two entries per report, both JSON:
- by build id: the binary's Go build id (or GNU build id) plus its size and the analysis
  version; a copy or a rebuild to the same bytes finds it. Finding the id means reading the
  ELF file's notes.
- by file: the file's device, inode, size and modification and change times; no read of the
  binary at all, and none of the ELF reader's or hashlib's import time (tether exec asks for
  its program's report on every start). Any write to the file moves its times; and the layer
  checks the plan's build id against the one in memory before it patches anything.
A binary without a build id has only the second. A cache that cannot be written is skipped:
it only ever saves time.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

ANALYSIS_VERSION = "4"  # bump when the report's content or meaning changes


def cache_dir() -> Path:
    root = os.environ.get("TETHER_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tether"
    return Path(root) / "plans"


def _by_build_id(path: Path) -> Path | None:
    import hashlib

    from .elf import ElfFile

    with ElfFile(path) as elf:
        ids = elf.build_ids
        size = elf.size
    build_id = ids.get("go") or ids.get("gnu")
    if not build_id:
        return None
    raw = f"{ANALYSIS_VERSION}\0{build_id}\0{size}".encode()
    return cache_dir() / f"{hashlib.sha256(raw).hexdigest()[:32]}.json"


def _by_file(path: Path) -> Path | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # the ELF reader says what is wrong with the path
    name = f"{ANALYSIS_VERSION}-{st.st_dev:x}-{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ctime_ns:x}"
    return cache_dir() / "files" / f"{name}.json"


def _read(entry: Path | None) -> dict | None:
    if entry is None:
        return None
    try:
        return json.loads(entry.read_text())
    except (OSError, ValueError):
        return None  # missing or damaged: analysed again and replaced


def _write(entry: Path | None, report: dict) -> None:
    if entry is None:
        return
    import tempfile

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=entry.parent, delete=False) as tmp:
            json.dump(report, tmp)
        os.replace(tmp.name, entry)
    except OSError:
        pass


def inspect_binary(path: str | Path, use_cache: bool = True) -> dict:
    """The JSON-able report for `path` (see docs/inspect-json.md)."""
    path = Path(path)
    by_file = _by_file(path) if use_cache else None
    report = _read(by_file)
    if report is None:
        by_build_id = _by_build_id(path) if use_cache else None
        report = _read(by_build_id)
        if report is None:
            from .plan import analyse  # a cache hit needs none of the analysis

            report = analyse(path).to_json()
            _write(by_build_id, report)
        _write(by_file, report)
    report["path"] = str(path)
    return report
