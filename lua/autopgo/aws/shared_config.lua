-- The AWS shared credentials and config files (~/.aws/credentials, ~/.aws/config, or the files
-- named by AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE): INI parsing and the merged settings of
-- one profile, the way the AWS CLI and SDKs read them.
local M = {}

--- Parses INI text into { [section] = { key = value } }. Keys are lower-cased; "#" and ";" start
-- comments; indented lines continue the previous value or form a sub-section (kept as
-- "parent.key", e.g. "s3.addressing_style").
function M.parse(text)
  local sections = {}
  local current, last_key, sub
  for raw in (text .. "\n"):gmatch("([^\n]*)\n") do
    local line = raw:gsub("\r$", "")
    local stripped = line:gsub("^%s+", "")
    local blank = stripped == "" or stripped:match("^[#;]")
    if not blank and line:match("^%[") then
      local name = line:match("^%[%s*(.-)%s*%]")
      if name then
        sections[name] = sections[name] or {}
        current, last_key, sub = sections[name], nil, nil
      end
    elseif not blank and current then
      local indented = line:match("^%s") ~= nil
      local k, v = stripped:match("^([^=]-)%s*=%s*(.-)%s*$")
      if indented and sub and k then
        current[sub .. "." .. k:lower()] = v:gsub("%s+[#;].*$", "")
      elseif indented and last_key and not k then
        current[last_key] = current[last_key] .. "\n" .. stripped
      elseif k then
        k = k:lower()
        v = v:gsub("%s+[#;].*$", "")
        current[k] = v
        last_key = k
        sub = v == "" and k or nil
      end
    end
  end
  return sections
end

local function read(path)
  if not path then return nil end
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

--- Expands a leading "~/" with `home`.
function M.expand(path, home)
  if path and home and path:sub(1, 2) == "~/" then return home .. path:sub(2) end
  return path
end

--- Where the two files are, given getenv and the home directory.
function M.paths(getenv, home)
  return M.expand(getenv("AWS_SHARED_CREDENTIALS_FILE"), home) or (home and home .. "/.aws/credentials"),
    M.expand(getenv("AWS_CONFIG_FILE"), home) or (home and home .. "/.aws/config")
end

--- Loads both files: returns { credentials = sections, config = profiles } where config's
-- "[profile x]" sections are keyed "x" (and "[default]" stays "default").
function M.load(getenv, home)
  local cred_path, config_path = M.paths(getenv, home)
  local creds = M.parse(read(cred_path) or "")
  local raw = M.parse(read(config_path) or "")
  local config = {}
  for name, values in pairs(raw) do
    local profile = name:match("^profile%s+(.+)$")
    if profile then
      config[profile] = values
    elseif name == "default" then
      config.default = config.default or values
    else
      config[name] = config[name] or values -- sso-session etc.; also tolerated as profiles
    end
  end
  return { credentials = creds, config = config, credentials_path = cred_path, config_path = config_path }
end

--- The merged settings of `profile` (credentials file wins over config file), or nil.
function M.profile(files, profile)
  local a, b = files.config[profile], files.credentials[profile]
  if not a and not b then return nil end
  local out = {}
  for k, v in pairs(a or {}) do out[k] = v end
  for k, v in pairs(b or {}) do out[k] = v end
  return out
end

return M
