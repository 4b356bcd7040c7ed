# Empty dependencies file for ap_core_module.
# This may be replaced when dependencies are built.
