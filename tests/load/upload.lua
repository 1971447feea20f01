-- wrk script: POST a real JPEG to /api/v1/classify and count responses by status.
-- IMAGE names the file (set by run.sh through the environment). POLITE=1 makes the clients
-- honour Retry-After (wrk keeps no per-connection state, so a 503 delays this thread's next
-- request by the advertised seconds); otherwise they retry at once, the worst case.
local f = assert(io.open(os.getenv("IMAGE"), "rb"))
local body = f:read("*all")
f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "image/jpeg"

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

local polite = os.getenv("POLITE") == "1"
local wait_ms = 0

function init(args)
  counts = {}
end

function delay()
  local d = wait_ms
  wait_ms = 0
  return d
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
  if polite and status == 503 then
    wait_ms = 1000 * (tonumber(headers["Retry-After"]) or 1)
  end
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for status, n in pairs(c) do
      total[status] = (total[status] or 0) + n
    end
  end
  io.write("STATUS")
  for status, n in pairs(total) do
    io.write(string.format(" %d=%d", status, n))
  end
  io.write("\n")
  io.write(string.format("LATENCY_US p50=%d p90=%d p99=%d max=%d\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
  io.write(string.format("SUMMARY requests=%d duration_us=%d errors_connect=%d errors_read=%d errors_timeout=%d errors_status=%d\n",
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.timeout, summary.errors.status))
end
