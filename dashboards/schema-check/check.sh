#!/usr/bin/env bash
# Offline check of dashboards/grafana/shardlog-overview.json against @grafana/schema:
# tsc type-checks it against the package's Dashboard/Panel/RowPanel and panel option types
# (check.ts), then lint.mjs checks the values tsc cannot see (enum-like strings) and the
# dashboard's conventions ($__rate_interval, ${datasource}, $instance/$log filters).
# Needs node and npm; installs the pinned packages from package-lock.json on first use.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
npx --no-install tsc -p .
node lint.mjs
