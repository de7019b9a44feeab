"""A small, bounds-checked ELF reader: headers, sections, segments, notes, dynamic tags.

Only what binary analysis needs, read lazily from a memory map so a 50 MB binary costs no
copy. Every read is checked against the file size; malformed input raises ElfError with a
one-line reason, never IndexError or struct.error.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from . import ELF_MAGIC, ElfError  # noqa: F401  (part of this module's interface)

ET_NAMES = {1: "REL", 2: "EXEC", 3: "DYN", 4: "CORE"}
MACHINE_NAMES = {3: "x86", 40: "arm", 62: "x86-64", 183: "aarch64", 243: "riscv64"}

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
SHT_SYMTAB, SHT_RELA, SHT_NOTE, SHT_NOBITS = 2, 4, 7, 8
DT_NULL, DT_NEEDED, DT_SONAME, DT_STRTAB, DT_FLAGS_1 = 0, 1, 14, 5, 0x6FFFFFFB
DF_1_PIE = 0x08000000
# Relocation types that mean "load bias + addend": what position-independent Go code uses
# for every absolute pointer in its data.
RELATIVE_TYPES = {62: 8, 183: 1027}  # machine -> R_X86_64_RELATIVE, R_AARCH64_RELATIVE


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    entsize: int


@dataclass(frozen=True)
class Segment:
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


class ElfFile:
    """An ELF file opened read-only. Use as a context manager or call close()."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                if size == 0:
                    raise ElfError("empty file, not an ELF binary")
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise ElfError(f"cannot read: {e.strerror or e}") from None
        self.data = memoryview(self._map)
        self.size = len(self._map)
        self._parse_header()

    def close(self) -> None:
        self.data.release()
        self._map.close()

    def __enter__(self) -> ElfFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- raw reads ---------------------------------------------------------------------------
    def bytes_at(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ElfError(f"truncated: wants bytes {offset:#x}..{offset + size:#x} of {self.size:#x}")
        return bytes(self.data[offset : offset + size])

    def unpack(self, fmt: str, offset: int) -> tuple:
        fmt = self._endian + fmt
        if offset < 0 or offset + struct.calcsize(fmt) > self.size:
            raise ElfError(f"truncated: structure at {offset:#x} runs past the end of the file")
        return struct.unpack_from(fmt, self.data, offset)

    def find(self, needle: bytes, start: int, end: int | None = None) -> int:
        """Offset of `needle` in file bytes [start, end), or -1; any bounds are accepted."""
        end = self.size if end is None else min(end, self.size)
        if start < 0 or start >= end:
            return -1
        return self._map.find(needle, start, end)

    def cstring(self, offset: int, limit: int = 4096) -> str:
        end = self.find(b"\0", offset, offset + limit)
        if end < 0:
            raise ElfError(f"unterminated string at {offset:#x}")
        return bytes(self.data[offset:end]).decode("utf-8", "replace")

    # -- header ------------------------------------------------------------------------------
    def _parse_header(self) -> None:
        if self.size < 16 or self.data[:4] != ELF_MAGIC:
            raise ElfError("not an ELF file (no \\x7fELF magic)")
        ei_class, ei_data = self.data[4], self.data[5]
        if ei_class not in (1, 2):
            raise ElfError(f"corrupt ELF header: class byte {ei_class}")
        if ei_data not in (1, 2):
            raise ElfError(f"corrupt ELF header: data-encoding byte {ei_data}")
        self.bits = 32 if ei_class == 1 else 64
        self._endian = "<" if ei_data == 1 else ">"
        self._word = "I" if self.bits == 32 else "Q"
        self.ptr_size = self.bits // 8
        w = self._word
        (self.e_type, self.e_machine, _, self.e_entry, self.e_phoff, self.e_shoff, _, _,
         self.e_phentsize, self.e_phnum, self.e_shentsize, self.e_shnum, self.e_shstrndx
         ) = self.unpack(f"HHI{w}{w}{w}IHHHHHH", 16)
        self.little_endian = ei_data == 1

    @property
    def type_name(self) -> str:
        return ET_NAMES.get(self.e_type, f"type {self.e_type}")

    @property
    def machine_name(self) -> str:
        return MACHINE_NAMES.get(self.e_machine, f"machine {self.e_machine}")

    # -- segments and sections ---------------------------------------------------------------
    @cached_property
    def segments(self) -> list[Segment]:
        if self.e_phnum == 0:
            return []
        fmt = "IIQQQQQQ" if self.bits == 64 else "IIIIIIII"
        if self.e_phentsize < struct.calcsize(fmt) or self.e_phnum > 0xFFFF:
            raise ElfError(f"corrupt program header table (entry size {self.e_phentsize})")
        out = []
        for i in range(self.e_phnum):
            f = self.unpack(fmt, self.e_phoff + i * self.e_phentsize)
            if self.bits == 64:
                p_type, p_flags, off, vaddr, _, filesz, memsz, _ = f
            else:
                p_type, off, vaddr, _, filesz, memsz, p_flags, _ = f
            out.append(Segment(p_type, p_flags, off, vaddr, filesz, memsz))
        return out

    @cached_property
    def sections(self) -> list[Section]:
        if self.e_shnum == 0 or self.e_shoff == 0:
            return []
        fmt = "IIQQQQIIQQ" if self.bits == 64 else "IIIIIIIIII"
        if self.e_shentsize < struct.calcsize(fmt):
            raise ElfError(f"corrupt section header table (entry size {self.e_shentsize})")
        raw = [self.unpack(fmt, self.e_shoff + i * self.e_shentsize) for i in range(self.e_shnum)]
        if not 0 <= self.e_shstrndx < len(raw):
            raise ElfError(f"corrupt ELF header: section-name table index {self.e_shstrndx}")
        names_off = raw[self.e_shstrndx][4]
        out = []
        for name, typ, flags, addr, off, size, _, _, _, entsize in raw:
            out.append(Section(self.cstring(names_off + name, 256), typ, flags, addr, off, size, entsize))
        return out

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None

    def section_bytes(self, sec: Section) -> memoryview:
        if sec.type == SHT_NOBITS:
            return memoryview(b"")
        if sec.offset + sec.size > self.size:
            raise ElfError(f"truncated: section {sec.name} runs past the end of the file")
        return self.data[sec.offset : sec.offset + sec.size]

    # -- addresses ---------------------------------------------------------------------------
    def vaddr_to_offset(self, vaddr: int, size: int = 1) -> int:
        """File offset of `vaddr`, which must lie in the file-backed part of a PT_LOAD."""
        for seg in self.segments:
            if seg.type == PT_LOAD and seg.vaddr <= vaddr and vaddr + size <= seg.vaddr + seg.filesz:
                return seg.offset + (vaddr - seg.vaddr)
        raise ElfError(f"address {vaddr:#x} is not backed by the file")

    def read_vaddr(self, vaddr: int, size: int) -> bytes:
        return self.bytes_at(self.vaddr_to_offset(vaddr, size), size)

    @cached_property
    def link_base(self) -> int:
        """Lowest PT_LOAD address, page aligned: what a load bias is added to."""
        loads = [s.vaddr for s in self.segments if s.type == PT_LOAD]
        return (min(loads) & ~0xFFF) if loads else 0

    def pointer_at(self, vaddr: int) -> int:
        """The pointer stored at `vaddr` as the dynamic loader will see it, before load bias.

        In position-independent files the stored word may be a placeholder and the real value
        the addend of a RELATIVE relocation on that address.
        """
        rel = self._relative_addend(vaddr)
        if rel is not None:
            return rel
        (value,) = struct.unpack(self._endian + self._word, self.read_vaddr(vaddr, self.ptr_size))
        return value

    @cached_property
    def _rela_tables(self) -> list[bytes]:
        """Contents of the RELA sections that can hold RELATIVE relocations (64-bit only)."""
        if self.e_machine not in RELATIVE_TYPES or self.bits != 64:
            return []
        return [bytes(self.section_bytes(s)) for s in self.sections
                if s.type == SHT_RELA and s.entsize == 24]

    def _find_rela(self, needle: bytes, phase: int):
        """Yield (r_offset, r_info, r_addend) of RELA entries holding `needle` at byte `phase`."""
        for blob in self._rela_tables:
            pos = blob.find(needle)
            while pos >= 0:
                if pos % 24 == phase:
                    yield struct.unpack_from(self._endian + "QQq", blob, pos - phase)
                pos = blob.find(needle, pos + 1)

    def find_relative_relocations_to(self, target: int) -> list[int]:
        """Addresses of words that a RELATIVE relocation sets to `target` (+ load bias)."""
        rtype = RELATIVE_TYPES.get(self.e_machine)
        needle = struct.pack(self._endian + "q", target)
        return [off for off, info, _ in self._find_rela(needle, 16) if info & 0xFFFFFFFF == rtype]

    def _relative_addend(self, vaddr: int) -> int | None:
        rtype = RELATIVE_TYPES.get(self.e_machine)
        if rtype is None or self.e_type != 3:
            return None
        needle = struct.pack(self._endian + "QQ", vaddr, rtype)
        for _, _, addend in self._find_rela(needle, 0):
            return addend
        return None

    # -- interpreter, dynamic section, notes -------------------------------------------------
    @cached_property
    def interpreter(self) -> str | None:
        for seg in self.segments:
            if seg.type == PT_INTERP:
                return self.cstring(seg.offset, max(1, seg.filesz))
        return None

    @cached_property
    def dynamic(self) -> list[tuple[int, int]]:
        for seg in self.segments:
            if seg.type == PT_DYNAMIC:
                fmt = "qQ" if self.bits == 64 else "iI"
                step = struct.calcsize(fmt)
                out = []
                for i in range(min(seg.filesz // step, 4096)):
                    tag, val = self.unpack(fmt, seg.offset + i * step)
                    if tag == DT_NULL:
                        break
                    out.append((tag, val))
                return out
        return []

    def _dynamic_strings(self, tag: int) -> list[str]:
        strtab = next((v for t, v in self.dynamic if t == DT_STRTAB), None)
        if strtab is None:
            return []
        base = self.vaddr_to_offset(strtab)
        return [self.cstring(base + v) for t, v in self.dynamic if t == tag]

    @cached_property
    def needed(self) -> list[str]:
        return self._dynamic_strings(DT_NEEDED)

    @cached_property
    def soname(self) -> str | None:
        names = self._dynamic_strings(DT_SONAME)
        return names[0] if names else None

    @property
    def is_pie(self) -> bool:
        """An executable that loads at a random address: ET_DYN marked DF_1_PIE, or (older
        linkers) with an interpreter and no soname. libc.so.6 has an interpreter too."""
        if self.e_type != 3:
            return False
        flags_1 = next((v for t, v in self.dynamic if t == DT_FLAGS_1), 0)
        return bool(flags_1 & DF_1_PIE) or (self.interpreter is not None and self.soname is None)

    @property
    def is_shared_object(self) -> bool:
        return self.e_type == 3 and not self.is_pie

    @property
    def has_symtab(self) -> bool:
        return any(s.type == SHT_SYMTAB for s in self.sections)

    def notes(self) -> list[tuple[str, int, bytes]]:
        """(owner, type, descriptor) of every note in SHT_NOTE sections."""
        out = []
        for sec in self.sections:
            if sec.type != SHT_NOTE:
                continue
            blob = bytes(self.section_bytes(sec))
            pos = 0
            while pos + 12 <= len(blob):
                namesz, descsz, ntype = struct.unpack_from(self._endian + "III", blob, pos)
                name_end = pos + 12 + namesz
                desc_at = pos + 12 + ((namesz + 3) & ~3)
                desc_end = desc_at + descsz
                if desc_end > len(blob):
                    break
                owner = blob[pos + 12 : name_end].rstrip(b"\0").decode("ascii", "replace")
                out.append((owner, ntype, blob[desc_at:desc_end]))
                pos = desc_at + ((descsz + 3) & ~3)
        return out

    @cached_property
    def build_ids(self) -> dict[str, str]:
        """{'gnu': hex, 'go': text} for whichever build-id notes are present."""
        ids: dict[str, str] = {}
        for owner, ntype, desc in self.notes():
            if owner == "GNU" and ntype == 3:
                ids["gnu"] = desc.hex()
            elif owner == "Go" and ntype == 4:
                ids["go"] = desc.decode("ascii", "replace")
        return ids
