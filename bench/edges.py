#!/usr/bin/env python3
"""Hostile-client figures for shardlog (issue 13): memory under 10x overload, and service to
well-behaved clients while slowloris connections run.

1. overload: budget inflight_body_bytes_max = 64 MiB, 64 clients each POSTing 8 MiB NDJSON
   bodies (1 KiB commits) back to back for DURATION seconds: 8x the budget offered at once.
   Reports VmHWM and the highest sampled RssAnon against the budget, and accepted/shed counts.
2. slowloris: well-behaved clients (16 threads, one-commit POSTs on keep-alive connections)
   for 20 s alone, then 20 s with 1000 slowloris connections trickling a request head one byte
   every 2 s (reconnecting when cut off). Reports each phase's requests/s and p50/p99/p999.

Usage: python3 bench/edges.py target/release/shardlog [overload_seconds]
(SHARDLOG_EDGES=overload or slowloris runs one part; the server inherits the environment, so
GLIBC_TUNABLES set here reaches it.)
"""
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1]
DURATION = int(sys.argv[2]) if len(sys.argv) > 2 else 60
PORT = 7181


def start(data, config):
    cfg = os.path.join(data, "shardlog.toml")
    with open(cfg, "w") as f:
        f.write(config)
    p = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{PORT}", "--data-dir",
                          os.path.join(data, "d"), "--config", cfg],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return p
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("server did not start")


def status_kb(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def overload():
    budget = 64 << 20
    with tempfile.TemporaryDirectory(dir="/work") as d:
        p = start(d, f"inflight_body_bytes_max = {budget}\nbody_bytes_max = {8 << 20}\n"
                     "durability = \"async\"\n")
        c = http.client.HTTPConnection("127.0.0.1", PORT)
        c.request("PUT", "/v1/logs/o", body=b"{}")
        c.getresponse().read()
        idle_hwm, idle_anon = status_kb(p.pid, "VmHWM"), status_kb(p.pid, "RssAnon")
        line = b'{"pad":"' + b"p" * 1013 + b'"}\n'
        body = line * ((8 << 20) // len(line))
        counts = {"ok": 0, "shed": 0, "other": 0}
        lock = threading.Lock()
        end = time.time() + DURATION

        def client():
            while time.time() < end:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
                    c.request("POST", "/v1/logs/o/commits?ids=false", body=body,
                              headers={"content-type": "application/x-ndjson"})
                    r = c.getresponse()
                    r.read()
                    k = "ok" if r.status == 200 else "shed" if r.status == 503 else "other"
                except OSError:
                    k = "other"
                with lock:
                    counts[k] += 1

        ts = [threading.Thread(target=client) for _ in range(64)]
        for t in ts:
            t.start()
        peak_anon = idle_anon
        while time.time() < end:
            peak_anon = max(peak_anon, status_kb(p.pid, "RssAnon"))
            time.sleep(0.02)
        for t in ts:
            t.join()
        hwm = status_kb(p.pid, "VmHWM")
        p.terminate()
        p.wait()
        mib = lambda kb: kb / 1024
        print(f"overload {DURATION}s, 64 clients x 8 MiB, budget 64 MiB: "
              f"{counts['ok']} accepted ({counts['ok'] * 8 / DURATION:.0f} MB/s), "
              f"{counts['shed']} shed, {counts['other']} other")
        print(f"  RssAnon idle {mib(idle_anon):.0f} MiB, peak sampled {mib(peak_anon):.0f} MiB "
              f"({(peak_anon - idle_anon) / (budget / 1024):.2f}x the budget above idle); "
              f"VmHWM idle {mib(idle_hwm):.0f} MiB, end {mib(hwm):.0f} MiB "
              f"(includes mapped segment pages)")


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")


def good_clients(seconds):
    lat, lock = [], threading.Lock()
    end = time.time() + seconds

    def run():
        c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        mine = []
        while time.time() < end:
            t = time.perf_counter()
            try:
                c.request("POST", "/v1/logs/s/commits?durability=async", body=b'{"n":1}\n',
                          headers={"content-type": "application/x-ndjson"})
                r = c.getresponse()
                r.read()
                if r.status == 200:
                    mine.append(time.perf_counter() - t)
            except OSError:
                c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        with lock:
            lat.extend(mine)

    ts = [threading.Thread(target=run) for _ in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return lat


def slowloris():
    with tempfile.TemporaryDirectory(dir="/work") as d:
        p = start(d, "")
        alone = good_clients(20)
        stop = time.time() + 25
        cut = [0]

        def loris(n):
            socks = []
            for _ in range(n):
                try:
                    s = socket.create_connection(("127.0.0.1", PORT))
                    s.sendall(b"POST /v1/logs/s/commits HTTP/1.1\r\nhost: localhost\r\n")
                    socks.append(s)
                except OSError:
                    pass
            while time.time() < stop:
                time.sleep(2)
                for i, s in enumerate(socks):
                    try:
                        s.sendall(b"x")
                    except OSError:
                        cut[0] += 1
                        try:
                            s = socket.create_connection(("127.0.0.1", PORT))
                            s.sendall(b"POST /v1/logs/s/commits HTTP/1.1\r\nhost: localhost\r\n")
                            socks[i] = s
                        except OSError:
                            pass

        lt = [threading.Thread(target=loris, args=(250,)) for _ in range(4)]
        for t in lt:
            t.start()
        time.sleep(2)
        conns = status_fd(p.pid)
        under = good_clients(20)
        for t in lt:
            t.join()
        p.terminate()
        p.wait()
        for name, lat in (("alone", alone), ("with 1000 slowloris", under)):
            print(f"good clients {name}: {len(lat) / 20:.0f} req/s, p50 {percentile(lat, .5):.2f} ms, "
                  f"p99 {percentile(lat, .99):.2f} ms, p999 {percentile(lat, .999):.2f} ms")
        print(f"  server fds while slowloris ran: {conns}; slowloris connections cut: {cut[0]}")


def status_fd(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


if __name__ == "__main__":
    # SHARDLOG_EDGES=overload (or slowloris) runs one part only.
    only = os.environ.get("SHARDLOG_EDGES")
    if only in (None, "overload"):
        overload()
    if only in (None, "slowloris"):
        slowloris()
