"""The Go test fixtures: every (Go version, variant) builds, has the ELF shape it promises, runs
and prints the expected text; c-shared libraries load from C and from Python's ctypes."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import go_toolchains
import gobuild

VERSIONS = go_toolchains.selected_versions()
EXECUTABLES = [v for v in gobuild.VARIANTS if v != "cshared"]
DYNAMIC = ("default", "stripped", "pie")

# subcommand -> exact stdout; every executable variant of every version must print exactly this.
EXPECTED = {
    "hello": "hello\n",
    "tcp": "tcp: echoed 1048576 bytes, sha256 "
           "1d7368ef6f59e0c704a978b815288f1e464037959645bbfd79348d330269480d\n",
    "udp": 'udp: sent "ping", got "pong"\n',
    "files": (
        'files: read b.txt "bravo bravo\\n"\n'
        "files: stat a.txt size=6 mode=-rw-r-----\n"
        "files: readdir a.txt(dir=false) b.txt(dir=false) sub(dir=true)\n"
        'files: read sub/a.txt "alpha\\nmore\\n"\n'
        "files: readdir sub(dir=true)\n"
    ),
    "exec": 'exec: child said "hello\\n"\nexec: child exit code 253\n',
    "goroutines": "goroutines: 1000 finished, sum of squares 332833500\n",
}


def run(*cmd, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def readelf(*args) -> str:
    return run("readelf", "-W", *args).stdout


@pytest.mark.parametrize("variant", gobuild.VARIANTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_artifact_shape(version, variant):
    path = gobuild.build(version, variant)
    assert path.is_file()
    info = gobuild.elf_info(path)
    # readelf must agree with gobuild's own ELF reader, which build() uses to vet artifacts.
    headers = readelf("-h", "-l", "-S", path)
    assert ("Requesting program interpreter" in headers) == (info.interp is not None)
    assert (" .symtab " in headers) == (".symtab" in info.sections)
    assert re.search(r"Type:\s+" + ("DYN" if info.type == gobuild.ET_DYN else "EXEC"), headers)

    if variant in DYNAMIC:
        assert info.interp and "ld-linux" in info.interp
        assert "Shared library: [libc.so.6]" in readelf("-d", path)
    else:
        assert info.interp is None
    if variant == "static":
        assert "(NEEDED)" not in readelf("-d", path)
    assert (".symtab" in info.sections) == (variant != "stripped")
    assert info.type == (gobuild.ET_DYN if variant in ("pie", "cshared") else gobuild.ET_EXEC)
    if variant == "cshared":
        assert path.name == "libcshared.so"
        assert "extern int TetherProbe(int n);" in path.with_suffix(".h").read_text()
        assert re.search(r"\bFUNC\s+GLOBAL\s+DEFAULT\s+\d+\s+TetherProbe$",
                         readelf("--dyn-syms", path), re.M)


@pytest.mark.parametrize("variant", EXECUTABLES)
@pytest.mark.parametrize("version", VERSIONS)
def test_exit_status(version, variant):
    proc = run(gobuild.build(version, variant), "exit", "253")
    assert (proc.returncode, proc.stdout, proc.stderr) == (253, "", "")


@pytest.mark.parametrize("subcommand", list(EXPECTED))
@pytest.mark.parametrize("variant", EXECUTABLES)
@pytest.mark.parametrize("version", VERSIONS)
def test_probe_output(version, variant, subcommand, tmp_path):
    args = [str(tmp_path)] if subcommand == "files" else []
    proc = run(gobuild.build(version, variant), subcommand, *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout == EXPECTED[subcommand]
    if subcommand == "files":
        assert list(tmp_path.iterdir()) == []  # it cleaned up after itself


@pytest.mark.parametrize("version", VERSIONS)
def test_cshared_from_c_host(version, cshared_host):
    lib = gobuild.build(version, "cshared")
    for n, expected in (("21", "42\n"), ("0", "0\n"), ("100000", "200000\n"), ("-5", "-1\n")):
        proc = run(cshared_host, lib, n)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, expected, "")


@pytest.mark.parametrize("version", VERSIONS)
def test_cshared_from_ctypes(version):
    lib = gobuild.build(version, "cshared")
    code = ("import ctypes, sys\n"
            "probe = ctypes.CDLL(sys.argv[1]).TetherProbe\n"
            "probe.argtypes, probe.restype = [ctypes.c_int], ctypes.c_int\n"
            "print(probe(21), probe(4096))\n")
    proc = run(sys.executable, "-c", code, lib)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "42 8192\n", "")


def test_second_build_is_cached():
    version = VERSIONS[-1]
    first = gobuild.build(version, "default")
    mtime = first.stat().st_mtime_ns
    start = time.monotonic()
    for variant in gobuild.VARIANTS:
        gobuild.build(version, variant)
    assert time.monotonic() - start < 1.0
    assert gobuild.build(version, "default") == first
    assert first.stat().st_mtime_ns == mtime
    assert gobuild.build_c_host() == gobuild.build_c_host()


def test_cache_key_depends_on_version_and_variant():
    paths = {gobuild.build(v, var).parent for v in VERSIONS for var in gobuild.VARIANTS}
    assert len(paths) == len(VERSIONS) * len(gobuild.VARIANTS)


def test_concurrent_builders_share_one_result(tmp_path):
    """Many builders of one key race; each gets the complete result, no temp dir is left."""
    final = tmp_path / "artifact-key"
    calls = []

    def make(tmp: Path) -> None:
        calls.append(tmp)
        time.sleep(0.05)
        (tmp / "out").write_text(f"built in {tmp.name}\n")

    errors = []

    def worker():
        try:
            gobuild._build_once(final, make)
            assert (final / "out").read_text().startswith("built in ")
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(calls) >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact-key"]


def test_build_error_carries_go_stderr(tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "go.mod").write_text("module tether.test/broken\n\ngo 1.19\n")
    (broken / "main.go").write_text("package main\n\nfunc main() { undefinedThing() }\n")
    monkeypatch.setattr(gobuild, "GO_SOURCES", tmp_path)
    with pytest.raises(gobuild.BuildError, match=r"(?s)exit status 1.*undefined: undefinedThing"):
        gobuild.build(VERSIONS[-1], "static", "broken")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown variant"):
        gobuild.build(VERSIONS[0], "musl")
    with pytest.raises(ValueError, match="unknown Go version"):
        gobuild.build("1.20", "default")
    with pytest.raises(ValueError, match="no Go program"):
        gobuild.build(VERSIONS[0], "default", "no-such-program")


def test_go_versions_fixture(go_versions):
    assert go_versions == VERSIONS
    assert all(go_toolchains.installed(v) for v in go_versions)
