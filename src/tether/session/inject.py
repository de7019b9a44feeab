"""Load the layer into a Go program without the dynamic loader, with ptrace, and let go.

A static program has no dynamic loader, so LD_PRELOAD never loads libtether.so; a running
program took whatever it was given at its start. Three ways in, one load (_load):

- spawn: a static program tether starts, traced (PTRACE_TRACEME): it stops right after its
  exec, before its first instruction;
- ExecWatch: a static program a hooked one execs: the layer's exec/ tells the session first
  (EXEC_NOTICE), which attaches to that thread (PTRACE_SEIZE) and takes the exec's stop;
- attach: a running Go program (tether trace -p): every thread stopped (PTRACE_INTERRUPT).

The load, in the stopped program: the first bytes at its entry point (code it never runs
again) become `syscall; int3`, and from there it makes the syscalls the load needs (each stops
at the int3); libtether-static.so (layer/start/inject.c: no libc, no TLS) is copied in,
relocated here (only R_X86_64_RELATIVE: the build binds its own symbols), and its segments
get their protections; its entry point is called on a stack of its own with an environment
of its own (TETHER_SESSION, LD_PRELOAD for the dynamic programs it execs, TETHER_*
settings): it reaches the session, which the caller's `pump` serves meanwhile, and patches
Go's syscall entry points as libtether.so's constructor does, then returns to the int3. Its
stack is unmapped (its environment stays: exec/ points into it), the entry point's bytes and
every register are put back as they were, and the program is let go (PTRACE_DETACH) with any
signal that came meanwhile.

After that no ptrace remains: the hooked path is the preloaded layer's. The program's
/proc/self/exe, argv, auxv and environment are what they would be without tether.
"""
from __future__ import annotations

import ctypes
import errno
import os
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from ..analysis.elf import ElfError, ElfFile

PTRACE_TRACEME, PTRACE_CONT, PTRACE_DETACH = 0, 7, 17
PTRACE_GETREGS, PTRACE_SETREGS, PTRACE_SETOPTIONS = 12, 13, 0x4200
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_LISTEN = 0x4206, 0x4207, 0x4208
AT_ENTRY = 9
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_EXITKILL = 0x100000  # the program dies with tether if tether dies mid-load
PTRACE_EVENT_EXEC, PTRACE_EVENT_STOP = 4, 128
WALL = 0x40000000  # __WALL: wait for a tracee whatever its kind
SYS_MMAP, SYS_MPROTECT, SYS_MUNMAP = 9, 10, 11
PROT_READ, PROT_WRITE, PROT_EXEC = 1, 2, 4
MAP_PRIVATE_ANONYMOUS = 0x22
PT_LOAD, PF_X, PF_W, PF_R = 1, 1, 2, 4
DT_RELA, DT_RELASZ = 7, 8
R_X86_64_RELATIVE = 8
PAGE = 4096
STACK = 64 * 1024  # the layer's start-up needs a few KiB (frames of 4 KiB at most)
OUT = struct.Struct("<5Q")  # struct tether_inject_out: tap, handlers, handlers_size, go_result, go_restart
ERESTART = (-512, -513, -514)  # ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND: made again on resume
ERESTART_RESTARTBLOCK, SYS_RESTART_SYSCALL = -516, 219
FUNNEL_PATCHED = 42  # the funnel's three 14-byte jumps, at +0, +14 and +28 (go/hook.c)
SYSCALL_END = 14  # funnel+14: just after its SYSCALL, where a thread blocked in it sits
TRAP = b"\x0f\x05\xcc"  # syscall; int3
POLL_S = 0.001  # while the layer talks to the session: its start-up takes a few ms
FAULTS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE)  # the load's own doing: never passed on


class InjectError(Exception):
    """The layer could not be loaded into the program; the message says why and what to do."""


class Regs(ctypes.Structure):
    """struct user_regs_struct (x86-64), as PTRACE_GETREGS fills it."""
    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
        "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base",
        "ds", "es", "fs", "gs")]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.argtypes = (ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
_libc.ptrace.restype = ctypes.c_long


def _ptrace(request: int, pid: int, addr: int = 0, data: int | ctypes.Array | Regs = 0) -> None:
    arg = ctypes.addressof(data) if isinstance(data, ctypes.Structure) else data
    if _libc.ptrace(request, pid, addr, arg) == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"ptrace({request}): {os.strerror(err)}")


def traceme() -> None:  # in the child, between fork and exec
    if _libc.ptrace(PTRACE_TRACEME, 0, None, None) == -1:
        os._exit(126)


