file(REMOVE_RECURSE
  "libap_lua.a"
)
