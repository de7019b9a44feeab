#!/usr/bin/env python3
"""An ssh:// target against a plain `ssh -L` port forward of the same stream, same sshd.

The sshd runs in a throwaway namespace reached over a veth pair (tests/test_ssh_target.py's
Sshd), a sink there (tests/go/netclient `sink`) takes one sha256-checked stream:

    plain   `ssh -N -L 127.0.0.1:PORT:SINK` and the client sending to 127.0.0.1:PORT
    tether  the client under `tether exec --target ssh://...` sending to the sink's address
            (the agent there connects; its bytes relayed over a channel of tether's ssh)

Rounds alternate the two; ratio plain seconds / tether seconds (goal >= 0.9). Then connect
latency: p50 of 200 connects (5 ms apart) to a listener there (netclient `acceptor` on the
host's address) under tether, less the same program's connects to the same listener without
tether at the same pace (as bench/link.py measures it: this VM's idle CPUs wake slowly, for
both alike): the connect added. Goal: added <= 1 round trip + 300 us, the round trip over
SSH: one byte echoed through a plain `ssh -L` forward of the same sshd (netclient `pings` to
an `echoer` there, 5 ms apart), which every message over the SSH connection costs; the bare
veth round trip (the connects without tether) is printed beside it. Rounds alternate.

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
from relay_throughput import BASE_PORT, listening, transfer  # noqa: E402
from test_ssh_target import SSH_PORT, Sshd  # noqa: E402

TETHER = [sys.executable, "-m", "tether"]


ACCEPT_PORT = 7070  # the acceptor, on the namespace's veth address
ECHO_PORT = 7071  # the echoer, on the target's address


def p50_us(argv: list[str]) -> float:
    """The p50 a netclient `paced` or `pings` step prints."""
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if r.returncode != 0 or r.stdout.split()[1:2] != ["p50_us"]:
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
        forward_port, echo_forward_port = BASE_PORT + 50, BASE_PORT + 51
        # LogLevel=QUIET: its "open failed" for the probes below, made before the sink listens
        forward = subprocess.Popen(["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=QUIET", *[x for o in ssh_opts for x in ("-o", o)],
                                    "-p", str(SSH_PORT), "-L", f"127.0.0.1:{forward_port}:{netns.WEB_ADDR}:{BASE_PORT}",
                                    "-L", f"127.0.0.1:{echo_forward_port}:{netns.WEB_ADDR}:{ECHO_PORT}",
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
            acceptor = listening(ns.popen, [str(exe), "acceptor", f"{ns.veth_ns_addr}:{ACCEPT_PORT}"],
                                 "acceptor listening")
            echoer = listening(ns.popen, [str(exe), "echoer", f"{netns.WEB_ADDR}:{ECHO_PORT}"], "echoer listening")
            paced = [str(exe), "paced", f"{ns.veth_ns_addr}:{ACCEPT_PORT}", "200", "5"]
            sides = {"tether": [*prefix, *paced], "direct": paced,
                     "ssh": [str(exe), "pings", f"127.0.0.1:{echo_forward_port}", "200", "5"]}
            p50: dict[str, list[float]] = {how: [] for how in sides}
            for r in range(args.rounds):
                for how in (list(sides) if r % 2 == 0 else reversed(sides)):
                    p50[how].append(p50_us(sides[how]))
            acceptor.kill()
            echoer.kill()
            relayed, bare, ssh_rtt = (statistics.median(p50[how]) for how in sides)
            added = relayed - bare
            print(f"connect p50 (5 ms apart) through the ssh:// target {relayed:.0f} us, without tether {bare:.0f} "
                  f"us: added {added:.0f} us; one round trip over SSH (a byte echoed through ssh -L) {ssh_rtt:.0f} us: "
                  f"goal <= {ssh_rtt + 300:.0f} us ({'met' if added <= ssh_rtt + 300 else 'not met'}; against the "
                  f"bare round trip, <= {bare + 300:.0f} us: {'met' if added <= bare + 300 else 'not met'})")
            print("  rounds: " + "; ".join(f"{how} {', '.join(f'{v:.0f}' for v in p50[how])}" for how in sides))
        finally:
            forward.terminate()
            sshd.close()


if __name__ == "__main__":
    main()
