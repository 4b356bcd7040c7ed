core/host/CMakeFiles/autopgo.dir/embedded_lua.c.o: \
 /work/main/build-asan/core/host/embedded_lua.c \
 /usr/include/stdc-predef.h /work/main/core/host/embed.h \
 /usr/lib/gcc/x86_64-linux-gnu/12/include/stddef.h
