"""Go programs running with the layer's hooks, on every Go version and build mode.

Each program runs twice, natively and hooked, and must behave identically: same stdout and
stderr bytes, same exit status. "Hooked" is tried two ways: as the layer runs by default (an
empty dispatcher slot passes straight to the kernel from the trampoline) and with
TETHER_ROUTE_ALL=1 (every syscall takes the full path: trampoline, switch to the system stack
through runtime.asmcgocall, C dispatcher, back).
"""
from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path

import go_toolchains
import gobuild
import pytest

from tether.analysis.cache import inspect_binary
from tether.layer import CannotHookError, go_plan, hooked_env

NATIVE_DIR = Path(__file__).parent / "native"
STRESS_SECONDS = int(os.environ.get("TETHER_STRESS_SECONDS", "5"))
HOOK_MODES = {"fast": {}, "route-all": {"TETHER_ROUTE_ALL": "1"}}
PROBE_RUNS = [["hello"], ["exit", "253"], ["tcp"], ["udp"], ["files"], ["exec"], ["goroutines"]]


@cache
def deep_handler() -> Path:
    """tests/native/deep_handler.c built as a preloadable library."""
    out = go_toolchains.cache_dir() / "native" / "deep_handler.so"
    out.parent.mkdir(parents=True, exist_ok=True)
    src = NATIVE_DIR / "deep_handler.c"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run(["gcc", "-O1", "-Wall", "-shared", "-fPIC", "-o", tmp, src, "-ldl"], check=True)
        tmp.replace(out)
    return out


def env_for(binary: Path, mode: str = "fast", extra_preload: Path | None = None, **extra) -> dict:
    env = hooked_env(inspect_binary(binary), os.environ)
    env.update(HOOK_MODES[mode])
    if extra_preload is not None:
        env["LD_PRELOAD"] += f":{extra_preload}"
    env.update(extra)
    return env


def run(argv, env=None, timeout=120, cwd=None):
    return subprocess.run([str(a) for a in argv], env=env, capture_output=True, timeout=timeout, cwd=cwd)


def assert_same(native, hooked, what):
    assert hooked.returncode == native.returncode, (what, hooked.stderr[-2000:])
    assert hooked.stdout == native.stdout, what
    assert hooked.stderr == native.stderr, what


@pytest.mark.parametrize("mode", HOOK_MODES)
@pytest.mark.parametrize("variant", ["default", "stripped", "pie"])
def test_probe_runs_identically_hooked(go_versions, variant, mode, tmp_path):
    for version in go_versions:
        exe = gobuild.build(version, variant)
        env = env_for(exe, mode)
        for args in PROBE_RUNS:
            native = run([exe, *args], cwd=tmp_path)
            hooked = run([exe, *args], env=env, cwd=tmp_path)
            assert_same(native, hooked, (version, variant, mode, args))
        assert run([exe, "exit", "253"], env=env).returncode == 253


def test_detour_result_reaches_go_from_a_deep_stack(go_versions):
    """A handler touching 256 KiB of stack runs fine: C runs on g0, never the goroutine stack."""
    for version in go_versions:
        exe = gobuild.build(version, "default", "hooks")
        native = run([exe, "getppid"])
        assert native.stdout != b"getppid 4242\n"
        hooked = run([exe, "getppid"], env=env_for(exe, extra_preload=deep_handler()))
        assert (hooked.returncode, hooked.stdout, hooked.stderr) == (0, b"getppid 4242\n", b""), version


@pytest.mark.parametrize("args", [["seek", "."], ["mmap"]])
def test_64_bit_results_arrive_intact(go_versions, args, tmp_path):
    for version in go_versions:
        exe = gobuild.build(version, "default", "hooks")
        native = run([exe, *args], cwd=tmp_path)
        assert native.returncode == 0 and native.stdout in (
            b"seek 5368709243 pread 3 end size 5368709246\n", b"mmap above 4 GiB: true\n")
        (tmp_path / "sparse").unlink(missing_ok=True)
        hooked = run([exe, *args], env=env_for(exe, "route-all"), cwd=tmp_path)
        assert_same(native, hooked, (version, args))


def test_cgo_program_with_large_thread_locals(go_versions):
    """External linking moves g away from fs:-8; the hooks never assume where it is."""
    for version in go_versions:
        exe = gobuild.build(version, "default", "tlscgo")
        native = run([exe])
        assert native.returncode == 0 and native.stdout.endswith(b"tls intact true\n")
        hooked = run([exe], env=env_for(exe, "route-all", extra_preload=deep_handler()))
        assert (hooked.returncode, hooked.stdout) == (0, b"getppid 4242 tls intact true\n"), version