class Image:
    """libtether-static.so laid out as it is mapped, before relocation."""

    def __init__(self, path: Path):
        try:
            with ElfFile(path) as elf:
                loads = [s for s in elf.segments if s.type == PT_LOAD]
                if elf.e_machine != 62 or elf.e_type != 3 or not loads:
                    raise InjectError(f"{path}: not an x86-64 shared object; reinstall tether")
                self.span = _page_up(max(s.vaddr + s.memsz for s in loads))
                self.data = bytearray(self.span)
                for s in loads:
                    self.data[s.vaddr:s.vaddr + s.filesz] = elf.bytes_at(s.offset, s.filesz)
                self.protections = [(_page_down(s.vaddr), _page_up(s.vaddr + s.memsz) - _page_down(s.vaddr),
                                     _prot(s.flags)) for s in loads]
                tags = dict(elf.dynamic)
                table = elf.read_vaddr(tags[DT_RELA], tags[DT_RELASZ]) if DT_RELA in tags else b""
                self.relocations = []
                for offset, info, addend in struct.iter_unpack("<QQq", table):
                    if info & 0xFFFFFFFF != R_X86_64_RELATIVE:
                        raise InjectError(f"{path}: relocation type {info & 0xFFFFFFFF} at {offset:#x}; "
                                          "the static layer must have only RELATIVE ones (rebuild tether)")
                    self.relocations.append((offset, addend))
                self.entry = elf.e_entry
        except (ElfError, KeyError, struct.error) as e:
            raise InjectError(f"{path}: unreadable static layer ({e}); reinstall tether") from None

    def relocated(self, base: int) -> bytes:
        out = bytearray(self.data)
        for offset, addend in self.relocations:
            struct.pack_into("<Q", out, offset, base + addend)
        return bytes(out)


@lru_cache(maxsize=2)
def image(path: Path) -> Image:
    return Image(path)


def _page_down(n: int) -> int:
    return n & ~(PAGE - 1)


def _page_up(n: int) -> int:
    return (n + PAGE - 1) & ~(PAGE - 1)


def _prot(flags: int) -> int:
    return ((PROT_READ if flags & PF_R else 0) | (PROT_WRITE if flags & PF_W else 0)
            | (PROT_EXEC if flags & PF_X else 0))


def _environment_block(base: int, env: Mapping[str, str]) -> bytes:
    """A NULL-terminated char *envp[] at base, its strings after it."""
    strings = [f"{k}={v}".encode() + b"\0" for k, v in env.items()]
    table = 8 * (len(strings) + 1)
    pointers, at = [], base + table
    for s in strings:
        pointers.append(at)
        at += len(s)
    return struct.pack(f"<{len(pointers) + 1}Q", *pointers, 0) + b"".join(strings)


