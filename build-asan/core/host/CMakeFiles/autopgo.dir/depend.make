# Empty dependencies file for autopgo.
# This may be replaced when dependencies are built.
