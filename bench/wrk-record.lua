-- wrk script for record-countd: GET /record-count with a fresh value per request.
-- Each wrk thread is its own client (wrk-<nonce>-<thread>), counting 1, 2, 3, ... so no record is a
-- duplicate. The nonce (first script argument) keeps repeated runs against one database distinct.
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

function init(args)
  nonce = args[1] or tostring(os.time())
  client = "wrk-" .. nonce .. "-" .. tostring(tid)
  counter = 0
end

function request()
  counter = counter + 1
  return wrk.format("GET", "/record-count?value=" .. counter .. "&client=" .. client)
end

function done(summary, latency, requests)
  io.write(string.format("P99_US %d\n", latency:percentile(99)))
  io.write(string.format("P50_US %d\n", latency:percentile(50)))
  io.write(string.format("MAXLAT_US %d\n", latency.max))
end
