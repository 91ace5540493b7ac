#!/bin/sh
# Prints the directory of a package of guest/sources/Cargo.toml, fetching it (and checking
# it against guest/sources/Cargo.lock) if needed:   guest/sources.sh rquickjs-sys
set -eu
manifest=$(cd "$(dirname "$0")" && pwd)/sources/Cargo.toml
cargo metadata --quiet --locked --format-version 1 --manifest-path "$manifest" |
    python3 -c '
import json, os, sys
wanted = sys.argv[1]
for package in json.load(sys.stdin)["packages"]:
    if package["name"] == wanted:
        print(os.path.dirname(package["manifest_path"]))
        break
else:
    sys.exit("guest/sources.sh: no package %s in guest/sources/Cargo.toml" % wanted)
' "$1"
