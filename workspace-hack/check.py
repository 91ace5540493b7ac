#!/usr/bin/env python3
"""Lists the dependencies whose features differ between building one package of the
workspace and building all of it (tests included): each one makes Wasmtime compile again.
Fix a difference by adding the features to workspace-hack/Cargo.toml. Exit 1 if any."""

import subprocess
import sys

PACKAGES = ["megavisor", "megavisor-bench", "megavisor-c", "megavisor-python", "megavisor-node"]


def features(*selection: str) -> dict:
    tree = subprocess.run(
        ["cargo", "tree", "--locked", "-e", "normal,build,dev", "--prefix", "none",
         "-f", "{p}|{f}", *selection],
        check=True, capture_output=True, text=True,
    ).stdout
    found: dict = {}
    for line in tree.splitlines():
        package, _, enabled = line.removesuffix(" (*)").partition("|")
        found[package.strip()] = set(filter(None, enabled.split(",")))
    return found


def main() -> int:
    everything = features("--workspace")
    differences = 0
    for package in PACKAGES:
        alone = features("-p", package)
        for dependency in sorted(alone.keys() & everything.keys()):
            missing = everything[dependency] - alone[dependency]
            if missing:
                differences += 1
                print(f"{package}: {dependency} lacks {sorted(missing)}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
