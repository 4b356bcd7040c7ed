-- The release version and the C core ABI this Lua code was written for: a leaf module (no
-- requires) so that the HTTP client's User-Agent and the start-up check need nothing else.
return {
  version = "0.1.0",
  -- Bump with AP_ABI in core/lua/binding.h whenever the binding's functions change incompatibly.
  abi = 2,
}
