-- wrk script: POST batches of 1000 NDJSON commits of 100 bytes each to shardlog.
-- Usage: wrk -t2 -c16 -d20s -s bench/wrk/ndjson.lua 'http://127.0.0.1:7070/v1/logs/bench/commits?durability=async&ids=false'
local lines = {}
for i = 1, 1000 do
  -- 100 bytes: a JSON object padded to length
  local s = string.format('{"i":%d,"pad":"', i)
  s = s .. string.rep("x", 100 - #s - 2) .. '"}'
  lines[i] = s
end
wrk.method = "POST"
wrk.body = table.concat(lines, "\n") .. "\n"
wrk.headers["Content-Type"] = "application/x-ndjson"

done = function(summary, latency, requests)
  io.write(string.format("commits/s %.0f  MB/s %.1f  p50 %.2fms  p99 %.2fms  p99.9 %.2fms  errors %d\n",
    summary.requests * 1000 / (summary.duration / 1e6),
    summary.requests * 1000 * 100 / (summary.duration / 1e6) / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
