#!/usr/bin/env python3
"""An ssh:// target against a plain `ssh -L` port forward of the same stream, same sshd.

The sshd runs in a throwaway namespace reached over a veth pair (tests/test_ssh_target.py's
Sshd), a sink there (tests/go/netclient `sink`) takes one sha256-checked stream:

    plain   `ssh -N -L 127.0.0.1:PORT:SINK` and the client sending to 127.0.0.1:PORT
    tether  the client under `tether exec --target ssh://...` sending to the sink's address
            (the agent there connects; its bytes relayed over a channel of tether's ssh)

Rounds alternate the two; ratio plain seconds / tether seconds (goal >= 0.9). Then connect
latency: p50 of 200 connects (5 ms apart) to a listener there (netclient `acceptor` on the
host's address) under tether, against one round trip: the same program's connects to the same
listener without tether, at the same pace (as bench/link.py measures it: this VM's idle CPUs
wake slowly, for both alike), rounds alternating; goal: added <= 1 RTT + 300 us.

    python3 bench/ssh_target.py [--rounds 3] [--bytes N]
"""
from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tools"), str(ROOT / "bench")]

import gobuild  # noqa: E402
import netns  # noqa: E402
from relay_throughput import BASE_PORT, transfer  # noqa: E402
from test_ssh_target import SSH_PORT, Sshd  # noqa: E402

TETHER = [sys.executable, "-m", "tether"]


ACCEPT_PORT = 7070  # the acceptor, on the namespace's veth address


def paced_p50_us(argv: list[str]) -> float:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if r.returncode != 0 or not r.stdout.startswith("connects p50_us"):
        raise SystemExit(f"{argv}: {r.stdout} {r.stderr}")
    return float(r.stdout.split()[2])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bytes", type=int, default=256 << 20)
    args = ap.parse_args()
    exe = gobuild.build("1.27", "default", "netclient")
    with netns.TargetNamespace(veth=True) as ns, tempfile.TemporaryDirectory() as tmp:
        sshd = Sshd(ns, Path(tmp))
        ssh_opts = [o for o in sshd.options() if o != "--ssh-option"]
        forward_port = BASE_PORT + 50
        # LogLevel=QUIET: its "open failed" for the probes below, made before the sink listens
        forward = subprocess.Popen(["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=QUIET", *[x for o in ssh_opts for x in ("-o", o)],
                                    "-p", str(SSH_PORT), "-L", f"127.0.0.1:{forward_port}:{netns.WEB_ADDR}:{BASE_PORT}",
                                    f"root@{ns.veth_ns_addr}"])
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", forward_port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            times: dict[str, list[float]] = {"plain": [], "tether": []}
            prefix = [*TETHER, "exec", "--target", sshd.target, *sshd.options(), "--"]

            def plain() -> float:
                # the sink in the namespace, the client here sending to the forward
                sink = ns.popen([str(exe), "sink", f"{netns.WEB_ADDR}:{BASE_PORT}"], stdout=subprocess.PIPE, text=True)
                assert sink.stdout.readline().strip() == "sink listening"
                r = subprocess.run([str(exe), "send", f"127.0.0.1:{forward_port}", str(args.bytes)],
                                   capture_output=True, text=True, timeout=900)
                assert r.stdout.startswith("send ok") and sink.stdout.readline().split() == ["sink", str(args.bytes)]
                sink.wait(timeout=10)
                return float(r.stdout.split()[3])

            for r in range(args.rounds):
                for how in (("plain", "tether") if r % 2 == 0 else ("tether", "plain")):
                    times[how].append(plain() if how == "plain" else
                                      transfer(how, ns.popen, netns.WEB_ADDR, prefix, exe, args.bytes, 1))
            t = {how: statistics.median(v) for how, v in times.items()}
            mib = args.bytes / (1 << 20)
            print(f"stream {mib:.0f} MiB, {args.rounds} rounds: plain ssh -L {mib / t['plain']:.0f} MiB/s, "
                  f"ssh:// target {mib / t['tether']:.0f} MiB/s, tether/plain = {t['plain'] / t['tether']:.3f} "
                  "(goal >= 0.9), sha256-checked")
            acceptor = ns.popen([str(exe), "acceptor", f"{ns.veth_ns_addr}:{ACCEPT_PORT}"], stdout=subprocess.PIPE,
                                text=True)
            if acceptor.stdout.readline().strip() != "acceptor listening":
                raise SystemExit("the acceptor did not start")
            paced = ["paced", f"{ns.veth_ns_addr}:{ACCEPT_PORT}", "200", "5"]
            p50: dict[str, list[float]] = {"tether": [], "direct": []}
            for r in range(args.rounds):
                for how in (("tether", "direct") if r % 2 == 0 else ("direct", "tether")):
                    p50[how].append(paced_p50_us([*prefix, str(exe), *paced] if how == "tether" else [str(exe), *paced]))
            acceptor.kill()
            relayed, rtt = (statistics.median(p50[how]) for how in ("tether", "direct"))
            print(f"connect p50 (5 ms apart) through the ssh:// target {relayed:.0f} us, without tether (one round "
                  f"trip) {rtt:.0f} us: added {relayed - rtt:.0f} us (goal <= 1 RTT + 300 us = {rtt + 300:.0f} us; "
                  f"rounds: tether {', '.join(f'{v:.0f}' for v in p50['tether'])}; "
                  f"direct {', '.join(f'{v:.0f}' for v in p50['direct'])})")
        finally:
            forward.terminate()
            sshd.close()


if __name__ == "__main__":
    main()
