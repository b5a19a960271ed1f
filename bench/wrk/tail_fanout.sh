#!/usr/bin/env bash
# What many live tails cost the server: starts shardlog (16 shards), opens TAILS NDJSON tails
# (`after=now`, via shardlog-bench read), writes RATE batches/s of 1000 × 100 B for 10 s (open
# loop), and prints the write latency, the server's CPU (utime+stime from /proc) and what the
# tails received. Needs `cargo build --release -p ingest -p bench`.
# Usage: bash bench/wrk/tail_fanout.sh [shardlog binary] [tails] [rate]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/shardlog}; tails=${2:-100}; rate=${3:-20}
bench=target/release/shardlog-bench
work=$(mktemp -d)
port=7411
"$bin" serve --listen 127.0.0.1:$port --data-dir "$work/data" --default-shards 16 >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
until curl -sf "127.0.0.1:$port/readyz" >/dev/null; do sleep 0.1; done
"$bench" load --addr 127.0.0.1:$port --batch 1 --connections 1 --count 1 >/dev/null
"$bench" read --addr 127.0.0.1:$port --log bench-0 --mode tail --tails "$tails" --from-now \
    --seconds 12 >"$work/tails.txt" &
reader=$!
sleep 1
ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
before=$(ticks)
"$bench" load --addr 127.0.0.1:$port --rate "$rate" --batch 1000 --seconds 10
after=$(ticks)
wait $reader
hz=$(getconf CLK_TCK)
echo "server CPU over the 10 s: $(( (after - before) * 100 / hz / 10 ))% of one core"
cat "$work/tails.txt"
