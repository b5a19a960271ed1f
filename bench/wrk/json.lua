-- wrk script: POST batches of 1000 JSON commits (100-byte payloads) to shardlog.
-- Usage: wrk -t2 -c16 -d20s -s bench/wrk/json.lua 'http://127.0.0.1:7070/v1/logs/bench/commits?durability=async&ids=false'
local items = {}
for i = 1, 1000 do
  local s = string.format('{"i":%d,"pad":"', i)
  s = s .. string.rep("x", 100 - #s - 2) .. '"}'
  items[i] = '{"payload":' .. s .. '}'
end
wrk.method = "POST"
wrk.body = '{"commits":[' .. table.concat(items, ",") .. ']}'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  io.write(string.format("commits/s %.0f  MB/s %.1f  p50 %.2fms  p99 %.2fms  p99.9 %.2fms  errors %d\n",
    summary.requests * 1000 / (summary.duration / 1e6),
    summary.requests * 1000 * 100 / (summary.duration / 1e6) / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
