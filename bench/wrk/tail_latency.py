"""Latency from a write's acknowledgement to its delivery on a live SSE tail: opens
`tail?after=now`, writes single commits one at a time, and reports p50/p99 in milliseconds.

Usage: python3 bench/wrk/tail_latency.py [host:port] [log] [commits]
"""
import http.client
import json
import socket
import sys
import threading
import time

addr = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:7070"
log = sys.argv[2] if len(sys.argv) > 2 else "bench"
count = int(sys.argv[3]) if len(sys.argv) > 3 else 300
host, port = addr.split(":")
received = {}
ready = threading.Event()


def reader():
    s = socket.create_connection((host, int(port)))
    s.sendall(f"GET /v1/logs/{log}/tail?after=now HTTP/1.1\r\nhost: {addr}\r\n\r\n".encode())
    ready.set()
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return
        now = time.perf_counter()
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.startswith(b"id: "):
                received.setdefault(line[4:].strip().decode(), now)


# The log must exist before the tail opens (a write creates it).
setup = http.client.HTTPConnection(host, int(port))
setup.request("POST", f"/v1/logs/{log}/commits", body='{"setup": true}\n',
              headers={"Content-Type": "application/x-ndjson"})
setup.getresponse().read()

t = threading.Thread(target=reader, daemon=True)
t.start()
ready.wait()
time.sleep(0.3)
conn = http.client.HTTPConnection(host, int(port))
acked = {}
for i in range(count):
    conn.request("POST", f"/v1/logs/{log}/commits?durability=async", body=json.dumps({"i": i}) + "\n",
                 headers={"Content-Type": "application/x-ndjson"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    acked[body["ids"][0]] = time.perf_counter()
    time.sleep(0.002)
# Until every acknowledged commit was delivered, or 10 s (the tail may also deliver commits
# written before it opened: only the acknowledged ones count).
deadline = time.perf_counter() + 10
while time.perf_counter() < deadline and not all(i in received for i in acked):
    time.sleep(0.01)
lat = sorted((received[i] - acked[i]) * 1000 for i in acked if i in received)
print(f"tail delivery after ack: {len(lat)}/{count} delivered, p50 {lat[len(lat)//2]:.2f} ms, "
      f"p99 {lat[int(len(lat)*0.99)]:.2f} ms")
