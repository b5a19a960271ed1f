"""Latency of one-commit timeline reads, eventual then strong, twice (run it while a load
generator writes, to see what `strong` adds).

Usage: python3 bench/wrk/strong_latency.py [host:port] [log] [requests]
"""
import http.client
import sys
import time

addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7070"
log = sys.argv[2] if len(sys.argv) > 2 else "bench"
count = int(sys.argv[3]) if len(sys.argv) > 3 else 300
host, port = addr.split(":")
conn = http.client.HTTPConnection(host, int(port))


def latencies(consistency):
    xs = []
    for _ in range(count):
        t = time.perf_counter()
        conn.request("GET", f"/v1/logs/{log}/timeline?limit=1&consistency={consistency}")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, resp.status
        xs.append((time.perf_counter() - t) * 1000)
    xs.sort()
    return xs[len(xs) // 2], xs[int(len(xs) * 0.99)]


for consistency in ["eventual", "strong", "eventual", "strong"]:
    p50, p99 = latencies(consistency)
    print(f"{consistency:9s} p50 {p50:.2f} ms  p99 {p99:.2f} ms")
