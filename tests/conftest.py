"""Shared pytest setup: tests/ and tools/ on sys.path, Go toolchains and build fixtures."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
for path in (TESTS, TESTS.parent / "tools"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import go_toolchains  # noqa: E402
import gobuild  # noqa: E402


@pytest.fixture(scope="session")
def go_versions() -> list[str]:
    """The Go versions under test (TETHER_GO_VERSIONS, else all), each installed if missing."""
    versions = go_toolchains.selected_versions()
    for version in versions:
        go_toolchains.ensure(version)
    return versions


@pytest.fixture(scope="session")
def go_build():
    """gobuild.build: go_build(version, variant[, program]) -> path of the cached artifact."""
    return gobuild.build


@pytest.fixture(scope="session")
def cshared_host() -> Path:
    """The compiled tests/native/cshared_host.c."""
    return gobuild.build_c_host()
