#!/usr/bin/env bash
# First end-to-end figures: shardlog under wrk (1000-commit batches of 100-byte commits, NDJSON
# and JSON, async and sync) and Redis Streams (XADD, pipelined 100, AOF everysec / always) in the
# same run on the same machine. Needs: wrk, redis-server, redis-tools (Debian), and
# `cargo build --release -p ingest`. Load generator and server share the machine's cores.
# Usage: bash bench/wrk/run.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-15}
bin=target/release/shardlog
work=$(mktemp -d /work/shardlog-bench.XXXXXX 2>/dev/null || mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=7090

run_shardlog() { # format durability
    rm -rf "$work/data"
    $bin serve --listen 127.0.0.1:$port --data-dir "$work/data" > "$work/server.log" 2>&1 &
    local pid=$!
    until curl -sf "127.0.0.1:$port/readyz" > /dev/null; do sleep 0.1; done
    curl -sf -XPUT "127.0.0.1:$port/v1/logs/bench" -d '{}' > /dev/null
    local out
    out=$(wrk -t1 -c8 -d"${secs}s" --latency -s bench/wrk/batch.lua \
        "http://127.0.0.1:$port/v1/logs/bench/commits?durability=$2&ids=false" -- "$1" | grep '^commits/s')
    echo "| shardlog | $1, $2 | $out |"
    kill -TERM $pid; wait $pid || true
}

run_redis() { # appendfsync
    rm -rf "$work/redis"; mkdir -p "$work/redis"
    redis-server --port 7379 --dir "$work/redis" --appendonly yes --appendfsync "$1" --save "" \
        > "$work/redis.log" 2>&1 &
    local pid=$!
    until redis-cli -p 7379 ping > /dev/null 2>&1; do sleep 0.1; done
    local value
    value=$(printf 'x%.0s' $(seq 1 100))
    local n=$((secs * 300000))
    [ "$1" = always ] && n=$((secs * 20000))
    local out
    out=$(redis-benchmark -p 7379 -P 100 -c 8 -n $n -q XADD bench '*' f "$value" 2>&1 | tr '\r' '\n' | grep -E 'requests per second' | tail -1)
    echo "| redis XADD -P 100 | appendfsync $1 | $out |"
    kill $pid; wait $pid || true
}

echo "| system | workload | result |"
echo "|---|---|---|"
for fmt in ndjson json; do
    for d in async sync; do
        run_shardlog $fmt $d
    done
done
run_redis everysec
run_redis always
