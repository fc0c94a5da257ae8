#!/bin/sh
# make install into a staging DESTDIR, then build and run a program against the
# installed headers and libraries through pkg-config (shared, then static, then
# a C++ program with g++).
set -eu
build="$1"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
make -s install BUILD="$build" DESTDIR="$stage" PREFIX=/usr >/dev/null
export PKG_CONFIG_PATH="$stage/usr/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$stage"
cflags=$(pkg-config --cflags peft)
libs=$(pkg-config --libs peft)
cc -std=c11 $cflags examples/tensor_basics.c $libs -o "$stage/app_shared"
LD_LIBRARY_PATH="$stage/usr/lib" "$stage/app_shared" >/dev/null
cc -std=c11 $cflags examples/tensor_basics.c "$stage/usr/lib/libpeft.a" $(pkg-config --libs-only-other --static peft) \
   $(pkg-config --static --libs peft | sed 's/-lpeft//') -o "$stage/app_static"
"$stage/app_static" >/dev/null
# C++: the same headers and pkg-config line, through g++
g++ -std=c++11 -Wall -Wextra $cflags examples/cpp_example.cpp $libs -o "$stage/app_cpp"
LD_LIBRARY_PATH="$stage/usr/lib" "$stage/app_cpp" >/dev/null
test -x "$stage/usr/bin/peft"
test -f "$stage/usr/include/peft/peft.h"
test -f "$stage/usr/share/man/man1/peft.1"
echo "install: headers, libpeft.a, libpeft.so, peft.pc, peft and peft.1 installed; a pkg-config build runs (C shared and static, C++ shared)"
