"""The target's files through a tcp:// agent (--fs): the agent runs in the test namespace, in a
mount namespace of its own with a tmpfs over /srv (test_files.py's app files), and without the
capabilities that bypass file permissions, so the target's permissions hold. The stand-in
serves those files to the program as a FUSE file system (agent/fuse.py). Go (every version,
dynamic and static), Python and coreutils read, list, walk and mmap them; --fs-write paths are
written there and nowhere else; errors pass through unchanged; a lost agent gives EIO, not a
hang."""
from __future__ import annotations

import errno
import hashlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import gobuild
import pytest
from netns import TargetNamespace
from test_exec import TETHER
from test_files import (APP_FILES, BLOB, CHANGED, CHANGES, CONFIG, GO_CHANGED, GO_CHANGES, GO_EXPECTED, GO_STEPS,
                        check_changes)
from test_remote_target import Agent

from tether.agent import files
from tether.protocol import file_ops

BIG = 32 << 20
SERVER_PORT = 18431
SERVER_CONFIG = f'{{"listen": "127.0.0.1:{SERVER_PORT}", "from": "the target"}}'
# More of the target's files: one only its owner may read, a directory anyone may write, a file
# larger than --fs-whole-max; then the agent, without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH.
TARGET = ("unshare", "-m", "--propagation", "private", "sh", "-c",
          APP_FILES + "printf secret > /srv/app/secret && chmod 000 /srv/app/secret && mkdir -m 777 /srv/app/out && "
          f"head -c {BIG} /dev/zero > /srv/app/big && printf '%s' '{SERVER_CONFIG}' > /srv/app/server.json && "
          'exec setpriv --bounding-set -dac_override,-dac_read_search "$@"', "sh")


@pytest.fixture(scope="module")
def ns():
    with TargetNamespace(veth=True) as ns:
        yield ns


def start_agent(ns: TargetNamespace, where: Path) -> Agent:
    token = where / "agent.token"
    subprocess.run([*TETHER, "agent", "--new-token", str(token)], check=True, capture_output=True)
    agent = Agent(ns, f"tcp:{ns.veth_ns_addr}:0", token, where / "agent.log", TARGET)
    agent.token = token
    agent.root = Path(f"/proc/{agent.proc.pid}/root")
    (agent.root / "srv/app/blob").write_bytes(BLOB)
    return agent


@pytest.fixture(scope="module")
def agent(ns, tmp_path_factory):
    a = start_agent(ns, tmp_path_factory.mktemp("files-agent"))
    yield a
    a.stop()


def run(agent: Agent, argv: list, *flags: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*TETHER, "exec", "--target", agent.target, "--token-file", str(agent.token), *flags,
                           "--", *map(str, argv)], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_go_reads_stats_lists_and_walks_the_targets_files_through_a_tcp_agent(go_versions, agent):
    assert not Path("/srv/app").exists(), "this machine must not have the target's /srv/app"
    for version in go_versions:
        for variant in ("default", "static"):
            exe = gobuild.build(version, variant, "files")
            r = run(agent, [exe, *GO_STEPS])
            expected = GO_EXPECTED[:-1] + ["app"]  # /srv has no "ready" marker here
            assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, expected, ""), (version, variant)


def test_python_and_coreutils_read_list_and_mmap_the_targets_files(agent):
    code = ("import mmap, os, hashlib; print(open('/srv/app/config.json').read().strip()); "
            "print(sorted(os.listdir('/srv/app/conf.d'))); print(os.path.realpath('/srv/app/current')); "
            "f = open('/srv/app/blob', 'rb'); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); "
            "print(hashlib.sha256(m).hexdigest(), os.fstat(f.fileno()).st_size)")
    r = run(agent, [sys.executable, "-I", "-c", code])
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (
        0, [CONFIG, "['1.conf', '2.conf']", "/srv/app/config.json", f"{hashlib.sha256(BLOB).hexdigest()} {len(BLOB)}"],
        "")
    r = run(agent, ["sha256sum", "/srv/app/blob", "/srv/app/big"])
    assert (r.returncode, r.stdout.split()[::2], r.stderr) == (
        0, [hashlib.sha256(BLOB).hexdigest(), hashlib.sha256(bytes(BIG)).hexdigest()], "")
    r = run(agent, ["ls", "-ln", "/srv/app/conf.d"])
    lines = r.stdout.splitlines()
    assert (r.returncode, lines[0], [ln.split()[0::4] for ln in lines[1:]], r.stderr) == (
        0, "total 8", [["-rw-r--r--", "4", "1.conf"], ["-rw-r--r--", "4", "2.conf"]], ""), r.stdout
    r = run(agent, ["find", "/srv/app/tree", "-type", "f"])
    assert (r.returncode, len(r.stdout.split()), r.stderr) == (0, 50, "")