class _Tracee:
    """The stopped program, driven one stop at a time."""

    def __init__(self, pid: int):
        self.pid = pid
        self.mem = os.open(f"/proc/{pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        self.pending = 0  # a signal that arrived during the load, delivered when we let go

    def close(self) -> None:
        os.close(self.mem)

    def regs(self) -> Regs:
        return _regs(self.pid)

    def write(self, addr: int, data: bytes) -> None:
        if os.pwrite(self.mem, data, addr) != len(data):
            raise InjectError(f"short write into the program at {addr:#x}")

    def read(self, addr: int, n: int) -> bytes:
        return os.pread(self.mem, n, addr)

    def run_to_trap(self, regs: Regs, trap: int, pump: Callable[[], None] | None = None) -> Regs:
        """Continue with regs until the int3 at trap; the registers there."""
        regs.orig_rax = (1 << 64) - 1  # no syscall restart on the way out of this stop
        _ptrace(PTRACE_SETREGS, self.pid, 0, regs)
        _ptrace(PTRACE_CONT, self.pid, 0, 0)
        while True:
            pid, status = os.waitpid(self.pid, WALL | (os.WNOHANG if pump else 0))
            if pid == 0:
                pump()
                continue
            if not os.WIFSTOPPED(status):
                code = os.waitstatus_to_exitcode(status)
                raise InjectError(f"the program ended while the layer was loading (status {code})")
            sig = os.WSTOPSIG(status)
            now = self.regs()
            if sig == signal.SIGTRAP and now.rip == trap + 1:
                return now
            if sig in FAULTS:
                raise InjectError(f"the program faulted ({signal.Signals(sig).name} at {now.rip:#x}) while "
                                  "the layer was loading; please report this as a tether bug")
            if sig != signal.SIGTRAP:
                self.pending = sig  # the program's, later
            _ptrace(PTRACE_CONT, self.pid, 0, 0)

    def syscall(self, at: int, nr: int, *args: int) -> int:
        regs = self.regs()
        regs.rax, regs.rip = nr, at
        for name, value in zip(("rdi", "rsi", "rdx", "r10", "r8", "r9"), args):
            setattr(regs, name, value & ((1 << 64) - 1))
        result = self.run_to_trap(regs, at + 2).rax
        return result - (1 << 64) if result >= (1 << 63) else result


class Hooks(NamedTuple):
    """Where the loaded layer's hooks are switched off (layer/start/inject.c's out)."""

    tap: int
    handlers: int
    handlers_size: int
    go_result: int  # the funnel's tail, in the layer (go/amd64.S)
    go_restart: int  # the same after making the syscall again


def _load(t: _Tracee, at: int, start: Regs, img: Image, layer_env: Mapping[str, str],
          pump: Callable[[], None] | None) -> Hooks:
    """With t stopped and start its registers: map, relocate and start the layer, making
    the syscalls this needs from `syscall; int3` written at `at` (code the program never runs
    again: its entry point). The code there and the registers are put back after."""
    saved = t.read(at, len(TRAP))
    t.write(at, TRAP)
    try:
        env_block = _environment_block(0, layer_env)  # its size; written at its place below
        args = _page_up(len(env_block) + OUT.size)
        size = img.span + args + STACK
        base = t.syscall(at, SYS_MMAP, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0)
        if base < 0:
            raise InjectError(f"mmap in the program failed: {os.strerror(-base)}")
        env_at, out_at = base + img.span, base + img.span + args - OUT.size
        t.write(base, img.relocated(base))
        t.write(env_at, _environment_block(env_at, layer_env))
        for offset, length, prot in img.protections:
            err = t.syscall(at, SYS_MPROTECT, base + offset, length, prot)
            if err < 0:
                raise InjectError(f"mprotect in the program failed: {os.strerror(-err)}")
        call = Regs.from_buffer_copy(start)
        top = base + size - 16
        t.write(top - 8, struct.pack("<Q", at + 2))  # the return address: the int3
        call.rsp, call.rip, call.rdi, call.rsi, call.rax = top - 8, base + img.entry, env_at, out_at, 0
        t.run_to_trap(call, at + 2, pump)
        hooks = Hooks(*OUT.unpack(t.read(out_at, OUT.size)))
        t.syscall(at, SYS_MUNMAP, base + img.span + args, STACK)  # the environment stays: exec/ keeps it
    finally:
        t.write(at, saved)
    _ptrace(PTRACE_SETREGS, t.pid, 0, start)
    return hooks


def load(pid: int, img: Image, layer_env: Mapping[str, str], pump: Callable[[], None] | None = None,
         in_exec: bool = False) -> None:
    """Load the static layer into pid, stopped at its exec, and detach. in_exec: the stop is
    PTRACE_EVENT_EXEC's, inside execve (else the SIGTRAP after it, PTRACE_TRACEME's)."""
    t = _Tracee(pid)
    try:
        _ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_EXITKILL)
        start = t.regs()
        entry = start.rip
        if in_exec:
            # Still inside execve, whose return would overwrite RAX: let it return onto an
            # int3 at the entry, and start from there, as the kernel left the program.
            saved = t.read(entry, 1)
            t.write(entry, TRAP[2:])
            start = t.run_to_trap(start, entry)
            start.rip = entry
            t.write(entry, saved)
        _load(t, entry, start, img, {**layer_env, "TETHER_INJECT_FS": "go"}, pump)  # FS is Go's here
        _ptrace(PTRACE_DETACH, pid, 0, t.pending)
    finally:
        t.close()


def spawn(argv: Sequence[str], executable: str, env: Mapping[str, str], layer: Path,
          layer_env: Mapping[str, str], pump: Callable[[], None] | None = None, **popen) -> subprocess.Popen:
    """Start argv (a static program) with the layer loaded before its first instruction.

    env is the program's environment, untouched; layer_env the layer's own. pump is called
    while the layer reaches the session (serve it there), every millisecond or so. popen:
    more of subprocess.Popen's arguments (stdout, cwd, ...)."""
    img = image(layer)  # a broken install is refused before the program starts
    proc = subprocess.Popen(argv, env=dict(env), executable=executable, preexec_fn=traceme, **popen)
    try:
        _, status = os.waitpid(proc.pid, 0)
        if not os.WIFSTOPPED(status):
            code = os.waitstatus_to_exitcode(status)
            proc.returncode = code
            raise InjectError(f"ptrace is refused here (the program could not start traced, status {code}), "
                              "and static programs take the layer through it at start-up. Allow it "
                              "(kernel.yama.ptrace_scope below 3; in a container, CAP_SYS_PTRACE and a "
                              "seccomp profile that permits ptrace), or use a build with cgo, which "
                              "takes LD_PRELOAD")
        load(proc.pid, img, layer_env, pump)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


