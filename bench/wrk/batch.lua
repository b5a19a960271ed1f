-- wrk script: POST batches of commits of 100-byte payloads to shardlog, as NDJSON or JSON (JSON
-- commits optionally keyed over 64 keys, so that a request spans shards).
-- Usage: wrk -t1 -c8 -d20s -s bench/wrk/batch.lua \
--          'http://127.0.0.1:7070/v1/logs/bench/commits?durability=async&ids=false' \
--          -- ndjson|json [keyed]
-- Commits per request: WRK_COMMITS in the environment (default 1000). Not a script argument:
-- `done` runs in a Lua state of its own, where `init` never ran.
local COMMITS, PAYLOAD_BYTES = tonumber(os.getenv("WRK_COMMITS") or "1000"), 100
local req

function init(args)
  local format = args[1] or "ndjson"
  local keyed = args[2] == "keyed"
  local payloads = {}
  for i = 1, COMMITS do
    local s = string.format('{"i":%d,"pad":"', i)
    payloads[i] = s .. string.rep("x", PAYLOAD_BYTES - #s - 2) .. '"}'
  end
  local body, ctype
  if format == "json" then
    for i = 1, COMMITS do
      local key = keyed and string.format('"key":"k%d",', i % 64) or ""
      payloads[i] = '{' .. key .. '"payload":' .. payloads[i] .. '}'
    end
    body, ctype = '{"commits":[' .. table.concat(payloads, ",") .. ']}', "application/json"
  else
    body, ctype = table.concat(payloads, "\n") .. "\n", "application/x-ndjson"
  end
  req = wrk.format("POST", nil, { ["Content-Type"] = ctype }, body)
end

function request()
  return req
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("commits/s %.0f  MB/s %.1f  p50 %.2fms  p99 %.2fms  p99.9 %.2fms  errors %d\n",
    summary.requests * COMMITS / secs, summary.requests * COMMITS * PAYLOAD_BYTES / secs / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    errors))
end
