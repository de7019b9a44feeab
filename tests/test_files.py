"""The target's files under `tether exec` (--fs): a pid target whose mount namespace has its own
tmpfs over /srv, holding files this machine does not have; Go (every version, dynamic and
static), Python and coreutils read them through the layer, with the rules deciding each path."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import gobuild
import pytest
from test_exec import TETHER

CONFIG = '{"listen": ":8080", "from": "the target"}'
BLOB = bytes(range(256)) * 4096  # 1 MiB
# Shell commands, in a mount namespace of the target's own: an app's files on a tmpfs over /srv.
APP_FILES = (
    "mount -t tmpfs tether-files /srv && mkdir -p /srv/app/conf.d /srv/app/tree/a/b && "
    f"printf '%s\\n' '{CONFIG}' > /srv/app/config.json && echo one > /srv/app/conf.d/1.conf && "
    "echo two > /srv/app/conf.d/2.conf && ln -s config.json /srv/app/current && "
    "ln -s ../../../../../../srv/app/config.json /srv/app/climb && "
    "for i in $(seq 1 50); do echo $i > /srv/app/tree/a/b/f$i; done; "
)
# Changes by path in a --fs-write directory; then how they look from inside (CHANGED).
CHANGES = """
import errno, os
d = '/srv/app/out/t'
os.makedirs(d + '/sub')
with open(d + '/a', 'w') as f:
    f.write('12345')
os.rename(d + '/a', d + '/sub/b')
os.chmod(d + '/sub/b', 0o600)
os.truncate(d + '/sub/b', 2)
os.utime(d + '/sub/b', (1000000000, 1000000000))
os.mkdir(d + '/gone')
os.rmdir(d + '/gone')
with open(d + '/c', 'w') as f:
    f.write('c')
os.unlink(d + '/c')
st = os.stat(d + '/sub/b')
print(oct(st.st_mode & 0o777), st.st_size, int(st.st_mtime), sorted(os.listdir(d)))
try:
    os.rename(d + '/sub/b', '/tmp/tether-not-here')
except OSError as e:
    print(errno.errorcode[e.errno])
"""
CHANGED = ["0o600 2 1000000000 ['sub']", "EXDEV"]
# The same through Go's os package (tests/go/files): MkdirAll, WriteFile, Remove.
GO_CHANGES = ["mkdirall", "/srv/app/out/g/h", "write", "/srv/app/out/g/h/f", "x", "write", "/srv/app/out/g/k", "y",
              "remove", "/srv/app/out/g/h/f", "remove", "/srv/app/out/g/h"]
GO_CHANGED = ["made", "written", "written", "removed", "removed"]


def check_changes(root: Path) -> None:
    """CHANGES, made in the target (root: its / as this machine sees it) and not here."""
    b = root / "srv/app/out/t/sub/b"
    assert (b.read_text(), oct(b.stat().st_mode & 0o777), b.stat().st_mtime) == ("12", "0o600", 1000000000)
    assert sorted(p.name for p in (root / "srv/app/out/t").iterdir()) == ["sub"]
    assert [p.name for p in (root / "srv/app/out/g").iterdir()] == ["k"] and (root / "srv/app/out/g/k").read_text() == "y"
    assert not Path("/srv/app").exists() and not Path("/tmp/tether-not-here").exists()


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    """A process in a mount namespace of its own where /srv is a tmpfs with an app's files."""
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                             APP_FILES + "touch /srv/ready; exec sleep 300"])
    root = Path(f"/proc/{proc.pid}/root")
    try:
        for _ in range(500):  # bounded: 5 s
            if (root / "srv/ready").exists():
                break
            time.sleep(0.01)
        else:
            pytest.fail("the target process did not set up its files")
        (root / "srv/app/blob").write_bytes(BLOB)
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def run(pid: int, argv: list[str], *flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*TETHER, "exec", "--target", f"pid:{pid}", *flags, "--", *map(str, argv)],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=env)


GO_STEPS = ["cat", "/srv/app/config.json", "stat", "/srv/app/config.json", "lstat", "/srv/app/current",
            "readlink", "/srv/app/current", "cat", "/srv/app/current", "readdir", "/srv/app/conf.d",
            "walk", "/srv/app/tree", "cat", "/srv/app/climb", "cat", "/srv/app/missing", "readdir", "/srv"]
GO_EXPECTED = [CONFIG, f"size={len(CONFIG) + 1} mode=-rw-r--r--", "size=11 mode=Lrwxrwxrwx", "config.json",
               CONFIG, "1.conf 2.conf", "files=50 bytes=141", CONFIG, "error: no such file or directory",
               "app ready"]


def test_go_reads_stats_lists_and_walks_the_targets_files(go_versions, target):
    assert not Path("/srv/app").exists(), "this machine must not have the target's /srv/app"
    for version in go_versions:
        for variant in ("default", "static"):
            exe = gobuild.build(version, variant, "files")
            r = run(target, [exe, *GO_STEPS])
            assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, GO_EXPECTED, ""), (version, variant)


