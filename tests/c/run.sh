#!/bin/sh
# Builds nothing: runs the compiled C tests and example against real supervisors.
#   tests/c/run.sh MEGAVISOR BIN_DIR BUILD_DIR
# The connected checks run under valgrind (no leaks, no invalid accesses). The embedded
# checks run without it: the engine's JIT code and its PAGEMAP_SCAN ioctl, which valgrind
# does not model, make it report uninitialised values that are not errors.
set -eu
megavisor=$1
bin=$2
build=$3
key=$build/keys/megavisor.pub
dir=$(mktemp -d)
pids=""
trap 'kill $pids 2>/dev/null || true; rm -rf "$dir"' EXIT

# serve NAME BUNDLE [FLAGS...]: starts a supervisor on $dir/NAME.sock, waits until ready.
serve() {
    name=$1
    bundle=$2
    shift 2
    "$megavisor" serve --socket "$dir/$name.sock" --bundle "$bundle" --trusted-key "$key" "$@" \
        > "$dir/$name.ready" 2> "$dir/$name.log" &
    pids="$pids $!"
    last_pid=$!
    for _ in $(seq 100); do grep -q ready "$dir/$name.ready" 2>/dev/null && return; sleep 0.1; done
    cat "$dir/$name.log"
    exit 1
}

serve default "$build/bundle" --mount-root /tmp
valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    "$bin/test_driver" connected "$dir/default.sock"
"$bin/test_driver" embedded
"$bin/hello"
"$bin/hello" "$dir/default.sock"

serve test "$build/test-bundle"
serve busy "$build/test-bundle" --max-concurrency 1 --queue-depth 0
serve refusing "$build/test-bundle" --allow-uid 4242
serve drain "$build/test-bundle"
drain_pid=$last_pid
cp -r "$build/bundle" "$dir/tampered"
printf 'x' | dd of="$dir/tampered/megabin.wasm" bs=1 seek=4096 conv=notrunc 2>/dev/null
"$megavisor" keygen --out "$dir/stranger" > /dev/null
"$bin/test_errors" "$build" "$dir/default.sock" "$dir/test.sock" "$dir/busy.sock" \
    "$dir/refusing.sock" "$dir/drain.sock" "$drain_pid" "$dir/tampered" "$dir/stranger.pub"