class ExecWatch:
    """A hooked process's thread about to exec a static program (EXEC_NOTICE from
    layer/exec/): attached with PTRACE_SEIZE by a thread of its own, which loads the layer
    at the exec as spawn does, then lets go. Until the exec the process runs as before (its
    signals are passed on); a failed exec leaves it attached until its next exec or its end
    (execvp tries each directory of PATH). One whose exec brings another program than the
    one noticed is let go as it is."""

    def __init__(self, pid: int, tid: int, path: str, layer: Path, layer_env: Mapping[str, str]):
        self.pid, self.tid, self.path = pid, tid, path
        self.img, self.layer_env = image(layer), dict(layer_env)
        self.failure = ""  # what went wrong, for the session to say
        self._seized = threading.Event()
        self._errno = 0
        self.thread = threading.Thread(target=self._run, name=f"tether-exec-{tid}", daemon=True)

    def start(self) -> int:
        """Attach; 0, or the errno that kept it from attaching."""
        self.thread.start()
        self._seized.wait(5)
        return self._errno if self._seized.is_set() else errno.ETIMEDOUT

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def _run(self) -> None:
        try:
            _ptrace(PTRACE_SEIZE, self.tid, 0, PTRACE_O_TRACEEXEC)
        except OSError as e:
            self._errno = e.errno or 1
            return
        finally:
            self._seized.set()
        who = self.tid
        try:
            while True:
                try:
                    _, status = os.waitpid(who, WALL)
                except ChildProcessError:
                    if who == self.pid:
                        return
                    who = self.pid  # a thread that is not the leader execs as the leader
                    continue
                if not os.WIFSTOPPED(status):
                    return  # it ended
                event, sig = status >> 16, os.WSTOPSIG(status)
                if event == PTRACE_EVENT_EXEC:
                    self._exec_stop(who)
                    return
                if event == PTRACE_EVENT_STOP:
                    _ptrace(PTRACE_LISTEN, who, 0, 0)  # a group stop: it stays stopped, as it would
                else:
                    _ptrace(PTRACE_CONT, who, 0, sig)  # a signal for the program: delivered
        except (OSError, InjectError) as e:
            self.failure = f"process {self.pid} ({self.path}): the layer could not be loaded: {e}"

    def _exec_stop(self, tid: int) -> None:
        try:
            same = os.path.samefile(f"/proc/{self.pid}/exe", self.path)
        except OSError:
            same = False
        if not same:
            _ptrace(PTRACE_DETACH, tid, 0, 0)
            return
        load(self.pid, self.img, self.layer_env, in_exec=True)



