#!/bin/sh
# The shared library must export peft_ symbols only (the rest is hidden).
so="$1"
bad=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBRWV]$/ {print $3}' | grep -v '^peft_' | \
      grep -vE '^(_init|_fini|_edata|_end|__bss_start)$')
n=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBRWV]$/ {print $3}' | grep -c '^peft_')
if [ -n "$bad" ]; then
    echo "symbols: non-peft_ exports in $so:"; echo "$bad"
    echo "0 passed, 1 failed"
    exit 1
fi
soname=$(objdump -p "$so" | awk '/SONAME/ {print $2}')
case "$soname" in
    libpeft.so.[0-9]*) ;;
    *) echo "symbols: SONAME is '$soname'"; echo "0 passed, 1 failed"; exit 1 ;;
esac
echo "symbols: $n peft_ exports, nothing else; SONAME $soname"
