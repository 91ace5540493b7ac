#!/usr/bin/env python3
"""Lists the dependencies whose features differ between building one package of the
workspace and building all of it (tests included): each one makes Wasmtime compile again.
Fix a difference by adding the features to workspace-hack/Cargo.toml. Exit 1 if any."""

import subprocess
import sys

PACKAGES = ["megavisor", "megavisor-shim", "megavisor-bench", "megavisor-c", "megavisor-python", "megavisor-node"]


def features(*selection: str) -> dict:
    tree = subprocess.run(
        ["cargo", "tree", "--locked", "-e", "normal,build,dev", "--prefix", "none",
         "-f", "{p}|{f}", *selection],
        check=True, capture_output=True, text=True,
    ).stdout
    # A package can be built more than once (for the target and for build scripts), each
    # time with its own features: keep every feature set.
    found: dict = {}
    for line in tree.splitlines():
        package, _, enabled = line.removesuffix(" (*)").partition("|")
        found.setdefault(package.strip(), set()).add(frozenset(filter(None, enabled.split(","))))
    return found


def main() -> int:
    everything = features("--workspace")
    differences = 0
    for package in PACKAGES:
        alone = features("-p", package)
        for dependency in sorted(alone.keys() & everything.keys()):
            # A feature set built alone that the whole workspace never builds: compiled twice.
            for extra in alone[dependency] - everything[dependency]:
                nearest = min(everything[dependency], key=lambda full: len(full ^ extra))
                differences += 1
                print(f"{package}: {dependency} lacks {sorted(nearest - extra)}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
