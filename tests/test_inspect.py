"""`tether inspect` against real binaries: every Go version x variant, C programs, bad files."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import go_toolchains
import gobuild
import pytest

from tether.analysis.plan import funnel_name

TETHER = [sys.executable, "-m", "tether"]


def run_inspect(path, *flags, cache_dir=None):
    env = dict(os.environ)
    if cache_dir is not None:
        env["TETHER_CACHE"] = str(cache_dir)
    return subprocess.run([*TETHER, "inspect", *flags, str(path)], capture_output=True, text=True,
                          env=env, timeout=60)


def inspect_json(path, tmp_path):
    proc = run_inspect(path, "--json", "--no-cache")
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout), proc.returncode


def go_nm(version: str, binary: Path) -> dict[str, int]:
    """name -> address from `go tool nm` (text symbols only)."""
    out = subprocess.run(["go", "tool", "nm", str(binary)], env=go_toolchains.go_env(version),
                         capture_output=True, text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-2] in ("T", "t"):
            table[parts[-1]] = int(parts[0], 16)
    return table


def toolchain_version(version: str) -> str:
    return (go_toolchains.goroot(version) / "VERSION").read_text().split()[0]


VARIANT_KIND = {"default": "go-executable", "stripped": "go-executable", "pie": "go-executable",
                "static": "go-static", "cshared": "go-c-shared"}


@pytest.mark.parametrize("variant", gobuild.VARIANTS)
def test_go_plan_matches_go_tool_nm(go_versions, variant, tmp_path):
    for version in go_versions:
        binary = gobuild.build(version, variant)
        report, rc = inspect_json(binary, tmp_path)
        where = f"go {version} {variant}"

        assert report["go"]["version"] == toolchain_version(version), where
        program = "cshared" if variant == "cshared" else "probe"
        assert report["go"]["path"] == f"tether.test/{program}", where
        assert report["stripped"] == (variant == "stripped"), where
        assert report["pie"] == (variant == "pie"), where
        assert report["shared_object"] == (variant == "cshared"), where
        assert report["linkage"] == ("static" if variant == "static" else "dynamic"), where
        assert report["verdict"]["kind"] == VARIANT_KIND[variant], where
        assert report["verdict"]["supported"], (where, report["verdict"])
        assert report["verdict"]["hook"] == ("inject" if variant == "static" else "preload"), where
        assert rc == 0, where

        roles = {f["role"]: f for f in report["hooks"] + report["runtime"]}
        assert roles["syscall-funnel"]["name"] == funnel_name(int(version.split(".")[1])), where
        assert {"asmcgocall", "entersyscall", "exitsyscall"} <= roles.keys(), where
        if variant != "cshared":  # the probe starts children: os/exec links rawVforkSyscall
            assert "vfork" in roles, where

        # Same addresses as the symbol table of the unstripped twin.
        twin = gobuild.build(version, "default") if variant == "stripped" else binary
        nm = go_nm(version, twin)
        for f in roles.values():
            nm_name = f["name"] + ".abi0" if f["abi"] == "ABI0" and f["name"] + ".abi0" in nm else f["name"]
            assert nm_name in nm, (where, nm_name)
            assert f["address"] == nm[nm_name], (where, f["name"], hex(f["address"]), hex(nm[nm_name]))
            assert f["offset"] == f["address"] - report["link_base"], where
            assert f["size"] >= 14, (where, f)
        # The ABI0 body of asmcgocall, never its ABIInternal wrapper (same name in pclntab).
        assert f"{nm['runtime.asmcgocall.abi0']:#x}" == f"{roles['asmcgocall']['address']:#x}", where


def test_human_output_is_a_short_table(go_versions):
    version = go_versions[-1]
    proc = run_inspect(gobuild.build(version, "stripped"), "--no-cache")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"Go            {toolchain_version(version)}" in out
    assert "stripped (no .symtab)" in out
    assert funnel_name(int(version.split(".")[1])) in out
    assert "supported: dynamically linked Go program" in out
    assert len(out.splitlines()) < 25
    assert all(len(line) <= 120 for line in out.splitlines())


def test_static_go_binary_says_how_it_is_hooked(go_versions):
    proc = run_inspect(gobuild.build(go_versions[0], "static"), "--no-cache")
    assert proc.returncode == 0
    assert "supported: statically linked Go program: the layer is injected at exec" in proc.stdout


@pytest.fixture(scope="module")
def c_programs(tmp_path_factory):
    d = tmp_path_factory.mktemp("c")
    src = d / "hello.c"
    src.write_text('#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n')
    subprocess.run(["gcc", "-O1", "-o", d / "dyn", src], check=True)
    subprocess.run(["gcc", "-O1", "-static", "-o", d / "static", src], check=True)
    subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", d / "libhello.so", src], check=True)
    return d


@pytest.mark.parametrize("name,kind,supported", [
    ("dyn", "libc-program", True),
    ("static", "static", False),
    ("libhello.so", "libc-shared-library", True),
])
def test_c_binaries_are_reported_as_not_go(c_programs, name, kind, supported, tmp_path):
    report, rc = inspect_json(c_programs / name, tmp_path)
    assert report["go"] is None and report["hooks"] == []
    assert report["verdict"]["kind"] == kind
    assert report["verdict"]["supported"] is supported
    assert rc == (0 if supported else 1)


def test_python_interpreter_and_libc(tmp_path):
    python = Path(os.path.realpath(sys.executable))
    report, rc = inspect_json(python, tmp_path)
    assert report["go"] is None and report["verdict"]["kind"] == "libc-program" and rc == 0
    libc = Path("/lib/x86_64-linux-gnu/libc.so.6").resolve()
    report, rc = inspect_json(libc, tmp_path)
    assert report["go"] is None and report["shared_object"] and rc == 0


def _bad_files(tmp_path: Path, go_binary: Path) -> dict[str, Path]:
    data = go_binary.read_bytes()
    files = {
        "empty": b"",
        "text": b"hello, I am not a binary\n",
        "elf magic only": b"\x7fELF",
        "header only": data[:64],
        "first 4 KiB": data[:4096],
        "first half": data[: len(data) // 2],
        "garbage section table": data[:40] + b"\xff" * 24 + data[64:],
    }
    out = {}
    for name, blob in files.items():
        p = tmp_path / name.replace(" ", "_")
        p.write_bytes(blob)
        out[name] = p
    out["directory"] = tmp_path
    out["missing"] = tmp_path / "does-not-exist"
    return out


def test_bad_files_give_one_line_and_exit_2(go_versions, tmp_path):
    for name, path in _bad_files(tmp_path, gobuild.build(go_versions[-1], "default")).items():
        proc = run_inspect(path)
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert proc.stdout == "", name
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tether inspect: "), (name, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_reports_are_cached_by_build_id(go_versions, tmp_path):
    binary = gobuild.build(go_versions[-1], "default")
    first = run_inspect(binary, "--json", cache_dir=tmp_path)
    cached = list((tmp_path / "plans").glob("*.json"))
    assert first.returncode == 0 and len(cached) == 1
    copy = tmp_path / "copy-of-binary"
    shutil.copyfile(binary, copy)  # same build id, other path: served from the cache
    second = json.loads(run_inspect(copy, "--json", cache_dir=tmp_path).stdout)
    assert second["path"] == str(copy)
    assert {**second, "path": ""} == {**json.loads(first.stdout), "path": ""}
    by_file = list((tmp_path / "plans" / "files").glob("*.json"))
    assert len(by_file) == 2  # the binary and its copy
    for entry in [*cached, *by_file]:
        entry.write_text("{not json")  # a damaged entry is replaced, never trusted
    third = run_inspect(binary, "--json", cache_dir=tmp_path)
    assert json.loads(third.stdout) == json.loads(first.stdout)
    assert json.loads(cached[0].read_text())["verdict"] == json.loads(first.stdout)["verdict"]


def test_a_file_written_again_is_not_served_its_old_report(go_versions, tmp_path):
    """The entry by file is keyed by its inode and times: the same path holding another
    binary, written in place, gets that binary's report."""
    binary = tmp_path / "program"
    shutil.copyfile(gobuild.build(go_versions[-1], "default"), binary)
    first = json.loads(run_inspect(binary, "--json", cache_dir=tmp_path).stdout)
    with open(gobuild.build(go_versions[-1], "stripped"), "rb") as src, open(binary, "r+b") as dst:
        dst.write(src.read())  # same inode
        dst.truncate()
    second = json.loads(run_inspect(binary, "--json", cache_dir=tmp_path).stdout)
    assert (first["stripped"], second["stripped"]) == (False, True)
    assert second == json.loads(run_inspect(binary, "--json", "--no-cache").stdout)
