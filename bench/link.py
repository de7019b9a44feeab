#!/usr/bin/env python3
"""The link to a network agent (issue 20): what a relayed connect costs.

A `tether agent --listen` in a throwaway namespace, reached over veth; the Go netclient under
`tether exec --target tcp://...` connects N times to the namespace's HTTP port, MS apart
(paced, as a program connects now and then) and back to back. Against one round trip: a TCP
connect from here to the agent's address. Goal: the connect adds <= 1 RTT + 300 us. Rounds
alternate the two ways; medians of the rounds' p50s. --delay-ms D puts tests/delayproxy.py
between tether and the agent (D ms each way; the round trip is then the bare one + 2 D).

    python3 bench/link.py [--rounds 3] [--n 200] [--ms 5] [--delay-ms 10]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tools"), str(ROOT / "bench")]

import go_toolchains  # noqa: E402
import gobuild  # noqa: E402
import netns  # noqa: E402
from delayproxy import DelayProxy  # noqa: E402
from relay_throughput import network_agent  # noqa: E402
from ssh_target import rtt_us  # noqa: E402

TETHER = [sys.executable, "-m", "tether"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--version", default=go_toolchains.selected_versions()[-1])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--ms", type=int, default=5)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    args = ap.parse_args()
    exe = gobuild.build(args.version, "default", "netclient")
    with netns.TargetNamespace(veth=True) as ns, tempfile.TemporaryDirectory() as tmp, \
            network_agent(ns, tmp) as (_, address, token), contextlib.ExitStack() as stack:
        host, port = address.rsplit(":", 1)
        if args.delay_ms:
            proxy = stack.enter_context(DelayProxy(("127.0.0.1", 0), (host, int(port)), args.delay_ms / 1000))
            address = f"{proxy.address[0]}:{proxy.address[1]}"
        prefix = [*TETHER, "exec", "--target", f"tcp://{address}", "--token-file", str(token), "--", str(exe)]
        dest = f"{netns.WEB_ADDR}:{netns.HTTP_PORT}"
        steps = {"paced": ["paced", dest, str(args.n), str(args.ms)], "back to back": ["connects", dest, str(args.n)]}
        p50: dict[str, list[float]] = {way: [] for way in steps}
        rtt = []
        for r in range(args.rounds):
            for way in steps if r % 2 == 0 else reversed(steps):
                out = subprocess.run([*prefix, *steps[way]], capture_output=True, text=True, timeout=300,
                                     stdin=subprocess.DEVNULL)
                if out.returncode != 0:
                    raise SystemExit(f"{way}: {out.stdout} {out.stderr}")
                p50[way].append(float(out.stdout.split()[2]))
            rtt.append(rtt_us(host, int(port)) + 2000 * args.delay_ms)
        one = statistics.median(rtt)
        link = f"veth + {args.delay_ms:g} ms each way" if args.delay_ms else "veth"
        print(f"tcp:// agent over {link}, Go {args.version}, {args.rounds} rounds of {args.n} connects; "
              f"one round trip {one:.0f} us (goal: added <= {one + 300:.0f} us)")
        for way, values in p50.items():
            m = statistics.median(values)
            print(f"  connect p50 {way:13} {m:6.0f} us: added {m - one:5.0f} us "
                  f"({'met' if m - one <= one + 300 else 'not met'}; rounds: {', '.join(f'{v:.0f}' for v in values)})")


if __name__ == "__main__":
    main()
