"""Every bench/ script starts: its imports resolve and its --help prints (a script that breaks
is found here, not in the session that next needs its figures)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_bench_script_starts(script):
    r = subprocess.run([sys.executable, str(BENCH / script), "--help"], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL)
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert r.stdout.startswith("usage:")
