file(REMOVE_RECURSE
  "libap_common.a"
)
