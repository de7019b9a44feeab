#!/usr/bin/env python3
"""The target's files under `tether exec`, same host: ratios to the same calls on local files.

The target is a process in a mount namespace of its own with a tmpfs over /srv holding a 256 MiB
file, a small config file and a tree of 10,000 files; the local side is the same set on a tmpfs
of this machine (/dev/shm). tests/go/files times each workload inside the program (not its
start-up): a sequential read of the big file (1 MiB reads), the median of 2000 os.Stat calls,
and filepath.WalkDir with an Info per file. Sides alternate each round; medians of the rounds.

    python3 bench/files.py [--rounds 5] [--version 1.27]     # as root

--tcp: the same files through a tcp:// agent over a veth pair (the agent in a test namespace and
a mount namespace of its own). The sequential read is compared with a plain TCP stream of the
same 256 MiB over the same veth, read by the same program the same way (time-tcp); stat and
WalkDir are printed for scale.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "tests", ROOT / "tools"):
    sys.path.insert(0, str(_p))
import gobuild  # noqa: E402
import go_toolchains  # noqa: E402

BIG = 256 << 20
TREE = 10_000
LOCAL = Path("/dev/shm/tether-bench-files")


def populate(top: Path) -> None:
    (top / "tree").mkdir(parents=True, exist_ok=True)
    with open(top / "big", "wb") as f:
        chunk = bytes(range(256)) * 4096
        for _ in range(BIG // len(chunk)):
            f.write(chunk)
    (top / "config.json").write_text('{"from": "bench"}\n')
    for d in range(100):
        sub = top / "tree" / f"d{d:02}"
        sub.mkdir(exist_ok=True)
        for i in range(TREE // 100):
            (sub / f"f{i:03}").write_text("x" * (i % 64))


def start_target() -> subprocess.Popen:
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                             "mount -t tmpfs tether-bench /srv && touch /srv/.ready && exec sleep 3600"])
    root = Path(f"/proc/{proc.pid}/root/srv")
    deadline = time.monotonic() + 10
    while not (root / ".ready").exists():
        if time.monotonic() > deadline:
            proc.kill()
            sys.exit("bench/files.py: the target process did not start")
        time.sleep(0.01)
    populate(root)
    return proc


def ns(argv: list[str]) -> float:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    line = out.stdout.strip()
    if out.returncode or not line.startswith("ns="):
        sys.exit(f"bench/files.py: {' '.join(argv)}: {line} {out.stderr.strip()}")
    return float(line[3:])


# In the target namespace: the big file to each client over plain TCP, with sendfile.
STREAM_SERVER = """
import socket, sys, threading
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
def serve(c):
    with c, open(sys.argv[3], 'rb') as f:
        c.sendfile(f)
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""
STREAM_PORT = 7412


