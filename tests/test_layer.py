"""The native layer as installed: the file, its exports, its syscalls, preloading.

Everything here runs the real libtether.so that `pip install` built.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.metadata
import mmap
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tether
from tether.layer import LIBRARY_NAME, LayerNotFoundError, layer_path

ROOT = Path(__file__).resolve().parents[1]

SYS_read = 0
SYS_mmap = 9
SYS_munmap = 11
SYS_getpid = 39
SYS_getppid = 110

# The layer's own entry points (pthread_create: the moment a Go c-shared library starts its
# runtime, layer/start/pthread.c), and the libc functions it stands in for (layer/libc/, layer/net/dns.c).
EXPORTS = {"tether_dispatch", "tether_layer_loaded", "tether_set_handler", "tether_route_verdict", "pthread_create"}
LIBC_NET = {"socket", "connect", "accept", "accept4", "send", "sendto", "sendmsg", "recv", "recvfrom", "recvmsg",
            "shutdown", "bind", "listen", "getsockname", "getpeername", "getsockopt", "__recv_chk", "__recvfrom_chk"}
LIBC_POLL = {"epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "__poll_chk", "ppoll", "__ppoll_chk",
             "select", "pselect"}
LIBC_IO = {"read", "write", "close", "close_range", "closefrom", "pread", "pread64", "pwrite", "pwrite64", "readv", "writev", "dup", "dup2",
           "dup3", "fcntl", "fcntl64", "__read_chk", "__pread_chk", "__pread64_chk", "syscall"}
LIBC_FILES = {"open", "open64", "openat", "openat64", "__open_2", "__open64_2", "__openat_2", "__openat64_2",
              "creat", "creat64", "fopen", "fopen64", "freopen", "freopen64", "opendir", "getdents64", "stat", "stat64", "lstat",
              "lstat64", "fstat", "fstat64", "fstatat", "fstatat64", "__xstat", "__xstat64", "__lxstat",
              "__lxstat64", "__fxstat", "__fxstat64", "__fxstatat", "__fxstatat64", "statx", "access",
              "faccessat", "readlink", "readlinkat", "unlink", "unlinkat", "rename", "renameat", "mkdir", "mkdirat",
              "rmdir", "renameat2", "truncate", "truncate64", "chmod", "fchmodat", "utimensat", "statfs", "statfs64", "getxattr",
              "lgetxattr", "listxattr", "llistxattr"}
LIBC_PROC = {"fork", "vfork", "execve", "execv", "fexecve", "execvpe", "execvp", "execl", "execlp", "execle", "posix_spawn",
             "posix_spawnp"}
LIBC_DNS = {"getaddrinfo", "gethostbyname", "gethostbyname2", "gethostbyname_r", "gethostbyname2_r", "getnameinfo",
            "gethostbyaddr", "gethostbyaddr_r"}
# libc serves start-up only (dlsym, dl_iterate_phdr, environ), errno and the fortify abort for
# the libc entry points, malloc/free for dns.c's lookup results (freed by libc's freeaddrinfo),
# and fdopen/fdopendir, which give a FILE or DIR to a descriptor opened through the dispatcher.
LIBC_IMPORTS = {"dlsym", "dl_iterate_phdr", "environ", "__environ", "__errno_location", "__h_errno_location",
                "malloc", "free", "__chk_fail", "fdopen", "fdopendir"}


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(str(layer_path()))
    lib.tether_dispatch.argtypes = [ctypes.c_long] * 7
    lib.tether_dispatch.restype = ctypes.c_long
    lib.tether_layer_loaded.argtypes = []
    lib.tether_layer_loaded.restype = ctypes.c_int
    return lib


def dispatch(lib: ctypes.CDLL, nr: int, *args: int) -> int:
    padded = list(args) + [0] * (6 - len(args))
    return lib.tether_dispatch(nr, *padded)


def dynamic_symbols(path: Path, *flags: str) -> dict[str, str]:
    """Map each dynamic symbol of path to its nm type letter."""
    out = subprocess.run(
        ["nm", "-D", *flags, str(path)], check=True, capture_output=True, text=True
    ).stdout
    return {line.split()[-1]: line.split()[-2] for line in out.splitlines() if line}


def quiet_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TETHER_LAYER_DEBUG"}
    env["LD_PRELOAD"] = str(layer_path())
    env.update(extra)
    return env


# --- the file ------------------------------------------------------------


def test_layer_is_an_elf_shared_object() -> None:
    path = layer_path()
    assert path.is_absolute() and path.is_file() and path.name == LIBRARY_NAME
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    assert header[4] == 2, "not ELF64"
    assert int.from_bytes(header[16:18], "little") == 3, "not ET_DYN"
    assert int.from_bytes(header[18:20], "little") == 62, "not x86-64"


def test_exports_only_the_public_entry_points() -> None:
    defined = dynamic_symbols(layer_path(), "--defined-only")
    assert defined.keys() == EXPORTS | LIBC_NET | LIBC_POLL | LIBC_IO | LIBC_FILES | LIBC_PROC | LIBC_DNS
    assert all(kind == "T" for kind in defined.values())


def test_takes_only_start_up_functions_from_libc() -> None:
    undefined = dynamic_symbols(layer_path(), "--undefined-only")
    strong = {name.split("@")[0] for name, kind in undefined.items() if kind != "w"}
    assert strong <= LIBC_IMPORTS, strong


def test_version_matches_metadata() -> None:
    assert tether.__version__ == importlib.metadata.version("tether")


def test_missing_library_names_the_fix() -> None:
    # Without site (-S) the editable finder is not installed, so tether comes
    # straight from src/, which holds no libtether.so.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from tether.layer import layer_path, LayerNotFoundError\n"
        "try:\n"
        "    layer_path()\n"
        "except LayerNotFoundError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(ROOT / "src")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert LIBRARY_NAME in out and "pip install -e ." in out
    assert issubclass(LayerNotFoundError, FileNotFoundError)


# --- syscalls through tether_dispatch ------------------------------------


def test_dispatch_getpid(lib: ctypes.CDLL) -> None:
    assert dispatch(lib, SYS_getpid) == os.getpid()


def test_dispatch_getppid(lib: ctypes.CDLL) -> None:
    assert dispatch(lib, SYS_getppid) == os.getppid()


def test_dispatch_returns_raw_negative_errno(lib: ctypes.CDLL) -> None:
    buf = ctypes.create_string_buffer(8)
    assert dispatch(lib, SYS_read, 12345, ctypes.addressof(buf), 8) == -errno.EBADF


@pytest.mark.parametrize("nr", [-1, 512, 1000])
def test_dispatch_passes_unknown_numbers_to_kernel(lib: ctypes.CDLL, nr: int) -> None:
    assert dispatch(lib, nr) == -errno.ENOSYS


def test_dispatch_passes_all_six_arguments(lib: ctypes.CDLL, tmp_path: Path) -> None:
    # mmap uses every register: flags travel in r10 and the offset, the 7th
    # C argument, comes from the stack into r9.
    page = mmap.PAGESIZE
    data = tmp_path / "pages"
    data.write_bytes(b"\0" * page + b"tether-a6" + b"\0" * (page - 9))
    fd = os.open(data, os.O_RDONLY)
    try:
        addr = dispatch(
            lib, SYS_mmap, 0, page, mmap.PROT_READ, mmap.MAP_PRIVATE, fd, page
        )
    finally:
        os.close(fd)
    assert addr > 0, f"mmap failed: {addr}"
    try:
        assert ctypes.string_at(addr, 9) == b"tether-a6"
    finally:
        assert dispatch(lib, SYS_munmap, addr, page) == 0


def test_constructor_ran_on_load(lib: ctypes.CDLL) -> None:
    assert lib.tether_layer_loaded() == 1


# --- LD_PRELOAD ----------------------------------------------------------


def test_preload_true_is_silent() -> None:
    proc = subprocess.run(["/bin/true"], env=quiet_env(), capture_output=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


def test_preload_keeps_exit_status_and_is_silent() -> None:
    proc = subprocess.run(
        ["/bin/sh", "-c", "exit 7"], env=quiet_env(), capture_output=True
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, b"", b"")


def test_preload_debug_line() -> None:
    # dash's echo is a builtin, so $$ is the only process the layer is in.
    proc = subprocess.run(
        ["/bin/sh", "-c", "echo $$"],
        env=quiet_env(TETHER_LAYER_DEBUG="1"),
        capture_output=True,
        check=True,
    )
    pid = int(proc.stdout)
    assert proc.stderr == b"tether: layer loaded pid=%d\n" % pid


@pytest.mark.parametrize(
    "name, value",
    [
        ("TETHER_LAYER_DEBUG", "0"),
        ("TETHER_LAYER_DEBUG", ""),
        ("TETHER_LAYER_DEBUG", "11"),
        ("TETHER_LAYER_DEBUG", "yes"),
        ("TETHER_LAYER_DEBUGX", "1"),
        ("TETHER_LAYER_DEBU", "1"),
    ],
)
def test_preload_debug_needs_exactly_1(name: str, value: str) -> None:
    proc = subprocess.run(["/bin/true"], env=quiet_env(**{name: value}), capture_output=True)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")


# --- a fresh install from the source tree --------------------------------

CHECK_INSTALLED = """
import ctypes, os, sys
from tether.layer import layer_path
path = layer_path()
lib = ctypes.CDLL(str(path))
lib.tether_dispatch.restype = ctypes.c_long
assert lib.tether_dispatch(*[ctypes.c_long(v) for v in (39, 0, 0, 0, 0, 0, 0)]) == os.getpid()
print(path)
"""


@pytest.mark.skipif(
    os.environ.get("TETHER_SLOW") != "1", reason="slow: set TETHER_SLOW=1 to run"
)
@pytest.mark.parametrize("editable", [False, True], ids=["install", "editable"])
def test_fresh_venv_install(tmp_path: Path, editable: bool) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    target = ["-e", str(ROOT)] if editable else [str(ROOT)]
    subprocess.run(pip + target, check=True, timeout=900)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", CHECK_INSTALLED],
        cwd=elsewhere,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # Both modes put the library in the venv, never in the source tree.
    assert Path(out.strip()).is_relative_to(venv)
    assert (venv / "bin" / "tether").is_file()
