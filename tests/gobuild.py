"""Build tether's Go test programs per (Go version, variant), cached by a hash of their inputs.

    from gobuild import build, build_c_host
    exe = build("1.27", "default")          # tests/go/probe built by Go 1.27, dynamic cgo binary
    lib = build("1.21", "cshared")          # tests/go/cshared as a .so (header beside it)
    host = build_c_host()                   # tests/native/cshared_host.c, dlopens such a .so

Variants (all built with -buildvcs=false):

    default    CGO_ENABLED=1; the program imports net, so it links libc: has a PT_INTERP
    stripped   default plus -ldflags="-s -w": no .symtab, no DWARF
    pie        CGO_ENABLED=1 -buildmode=pie: ET_DYN with a PT_INTERP
    static     CGO_ENABLED=0: no PT_INTERP
    cshared    CGO_ENABLED=1 -buildmode=c-shared: lib<program>.so and lib<program>.h

Artifacts live in `cache_dir()/builds/<program>-<variant>-go<version>-<hash>/`, where the hash
covers every file of the program's source directory, the toolchain's pinned release and the
VERSION file of its GOROOT, the variant's flags and environment, and the C compiler's version.
A build goes into a temporary directory that is renamed into place only when complete and
checked, so concurrent callers (pytest-xdist workers, bench scripts) never see half an
artifact; if two build the same key at once, one rename wins and the other's result is dropped.
Go's own build cache (GOCACHE, from go_toolchains.go_env) is shared by all of them.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
GO_SOURCES = TESTS / "go"

if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))
import go_toolchains  # noqa: E402  (tools/ is put on sys.path just above)

VARIANTS = ("default", "stripped", "pie", "static", "cshared")

# Bumped whenever the layout of the cache or the meaning of a key changes.
_SCHEMA = "gobuild-1"

# variant -> (CGO_ENABLED, `go build` flags). -buildvcs=false: the sources sit in a git work
# tree, and stamping VCS data would make the output depend on the tree's state.
_VARIANT_FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "default": ("1", ("-buildvcs=false",)),
    "stripped": ("1", ("-buildvcs=false", "-ldflags=-s -w")),
    "pie": ("1", ("-buildvcs=false", "-buildmode=pie")),
    "static": ("0", ("-buildvcs=false",)),
    "cshared": ("1", ("-buildvcs=false", "-buildmode=c-shared")),
}

_C_HOST_FLAGS = ("-O2", "-Wall", "-Wextra")
_C_HOST_LIBS = ("-ldl",)

GO_BUILD_TIMEOUT = 1800  # seconds; a cold build of the standard library takes a minute or two


class BuildError(RuntimeError):
    """A build failed; the message holds the command and the compiler's output."""


# --------------------------------------------------------------------------------------------
# Public API


def build(version: str, variant: str, program: str | None = None) -> Path:
    """Build tests/go/<program> with Go `version` as `variant` and return the artifact's path.

    `program` defaults to "cshared" for the cshared variant and to "probe" for the others.
    For cshared the path is lib<program>.so; the header lib<program>.h sits beside it.
    """
    if variant not in _VARIANT_FLAGS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if version not in go_toolchains.PINNED:
        raise ValueError(f"unknown Go version {version!r}; known: {', '.join(go_toolchains.ALL_VERSIONS)}")
    if program is None:
        program = "cshared" if variant == "cshared" else "probe"
    src = GO_SOURCES / program
    if not (src / "go.mod").is_file():
        raise ValueError(f"no Go program at {src} (go.mod missing)")

    goroot = go_toolchains.ensure(version)
    cgo, flags = _VARIANT_FLAGS[variant]
    env = go_toolchains.go_env(version)
    env["CGO_ENABLED"] = cgo
    artifact = f"lib{program}.so" if variant == "cshared" else program

    key = _hash(
        _SCHEMA,
        "go",
        program,
        _tree_digest(src),
        version,
        go_toolchains.PINNED[version],
        _goroot_version(goroot),
        variant,
        *flags,
        *_env_digest(env),
        _cc_version(env) if cgo == "1" else "",
    )
    final = _builds_dir() / f"{program}-{variant}-go{version}-{key}"

    def make(tmp: Path) -> None:
        cmd = ["go", "build", *flags, "-o", str(tmp / artifact), "."]
        _run(cmd, cwd=src, env=env, what=f"go {version} build of {program} ({variant})")
        _check_artifact(tmp / artifact, variant)

    _build_once(final, make)
    return final / artifact


def build_c(name: str, flags: tuple[str, ...] = ("-O2", "-Wall", "-Wextra"), libs: tuple[str, ...] = ()) -> Path:
    """Compile tests/native/NAME.c with gcc (cached by source, compiler and flags) and return
    the executable."""
    source = TESTS / "native" / f"{name}.c"
    env = dict(os.environ)
    cc = env.get("CC", "gcc")
    key = _hash(_SCHEMA, "c", name, source.read_bytes(), cc, _cc_version(env), *flags, *libs)
    final = _builds_dir() / f"{name}-{key}"

    def make(tmp: Path) -> None:
        _run([cc, *flags, "-o", str(tmp / name), str(source), *libs], cwd=tmp, env=env, what=f"gcc build of {name}")

    _build_once(final, make)
    return final / name


