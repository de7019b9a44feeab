"""The hook plan: what the layer patches in one binary, and whether it can be hooked at all.

`analyse(path)` is the single entry point. It never raises for a readable ELF file that tether
cannot hook; it returns a Report whose verdict names the reason and the fix. It raises
ElfError only for files that are not ELF, or are truncated or corrupt.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from .buildinfo import BuildInfo, read_buildinfo
from .elf import ElfError, ElfFile
from .pclntab import GoFunc, PclnTable

OLDEST_MINOR, NEWEST_MINOR = 19, 27
TESTED_MINORS = {19, 21, 22, 23, 24, 25, 26, 27}
PATCH_BYTES = 14  # jmp [rip+0]; .quad target — reaches any address, clobbers nothing

# The lowest function every syscall-package call reaches ("the funnel"), by Go minor version.
FUNNELS = [
    (19, 22, "runtime/internal/syscall.Syscall6"),
    (23, 25, "internal/runtime/syscall.Syscall6"),
    (26, 27, "internal/runtime/syscall/linux.Syscall6"),
]
VFORK = "syscall.rawVforkSyscall"  # os/exec's clone(CLONE_VM|CLONE_VFORK); assembly, ABI0
# The funnel's first instructions on every version (asm_linux_amd64.s): move Go's registers
# into the kernel's, then SYSCALL. The trampoline relies on exactly this register map.
FUNNEL_CODE = bytes.fromhex(
    "4989f2"  # MOVQ SI, R10   a4
    "4889fa"  # MOVQ DI, DX    a3
    "4889ce"  # MOVQ CX, SI    a2
    "4889df"  # MOVQ BX, DI    a1
    "0f05"  # SYSCALL       num already in AX
)
# rawVforkSyscall loads its stack arguments first: a1 (clone flags), then a2, a3 as the
# version has them (1.19: a1; 1.21: a1, a2; 1.22+: a1, a2, a3).
VFORK_ARG_LOADS = [bytes.fromhex("488b7c2410"),  # MOVQ a1+8(FP), DI
                   bytes.fromhex("488b742418"),  # MOVQ a2+16(FP), SI
                   bytes.fromhex("488b542420")]  # MOVQ a3+24(FP), DX
CODE_BYTES = 16  # recorded per function; the layer patches only if memory still holds them
# The funnel carries three 14-byte jumps (layer/go/amd64.S): its entry, and the two points
# entersyscall and exitsyscall return to, which must lie inside a Go function whose frame
# is empty there so that Go's unwinder finds the funnel's caller. Its code (50-54 bytes on
# 1.19-1.27) must cover them.
FUNNEL_MIN_CODE = 3 * PATCH_BYTES
# g and m field offsets the trampoline reads to tell a user goroutine that is not yet in a
# syscall (raw calls) from one that is, or from g0 / gsignal. From DWARF of our builds
# (docs/go-internals.md): (first minor, last minor, (g.m, m.curg, g.syscallsp)).
G_OFFSETS = [
    (19, 24, (0x30, 0xC0, 0x70)),  # 1.20 inferred: 1.19 and 1.21 agree
    (25, 27, (0x30, 0xB8, 0x68)),  # 1.25: gobuf lost its ret field
]
ASMCGOCALL = "runtime.asmcgocall"
ENTERSYSCALL, EXITSYSCALL = "runtime.entersyscall", "runtime.exitsyscall"


@dataclass
class Verdict:
    supported: bool
    kind: str  # go-executable, go-c-shared, go-static, libc-program, libc-shared-library, static, other
    reason: str
    fix: str = ""
    notes: list[str] = field(default_factory=list)
    hook: str = ""  # how the layer gets in: preload (LD_PRELOAD), inject (at exec); "" if it cannot


@dataclass
class Function:
    role: str  # syscall-funnel, vfork, asmcgocall, entersyscall, exitsyscall
    name: str
    abi: str  # ABI0 (stack-based) or ABIInternal (register-based)
    address: int  # link-time virtual address
    offset: int  # address - link base: add the load bias of PIE / shared objects
    size: int
    code: str  # hex of the first CODE_BYTES bytes, checked by the layer before patching
    args: int  # syscall arguments the function passes to the kernel (hooks only; else 0)


@dataclass
class GoInfo:
    version: str
    path: str
    main_module: str
    text_start: int
    pclntab_address: int
    settings: dict[str, str]
    g_offsets: dict[str, int]  # g.m, m.curg, g.syscallsp for the layer; empty if unknown


@dataclass
class Report:
    path: str
    elf_class: int
    machine: str
    elf_type: str
    interpreter: str | None
    linkage: str  # dynamic | static
    pie: bool
    shared_object: bool
    stripped: bool
    build_id: dict[str, str]
    link_base: int
    go: GoInfo | None
    hooks: list[Function]  # functions the layer patches
    runtime: list[Function]  # functions the trampolines call
    verdict: Verdict

    def to_json(self) -> dict:
        return {"schema": 1, **asdict(self)}


def g_offsets(minor: int) -> tuple[int, int, int] | None:
    for lo, hi, offsets in G_OFFSETS:
        if lo <= minor <= hi:
            return offsets
    return None


def funnel_name(minor: int) -> str | None:
    for lo, hi, name in FUNNELS:
        if lo <= minor <= hi:
            return name
    return None


class _Planner:
    def __init__(self, elf: ElfFile, info: BuildInfo):
        self.elf, self.info = elf, info
        self.problems: list[str] = []
        self.wrapper_ids: set[int] = set()

    def _function(self, role: str, found: list[GoFunc], asm: bool, abi: str) -> Function | None:
        """The single entry of the wanted kind: assembly bodies vs compiler-made wrappers."""
        matches = [f for f in found if f.is_asm == asm and f.func_id not in self.wrapper_ids]
        if len(matches) != 1:
            what = "assembly" if asm else "Go"
            name = found[0].name if found else role
            self.problems.append(
                f"{name}: expected one {what} body in the function table, found {len(matches)}")
            return None
        f = matches[0]
        if role in ("syscall-funnel", "vfork") and f.size < PATCH_BYTES:
            self.problems.append(f"{f.name} is {f.size} bytes, too short for a {PATCH_BYTES}-byte patch")
            return None
        code = self.elf.read_vaddr(f.address, min(CODE_BYTES, f.size))
        args = 0
        if role == "syscall-funnel":
            args = 6
            if not code.startswith(FUNNEL_CODE):
                self.problems.append(f"{f.name} does not start with the expected register moves "
                                     f"and SYSCALL (found {code.hex()})")
                return None
            body = self.elf.read_vaddr(f.address, f.size).rstrip(b"\xcc")  # INT3 padding
            if len(body) < FUNNEL_MIN_CODE:
                self.problems.append(f"{f.name} has {len(body)} bytes of code, fewer than the "
                                     f"{FUNNEL_MIN_CODE} its three jumps need")
                return None
        elif role == "vfork":
            rest = self.elf.read_vaddr(f.address, 5 * len(VFORK_ARG_LOADS))
            while args < len(VFORK_ARG_LOADS) and rest[5 * args:5 * args + 5] == VFORK_ARG_LOADS[args]:
                args += 1
            if args == 0:
                self.problems.append(f"{f.name} does not start by loading its clone flags "
                                     f"(found {code.hex()})")
                return None
        return Function(role, f.name, abi, f.address, f.address - self.elf.link_base, f.size,
                        code.hex(), args)

    def plan(self) -> tuple[PclnTable, list[Function], list[Function]]:
        table = PclnTable(self.elf)
        funnel = funnel_name(self.info.minor or 0)
        names = [n for n in (funnel, VFORK, ASMCGOCALL, ENTERSYSCALL, EXITSYSCALL) if n]
        found = table.find(names)
        # Compiler-made ABI wrappers share their target's name; asmcgocall always has one,
        # which tells this binary's wrapper funcID (21, 22 or 23 depending on the version).
        self.wrapper_ids = {f.func_id for f in found[ASMCGOCALL] if not f.is_asm}
        hooks, runtime = [], []
        if funnel is not None:
            hooks.append(self._function("syscall-funnel", found[funnel], True, "ABIInternal"))
        if found[VFORK]:  # only linked in when the program can start processes
            hooks.append(self._function("vfork", found[VFORK], True, "ABI0"))
        runtime.append(self._function("asmcgocall", found[ASMCGOCALL], True, "ABI0"))
        runtime.append(self._function("entersyscall", found[ENTERSYSCALL], False, "ABIInternal"))
        runtime.append(self._function("exitsyscall", found[EXITSYSCALL], False, "ABIInternal"))
        return table, [h for h in hooks if h], [r for r in runtime if r]


def _go_verdict(elf: ElfFile, info: BuildInfo, problems: list[str], shared: bool) -> Verdict:
    minor = info.minor
    kind = "go-c-shared" if shared else "go-executable"
    if elf.e_machine != 62:
        return Verdict(False, kind, f"{elf.machine_name} Go binaries are not supported yet",
                       "run tether on an x86-64 build of the program")
    if minor is None:
        return Verdict(False, kind, f"unrecognised Go version {info.version!r}",
                       "build the program with a released Go toolchain (1.19 to 1.27)")
    if minor < OLDEST_MINOR:
        return Verdict(False, kind, f"built with {info.version}; tether needs Go 1.{OLDEST_MINOR} or newer",
                       f"rebuild with Go 1.{OLDEST_MINOR}-1.{NEWEST_MINOR}")
    if minor > NEWEST_MINOR:
        return Verdict(False, kind,
                       f"built with {info.version}, newer than the newest Go tether knows (1.{NEWEST_MINOR})",
                       "upgrade tether, or rebuild with an older Go")
    if problems:
        return Verdict(False, kind, "hook plan incomplete: " + "; ".join(problems),
                       "report this binary's `tether inspect --json` output as a tether bug")
    notes = []
    if minor not in TESTED_MINORS:
        notes.append(f"Go 1.{minor} is inside the supported range but not in tether's test matrix")
    if shared:
        return Verdict(True, kind, "Go c-shared library: hooked when a hooked process loads it", notes=notes,
                       hook="preload")
    if elf.interpreter is None:
        return Verdict(True, "go-static", "statically linked Go program: the layer is injected at exec "
                       "(ptrace during start-up only, none after)", notes=notes, hook="inject")
    return Verdict(True, kind, "dynamically linked Go program: hooked through LD_PRELOAD", notes=notes,
                   hook="preload")


def _other_verdict(elf: ElfFile, shared: bool) -> Verdict:
    if elf.e_machine != 62:
        return Verdict(False, "other", f"{elf.machine_name} binaries are not supported yet",
                       "run tether on an x86-64 build of the program")
    if elf.e_type not in (2, 3):
        return Verdict(False, "other", f"{elf.type_name} file, not a program or shared library")
    if shared:
        return Verdict(True, "libc-shared-library",
                       "shared library: loaded into hooked processes, reached through libc", hook="preload")
    if elf.interpreter is None:
        return Verdict(False, "static", "statically linked, and not Go: its libc cannot be hooked "
                       "(LD_PRELOAD cannot load into it, and tether patches only Go's own syscall entry)",
                       "use a dynamically linked build of the program")
    return Verdict(True, "libc-program", "dynamically linked program: hooked through libc and LD_PRELOAD",
                   hook="preload")


def analyse(path: str | Path) -> Report:
    with ElfFile(path) as elf:
        shared = elf.is_shared_object
        info = read_buildinfo(elf)
        go = None
        hooks: list[Function] = []
        runtime: list[Function] = []
        if info is not None:
            problems: list[str] = []
            if OLDEST_MINOR <= (info.minor or 0) <= NEWEST_MINOR:
                planner = _Planner(elf, info)
                table, hooks, runtime = planner.plan()
                problems = planner.problems
                offsets = dict(zip(("g_m", "m_curg", "g_syscallsp"), g_offsets(info.minor), strict=True))
                go = GoInfo(info.version, info.path, info.main_module, table.text, table.addr,
                            info.settings, offsets)
            else:
                go = GoInfo(info.version, info.path, info.main_module, 0, 0, info.settings, {})
            verdict = _go_verdict(elf, info, problems, shared)
        else:
            verdict = _other_verdict(elf, shared)
        return Report(
            path=str(path), elf_class=elf.bits, machine=elf.machine_name, elf_type=elf.type_name,
            interpreter=elf.interpreter, linkage="dynamic" if elf.interpreter or elf.dynamic else "static",
            pie=elf.is_pie, shared_object=shared, stripped=not elf.has_symtab,
            build_id=elf.build_ids, link_base=elf.link_base, go=go, hooks=hooks, runtime=runtime,
            verdict=verdict)


__all__ = ["analyse", "Report", "Verdict", "Function", "GoInfo", "ElfError", "funnel_name"]
