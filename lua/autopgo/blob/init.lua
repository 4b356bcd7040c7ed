-- Blob stores behind one interface, chosen by the URL scheme of --blob-store-url (the same URL
-- strings as gocloud.dev): file:///dir, mem://, s3://bucket?region=..., gs://bucket,
-- azblob://container, redis://host:6379/0 (rediss:// for TLS). Adding a store is adding
-- lua/autopgo/blob/<module>.lua and a line below.
--
-- A store module returns { open = function(u, opts) -> store | nil, err, code } where u is
-- autopgo.url.parse(url) and opts may carry { insecure = bool }. Every store method runs in a
-- coroutine (it may yield on I/O) and returns its result, or fail.new("CODE", "message") with a
-- CODE callers act on: NOT_FOUND, PRECONDITION_FAILED, UNAUTHORIZED, UNAVAILABLE, INVALID, IO.
--
--   store:put(key, body, opts) -> { etag = "...", size = n }
--       body: a string; or an autopgo.bytes (an upload's body held once in C: req:body_bytes(),
--       sent or written from where it is, never made a Lua string but by mem://); or
--       { path = "/file" } streamed from disk; or { producer = fn, size = n }
--       where fn() returns the next chunk or nil at the end (it may yield). opts.if_match = etag
--       writes only over that exact version; opts.if_none_match = "*" writes only if absent
--       (PRECONDITION_FAILED otherwise); opts.content_type.
--   store:get(key, opts) -> { body = "...", etag, size, last_modified }; with opts.sink, each
--       chunk goes to sink(chunk) as it arrives (it may yield, which applies back-pressure) and
--       body is nil. last_modified is Unix seconds (a number). A get delivers exactly one version
--       of the object, whole, and its etag is that version's, even when a put replaces the object
--       while the body is being read. opts.if_match = etag reads only that version
--       (PRECONDITION_FAILED otherwise, before any chunk reaches the sink), so two reads (a hash
--       and a send) can be held to the same bytes.
--   store:stat(key) -> { etag, size, last_modified }
--   store:delete(key) -> true            (NOT_FOUND when absent)
--   store:list(prefix, opts) -> { { key, size, last_modified, etag }, ... } sorted by key, all pages;
--       opts.after = key lists only keys after it, opts.limit = n the first n of those (fewer
--       only when the listing ends: a bounded page, so the merge pass lists what it merges, not
--       the whole backlog). Stores that cannot ask the service for that apply it to the whole
--       listing with M.window.
--   store:health() -> true | nil, err, code
--   store:close()
--   store.name: a short description for logs and /api/health ("file:///data", "s3://bucket")
local modules = require "autopgo.modules"

local M = {}

M.schemes = {
  file = "autopgo.blob.file",
  mem = "autopgo.blob.mem",
  s3 = "autopgo.blob.s3",
  gs = "autopgo.blob.gcs",
  azblob = "autopgo.blob.azblob",
  redis = "autopgo.blob.redis",
  rediss = "autopgo.blob.redis",
}

--- The entries (sorted by key) after opts.after, at most opts.limit of them (opts may be nil).
function M.window(entries, opts)
  if not opts or (opts.after == nil and opts.limit == nil) then return entries end
  local out, limit = {}, opts.limit or math.huge
  for _, e in ipairs(entries) do
    if #out >= limit then break end
    if opts.after == nil or e.key > opts.after then out[#out + 1] = e end
  end
  return out
end

--- Opens the store for `raw_url`; returns it or fail.new("CODE", "message").
function M.open(raw_url, opts)
  local mod, u, code = modules.by_scheme(M.schemes, raw_url, "blob store")
  if not mod then return nil, u, code end
  return mod.open(u, opts or {})
end

return M
