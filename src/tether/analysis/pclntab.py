"""Go's function table (`.gopclntab`): function names, entry addresses, sizes and flags.

The table survives `-ldflags=-s -w`, so stripped binaries are analysed exactly like unstripped
ones. Layouts (runtime/symtab.go, internal/abi/symtab.go of each toolchain):

    pcHeader   magic u32 | pad u8 u8 | minLC u8 | ptrSize u8 | nfunc int | nfiles uint |
               textStart uintptr (unused since 1.26) | funcnameOffset | cuOffset |
               filetabOffset | pctabOffset | pclnOffset              (all uintptr)
    functab    nfunc+1 x { entryOff u32, funcOff u32 }   at pclnOffset (1.18+)
    _func      entryOff u32 | nameOff i32 | args i32 | deferreturn u32 | pcsp, pcfile, pcln,
               npcdata, cuOffset u32 | startLine i32 (1.20+) | funcID u8 | flag u8 | ...

Entry addresses are `moduledata.text + entryOff`. The header's textStart needs a relocation in
position-independent files and is gone in 1.26, and with external linking it differs from the
`.text` section start (C start-up code comes first), so the text base is read from the
module data (`runtime.firstmoduledata`), found as the word that points at the table.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .elf import PT_LOAD, ElfError, ElfFile

MAGIC_GO118 = 0xFFFFFFF0  # 1.18 - 1.19
MAGIC_GO120 = 0xFFFFFFF1  # 1.20 and later: _func gained startLine
MAGIC_GO116 = 0xFFFFFFFA  # 1.16 - 1.17: functab holds full pointers; not analysed
MAGIC_GO12 = 0xFFFFFFFB  # 1.2 - 1.15; not analysed
KNOWN_MAGICS = {MAGIC_GO118: "1.18-1.19", MAGIC_GO120: "1.20+", MAGIC_GO116: "1.16-1.17",
                MAGIC_GO12: "1.2-1.15"}

FUNC_FLAG_ASM = 1 << 2  # funcFlag_ASM (1.19) / abi.FuncFlagAsm: body written in assembly
# moduledata: pcHeader ptr, six slices (3 words each), findfunctab, minpc, maxpc, then text.
MODULEDATA_TEXT_WORD = 1 + 6 * 3 + 3


@dataclass(frozen=True)
class GoFunc:
    name: str
    address: int  # link-time virtual address of the entry
    size: int  # bytes up to the next function's entry
    flag: int
    func_id: int

    @property
    def is_asm(self) -> bool:
        return bool(self.flag & FUNC_FLAG_ASM)


class PclnTable:
    """Parsed header of a 1.18+ function table plus the module's text base."""

    def __init__(self, elf: ElfFile):
        self.elf = elf
        self.addr, self.offset = self._locate()
        hdr = elf.bytes_at(self.offset, 8)
        self.magic, pad1, pad2, self.min_lc, self.ptr_size = struct.unpack(
            elf._endian + "IBBBB", hdr)
        if self.magic in (MAGIC_GO116, MAGIC_GO12):
            raise ElfError(
                f"Go function table of Go {KNOWN_MAGICS[self.magic]} is not analysed "
                "(tether needs Go 1.19 or newer)")
        if self.magic not in KNOWN_MAGICS or pad1 or pad2 or self.ptr_size not in (4, 8):
            raise ElfError("corrupt Go function table header")
        word = "Q" if self.ptr_size == 8 else "I"
        fields = elf.unpack(word * 8, self.offset + 8)
        (self.nfunc, _nfiles, _text_start, self.funcname_off, _cu_off, _filetab_off,
         _pctab_off, self.pcln_off) = fields
        if not 0 < self.nfunc < 1 << 24:
            raise ElfError(f"corrupt Go function table: {self.nfunc} functions")
        # funcID/flag follow cuOffset (1.18-1.19) or startLine (1.20+).
        self._id_at = 36 if self.magic == MAGIC_GO118 else 40
        self._ftab = self.offset + self.pcln_off
        self._names = self.offset + self.funcname_off
        ftab_end = self._ftab + (self.nfunc + 1) * 8
        if ftab_end > elf.size or self._names >= elf.size:
            raise ElfError("truncated Go function table")
        self.text = self._text_base()

    # -- locating ----------------------------------------------------------------------------
    def _locate(self) -> tuple[int, int]:
        elf = self.elf
        for name in (".gopclntab", ".data.rel.ro.gopclntab"):
            sec = elf.section(name)
            if sec is not None and sec.size >= 64:
                return sec.addr, sec.offset
        # Externally linked PIE and c-shared files merge the table into .data.rel.ro: find
        # the header by its magic and check it is self-consistent.
        for seg in elf.segments:
            if seg.type != PT_LOAD:
                continue
            for magic in (MAGIC_GO120, MAGIC_GO118, MAGIC_GO116, MAGIC_GO12):
                needle = struct.pack(elf._endian + "IBB", magic, 0, 0)
                end = min(seg.offset + seg.filesz, elf.size)
                pos = elf.find(needle, seg.offset, end)
                while pos >= 0:
                    if (pos - seg.offset) % 8 == 0 and self._plausible_header(pos, end):
                        return seg.vaddr + (pos - seg.offset), pos
                    pos = elf.find(needle, pos + 1, end)
        raise ElfError("Go function table (.gopclntab) not found")

    def _plausible_header(self, pos: int, end: int) -> bool:
        d = self.elf.data
        if pos + 72 > end or d[pos + 6] not in (1, 2, 4) or d[pos + 7] != self.elf.ptr_size:
            return False
        if self.elf.ptr_size != 8:
            return False
        nfunc, _, _, name_off, _, _, _, pcln_off = struct.unpack_from(
            self.elf._endian + "8Q", d, pos + 8)
        return 0 < nfunc < 1 << 24 and 0 < name_off < pcln_off < end - pos

    def _text_base(self) -> int:
        """moduledata.text: the address that functab entry offsets are relative to."""
        elf = self.elf
        sec = elf.section(".go.module")
        candidates = [sec.addr] if sec is not None else []
        candidates += elf.find_relative_relocations_to(self.addr)
        candidates += self._words_pointing_at(self.addr)
        for md in candidates:
            try:
                if elf.pointer_at(md) != self.addr:
                    continue
                # Second check: the funcnametab slice points just past the header as stated.
                if elf.pointer_at(md + self.ptr_size) != self.addr + self.funcname_off:
                    continue
                return elf.pointer_at(md + MODULEDATA_TEXT_WORD * self.ptr_size)
            except ElfError:
                continue
        raise ElfError("Go module data (runtime.firstmoduledata) not found")

    def _words_pointing_at(self, target: int) -> list[int]:
        """Aligned words in writable file-backed data holding `target` (non-PIE files)."""
        elf = self.elf
        needle = struct.pack(elf._endian + ("Q" if self.ptr_size == 8 else "I"), target)
        out = []
        for seg in elf.segments:
            if seg.type != PT_LOAD or not seg.flags & 2:
                continue
            end = min(seg.offset + seg.filesz, elf.size)
            pos = elf.find(needle, seg.offset, end)
            while pos >= 0:
                if (pos - seg.offset) % self.ptr_size == 0:
                    out.append(seg.vaddr + pos - seg.offset)
                pos = elf.find(needle, pos + 1, end)
        return out

    # -- functions ---------------------------------------------------------------------------
    def _name_offsets(self, name: str) -> set[int]:
        """Offsets in funcnametab of the NUL-terminated string `name`."""
        elf = self.elf
        needle = b"\0" + name.encode() + b"\0"
        out = set()
        if elf.data[self._names : self._names + len(needle) - 1] == needle[1:]:
            out.add(0)
        limit = self._names + (self.pcln_off - self.funcname_off)
        pos = elf.find(needle, self._names, limit)
        while pos >= 0:
            out.add(pos + 1 - self._names)
            pos = elf.find(needle, pos + 1, limit)
        return out

    def find(self, names: list[str]) -> dict[str, list[GoFunc]]:
        """Every function entry named in `names` (a name may have several: ABI wrappers)."""
        wanted: dict[int, str] = {}
        for name in names:
            for off in self._name_offsets(name):
                wanted[off] = name
        result: dict[str, list[GoFunc]] = {n: [] for n in names}
        if not wanted:
            return result
        elf, e = self.elf, self.elf._endian
        ftab = elf.bytes_at(self._ftab, (self.nfunc + 1) * 8)
        entries = struct.unpack(e + "%dI" % (2 * (self.nfunc + 1)), ftab)
        funcs_base = self._ftab  # funcOff is relative to the start of pclntable
        data = elf.data
        unpack_name = struct.Struct(e + "i").unpack_from
        for i in range(self.nfunc):
            fpos = funcs_base + entries[2 * i + 1]
            if fpos + self._id_at + 2 > elf.size:
                raise ElfError("truncated Go function table entry")
            (name_off,) = unpack_name(data, fpos + 4)
            name = wanted.get(name_off)
            if name is None:
                continue
            func_id, flag = data[fpos + self._id_at], data[fpos + self._id_at + 1]
            entry, nxt = entries[2 * i], entries[2 * i + 2]
            result[name].append(GoFunc(name, self.text + entry, max(0, nxt - entry), flag, func_id))
        return result
