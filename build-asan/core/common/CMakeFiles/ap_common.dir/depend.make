# Empty dependencies file for ap_common.
# This may be replaced when dependencies are built.
