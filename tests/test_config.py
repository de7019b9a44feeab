"""Settings of `tether exec`: flag > TETHER_* variable > tether.toml > default, a JSON schema
the file satisfies, and errors that name the file, the key and the fix."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import jsonschema
import pytest

from tether import config

TETHER = [sys.executable, "-m", "tether"]
GOOD = '''
target = "netns:blue"
local = ["10.0.0.0/8", "db.internal:5432"]
remote = []
env_include = ["APP_*"]
env_exclude = ["AWS_*"]
dns = false
verbose = true
log_file = "/tmp/tether.log"

[env]
GREETING = "hello"
'''


def run(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    return subprocess.run([*TETHER, *args], capture_output=True, text=True, timeout=60, cwd=cwd,
                          env={**clean, **(env or {})}, stdin=subprocess.DEVNULL)


def shown(out: str) -> dict[str, tuple[object, str]]:
    """`tether config show` lines as {key: (value, source)}."""
    result = {}
    for line in out.splitlines()[1:]:
        assignment, _, source = line.partition("  # ")
        key, _, value = assignment.partition(" = ")
        result[key] = (json.loads(value), source)
    return result


def test_schema_accepts_good_files_and_rejects_bad_ones(tmp_path):
    r = run("config", "schema")
    assert r.returncode == 0
    schema = json.loads(r.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(tomllib.loads(GOOD), schema)
    jsonschema.validate({}, schema)
    for bad in ({"remot": []}, {"local": "10.0.0.0/8"}, {"dns": "no"}, {"env": {"A": 1}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    # The loader agrees with the schema on the same inputs.
    path = tmp_path / "t.toml"
    path.write_text(GOOD)
    assert config.load(path)["local"] == ["10.0.0.0/8", "db.internal:5432"]
    assert set(schema["properties"]) == {k.name for k in config.KEYS}


def test_file_then_environment_then_flag(tmp_path):
    (tmp_path / "tether.toml").write_text(GOOD)  # found in the current directory
    r = run("config", "show", cwd=tmp_path)
    s = shown(r.stdout)
    assert r.returncode == 0 and s["target"] == ("netns:blue", "tether.toml") and s["dns"] == (False, "tether.toml")
    assert s["env"] == (["GREETING=hello"], "tether.toml") and s["remote"] == ([], "tether.toml")
    r = run("config", "show", cwd=tmp_path, env={"TETHER_TARGET": "netns:green", "TETHER_DNS": "1",
                                                 "TETHER_LOCAL": "192.0.2.9 ::1"})
    s = shown(r.stdout)
    assert s["target"] == ("netns:green", "TETHER_TARGET") and s["dns"] == (True, "TETHER_DNS")
    assert s["local"] == (["192.0.2.9", "::1"], "TETHER_LOCAL") and s["verbose"] == (True, "tether.toml")
    r = run("config", "show", cwd=tmp_path.parent)  # no tether.toml there: defaults
    s = shown(r.stdout)
    assert s["target"] == (None, "default") and s["dns"] == (True, "default")
    # tether exec: the target that wins is the one it then tries (none of these namespaces exist).
    argv = ["exec", "--", "/bin/true"]
    assert "'blue'" in run(*argv, cwd=tmp_path).stderr
    assert "'green'" in run(*argv, cwd=tmp_path, env={"TETHER_TARGET": "netns:green"}).stderr
    r = run("exec", "--target", "netns:red", "--", "/bin/true", cwd=tmp_path, env={"TETHER_TARGET": "netns:green"})
    assert r.returncode == 2 and "no network namespace 'red'" in r.stderr
    other = tmp_path / "other.toml"
    other.write_text('target = "netns:violet"\n')
    assert "'violet'" in run("exec", "--config", str(other), "--", "/bin/true", cwd=tmp_path).stderr
    assert "'violet'" in run(*argv, cwd=tmp_path, env={"TETHER_CONFIG": str(other)}).stderr


@pytest.mark.parametrize("text, message", [
    ('remot = ["10.0.0.0/8"]\n', "unknown key 'remot'; did you mean 'remote'?"),
    ('env-exclude = ["A*"]\n', "unknown key 'env-exclude'; did you mean 'env_exclude'?"),
    ('zzz = 1\n', "unknown key 'zzz'; valid keys: target, token_file, ssh_option, local"),
    ('local = "10.0.0.0/8"\n', "local must be a list of strings, not '10.0.0.0/8'"),
    ('dns = "no"\n', "dns must be true or false"),
    ('[env]\nA = 1\n', "env must be a table of strings"),
    ('target = \n', "not valid TOML"),
])
def test_mistakes_name_the_file_key_and_fix(tmp_path, text, message):
    path = tmp_path / "tether.toml"
    path.write_text(text)
    for args in (["config", "show"], ["exec", "--target", "netns:x", "--", "/bin/true"]):
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 2 and f"tether.toml: {message}" in r.stderr, (args, r.stderr)


def test_missing_target_and_bad_variables_are_usage_errors(tmp_path):
    r = run("exec", "--", "/bin/true", cwd=tmp_path)
    assert r.returncode == 2 and "no target: give --target TARGET, TETHER_TARGET, or target in tether.toml" in r.stderr
    r = run("exec", "--", "/bin/true", cwd=tmp_path, env={"TETHER_TARGET": "netns:x", "TETHER_DNS": "maybe"})
    assert r.returncode == 2 and "TETHER_DNS='maybe': use 1 or 0" in r.stderr
    r = run("exec", "--config", str(tmp_path / "missing.toml"), "--", "/bin/true", cwd=tmp_path)
    assert r.returncode == 2 and "missing.toml: no such config file" in r.stderr
