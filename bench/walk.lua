-- wrk script for the throughput benchmark: walk the request paths of the file named by
-- BENCH_PATHS (one a line), each thread its own share, round and round; a browser's
-- User-Agent (the middleware ignores requests without one, as a link-preview bot's).
local counter = 0
local paths = {}
local i = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local threads = tonumber(os.getenv("BENCH_THREADS") or "1")
  local n = 0
  for line in io.lines(os.getenv("BENCH_PATHS")) do
    if n % threads == id then
      paths[#paths + 1] = line
    end
    n = n + 1
  end
end

function request()
  i = i + 1
  if i > #paths then
    i = 1
  end
  return wrk.format("GET", paths[i], {
    ["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120",
  })
end
