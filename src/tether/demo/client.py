"""The demo's client when no Go toolchain is at hand: the same lines as client.go, from a program
that uses libc (its connects and name lookups are libc's, interposed by the layer)."""
import os
import socket
import sys
import time
import urllib.parse
import urllib.request

url = sys.argv[1]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(url, timeout=5) as resp:
        print(f"get {resp.status} {resp.read().decode().strip()}")
except OSError as e:
    print("get error:", e)
    sys.exit(1)
print(f"env {os.environ.get('DEMO_GREETING', '')}")
parts = urllib.parse.urlsplit(url)
took = []
for _ in range(50):
    start = time.perf_counter()
    socket.create_connection((parts.hostname, parts.port), timeout=5).close()
    took.append(time.perf_counter() - start)
took.sort()
print(f"connect_p50_us {took[len(took) // 2] * 1e6:.0f}")
