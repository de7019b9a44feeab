#!/usr/bin/env python3
"""An ssh:// target against a plain `ssh -L` port forward of the same stream, same sshd.

The sshd runs in a throwaway namespace reached over a veth pair (tests/test_ssh_target.py's
Sshd), a sink there (tests/go/netclient `sink`) takes one sha256-checked stream:

    plain   `ssh -N -L 127.0.0.1:PORT:SINK` and the client sending to 127.0.0.1:PORT
    tether  the client under `tether exec --target ssh://...` sending to the sink's address
            (the agent there connects; its bytes relayed over a channel of tether's ssh)

Rounds alternate the two; ratio plain seconds / tether seconds (goal >= 0.9). Then connect
latency: p50 of 200 connects (5 ms apart) to a listening port there under tether, against one
round trip (a TCP connect from here to the sshd's address), goal: added <= 1 RTT + 300 us.

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


def rtt_us(addr: str, port: int, n: int = 200) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        socket.create_connection((addr, port), timeout=5).close()
        samples.append((time.perf_counter() - t) * 1e6)
    return statistics.median(samples)


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
        forward = subprocess.Popen(["ssh", "-N", "-o", "ExitOnForwardFailure=yes", *[x for o in ssh_opts for x in ("-o", o)],
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
            rtt = rtt_us(ns.veth_ns_addr, SSH_PORT)
            # Paced (5 ms apart), as a program connects now and then: back to back, the stand-in's
            # refilling of its spare data connections would compete with the next connect.
            r = subprocess.run([*prefix, str(exe), "paced", f"{netns.WEB_ADDR}:{netns.HTTP_PORT}", "200", "5"],
                               capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
            p50 = float(r.stdout.split()[2])
            print(f"connect p50 through the ssh:// target {p50:.0f} us, one round trip here {rtt:.0f} us: "
                  f"added {p50 - rtt:.0f} us (goal <= 1 RTT + 300 us = {rtt + 300:.0f} us)")
        finally:
            forward.terminate()
            sshd.close()


if __name__ == "__main__":
    main()
