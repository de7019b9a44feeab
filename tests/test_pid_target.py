"""`tether exec --target pid:PID`: a running process's namespaces as the target (how a
container on this host is targeted). The process here lives in the test namespace, started
with `ip netns exec`, so its network is the namespace's and its mount namespace shows
/etc/netns/NAME/* over /etc; its environment is its own."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import gobuild
import pytest
from netns import HTTP_PORT, WEB_ADDR, target_ns  # noqa: F401  (fixture)
from test_exec import TETHER, full_tour


@pytest.fixture
def target_process(target_ns):  # noqa: F811
    """A process in the namespace whose environment holds TARGET_ONLY_VAR=from-pid."""
    argv = ["env", "-i", "TARGET_ONLY_VAR=from-pid", "PATH=/usr/bin:/bin", "sleep", "300"]
    proc = subprocess.Popen(target_ns.exec_argv(argv))
    try:
        for _ in range(500):  # until ip and env have exec'd into sleep (bounded: 5 s)
            if Path(f"/proc/{proc.pid}/comm").read_text().strip() == "sleep":
                break
            time.sleep(0.01)
        else:
            pytest.fail("the target process did not start")
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def pid_exec(pid: int, program, args, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TETHER, "exec", "--target", f"pid:{pid}", *flags, "--", str(program), *args],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_go_program_gets_the_process_network_names_and_environment(go_versions, target_ns,  # noqa: F811
                                                                   target_process):
    steps, expected = full_tour(target_ns)
    expected[0] = "env TARGET_ONLY_VAR=from-pid"  # the process's own environment, not the netns file
    for version in go_versions:
        exe = gobuild.build(version, "default", "netclient")
        r = pid_exec(target_process, exe, steps)
        assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, expected, ""), version


def test_python_and_curl_reach_names_only_the_process_sees(target_ns, target_process):  # noqa: F811
    url = f"http://{target_ns.dns_name}:{HTTP_PORT}/"
    code = ("import os, socket, sys, urllib.request; "
            "print(socket.gethostbyname(sys.argv[1])); "
            "print(urllib.request.build_opener(urllib.request.ProxyHandler({})).open(sys.argv[2], timeout=5)"
            ".read().decode().strip()); print(os.environ.get('TARGET_ONLY_VAR'))")
    r = pid_exec(target_process, sys.executable, ["-I", "-c", code, target_ns.hosts_name, url])
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (
        0, [WEB_ADDR, target_ns.http_body.strip(), "from-pid"], "")
    curl = shutil.which("curl")
    assert curl, "curl is missing: .ci/run installs it (apt install curl)"
    url = f"http://{target_ns.hosts_name}:{HTTP_PORT}/"
    r = pid_exec(target_process, curl, ["-sS", "--noproxy", "*", "-m", "5", url])
    assert (r.returncode, r.stdout, r.stderr) == (0, target_ns.http_body, "")


def test_a_process_that_exits_is_reported(go_versions, target_ns):  # noqa: F811
    proc = subprocess.Popen(target_ns.exec_argv(["true"]))
    proc.wait()
    exe = gobuild.build(go_versions[-1], "default", "netclient")
    r = pid_exec(proc.pid, exe, ["exit", "0"])
    assert r.returncode == 2 and f"no process {proc.pid}" in r.stderr
