-- Specs of lua/autopgo/metrics.lua: counters, gauges, histograms and the text exposition.
local metrics = require "autopgo.metrics"

describe("metrics", function()
  it("renders counters and gauges with labels in the text format", function()
    local r = metrics.registry()
    local uploads = r:counter("autopgo_uploads_total", "Uploads by status.", { "status" })
    local size = r:gauge("autopgo_profile_size_bytes", "Size of the merged profile.", { "app" })
    uploads:inc({ status = "201" })
    uploads:inc({ status = "201" }, 2)
    uploads:inc({ status = "400" })
    size:set({ app = 'we"ird\\' }, 1024)
    assert.equals(table.concat({
      "# HELP autopgo_uploads_total Uploads by status.",
      "# TYPE autopgo_uploads_total counter",
      'autopgo_uploads_total{status="201"} 3',
      'autopgo_uploads_total{status="400"} 1',
      "# HELP autopgo_profile_size_bytes Size of the merged profile.",
      "# TYPE autopgo_profile_size_bytes gauge",
      'autopgo_profile_size_bytes{app="we\\"ird\\\\"} 1024',
    }, "\n") .. "\n", r:render())
    assert.equals(3, uploads:get({ status = "201" }))
    size:remove({ app = 'we"ird\\' })
    assert.is_nil(r:render():find("we", 1, true))
  end)

  it("renders cumulative histogram buckets, sum and count", function()
    local r = metrics.registry()
    local h = r:histogram("merge_seconds", "Merge duration.", nil, { 0.1, 1 })
    h:observe(nil, 0.05)
    h:observe(nil, 0.5)
    h:observe(nil, 3)
    assert.equals(table.concat({
      "# HELP merge_seconds Merge duration.",
      "# TYPE merge_seconds histogram",
      'merge_seconds_bucket{le="0.1"} 1',
      'merge_seconds_bucket{le="1"} 2',
      'merge_seconds_bucket{le="+Inf"} 3',
      "merge_seconds_sum 3.55",
      "merge_seconds_count 3",
    }, "\n") .. "\n", r:render())
  end)

  it("returns the existing metric when one is defined twice, and refuses a kind change", function()
    local r = metrics.registry()
    local a = r:counter("x_total", "x", { "k" })
    assert.equals(a, r:counter("x_total", "x", { "k" }))
    assert.has_error(function() r:gauge("x_total", "x") end)
  end)

  it("refuses a missing label, a falling counter and a bad name", function()
    local r = metrics.registry()
    local c = r:counter("y_total", "y", { "k" })
    assert.has_error(function() c:inc({}) end)
    assert.has_error(function() c:inc({ k = "v" }, -1) end)
    assert.has_error(function() r:counter("bad name", "z") end)
  end)

  it("has process gauges in the default registry", function()
    local text = metrics.render()
    assert.matches("\nprocess_resident_memory_bytes %d+\n", text)
    assert.matches("\nprocess_start_time_seconds %d", text)
  end)
end)
