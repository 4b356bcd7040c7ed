-- The one failure vocabulary of the Lua layer: make a failure, read its code and message, and the
-- documented list of codes. A failure is the tuple `nil, "CODE: message", "CODE"` (luv's `fail`).
local M = {}

-- Every code in use, with what it means. A code not listed here is a bug (fail.new raises).
-- The C core returns some codes of its own (marked "C:"); they are listed so Lua can test for them.
-- luv's own failures carry errno names (ENOENT, EEXIST, ...): the code that calls luv converts them
-- into these codes (autopgo.blob.file's io_fail is the model).
M.codes = {
  INVALID = "the input is malformed or out of range (a bad argument, profile, URL, config value)",
  USAGE = "the command line is wrong (unknown flag, missing argument)",
  NOT_FOUND = "the object, app or resource does not exist",
  CONFLICT = "a create-only write found the object already there",
  PRECONDITION_FAILED = "a conditional write found another version than the one expected",
  TOO_LARGE = "the input is over a size limit",
  UNAUTHORIZED = "credentials are missing, wrong or refused",
  FORBIDDEN = "the credentials are valid but do not allow this",
  UNAVAILABLE = "a peer could not be reached or answered with a server error; retrying may help",
  TIMEOUT = "the operation did not finish in time",
  CLOSED = "the object was closed before or during the operation",
  CANCELED = "the operation was cancelled",
  UNSUPPORTED = "the feature or option is not supported",
  POLICY = "the merge policy (hook or prune rules) refused or failed",
  IO = "a local file operation failed",
  TLS = "a TLS handshake or certificate check failed",
  LISTEN = "a listening socket could not be opened",
  LOAD = "a Lua script or module could not be loaded",
  SERVER = "a peer answered with an error that retrying will not fix",
  HTTP = "a peer answered with an HTTP status autopgo has no other code for (a 3xx or an odd 4xx)",
  INTERNAL = "a bug: something that should not happen did",
  EMPTY = "there was nothing to do (the worker's merge pass found no staged upload)",
  -- codes of the C core (core/lua/*.c, core/pprof)
  MALFORMED = "C: not a valid profile (gzip, protobuf wire format, references)",
  INCOMPATIBLE = "C: profiles of different sample types cannot be merged",
  INVALID_ARGUMENT = "C: a caller error in a pprof call (no inputs, bad option); INVALID in Lua",
  BAD_PATTERN = "C: a prune regular expression does not compile",
  NOMEM = "C: an allocation failed",
  UNKNOWN = "C: pprof failed with a status it has no name for (a bug)",
  BUSY = "C: the resource is in use (a lock held by another process, a job already running)",
  STATE = "C: the call does not fit the object's state (an HTTP response already started)",
  CRYPTO = "C: a cryptographic operation failed (a bad key, a failed signature)",
  PEM = "C: a PEM text could not be parsed",
}

-- fail.new(code, message, ...) -> nil, "CODE: message", "CODE"; message may be a format string.
function M.new(code, message, ...)
  if not M.codes[code] then error("fail.new: unknown failure code " .. tostring(code), 2) end
  if select("#", ...) > 0 then message = message:format(...) end
  return nil, code .. ": " .. tostring(message), code
end

-- fail.code(err) -> the CODE in front of a failure message, or nil.
function M.code(err)
  if type(err) ~= "string" then return nil end
  return err:match("^([A-Z][A-Z_]*): ")
end

-- fail.message(err) -> the message without its CODE prefix (the whole text when it has none).
function M.message(err)
  if type(err) ~= "string" then return tostring(err) end
  local code, rest = err:match("^([A-Z][A-Z_]*): (.*)$")
  if code then return rest end
  return err
end

-- fail.wrap(code, err) -> a failure that keeps err's own code when it has one, else takes code.
function M.wrap(code, err)
  local own = M.code(err)
  if own and M.codes[own] then return nil, err, own end
  return M.new(code, M.message(err))
end

return M
