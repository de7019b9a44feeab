"""Fuzzing the binary analysis: damaged ELF and Go files give a Report or an ElfError, nothing else.

Mutations aim at the structures the parsers trust: the ELF header and program headers, the
section header table, the Go function table header and its first entries, build info and
the module data. TETHER_FUZZ_EXAMPLES raises the count for long runs.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import gobuild
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.analysis.elf import ElfError, ElfFile
from tether.analysis.plan import analyse

EXAMPLES = int(os.environ.get("TETHER_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _regions(path: Path) -> list[tuple[int, int]]:
    """(start, length) of the byte ranges the parsers read structure from."""
    with ElfFile(path) as elf:
        regions = [(0, 64), (elf.e_phoff, elf.e_phnum * elf.e_phentsize),
                   (elf.e_shoff, elf.e_shnum * elf.e_shentsize)]
        for name, length in ((".gopclntab", 4096), (".go.buildinfo", 256), (".go.module", 0x238),
                             (".shstrtab", 512), (".note.go.buildid", 128), (".dynamic", 512)):
            sec = elf.section(name)
            if sec is not None:
                regions.append((sec.offset, min(length, sec.size)))
    return [(s, n) for s, n in regions if n > 0]


SAMPLES: dict[str, tuple[bytes, list[tuple[int, int]]]] = {}  # kept out of test arguments:
# hypothesis prints the arguments of a failing example, and these are megabytes.


@pytest.fixture(scope="module")
def samples(tmp_path_factory, go_versions):
    d = tmp_path_factory.mktemp("fuzz")
    src = d / "c.c"
    src.write_text("int main(void) { return 0; }\n")
    subprocess.run(["gcc", "-o", d / "c", src], check=True)
    for path in (d / "c", gobuild.build(go_versions[-1], "default"),
                 gobuild.build(go_versions[0], "pie")):
        SAMPLES[str(path)] = (path.read_bytes(), _regions(path))
    yield
    SAMPLES.clear()


def _analyse_bytes(blob: bytes, path: Path):
    path.write_bytes(blob)
    try:
        report = analyse(path)
    except ElfError as e:
        assert str(e) and "\n" not in str(e)
        return None
    report.to_json()  # the report must serialise whatever the input
    return report


@pytest.mark.usefixtures("samples")
@FUZZ
@given(data=st.data())
def test_mutated_binaries_never_crash_the_analysis(tmp_path, data):
    name = data.draw(st.sampled_from(sorted(SAMPLES)))
    blob, regions = SAMPLES[name]
    buf = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 8))):
        start, length = data.draw(st.sampled_from(regions))
        pos = start + data.draw(st.integers(0, length - 1))
        if pos < len(buf):
            buf[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del buf[data.draw(st.integers(0, len(buf))):]
    _analyse_bytes(bytes(buf), tmp_path / "mutant")


@FUZZ
@given(tail=st.binary(max_size=4096))
def test_random_bytes_behind_an_elf_magic(tmp_path, tail):
    _analyse_bytes(b"\x7fELF" + tail, tmp_path / "random")
