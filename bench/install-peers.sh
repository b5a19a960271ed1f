#!/usr/bin/env bash
# Installs the peers `shardlog-bench compare` measures shardlog against, from Debian's packages:
# Redis (Streams, with redis-benchmark), NATS server (JetStream), PostgreSQL, and nginx (the
# HTTP ceiling of the many-producers rows). compare starts each itself on loopback
# ports with temporary data directories, so the services the packages enable are stopped here
# (they would hold the default ports and spend the CPU the comparison measures).
# Run as root (or with sudo). Idempotent.
set -euo pipefail

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)

"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    redis-server redis-tools nats-server postgresql nginx

# Leave no packaged service running beside the benchmark (no init system: nothing to stop).
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    "${sudo[@]}" systemctl stop redis-server postgresql nats-server nginx 2>/dev/null || true
fi
"${sudo[@]}" pkill -x redis-server 2>/dev/null || true
"${sudo[@]}" pkill -x nginx 2>/dev/null || true

for p in redis-server redis-benchmark nats-server nginx; do
    command -v "$p" >/dev/null || { echo "missing after install: $p" >&2; exit 1; }
done
ls /usr/lib/postgresql/*/bin/postgres >/dev/null || { echo "missing: postgres" >&2; exit 1; }
echo "peers installed: $(redis-server --version | cut -d' ' -f1-3), nats-server $(nats-server --version | awk '{print $NF}'), $(ls -d /usr/lib/postgresql/*/ | xargs -n1 basename | sed 's/^/PostgreSQL /')"
