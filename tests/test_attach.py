"""`tether trace -p PID`: attach to a running Go program, trace it, detach, and leave it running.

tests/go/ticker makes a getppid call every millisecond and checks each answer; attached to
while it runs, it must keep its count and its answers, and end as it would have.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import gobuild
import pytest

TETHER = [sys.executable, "-m", "tether"]


def started(exe, *args) -> subprocess.Popen:
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc


def trace_pid(pid: int, out, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TETHER, "trace", "-o", str(out), *flags, "-p", str(pid)], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("variant", ["default", "static"])
def test_attach_traces_and_detaches_leaving_the_program_as_it_was(go_versions, variant, tmp_path):
    for version in go_versions:
        proc = started(gobuild.build(version, variant, "ticker"), "2")
        out = tmp_path / f"{version}.trace"
        r = trace_pid(proc.pid, out, "--duration", "0.5")
        end_of_trace = out.stat().st_size
        rest, err = proc.communicate(timeout=30)
        assert (r.returncode, r.stderr) == (0, ""), (version, variant)
        assert (proc.returncode, err) == (0, "") and rest.startswith("ticker ok "), (version, variant, rest, err)
        lines = out.read_text().splitlines()
        mine = [line for line in lines if line.startswith(f"[{proc.pid} ") and "getppid() = " in line]
        assert len(mine) > 100, (version, variant, lines[:5])  # about 500 in half a second
        assert all(line.endswith(f" = {os.getpid()}") for line in mine), (version, variant)
        time.sleep(0.2)
        assert out.stat().st_size == end_of_trace  # nothing after the detach


def test_attach_under_load(go_versions):
    """1000 goroutines of mixed hooked calls, attached to and let go in the middle."""
    for version in go_versions:
        proc = subprocess.Popen([str(gobuild.build(version, "static", "hooks")), "stress", "3"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        r = trace_pid(proc.pid, os.devnull, "--duration", "1")
        out, err = proc.communicate(timeout=60)
        assert r.returncode == 0, (version, r.stderr)
        assert (proc.returncode, out, err) == (0, b"stress ok\n", b""), version


def test_attaching_twice_is_refused_and_leaves_the_program_alone(go_versions, tmp_path):
    proc = started(gobuild.build(go_versions[-1], "static", "ticker"), "2")
    assert trace_pid(proc.pid, os.devnull, "--duration", "0.2").returncode == 0
    again = trace_pid(proc.pid, os.devnull, "--duration", "0.2")
    rest, _ = proc.communicate(timeout=30)
    assert again.returncode == 2 and "hooked by tether before" in again.stderr
    assert proc.returncode == 0 and rest.startswith("ticker ok ")


@pytest.mark.parametrize("what, message", [
    ("sleep", "tether attaches to Go programs only"),
    ("gone", "no process"),
])
def test_what_cannot_be_attached_to_says_why(what, message):
    target = subprocess.Popen(["sleep", "30"]) if what == "sleep" else None
    pid = target.pid if target else 4194304 + 1  # above pid_max's highest value: never a process
    try:
        r = trace_pid(pid, os.devnull)
    finally:
        if target:
            target.kill()
            target.wait()
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_pid_and_program_are_exclusive():
    r = subprocess.run([*TETHER, "trace", "-p", "1", "--", "true"], capture_output=True, text=True)
    assert r.returncode == 2 and "not both" in r.stderr
    r = subprocess.run([*TETHER, "trace", "--duration", "1", "--", "true"], capture_output=True, text=True)
    assert r.returncode == 2 and "--duration goes with -p" in r.stderr


@pytest.mark.parametrize("variant", ["default", "static"])
def test_exec_attach_routes_a_running_programs_new_connections(go_versions, variant, tmp_path):
    """tether exec --attach: a program started without tether cannot reach the namespace's
    service; attached to, its next connect goes out from there."""
    from netns import HTTP_PORT, WEB_ADDR, TargetNamespace

    web, go_on = f"{WEB_ADDR}:{HTTP_PORT}", tmp_path / "go-on"
    with TargetNamespace() as ns:
        prog = subprocess.Popen([str(gobuild.build(go_versions[-1], variant, "netclient")), "dial", web,
                                 "wait", str(go_on), "dial", web], stdout=subprocess.PIPE, text=True)
        first = prog.stdout.readline()  # its first dial is done (it fails fast: the unreachable route)
        t = subprocess.Popen([*TETHER, "exec", "--target", f"netns:{ns.name}", "--attach", str(prog.pid)],
                             stderr=subprocess.PIPE, text=True)
        assert "attached to process" in t.stderr.readline()
        go_on.touch()
        out, _ = prog.communicate(timeout=30)
        _, err = t.communicate(timeout=30)
    assert [first.rstrip(), *out.splitlines()] == ["dial error: unreachable", "wait ok", f"dial ok peer={web}"]
    assert t.returncode == 0, err
