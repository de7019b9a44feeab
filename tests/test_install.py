"""Installing tether as a new user would, and the commands that help them: the wheel (the
layer compiled in), `tether doctor`, shell completion, help that shows how.

The wheel test builds with `python -m build` and installs into a clean venv from the wheel
alone, with no compiler on PATH, then runs tether from there. CI also follows README's
Debian 12 set-up line with the system Python and pipx (.ci/run).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tether.cli import parser
from tether.cli.completion import _commands

ROOT = Path(__file__).resolve().parents[1]
TETHER = [sys.executable, "-m", "tether"]


def test_doctor_reports_every_part(tmp_path):
    r = subprocess.run([*TETHER, "doctor"], capture_output=True, text=True, timeout=60)
    lines = r.stdout.splitlines()
    for part in ("privileges", "layer", "glibc", "kernel", "namespaces", "ptrace", "nftables", "ip (iproute2)",
                 "Go toolchain"):
        assert any(line[6:].startswith(part) for line in lines), (part, r.stdout)
    assert r.returncode == (0 if "missing" not in lines[-1] else 1), r.stdout
    assert lines[-1].endswith("checks passed") or "missing" in lines[-1]


def test_doctor_says_what_a_missing_ptrace_disables_and_the_fix(tmp_path):
    from test_static import NO_PTRACE

    script = tmp_path / "no_ptrace.py"
    script.write_text(NO_PTRACE)
    r = subprocess.run([sys.executable, str(script), "tether", "doctor"], capture_output=True, text=True, timeout=60)
    ptrace = [line for line in r.stdout.splitlines() if " ptrace " in f" {line} "]
    assert r.returncode == 1 and ptrace[0].startswith("MISS") and "refused" in ptrace[0], r.stdout
    block = r.stdout[r.stdout.index(ptrace[0]):]
    assert "disables: static Go programs" in block and "fix: kernel.yama.ptrace_scope below 3" in block


def _complete(script: str, *words: str) -> list[str]:
    probe = (f'{script}\nCOMP_WORDS=({" ".join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}; '
             'COMPREPLY=(); _tether; printf "%s\\n" "${COMPREPLY[@]}"')
    return subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True, timeout=30).stdout.split()


def test_bash_completion_knows_every_command_and_option(tmp_path):
    script = subprocess.run([*TETHER, "completion", "bash"], capture_output=True, text=True, check=True).stdout
    commands = [w for w in _commands(parser()) if w and " " not in w]
    assert set(_complete(script, "tether", "")) >= set(commands)
    assert _complete(script, "tether", "ex") == ["exec"]
    for words, p in _commands(parser()).items():
        options = {o for a in p._actions for o in a.option_strings if o.startswith("--")}
        assert set(_complete(script, "tether", *words.split(), "--")) >= options - {"--help"} or not words, words
    assert _complete(script, "tether", "demo", "--client", "") == ["auto", "go", "python"]
    assert _complete(script, "tether", "config", "s") == ["schema", "show"]
    (tmp_path / "trace-out.txt").write_text("")
    assert _complete(script, "tether", "trace", "-o", str(tmp_path / "trace-o")) == [str(tmp_path / "trace-out.txt")]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_loads():
    script = subprocess.run([*TETHER, "completion", "zsh"], capture_output=True, text=True, check=True).stdout
    r = subprocess.run(["zsh", "-fc", f"autoload -U compinit && compinit -u\n{script}\nwhence -w _tether"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "_tether: function" in r.stdout, r.stderr


def test_every_command_shows_an_example_and_every_option_says_what_it_does():
    for words, p in _commands(parser()).items():
        if not words:
            continue
        assert f"tether {words}" in p.description.partition("\n")[2], f"`tether {words} --help` has no example"
        for a in p._actions:
            if a.option_strings and a.help != argparse.SUPPRESS:
                assert a.help, (words, a.option_strings)


def test_the_wheel_carries_the_layer_and_installs_without_a_compiler(tmp_path):
    """python -m build makes one wheel with both builds of the layer; installed into a clean
    venv with no gcc, cmake or cc anywhere on PATH, tether works from there."""
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)], check=True,
                   capture_output=True, timeout=900)
    (wheel,) = dist.glob("tether-*.whl")
    assert wheel.name.endswith("-py3-none-linux_x86_64.whl"), wheel.name
    names = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True,
                           check=True).stdout
    assert "tether/libtether.so" in names and "tether/libtether-static.so" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bare = tmp_path / "bin"  # python and pip only: a compiler would show as a build
    bare.mkdir()
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{bare}"}
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
                   check=True, env=env, timeout=600, capture_output=True)
    tether = str(venv / "bin" / "tether")
    version = subprocess.run([tether, "--version"], capture_output=True, text=True, env=env, check=True)
    assert version.stdout.startswith("tether, version ")
    doctor = subprocess.run([tether, "doctor"], capture_output=True, text=True, env=env, timeout=60)
    assert "ok    layer" in doctor.stdout, doctor.stdout
    trace = subprocess.run([tether, "trace", "-e", "file", "--", "/bin/cat", "/dev/null"], capture_output=True,
                           text=True, env=env, timeout=60)
    assert trace.returncode == 0 and 'openat(AT_FDCWD, "/dev/null"' in trace.stderr, trace.stderr
    if os.geteuid() == 0:  # the demo makes a namespace; ip from the system, Go found by the demo itself
        demo = subprocess.run([tether, "demo"], capture_output=True, text=True, timeout=300,
                              env={**env, "PATH": f"{env['PATH']}:/usr/sbin:/usr/bin:/sbin:/bin"})
        assert demo.returncode == 0 and "removed namespace" in demo.stdout, demo.stdout + demo.stderr
