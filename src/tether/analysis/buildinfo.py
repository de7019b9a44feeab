"""Go build information: toolchain version and main module, as `go version -m` shows them.

The linker writes a `\\xff Go buildinf:` header into `.go.buildinfo` (kept by `-s -w`, so this
works on stripped binaries). Since Go 1.18 the two strings follow inline as varint-prefixed
data; older toolchains store pointers to Go string headers instead.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from .elf import ElfError, ElfFile

MAGIC = b"\xff Go buildinf:"
FLAG_BIG_ENDIAN = 0x1
FLAG_INLINE_STRINGS = 0x2
_VERSION_RE = re.compile(r"go1\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class BuildInfo:
    version: str  # as the toolchain spells it, e.g. "go1.21.13"
    path: str = ""  # main package path
    main_module: str = ""  # main module path
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def minor(self) -> int | None:
        """21 for go1.21.13; None for versions that do not parse (devel builds)."""
        m = _VERSION_RE.search(self.version)
        return int(m.group(1)) if m else None

    @property
    def patch(self) -> int:
        m = _VERSION_RE.search(self.version)
        return int(m.group(2) or 0) if m else 0


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(buf) and shift < 64:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    raise ElfError("corrupt Go build info: bad length prefix")


def _inline_strings(blob: bytes) -> tuple[str, str]:
    out = []
    pos = 32
    for _ in range(2):
        n, pos = _uvarint(blob, pos)
        if pos + n > len(blob):
            raise ElfError("corrupt Go build info: string runs past the section")
        out.append(blob[pos : pos + n].decode("utf-8", "replace"))
        pos += n
    return out[0], out[1]


def _pointer_strings(elf: ElfFile, base: int, ptr_size: int, endian: str) -> tuple[str, str]:
    """Pre-1.18 layout: two pointers to Go string headers (data pointer, length)."""
    word = "Q" if ptr_size == 8 else "I"
    out = []
    for i in range(2):
        header = elf.pointer_at(base + 16 + i * ptr_size)
        data = elf.pointer_at(header)
        (length,) = struct.unpack(endian + word, elf.read_vaddr(header + ptr_size, ptr_size))
        if length > 1 << 20:
            raise ElfError("corrupt Go build info: implausible string length")
        out.append(elf.read_vaddr(data, length).decode("utf-8", "replace"))
    return out[0], out[1]


def _parse_modinfo(modinfo: str) -> tuple[str, str, dict[str, str]]:
    # The linker wraps modinfo in 16-byte sentinels; `go version -m` strips them the same way.
    if len(modinfo) >= 33 and modinfo[-17] == "\n":
        modinfo = modinfo[16:-16]
    path = module = ""
    settings: dict[str, str] = {}
    for line in modinfo.splitlines():
        parts = line.split("\t")
        if parts[0] == "path" and len(parts) > 1:
            path = parts[1]
        elif parts[0] == "mod" and len(parts) > 1:
            module = parts[1]
        elif parts[0] == "build" and len(parts) > 1 and "=" in parts[1]:
            key, _, value = parts[1].partition("=")
            settings[key] = value
    return path, module, settings


def _locate(elf: ElfFile) -> int | None:
    """Virtual address of the build-info header, by section name or by magic in data."""
    sec = elf.section(".go.buildinfo")
    if sec is not None and sec.size >= 32:
        return sec.addr
    # Without section headers the header still sits 16-byte aligned in a writable segment.
    for seg in elf.segments:
        if seg.type != 1 or not seg.flags & 2:
            continue
        start, end = seg.offset, seg.offset + seg.filesz
        pos = elf.find(MAGIC, start, end)
        while pos >= 0:
            if (pos - start) % 16 == 0:
                return seg.vaddr + (pos - start)
            pos = elf.find(MAGIC, pos + 1, end)
    return None


def read_buildinfo(elf: ElfFile) -> BuildInfo | None:
    """Build information of a Go binary, or None when the file was not built by Go."""
    addr = _locate(elf)
    if addr is None:
        return None
    try:
        head = elf.read_vaddr(addr, 32)
    except ElfError:
        return None
    if head[:14] != MAGIC:
        return None
    ptr_size, flags = head[14], head[15]
    if flags & FLAG_INLINE_STRINGS:
        sec = elf.section(".go.buildinfo")
        size = sec.size if sec is not None and sec.addr == addr else 64 * 1024
        offset = elf.vaddr_to_offset(addr, 32)
        blob = elf.bytes_at(offset, min(size, elf.size - offset))
        version, modinfo = _inline_strings(blob)
    else:
        if ptr_size not in (4, 8):
            raise ElfError(f"corrupt Go build info: pointer size {ptr_size}")
        endian = ">" if flags & FLAG_BIG_ENDIAN else "<"
        version, modinfo = _pointer_strings(elf, addr, ptr_size, endian)
    if not version.startswith(("go", "devel")):
        raise ElfError(f"corrupt Go build info: version string {version[:40]!r}")
    path, module, settings = _parse_modinfo(modinfo)
    return BuildInfo(version=version, path=path, main_module=module, settings=settings)
