#!/bin/sh
# Builds nothing: runs the compiled C test and example against a real supervisor.
#   tests/c/run.sh MEGAVISOR BIN_DIR
# The connected checks run under valgrind (no leaks, no invalid accesses). The embedded
# checks run without it: the engine's JIT code and its PAGEMAP_SCAN ioctl, which valgrind
# does not model, make it report uninitialised values that are not errors.
set -eu
megavisor=$1
bin=$2
dir=$(mktemp -d)
socket=$dir/megavisor.sock
"$megavisor" serve --socket "$socket" > "$dir/ready" 2> "$dir/log" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q ready "$dir/ready" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$dir/ready" || { cat "$dir/log"; exit 1; }

valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    "$bin/test_driver" connected "$socket"
"$bin/test_driver" embedded
"$bin/hello"
"$bin/hello" "$socket"
