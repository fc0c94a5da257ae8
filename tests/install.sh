#!/bin/sh
# make install into a staging DESTDIR, then build and run a program against the
# installed headers and libraries through pkg-config (shared, then static).
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
test -x "$stage/usr/bin/peft"
test -f "$stage/usr/include/peft/peft.h"
echo "install: headers, libpeft.a, libpeft.so, peft.pc and peft installed; a pkg-config build runs (shared and static)"
