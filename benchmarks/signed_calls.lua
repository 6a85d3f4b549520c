-- wrk script for benchmarks/webhook_throughput.py: POST /twilio/voice with pre-generated,
-- signed incoming-call bodies, one distinct call (CallSid) per request.
--
--   wrk ... -s benchmarks/signed_calls.lua http://127.0.0.1:PORT -- REQUESTS_FILE THREADS [check]
--
-- REQUESTS_FILE has one request a line: "<X-Twilio-Signature>\t<urlencoded body>". Thread k
-- (0-based) sends lines k, k+THREADS, k+2*THREADS, ... in order, so no two threads send the
-- same call. A thread that runs out starts over and counts it in `wrapped` (the caller treats
-- that as a failed run: repeated CallSids would not insert new rows).
-- With "check", every response is inspected: 2xx with the language menu (<Gather) counts as
-- `ok`; 2xx without it (e.g. the spoken technical-error fallback) as `unexpected`; anything else
-- as `non2xx`. Without it response() is removed, so wrk does not hand headers and bodies to Lua
-- (that costs the client CPU, more so against the faster server): timed runs leave it off and
-- rely on wrk's own count of statuses > 399 and on the caller's count of inserted rows.
-- `calls` counts request() calls: wrk makes one extra call per run to validate the script, and
-- the rest were sent (answered, or still in flight when the run's time was up).
-- done() prints one line "BENCH_JSON {...}" with the figures.

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   local path = args[1]
   local nthreads = tonumber(args[2])
   reqs = {}
   local i = 0
   for line in io.lines(path) do
      if i % nthreads == id then
         local sig, body = line:match("^([^\t]*)\t(.*)$")
         reqs[#reqs + 1] = wrk.format("POST", "/twilio/voice", {
            ["Content-Type"] = "application/x-www-form-urlencoded",
            ["X-Twilio-Signature"] = sig,
         }, body)
      end
      i = i + 1
   end
   if #reqs == 0 then
      error("no requests for thread " .. id .. " in " .. path)
   end
   if args[3] ~= "check" then
      response = nil
   end
   pos = 0
   calls = 0        -- request() calls (requests generated, whether or not answered)
   wrapped = 0
   ok = 0
   unexpected = 0
   non2xx = 0
   codes = ""       -- "403 500 ..." for the first non-2xx statuses
   sample = ""      -- first unexpected body, for diagnosis
   size = 0         -- size of the first response body
end

function request()
   calls = calls + 1
   pos = pos + 1
   if pos > #reqs then
      pos = 1
      wrapped = wrapped + 1
   end
   return reqs[pos]
end

function response(status, headers, body)
   if size == 0 then
      size = #body
   end
   if status >= 200 and status < 300 then
      if body:find("<Gather", 1, true) then
         ok = ok + 1
      else
         unexpected = unexpected + 1
         if sample == "" then sample = body:sub(1, 300) end
      end
   else
      non2xx = non2xx + 1
      if #codes < 60 then codes = codes .. status .. " " end
   end
end

local function json_string(s)
   s = s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end)
   return '"' .. s .. '"'
end

function done(summary, latency, requests)
   local t = {calls = 0, wrapped = 0, ok = 0, unexpected = 0, non2xx = 0, size = 0}
   local codes, sample = "", ""
   for _, thread in ipairs(threads) do
      for k, _ in pairs(t) do
         if k == "size" then
            t.size = math.max(t.size, thread:get("size"))
         else
            t[k] = t[k] + thread:get(k)
         end
      end
      codes = codes .. thread:get("codes")
      if sample == "" then sample = thread:get("sample") end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, ' ..
      '"calls": %d, "wrapped": %d, "ok": %d, "unexpected": %d, "non2xx": %d, ' ..
      '"response_size": %d, "non2xx_codes": %s, "unexpected_sample": %s}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      latency.mean, t.calls, t.wrapped, t.ok, t.unexpected, t.non2xx, t.size,
      json_string(codes), json_string(sample)))
end