@pytest.mark.parametrize("mode", HOOK_MODES)
def test_stress_with_gc_and_preemption(go_versions, mode):
    """1000 goroutines of mixed hooked syscalls with GC, stack growth and preemption.

    TETHER_STRESS_SECONDS per version (5 by default; CI's slow step runs 60)."""
    for version in go_versions:
        exe = gobuild.build(version, "default", "hooks")
        proc = run([exe, "stress", str(STRESS_SECONDS)], env=env_for(exe, mode),
                   timeout=STRESS_SECONDS + 120)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"stress ok\n", b""), (version, mode)


def test_static_go_binary_is_not_preloaded(go_versions):
    """LD_PRELOAD cannot load into it: hooked_env refuses; tests/test_static.py injects."""
    exe = gobuild.build(go_versions[0], "static")
    with pytest.raises(CannotHookError, match="statically linked.*injected at exec by tether exec and tether trace"):
        hooked_env(inspect_binary(exe), os.environ)


def test_plan_that_does_not_match_the_code_is_refused(go_versions):
    exe = gobuild.build(go_versions[-1], "default")
    env = env_for(exe)
    plan = env["TETHER_GO_PLAN"].split(";")
    funnel = next(i for i, p in enumerate(plan) if p.startswith("funnel="))
    plan[funnel] = plan[funnel][:-2] + ("00" if not plan[funnel].endswith("00") else "01")
    proc = run([exe, "hello"], env={**env, "TETHER_GO_PLAN": ";".join(plan)})
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr == b"tether: cannot hook this Go program: code differs from the hook plan at funnel\n"


@pytest.mark.parametrize("plan", ["", "2;x", "1;id;funnel=zz", "1;id;bogus=1:00", "1;id;funnel=10:0011"])
def test_malformed_plan_is_refused(go_versions, plan):
    exe = gobuild.build(go_versions[-1], "default")
    proc = run([exe, "hello"], env={**env_for(exe), "TETHER_GO_PLAN": plan})
    assert proc.returncode == 2 and proc.stdout == b""
    assert proc.stderr == b"tether: cannot hook this Go program: malformed TETHER_GO_PLAN\n"


def test_plan_of_another_go_program_is_not_applied(go_versions):
    """A Go child started by a hooked program inherits its parent's plan: never applied."""
    parent = gobuild.build(go_versions[-1], "default", "hooks")
    child = gobuild.build(go_versions[-1], "default")
    proc = run([child, "hello"], env=env_for(parent))
    assert proc.returncode == 0 and proc.stdout == b"hello\n"
    assert b"no hook plan for this Go program" in proc.stderr


def test_non_go_programs_ignore_the_plan(go_versions):
    exe = gobuild.build(go_versions[-1], "default")
    proc = run(["/bin/sh", "-c", "echo fine; exit 7"], env=env_for(exe))
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, b"fine\n", b"")


def test_blocking_detour_on_a_raw_call_lets_other_goroutines_run(go_versions):
    """GOMAXPROCS=1; a raw getppid whose detour sleeps 2 s; a 50 ms ticker keeps ticking."""
    for version in go_versions:
        exe = gobuild.build(version, "default", "hooks")
        env = env_for(exe, extra_preload=deep_handler(), TETHER_TEST_SLOW_GETPPID="1")
        proc = run([exe, "blocked"], env=env, timeout=60)
        assert proc.returncode == 0, (version, proc.stderr[-2000:])
        ticks = int(proc.stdout.decode().rsplit(":", 1)[1])
        assert ticks >= 20, (version, ticks)  # 40 expected; 0 when the P is held


def test_go_program_and_the_go_library_it_loads_are_both_hooked(go_versions):
    """Two Go runtimes in one process (tests/go/gohost, newest Go, dlopens tests/go/cshared of
    each version): each runtime's blocking detour goes through its own runtime's
    entersyscall, with its own version's g and m offsets, so both tickers keep ticking."""
    host = gobuild.build(go_versions[-1], "default", "gohost")
    for version in go_versions:
        lib = gobuild.build(version, "cshared")
        env = env_for(host, extra_preload=deep_handler(), TETHER_TEST_SLOW_GETPPID="1")
        env["TETHER_GO_PLAN"] += "|" + go_plan(inspect_binary(lib))
        proc = run([host, lib, "blocked"], env=env, timeout=60)
        assert (proc.returncode, proc.stderr) == (0, b""), (version, proc.stderr[-2000:])
        host_line, lib_line = proc.stdout.decode().splitlines()
        # 40 expected each; 0 for a runtime left unhooked (its getppid is not slowed) or
        # whose P is held while its detour sleeps.
        assert int(host_line.split(": ")[1]) >= 20, (version, host_line)
        assert int(lib_line.split(": ")[1]) >= 20, (version, lib_line)
