-- wrk script for bench/soak.py: POST cancellations by number, cycling over the seeded orders.
-- SOAK_API_CODE, SOAK_ORDERS and SOAK_DELAY_MS (pause per connection between requests, which
-- is how the rate is held below the maximum) come from the environment.
local threads = {}
local code = os.getenv("SOAK_API_CODE")
local orders = tonumber(os.getenv("SOAK_ORDERS"))
local delay_ms = tonumber(os.getenv("SOAK_DELAY_MS") or "0")
local offset = tonumber(os.getenv("SOAK_OFFSET") or "0")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.headers["apiCode"] = code

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counter = offset
  cancelled = 0
  refused = 0
end

function request()
  counter = counter + 1
  local body = string.format('{"orderNumber":"SOAK%07d"}', counter % orders)
  return wrk.format(nil, "/web-api/order/CancelOrderByNumber", nil, body)
end

-- wrk waits whole milliseconds: a fractional delay is the floor or the ceiling, by chance,
-- so that its average is right.
local whole = math.floor(delay_ms)
local fraction = delay_ms - whole
if delay_ms > 0 then
  function delay()
    if math.random() < fraction then
      return whole + 1
    end
    return whole
  end
end

function response(status, headers, body)
  if string.find(body, '"isCanceled":true', 1, true) then
    cancelled = cancelled + 1
  elseif status == 200 then
    refused = refused + 1
  end
end

function done(summary, latency, requests)
  local c, r, last = 0, 0, 0
  for _, thread in ipairs(threads) do
    c = c + thread:get("cancelled")
    r = r + thread:get("refused")
    last = math.max(last, thread:get("counter"))
  end
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"cancelled":%d,"refused":%d,"last":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, c, r, last, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