def build_c_host() -> Path:
    """tests/native/cshared_host.c: loads a Go c-shared library with dlopen."""
    return build_c("cshared_host", _C_HOST_FLAGS, _C_HOST_LIBS)


# --------------------------------------------------------------------------------------------
# ELF inspection (enough for the tests' checks; readelf agrees, see test_gobuild.py)

ET_EXEC, ET_DYN = 2, 3
_PT_INTERP = 3


@dataclass(frozen=True)
class ElfInfo:
    type: int  # ET_EXEC or ET_DYN
    interp: str | None  # the PT_INTERP path (the dynamic loader), None for static binaries
    sections: frozenset[str]


def elf_info(path: Path | str) -> ElfInfo:
    """Read the type, PT_INTERP and section names of a 64-bit little-endian ELF file."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    (e_type,) = struct.unpack_from("<H", data, 16)
    e_phoff, e_shoff = struct.unpack_from("<QQ", data, 32)
    e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHHHH", data, 54)

    interp = None
    for i in range(e_phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == _PT_INTERP:
            interp = data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()

    sections: set[str] = set()
    if e_shoff and e_shnum:
        def header(i: int) -> tuple[int, int, int]:
            sh_name, _, _, _, sh_offset, sh_size = struct.unpack_from("<IIQQQQ", data, e_shoff + i * e_shentsize)
            return sh_name, sh_offset, sh_size
        _, str_off, str_size = header(e_shstrndx)
        strtab = data[str_off:str_off + str_size]
        for i in range(e_shnum):
            name_off = header(i)[0]
            sections.add(strtab[name_off:strtab.index(b"\0", name_off)].decode())
    return ElfInfo(type=e_type, interp=interp, sections=frozenset(sections))


# --------------------------------------------------------------------------------------------
# Internals


def _builds_dir() -> Path:
    d = go_toolchains.cache_dir() / "builds"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _hash(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        h.update(len(raw).to_bytes(8, "little"))  # length-prefixed: no two lists collide
        h.update(raw)
    return h.hexdigest()[:20]


def _tree_digest(src: Path) -> str:
    """Hash of every file under src: relative paths and contents."""
    parts: list[str | bytes] = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        parts += [path.relative_to(src).as_posix(), path.read_bytes()]
    return _hash(*parts)


def _goroot_version(goroot: Path) -> str:
    """First line of GOROOT/VERSION, e.g. go1.19.8 (pins Debian's 1.19, whose key is a package)."""
    try:
        return (goroot / "VERSION").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return ""


def _env_digest(env: dict[str, str]) -> list[str]:
    """The variables that can change what `go build` produces (not cache locations)."""
    keep = sorted(
        k for k in env
        if (k.startswith(("GO", "CGO_")) and k not in ("GOCACHE", "GOPATH", "GOMODCACHE"))
        or k in ("CC", "CXX", "AR", "PKG_CONFIG")
    )
    return [f"{k}={env[k]}" for k in keep]


@functools.lru_cache(maxsize=None)
def _cc_version_of(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise BuildError(f"C compiler {cc!r} does not run: {e}") from e
    return out.splitlines()[0] if out else cc


def _cc_version(env: dict[str, str]) -> str:
    return _cc_version_of(env.get("CC") or "gcc")


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=GO_BUILD_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"{what} timed out after {GO_BUILD_TIMEOUT}s: {' '.join(cmd)}\n{e.stderr or ''}") from e
    if proc.returncode != 0:
        raise BuildError(
            f"{what} failed with exit status {proc.returncode}\n"
            f"  command: {' '.join(cmd)}\n  cwd: {cwd}\n"
            f"--- stderr ---\n{proc.stderr}--- stdout ---\n{proc.stdout}"
        )


def _check_artifact(path: Path, variant: str) -> None:
    """Refuse to cache an artifact that is not what its variant promises."""
    info = elf_info(path)
    problems = []
    if variant in ("default", "stripped", "pie") and info.interp is None:
        problems.append("no PT_INTERP: the binary is static, cgo/libc was not linked")
    if variant == "static" and info.interp is not None:
        problems.append(f"has PT_INTERP {info.interp}: the binary is dynamic")
    if variant == "stripped" and ".symtab" in info.sections:
        problems.append("still has a .symtab")
    if variant in ("pie", "cshared") and info.type != ET_DYN:
        problems.append(f"ELF type {info.type}, not ET_DYN")
    if variant in ("default", "stripped", "static") and info.type != ET_EXEC:
        problems.append(f"ELF type {info.type}, not ET_EXEC")
    if variant == "cshared" and not path.with_suffix(".h").is_file():
        problems.append("no header beside the library")
    if problems:
        raise BuildError(f"{path} ({variant}): " + "; ".join(problems))


def _remove_stale_temps(builds: Path, max_age: float = 2 * GO_BUILD_TIMEOUT) -> None:
    """Remove temporary build directories left by killed builders (older than any live one)."""
    now = time.time()
    for tmp in builds.glob(".tmp-*"):
        try:
            if now - tmp.stat().st_mtime > max_age:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def _build_once(final: Path, make) -> None:
    """Run make(tmpdir) unless `final` exists, then move tmpdir to `final` atomically."""
    if final.is_dir():
        return
    _remove_stale_temps(final.parent)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    try:
        make(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race with another builder: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
