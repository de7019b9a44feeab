"""`--target container:NAME` (and podman:, docker:): a real podman container as the target.

The image is made here from a busybox root filesystem with `podman import` (no registry),
the container runs with no network but its own loopback (`--network none`: nothing of this
machine's network is touched), serves HTTP there with busybox httpd, and has a variable and
a host name that exist only inside it.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import gobuild
import pytest

TETHER = [sys.executable, "-m", "tether"]
PODMAN_RUN = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
PORT = 8080
HOST_NAME, HOST_ADDR = "only-in-the-container.test", "198.18.7.7"

pytestmark = pytest.mark.skipif(shutil.which("podman") is None or not Path("/bin/busybox").exists(),
                                reason="needs podman and busybox-static (.ci/run installs them)")


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=120, check=check)


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    root = tmp_path_factory.mktemp("rootfs")
    (root / "bin").mkdir()
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "httpd", "sleep"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    (root / "www").mkdir()
    (root / "www" / "index.html").write_text("hello from inside the container\n")
    tag = f"tether-test-{uuid.uuid4().hex[:8]}"
    tar = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True, check=True).stdout
    subprocess.run(["podman", "import", "-", tag], input=tar, capture_output=True, check=True, timeout=120)
    try:
        podman("run", "-d", *PODMAN_RUN, "--network", "none", "--name", tag, "-e", "ONLY_IN_CONTAINER=yes",
               "--add-host", f"{HOST_NAME}:{HOST_ADDR}", tag, "/bin/httpd", "-f", "-p", f"127.0.0.1:{PORT}",
               "-h", "/www")
        yield tag
    finally:
        podman("rm", "-f", "-t", "0", tag, check=False)
        podman("rmi", "-f", tag, check=False)


def tether_exec(target: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TETHER, "exec", "--target", target, "--remote", f"127.0.0.1:{PORT}", "--", *argv],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("kind", ["container", "podman"])
def test_a_go_program_gets_the_containers_network_names_and_environment(go_versions, container, kind):
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    r = tether_exec(f"{kind}:{container}", str(exe), "http", f"http://127.0.0.1:{PORT}/", "lookup", HOST_NAME,
                    "env", "ONLY_IN_CONTAINER")
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert r.stdout.splitlines() == ["http 200 hello from inside the container", f"lookup {HOST_NAME} {HOST_ADDR}",
                                     "env ONLY_IN_CONTAINER=yes"]


def test_a_static_go_program_and_curl_too(go_versions, container):
    exe = gobuild.build(go_versions[-1], "static", "netclient")
    r = tether_exec(f"container:{container}", str(exe), "http", f"http://127.0.0.1:{PORT}/")
    assert (r.returncode, r.stdout, r.stderr) == (0, "http 200 hello from inside the container\n", "")
    r = tether_exec(f"container:{container}", "curl", "-s", f"http://127.0.0.1:{PORT}/")
    assert (r.returncode, r.stdout) == (0, "hello from inside the container\n"), r.stderr


def test_unknown_and_stopped_containers_say_so(container):
    r = tether_exec("podman:no-such-container-here", "true")
    assert r.returncode == 2 and "podman does not know it" in r.stderr and "podman ps -a" in r.stderr
    r = tether_exec("container:", "true")
    assert r.returncode == 2 and "give a container's name" in r.stderr
    stopped = f"{container}-stopped"
    podman("create", *PODMAN_RUN, "--network", "none", "--name", stopped, container, "/bin/sleep", "60")
    try:
        r = tether_exec(f"container:{stopped}", "true")
        assert r.returncode == 2 and "not running" in r.stderr and f"podman start {stopped}" in r.stderr, r.stderr
    finally:
        podman("rm", "-f", stopped, check=False)