def over_tcp(args, exe: str, tether: list[str]) -> None:
    from netns import TargetNamespace

    with TargetNamespace(veth=True) as target_ns:
        token = LOCAL.parent / "tether-bench-files.token"
        subprocess.run(tether[:-1] + ["agent", "--new-token", str(token)], check=True, capture_output=True)
        agent = target_ns.popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                 'mount -t tmpfs tether-bench /srv && exec "$@"', "sh", *tether[:-1], "agent",
                                 "--listen", f"tcp:{target_ns.veth_ns_addr}:7411", "--token-file", str(token)],
                                stderr=subprocess.PIPE, text=True)
        server = None
        try:
            if "listening on" not in agent.stderr.readline():
                sys.exit("bench/files.py: the agent did not start")
            populate(Path(f"/proc/{agent.pid}/root/srv"))
            server = target_ns.popen(["nsenter", "-m", "-t", str(agent.pid), sys.executable, "-I", "-c",
                                      STREAM_SERVER, target_ns.veth_ns_addr, str(STREAM_PORT), "/srv/big"])
            time.sleep(0.5)
            via = tether + ["-t", f"tcp://{target_ns.veth_ns_addr}:7411", "--token-file", str(token), "--", exe]
            rows = {"read": [via + ["time-read", "/srv/big"], [exe, "time-tcp", f"{target_ns.veth_ns_addr}:{STREAM_PORT}"]],
                    "stat": [via + ["time-stat", "/srv/config.json"]], "walk": [via + ["time-walk", "/srv/tree"]]}
            results = {name: [[] for _ in sides] for name, sides in rows.items()}
            for r in range(args.rounds):
                for name, sides in rows.items():
                    order = list(enumerate(sides))
                    for i, argv in order[::-1] if r % 2 else order:
                        results[name][i].append(ns(argv))
            med = {name: [statistics.median(v) for v in sides] for name, sides in results.items()}
            mb = BIG / (1 << 20)
            files, stream = med["read"]
            print(f"Go {args.version}, through tcp:// over veth, {args.rounds} rounds, medians (sides alternating):")
            print(f"  read 256 MiB: target's file {mb / (files / 1e9):.0f} MiB/s, plain TCP stream "
                  f"{mb / (stream / 1e9):.0f} MiB/s: ratio {stream / files:.3f} (goal >= 0.5)")
            print(f"  stat p50 {med['stat'][0] / 1000:.1f} us; WalkDir {TREE} files {med['walk'][0] / 1e6:.1f} ms")
        finally:
            for proc in (server, agent):
                if proc:
                    proc.kill()
                    proc.wait()
            token.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--version", default=go_toolchains.selected_versions()[-1])
    ap.add_argument("--tcp", action="store_true", help="through a tcp:// agent over veth")
    args = ap.parse_args()
    exe = str(gobuild.build(args.version, "default", "files"))
    tether = [sys.executable, "-m", "tether", "exec"]
    if args.tcp:
        return over_tcp(args, exe, tether)
    shutil.rmtree(LOCAL, ignore_errors=True)
    populate(LOCAL)
    target = start_target()
    try:
        rows = {"read": ("time-read", "big"), "stat": ("time-stat", "config.json"), "walk": ("time-walk", "tree")}
        results = {name: {"tether": [], "local": [], "tether, local file": []} for name in rows}
        for r in range(args.rounds):
            for name, (cmd, rel) in rows.items():
                sides = [("tether", tether + ["-t", f"pid:{target.pid}", "--", exe, cmd, f"/srv/{rel}"]),
                         ("local", [exe, cmd, str(LOCAL / rel)]),
                         ("tether, local file", tether + ["-t", f"pid:{target.pid}", "--", exe, cmd, str(LOCAL / rel)])]
                if r % 2:
                    sides.reverse()
                for side, argv in sides:
                    results[name][side].append(ns(argv))
        med = {name: {side: statistics.median(v) for side, v in sides.items()} for name, sides in results.items()}
        print(f"Go {args.version}, {args.rounds} rounds, medians (sides alternating):")
        mb = BIG / (1 << 20)
        read = med["read"]
        print(f"  read 256 MiB: target {mb / (read['tether'] / 1e9):.0f} MiB/s, local {mb / (read['local'] / 1e9):.0f} "
              f"MiB/s: ratio {read['local'] / read['tether']:.3f} (goal >= 0.95)")
        st = med["stat"]
        print(f"  stat p50: target {st['tether'] / 1000:.1f} us, local {st['local'] / 1000:.1f} us: added "
              f"{(st['tether'] - st['local']) / 1000:.1f} us (goal <= 50); a local file under tether: "
              f"{st['tether, local file'] / 1000:.1f} us")
        wk = med["walk"]
        print(f"  WalkDir {TREE} files: target {wk['tether'] / 1e6:.1f} ms, local {wk['local'] / 1e6:.1f} ms: ratio "
              f"{wk['local'] / wk['tether']:.3f} (goal >= 0.3); local files under tether "
              f"{wk['tether, local file'] / 1e6:.1f} ms")
    finally:
        target.kill()
        target.wait()
        shutil.rmtree(LOCAL, ignore_errors=True)


if __name__ == "__main__":
    main()
