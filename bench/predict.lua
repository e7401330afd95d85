-- wrk script of `make bench`: POST one JSON body, tag each request with its own X-Request-ID,
-- remember which ids got a 2xx answer, and write a JSON summary at the end.
--
-- Environment (read by wrk's Lua, set by bench/run.py):
--   BENCH_BODY_FILE  file holding the request body (JSON)
--   BENCH_AUTH       value of the Authorization header ("Bearer ...")
--   BENCH_ID_PREFIX  request-id prefix of this run: ids are "<prefix><thread>.<8 digits>"
--                    (Gatehouse keeps an incoming id of 8-64 [A-Za-z0-9._-], echoes it and
--                    stores it in each decision record: records match answered requests)
--   BENCH_WRK_OUT    where done() writes the summary (JSON)

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads)
end

function init(args)
   local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
   body = f:read("*a")
   f:close()
   prefix = (os.getenv("BENCH_ID_PREFIX") or "bench.") .. tid .. "."
   headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = os.getenv("BENCH_AUTH"),
   }
   sent = 0
   ok = 0
   ok_ids = {}
   statuses = {}
end

function request()
   sent = sent + 1
   headers["X-Request-ID"] = string.format("%s%08d", prefix, sent)
   return wrk.format("POST", nil, headers, body)
end

function response(status, hdrs, _)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
   if status >= 200 and status < 300 then
      ok = ok + 1
      local id = hdrs["X-Request-ID"] or hdrs["x-request-id"] or hdrs["X-Request-Id"]
      if id then
         ok_ids[#ok_ids + 1] = id
      end
   end
end

local function quote(s)
   return '"' .. tostring(s):gsub('[%c"\\]', "") .. '"'
end

function done(summary, latency, _)
   local out = assert(io.open(os.getenv("BENCH_WRK_OUT"), "w"))
   local total_sent, total_ok, merged = 0, 0, {}
   out:write('{"ids": [')
   local first = true
   for _, t in ipairs(threads) do
      total_sent = total_sent + (t:get("sent") or 0)
      total_ok = total_ok + (t:get("ok") or 0)
      for code, n in pairs(t:get("statuses") or {}) do
         merged[code] = (merged[code] or 0) + n
      end
      for _, id in ipairs(t:get("ok_ids") or {}) do
         out:write((first and "" or ",") .. quote(id))
         first = false
      end
   end
   out:write('], "statuses": {')
   first = true
   for code, n in pairs(merged) do
      out:write((first and "" or ",") .. quote(code) .. ":" .. n)
      first = false
   end
   local e = summary.errors
   out:write(string.format(
      '}, "requests": %d, "sent": %d, "ok": %d, "duration_us": %d, "bytes": %d, '
         .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
         .. '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "mean": %.1f, "max": %d}}\n',
      summary.requests, total_sent, total_ok, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.mean, latency.max
   ))
   out:close()
end
