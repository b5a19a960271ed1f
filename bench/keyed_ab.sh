#!/usr/bin/env bash
# Keyed against unkeyed ingest, sync and async, 20 and 1000 commits per JSON request, plus
# unkeyed NDJSON and the watermark lag under cross-shard load, for one or more shardlog
# binaries in the same run (A/B): each run gets a fresh server and data directory.
# Usage: bench/keyed_ab.sh OUT_DIR ROUNDS BINARY...   (shardlog-bench from target/release)
set -euo pipefail
out=$1; rounds=$2; shift 2
bench=${BENCH:-target/release/shardlog-bench}
seconds=${SECONDS_PER_RUN:-8}
mkdir -p "$out"
port=7391
run() { # label binary args...
    local label=$1 bin=$2; shift 2
    local dir; dir=$(mktemp -d)
    "$bin" serve --listen 127.0.0.1:$port --data-dir "$dir" --default-shards 8 >/dev/null 2>&1 &
    local pid=$!
    for _ in $(seq 100); do curl -sf 127.0.0.1:$port/readyz >/dev/null && break; sleep 0.1; done
    "$bench" "$@" --addr 127.0.0.1:$port --json "$out/$label.json" >"$out/$label.txt" 2>&1 || echo "FAILED $label" >>"$out/$label.txt"
    # The server's CPU (user + system, clock ticks) over the whole run: steadier than
    # throughput on a noisy machine.
    awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' /proc/$pid/stat >"$out/$label.cpu"
    kill -TERM $pid; wait $pid || true
    rm -rf "$dir"
}
for r in $(seq "$rounds"); do
    i=0
    for bin in "$@"; do
        i=$((i + 1))
        for d in async sync; do
            for b in 20 1000; do
                run "b$i-r$r-json-$d-$b-unkeyed" "$bin" load --format json --batch $b --durability $d --seconds "$seconds"
                run "b$i-r$r-json-$d-$b-keyed" "$bin" load --format json --keyed --batch $b --durability $d --seconds "$seconds"
            done
        done
        run "b$i-r$r-ndjson-async-1000-unkeyed" "$bin" load --batch 1000 --durability async --seconds "$seconds"
        run "b$i-r$r-lag-sync" "$bin" lag --durability sync --probes 1000
        run "b$i-r$r-lag-async" "$bin" lag --durability async --probes 1000
    done
done
