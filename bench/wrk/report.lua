-- wrk's end-of-run hook: one machine-readable line (parsed by bench/ringbench/wrk.py).
-- Only `done` is defined, so wrk keeps its fast path (no Lua per request).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RINGBENCH-WRK {"duration_us": %.0f, "requests": %.0f, "bytes": %.0f, ' ..
    '"errors": {"connect": %.0f, "read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f}, ' ..
    '"latency_us": {"min": %.1f, "mean": %.1f, "p50": %.1f, "p90": %.1f, "p99": %.1f, "p999": %.1f, "max": %.1f}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
