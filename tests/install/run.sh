#!/bin/sh
# `make install` into a temporary prefix, then the installed CLI and a C program built as the
# README says run a tool with this checkout's build/ and target/ hidden (each under an empty
# tmpfs, in a mount namespace of their own): what is installed must need nothing here.
#   tests/install/run.sh        (from the checkout's root; make install-test)
set -eu
repo=$(pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
prefix=$(mktemp -d /tmp/megavisor-prefix.XXXXXX)
trap 'rm -rf "$prefix"' EXIT

if ! unshare --mount true 2>/dev/null; then
    echo "SKIPPED: install test: this machine cannot make a mount namespace (unshare --mount)"
    exit 0
fi
make --no-print-directory install PREFIX="$prefix" >/dev/null
size=$(stat -c %s "$prefix/lib/libdriver.so")
echo "install: libdriver.so is $size bytes stripped"
test "$size" -lt 50000000 || { echo "libdriver.so is not stripped ($size bytes)"; exit 1; }

# The README's C example, exactly as it says to build it.
cc examples/c/hello.c $(PKG_CONFIG_PATH=$prefix/lib/pkgconfig pkg-config --cflags --libs driver) \
    -o "$prefix/hello"

unshare --mount sh -eu -c '
    repo=$1 target=$2 prefix=$3
    mount --make-rprivate /
    mount -t tmpfs none "$repo/build"
    mount -t tmpfs none "$target"
    cd /
    env -u MEGAVISOR_BUNDLE -u MEGAVISOR_TRUSTED_KEY -u MEGAVISOR_POLICY \
        "$prefix/bin/megavisor" run echo installed > "$prefix/cli.out"
    env -u MEGAVISOR_BUNDLE -u MEGAVISOR_TRUSTED_KEY "$prefix/hello" > "$prefix/hello.out"
    # A copy of the program elsewhere, linked by path, still finds its data.
    ln -s "$prefix/bin/megavisor" "$prefix/megavisor-link"
    "$prefix/megavisor-link" tools > "$prefix/tools.out"
    # The shim starts from the prefix (and, asked nothing, says what containerd must pass).
    "$prefix/bin/containerd-shim-megavisor-v1" 2> "$prefix/shim.err" || true
    test ! -e "$repo/build/bundle" && test ! -e "$target/release"
' sh "$repo" "$target" "$prefix"

test "$(cat "$prefix/cli.out")" = "installed" || { echo "CLI: $(cat "$prefix/cli.out")"; exit 1; }
test "$(cat "$prefix/hello.out")" = "hello from libdriver" || {
    echo "C: $(cat "$prefix/hello.out")"
    exit 1
}
grep -q '^echo ' "$prefix/tools.out" || { echo "tools: $(cat "$prefix/tools.out")"; exit 1; }
grep -q '^io.containerd.megavisor.v1: .*namespace' "$prefix/shim.err" || {
    echo "shim: $(cat "$prefix/shim.err")"
    exit 1
}
echo "install: the CLI and a C program ran from $prefix with build/ and target/ hidden"
