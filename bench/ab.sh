#!/usr/bin/env bash
# A/B of two shardlog binaries in the same minutes: NDJSON batches of 1000 (8 connections), keyed
# JSON batches of 1000 over 64 keys (numbered streams, cross-shard),
# one-commit writes (64 connections) and the pipelined timeline read, each against a fresh
# server, binaries alternating, ROUNDS rounds. Needs `cargo build --release -p ingest -p bench`.
# Usage: bash bench/ab.sh OLD_SHARDLOG NEW_SHARDLOG [ROUNDS]
#   (an old binary: git worktree add /work/old REV --detach; cd /work/old;
#    CARGO_TARGET_DIR=/work/old/target cargo build --release -p ingest)
set -u
cd "$(dirname "$0")/.."
B=target/release/shardlog-bench
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
run() { # binary label
    rm -rf "$data/d"
    "$1" serve --listen 127.0.0.1:7197 --data-dir "$data/d" > "$data/server.log" 2>&1 &
    local pid=$!
    until curl -sf 127.0.0.1:7197/readyz > /dev/null; do sleep 0.1; done
    echo "$2 | batch 1000: $($B load --addr 127.0.0.1:7197 --seconds 6 | grep 'commits/s' | head -1)"
    echo "$2 | keyed json 1000: $($B load --addr 127.0.0.1:7197 --seconds 6 --format json --keyed | grep 'commits/s' | head -1)"
    echo "$2 | batch 1 x64: $($B load --addr 127.0.0.1:7197 --seconds 6 --batch 1 --connections 64 | grep 'commits/s' | head -1)"
    echo "$2 | read: $($B read --addr 127.0.0.1:7197 --seconds 5 | grep 'commits/s' | head -1)"
    kill -TERM $pid; wait $pid
}
for _ in $(seq "${3:-3}"); do run "$1" old; run "$2" new; done
