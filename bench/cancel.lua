-- wrk script for `make bench`: every request names a different order, every answer is counted.
--
-- Orders are numbered PREFIX .. zero-padded (FIRST + i) for i = 0 .. COUNT - 1, the way
-- bench.py seeds them. Once all COUNT have been sent, or SECONDS have passed, the connections
-- only ask for /healthz (never an order twice) and the thread stops as soon as every
-- cancellation sent has been answered: nothing is left in flight that the database check
-- would count and we would not. It then prints "BENCH-DRAINED", on which bench.py interrupts
-- wrk (whose main thread would otherwise sleep out all of -d, the outer bound of the drain).
-- The rate is taken between the first request and the last answer, by the monotonic clock.
-- done() prints one line starting with "BENCH " holding JSON that bench.py reads.
--
-- Environment: BENCH_API_CODE, BENCH_FORMAT (json | xml), BENCH_PREFIX, BENCH_WIDTH,
-- BENCH_FIRST, BENCH_COUNT, BENCH_SECONDS, BENCH_MODE (cancel | noop: count every 200 as an answer),
-- BENCH_KEY_PREFIX (when set, every cancellation carries Idempotency-Key: PREFIX .. its order
-- number, so a run's keys are all distinct, and a second run with the same prefix replays them;
-- answers marked Idempotent-Replayed: true are counted as "replayed").

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local function now()
   ffi.C.clock_gettime(1, clock) -- CLOCK_MONOTONIC
   return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) / 1e9
end

local api_code = os.getenv("BENCH_API_CODE") or ""
local format = os.getenv("BENCH_FORMAT") or "json"
local prefix = os.getenv("BENCH_PREFIX") or "B"
local width = tonumber(os.getenv("BENCH_WIDTH") or "7")
local first_number = tonumber(os.getenv("BENCH_FIRST") or "0")
local count = tonumber(os.getenv("BENCH_COUNT") or "1000000000")
local mode = os.getenv("BENCH_MODE") or "cancel"
local seconds = tonumber(os.getenv("BENCH_SECONDS") or "1000000")
local deadline = nil
local path = "/web-api/order/CancelOrderByNumber"
local number_format = "%s%0" .. width .. "d"
local key_prefix = os.getenv("BENCH_KEY_PREFIX") or ""

local headers
if format == "xml" then
   headers = { ["apiCode"] = api_code, ["Content-Type"] = "text/xml", ["Accept"] = "text/xml" }
else
   headers = { ["apiCode"] = api_code, ["Content-Type"] = "application/json", ["Accept"] = "application/json" }
end

-- Per-thread counters, read by done() through thread:get().
sent = 0
canceled = 0
refused = 0
failed = 0
strays = 0
replayed = 0
started = 0
finished = 0
codes = {}

local threads = {}
function setup(thread)
   table.insert(threads, thread)
end

-- wrk calls request() once before any connection opens, to check the script, and throws the
-- result away: that call must not use up an order.
local checked = false

function request()
   if not checked then
      checked = true
      return wrk.format("GET", "/healthz")
   end
   if sent == 0 then
      started = now()
      deadline = started + seconds
   end
   if sent >= count or (sent % 64 == 0 and now() > deadline) then
      count = sent -- no more cancellations: drain the ones in flight
      return wrk.format("GET", "/healthz")
   end
   local number = string.format(number_format, prefix, first_number + sent)
   sent = sent + 1
   local body
   if format == "xml" then
      body = "<CancelOrderByNumberRequest><orderNumber>" .. number .. "</orderNumber></CancelOrderByNumberRequest>"
   else
      body = '{"orderNumber":"' .. number .. '"}'
   end
   if key_prefix ~= "" then
      headers["Idempotency-Key"] = key_prefix .. number -- wrk.format copies it: one table will do
   end
   return wrk.format("POST", path, headers, body)
end

local drained = false
local function stop_when_drained()
   if not drained and sent >= count and canceled + refused + failed >= count then
      drained = true
      io.write("BENCH-DRAINED\n")
      io.stdout:flush()
      wrk.thread:stop()
   end
end

function response(status, headers, body)
   if string.find(body, "isCanceled", 1, true) == nil then
      if status ~= 200 then strays = strays + 1 end
      -- a /healthz answer after the orders ran out (every cancellation answer says isCanceled);
      -- the last cancellation may have been answered before count was lowered to what was sent
      stop_when_drained()
      return
   elseif status ~= 200 then
      failed = failed + 1
   elseif mode == "noop" then
      canceled = canceled + 1 -- every answer of the no-op route counts as one
   elseif string.find(body, '"isCanceled":true', 1, true) or string.find(body, "<isCanceled>true<", 1, true) then
      canceled = canceled + 1
   else
      refused = refused + 1
      local code = string.match(body, '"code":(%d+)') or string.match(body, "<code>(%d+)</code>") or "?"
      codes[code] = (codes[code] or 0) + 1
   end
   if headers["idempotent-replayed"] == "true" or headers["Idempotent-Replayed"] == "true" then
      replayed = replayed + 1 -- the stored answer again (counted above as what it says, too)
   end
   finished = now()
   stop_when_drained()
end

function done(summary, latency, requests)
   local total = { canceled = 0, refused = 0, failed = 0, sent = 0, strays = 0, replayed = 0 }
   local started_at, finished_at = nil, 0
   local code_counts = {}
   for _, thread in ipairs(threads) do
      for name, _ in pairs(total) do
         total[name] = total[name] + thread:get(name)
      end
      local s = thread:get("started")
      if s > 0 and (started_at == nil or s < started_at) then started_at = s end
      finished_at = math.max(finished_at, thread:get("finished"))
      for code, n in pairs(thread:get("codes")) do
         code_counts[code] = (code_counts[code] or 0) + n
      end
   end
   local parts = {}
   for code, n in pairs(code_counts) do
      table.insert(parts, string.format('"%s":%d', code, n))
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH {"sent":%d,"canceled":%d,"refused":%d,"failed":%d,"strays":%d,"replayed":%d,"codes":{%s},' ..
      '"seconds":%.6f,"wrk_seconds":%.6f,"wrk_requests":%d,' ..
      '"socket_errors":%d,"http_errors":%d,"timeouts":%d,' ..
      '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
      total.sent, total.canceled, total.refused, total.failed, total.strays, total.replayed,
      table.concat(parts, ","),
      (started_at and finished_at > started_at) and (finished_at - started_at) or 0,
      summary.duration / 1e6, summary.requests,
      errors.connect + errors.read + errors.write, errors.status, errors.timeout,
      latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
      latency.max / 1000))
end
