# Empty dependencies file for ap_lua.
# This may be replaced when dependencies are built.