class Attached:
    """A running Go program the layer was loaded into by attach(). detach() switches its
    hooks off while it runs: the trampolines then pass every call straight to the kernel,
    as a hooked program with nothing to do does."""

    def __init__(self, pid: int, hooks: Hooks):
        self.pid, self.hooks = pid, hooks

    def detach(self) -> None:
        """Tap and handler slots to zero, one aligned word at a time (a thread reading one
        sees the old function or none, both valid): tracing stops at once."""
        try:
            mem = os.open(f"/proc/{self.pid}/mem", os.O_RDWR | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            return  # it has ended
        try:
            os.pwrite(mem, bytes(8), self.hooks.tap)
            table = os.pread(mem, self.hooks.handlers_size, self.hooks.handlers)
            for at in range(0, len(table), 8):
                if table[at:at + 8] != bytes(8):
                    os.pwrite(mem, bytes(8), self.hooks.handlers + at)
        except OSError as e:
            if e.errno != errno.ESRCH:
                raise
        finally:
            os.close(mem)


def read_memory(pid: int, addr: int, n: int) -> bytes:
    """n bytes of pid's memory at addr (as root, or as its tracer)."""
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.pread(fd, n, addr)
    finally:
        os.close(fd)


def entry_of(pid: int) -> int:
    """Where pid's program starts, as loaded (AT_ENTRY)."""
    return _auxv(pid, AT_ENTRY)


def _auxv(pid: int, key: int) -> int:
    data = Path(f"/proc/{pid}/auxv").read_bytes()
    for k, v in struct.iter_unpack("<QQ", data[:len(data) // 16 * 16]):
        if k == key:
            return v
    raise InjectError(f"process {pid} has no auxv entry {key}")


def _stop_all(pid: int) -> dict[int, int]:
    """Every thread of pid attached (PTRACE_SEIZE) and stopped (PTRACE_INTERRUPT): tid -> a
    signal it stopped with, to deliver when it is let go (0: none)."""
    threads: dict[int, int] = {}
    while True:  # threads may start while the others are being stopped
        new = [int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) not in threads]
        if not new:
            break
        for tid in new:
            try:
                _ptrace(PTRACE_SEIZE, tid, 0, 0)
                _ptrace(PTRACE_INTERRUPT, tid, 0, 0)
            except OSError as e:
                if e.errno != errno.ESRCH:  # a thread that just ended
                    _let_go(threads)
                    raise
                continue
            threads[tid] = 0
    for tid in list(threads):
        _, status = os.waitpid(tid, WALL)
        if not os.WIFSTOPPED(status):
            del threads[tid]
        elif status >> 16 != PTRACE_EVENT_STOP:
            threads[tid] = os.WSTOPSIG(status)  # a signal on its way: it is the thread's
    return threads


def _let_go(threads: Mapping[int, int]) -> None:
    for tid, sig in threads.items():
        try:
            _ptrace(PTRACE_DETACH, tid, 0, sig)
        except OSError:
            pass  # it ended meanwhile


def attach(pid: int, layer: Path, layer_env: Mapping[str, str], funnel: int, patched: Sequence[tuple[int, int]],
           static: bool, pump: Callable[[], None] | None = None, tries: int = 50) -> Attached:
    """Load the layer into the running Go program pid (every thread stopped meanwhile) and let
    it go on. funnel: the address of the Go syscall funnel, whose first 42 bytes the layer
    patches; patched: other ranges it patches (vfork's). A thread in the middle of them is
    let run a moment, up to `tries` times; one blocked in the funnel's own SYSCALL (Go's
    netpoller is, in 1.21+) goes on from the layer's copy of the funnel's tail. static: FS is
    Go's own (a static program)."""
    img = image(layer)
    entry = entry_of(pid)
    env = {**layer_env, "TETHER_INJECT_FS": "go"} if static else dict(layer_env)
    for _ in range(tries):
        threads = _stop_all(pid)
        if not threads:
            raise InjectError(f"process {pid} has ended")
        try:
            regs = {tid: _regs(tid) for tid in threads}
            in_syscall = [tid for tid, r in regs.items() if r.rip == funnel + SYSCALL_END and r.orig_rax < 1 << 63]
            midway = [tid for tid, r in regs.items() if tid not in in_syscall and
                      any(lo < r.rip < hi for lo, hi in [(funnel, funnel + FUNNEL_PATCHED), *patched])]
            if not midway:
                leader = pid if pid in threads else next(iter(threads))
                t = _Tracee(leader)
                try:
                    hooks = _load(t, entry, regs[leader], img, env, pump)
                finally:
                    threads[leader] = threads[leader] or t.pending
                    t.close()
                for tid in in_syscall:
                    _go_on_after_funnel(tid, regs[tid] if tid != leader else _regs(tid), hooks)
                return Attached(pid, hooks)
        finally:
            _let_go(threads)
        time.sleep(0.02)
    raise InjectError(f"a thread of process {pid} stays in the middle of the Go function tether patches; "
                      "try again, or start the program under tether")


def _go_on_after_funnel(tid: int, r: Regs, hooks: Hooks) -> None:
    """A thread stopped in the funnel's SYSCALL, whose next instruction is now a jump: it goes
    on in the layer's copy of the funnel's tail, its syscall made again first if the kernel
    would have (the restart the kernel would do at funnel+12 is done from there)."""
    result = r.rax - (1 << 64) if r.rax >= 1 << 63 else r.rax
    if result in ERESTART:
        r.rax, r.rip = r.orig_rax, hooks.go_restart
    elif result == ERESTART_RESTARTBLOCK:
        r.rax, r.rip = SYS_RESTART_SYSCALL, hooks.go_restart
    else:
        r.rip = hooks.go_result
    r.orig_rax = (1 << 64) - 1  # the kernel's own restart would go back into the patched bytes
    _ptrace(PTRACE_SETREGS, tid, 0, r)


def _regs(tid: int) -> Regs:
    r = Regs()
    _ptrace(PTRACE_GETREGS, tid, 0, r)
    return r
