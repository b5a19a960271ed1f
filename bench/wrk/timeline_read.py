"""Reads a whole log's merged timeline as NDJSON pages of 10 000 and prints commits/s.

Usage: python3 bench/wrk/timeline_read.py [host:port] [log]   (eventual consistency)
"""
import http.client
import sys
import time

addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7070"
log = sys.argv[2] if len(sys.argv) > 2 else "bench"
host, port = addr.split(":")
conn = http.client.HTTPConnection(host, int(port))
after, n, started = "", 0, time.time()
while True:
    q = f"/v1/logs/{log}/timeline?limit=10000&consistency=eventual" + (f"&after={after}" if after else "")
    conn.request("GET", q, headers={"Accept": "application/x-ndjson"})
    resp = conn.getresponse()
    lines = resp.read().count(b"\n")
    if resp.status != 200 or lines == 0:
        break
    n += lines
    after = resp.getheader("x-shardlog-next")
elapsed = time.time() - started
print(f"timeline NDJSON read: {n} commits in {elapsed:.2f} s = {n / elapsed / 1e6:.2f} M commits/s")