def test_python_and_coreutils_read_the_targets_files(target):
    code = ("import os, sys; print(open('/srv/app/config.json').read().strip()); "
            "print(sorted(os.listdir('/srv/app/conf.d'))); print(os.path.isdir('/srv/app/tree')); "
            "print(os.path.realpath('/srv/app/current')); print(os.readlink('/srv/app/current'))")
    r = run(target, [sys.executable, "-I", "-c", code])
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (
        0, [CONFIG, "['1.conf', '2.conf']", "True", "/srv/app/config.json", "config.json"], "")
    r = run(target, ["sha256sum", "/srv/app/blob"])
    assert (r.returncode, r.stdout.split()[0], r.stderr) == (0, hashlib.sha256(BLOB).hexdigest(), "")
    r = run(target, ["cat", "/srv/app/conf.d/1.conf", "/srv/app/conf.d/2.conf"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "one\ntwo\n", "")
    r = run(target, ["ls", "/srv/app/conf.d"])
    assert (r.returncode, r.stdout.split(), r.stderr) == (0, ["1.conf", "2.conf"], "")


# Renames elsewhere on this machine, as fast as one process makes them, for at most 60 s.
RENAMES = """
import os, sys, time
a, b = sys.argv[1] + '/a', sys.argv[1] + '/b'
open(a, 'w').close()
end = time.monotonic() + 60
while time.monotonic() < end:
    os.rename(a, b)
    os.rename(b, a)
"""
CLIMBS = """
import collections
failed = collections.Counter()
for _ in range(20000):
    try:
        open('/srv/app/climb').close()
    except OSError as e:
        failed[e.strerror] += 1
print(dict(failed))
"""


def test_a_symlink_that_climbs_opens_while_renames_race_its_walk(target, tmp_path):
    """The kernel fails a RESOLVE_IN_ROOT walk through ".." with EAGAIN when any rename in the
    system races it and asks the caller to retry (openat2(2)); the layer retries, so the
    program never sees it (without the retry, 3,240 of these 20,000 opens failed here)."""
    renamer = subprocess.Popen([sys.executable, "-c", RENAMES, str(tmp_path)])
    try:
        r = run(target, [sys.executable, "-I", "-c", CLIMBS])
    finally:
        renamer.kill()
        renamer.wait()
    assert (r.returncode, r.stdout, r.stderr) == (0, "{}\n", "")


@pytest.fixture(scope="module")
def files_exe(go_versions):
    return gobuild.build(go_versions[-1], "default", "files")


def test_rules_decide_not_found_local_and_off(target, files_exe, tmp_path):
    exe = files_exe
    r = run(target, [exe, "cat", "/srv/app/config.json", "cat", "/srv/app/conf.d/1.conf"],
            "--fs-not-found", r"config\.json$")
    assert r.stdout.splitlines() == ["error: no such file or directory", "one"], r.stderr
    r = run(target, [exe, "readdir", "/srv"], "--fs-local", "^/srv(/|$)")
    assert r.stdout.splitlines() == [" ".join(sorted(os.listdir("/srv")))], r.stderr
    r = run(target, [exe, "cat", "/srv/app/config.json"], "--fs", "local")
    assert r.stdout.splitlines() == ["error: no such file or directory"], r.stderr
    # Credentials of this machine's cloud tools are never the program's, wherever HOME is.
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text("local secret\n")
    (home / ".profile").write_text("local profile\n")
    r = run(target, [exe, "cat", home / ".kube" / "config", "cat", home / ".profile"],
            env={**os.environ, "HOME": str(home)})
    assert r.stdout.splitlines() == ["error: no such file or directory", "local profile"], r.stderr


def test_a_read_only_path_opened_for_writing_is_written_here_and_said_once(target, files_exe):
    exe = files_exe
    name = Path(f"/srv/tether-files-test-{os.getpid()}.txt")
    try:
        r = run(target, [exe, "write", name, "here", "write", name, "again", "cat", name])
        assert r.stdout.splitlines() == ["written", "written", "error: no such file or directory"], r.stderr
        assert name.read_text() == "again"  # on this machine; reads still go to the target
        assert not Path(f"/proc/{target}/root{name}").exists()
        assert r.stderr.count("happen on this machine") == 1, r.stderr
    finally:
        name.unlink(missing_ok=True)


def test_changes_by_path_happen_in_the_target_where_it_is_written(target, files_exe):
    r = run(target, [sys.executable, "-I", "-c", CHANGES], "--fs-write", "^/srv/app/out(/|$)")
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, CHANGED, "")
    r = run(target, [files_exe, *GO_CHANGES], "--fs-write", "^/srv/app/out(/|$)")
    assert (r.returncode, r.stdout.splitlines(), r.stderr) == (0, GO_CHANGED, "")
    check_changes(Path(f"/proc/{target}/root"))


def test_verbose_logs_which_rule_decided_each_path(target, files_exe, tmp_path):
    exe = files_exe
    log = tmp_path / "tether.log"
    r = run(target, [exe, "cat", "/srv/app/config.json", "stat", "/tmp"], "-v", "--log-file", log,
            "--fs-remote", "^/srv/app/")
    assert r.returncode == 0, r.stderr
    text = log.read_text()
    assert "files: /srv/app/config.json: target (read-only) (--fs-remote '^/srv/app/')" in text, text
    assert "files: /tmp: local (default (system) '^/tmp(/|$)')" in text, text


def test_bad_rules_are_refused_before_the_program_runs(target, tmp_path):
    marker = tmp_path / "ran"
    r = run(target, ["touch", marker], "--fs-remote", r"(a)\1")
    assert r.returncode == 2 and "backreference" in r.stderr and "--fs-remote" in r.stderr, r.stderr
    assert not marker.exists()
