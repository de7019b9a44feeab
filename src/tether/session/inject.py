"""Load the layer into a static program at its exec, with ptrace, and let go.

A static program has no dynamic loader, so LD_PRELOAD never loads libtether.so. Instead the
program is started traced (PTRACE_TRACEME) and stops right after its exec, before its first
instruction. Then, in the stopped program:

1. the first bytes at its entry point become `syscall; int3`, and with them it makes the
   mmap calls the load needs (each stops at the int3);
2. libtether-static.so (layer/start/inject.c: no libc, no TLS) is copied in, relocated here
   (only R_X86_64_RELATIVE: the build binds its own symbols), its segments get their
   protections;
3. its entry point is called on a stack of its own with an environment of its own
   (TETHER_SESSION, LD_PRELOAD for the dynamic programs it execs, TETHER_* settings): it
   reaches the session, which the caller's `pump` serves meanwhile, and patches Go's syscall
   entry points, as libtether.so's constructor does; it returns to the int3;
4. its stack is unmapped (its environment stays: exec/ points into it), the entry point's bytes and every register are put back as the
   kernel left them, and the program is let go (PTRACE_DETACH) with any signal that came
   meanwhile.

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
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from ..analysis.elf import ElfError, ElfFile

PTRACE_TRACEME, PTRACE_CONT, PTRACE_DETACH = 0, 7, 17
PTRACE_GETREGS, PTRACE_SETREGS, PTRACE_SETOPTIONS = 12, 13, 0x4200
PTRACE_SEIZE, PTRACE_LISTEN = 0x4206, 0x4208
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


def _traceme() -> None:  # in the child, between fork and exec
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
        r = Regs()
        _ptrace(PTRACE_GETREGS, self.pid, 0, r)
        return r

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


def load(pid: int, img: Image, layer_env: Mapping[str, str], pump: Callable[[], None] | None = None,
         in_exec: bool = False) -> None:
    """Load the static layer into pid, stopped at its exec, and detach. in_exec: the stop is
    PTRACE_EVENT_EXEC's, inside execve (else the SIGTRAP after it, PTRACE_TRACEME's)."""
    t = _Tracee(pid)
    try:
        _ptrace(PTRACE_SETOPTIONS, pid, 0, PTRACE_O_EXITKILL)
        start = t.regs()
        entry = start.rip
        saved = t.read(entry, len(TRAP))
        if in_exec:
            # Still inside execve, whose return would overwrite RAX: let it return onto an
            # int3 at the entry, and start from there, as the kernel left the program.
            t.write(entry, TRAP[2:])
            start = t.run_to_trap(start, entry)
            start.rip = entry
        t.write(entry, TRAP)
        env_block = _environment_block(0, layer_env)  # its size; written at its place below
        args = _page_up(len(env_block))
        size = img.span + args + STACK
        base = t.syscall(entry, SYS_MMAP, 0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0)
        if base < 0:
            raise InjectError(f"mmap in the program failed: {os.strerror(-base)}")
        t.write(base, img.relocated(base))
        t.write(base + img.span, _environment_block(base + img.span, layer_env))
        for offset, length, prot in img.protections:
            err = t.syscall(entry, SYS_MPROTECT, base + offset, length, prot)
            if err < 0:
                raise InjectError(f"mprotect in the program failed: {os.strerror(-err)}")
        call = Regs.from_buffer_copy(start)
        top = base + size - 16
        t.write(top - 8, struct.pack("<Q", entry + 2))  # the return address: the int3
        call.rsp, call.rip, call.rdi, call.rax = top - 8, base + img.entry, base + img.span, 0
        t.run_to_trap(call, entry + 2, pump)
        t.syscall(entry, SYS_MUNMAP, base + img.span + args, STACK)  # the environment stays: exec/ keeps it
        t.write(entry, saved)
        _ptrace(PTRACE_SETREGS, pid, 0, start)
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
    proc = subprocess.Popen(argv, env=dict(env), executable=executable, preexec_fn=_traceme, **popen)
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

