"""`tether trace` on real Go programs: the right calls with the right arguments and results,
children included, and the program itself unchanged."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gobuild
import pytest

TETHER = [sys.executable, "-m", "tether"]


def trace(program, *args, flags=(), cwd=None, env=None, tmp: Path):
    out = tmp / "trace.jsonl"
    proc = subprocess.run([*TETHER, "trace", "--json", "-o", str(out), *flags, "--", str(program), *args],
                          capture_output=True, timeout=120, cwd=cwd, env=env)
    events = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return proc, events


def native(program, *args, cwd=None):
    return subprocess.run([str(program), *args], capture_output=True, timeout=120, cwd=cwd)


def calls(events, name, pid=None):
    return [e for e in events if e["syscall"] == name and (pid is None or e["pid"] == pid)]


@pytest.mark.parametrize("variant", ["default", "stripped", "pie"])
def test_tcp_calls_and_identical_output(go_versions, variant, tmp_path):
    for version in go_versions:
        exe = gobuild.build(version, variant)
        proc, events = trace(exe, "tcp", tmp=tmp_path)
        ref = native(exe, "tcp")
        where = (version, variant)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, ref.stdout, ref.stderr), where
        sockets = calls(events, "socket")
        assert any(e["args"][:2] == ["AF_INET", "SOCK_STREAM|SOCK_NONBLOCK|SOCK_CLOEXEC"]
                   and e["ret"] >= 3 for e in sockets), where
        binds = calls(events, "bind")
        assert binds and binds[0]["args"][1] == "{AF_INET, 127.0.0.1:0}" and binds[0]["ret"] == 0, where
        port = next(int(m.group(1)) for e in calls(events, "getsockname")
                    if (m := re.fullmatch(r"\{AF_INET, 127\.0\.0\.1:(\d+)\}", e["args"][1])))
        connects = calls(events, "connect")
        assert connects and connects[0]["args"][1] == f"{{AF_INET, 127.0.0.1:{port}}}", where
        # Go's non-blocking connect: EINPROGRESS, then the poller reports it connected.
        assert connects[0]["errno"] in ("EINPROGRESS", None), where
        assert calls(events, "accept4") and calls(events, "write") and calls(events, "read"), where
        assert all(e["pid"] == events[0]["pid"] for e in events), where


def test_files_paths_and_results(go_versions, tmp_path):
    for version in go_versions:
        exe = gobuild.build(version, "default")
        work = tmp_path / version
        work.mkdir()
        proc, events = trace(exe, "files", str(work), tmp=tmp_path)
        assert proc.returncode == 0, proc.stderr
        opened = [e for e in calls(events, "openat") if str(work) in e["args"][1]]
        assert any("O_CREAT" in e["args"][2] and e["ret"] >= 3 for e in opened), version
        assert calls(events, "getdents64") and calls(events, "fstat") or calls(events, "newfstatat")
        failed = [e for e in events if e["errno"] == "ENOENT"]
        for e in failed:
            assert e["ret"] == -1
        assert not list(work.iterdir())  # the probe cleaned up, as it does untraced


def test_children_are_traced_with_their_pids(go_versions, tmp_path):
    for version in go_versions:
        exe = gobuild.build(version, "default")
        proc, events = trace(exe, "exec", tmp=tmp_path)
        ref = native(exe, "exec")
        assert (proc.returncode, proc.stdout) == (0, ref.stdout), version
        parent = events[0]["pid"]
        execs = [e for e in calls(events, "execve") if e["pid"] != parent]
        assert len(execs) == 2 and all(e["args"][0] == json.dumps(str(exe)) for e in execs), version
        # ret 0: the new image's layer connected to the session (its HELLO settles the line).
        assert all(e["ret"] == 0 for e in execs), version
        hello_child = execs[0]["pid"]  # `probe hello`: its own write, traced after exec
        assert any(e["args"][0] == "1" and e["ret"] == 6 for e in calls(events, "write", hello_child)), version


def test_exit_code_and_signal_pass_through(go_versions, tmp_path):
    exe = gobuild.build(go_versions[-1], "default")
    proc, _ = trace(exe, "exit", "253", tmp=tmp_path)
    assert proc.returncode == 253
    proc = subprocess.run([*TETHER, "trace", "-o", os.devnull, "--", "/bin/sh", "-c", "kill -TERM $$"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 128 + 15


def test_text_lines_and_class_filter(go_versions, tmp_path):
    exe = gobuild.build(go_versions[-1], "default")
    out = tmp_path / "trace.txt"
    proc = subprocess.run([*TETHER, "trace", "-e", "net", "-o", str(out), "--", str(exe), "tcp"],
                          capture_output=True, timeout=120)
    assert proc.returncode == 0
    lines = out.read_text().splitlines()
    assert lines and all(re.match(r"\[\d+ \d+\] \w+\(.*\) = ", line) for line in lines)
    names = {re.match(r"\[\d+ \d+\] (\w+)\(", line).group(1) for line in lines}
    assert {"socket", "bind", "listen", "connect", "getsockname"} <= names
    assert not names & {"openat", "read", "write", "close", "epoll_pwait"}
    assert re.search(r"\] connect\(\d+, \{AF_INET, 127\.0\.0\.1:\d+\}, 16\) = ", out.read_text())


def test_trace_goes_to_stderr_by_default(go_versions):
    exe = gobuild.build(go_versions[-1], "default")
    proc = subprocess.run([*TETHER, "trace", "--", str(exe), "hello"], capture_output=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == b"hello\n"
    assert re.search(rb"\] write\(1, 0x[0-9a-f]+, 6\) = 6\n", proc.stderr)


@pytest.mark.parametrize("argv,code,message", [
    (["/nonexistent/program"], 127, "command not found"),
    (["/etc/passwd"], 126, "permission denied"),
])
def test_programs_that_cannot_start(argv, code, message):
    proc = subprocess.run([*TETHER, "trace", "--", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == code and message in proc.stderr and "Traceback" not in proc.stderr


def test_static_program_that_is_not_go_is_refused_up_front(tmp_path):
    src = tmp_path / "hello.c"
    src.write_text('#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n')
    subprocess.run(["gcc", "-O1", "-static", "-o", tmp_path / "hello", src], check=True)
    proc = subprocess.run([*TETHER, "trace", "--", str(tmp_path / "hello")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "statically linked, and not Go" in proc.stderr and "dynamically linked build" in proc.stderr


def test_unknown_class_is_a_usage_error():
    proc = subprocess.run([*TETHER, "trace", "-e", "nett", "--", "true"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown class nett" in proc.stderr


def test_layer_without_its_session_refuses_to_run(go_versions, tmp_path):
    """A hooked program whose session is gone must not run unobserved."""
    from tether.layer import preload_env

    exe = gobuild.build(go_versions[-1], "default")
    env = {**preload_env(os.environ), "TETHER_SESSION": str(tmp_path / "gone.sock")}
    proc = subprocess.run([str(exe), "hello"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"tether: cannot reach the tether session at {tmp_path}/gone.sock")


def _linked_host(lib: Path, tmp: Path) -> Path:
    exe = tmp / "cshared_linked"
    subprocess.run(["gcc", "-O1", "-o", exe, Path(__file__).parent / "native" / "cshared_linked.c",
                    str(lib), f"-Wl,-rpath,{lib.parent}"], check=True)
    return exe


def test_go_c_shared_library_is_hooked_wherever_it_is_loaded(go_versions, tmp_path):
    """dlopen from C, ctypes from Python, and linked at start-up: the library's own syscalls
    are traced (a pipe: 21 bytes written by a goroutine, read back) and its result is right."""
    for version in go_versions:
        lib = gobuild.build(version, "cshared")
        hosts = {
            "dlopen": [gobuild.build_c_host(), lib, "21"],
            "ctypes": [sys.executable, "-c", f"import ctypes; print(ctypes.CDLL({str(lib)!r}).TetherProbe(21))"],
            "linked": [_linked_host(lib, tmp_path)],
        }
        for how, argv in hosts.items():
            proc, events = trace(*argv, tmp=tmp_path)
            where = (version, how)
            assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"42\n", b""), where
            assert any(e["ret"] == 21 for e in calls(events, "write")), where
            assert any(e["ret"] == 21 for e in calls(events, "read")), where
            assert calls(events, "pipe2"), where


def test_go_program_and_the_go_library_it_loads_are_traced(go_versions, tmp_path):
    """A Go program (newest Go) that dlopens a Go c-shared library of each version: both
    runtimes' calls are traced (each makes a pipe and writes 17 bytes into it from a
    goroutine), with no warning."""
    host = gobuild.build(go_versions[-1], "default", "gohost")
    for version in go_versions:
        lib = gobuild.build(version, "cshared")
        proc, events = trace(host, lib, "17", tmp=tmp_path)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"host 17\nlib 34\n", b""), version
        assert len(calls(events, "pipe2")) == 2, version
        assert len([e for e in calls(events, "write") if e["ret"] == 17]) == 2, version
        assert len([e for e in calls(events, "read") if e["ret"] == 17]) == 2, version


def test_go_program_started_by_a_shell_is_hooked(go_versions, tmp_path):
    """The layer passes through a program that is not Go; its Go child gets its own plan."""
    exe = gobuild.build(go_versions[-1], "stripped")
    proc, events = trace("/bin/sh", "-c", f"{exe} hello; exit 3", tmp=tmp_path)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, b"hello\n", b"")
    assert any(e["args"][0] == "1" and e["ret"] == 6 for e in calls(events, "write"))


def test_a_trace_that_cannot_be_written_leaves_the_program_running(go_versions, tmp_path):
    """-o on a full disk: one warning that the rest of the trace is lost; the program runs to
    its end and its exit status passes through (no traceback, no killed program)."""
    exe = gobuild.build(go_versions[-1], "default")
    script = f"{exe} files {tmp_path} && echo done && exit 7"
    r = subprocess.run([*TETHER, "trace", "-o", "/dev/full", "--", "/bin/sh", "-c", script],
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout.splitlines()[-1:]) == (7, ["done"]), r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == ["tether trace: cannot write the trace to /dev/full: No space left on device; "
                     "the rest of it is lost (the program runs on)"], r.stderr
