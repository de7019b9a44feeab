#!/usr/bin/env python3
"""Outgoing TCP through a `tcp://` agent's relay against the same transfer over loopback.

"direct": the Go client (tests/go/netclient `send`) sends to a sink on this host's loopback,
no tether. "relay": the same client under `tether exec --target tcp://VETH:PORT` sends to a
sink in a throwaway namespace, through `tether agent --listen` running there (each connection
is its own data connection to the agent, which relays it). Both sides sha256-check every byte.
Runs alternate by round; the ratio is direct seconds / relay seconds (goal >= 0.5).

    single    one stream of --bytes (default 1 GiB)
    streams   --streams concurrent streams (default 16) of --bytes/--streams each; seconds are
              until the last one ends
    Seconds are the senders' own (connect to checksum): tether's start-up is not in them.
    memory    the agent's peak RSS (VmHWM) after all rounds, against its RSS when idle

    python3 bench/relay_throughput.py [--version 1.27] [--rounds 3] [--bytes N] [--streams 16]

Needs root (it makes a throwaway namespace with tests/netns.py and removes it).
"""
from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tools")]

import go_toolchains  # noqa: E402
import gobuild  # noqa: E402
import netns  # noqa: E402

TETHER = [sys.executable, "-m", "tether"]
BASE_PORT = 7100


def listening(popen, argv: list[str], line: str) -> subprocess.Popen:
    """argv started by popen, once it has printed line (netclient's "acceptor listening", ...)."""
    proc = popen(argv, stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != line:
        proc.kill()
        raise SystemExit(f"{' '.join(argv)} did not start")
    return proc


def sinks(popen, host: str, exe: Path, n: int) -> list[tuple[subprocess.Popen, str]]:
    started = []
    for i in range(n):
        addr = f"{host}:{BASE_PORT + i}"
        sink = popen([str(exe), "sink", addr], stdout=subprocess.PIPE, text=True)
        started.append((sink, addr))
    for sink, addr in started:
        if sink.stdout.readline().strip() != "sink listening":
            raise SystemExit(f"the sink at {addr} did not start")
    return started


def transfer(how: str, popen, host: str, prefix: list[str], exe: Path, size: int, streams: int) -> float:
    """Seconds until the last of `streams` concurrent senders of size/streams bytes is done, as
    the senders measure them (from their connect to the sink's checksum; one program, or one
    shell starting them all, so tether's start-up is not counted)."""
    each = size // streams
    started = sinks(popen, host, exe, streams)
    sends = " ".join(f"{shlex.quote(str(exe))} send {addr} {each} &" for _, addr in started)
    argv = [*prefix, "sh", "-c", f"{sends} wait"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    reports = [line.split() for line in r.stdout.splitlines() if line.startswith("send ok")]
    if r.returncode != 0 or len(reports) != streams:
        raise SystemExit(f"{how}: send failed ({r.returncode}): {r.stdout} {r.stderr}")
    for sink, addr in started:
        if sink.stdout.readline().split() != ["sink", str(each)]:
            raise SystemExit(f"{how}: the sink at {addr} saw another byte count")
        sink.wait(timeout=10)
    return max(float(fields[3]) for fields in reports)


@contextlib.contextmanager
def network_agent(ns: netns.TargetNamespace, tmp: str, tls: bool = False):
    """`tether agent --listen` in ns on its veth address, with a new token (and with tls, a new
    key, every connection encrypted): (its process, the address it listens on, the token file);
    stopped at the end."""
    name = "tls" if tls else "plain"
    token = Path(tmp) / f"{name}.token"
    tls_flag = ["--tls"] if tls else []
    subprocess.run([*TETHER, "agent", "--new-token", str(token), *tls_flag], check=True, capture_output=True)
    log = Path(tmp) / f"{name}.log"
    agent = ns.popen([*TETHER, "agent", "--listen", f"tcp:{ns.veth_ns_addr}:0", "--token-file", str(token),
                      *tls_flag], stderr=log.open("w"))
    try:
        for _ in range(500):
            if m := re.search(r"listening on tcp:(\S+)", log.read_text()):
                break
            time.sleep(0.02)
        else:
            raise SystemExit(f"the agent did not start: {log.read_text()}")
        yield agent, m.group(1), token
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def rss_kib(pid: int, field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--version", default=go_toolchains.ALL_VERSIONS[-1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=1 << 30)
    ap.add_argument("--streams", type=int, default=16)
    args = ap.parse_args()
    exe = gobuild.build(args.version, "default", "netclient")
    with netns.TargetNamespace(veth=True) as ns, tempfile.TemporaryDirectory() as tmp, \
            network_agent(ns, tmp) as (agent, address, token):
        idle = rss_kib(agent.pid, "VmRSS")
        relay = [*TETHER, "exec", "--target", f"tcp://{address}", "--token-file", str(token), "--"]
        ways = {"direct": (subprocess.Popen, "127.0.0.1", []), "relay": (ns.popen, netns.WEB_ADDR, relay)}
        mib = args.bytes / (1 << 20)
        for streams in (1, args.streams):
            times: dict[str, list[float]] = {"direct": [], "relay": []}
            for r in range(args.rounds):
                for how in (("direct", "relay") if r % 2 == 0 else ("relay", "direct")):
                    popen, host, prefix = ways[how]
                    times[how].append(transfer(how, popen, host, prefix, exe, args.bytes, streams))
            t = {how: statistics.median(v) for how, v in times.items()}
            print(f"{'single' if streams == 1 else 'streams':8} {streams:2} x {mib / streams:.0f} MiB: "
                  f"direct {mib / t['direct']:.0f} MiB/s, relay {mib / t['relay']:.0f} MiB/s, "
                  f"relay/direct = {t['direct'] / t['relay']:.3f} (goal >= 0.5), sha256-checked")
        print(f"memory   agent peak RSS {rss_kib(agent.pid, 'VmHWM') / 1024:.1f} MiB "
              f"(idle {idle / 1024:.1f} MiB) after {args.rounds} rounds of 1 and {args.streams} streams")


if __name__ == "__main__":
    main()