def test_a_static_go_server_takes_its_config_from_the_target(agent, go_versions):
    """The service's config exists only in the target: it listens and answers as it says."""
    exe = gobuild.build(go_versions[-1], "static", "files")
    proc = subprocess.Popen([*TETHER, "exec", "--target", agent.target, "--token-file", str(agent.token), "--",
                             exe, "serve-config", "/srv/app/server.json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        assert select.select([proc.stdout], [], [], 30)[0], "the server did not start"
        assert proc.stdout.readline() == f"serving 127.0.0.1:{SERVER_PORT}\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{SERVER_PORT}/", timeout=5) as reply:
            assert reply.read() == b"the target\n"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "Traceback" not in err, err


def test_the_targets_errors_reach_the_program_unchanged(agent, go_versions):
    exe = gobuild.build(go_versions[-1], "default", "files")
    r = run(agent, [exe, "cat", "/srv/app/secret", "cat", "/srv/app/conf.d", "cat", "/srv/app/none",
                    "readdir", "/srv/app/config.json"])
    assert r.stdout.splitlines() == ["error: permission denied", "error: is a directory",
                                     "error: no such file or directory", "error: not a directory"], r.stderr


def test_write_rules_write_in_the_target_and_nowhere_else(agent, go_versions):
    exe = gobuild.build(go_versions[-1], "default", "files")
    there = agent.root / "srv/app/out"
    r = run(agent, [exe, "write", "/srv/app/out/new.txt", "there", "cat", "/srv/app/out/new.txt"],
            "--fs-write", "^/srv/app/out/")
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, ["written", "there"], "")
    assert (there / "new.txt").read_text() == "there"
    code = ("f = open('/srv/app/out/new.txt', 'a'); f.write(' and more'); f.close(); "
            "f = open('/srv/app/out/log', 'w+'); f.write('x' * 3000000); f.truncate(10); f.seek(0); "
            "print(f.read()); f.close()")
    r = run(agent, [sys.executable, "-I", "-c", code], "--fs-write", "^/srv/app/out/")
    assert (r.returncode, r.stdout, r.stderr) == (0, "x" * 10 + "\n", "")
    assert ((there / "new.txt").read_text(), (there / "log").read_text()) == ("there and more", "x" * 10)
    assert not Path("/srv/app").exists()
    # Without a write rule (--fs read): opened for writing here, so the target is unchanged.
    r = run(agent, [exe, "write", "/srv/app/out/new.txt", "here"])
    assert r.stdout.splitlines() == ["error: no such file or directory"], r.stderr
    assert "happen on this machine" in r.stderr
    assert (there / "new.txt").read_text() == "there and more"


def test_changes_by_path_happen_in_the_target_where_it_is_written(agent, go_versions):
    r = run(agent, [sys.executable, "-I", "-c", CHANGES], "--fs-write", "^/srv/app/out(/|$)")
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, CHANGED, "")
    r = run(agent, [gobuild.build(go_versions[-1], "default", "files"), *GO_CHANGES], "--fs-write", "^/srv/app/out(/|$)")
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, GO_CHANGED, "")
    check_changes(agent.root)


def test_the_agent_refuses_changes_to_a_read_only_session(tmp_path):
    """The stand-in mounts read-only, and the agent refuses on its own: a session that asked
    for reading only modifies nothing, whatever reaches it."""
    victim = tmp_path / "victim"
    victim.write_text("kept")
    ours, theirs = socket.socketpair()
    threading.Thread(target=files.serve_files, args=(theirs, 1, False, "test"), daemon=True).start()
    asks = [file_ops.Request(file_ops.OPEN, str(victim), flags=os.O_WRONLY),
            file_ops.Request(file_ops.OPEN, str(victim), flags=os.O_RDONLY | os.O_TRUNC),
            file_ops.Request(file_ops.CREATE, str(tmp_path / "new"), flags=os.O_WRONLY, mode=0o644),
            file_ops.Request(file_ops.UNLINK, str(victim)),
            file_ops.Request(file_ops.RENAME, str(victim), str(tmp_path / "moved")),
            file_ops.Request(file_ops.SETATTR, str(victim), flags=file_ops.SET_SIZE, size=0),
            file_ops.Request(file_ops.MKDIR, str(tmp_path / "dir"), mode=0o755)]
    with ours:
        for ask in asks:
            ours.sendall(file_ops.encode_request(ask))
            result, n = file_ops.decode_reply_head(ours.recv(file_ops.REPLY.size, socket.MSG_WAITALL), 0)
            assert (result, n) == (-errno.EROFS, 0), file_ops.NAMES[ask.op]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["victim"] and victim.read_text() == "kept"


READER = """
import errno, sys, time
f = open('/srv/app/big', 'rb', buffering=0)
print('reading', flush=True)
start = time.monotonic()
try:
    while f.read(1 << 20):
        time.sleep(0.05)
    print('read it all')
except OSError as e:
    print(errno.errorcode[e.errno], round(time.monotonic() - start))
"""


def test_a_lost_agent_fails_reads_with_eio_not_a_hang(ns, tmp_path):
    agent = start_agent(ns, tmp_path)
    try:
        proc = subprocess.Popen([*TETHER, "exec", "--target", agent.target, "--token-file", str(agent.token), "--",
                                 sys.executable, "-I", "-c", READER], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        assert proc.stdout.readline() == "reading\n"
        agent.stop(signal.SIGKILL)
        killed = time.monotonic()
        out, err = proc.communicate(timeout=30)
        assert out.split()[0] == "EIO", (out, err)
        assert time.monotonic() - killed < 10, (out, err)
    finally:
        agent.stop(signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
