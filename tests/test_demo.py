"""`tether demo` end to end, as a user would run it: it narrates a real run and leaves
nothing behind."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import go_toolchains
from netns import list_namespaces, target_ns  # noqa: F401  (fixture: holds the unreachable route)


def test_demo_runs_and_cleans_up(go_versions, target_ns):  # noqa: F811
    go = go_toolchains.goroot(go_versions[-1]) / "bin" / "go"
    env = {**go_toolchains.go_env(go_versions[-1]), "TETHER_DEMO_GO": str(go)}
    r = subprocess.run([sys.executable, "-m", "tether", "demo"], capture_output=True, text=True, timeout=600,
                       env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "GET http://api.demo.internal:8080/ answered: 200 hello from a service that lives only in" in out
    assert "DEMO_GREETING=\"hello from the target's environment\"" in out
    assert "removed namespace tether-demo-" in out
    assert not [n for n in list_namespaces() if n.startswith("tether-demo-")]
    assert not list(Path("/etc/netns").glob("tether-demo-*"))
    assert "198.18.0.1 " not in subprocess.run(["ip", "route"], capture_output=True, text=True).stdout


def test_demo_with_a_python_client(target_ns):  # noqa: F811
    """Without Go the client is Python: its libc lookups and connects reach the namespace too."""
    r = subprocess.run([sys.executable, "-m", "tether", "demo", "--client", "python"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "the client is a Python program" in r.stdout and "building a small Go client" not in r.stdout
    assert "GET http://api.demo.internal:8080/ answered: 200 hello from a service that lives only in" in r.stdout
    assert "DEMO_GREETING=\"hello from the target's environment\"" in r.stdout
    assert not [n for n in list_namespaces() if n.startswith("tether-demo-")]


def test_demo_names_a_bad_go_setting(tmp_path):
    env = {**os.environ, "TETHER_DEMO_GO": str(tmp_path / "nogo")}
    r = subprocess.run([sys.executable, "-m", "tether", "demo"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and f"TETHER_DEMO_GO={tmp_path / 'nogo'} is not an executable go command" in r.stderr


def test_demo_without_root_says_what_it_needs():
    code = ("import os, sys, tether.cli, tether.demo; os.setgid(65534); os.setuid(65534); "
            "sys.argv = ['tether', 'demo']; tether.cli.main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "needs root: run `sudo tether demo`" in r.stdout
